"""Prepare an exported graph for the HTP: static shapes, qnn_preprocess_model, and exact rewrites.

HTP graphs have static shapes, execute no float ops, and cannot quantize a -3.4e38 mask constant.
Each rewrite below preserves the model's outputs for the shapes it is applied to, and each is
reported so the build summary says what was changed and why:

- static shapes: batch 1; a dynamic sequence axis takes ``sequence_length`` (default: the rows of
  the position-embedding table). The runner pads inputs to these shapes (mask 0 on padding).
- finite attention mask: ``Where(cond, 0, -3.4e38)`` constants become ``attention_mask_value``
  (default -100: exp(-100) is 0 in any fixed-point format, and the quantized range stays small
  enough for 16-bit steps of ~0.002).
- NaN guard: ``Where(IsNaN(x), 0, x)`` (the exporter's guard for fully masked softmax rows) is x
  once masks are finite; IsNaN has no fixed-point form.
- GatherND with constant indices -> Reshape + Gather; batch-1 GatherND on ``[0, i]`` indices (the
  EOS pooling) -> Slice + Gather. HTP's GatherNd has no quantized node unit in QNN EP.
- (``decoder``) a bias-free linear ``MatMul(x [1, n, k], W [k, m])`` -> Reshape + Gemm + Reshape:
  ORT's QNN quantizer quantizes MatMul weights per tensor only, Gemm weights per output channel
  (the decoder's q/k/v/o/MLP projections have no bias to fuse into a Gemm).
- (``decoder``) RMSNorm as exported (Pow 2, ReduceMean, Add eps, Sqrt, Reciprocal, Mul, Mul gamma)
  -> one SimplifiedLayerNormalization, which QNN EP lowers to HTP's RmsNorm: the decomposed chain
  runs each step in 16-bit fixed point and, measured on the HTP emulator, collapses the hidden
  state of a decoder with small activations (logits ~0 where the QDQ graph on the CPU EP is right).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.errors import InputError

_FLOAT_MIN = -1e30


def static_shapes(model: onnx.ModelProto, sequence_length: int | None, component: str) -> dict[str, list[int]]:
    """Input name -> static shape: batch 1, other symbolic axes the sequence length."""
    shapes: dict[str, list[int]] = {}
    for value in model.graph.input:
        dims = []
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if d.dim_value:
                dims.append(d.dim_value)
            elif i == 0:
                dims.append(1)
            else:
                dims.append(sequence_length or _position_rows(model, component))
        shapes[value.name] = dims
    return shapes


def _position_rows(model: onnx.ModelProto, component: str) -> int:
    for tensor in model.graph.initializer:
        if re.search(r"position_embedding.*weight$", tensor.name) and len(tensor.dims) == 2:
            return int(tensor.dims[0])
    raise InputError(f"{component}: the graph has a dynamic sequence axis and no position-embedding table to size it; set backend_options.sequence_length")


def prepare(model: onnx.ModelProto, shapes: dict[str, list[int]], mask_value: float, *, decoder: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """Fix shapes, run onnxruntime's qnn_preprocess_model, then the exact rewrites; return notes."""
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for name, dims in shapes.items():
        make_input_shape_fixed(fixed.graph, name, dims)
    fix_output_shapes(fixed)
    with tempfile.TemporaryDirectory(prefix="edgecompile-qnn-") as tmp:
        out = Path(tmp) / "pre.onnx"
        # Passing the (already fixed) shapes again makes the preprocessor write its output, which
        # has been through ORT's basic optimizer with static shapes (Shape chains fold away).
        qnn_preprocess_model(fixed, out, fuse_layernorm=True, dynamic_input_shapes=[(k, ",".join(map(str, v))) for k, v in shapes.items()])
        prepared = onnx.load(str(out))
    notes = [f"static input shapes {shapes}", "onnxruntime qnn_preprocess_model (Gelu/LpNorm/LayerNorm fusion, basic optimizer)"]
    for rewrite in (_finite_masks, _drop_nan_guards, _const_gathernd, _batch1_gathernd, *((_linear_gemm,) if decoder else ())):
        prepared, note = rewrite(prepared, mask_value)
        if note:
            notes.append(note)
    onnx.checker.check_model(prepared)
    if decoder:  # after the checker: SimplifiedLayerNormalization is an ONNX Runtime op the onnx checker does not know
        prepared, note = _rms_norm(prepared, mask_value)
        notes += [note] if note else []
    return prepared, notes


def _finite_masks(model: onnx.ModelProto, mask_value: float) -> tuple[onnx.ModelProto, str]:
    inits = {t.name: t for t in model.graph.initializer}
    changed = []
    for node in model.graph.node:
        if node.op_type != "Where":
            continue
        for name in node.input[1:]:
            if name in inits and name not in changed:
                array = numpy_helper.to_array(inits[name])
                if array.dtype == np.float32 and array.size == 1 and float(array.item()) < _FLOAT_MIN:
                    inits[name].CopyFrom(numpy_helper.from_array(np.full(array.shape, mask_value, np.float32), name))
                    changed.append(name)
    return model, f"attention-mask constants {changed} -> {mask_value} (finite, quantizable)" if changed else ""


def _drop_nan_guards(model: onnx.ModelProto, _: float) -> tuple[onnx.ModelProto, str]:
    producers = {o: n for n in model.graph.node for o in n.output}
    drop: list[onnx.NodeProto] = []
    for node in model.graph.node:
        guard = producers.get(node.input[0]) if node.op_type == "Where" else None
        if guard is None or guard.op_type != "IsNaN" or node.input[2] != guard.input[0]:
            continue
        for consumer in model.graph.node:
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = guard.input[0]
        drop += [node, guard]
    for node in drop:
        model.graph.node.remove(node)
    return model, f"removed {len(drop) // 2} Where(IsNaN(x), 0, x) guards (no NaN once masks are finite)" if drop else ""


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def _const_gathernd(model: onnx.ModelProto, _: float) -> tuple[onnx.ModelProto, str]:
    inits = {t.name: t for t in model.graph.initializer}
    shapes = _shapes(model)
    nodes, count = [], 0
    for node in model.graph.node:
        batch_dims = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        data_shape = shapes.get(node.input[0]) if node.op_type == "GatherND" else None
        if data_shape and all(data_shape) and batch_dims == 0 and node.input[1] in inits:
            index = numpy_helper.to_array(inits[node.input[1]])
            if index.shape[-1] == len(data_shape):
                flat = np.ravel_multi_index(tuple(np.moveaxis(index, -1, 0)), data_shape).astype(np.int64)
                model.graph.initializer.extend([numpy_helper.from_array(flat, f"{node.name}_flat_index"), numpy_helper.from_array(np.array([-1], np.int64), f"{node.name}_flat_shape")])
                nodes += [
                    helper.make_node("Reshape", [node.input[0], f"{node.name}_flat_shape"], [f"{node.name}_flat"], name=f"{node.name}_flatten"),
                    helper.make_node("Gather", [f"{node.name}_flat", f"{node.name}_flat_index"], list(node.output), name=node.name, axis=0),
                ]
                count += 1
                continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, f"{count} GatherND with constant indices -> Reshape + Gather" if count else ""


def _batch1_gathernd(model: onnx.ModelProto, _: float) -> tuple[onnx.ModelProto, str]:
    shapes = _shapes(model)
    nodes, count = [], 0
    for node in model.graph.node:
        data_shape = shapes.get(node.input[0]) if node.op_type == "GatherND" else None
        batch_dims = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        if data_shape and len(data_shape) >= 2 and data_shape[0] == 1 and batch_dims == 0 and shapes.get(node.input[1]) == [1, 2]:
            p = node.name
            model.graph.initializer.extend(
                [numpy_helper.from_array(np.array([v], np.int64), f"{p}_{k}") for k, v in (("one", 1), ("two", 2), ("flat", -1))]
                + [numpy_helper.from_array(np.array([1, *data_shape[2:]], np.int64), f"{p}_out_shape")]
            )
            nodes += [
                helper.make_node("Slice", [node.input[1], f"{p}_one", f"{p}_two", f"{p}_one"], [f"{p}_col"], name=f"{p}_slice"),
                helper.make_node("Reshape", [f"{p}_col", f"{p}_flat"], [f"{p}_index"], name=f"{p}_index"),
                helper.make_node("Gather", [node.input[0], f"{p}_index"], [f"{p}_rows"], name=f"{p}_gather", axis=1),
                helper.make_node("Reshape", [f"{p}_rows", f"{p}_out_shape"], list(node.output), name=p),
            ]
            count += 1
            continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, f"{count} batch-1 GatherND (pooling at a computed position) -> Slice + Gather" if count else ""


def _linear_gemm(model: onnx.ModelProto, _: float) -> tuple[onnx.ModelProto, str]:
    inits = {t.name: t for t in model.graph.initializer}
    shapes = _shapes(model)
    nodes, count = [], 0
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        x_shape, y_shape = shapes.get(node.input[0]), shapes.get(node.output[0]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and x_shape and y_shape and len(x_shape) >= 2 and all(x_shape) and all(y_shape) and int(np.prod(x_shape[:-1])) >= 1:
            p = node.name or node.output[0]
            model.graph.initializer.extend([numpy_helper.from_array(np.array([-1, x_shape[-1]], np.int64), f"{p}_rows_shape"), numpy_helper.from_array(np.array(y_shape, np.int64), f"{p}_out_shape")])
            nodes += [
                helper.make_node("Reshape", [node.input[0], f"{p}_rows_shape"], [f"{p}_rows"], name=f"{p}_rows"),
                helper.make_node("Gemm", [f"{p}_rows", node.input[1]], [f"{p}_gemm"], name=f"{p}_gemm"),
                helper.make_node("Reshape", [f"{p}_gemm", f"{p}_out_shape"], list(node.output), name=p),
            ]
            count += 1
            continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, f"{count} bias-free linear MatMul -> Reshape + Gemm + Reshape (per-channel weights)" if count else ""


def _rms_norm(model: onnx.ModelProto, _: float) -> tuple[onnx.ModelProto, str]:
    inits = {t.name: t for t in model.graph.initializer}
    shapes = _shapes(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def only(name: str, op: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    replaced: dict[str, onnx.NodeProto] = {}  # final Mul's name -> fused node
    drop: set[str] = set()
    for pow_node in [n for n in model.graph.node if n.op_type == "Pow"]:
        exponent = const(pow_node.input[1])
        if exponent is None or exponent.size != 1 or float(exponent.item()) != 2.0:
            continue
        x = pow_node.input[0]
        mean = only(pow_node.output[0], "ReduceMean")
        add = only(mean.output[0], "Add") if mean is not None else None
        sqrt = only(add.output[0], "Sqrt") if add is not None else None
        recip = only(sqrt.output[0], "Reciprocal") if sqrt is not None else None
        scale = only(recip.output[0], "Mul") if recip is not None else None
        gamma_mul = only(scale.output[0], "Mul") if scale is not None else None
        if gamma_mul is None or set(scale.input) != {x, recip.output[0]}:
            continue
        eps = next((const(i) for i in add.input if const(i) is not None), None)
        gamma = next((i for i in gamma_mul.input if i != scale.output[0]), None)
        axes = const(mean.input[1]) if len(mean.input) > 1 else next((np.array(a.ints) for a in mean.attribute if a.name == "axes"), None)
        last = len(shapes.get(x, [])) - 1
        if eps is None or eps.size != 1 or gamma not in inits or axes is None or [int(a) for a in axes.reshape(-1)] not in ([-1], [last]):
            continue
        fused = helper.make_node("SimplifiedLayerNormalization", [x, gamma], list(gamma_mul.output), name=gamma_mul.name or f"{pow_node.name}_rmsnorm", axis=-1, epsilon=float(eps.item()))
        replaced[id_of(gamma_mul)] = fused
        drop |= {id_of(n) for n in (pow_node, mean, add, sqrt, recip, scale)}
    if not replaced:
        return model, ""
    nodes = [replaced.get(id_of(n), n) for n in model.graph.node if id_of(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model, f"{len(replaced)} RMSNorm chains (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) -> SimplifiedLayerNormalization (HTP RmsNorm)"


def id_of(node: onnx.NodeProto) -> str:
    return node.name or "|".join(node.output)
