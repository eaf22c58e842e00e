"""Decoder-with-KV-cache export pieces shared by every generative family (Llava, Idefics3, Qwen2-VL).

One ONNX graph serves prefill and decode: inputs are ``inputs_embeds`` (so image features can be
spliced in before the decoder), ``attention_mask`` over past + new tokens, ``position_ids``, and
``past_key_<i>``/``past_value_<i>`` per layer; outputs are ``logits`` and ``present_key_<i>`` /
``present_value_<i>``. Sequence and past lengths are dynamic.

transformers 5 passes the cache as a ``Cache`` object; the wrapper rebuilds a ``DynamicCache`` from
the flat tensors inside ``forward`` so torch.export only ever sees tensors. torch.export specializes
sizes 0 and 1, so the graph is traced with a past of length ``_EXAMPLE_PAST`` (> 1) and a prompt of
``_EXAMPLE_SEQ`` tokens; the resulting graph has no guard on either length and ONNX Runtime runs it
with an empty past (prefill) and with one new token (decode). Parity for both is checked after export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgecompile.models.export import cosine as _cosine
from edgecompile.models.export import worst as worst_of

_EXAMPLE_PAST = 3
_EXAMPLE_SEQ = 5


@dataclass(frozen=True)
class CacheLayout:
    """Shape facts of a decoder's KV cache."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    # 1: position_ids (batch, seq). 3: Qwen2-VL's M-RoPE, position_ids (3, batch, seq) — (temporal, row, column).
    position_dims: int = 1

    @classmethod
    def from_text_config(cls, cfg) -> CacheLayout:  # noqa: ANN001 - a transformers config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        mrope = isinstance(rope, dict) and "mrope_section" in rope
        return cls(cfg.num_hidden_layers, kv_heads, head_dim, cfg.hidden_size, cfg.vocab_size, 3 if mrope else 1)

    def positions(self, start: int, count: int) -> torch.Tensor:
        """Text-token position ids in this layout's shape (all three M-RoPE sections equal for text)."""
        ids = torch.arange(start, start + count, dtype=torch.int64).unsqueeze(0)
        return ids.unsqueeze(0).expand(3, 1, count).contiguous() if self.position_dims == 3 else ids

    def past_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"past_key_{i}", f"past_value_{i}")]

    def present_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"present_key_{i}", f"present_value_{i}")]

    def empty_past(self, batch: int = 1, dtype: type = np.float32) -> dict[str, np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=dtype) for n in self.past_names()}


class DecoderWithCache(torch.nn.Module):
    """(inputs_embeds, attention_mask, position_ids, *past) -> (logits, *present), tensors only."""

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, layers: int) -> None:
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head
        self.layers = layers

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True, return_dict=True)
        logits = self.lm_head(out.last_hidden_state)
        present: list[torch.Tensor] = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (logits, *present)


def decoder_example_inputs(layout: CacheLayout, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Batch 1, a prompt of ``_EXAMPLE_SEQ`` tokens after a past of ``_EXAMPLE_PAST``."""
    g = torch.Generator().manual_seed(seed)
    total = _EXAMPLE_PAST + _EXAMPLE_SEQ
    embeds = torch.randn(1, _EXAMPLE_SEQ, layout.hidden, generator=g) * 0.02
    mask = torch.ones(1, total, dtype=torch.int64)
    positions = layout.positions(_EXAMPLE_PAST, _EXAMPLE_SEQ)
    past = [torch.randn(1, layout.kv_heads, _EXAMPLE_PAST, layout.head_dim, generator=g) for _ in range(2 * layout.layers)]
    return (embeds, mask, positions, *past)


def decoder_dynamic_axes(layout: CacheLayout) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {"inputs_embeds": {1: "sequence"}, "attention_mask": {1: "total_length"}, "position_ids": {2 if layout.position_dims == 3 else 1: "sequence"}}
    for name in layout.past_names():
        axes[name] = {2: "past_length"}
    return axes


def export_causal_lm_decoder(model: torch.nn.Module, path, opset: int = 18) -> tuple[DecoderWithCache, CacheLayout]:  # noqa: ANN001 - path: str | Path
    """A Hugging Face ``*ForCausalLM``'s decoder with its KV cache, exported to ``path`` as the pipeline exports it.

    For tests and benches that want the exported decoder graph of a text model without a whole VLM
    build; returns the wrapped module and its cache layout (for parity checks against torch).
    """
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.export import export_component

    layout = CacheLayout.from_text_config(model.config)
    module = DecoderWithCache(model.model, model.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()),
                         ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    export_component(spec, path, opset)
    return module, layout


def decoder_parity(module: DecoderWithCache, layout: CacheLayout, path, prompt_length: int = 7, decode_steps: int = 4, seed: int = 1) -> dict[str, float]:  # noqa: ANN001
    """Prefill from an empty past, then ``decode_steps`` single-token steps, each side feeding back its own cache.

    Compares logits and every present key/value at each step; returns the worst errors and per-phase figures.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    torch_past = [torch.zeros(1, layout.kv_heads, 0, layout.head_dim) for _ in range(2 * layout.layers)]
    ort_past = layout.empty_past()
    scale = float(module.model.get_input_embeddings().weight.detach().std()) if hasattr(module.model, "get_input_embeddings") else 0.02
    worst: dict[str, dict[str, float]] = {"prefill": {"max_abs_error": 0.0, "cosine": 1.0}, "decode": {"max_abs_error": 0.0, "cosine": 1.0}}
    agree = 0
    done = 0
    for step in range(decode_steps + 1):
        length = prompt_length if step == 0 else 1
        embeds = torch.randn(1, length, layout.hidden, generator=g) * scale
        total = done + length
        mask = torch.ones(1, total, dtype=torch.int64)
        positions = layout.positions(done, length)
        with torch.no_grad():
            expected = [t.numpy() for t in module(embeds, mask, positions, *torch_past)]
        got = session.run(None, {"inputs_embeds": embeds.numpy(), "attention_mask": mask.numpy(), "position_ids": positions.numpy(), **ort_past})
        phase = worst["prefill" if step == 0 else "decode"]
        for e, o in zip(expected, got, strict=True):
            if e.shape != o.shape:
                raise ValueError(f"decoder parity: shape {o.shape} from ONNX Runtime, {e.shape} from torch at step {step}")
            phase["max_abs_error"] = worst_of(phase["max_abs_error"], float(np.abs(e - o).max()), higher_is_worse=True)
            phase["cosine"] = worst_of(phase["cosine"], _cosine(e, o), higher_is_worse=False)
        agree += int(expected[0][0, -1].argmax() == got[0][0, -1].argmax())
        torch_past = [torch.from_numpy(t) for t in expected[1:]]
        ort_past = dict(zip(layout.past_names(), got[1:], strict=True))
        done = total
    return {
        "max_abs_error": worst_of(worst["prefill"]["max_abs_error"], worst["decode"]["max_abs_error"], higher_is_worse=True),
        "cosine": worst_of(worst["prefill"]["cosine"], worst["decode"]["cosine"], higher_is_worse=False),
        "prefill_max_abs_error": worst["prefill"]["max_abs_error"],
        "prefill_cosine": worst["prefill"]["cosine"],
        "decode_max_abs_error": worst["decode"]["max_abs_error"],
        "decode_cosine": worst["decode"]["cosine"],
        "decode_steps_checked": decode_steps,
        "argmax_agreement": agree / (decode_steps + 1),
    }
