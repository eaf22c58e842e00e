"""INT8 KV cache (plan role kv_cache, GroupQueryAttention kv_cache_bit_width=8) decodes like the FP32 cache.

shapes-llava built for x86-cpu (the shipped recipe with fewer samples) up to the build stage; its
fused decoder gets the INT8 cache with scales calibrated on the float export's prefill of the
recipe's calibration set (32 prompts); both decoders answer the eval questions greedily on the runtime's ORT
CPU path and must agree on >= 99% of the tokens.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecompile.backends.ort_cpu.kv_cache import apply_kv_cache_plan, cache_dtype, kv_cache_entry
from edgecompile.errors import InputError
from edgecompile.plan.plan import annotate
from edgecompile.plan.rules import PrecisionRule, RuleMatch, rules_for
from edgecompile.runtime.onnx_cpu import CpuRunner
from tests.runtime.shapes_llava_build import built_shapes_llava

INT8_CACHE = PrecisionRule(match=RuleMatch(component="decoder", role="kv_cache"), precision="int8", why="test: INT8 KV cache")
QUESTIONS = 48  # about two tokens each (answer, EOS): ~100 tokens, so >= 0.99 allows one flip
KV_SAMPLES = 32  # calibration prompts the cache scales are taken from (the recipe's own count is cut for the build's speed)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return built_shapes_llava(tmp_path_factory)


def _int8_decoder(ctx, out: Path, granularity: str = "per_channel") -> tuple[Path, str]:  # noqa: ANN001
    from edgecompile.data.sources import calibration_samples

    export = ctx.build_dir / "export" / "decoder.onnx"
    rule = INT8_CACHE.model_copy(update={"granularity": granularity})
    plan = annotate({"decoder": onnx.load(str(export), load_external_data=False)}, rules_for("vlm-default", (rule,)), "vlm-default")
    cal = ctx.recipe.calibration
    feeds = lambda component: ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(cal.set, KV_SAMPLES), component)  # noqa: E731
    model, note = apply_kv_cache_plan(onnx.load(str(ctx.build_dir / "build" / "decoder.onnx")), plan.for_component("decoder"), export, feeds, "decoder")
    out.mkdir(exist_ok=True)
    for name in ("embed_tokens.onnx", "vision_encoder.onnx"):
        shutil.copy(ctx.build_dir / "build" / name, out / name)
    onnx.save(model, str(out / "decoder.onnx"))
    return out, note


def _answers(ctx, directory: Path):  # noqa: ANN001, ANN202
    from edgecompile.data.eval_sets import vqa_eval_set

    files = {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")}
    _, outputs = ctx.adapter.evaluate(ctx.loaded(), CpuRunner(directory, files), vqa_eval_set(QUESTIONS))
    return outputs


def test_plan_role_kv_cache_is_fp32_unless_a_rule_names_it(built) -> None:  # noqa: ANN001
    graph = onnx.load(str(built.build_dir / "export" / "decoder.onnx"), load_external_data=False)
    default = [e for e in annotate({"decoder": graph}, rules_for("vlm-default", ()), "vlm-default").entries if e.role == "kv_cache"]
    assert len(default) == 4 and {e.precision for e in default} == {"float"}  # 2 layers x (K, V); a blanket INT8 rule is for weights
    assert kv_cache_entry(default) is None
    planned = annotate({"decoder": graph}, rules_for("vlm-default", (INT8_CACHE,)), "vlm-default").for_component("decoder")
    assert {e.precision for e in planned if e.role == "kv_cache"} == {"int8"} and kv_cache_entry(planned).granularity == "per_channel"
    with pytest.raises(InputError, match="one cache dtype"):
        kv_cache_entry([e for e in planned if e.role == "kv_cache"][:-1] + default[-1:])
    with pytest.raises(ValueError, match="role kv_cache takes precision int8"):
        PrecisionRule(match=RuleMatch(role="kv_cache"), precision="int4", granularity="per_block", block_size=32)


def test_int8_cache_decodes_like_fp32(built, tmp_path: Path) -> None:  # noqa: ANN001
    directory, note = _int8_decoder(built, tmp_path / "int8")
    assert "INT8 KV cache (per_channel" in note
    model = onnx.load(str(directory / "decoder.onnx"))
    assert cache_dtype(model) == "int8"
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert gqa and all(dict((a.name, a) for a in n.attribute)["kv_cache_bit_width"].i == 8 for n in gqa)
    fp32 = _answers(built, built.build_dir / "build")
    int8 = _answers(built, directory)
    agreement = built.adapter.compare_outputs(fp32, int8)["generation.token_agreement"]
    print(f"INT8 vs FP32 cache token agreement (per_channel, {QUESTIONS} questions): {agreement:.4f}")
    assert agreement >= 0.99, agreement
    runner = CpuRunner(directory, {c: f"{c}.onnx" for c in ("embed_tokens", "decoder")})
    fast, reference = runner.fast_decoder(2, 100), CpuRunner(built.build_dir / "build", {"embed_tokens": "embed_tokens.onnx", "decoder": "decoder.onnx"}).fast_decoder(2, 100)
    assert fast.dtype == np.int8 and fast.cache_bytes * 4 == reference.cache_bytes  # a quarter of the FP32 cache's bytes
    # Other runners' generic loop: the spec's empty cache in the graph's dtype, the cache fed back as it came.
    from edgecompile.data.eval_sets import vqa_eval_set
    from edgecompile.runtime.generate import generate

    spec = replace(built.adapter.generation_spec(built.loaded().config), cache_dtype="int8")
    assert all(a.dtype == np.int8 for a in spec.empty_past().values())
    full = CpuRunner(directory, {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")})
    sample = vqa_eval_set(1).samples[0]
    ids, pixels = built.adapter.encode(built.loaded(), sample.image, sample.question)
    assert generate(lambda c, f: full(c, f), spec, ids, pixels, 8).tokens == generate(full, spec, ids, pixels, 8).tokens


def test_per_tensor_scales_also_agree(built, tmp_path: Path) -> None:  # noqa: ANN001
    directory, note = _int8_decoder(built, tmp_path / "int8t", "per_tensor")
    assert "per_tensor" in note
    agreement = built.adapter.compare_outputs(_answers(built, built.build_dir / "build"), _answers(built, directory))["generation.token_agreement"]
    print(f"INT8 vs FP32 cache token agreement (per_tensor, {QUESTIONS} questions): {agreement:.4f}")
    assert agreement >= 0.95, agreement
