"""Rotary + grouped-query attention of a dynamo-exported decoder layer -> com.microsoft GroupQueryAttention.

Matched from the cache outputs backwards, so every layer is found by the same anchors:
``present_key_i = Concat(past_key_i, rope(K))`` and ``present_value_i = Concat(past_value_i, V)``,
with ``rope(t) = t*cos + rotate_half(t)*sin`` (full head dimension, cos/sin from the graph's
``inv_freq`` initializer and ``position_ids``), K/V/Q = Transpose(Reshape(projection)). The attention
output is the Reshape after the probabilities x V MatMul; scale is read from the Muls on Q and K^T.
Anything else (partial rotary, interleaved rotary, scaled rotary cos/sin, no past input) is left
unfused and named in the report. See decoder_fusion for the semantics kept.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.backends.ort_cpu.fusion_graph import FusionGraph, FusionReport

_MS = "com.microsoft"
_PROJ = ("MatMul", "MatMulNBits")


def _proj_of(g: FusionGraph, t: str) -> tuple[str, int] | None:
    """t = Transpose(0,2,1,3)(Reshape(proj, [.., .., heads, head_dim])) -> (proj output, heads)."""
    tr = g.prod(t, "Transpose")
    if tr is None or list(tr.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    rs = g.prod(tr.input[0], "Reshape")
    shape = g.const(rs.input[1]) if rs is not None else None
    if rs is None or shape is None or shape.size != 4 or _projection(g, rs.input[0]) is None:
        return None
    return rs.input[0], int(shape[2])


def _projection(g: FusionGraph, t: str) -> tuple[onnx.NodeProto, str | None] | None:
    """t = proj(x) or Add(proj(x), bias) with a constant 1-D bias (Qwen2's q/k/v) -> (projection node, bias name)."""
    proj = g.prod(t, _PROJ)
    if proj is not None:
        return proj, None
    add = g.prod(t, "Add")
    if add is None:
        return None
    for i, j in ((0, 1), (1, 0)):
        proj, bias = g.prod(add.input[i], _PROJ), g.const(add.input[j])
        if proj is not None and bias is not None and bias.ndim == 1:
            return proj, add.input[j]
    return None


def _rope(g: FusionGraph, t: str) -> tuple[str, str, str] | None:
    """t = Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, h/2:)), Slice(x, :h/2)), sin)) -> (x, cos, sin)."""
    add = g.prod(t, "Add")
    if add is None:
        return None
    muls = [g.prod(i, "Mul") for i in add.input]
    if None in muls:
        return None
    for m_cos, m_sin in (muls, muls[::-1]):
        rot = next((i for i in m_sin.input if g.prod(i, "Concat") is not None), None)
        if rot is None:
            continue
        cat = g.prod(rot, "Concat")
        neg = g.prod(cat.input[0], "Neg")
        lo = g.prod(cat.input[1], "Slice")
        hi = g.prod(neg.input[0], "Slice") if neg is not None else None
        if hi is None or lo is None or hi.input[0] != lo.input[0] or hi.input[0] not in m_cos.input:
            continue
        x = hi.input[0]
        bounds = [g.const(hi.input[1]), g.const(lo.input[1]), g.const(lo.input[2])]
        if any(b is None or b.size != 1 for b in bounds) or int(bounds[1].reshape(-1)[0]) != 0 or int(bounds[0].reshape(-1)[0]) != int(bounds[2].reshape(-1)[0]):
            continue
        return x, next(i for i in m_cos.input if i != x), _other_input(m_sin, rot)
    return None


def _other_input(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _inv_freq(g: FusionGraph, cos_u: str, sin_u: str) -> tuple[np.ndarray, str] | None:
    """cos_u = Unsqueeze(Cos(Concat(f, f))), f = Mul(Cast(Unsqueeze(position_ids)), inv_freq) -> (inv_freq, position_ids)."""
    found = []
    for name, op in ((cos_u, "Cos"), (sin_u, "Sin")):
        un = g.prod(name, "Unsqueeze")
        trig = g.prod(un.input[0], op) if un is not None else None
        cat = g.prod(trig.input[0], "Concat") if trig is not None else None
        if cat is None or len(cat.input) != 2 or cat.input[0] != cat.input[1]:
            return None
        found.append(cat.input[0])
    mul = g.prod(found[0], "Mul")
    if found[0] != found[1] or mul is None:
        return None
    for i, name in enumerate(mul.input):
        freq = g.const(name)
        cast = g.prod(mul.input[1 - i], "Cast")
        unsq = g.prod(cast.input[0], "Unsqueeze") if cast is not None else None
        if freq is not None and unsq is not None and unsq.input[0] in {x.name for x in g.graph.input}:
            return freq.reshape(-1).astype(np.float32), unsq.input[0]
    return None


def _attention_output(g: FusionGraph, present_v: str) -> tuple[str, float] | None:
    """present_v -> [Unsqueeze, Expand, Reshape]* -> MatMul(probs, .) -> Transpose -> Reshape: (output, scale)."""
    frontier, av = [present_v], None
    while frontier and av is None:
        name = frontier.pop()
        for user in g.consumers.get(name, []):
            if user.op_type in ("Unsqueeze", "Expand", "Reshape") and user.input[0] == name:
                frontier.append(user.output[0])
            elif user.op_type == "MatMul" and user.input[1] == name:
                av = user
    users = g.consumers.get(av.output[0], []) if av is not None else []
    if len(users) != 1 or users[0].op_type != "Transpose" or list(users[0].attribute[0].ints) != [0, 2, 1, 3]:
        return None
    out_users = g.consumers.get(users[0].output[0], [])
    if len(out_users) != 1 or out_users[0].op_type != "Reshape":
        return None
    return out_users[0].output[0], _scale(g, av)


def _scale(g: FusionGraph, av: onnx.NodeProto) -> float:
    """Walk back from the probabilities to the QK^T MatMul and multiply the scalar Muls on both sides."""
    frontier, node = [(av.input[0], 0)], None
    while frontier and node is None:
        name, depth = frontier.pop(0)
        found = g.producer.get(name)
        if found is not None and found.op_type == "MatMul":
            node = found
        elif found is not None and depth < 6:
            frontier += [(i, depth + 1) for i in found.input if i and g.const(i) is None]
    scale = 1.0
    for name in node.input if node is not None else []:
        mul = g.prod(name, "Mul")
        factor = next((g.const(i) for i in mul.input if g.const(i) is not None and g.const(i).size == 1), None) if mul is not None else None
        scale *= float(factor.reshape(-1)[0]) if factor is not None else 1.0
    return scale


def _shared_inputs(g: FusionGraph, mask: str, positions: str, inv_freq: np.ndarray) -> tuple[str, str, str, str]:
    """seqlens_k, total_sequence_length and the cos/sin caches (up to max(position)+1), built once per graph."""
    p = "gqa_shared"
    consts = {f"{p}_one": np.array([1], np.int64), f"{p}_axis1": np.array([1], np.int64), f"{p}_zero": np.array(0, np.int64),
              f"{p}_onescalar": np.array(1, np.int64), f"{p}_inv_freq": inv_freq[None, :]}
    g.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [
        helper.make_node("ReduceSum", [mask, f"{p}_axis1"], [f"{p}_len64"], keepdims=0),
        helper.make_node("Sub", [f"{p}_len64", f"{p}_one"], [f"{p}_seqlens64"]),
        helper.make_node("Cast", [f"{p}_seqlens64"], [f"{p}_seqlens_k"], to=onnx.TensorProto.INT32),
        helper.make_node("Shape", [mask], [f"{p}_mask_shape"], start=1, end=2),
        helper.make_node("Squeeze", [f"{p}_mask_shape"], [f"{p}_total64"]),
        helper.make_node("Cast", [f"{p}_total64"], [f"{p}_total"], to=onnx.TensorProto.INT32),
        helper.make_node("ReduceMax", [positions], [f"{p}_maxpos"], keepdims=0),
        helper.make_node("Add", [f"{p}_maxpos", f"{p}_onescalar"], [f"{p}_npos"]),
        helper.make_node("Max", [f"{p}_npos", f"{p}_total64"], [f"{p}_cache_len"]),
        helper.make_node("Range", [f"{p}_zero", f"{p}_cache_len", f"{p}_onescalar"], [f"{p}_range"]),
        helper.make_node("Cast", [f"{p}_range"], [f"{p}_rangef"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{p}_rangef", f"{p}_axis1"], [f"{p}_rangecol"]),
        helper.make_node("Mul", [f"{p}_rangecol", f"{p}_inv_freq"], [f"{p}_freqs"]),
        helper.make_node("Cos", [f"{p}_freqs"], [f"{p}_cos"]),
        helper.make_node("Sin", [f"{p}_freqs"], [f"{p}_sin"]),
    ]
    for n in nodes:
        n.name = n.output[0]
    g.graph.node.extend(nodes)
    return f"{p}_seqlens_k", f"{p}_total", f"{p}_cos", f"{p}_sin"


def fuse_attention(g: FusionGraph, report: FusionReport) -> None:
    """Replace each matched layer's rotary + attention by one GroupQueryAttention node."""
    graph_inputs = {i.name for i in g.graph.input}
    shared: tuple[str, str, str, str] | None = None
    layers = sorted(o for o in g.outputs if o.startswith("present_key_"))
    for present_k in layers:
        present_v = present_k.replace("present_key_", "present_value_")
        cat_k, cat_v = g.prod(present_k, "Concat"), g.prod(present_v, "Concat")
        if cat_k is None or cat_v is None or cat_k.input[0] not in graph_inputs or cat_v.input[0] not in graph_inputs:
            report.skipped.append(f"{present_k}: not Concat(past, new)")
            continue
        rope_k, rope_q = _rope(g, cat_k.input[1]), None
        k, v = (_proj_of(g, rope_k[0]) if rope_k else None), _proj_of(g, cat_v.input[1])
        out = _attention_output(g, present_v)
        q_users = []
        if rope_k is not None and out is not None:
            q_users = [n for n in g.graph.node if n.op_type == "Add" and n.output[0] != cat_k.input[1] and (r := _rope(g, n.output[0])) and r[1:] == rope_k[1:] and _feeds_attention(g, n.output[0], out[0])]
            rope_q = _rope(g, q_users[0].output[0]) if len(q_users) == 1 else None
        q = _proj_of(g, rope_q[0]) if rope_q else None
        trig = _inv_freq(g, rope_k[1], rope_k[2]) if rope_k else None
        if None in (k, v, q, out, trig):
            report.skipped.append(f"{present_k}: rotary/attention pattern not matched")
            continue
        inv_freq, positions = trig
        mask = next((i.name for i in g.graph.input if i.name == "attention_mask"), None)
        if mask is None:
            report.skipped.append(f"{present_k}: no attention_mask input")
            continue
        shared = shared or _shared_inputs(g, mask, positions, inv_freq)
        seqlens, total, cos, sin = shared
        node = helper.make_node(
            "GroupQueryAttention", [q[0], k[0], v[0], cat_k.input[0], cat_v.input[0], seqlens, total, cos, sin, positions],
            [out[0], present_k, present_v], name=f"gqa_{present_k}", domain=_MS,
            num_heads=q[1], kv_num_heads=k[1], scale=out[1], do_rotary=1, rotary_interleaved=0,
        )
        for old in (cat_k, cat_v):
            g.graph.node.remove(old)
        g.producer[out[0]].output[0] = f"{out[0]}__unfused"
        g.graph.node.append(node)
        g.refresh()
        report.attentions += 1


def _feeds_attention(g: FusionGraph, t: str, out: str, depth: int = 12) -> bool:
    """Does tensor t reach the attention output ``out`` within a few nodes (the Q side of the same layer)?"""
    frontier = [(t, 0)]
    while frontier:
        name, d = frontier.pop()
        if name == out:
            return True
        if d < depth:
            frontier += [(o, d + 1) for u in g.consumers.get(name, []) for o in u.output]
    return False


def pack_qkv(g: FusionGraph, report: FusionReport) -> None:
    """GroupQueryAttention with Q, K, V from three MatMulNBits of one input and equal settings -> one packed MatMulNBits.

    Q/K/V with biases (Qwen2) are packed too: the three bias Adds become one Add of the concatenated
    biases after the packed MatMulNBits.
    """
    for gqa in [n for n in g.graph.node if n.op_type == "GroupQueryAttention"]:
        found = [_projection(g, i) for i in gqa.input[:3]]
        if None in found or any(p.op_type != "MatMulNBits" for p, _ in found) or len({b is None for _, b in found}) != 1:
            continue
        projs, biases = [p for p, _ in found], [b for _, b in found]
        if len({p.input[0] for p in projs}) != 1 or any(any(p.input[4:]) for p in projs):
            continue
        attrs = [{a.name: helper.get_attribute_value(a) for a in p.attribute if a.name != "N"} for p in projs]
        if any(a != attrs[0] for a in attrs) or any(len(g.consumers[p.output[0]]) != 1 for p in projs):
            continue
        if biases[0] is not None and any(len(g.consumers[i]) != 1 for i in gqa.input[:3]):
            continue
        arrays = [[g.const(p.input[j]) if j < len(p.input) and p.input[j] else None for j in (1, 2, 3)] for p in projs]
        if any(a[0] is None or a[1] is None for a in arrays) or len({a[2] is None for a in arrays}) != 1:
            continue
        n_total = sum(int(_n(p)) for p in projs)
        q = projs[0]
        names = [f"{q.name}_qkv_{s}" for s in ("weight", "scales", "zero_points")]
        blobs = [np.concatenate([a[0] for a in arrays], 0), _cat_scales(arrays, projs)]
        if arrays[0][2] is not None:
            blobs.append(np.concatenate([a[2].reshape(int(_n(p)), -1) for a, p in zip(arrays, projs, strict=True)], 0).reshape(-1))
        g.graph.initializer.extend(numpy_helper.from_array(b, n) for b, n in zip(blobs, names, strict=False))
        packed = helper.make_node("MatMulNBits", [q.input[0], *names[: len(blobs)]], [f"{q.output[0]}_qkv"], name=q.name, domain=_MS, N=n_total, **attrs[0])
        for p in projs:
            g.graph.node.remove(p)
        g.graph.node.append(packed)
        packed_out = packed.output[0]
        if biases[0] is not None:
            for add in {id(a): a for a in (g.producer[i] for i in gqa.input[:3])}.values():
                g.graph.node.remove(add)
            bias = np.concatenate([g.const(b).astype(np.float32).reshape(-1) for b in biases])
            g.graph.initializer.append(numpy_helper.from_array(bias, f"{q.name}_qkv_bias"))
            g.graph.node.append(helper.make_node("Add", [packed_out, f"{q.name}_qkv_bias"], [f"{packed_out}_bias"], name=f"{q.name}_qkv_bias_add"))
            packed_out = f"{packed_out}_bias"
        gqa.input[0], gqa.input[1], gqa.input[2] = packed_out, "", ""
        g.refresh()
        report.packed_qkv += 1


def _n(node: onnx.NodeProto) -> int:
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == "N")


def _cat_scales(arrays: list, projs: list[onnx.NodeProto]) -> np.ndarray:
    """Scales are stored flat (N * blocks) or (N, blocks); concatenate per output row either way."""
    return np.concatenate([a[1].reshape(_n(p), -1) for a, p in zip(arrays, projs, strict=True)], 0).reshape(arrays[0][1].shape[:0] + (-1,) if arrays[0][1].ndim == 1 else (-1, arrays[0][1].shape[-1]))


def pack_gate_up(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """MLP gate and up projections (two MatMulNBits of one input, equal settings) -> one packed MatMulNBits + Split.

    The packing pack_qkv does for attention, for the MLP: at one token per step a MatMulNBits is a
    thread-pool dispatch and an INT8 quantization of its input as much as a GEMV, and the wider packed
    one divides better over the threads. Exact: each output column is the same dot product over the
    same quantized input. Run after fuse_decoder (which does not pack these); returns (model, pairs packed).
    """
    from edgecompile.backends.common.graph_tidy import topological_sort

    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0) < 13:
        return model, 0  # Split takes its sizes as an input from opset 13
    g = FusionGraph(model.graph)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in g.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == _MS and not any(node.input[3:]):
            groups.setdefault(node.input[0], []).append(node)
    packed = 0
    for source, nodes in groups.items():
        if len(nodes) != 2:
            continue
        attrs = [{a.name: helper.get_attribute_value(a) for a in p.attribute if a.name != "N"} for p in nodes]
        arrays = [[g.const(p.input[1]), g.const(p.input[2])] for p in nodes]
        if attrs[0] != attrs[1] or any(a is None for pair in arrays for a in pair) or any(o in g.outputs for p in nodes for o in p.output):
            continue
        sizes = [int(_n(p)) for p in nodes]
        name = f"{nodes[0].name}_gate_up"
        g.graph.initializer.extend([numpy_helper.from_array(np.concatenate([a[0] for a in arrays], 0), f"{name}_weight"),
                                    numpy_helper.from_array(_cat_scales(arrays, nodes), f"{name}_scales"),
                                    numpy_helper.from_array(np.array(sizes, np.int64), f"{name}_split")])
        for p in nodes:
            g.graph.node.remove(p)
        g.graph.node.extend([
            helper.make_node("MatMulNBits", [source, f"{name}_weight", f"{name}_scales"], [f"{name}_out"], name=name, domain=_MS, N=sum(sizes), **attrs[0]),
            helper.make_node("Split", [f"{name}_out", f"{name}_split"], [p.output[0] for p in nodes], name=f"{name}_split", axis=-1),
        ])
        packed += 1
    if packed:
        used = {i for n in g.graph.node for i in n.input}
        for init in [t for t in g.graph.initializer if t.name not in used]:
            g.graph.initializer.remove(init)  # the unpacked weights and scales
        model = topological_sort(model)
    return model, packed
