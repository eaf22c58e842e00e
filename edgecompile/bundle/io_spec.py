"""Machine-readable I/O of each component: names, dtypes, shapes (symbolic dims kept), preprocessing.

Read from the artifact itself where it is ONNX (the QNN context model's static shapes are the
device's contract), else from the float export the artifact was converted from (CoreML, ExecuTorch),
which says so in ``described_from``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

_TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "added_tokens.json")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.jinja", "chat_template.json", "generation_config.json", "config.json")
MODEL_FILES = _TEXT_FILES + _PROCESSOR_FILES


def _value_info(v: onnx.ValueInfoProto) -> dict[str, Any]:
    t = v.type.tensor_type
    dims: list[int | str] = [d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "unknown", "shape": dims}


def graph_io(path: Path) -> dict[str, Any]:
    """Inputs and outputs of an ONNX graph (initializers that are also inputs left out)."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": [_value_info(v) for v in model.graph.input if v.name not in initializers], "outputs": [_value_info(v) for v in model.graph.output]}


def image_preprocessing(model_dir: Path) -> dict[str, Any] | None:
    """Resize / crop / rescale / normalise, from the HF image processor config (what the device must do to a photo)."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        data = data.get("image_processor", data)
        if "image_mean" not in data:
            continue
        return {
            "source": name,
            "convert_rgb": bool(data.get("do_convert_rgb", True)),
            "resize": data.get("size") if data.get("do_resize", True) else None,
            "resample": data.get("resample"),
            "center_crop": data.get("crop_size") if data.get("do_center_crop") else None,
            "rescale_factor": data.get("rescale_factor") if data.get("do_rescale", True) else None,
            "mean": data.get("image_mean") if data.get("do_normalize", True) else None,
            "std": data.get("image_std") if data.get("do_normalize", True) else None,
            "layout": "NCHW float32",
        }
    return None


def text_preprocessing(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "tokenizer_config.json"
    if not (model_dir / "tokenizer.json").is_file():
        return None
    data = json.loads(path.read_text()) if path.is_file() else {}
    keep = ("bos_token", "eos_token", "pad_token", "unk_token", "image_token", "model_max_length", "padding_side")
    return {"tokenizer": "tokenizer.json", **{k: data[k] for k in keep if k in data}, "chat_template": next((f for f in ("chat_template.jinja", "chat_template.json") if (model_dir / f).is_file()), None)}


def io_description(components: dict[str, Path], exported: dict[str, Path], model_dir: Path | None, generation: dict[str, Any] | None) -> dict[str, Any]:
    """``io.json``: per component its graph I/O, where that was read from, and the preprocessing feeding it."""
    out: dict[str, Any] = {"schema_version": 1, "components": {}}
    for component, artifact in components.items():
        onnx_artifact = artifact.suffix == ".onnx"
        source = artifact if onnx_artifact else exported[component]
        entry = {"file": artifact.name, "described_from": "artifact" if onnx_artifact else f"float export ({source.name}); the {artifact.suffix} program keeps its names", **graph_io(source)}
        out["components"][component] = entry
    if model_dir is not None:
        out["preprocessing"] = {"image": image_preprocessing(model_dir), "text": text_preprocessing(model_dir)}
    if generation is not None:
        out["generation"] = generation
    return out
