"""On-device validation that needs only numpy and the device's runtime.

The host's validate stage writes a *device pack* into the build directory (``validate/device_pack/``):
the eval inputs already preprocessed, the float reference's outputs, the task's labels, the gates and
what each backend's runner needs. On the device, ``python -m edgecompile.device validate --build DIR``
runs the artifact with the native runtime (onnxruntime, onnxruntime-qnn, coremltools, ExecuTorch),
computes accuracy, drift, latency and memory, completes the gates that are truthful there and writes
the merged report back into the build directory.

Nothing in this package imports torch, transformers or pydantic (tests/architecture checks it); the
runtimes are imported only when a runner for them is opened.
"""

PACK_DIR = "validate/device_pack"  # relative to the build directory
RESULT_FILE = "device/result.json"  # relative to the build directory
