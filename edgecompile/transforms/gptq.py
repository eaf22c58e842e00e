"""GPTQ (Frantar et al.): INT4 block-wise weights rounded column by column with Hessian H = X Xᵀ correction.

The rounding itself is onnxruntime's implementation (``onnxruntime.quantization.neural_compressor
.gptq_quantize``), fed the component's calibration activations. What this module adds is the
transform contract around it:

* only the plan's INT4 MatMuls are rounded: every other MatMul is marked "fp32" (left alone) —
  MatMulNBitsQuantizer's GPTQ path ignores ``nodes_to_include`` and would also INT4 the lm_head
  the plan keeps INT8, and it deep-copies the data reader, which a stream cannot survive;
* the transformed float graph carries the *dequantized* GPTQ weights (codes × scales, computed by
  onnxruntime's own MatMulNBits kernel on an identity input), so calibration and every backend see
  the weights GPTQ chose, and backends that round again (TensorRT, QNN) start from GPTQ's grid;
* the codes themselves are handed on as ``Prequantized`` MatMulNBits nodes, which the ORT CPU build
  packs unchanged (bit-identical to running GPTQ inside the build, as before).

Caveat (onnxruntime 1.32, pinned in ``tests/transforms/test_vlmq.py``): the GPTQ routine under
``gptq_quantize`` never uses its Hessian (its error update reads the zero triangle of the Cholesky
factor of H⁻¹), so this transform is round-to-nearest on GPTQ's min/max grid, and its INT4 packing
re-derives each block's scale from that output. The reference GPTQ loop is
``edgecompile.transforms.vlmq_gptq`` (``int4_algorithm: vlmq`` with ``vlmq.importance: constant``).
"""

from __future__ import annotations

import contextlib
import io
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


class _Loader:
    """The (inputs, label) batches neural_compressor's prepare_inputs iterates over."""

    batch_size = 1

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds = feeds

    def __iter__(self):  # noqa: ANN204
        return ((f, None) for f in self.feeds)


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
        return any(e.precision == "int4" for e in entries)

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        int4 = [e for e in entries if e.precision == "int4"]
        block, symmetric = _int4_settings(int4, component)
        samples = list(feeds()) if feeds is not None else []
        if not samples:
            raise InputError(f"quantization.int4_algorithm: gptq got no calibration samples for component {component}")
        from onnxruntime.quantization.neural_compressor import gptq_quantize

        nodes = {e.node for e in int4}
        scheme = "sym" if symmetric else "asym"
        config: dict[str, object] = {n.name: ({"bits": 4, "group_size": block, "scheme": scheme} if n.name in nodes else "fp32") for n in model.graph.node if n.op_type == "MatMul"}
        originals = {n.output[0]: n.name for n in model.graph.node if n.name in nodes}
        weights = {n.name: n.input[1] for n in model.graph.node if n.name in nodes}
        source = onnx.ModelProto()
        source.CopyFrom(model)
        with contextlib.redirect_stdout(io.StringIO()):  # it draws a progress bar on stdout
            quantized = gptq_quantize(source, dataloader=_Loader(samples), weight_config=config, num_bits=4, group_size=block, scheme=scheme, n_samples=-1, blocksize=128, perchannel=True, accuracy_level=4)
        quantized = quantized.model if hasattr(quantized, "model") else quantized
        pre = Prequantized.from_graph(quantized, "MatMulNBits", originals)
        inits = {i.name: i for i in model.graph.initializer}
        layers = []
        for node in pre.nodes:
            weight_name = weights[node.replaces]
            original = numpy_helper.to_array(inits[weight_name])
            rounded = dequantized_weight(node, pre.tensors).astype(original.dtype)
            inits[weight_name].CopyFrom(numpy_helper.from_array(rounded, weight_name))
            change = float(np.linalg.norm(rounded - original) / max(np.linalg.norm(original), 1e-12))
            layers.append({"transform": self.name, "component": component, "node": node.replaces, "weight": weight_name, "bits": 4, "block_size": block, "symmetric": symmetric, "relative_change": change})
        return TransformOutcome(model, layers, pre)


TRANSFORM = GptqTransform()
