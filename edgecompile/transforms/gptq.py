"""GPTQ (Frantar et al.): INT4 block-wise weights rounded column by column with Hessian H = X Xᵀ correction.

H is accumulated from the component's calibration activations on the ONNX graph
(:func:`edgecompile.transforms.vlmq_hessian.weighted_hessians`, chunked, one sample at a time) and
the rounding is our port of the reference column loop (:mod:`edgecompile.transforms.vlmq_gptq`).
Why not onnxruntime's ``gptq_quantize``, which this transform called until the VLMQ work found it:
in onnxruntime 1.32 its routine never uses the Hessian (its error update reads the zero triangle
of the Cholesky factor of H⁻¹), so it was round-to-nearest on GPTQ's grid, and its INT4 packing
re-derived each block's scale from that output (``tests/transforms/test_vlmq.py`` pins both).

What this module adds is the transform contract around the loop:

* only the plan's INT4 MatMuls are rounded; every other node is left alone;
* the transformed float graph carries the *dequantized* GPTQ weights (codes × scales, computed by
  onnxruntime's own MatMulNBits kernel on an identity input), so calibration and every backend see
  the weights GPTQ chose, and backends that round again (TensorRT, QNN) start from GPTQ's grid;
* the codes themselves are handed on as ``Prequantized`` MatMulNBits nodes, which the ORT CPU build
  packs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.errors import InputError
from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.base import TransformOutcome
from edgecompile.transforms.prequantized import Prequantized, PrequantizedNode


def _int4_settings(entries: list[PlanEntry], component: str) -> tuple[int, bool]:
    blocks = {e.block_size for e in entries}
    symmetric = {e.symmetric for e in entries}
    if len(blocks) != 1 or len(symmetric) != 1:
        raise InputError(f"{component}: INT4 nodes of one component must share block_size and symmetry (MatMulNBits takes one setting per pass)")
    return blocks.pop() or 32, symmetric.pop()


def dequantized_weight(node: PrequantizedNode, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The float [K, N] weight a MatMulNBits node computes with: its own kernel applied to an identity input."""
    import onnxruntime as ort

    k = int(node.attributes["K"])
    attrs = {**node.attributes, "accuracy_level": 0}  # float32 compute: identity rows stay exact
    inputs = ["A", *node.inputs[1:]]
    inits = [numpy_helper.from_array(tensors[n], n) for n in node.inputs[1:] if n]
    graph = helper.make_graph(
        [helper.make_node(node.op_type, inputs, ["Y"], domain=node.domain, **attrs)],
        "dequantize",
        [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [k, k])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(node.domain, 1)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"A": np.eye(k, dtype=np.float32)})[0]


class GptqTransform:
    name: ClassVar[str] = "gptq"
    needs_activations: ClassVar[bool] = True

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        return any(e.precision == "int4" and e.op_type == "MatMul" for e in entries)  # INT4 Gathers (embeddings) stay RTN

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        from edgecompile.transforms.vlmq_gptq import gptq_weight, matmul_nbits
        from edgecompile.transforms.vlmq_hessian import weighted_hessians

        int4 = [e for e in entries if e.precision == "int4" and e.op_type == "MatMul"]
        block, symmetric = _int4_settings(int4, component)
        if feeds is None or next(iter(feeds()), None) is None:
            raise InputError(f"quantization.int4_algorithm: gptq got no calibration samples for component {component}")
        wanted = {e.node for e in int4}
        nodes = {n.name: n for n in model.graph.node if n.name in wanted}
        consumers: dict[str, list[str]] = {}
        for name, node in nodes.items():
            consumers.setdefault(node.input[0], []).append(name)
        hessians = weighted_hessians(model, consumers, feeds, lambda sample, node: None)
        inits = {i.name: i for i in model.graph.initializer}
        pre = Prequantized()
        layers = []
        for name, node in nodes.items():
            weight_name = node.input[1]
            original = numpy_helper.to_array(inits[weight_name])
            new, new_inits = matmul_nbits(node, gptq_weight(original, hessians[name], 4, block, symmetric), 4, block, symmetric)
            change = adopt_rounded(pre, inits, name, new, new_inits, weight_name, original)
            layers.append({"transform": self.name, "component": component, "node": name, "weight": weight_name, "bits": 4, "block_size": block, "symmetric": symmetric, "relative_change": change})
        return TransformOutcome(model, layers, pre)


def adopt_rounded(pre: Prequantized, inits: dict[str, onnx.TensorProto], replaces: str, new: onnx.NodeProto, new_inits: list[onnx.TensorProto], weight_name: str, original: np.ndarray) -> float:
    """Hand on ``new`` (a MatMulNBits replacing ``replaces``) as prequantized, write its dequantized weight into the float graph; its relative change."""
    tensors = {t.name: numpy_helper.to_array(t) for t in new_inits}
    attributes = {a.name: helper.get_attribute_value(a) for a in new.attribute}
    spec = PrequantizedNode(replaces, new.op_type, new.domain, new.name, list(new.input), list(new.output), attributes, [t.name for t in new_inits])
    pre.nodes.append(spec)
    pre.tensors.update(tensors)
    rounded = dequantized_weight(spec, pre.tensors).astype(original.dtype)
    inits[weight_name].CopyFrom(numpy_helper.from_array(rounded, weight_name))
    return float(np.linalg.norm(rounded - original) / max(np.linalg.norm(original), 1e-12))


TRANSFORM = GptqTransform()
