"""Refuse checkpoints whose weights are not safetensors: edgecompile never unpickles a user's file.

transformers falls back to ``pytorch_model.bin`` (a pickle) when no safetensors file is present;
unpickling runs arbitrary code from the file. A checkpoint must carry ``*.safetensors`` weights;
this check runs before any loader sees the directory.
"""

from __future__ import annotations

from pathlib import Path

from edgecompile.errors import InputError

PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def check_safetensors_only(model_dir: Path) -> None:
    """InputError (exit 3) when ``model_dir`` holds pickled weights and no safetensors weights."""
    if any(model_dir.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLED for p in model_dir.glob(pattern))
    if pickled:
        raise InputError(
            f"{model_dir}: weights are only in pickle format ({', '.join(pickled[:3])}); edgecompile loads safetensors only — "
            "convert once with: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\" in a trusted environment"
        )
    raise InputError(f"{model_dir}: no *.safetensors weights found (config.json alone is not a checkpoint)")
