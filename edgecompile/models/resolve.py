"""Resolve ``--model`` to a local directory: a path, a bundled model, or the local HF cache.

Nothing is ever downloaded: the HF cache is consulted with ``local_files_only=True``.
"""

from __future__ import annotations

from pathlib import Path

from edgecompile.errors import InputError


def _bundled(name: str) -> Path | None:
    try:
        from edgecompile.zoo.registry import model_path
    except ImportError:
        return None
    try:
        return model_path(name)
    except (KeyError, FileNotFoundError, ValueError):
        return None


def is_bundled(model_dir: Path) -> bool:
    """Whether ``model_dir`` is one of the bundled models (trained on the shapes world, so ``eval.set: auto`` fits it)."""
    try:
        from edgecompile.zoo.registry import MODELS_DIR
    except ImportError:
        return False
    return Path(model_dir).resolve().parent == MODELS_DIR.resolve()


def default_model(family: str = "dual_encoder") -> str:
    """The bundled model used when neither ``--model`` nor the recipe names one."""
    try:
        from edgecompile.zoo import registry
    except ImportError as exc:
        raise InputError("no --model given and no bundled model is installed (edgecompile.zoo is missing)") from exc
    return registry.DEFAULT_DUAL_ENCODER if family == "dual_encoder" else registry.DEFAULT_GENERATIVE


def resolve_model(ref: str) -> Path:
    """Return the local directory holding ``ref``'s config.json and weights."""
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path.resolve()
    bundled = _bundled(ref)
    if bundled is not None:
        return bundled
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        raise InputError(
            f"model '{ref}': not a directory, not a bundled model, and not in the local Hugging Face cache "
            "(edgecompile never downloads; put the checkpoint on disk and pass its path)"
        ) from None
    if not (cached / "config.json").is_file():
        raise InputError(f"model '{ref}': cached snapshot {cached} has no config.json")
    return cached
