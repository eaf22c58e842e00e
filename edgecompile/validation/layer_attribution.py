"""Per-layer error attribution: which node of the compiled graph adds the error, and which rule chose it.

Both graphs are run with every tensor marked as an output (Polygraphy's ``ModifyOutputs`` with
``MARK_ALL``). The Q/DQ graphs that onnxruntime's quantizer writes keep the float graph's tensor
names (a quantized MatMul still produces ``val_22``; a ``QuantizeLinear``/``DequantizeLinear`` pair
then makes ``val_22_DequantizeLinear_Output`` for its consumers; MatMulNBits keeps the MatMul's
output name), so tensors are matched by name across the float and the compiled graph.

Two numbers per planned node (every node the plan did not leave in float):

- ``added``: the relative L2 error of the node's output when it is fed the *reference* inputs
  (the node's subgraph, Q/DQ included, is cut out of the compiled graph with ``onnx.utils.Extractor``
  and run with ORT). This is the error the node itself adds, independent of what came before.
  It is measured with the session options the artifact runs with (ORT_ENABLE_ALL: Q/DQ pairs fused
  into integer kernels); ``added_qdq`` is the same with graph optimizations off (the Q/DQ arithmetic
  as written). A large gap between the two points at the fused kernel, not at the quantization step.
- ``accumulated``: the relative L2 error of the same tensor in the end-to-end compiled run (every
  tensor is an output there, which blocks fusions: this is Q/DQ arithmetic).

Nodes are ranked by ``added``; each carries the plan rule that governs it and the recipe rule that
would keep it out of integer precision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompile.plan.plan import PlanEntry

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class LayerError:
    """One planned node's contribution to the output error."""

    component: str
    node: str
    op_type: str
    tensor: str
    precision: str
    rule: str
    suggestion: str
    added: float | None = None
    added_qdq: float | None = None
    accumulated: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _ErrorAccumulator:
    """Relative L2 error ||c - r|| / ||r|| summed over feeds (shapes may differ per feed)."""

    def __init__(self) -> None:
        self.num: dict[str, float] = {}
        self.den: dict[str, float] = {}

    def add(self, name: str, reference: np.ndarray, candidate: np.ndarray) -> None:
        r = np.asarray(reference, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64).reshape(r.shape)
        self.num[name] = self.num.get(name, 0.0) + float(((c - r) ** 2).sum())
        self.den[name] = self.den.get(name, 0.0) + float((r**2).sum())

    def error(self, name: str) -> float | None:
        if name not in self.num:
            return None
        return float(np.sqrt(self.num[name] / max(self.den[name], 1e-30)))


def _all_tensor_runs(model: onnx.ModelProto, feeds: Iterable[Feeds]) -> list[dict[str, np.ndarray]]:
    """Run ``model`` with every tensor marked as an output (Polygraphy loaders and ORT runner)."""
    from polygraphy import constants
    from polygraphy.backend.onnx import ModifyOutputs
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        marked = ModifyOutputs(model, outputs=constants.MARK_ALL, copy=True)()
        wanted = {i.name for i in marked.graph.input}
        with OnnxrtRunner(SessionFromOnnx(marked.SerializeToString())) as runner:
            return [dict(runner.infer({k: v for k, v in f.items() if k in wanted})) for f in feeds]


def _constants(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def _effective_output(model: onnx.ModelProto, tensor: str) -> str:
    """The tensor consumers of ``tensor`` see: the end of a QuantizeLinear -> DequantizeLinear chain, if any."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    q = [n for n in consumers.get(tensor, []) if n.op_type == "QuantizeLinear"]
    if q:
        dq = [n for n in consumers.get(q[0].output[0], []) if n.op_type == "DequantizeLinear"]
        if dq:
            return dq[0].output[0]
    return tensor


def _with_value_infos(model: onnx.ModelProto, sample: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Shape-inferred copy with a value_info for every float tensor (onnx.utils.Extractor needs them)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    for n in inferred.graph.node:
        for o in n.output:
            if o and o not in known and (o in sample or o.endswith("_DequantizeLinear_Output")):
                dtype = onnx.helper.np_dtype_to_tensor_dtype(sample[o].dtype) if o in sample else onnx.TensorProto.FLOAT
                inferred.graph.value_info.append(onnx.helper.make_tensor_value_info(o, dtype, None))
    return inferred


def _suggestion(entry: PlanEntry, fp16_native: bool) -> str:
    target = "fp16" if fp16_native and entry.precision != "fp16" else "null"
    return f"{{match: {{component: {entry.component}, name: {entry.node}}}, precision: {target}}}  # recipe.rules: keep this node out of {entry.precision}"


def attribute_layers(
    component: str,
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: list[Feeds],
    entries: list[PlanEntry],
    *,
    fp16_native: bool = False,
) -> list[LayerError]:
    """Rank the planned (non-float) nodes of ``component`` by the relative error each adds."""
    from onnxruntime import GraphOptimizationLevel, InferenceSession, SessionOptions

    ref_runs = _all_tensor_runs(reference, feeds)
    cand_runs = _all_tensor_runs(candidate, feeds)
    float_nodes = {n.name: n for n in reference.graph.node}
    constants = _constants(reference)
    cand_tensors = {o for n in candidate.graph.node for o in n.output} | {i.name for i in candidate.graph.input}
    extractor = onnx.utils.Extractor(_with_value_infos(candidate, ref_runs[0] if ref_runs else {}))
    results: list[LayerError] = []
    for entry in entries:
        node = float_nodes.get(entry.node)
        if node is None or entry.precision in ("float", "fp32"):
            continue
        tensor = node.output[0]
        base = dict(component=component, node=entry.node, op_type=entry.op_type, tensor=tensor, precision=entry.precision, rule=entry.rule, suggestion=_suggestion(entry, fp16_native))
        if tensor not in cand_tensors:
            results.append(LayerError(**base, added=None, added_qdq=None, accumulated=None, note="output tensor not found by name in the compiled graph"))
            continue
        effective = _effective_output(candidate, tensor)
        accumulated = _ErrorAccumulator()
        for r, c in zip(ref_runs, cand_runs, strict=True):
            if tensor in r and effective in c:
                accumulated.add(tensor, r[tensor], c[effective])
        inputs = [i for i in node.input if i and i not in constants]
        added: list[float | None] = [None, None]
        note = ""
        try:
            sub = extractor.extract_model(inputs, [effective]).SerializeToString()
            for k, level in enumerate((GraphOptimizationLevel.ORT_ENABLE_ALL, GraphOptimizationLevel.ORT_DISABLE_ALL)):
                options = SessionOptions()
                options.log_severity_level = 3
                options.graph_optimization_level = level
                session = InferenceSession(sub, options, providers=["CPUExecutionProvider"])
                isolated = _ErrorAccumulator()
                for r in ref_runs:
                    (out,) = session.run([effective], {i: r[i] for i in inputs})
                    isolated.add(tensor, r[tensor], out)
                added[k] = isolated.error(tensor)
        except Exception as exc:  # noqa: BLE001 - a subgraph ORT cannot cut or run: keep the node, say why
            note = f"isolated run failed: {type(exc).__name__}: {str(exc)[:200]}"
        results.append(LayerError(**base, added=added[0], added_qdq=added[1], accumulated=accumulated.error(tensor), note=note))
    results.sort(key=lambda e: -(e.added if e.added is not None else -1.0))
    return results


def attribute_build(
    exported: dict[str, Path], artifact_dir: Path, artifact_files: dict[str, str], plan_entries: list[PlanEntry], feeds: dict[str, list[Feeds]], *, fp16_native: bool
) -> list[LayerError]:
    """Attribution for every ONNX component of a build, all components ranked together."""
    rows: list[LayerError] = []
    for component, path in exported.items():
        file = artifact_files.get(component)
        if file is None or not file.endswith(".onnx") or component not in feeds:
            continue
        reference = onnx.load(str(path))
        candidate = onnx.load(str(artifact_dir / file))
        if any(n.op_type == "EPContext" for n in candidate.graph.node):
            continue  # a pre-compiled NPU binary (QNN EPContext): no intermediate tensors to expose
        entries = [e for e in plan_entries if e.component == component]
        rows += attribute_layers(component, reference, candidate, feeds[component], entries, fp16_native=fp16_native)
    rows.sort(key=lambda e: -(e.added if e.added is not None else -1.0))
    return rows
