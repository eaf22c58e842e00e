"""The deployable bundle of a build: the artifacts plus everything a device runtime needs beside them.

Written by the build stage into ``<build>/build/bundle/`` (so it is part of that stage's output,
atomic and hashed like the rest): the artifact files (hard links, not copies, where the file system
allows), the model's tokenizer, processor and chat template files, ``io.json`` (each component's
inputs and outputs with symbolic dimensions, and the image/text preprocessing), ``bundle.json`` (the
file list with sizes and digests) and, for generative ORT CPU builds, ``genai_config.json`` with the
graph onnxruntime-genai loads. Every path written is relative to the bundle.
"""

BUNDLE_DIR = "bundle"
