"""annotate reads names and shapes only: the plan over a weight-stripped graph equals the plan over the whole one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecompile.plan.plan import annotate
from edgecompile.plan.rules import rules_for
from edgecompile.weightless_graph import graph_structure


def _decoder_like(path: Path) -> Path:
    """ids -> Gather(table) -> MatMul(W_q) -> Add(bias) -> MatMul(lm_head): an embedding, a linear with bias, a head."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("model.embed_tokens.weight", (512, 64)), ("model.layers.0.self_attn.q_proj.weight", (64, 64)),
                                 ("model.layers.0.self_attn.q_proj.bias", (64,)), ("lm_head.weight", (64, 512)))]
    nodes = [helper.make_node("Gather", ["model.embed_tokens.weight", "ids"], ["h"], name="/model/embed_tokens/Gather"),
             helper.make_node("MatMul", ["h", "model.layers.0.self_attn.q_proj.weight"], ["q"], name="/model/layers.0/self_attn/q_proj/MatMul"),
             helper.make_node("Add", ["q", "model.layers.0.self_attn.q_proj.bias"], ["qb"], name="/model/layers.0/self_attn/q_proj/Add"),
             helper.make_node("MatMul", ["qb", "lm_head.weight"], ["logits"], name="/lm_head/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", 512])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_plan_over_the_structure_equals_the_plan_over_the_graph(tmp_path: Path) -> None:
    path = _decoder_like(tmp_path / "decoder.onnx")
    full, stripped = onnx.load(str(path)), graph_structure(path)
    assert stripped.ByteSize() < full.ByteSize() / 50  # the weights' bytes are gone
    assert [(t.name, list(t.dims), t.data_type) for t in stripped.graph.initializer] == [(t.name, list(t.dims), t.data_type) for t in full.graph.initializer]
    rules = rules_for("vlm-default", [], 32, "per_block")
    want, got = annotate({"decoder": full}, rules, "vlm-default"), annotate({"decoder": stripped}, rules, "vlm-default")
    assert [(e.node, e.role, e.precision, e.rule) for e in got.entries] == [(e.node, e.role, e.precision, e.rule) for e in want.entries]
    assert len(want.entries) == 4
