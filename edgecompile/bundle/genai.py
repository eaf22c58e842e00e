"""A ``genai_config.json`` and graph that onnxruntime-genai loads, for generative ORT CPU builds.

onnxruntime-genai's decoder-only pipeline feeds ``input_ids``; a decoder fed ``inputs_embeds`` by a
separate embedding model is accepted only by its dynamic-batching Engine, which requires a paged KV
cache (onnxruntime-genai 0.18: "Decoder-only CPU embedding requires the dynamic-batching Engine").
So the bundle carries ``genai_model.onnx``: the artifact's own embed_tokens graph composed in front
of its own decoder (the same quantized weights and kernels), which genai runs as a
``llama``-type decoder. Images are not part of this path: genai's multi-modal types (phi3v, gemma3,
qwen2_5_vl, ...) each fix their own vision/embedding graph contracts (an embedding graph that takes
``image_features`` and splices them itself), which this architecture's graphs do not follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

GENAI_CONFIG = "genai_config.json"
GENAI_MODEL = "genai_model.onnx"
_MAX_BYTES = 1 << 30  # composing loads both graphs into one protobuf: bigger ones are left out, with a note


def compose_decoder(embed: Path, decoder: Path, out: Path) -> None:
    """embed_tokens -> decoder as one graph whose first input is ``input_ids``.

    Composed by hand, not with onnx.compose.merge_models: that runs the ONNX checker, which has no
    schema for ONNX Runtime's SimplifiedLayerNormalization (registered in the default domain).
    """
    first = onnx.load(str(embed))
    merged = onnx.load(str(decoder))
    prefix = "embed/"
    rename = {i.name: prefix + i.name for i in first.graph.initializer}
    rename.update({o: prefix + o for n in first.graph.node for o in n.output})
    rename["input_ids"] = "input_ids"
    rename[first.graph.output[0].name] = "inputs_embeds"  # the decoder's input, now made inside the graph
    nodes = []
    for node in first.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name
        copy.input[:] = [rename.get(n, n) for n in node.input]
        copy.output[:] = [rename.get(n, n) for n in node.output]
        nodes.append(copy)
    for init in first.graph.initializer:
        init.name = rename[init.name]
    embed_input = next(i for i in first.graph.input if i.name == "input_ids")
    inputs = [embed_input] + [i for i in merged.graph.input if i.name != "inputs_embeds"]
    del merged.graph.input[:]
    merged.graph.input.extend(inputs)
    body = list(merged.graph.node)
    del merged.graph.node[:]
    merged.graph.node.extend(nodes + body)
    merged.graph.initializer.extend(first.graph.initializer)
    have = {(o.domain, o.version) for o in merged.opset_import}
    for o in first.opset_import:
        if o.domain not in {d for d, _ in have}:
            merged.opset_import.append(o)
    onnx.save(merged, str(out))


def genai_config(spec: dict[str, Any], text_config: Any, max_new_tokens: int = 64) -> dict[str, Any]:
    """The config onnxruntime-genai reads (docs: onnxruntime genai reference/config.md), from the generation spec."""
    context = int(getattr(text_config, "max_position_embeddings", 2048))
    eos = list(spec["eos_token_ids"])
    return {
        "model": {
            "type": "llama",
            "bos_token_id": int(getattr(text_config, "bos_token_id", None) or 1),
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": int(getattr(text_config, "pad_token_id", None) or 0),
            "vocab_size": int(spec["vocab"]),
            "context_length": context,
            "decoder": {
                "filename": GENAI_MODEL,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": int(spec["head_dim"]),
                "hidden_size": int(spec["hidden"]),
                "num_attention_heads": int(getattr(text_config, "num_attention_heads")),
                "num_hidden_layers": int(spec["layers"]),
                "num_key_value_heads": int(spec["kv_heads"]),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids", "past_key_names": "past_key_%d", "past_value_names": "past_value_%d"},
                "outputs": {"logits": "logits", "present_key_names": "present_key_%d", "present_value_names": "present_value_%d"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": context, "past_present_share_buffer": False, "top_k": 1},
    }


def write_genai(bundle: Path, components: dict[str, Path], spec: dict[str, Any], text_config: Any) -> list[str]:
    """Write genai_model.onnx + genai_config.json into ``bundle``; return notes (why not, when not)."""
    embed, decoder = components.get("embed_tokens"), components.get("decoder")
    if embed is None or decoder is None or embed.suffix != ".onnx" or decoder.suffix != ".onnx":
        return ["genai_config.json left out: no ONNX embed_tokens + decoder"]
    size = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())
    if size > _MAX_BYTES:
        return [f"genai_config.json left out: composing {size >> 20} MiB of graphs in memory is not done here"]
    compose_decoder(embed, decoder, bundle / GENAI_MODEL)
    (bundle / GENAI_CONFIG).write_text(json.dumps(genai_config(spec, text_config), indent=1))
    return ["genai_config.json + genai_model.onnx: embed_tokens composed with the decoder for onnxruntime-genai (text prompts; images go through edgecompile's runtime)"]
