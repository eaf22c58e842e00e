"""VLMQ's token importance G, from a block-wise backward pass over the torch decoder (seed 001, §4.1–4.2).

For decoder layer ``l`` the block is the attention stream ``Attn(X) = X + MHSA(norm(X))`` (eq. 1,
Q/K/V/O projections and the residual). Two chains of hidden states run side by side, one sample at
a time: ``X_l`` through the float decoder and ``X̂_l`` through a copy whose linears are rounded to
nearest at the target bits (the seed's "activations with preceding layers quantized"). The block
loss is eq. 5, ``L_l = ‖Attn(X_l) − Attn(X̂_l)‖²`` with the float branch as the (detached) target;
one backward of ``L_l`` gives ``P = ∂L_l/∂z`` for each projection output ``z`` of the perturbed
branch, and eq. 4 turns it into one value per token: ``G_n = mean_i |P_{i,n}|`` (``norm: l1``) or
the token's root-mean-square gradient (``norm: l2``, the seed's LLaVA-OneVision variant,
Table 12 †). No other normalisation: eq. 4 has none, and GPTQ is invariant to one global scale of
the Hessian (its damping is relative), so only the ratios between tokens and samples matter.

Layer 0 (why the seed's loss needs a fallback there). Nothing precedes layer 0, so ``X̂_0 = X_0``
and eq. 5 is identically zero: its gradient vanishes for every token and ``H̃ = X G² Xᵀ`` would be
the zero matrix. Theorem 1 (``ΔL ≈ Δz·p``) is about the perturbation of the block's *own* weights
``θ``, so at layer 0 the perturbed branch also rounds the block's own Q/K/V/O weights (the same RTN
grid): ``L_0 = ‖Attn_W(X_0) − Attn_Ŵ(X_0)‖²``. ``perturb: inputs_and_block`` does that at every
layer (the loss the weights being quantized actually cause, on top of the upstream error); the
default ``inputs`` is the seed's eq. 5 exactly, with the layer-0 fallback. A layer whose loss is
still exactly zero (all-zero weights) gets G ≡ 1 (plain GPTQ) and is recorded as such.

Only one layer's activations and one sample are alive at a time: the chains keep a single hidden
state each, and the backward graph covers one attention block.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import numpy as np
import torch

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MODULE = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.([qkvo]_proj)$")


def attention_projection(module_path: str) -> tuple[int, str] | None:
    """(layer, projection) for a plan entry's module path such as ``model.layers.3.self_attn.k_proj``."""
    m = _MODULE.search(module_path)
    return (int(m.group(1)), m.group(2)) if m else None


def rtn_weight(weight: torch.Tensor, bits: int, block: int, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest of a torch ``[out, in]`` weight per block of ``block`` inputs (onnxruntime's ``qdq_tensor``)."""
    from onnxruntime.quantization.neural_compressor.weight_only import qdq_tensor

    w = weight.detach().double().numpy()
    out, k = w.shape
    bs = block if block and k % block == 0 else k
    q = qdq_tensor(w, num_bits=bits, group_size=bs, scheme="sym" if symmetric else "asym", dtype="uint")
    return torch.from_numpy(np.asarray(q).reshape(out, k)).to(weight.dtype)


def rounded_layer(layer: torch.nn.Module, bits: int, block: int, symmetric: bool) -> torch.nn.Module:
    """A copy of one decoder layer with every Linear weight rounded to nearest (the perturbed branch)."""
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        for mod in twin.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(rtn_weight(mod.weight, bits, block, symmetric))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin.eval()


@dataclass
class SampleImportance:
    """One calibration sample: G per (layer, projection) over its N prompt tokens, and which tokens are image tokens."""

    image: np.ndarray  # [N] bool
    g: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # [N] float64
    loss: dict[int, float] = field(default_factory=dict)  # L_l per layer
    fallback: dict[int, str] = field(default_factory=dict)  # layer -> why its G is not eq. 5 as written


def _attn(layer: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None, position_embeddings: tuple[torch.Tensor, torch.Tensor], position_ids: torch.Tensor) -> torch.Tensor:
    """eq. 1: X + MHSA(norm(X)) with the layer's own attention module."""
    out, _ = layer.self_attn(hidden_states=layer.input_layernorm(x), attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings)
    return x + out


class BlockwiseImportance:
    """Token importance of a HF Llama-style decoder (``.layers``, ``.rotary_emb``; each layer ``self_attn.{q,k,v,o}_proj``)."""

    def __init__(self, language_model: torch.nn.Module, bits: int, block: int, symmetric: bool, norm: str = "l1", perturb: str = "inputs") -> None:
        if norm not in ("l1", "l2") or perturb not in ("inputs", "inputs_and_block"):
            raise ValueError(f"norm {norm!r} / perturb {perturb!r}")
        self.lm = language_model.eval()
        self.norm = norm
        self.perturb = perturb
        self.layers = list(self.lm.layers)
        self.rounded = [rounded_layer(layer, bits, block, symmetric) for layer in self.layers]

    def _g(self, grad: torch.Tensor) -> np.ndarray:
        p = grad.detach().double()[0]  # [N, C_o]
        g = p.abs().mean(-1) if self.norm == "l1" else p.pow(2).mean(-1).sqrt()
        return g.numpy()

    def sample(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, image: np.ndarray) -> SampleImportance:
        """G for one prefill (batch 1): the decoder's own inputs, so tokens align with the ONNX activations."""
        from transformers.masking_utils import create_causal_mask

        x = torch.from_numpy(np.ascontiguousarray(inputs_embeds)).float()
        positions = torch.from_numpy(np.ascontiguousarray(position_ids)).long()
        n = x.shape[1]
        if image.shape != (n,):
            raise ValueError(f"image mask of {image.shape} for a prompt of {n} tokens")
        with torch.no_grad():
            mask = create_causal_mask(config=self.lm.config, inputs_embeds=x, attention_mask=torch.ones(1, n, dtype=torch.long), cache=None, position_ids=positions)
            pe = self.lm.rotary_emb(x, position_ids=positions)
        out = SampleImportance(image=image.astype(bool))
        x_fp, x_q = x, x.clone()
        for i, (layer, twin) in enumerate(zip(self.layers, self.rounded, strict=True)):
            with torch.no_grad():
                target = _attn(layer, x_fp, mask, pe, positions)
            inputs_only = self.perturb == "inputs" and i > 0
            block = layer if inputs_only else twin
            if self.perturb == "inputs" and i == 0:
                out.fallback[0] = "eq. 5 is zero at layer 0 (no preceding layer): the block's own weights are rounded"
            zs: dict[str, torch.Tensor] = {}
            hooks = [getattr(block.self_attn, name).register_forward_hook(lambda _m, _i, o, name=name: zs.__setitem__(name, o)) for name in PROJECTIONS]
            try:
                with torch.enable_grad():
                    h = x_q.detach().requires_grad_(True)
                    loss = (_attn(block, h, mask, pe, positions) - target).pow(2).sum()
                    grads = torch.autograd.grad(loss, [zs[name] for name in PROJECTIONS], allow_unused=True) if loss.item() > 0 else [None] * 4
            finally:
                for hook in hooks:
                    hook.remove()
            out.loss[i] = float(loss.item())
            if all(gr is None for gr in grads):
                out.fallback[i] = "block loss exactly zero: G = 1 (plain GPTQ)"
            for name, grad in zip(PROJECTIONS, grads, strict=True):
                out.g[(i, name)] = np.ones(n) if grad is None else self._g(grad)
            with torch.no_grad():
                x_fp = layer(x_fp, attention_mask=mask, position_embeddings=pe, position_ids=positions)
                x_q = twin(x_q, attention_mask=mask, position_embeddings=pe, position_ids=positions)
        return out
