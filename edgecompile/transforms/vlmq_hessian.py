"""The importance-weighted Hessian H̃ = X G² Xᵀ of each INT4 MatMul, from the ONNX decoder's own activations.

The float graph is run with the MatMuls' input tensors exposed as extra outputs, a chunk of them
per session (at most ``chunk_tensors`` names, as ``validation.layer_attribution`` bounds its runs),
one calibration sample at a time; only the [K, K] sums are kept. Per sample and input tensor the
rows of ``X`` (one per prompt token, in prompt order: batch 1) are scaled by that token's G for
the consuming MatMul (tokens are aligned by position; the torch side computed G from the very
same ``inputs_embeds``).

The accumulation repeats onnxruntime's ``gptq_quantize`` expression for expression (a running mean
over samples, ``sqrt(2/n)`` scaling, float64 sums), so with G ≡ 1 the Hessian, and therefore the
GPTQ codes, are bit-identical to what onnxruntime's GPTQ computes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx

Feeds = dict[str, np.ndarray]
CHUNK_TENSORS = 32


def _exposed(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """The graph with only ``names`` as outputs (what onnxruntime's gptq_quantize runs: its own outputs removed)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    return m.SerializeToString()


def weighted_hessians(
    model: onnx.ModelProto,
    consumers: dict[str, list[str]],
    feeds: Callable[[], Iterable[Feeds]],
    weights: Callable[[int, str], np.ndarray | None],
    chunk_tensors: int = CHUNK_TENSORS,
) -> dict[str, np.ndarray]:
    """{MatMul node: H̃ [K, K] float64}.

    ``consumers`` maps each input tensor to the MatMul nodes reading it; ``weights(sample, node)``
    is that node's per-token G for the sample (``None``: G ≡ 1, the plain GPTQ Hessian).
    """
    import onnxruntime as ort

    tensors = list(consumers)
    hessians: dict[str, np.ndarray] = {}
    for start in range(0, len(tensors), max(chunk_tensors, 1)):
        chunk = tensors[start : start + chunk_tensors]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(_exposed(model, chunk), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        sums: dict[str, np.ndarray] = {}
        nsamples = 0
        for s, feed in enumerate(feeds()):
            outs = session.run(chunk, {k: v for k, v in feed.items() if k in wanted})
            tmp = outs[0].shape[0]
            for name, inp in zip(chunk, outs, strict=True):
                inp = np.reshape(inp, (-1, inp.shape[-1]))
                for node in consumers[name]:
                    h = sums.get(node)
                    h = np.zeros((inp.shape[1], inp.shape[1])) if h is None else h * (nsamples / (nsamples + tmp))
                    x = np.sqrt(2 / (nsamples + tmp)) * inp
                    g = weights(s, node)
                    if g is not None:
                        if g.shape != (x.shape[0],):
                            raise ValueError(f"{node}: importance for {g.shape} tokens, the ONNX activation has {x.shape[0]}")
                        x = x * g.astype(x.dtype)[:, None]
                    sums[node] = h + np.matmul(x.T, x)
            nsamples += tmp
        hessians.update(sums)
    return hessians
