"""Refuse checkpoints whose weights are not safetensors: edgecompile never unpickles a user's file.

transformers falls back to ``pytorch_model.bin`` (a pickle) when no safetensors file is present;
unpickling runs arbitrary code from the file. A checkpoint must carry ``*.safetensors`` weights;
this check runs before any loader sees the directory.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from edgecompile.errors import InputError

PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def check_safetensors_only(model_dir: Path) -> None:
    """InputError (exit 3) when ``model_dir`` holds pickled weights and no safetensors weights."""
    weights = sorted(model_dir.glob("*.safetensors"))
    if weights:
        for path in weights:
            check_safetensors_file(path)
        return
    pickled = sorted(p.name for pattern in PICKLED for p in model_dir.glob(pattern))
    if pickled:
        raise InputError(
            f"{model_dir}: weights are only in pickle format ({', '.join(pickled[:3])}); edgecompile loads safetensors only — "
            "convert once with: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\" in a trusted environment"
        )
    raise InputError(f"{model_dir}: no *.safetensors weights found (config.json alone is not a checkpoint)")


def check_safetensors_file(path: Path) -> None:
    """InputError naming ``path`` when it is not a whole safetensors file (truncated, or not one at all).

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's byte
    range, then the data: reading the header (not the tensors) tells whether every byte is there,
    so a cut-off download is refused at load instead of failing inside export with exit 5.
    """
    fix = "re-copy or re-save the checkpoint"
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{path}: truncated safetensors file ({size} bytes, shorter than its 8-byte header length); {fix}")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise InputError(f"{path}: truncated safetensors file (header says {length} header bytes, file holds {size - 8} after the length); {fix}")
            header = json.loads(f.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not a safetensors file (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a safetensors file (its header is not a JSON object); {fix}")
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, ValueError, IndexError):
        raise InputError(f"{path}: not a safetensors file (a tensor entry has no data_offsets); {fix}") from None
    need = 8 + length + max(ends, default=0)
    if size < need:
        raise InputError(f"{path}: truncated safetensors file ({size} bytes, its header describes {need}); {fix}")
