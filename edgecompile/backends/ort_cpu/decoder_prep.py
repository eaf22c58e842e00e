"""The ORT CPU build's decoder step: fuse into contrib ops, prove parity, keep the unfused graph otherwise.

Applied to every component that has a KV cache (``past_key_*`` inputs, ``present_key_*`` outputs),
after quantization so the plan's MatMul names have already been used and quantized Q/K/V can be
packed. Parity is checked on ONNX Runtime against the graph as it was before the fusion: a prefill
from an empty cache and single-token decode steps feeding back each graph's own cache; logits and
every present tensor must keep cosine >= ``MIN_COSINE``.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgecompile.backends.ort_cpu.decoder_attention import pack_gate_up
from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder

MIN_COSINE = 0.999
_PROTO_LIMIT = 2**31 - 2**26  # in-memory sessions need one serialized proto under 2 GiB


def has_kv_cache(model: onnx.ModelProto) -> bool:
    inputs = {i.name for i in model.graph.input}
    return any(n.startswith("past_key_") for n in inputs) and any(o.name.startswith("present_key_") for o in model.graph.output)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _dims(model: onnx.ModelProto, name: str) -> list[int]:
    value = next(i for i in model.graph.input if i.name == name)
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def fusion_parity(before: onnx.ModelProto, after: onnx.ModelProto, prompt: int = 6, decode_steps: int = 3, seed: int = 0) -> float:
    """Worst cosine (logits and caches, prefill and decode) of ``after`` against ``before`` on ONNX Runtime."""
    from edgecompile.runtime.onnx_cpu import cpu_session

    sessions = [cpu_session(m.SerializeToString()) for m in (before, after)]
    hidden = _dims(before, "inputs_embeds")[2]
    past_names = [i.name for i in before.graph.input if i.name.startswith("past_")]
    pasts = [{n: np.zeros((1, _dims(before, n)[1], 0, _dims(before, n)[3]), np.float32) for n in past_names} for _ in sessions]
    outputs = [o.name for o in before.graph.output]
    rng, done, worst = np.random.default_rng(seed), 0, 1.0
    for length in (prompt, *[1] * decode_steps):
        total = done + length
        positions = np.arange(done, total, dtype=np.int64)[None]
        if len(_dims(before, "position_ids")) == 3:  # M-RoPE (3, batch, seq): distinct sections, so a fusion that drops them shows
            positions = np.stack([positions, positions + 7, 2 * positions])
        feeds = {"inputs_embeds": (rng.standard_normal((1, length, hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, total), np.int64), "position_ids": positions}
        got = [s.run(outputs, {**feeds, **p}) for s, p in zip(sessions, pasts, strict=True)]
        worst = min(worst, *(_cosine(a, b) for a, b in zip(got[0], got[1], strict=True)))
        presents = {o: i for i, o in enumerate(outputs)}
        pasts = [{n: g[presents[n.replace("past_", "present_")]] for n in past_names} for g in got]
        done = total
    return worst


def prepare_decoder(model: onnx.ModelProto, component: str) -> tuple[onnx.ModelProto, str | None]:
    """Fused graph when it matched and kept parity, else ``model``; a note for the artifact either way (None: no KV cache)."""
    if not has_kv_cache(model):
        return model, None
    fused, report = fuse_decoder(model)
    if not report.changed:
        return model, f"{component}: no decoder pattern matched for contrib-op fusion ({'; '.join(report.skipped[:2]) or 'no layers'}); kept the exported graph"
    fused, gate_up = pack_gate_up(fused)  # exact: the packed MatMulNBits computes the same columns
    summary = f"{report.attentions} GroupQueryAttention, {report.rms_norms} RMSNorm ({report.skip_norms} with residual), {report.packed_qkv} packed QKV MatMulNBits, {gate_up} packed gate/up MatMulNBits"
    if model.ByteSize() > _PROTO_LIMIT:
        return fused, f"{component}: fused ({summary}); parity against the unfused graph not checked here (graph over 2 GiB), validate compares with the float reference"
    cosine = fusion_parity(model, fused)
    if cosine < MIN_COSINE:
        return model, f"{component}: contrib-op fusion lost parity (cosine {cosine:.5f} < {MIN_COSINE}); kept the unfused graph"
    return fused, f"{component}: fused for ONNX Runtime CPU ({summary}); parity with the unfused graph cosine {cosine:.5f}"
