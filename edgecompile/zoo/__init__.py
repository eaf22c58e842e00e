"""Bundled trained models (shapes-clip, shapes-llava), their training scripts and registry."""

from edgecompile.zoo.registry import (
    DEFAULT_DUAL_ENCODER, DEFAULT_GENERATIVE, ZooModel, list_models, model_path,
)

__all__ = ["DEFAULT_DUAL_ENCODER", "DEFAULT_GENERATIVE", "ZooModel", "list_models", "model_path"]
