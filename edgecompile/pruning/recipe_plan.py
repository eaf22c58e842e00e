"""The recipe's ``token_pruning`` section turned into a keep schedule: checks before export, allocation in calibrate.

``check_token_pruning`` runs in ``BuildContext.create`` (a refused recipe leaves no build directory):
the model must be a generative VLM with 1-D position ids (M-RoPE decoders are not supported by the
pruned graph) and the candidate layers must exist and have a layer after them. ``plan_schedule``
runs in the calibrate stage: it measures the per-layer low-bit sensitivity on the recipe's
calibration set (``pruning.sensitivity``, torch) when the schedule is ``quota`` and allocates
(``pruning.allocation``); the result is written as ``token_pruning.json`` in the calibrate folder,
the pruning recipe the build executes and the report plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompile.errors import InputError
from edgecompile.pruning.allocation import KeepSchedule, allocate_keep_schedule, uniform_keep_schedule
from edgecompile.pruning.score import resolve_weights

SCHEDULE_FILE = "token_pruning.json"


def decoder_layers(model_dir: Path) -> int:
    """The text decoder's layer count, read from config.json (no weights loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return int(config.get_text_config(decoder=True).num_hidden_layers)


def candidate_layers(section: Any, layers: int) -> list[int]:
    """``auto``: every layer from 1 to layers - 2; else the recipe's list as given."""
    return list(range(1, layers - 1)) if section.candidate_layers == "auto" else list(section.candidate_layers)


def check_token_pruning(recipe: Any, recipe_path: str, adapter: Any, model_dir: Path) -> None:
    """Refuse, before anything is written, a token_pruning section this model cannot run."""
    section = recipe.token_pruning
    if section is None:
        return
    if adapter.family != "generative":
        raise InputError(f"{recipe_path}: token_pruning: prunes the visual tokens of a generative VLM's decoder; {model_dir} is a {adapter.family} model")
    if getattr(adapter, "position_layout", "1d") == "mrope":
        raise InputError(f"{recipe_path}: token_pruning: the pruned decoder takes 1-D position ids; {model_dir} uses M-RoPE (Qwen2-VL), which it does not support")
    layers = decoder_layers(model_dir)
    chosen = candidate_layers(section, layers)
    bad = [layer for layer in chosen if not 0 <= layer <= layers - 2]
    if bad or not chosen:
        raise InputError(f"{recipe_path}: token_pruning.candidate_layers: expected layers in 0..{layers - 2} (the decoder has {layers}; the last has no layer after it to save), got {chosen}")


def plan_schedule(recipe: Any, adapter: Any, loaded: Any, model_dir: Path, samples: Any, image_tokens: int) -> KeepSchedule:
    """The schedule the build executes: explicit, uniform, or QUOTA's allocation from measured sensitivity."""
    section = recipe.token_pruning
    chosen = candidate_layers(section, decoder_layers(model_dir))
    weights = resolve_weights(section.weights)
    if section.keep_ratios is not None:
        return KeepSchedule(tuple(chosen), tuple(float(r) for r in section.keep_ratios), image_tokens, (), {"final_keep": float(section.keep_ratios[-1]), "weights": weights})
    if section.schedule == "uniform":
        base = uniform_keep_schedule(chosen, section.final_keep, image_tokens)
        return KeepSchedule(base.layers, base.keep_ratios, image_tokens, (), {**base.inputs, "weights": weights})
    from edgecompile.pruning.sensitivity import decoder_sensitivity

    s = section.sensitivity
    values, _ = decoder_sensitivity(adapter, loaded, samples, weight_bits=s.weight_bits, act_bits=s.act_bits, mode=s.mode)
    return allocate_keep_schedule([float(values[layer]) for layer in chosen], chosen, section.final_keep, min(section.floor, section.final_keep), section.temperature, image_tokens, weights)
