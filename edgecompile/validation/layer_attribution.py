"""Per-layer error attribution: which node of the compiled graph adds the error, and which rule chose it.

The Q/DQ graphs that onnxruntime's quantizer writes keep the float graph's tensor names (a quantized
MatMul still produces ``val_22``; a ``QuantizeLinear``/``DequantizeLinear`` pair then makes
``val_22_DequantizeLinear_Output`` for its consumers; MatMulNBits keeps the MatMul's output name),
so tensors are matched by name across the float and the compiled graph.

Two numbers per planned node (every node the plan did not leave in float):

- ``added``: the relative L2 error of the node's output when it is fed the *reference* inputs
  (the node's subgraph, Q/DQ included, is cut out of the compiled graph with ``onnx.utils.Extractor``
  and run with ORT). This is the error the node itself adds, independent of what came before.
  It is measured with the session options the artifact runs with (ORT_ENABLE_ALL: Q/DQ pairs fused
  into integer kernels); ``added_qdq`` is the same with graph optimizations off (the Q/DQ arithmetic
  as written). A large gap between the two points at the fused kernel, not at the quantization step.
- ``accumulated``: the relative L2 error of the same tensor in the end-to-end compiled run (run with
  the artifact's session options; the exposed tensor is kept as it is, which can keep a fusion at
  that one tensor from happening).

Memory is bounded by design, not by the graph's size. Marking every tensor of both graphs as an
output and keeping every run (what Polygraphy's ``MARK_ALL`` does) held 17 GB for CLIP ViT-B/32.
Here the planned nodes are cut into chunks whose exposed tensors fit ``chunk_bytes`` (sizes from
shape inference at the feed's shapes) and at most ``chunk_tensors`` names per run; for each chunk
the two graphs are run one sample at a time and only running sums (``||c - r||^2``, ``||r||^2``) are
kept. The peak is one graph's activations plus one chunk, whatever the number of layers. Weights
stay on disk (:class:`~edgecompile.weightless_graph.WeightlessGraph`), so graphs over
2 GiB work and sessions never copy them through protobuf.

Nodes are ranked by ``added``; each carries the plan rule that governs it and the recipe rule that
would keep it out of integer precision.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompile.plan.plan import PlanEntry
from edgecompile.weightless_graph import WeightlessGraph

Feeds = dict[str, np.ndarray]

CHUNK_TENSORS = 32  # names exposed per session run, at most
CHUNK_BYTES = 256 * 2**20  # bytes of exposed tensors per sample and chunk, at most (estimated)
_SUM_BLOCK = 1 << 20  # elements converted to float64 at a time by the error sums
# An isolated node whose weights exceed this is not kept open between samples: its two sessions are
# rebuilt per sample and closed after it. A decoder's INT8 lm_head (152k x 896) cut out and run
# unoptimised expands its weight to float; kept open beside the chunk's other isolated nodes it was
# the peak of validate on the 0.5 B proxy.
ISOLATED_KEEP_BYTES = 64 * 2**20


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


@dataclass
class AttributionStats:
    """What attribution asked of onnxruntime: its memory is bounded by ``max_outputs_per_run`` tensors."""

    chunks: int = 0
    full_runs: int = 0
    max_outputs_per_run: int = 0
    max_chunk_bytes: int = 0
    per_chunk_outputs: list[int] = field(default_factory=list)
    # Isolated nodes over ISOLATED_KEEP_BYTES of weights, whose sessions were opened per sample.
    transient_isolated: int = 0
    max_open_isolated_weight_bytes: int = 0


class _ErrorAccumulator:
    """Relative L2 error ||c - r|| / ||r|| summed over feeds (shapes may differ per feed)."""

    def __init__(self) -> None:
        self.num: dict[str, float] = {}
        self.den: dict[str, float] = {}

    def add(self, name: str, reference: np.ndarray, candidate: np.ndarray) -> None:
        # In float64 slices of _SUM_BLOCK elements: a decoder's prefill logits (600 tokens x 152k
        # vocabulary, 365 MB in float32) converted whole took 2 GB of temporaries per tensor.
        r, c = np.asarray(reference).reshape(-1), np.asarray(candidate).reshape(-1)
        if r.size != c.size:
            raise ValueError(f"{name}: candidate has {c.size} values, reference {r.size}")
        num = den = 0.0
        for start in range(0, r.size, _SUM_BLOCK):
            rb = r[start : start + _SUM_BLOCK].astype(np.float64)
            cb = c[start : start + _SUM_BLOCK].astype(np.float64)
            num += float(((cb - rb) ** 2).sum())
            den += float((rb**2).sum())
        self.num[name] = self.num.get(name, 0.0) + num
        self.den[name] = self.den.get(name, 0.0) + den

    def error(self, name: str) -> float | None:
        if name not in self.num:
            return None
        return float(np.sqrt(self.num[name] / max(self.den[name], 1e-30)))


@dataclass
class _Target:
    """One planned node to attribute: its tensor in both graphs and the reference inputs it is fed."""

    base: dict[str, Any]
    tensor: str  # the node's output in the float graph
    effective: str  # what its consumers read in the compiled graph (after a Q -> DQ pair, if any)
    inputs: list[str]  # the node's non-constant inputs (reference tensors)

    def reference_names(self) -> set[str]:
        return {self.tensor, *self.inputs}


def _constants(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def _effective_output(consumers: dict[str, list[onnx.NodeProto]], tensor: str) -> str:
    """The tensor consumers of ``tensor`` see: the end of a QuantizeLinear -> DequantizeLinear chain, if any."""
    q = [n for n in consumers.get(tensor, []) if n.op_type == "QuantizeLinear"]
    if q:
        dq = [n for n in consumers.get(q[0].output[0], []) if n.op_type == "DequantizeLinear"]
        if dq:
            return dq[0].output[0]
    return tensor


def _suggestion(entry: PlanEntry, fp16_native: bool) -> str:
    target = "fp16" if fp16_native and entry.precision != "fp16" else "null"
    return f"{{match: {{component: {entry.component}, name: {entry.node}}}, precision: {target}}}  # recipe.rules: keep this node out of {entry.precision}"


def _targets(component: str, reference: onnx.ModelProto, candidate: onnx.ModelProto, entries: list[PlanEntry], fp16_native: bool) -> tuple[list[_Target], list[LayerError]]:
    """The planned nodes that can be attributed, and rows for those that cannot (with the reason)."""
    float_nodes = {n.name: n for n in reference.graph.node}
    constants = _constants(reference)
    cand_tensors = {o for n in candidate.graph.node for o in n.output} | {i.name for i in candidate.graph.input}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in candidate.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    targets: list[_Target] = []
    missing: list[LayerError] = []
    for entry in entries:
        node = float_nodes.get(entry.node)
        if node is None or entry.precision in ("float", "fp32"):
            continue
        tensor = node.output[0]
        base = dict(component=component, node=entry.node, op_type=entry.op_type, tensor=tensor, precision=entry.precision, rule=entry.rule, suggestion=_suggestion(entry, fp16_native))
        if tensor not in cand_tensors:
            missing.append(LayerError(**base, note="output tensor not found by name in the compiled graph"))
            continue
        targets.append(_Target(base, tensor, _effective_output(consumers, tensor), [i for i in node.input if i and i not in constants]))
    return targets, missing


def _chunks(targets: list[_Target], sizes: dict[str, int], max_tensors: int, max_bytes: int) -> list[list[_Target]]:
    """Consecutive targets grouped so that each group's exposed tensors fit both limits (at least one target each).

    ``max_tensors`` bounds the names each of the two runs exposes; ``max_bytes`` the sum over both.
    """
    fallback = max(sizes.values(), default=1)
    groups: list[list[_Target]] = []
    current: list[_Target] = []
    ref: set[str] = set()
    cand: set[str] = set()
    for t in targets:
        r, c = ref | t.reference_names(), cand | {t.effective}
        cost = sum(sizes.get(n, fallback) for n in r) + sum(sizes.get(n, fallback) for n in c)
        if current and (max(len(r), len(c)) > max_tensors or cost > max_bytes):
            groups.append(current)
            current, r, c = [], t.reference_names(), {t.effective}
        current.append(t)
        ref, cand = r, c
    if current:
        groups.append(current)
    return groups


def _weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of a graph's initializers, from their dims (the data may be on disk, not loaded)."""
    total = 0
    for t in model.graph.initializer:
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):  # a type numpy has no dtype for: count one byte a value
            itemsize = 1
        total += (int(np.prod(t.dims)) if len(t.dims) else 1) * itemsize
    return total


class _Isolated:
    """The cut-out subgraph of one node, as two sessions (artifact options, then no optimizations).

    A node with large weights (``transient``) opens its sessions for one sample and closes them
    after, so at most one such node's weights are resident at a time, whatever the chunk holds.
    """

    def __init__(self, graph: WeightlessGraph, extractor: onnx.utils.Extractor, target: _Target, sample: dict[str, np.ndarray]) -> None:
        for name in (*target.inputs, target.effective):
            if name not in extractor.value_infos:  # Extractor needs a type for every input and output it cuts at
                dtype = onnx.helper.np_dtype_to_tensor_dtype(sample[name].dtype) if name in sample else onnx.TensorProto.FLOAT
                extractor.value_infos[name] = onnx.helper.make_tensor_value_info(name, dtype, None)
        self.graph = graph
        self.sub = extractor.extract_model(target.inputs, [target.effective])
        self.weight_bytes = _weight_bytes(self.sub)
        self.transient = self.weight_bytes > ISOLATED_KEEP_BYTES
        self._sessions: list[Any] | None = None
        self.sessions()  # fail here, once, if ORT cannot build the cut

    def sessions(self) -> list[Any]:
        from onnxruntime import GraphOptimizationLevel

        if self._sessions is None:
            self._sessions = [self.graph.sub_session(self.sub, level) for level in (GraphOptimizationLevel.ORT_ENABLE_ALL, GraphOptimizationLevel.ORT_DISABLE_ALL)]
        return self._sessions

    def after_sample(self) -> None:
        if self.transient:
            self._sessions = None


def _attribute_chunk(
    ref: WeightlessGraph, cand: WeightlessGraph, extractor: onnx.utils.Extractor, group: list[_Target], feeds: Sequence[Feeds], stats: AttributionStats
) -> list[LayerError]:
    from onnxruntime import GraphOptimizationLevel

    ref_names = sorted(set().union(*(t.reference_names() for t in group)))
    cand_names = sorted({t.effective for t in group})
    ref_session = ref.session(ref_names, GraphOptimizationLevel.ORT_DISABLE_ALL)  # float reference: names kept, exact
    cand_session = cand.session(cand_names, GraphOptimizationLevel.ORT_ENABLE_ALL)  # as the artifact runs
    stats.chunks += 1
    stats.max_outputs_per_run = max(stats.max_outputs_per_run, len(ref_names), len(cand_names))
    stats.per_chunk_outputs.append(len(ref_names) + len(cand_names))
    ref_inputs = {i.name for i in ref_session.get_inputs()}
    cand_inputs = {i.name for i in cand_session.get_inputs()}
    accumulated, isolated = _ErrorAccumulator(), [_ErrorAccumulator(), _ErrorAccumulator()]
    subs: dict[str, _Isolated | str] = {}
    for feed in feeds:  # one sample at a time: only the running sums outlive the loop
        r = dict(zip(ref_names, ref_session.run(ref_names, {k: v for k, v in feed.items() if k in ref_inputs}), strict=True))
        c = dict(zip(cand_names, cand_session.run(cand_names, {k: v for k, v in feed.items() if k in cand_inputs}), strict=True))
        stats.full_runs += 2
        stats.max_chunk_bytes = max(stats.max_chunk_bytes, sum(a.nbytes for a in (*r.values(), *c.values())))
        for t in group:
            accumulated.add(t.tensor, r[t.tensor], c[t.effective])
            if t.tensor not in subs:
                try:
                    subs[t.tensor] = _Isolated(cand, extractor, t, r)
                except Exception as exc:  # noqa: BLE001 - a subgraph ORT cannot cut or run: keep the node, say why
                    subs[t.tensor] = f"isolated run failed: {type(exc).__name__}: {str(exc)[:200]}"
            sub = subs[t.tensor]
            if isinstance(sub, str):
                continue
            try:
                open_bytes = sum(s.weight_bytes for s in subs.values() if isinstance(s, _Isolated) and (s._sessions is not None or s is sub))
                stats.max_open_isolated_weight_bytes = max(stats.max_open_isolated_weight_bytes, open_bytes)
                for k, session in enumerate(sub.sessions()):
                    (out,) = session.run([t.effective], {i: r[i] for i in t.inputs})
                    isolated[k].add(t.tensor, r[t.tensor], out)
                    del out
            except Exception as exc:  # noqa: BLE001
                subs[t.tensor] = f"isolated run failed: {type(exc).__name__}: {str(exc)[:200]}"
            finally:
                sub.after_sample()
        del r, c
    stats.transient_isolated += sum(1 for s in subs.values() if isinstance(s, _Isolated) and s.transient)
    rows = []
    for t in group:
        sub = subs.get(t.tensor)
        note = sub if isinstance(sub, str) else ""
        added = [None, None] if note else [isolated[0].error(t.tensor), isolated[1].error(t.tensor)]
        rows.append(LayerError(**t.base, added=added[0], added_qdq=added[1], accumulated=accumulated.error(t.tensor), note=note))
    return rows


def attribute_layers(
    component: str,
    reference: onnx.ModelProto | Path,
    candidate: onnx.ModelProto | Path,
    feeds: Sequence[Feeds],
    entries: list[PlanEntry],
    *,
    fp16_native: bool = False,
    chunk_tensors: int = CHUNK_TENSORS,
    chunk_bytes: int = CHUNK_BYTES,
    stats: AttributionStats | None = None,
) -> list[LayerError]:
    """Rank the planned (non-float) nodes of ``component`` by the relative error each adds.

    ``reference``/``candidate``: model files (weights never loaded here) or in-memory models.
    ``stats`` (optional) is filled with what was asked of onnxruntime (chunks, outputs per run).
    """
    stats = stats if stats is not None else AttributionStats()
    with tempfile.TemporaryDirectory(prefix="edgecompile-attribution-") as scratch:
        ref = WeightlessGraph.open(reference, Path(scratch), "reference")
        cand = WeightlessGraph.open(candidate, Path(scratch), "candidate")
        targets, results = _targets(component, ref.model, cand.model, entries, fp16_native)
        if targets and feeds:
            largest = max(feeds, key=lambda f: sum(v.nbytes for v in f.values()))
            sizes = {**cand.tensor_bytes(largest), **ref.tensor_bytes(largest)}
            extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(cand.model))  # weightless: cheap, any size
            for group in _chunks(targets, sizes, max(chunk_tensors, 2), chunk_bytes):
                results += _attribute_chunk(ref, cand, extractor, group, feeds, stats)
        else:
            results += [LayerError(**t.base, note="no reference feeds to attribute with") for t in targets]
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
        if any(n.op_type == "EPContext" for n in onnx.load(str(artifact_dir / file), load_external_data=False).graph.node):
            continue  # a pre-compiled NPU binary (QNN EPContext): no intermediate tensors to expose
        entries = [e for e in plan_entries if e.component == component]
        rows += attribute_layers(component, path, artifact_dir / file, feeds[component], entries, fp16_native=fp16_native)
    rows.sort(key=lambda e: -(e.added if e.added is not None else -1.0))
    return rows
