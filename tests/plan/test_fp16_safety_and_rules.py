"""Rule matching/precedence and the FP16-safety fallback (calibrated range > 65504 -> fp32, reason recorded), on crafted graphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecompile.backends.ort_cpu.backend import OrtCpuBackend
from edgecompile.calibration.streaming import calibrate_component
from edgecompile.config.target import Target
from edgecompile.plan.plan import annotate
from edgecompile.plan.roles import NodeInfo
from edgecompile.plan.rules import PrecisionRule, RuleMatch, rules_for


def _graph() -> onnx.ModelProto:
    """x -> MatMul(small W) -> "small"; x -> MatMul(huge W) -> "huge" (|y| reaches ~1e5 for |x| ~ 1)."""
    rng = np.random.default_rng(0)
    small = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32) * 0.1, "w_small")
    huge = numpy_helper.from_array(np.full((8, 8), 2.0e4, np.float32), "w_huge")
    nodes = [helper.make_node("MatMul", ["x", "w_small"], ["small"], name="mm_small"), helper.make_node("MatMul", ["x", "w_huge"], ["huge"], name="mm_huge")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("small", TensorProto.FLOAT, [1, 8]), helper.make_tensor_value_info("huge", TensorProto.FLOAT, [1, 8])], [small, huge])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _target(precisions: tuple[str, ...]) -> Target:
    return Target(schema_version=1, name="t", description="test", tier="mobile", backend="ort-cpu", native_precisions=precisions)


def test_fp16_overflow_falls_back_to_fp32_with_reason() -> None:
    model = _graph()
    rules = (("test", PrecisionRule(match=RuleMatch(op_type="MatMul"), precision="fp16", why="everything fp16")),)
    plan = annotate({"c": model}, rules, "test")
    assert {e.node: e.precision for e in plan.entries} == {"mm_small": "fp16", "mm_huge": "fp16"}
    feeds = [{"x": np.random.default_rng(i).uniform(0.5, 1.0, (1, 8)).astype(np.float32)} for i in range(4)]
    ranges = calibrate_component(model, ["small", "huge"], feeds, method="minmax")
    assert ranges.overflows_fp16("huge") and not ranges.overflows_fp16("small")
    adapted = OrtCpuBackend().adapt_plan(plan, _target(("fp32", "fp16", "int8")), {"c": ranges}, {"c": model})
    by_node = {e.node: e for e in adapted.entries}
    assert by_node["mm_huge"].precision == "fp32" and by_node["mm_huge"].changed_from == "fp16"
    assert "FP16 safety" in by_node["mm_huge"].why
    assert by_node["mm_small"].precision == "fp16"
    assert adapted.changes == ("c/mm_huge: -> fp32: FP16 safety: calibrated range exceeds 65504",)
    # Without native FP16 the safe node runs in float32 (a different, also recorded, reason).
    no_fp16 = OrtCpuBackend().adapt_plan(plan, _target(("fp32", "int8")), {"c": ranges}, {"c": model})
    assert {e.node: e.precision for e in no_fp16.entries} == {"mm_small": "float", "mm_huge": "fp32"}


def _info(role: str, module: str, op: str = "MatMul") -> NodeInfo:
    return NodeInfo(name=f"node_{module}", op_type=op, module=module, module_class="Linear", role=role, weight="w")


def test_rule_patterns_and_precedence() -> None:
    recipe_rules = (
        PrecisionRule(match=RuleMatch(component="decoder", name="re:layers\\.0\\.mlp"), precision="int8", why="first MLP INT8"),
        PrecisionRule(match=RuleMatch(component="decoder", role="lm_head"), precision="fp16", why="lm_head fp16"),
    )
    ordered = rules_for("vlm-default", recipe_rules, int4_block_size=64)
    assert ordered[0][0] == "recipe.rules[0]" and ordered[2][0].startswith("preset:vlm-default")

    def first(component: str, info: NodeInfo) -> tuple[str, PrecisionRule]:
        return next((o, r) for o, r in ordered if r.match.matches(component, info))

    origin, rule = first("decoder", _info("mlp", "model.layers.0.mlp.up_proj"))
    assert origin == "recipe.rules[0]" and rule.precision == "int8"  # recipe beats preset
    origin, rule = first("decoder", _info("mlp", "model.layers.1.mlp.up_proj"))
    assert rule.precision == "int4" and rule.block_size == 64  # preset INT4 with the recipe's block size
    assert first("decoder", _info("lm_head", "lm_head"))[1].precision == "fp16"
    assert first("vision_encoder", _info("mlp", "vision_tower.encoder.layers.0.mlp.fc1"))[1].precision == "int8"  # re:^decoder does not match
    assert first("vision_encoder", _info("patch_embed", "vision_tower.embeddings.patch_embedding", "Conv"))[1].precision == "fp16"
    assert first("decoder", _info("softmax", "model.layers.0.self_attn", "Softmax"))[1].precision is None
