"""GPTQ's column loop (Frantar et al., IST-DASLab/gptq ``fasterquant``) on an ONNX ``[K, N]`` weight, with a given Hessian.

Why our own loop: onnxruntime's routine (``onnxruntime.quantization.neural_compressor.weight_only
.gptq``, what ``gptq_quantize`` runs) takes a Hessian but, in onnxruntime 1.32, never uses it. It
stores the weight input-major (``[K, N]``) and propagates each column's error with
``Hinv1[i:, i]`` and ``Hinv[i2:, i1:i2]``: the *lower* part of the upper Cholesky factor of H⁻¹,
which is zero below the diagonal. So no error is carried to later inputs and the result is
round-to-nearest on its grid whatever H is (``tests/transforms/test_vlmq.py`` pins this). The
reference update uses the factor's rows, ``Hinv1[i, i:]`` and ``Hinv[i1:i2, i2:]``; this port does.

Everything else follows the reference: dead inputs zeroed, damping ``percdamp · mean(diag H)``,
lazy batch updates of ``blocksize`` columns, per-group grid from the not-yet-quantized weights
when a group starts (``find_params``: symmetric zero point ``(maxq+1)/2``, asymmetric
``round(−min/scale)``), and with ``act_order`` the reference's ``static_groups`` (groups fixed in
the original input order, so the result still packs as contiguous MatMulNBits blocks). It returns
the integer codes and the grid, so packing is exact (no second rounding of the dequantized output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GptqResult:
    codes: np.ndarray  # [K, N] uint8, 0..2^bits-1
    scales: np.ndarray  # [K // group, N]
    zeros: np.ndarray  # [K // group, N] (symmetric: (maxq+1)/2 everywhere)
    dequantized: np.ndarray  # [K, N] scale · (code − zero)


def find_params(w: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output column of ``w`` [rows, N]: (scale, zero), the reference Quantizer's min/max grid."""
    maxq = 2**bits - 1
    xmin = np.minimum(w.min(0), 0.0)
    xmax = np.maximum(w.max(0), 0.0)
    if symmetric:
        xmax = np.maximum(-xmin, xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin, xmax = np.where(empty, -1.0, xmin), np.where(empty, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if symmetric else np.round(-xmin / scale)
    return scale, zero


def gptq_weight(weight: np.ndarray, hessian: np.ndarray, bits: int, group: int, symmetric: bool, blocksize: int = 128, percdamp: float = 0.01, act_order: bool = False) -> GptqResult:
    """GPTQ of an input-major weight ``[K, N]`` against ``hessian`` [K, K] (any positive scale: damping is relative)."""
    k, n = weight.shape
    if k % group:
        raise ValueError(f"K={k} is not a multiple of the group size {group}")
    maxq = 2**bits - 1
    w = weight.astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead, :] = 0.0
    groups = [find_params(w[g : g + group], bits, symmetric) for g in range(0, k, group)] if act_order else None
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    w, h = w[perm], h[perm][:, perm]
    h[np.arange(k), np.arange(k)] += percdamp * np.mean(np.diag(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H⁻¹ = Uᵀ U, the reference's cholesky(cholesky_inverse(H), upper=True)
    codes = np.zeros((k, n), np.int64)
    deq = np.zeros((k, n))
    scales, zeros = np.zeros((k // group, n)), np.zeros((k // group, n))
    scale = zero = None
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1 = w[i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = upper[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = perm[col] // group
            if act_order:
                scale, zero = groups[g]
            elif col % group == 0:
                scale, zero = find_params(w[col : col + group], bits, symmetric)
            scales[g], zeros[g] = scale, zero
            x = w1[i]
            c = np.clip(np.round(x / scale) + zero, 0, maxq)
            q = scale * (c - zero)
            codes[col], deq[col] = c, q
            e = (x - q) / u1[i, i]
            w1[i:] -= np.outer(u1[i, i:], e)
            err1[i] = e
        w[i2:] -= upper[i1:i2, i2:].T @ err1
    inv = np.argsort(perm)
    return GptqResult(codes[inv].astype(np.uint8), scales, zeros, deq[inv])


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """[rows, m] codes -> bytes along the last axis, 8/bits per byte, lowest bits first (padded with zeros)."""
    per = 8 // bits
    m = values.shape[1]
    padded = np.zeros((values.shape[0], -(-m // per) * per), np.uint8)
    padded[:, :m] = values
    out = np.zeros((values.shape[0], padded.shape[1] // per), np.uint8)
    for j in range(per):
        out |= padded[:, j::per] << (bits * j)
    return out


def matmul_nbits(node, result: GptqResult, bits: int, group: int, symmetric: bool, accuracy_level: int = 4):  # noqa: ANN001, ANN201
    """The MatMulNBits node (and initializers) that computes exactly ``result.dequantized`` for a float MatMul ``node``.

    Symmetric grids carry no zero-point input: the kernel's default, 2^(bits−1), is the grid's
    ``(maxq+1)/2``. Layout per the contrib-op spec: ``B`` [N, K/block, block·bits/8], ``scales``
    [N, K/block], ``zero_points`` [N, ceil(K/block · bits/8)].
    """
    from onnx import helper, numpy_helper

    k, n = result.codes.shape
    blocks = k // group
    packed = _pack(result.codes.T, bits).reshape(n, blocks, group * bits // 8)
    base = node.input[1]
    inits = [numpy_helper.from_array(packed, f"{base}_Q{bits}G{group}"), numpy_helper.from_array(np.ascontiguousarray(result.scales.T).astype(np.float32), f"{base}_scale")]
    if not symmetric:
        inits.append(numpy_helper.from_array(_pack(np.ascontiguousarray(result.zeros.T).astype(np.uint8), bits), f"{base}_zp"))
    out = helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in inits)], list(node.output), name=f"{node.name}_Q{bits}", domain="com.microsoft", K=k, N=n, bits=bits, block_size=group, accuracy_level=accuracy_level)
    return out, inits
