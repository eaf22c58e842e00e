"""Per-input-channel scaling of MatMul groups: the graph surgery and statistics SmoothQuant and AWQ share.

Both transforms rewrite ``Y_j = X @ W_j`` (every planned MatMul ``j`` reading the same activation
``X``) as ``Y_j = (X / s) @ (diag(s) W_j)``: the float function is unchanged, what changes is how
hard ``X / s`` and ``diag(s) W_j`` are to quantize. The division by ``s`` goes where it costs nothing
when it can:

* into the preceding LayerNormalization's gamma and beta, when ``X`` is its output and nothing but
  the group reads it (SmoothQuant's ``smooth_ln_fcs``, AWQ's ``scale_ln_fcs``);
* otherwise into an inserted ``Mul(X, 1/s)`` node in front of the group (AWQ's ``ScaledActivation``
  for the MLP's second linear, whose input comes from a GELU that no scale folds through).

Statistics (per-channel max |X| and mean |X|, and a deterministic row sample for the searches) are
collected by running onnxruntime on the float graph with the group inputs as extra outputs.
The quantizer simulators here mirror what the backends do (INT8 per-channel symmetric weights,
INT4 per-block or per-channel weights, INT8 per-tensor asymmetric min/max activations); they are
the objective of the α searches, not the quantization that ships.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.errors import InputError
from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry

MAX_ROWS = 1024  # activation rows kept per tensor for the searches (a deterministic sample)


@dataclass
class Group:
    """Planned MatMuls that read the same activation tensor."""

    tensor: str
    nodes: list[str]
    weights: list[str]
    entries: list[PlanEntry]
    layernorm: str | None = None  # the LayerNormalization node the scale folds into, if any


@dataclass
class Stats:
    """What the searches need to know about one activation tensor."""

    absmax: np.ndarray
    absmean: np.ndarray
    rows: np.ndarray
    count: int = 0
    _sum: np.ndarray | None = field(default=None, repr=False)


def find_groups(model: onnx.ModelProto, entries: list[PlanEntry], precision: str, *, layernorm_only: bool = False) -> list[Group]:
    """Groups of ``precision``-planned MatMuls with a 2-D initializer weight, keyed by shared input."""
    planned = {e.node: e for e in entries if e.precision == precision and e.op_type == "MatMul"}
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
            consumers.setdefault(name, []).append(node)
    producers = {o: n for n in model.graph.node for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}
    groups: dict[str, Group] = {}
    for node in model.graph.node:
        entry = planned.get(node.name)
        if entry is None or len(node.input) < 2 or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2 or uses[node.input[1]] != 1:
            continue
        group = groups.setdefault(node.input[0], Group(node.input[0], [], [], []))
        group.nodes.append(node.name)
        group.weights.append(node.input[1])
        group.entries.append(entry)
    out = []
    for tensor, group in groups.items():
        producer = producers.get(tensor)
        readers = {n.name for n in consumers.get(tensor, [])}
        if (
            producer is not None
            and producer.op_type == "LayerNormalization"
            and readers == set(group.nodes)
            and tensor not in graph_outputs
            and len(producer.input) >= 3
            and all(producer.input[i] in inits and uses[producer.input[i]] == 1 for i in (1, 2))
        ):
            group.layernorm = producer.name
        if layernorm_only and group.layernorm is None:
            continue
        out.append(group)
    return out


def collect_stats(model: onnx.ModelProto, tensors: list[str], feeds: Callable[[], Iterable[Feeds]], seed: int = 0) -> dict[str, Stats]:
    """Per-channel max |X|, mean |X| and up to ``MAX_ROWS`` sampled rows of each tensor (float graph)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    rng = np.random.default_rng(seed)
    stats: dict[str, Stats] = {}
    kept: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for sample in feeds():
        values = session.run(tensors, {k: v for k, v in sample.items() if k in inputs})
        for name, value in zip(tensors, values, strict=True):
            rows = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
            a = np.abs(rows)
            s = stats.get(name)
            if s is None:
                s = stats[name] = Stats(a.max(0), np.zeros(rows.shape[1], np.float32), rows[:0], 0, np.zeros(rows.shape[1], np.float64))
            s.absmax = np.maximum(s.absmax, a.max(0))
            s._sum += a.sum(0)
            s.count += rows.shape[0]
            kept[name].append(rows)
            total = sum(len(r) for r in kept[name])
            if total > 4 * MAX_ROWS:  # keep memory bounded: thin to MAX_ROWS, deterministically
                allrows = np.concatenate(kept[name])
                kept[name] = [allrows[np.sort(rng.choice(len(allrows), MAX_ROWS * 2, replace=False))]]
    for name, s in stats.items():
        s.absmean = (s._sum / max(s.count, 1)).astype(np.float32)
        allrows = np.concatenate(kept[name])
        s.rows = allrows if len(allrows) <= MAX_ROWS else allrows[np.sort(rng.choice(len(allrows), MAX_ROWS, replace=False))]
    return stats


# -- quantizer simulators (the search objectives) ------------------------------------------------

def fake_quant_int8_weight(w: np.ndarray) -> np.ndarray:
    """INT8 symmetric, one scale per output channel (columns of a [K, N] MatMul weight)."""
    scale = np.maximum(np.abs(w).max(0, keepdims=True), 1e-12) / 127.0
    return np.clip(np.round(w / scale), -127, 127) * scale


def fake_quant_int4_weight(w: np.ndarray, block: int | None, symmetric: bool = True) -> np.ndarray:
    """INT4 per block of ``block`` rows along K (``None``: per output channel), as MatMulNBits / block DQ."""
    k, n = w.shape
    bs = k if block is None else block
    pad = (-k) % bs
    wp = np.concatenate([w, np.zeros((pad, n), w.dtype)]) if pad else w
    blocks = wp.reshape(-1, bs, n)
    if symmetric:
        amax = np.maximum(np.abs(blocks).max(1, keepdims=True), 1e-12)
        scale = amax / 8.0  # onnxruntime's symmetric INT4: the signed max maps to -8
        q = np.clip(np.round(blocks / scale), -8, 7) * scale
    else:
        lo = np.minimum(blocks.min(1, keepdims=True), 0.0)
        hi = np.maximum(blocks.max(1, keepdims=True), 0.0)
        scale = np.maximum(hi - lo, 1e-12) / 15.0
        zp = np.clip(np.round(-lo / scale), 0, 15)
        q = (np.clip(np.round(blocks / scale) + zp, 0, 15) - zp) * scale
    return q.reshape(-1, n)[:k]


def fake_quant_activation(x: np.ndarray) -> np.ndarray:
    """INT8 per-tensor asymmetric from the rows' min/max (static min/max calibration; range holds 0)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zp = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale


def relative_output_error(x: np.ndarray, weights: list[np.ndarray], s: np.ndarray, quant_w: Callable[[np.ndarray, int], np.ndarray], quant_x: bool) -> float:
    """Σ_j ‖Q(X/s) Q(diag(s) W_j) − X W_j‖² / Σ_j ‖X W_j‖²: the group's output error after scaling by ``s``."""
    xs = x / s
    xq = fake_quant_activation(xs) if quant_x else xs
    num = den = 0.0
    for j, w in enumerate(weights):
        ref = x @ w
        out = xq @ quant_w(w * s[:, None], j)
        num += float(np.sum((out - ref) ** 2))
        den += float(np.sum(ref**2))
    return num / max(den, 1e-30)


# -- graph surgery -------------------------------------------------------------------------------

def apply_scales(model: onnx.ModelProto, group: Group, s: np.ndarray) -> str:
    """Rewrite ``model`` in place so the group computes (X/s) @ (diag(s) W); returns where 1/s went."""
    s = s.astype(np.float32)
    inits = {i.name: i for i in model.graph.initializer}
    for name in group.weights:
        w = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((w * s[:, None].astype(w.dtype)).astype(w.dtype), name))
    if group.layernorm is not None:
        node = next(n for n in model.graph.node if n.name == group.layernorm)
        for i in (1, 2):
            t = numpy_helper.to_array(inits[node.input[i]])
            inits[node.input[i]].CopyFrom(numpy_helper.from_array((t / s.astype(t.dtype)).astype(t.dtype), node.input[i]))
        return f"layernorm:{group.layernorm}"
    scaled = f"{group.tensor}_scaled_{group.nodes[0]}"
    inv = f"{scaled}_inv_scale"
    model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
    index = next(i for i, n in enumerate(model.graph.node) if n.name == group.nodes[0])
    members = set(group.nodes)
    for n in model.graph.node:
        if n.name in members:
            n.input[0] = scaled
    model.graph.node.insert(index, helper.make_node("Mul", [group.tensor, inv], [scaled], name=f"{scaled}_mul"))
    return f"mul:{scaled}_mul"


def weight_arrays(model: onnx.ModelProto, group: Group) -> list[np.ndarray]:
    inits = {i.name: i for i in model.graph.initializer}
    return [numpy_helper.to_array(inits[n]).astype(np.float32) for n in group.weights]


def set_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for init in model.graph.initializer:
        if init.name == name:
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
            return
    raise KeyError(name)


def group_stats(name: str, model: onnx.ModelProto, component: str, groups: list[Group], feeds: Callable[[], Iterable[Feeds]] | None) -> dict[str, Stats]:
    """Calibration statistics of every group's input, or a named error when there are no samples
    (the scaling transforms, SmoothQuant and AWQ, cannot choose scales without them)."""
    if feeds is None:
        raise InputError(f"{name}: needs calibration samples for component {component}")
    stats = collect_stats(model, [g.tensor for g in groups], feeds)
    if not stats:
        raise InputError(f"quantization.weight_transforms: {name} got no calibration samples for component {component}")
    return stats
