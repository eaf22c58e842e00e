"""Per-layer low-bit sensitivity of a generative VLM's decoder: QUOTA's allocation input (seed 003, eq. 1).

QUOTA gives more visual tokens to the decoder layers that low-bit inference disturbs most. The
signal is, for every decoder layer l, the relative deviation ||h_l - h_l^q|| / (||h_l|| + eps) between
the layer's output hidden states in full precision and under the low-bit operators, averaged over
the calibration set. Here the low-bit forward is fake quantization in torch: every ``nn.Linear`` of
the language model runs with its weight rounded per output row in groups of ``group_size``
(symmetric, ``weight_bits``) and, when ``act_bits`` is set, its input rounded per token (symmetric).
That is the arithmetic of the INT4 MatMulNBits build (weights) and of an A4/A8 activation
quantizer; the seed's W4A4 FlatQuant runtime is not reproduced.

Two readings (``mode``): "cumulative" compares the hidden states of a float forward with those of a
forward that is low-bit throughout, so layer l's value carries the error of layers before it (the
deployed model's view, the seed's reading); "isolated" runs each decoder layer alone, low-bit, on the
float model's own input to that layer, so the value is the layer's own sensitivity. The last
layer's hidden states are the final norm's output in HF's ``output_hidden_states``.

Memory: the float and low-bit passes run one sample at a time on the same parameters (the rounded
weights are computed inside each Linear's call, never stored), and only per-layer running sums
outlive a sample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from edgecompile.pruning.allocation import SensitivityAccumulator

def fake_quantize(x: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """Symmetric round-to-nearest over the last axis (in groups of ``group_size`` when given)."""
    shape = x.shape
    g = x.reshape(-1, group_size) if group_size and shape[-1] % group_size == 0 else x.reshape(-1, shape[-1])
    qmax = 2 ** (bits - 1) - 1
    scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.round(g / scale).clamp(-qmax - 1, qmax) * scale).reshape(shape)


@contextlib.contextmanager
def fake_quantized(module: torch.nn.Module, weight_bits: int, act_bits: int | None, group_size: int) -> Iterator[None]:
    """Every ``nn.Linear`` under ``module`` computes with rounded weights (and inputs) while inside."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        inputs = fake_quantize(x, act_bits, None) if act_bits else x
        return torch.nn.functional.linear(inputs, fake_quantize(self.weight, weight_bits, group_size), self.bias)

    try:
        for m in linears:
            m.forward = forward.__get__(m)  # instance attribute: shadows the class method
        yield
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)


def _hidden_states(language_model: torch.nn.Module, feed: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    out = language_model(
        inputs_embeds=torch.from_numpy(feed["inputs_embeds"]),
        attention_mask=torch.from_numpy(feed["attention_mask"]),
        position_ids=torch.from_numpy(feed["position_ids"]),
        use_cache=False,
        output_hidden_states=True,
    )
    return out.hidden_states[1:]  # one per decoder layer (index 0 is the embeddings)


def _decoder_layers(language_model: torch.nn.Module) -> list[torch.nn.Module]:
    layers = getattr(language_model, "layers", None)
    if layers is None:
        raise ValueError(f"{type(language_model).__name__}: no .layers; isolated sensitivity needs the decoder's layer list")
    return list(layers)


def _isolated_pairs(language_model: torch.nn.Module, feed: dict[str, np.ndarray], weight_bits: int, act_bits: int | None, group_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float, low-bit) output of each layer re-run low-bit on the inputs it saw in the float forward (one sample)."""
    captured: list[tuple[torch.nn.Module, tuple, dict, torch.Tensor]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        captured.append((module, args, kwargs, output[0] if isinstance(output, tuple) else output))

    handles = [layer.register_forward_hook(hook, with_kwargs=True) for layer in _decoder_layers(language_model)]
    try:
        _hidden_states(language_model, feed)
    finally:
        for h in handles:
            h.remove()
    for module, args, kwargs, reference in captured:
        with fake_quantized(module, weight_bits, act_bits, group_size):
            out = module(*args, **kwargs)
        yield reference, out[0] if isinstance(out, tuple) else out


def _cumulative_pairs(language_model: torch.nn.Module, feed: dict[str, np.ndarray], weight_bits: int, act_bits: int | None, group_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float, low-bit) hidden states of every layer from two whole forwards (one sample)."""
    reference = _hidden_states(language_model, feed)
    with fake_quantized(language_model, weight_bits, act_bits, group_size):
        lowbit = _hidden_states(language_model, feed)
    yield from zip(reference, lowbit, strict=True)


def decoder_sensitivity(
    adapter: Any, loaded: Any, samples: Iterable[Any], *, weight_bits: int = 4, act_bits: int | None = None, group_size: int = 32, mode: str = "cumulative"
) -> tuple[np.ndarray, int]:
    """(mean relative deviation per decoder layer, samples used) over the calibration ``samples``.

    ``adapter``/``loaded``: a generative family adapter and its loaded checkpoint (the same objects
    the calibrate stage holds); the decoder feeds are the spliced image+prompt prefills calibration uses.
    """
    if weight_bits < 2 or (act_bits is not None and act_bits < 2):
        raise ValueError(f"weight_bits/act_bits: expected at least 2 bits, got {weight_bits}/{act_bits}")
    if mode not in ("cumulative", "isolated"):
        raise ValueError(f"mode: expected 'cumulative' or 'isolated', got '{mode}'")
    language_model = adapter.language_model(loaded)
    pairs = _isolated_pairs if mode == "isolated" else _cumulative_pairs
    accumulator = SensitivityAccumulator(range(len(_decoder_layers(language_model))))
    count = 0
    with torch.no_grad():
        for feed in adapter.calibration_feeds(loaded, samples, "decoder"):
            for layer, (reference, lowbit) in enumerate(pairs(language_model, feed, weight_bits, act_bits, group_size)):
                accumulator.add(layer, reference.numpy(), lowbit.numpy())
            count += 1
    if count == 0:
        raise ValueError("decoder_sensitivity: no calibration sample with an image; QUOTA's sensitivity needs image+prompt prefills")
    return accumulator.values(), count
