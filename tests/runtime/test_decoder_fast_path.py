"""The ORT CPU fast decode path (shared in-place cache, I/O binding) gives the generic loop's tokens and logits.

On shapes-llava built for x86-cpu (decoder fused into GroupQueryAttention): ``generate`` on a
``CpuRunner`` takes the fast path; the same sessions behind a plain function (any other backend's
runner) take the generic loop; both must produce the same tokens and the same first logits. The
packed MLP gate/up is exact, and graphs that cannot share a buffer (the unfused export) fall back.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecompile.backends.ort_cpu.decoder_attention import pack_gate_up
from edgecompile.data.eval_sets import vqa_eval_set
from edgecompile.runtime.generate import generate
from edgecompile.runtime.onnx_cpu import CpuRunner
from edgecompile.runtime.ort_decode import shares_buffer
from tests.runtime.shapes_llava_build import built_shapes_llava

FILES = {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return built_shapes_llava(tmp_path_factory)


def _prompts(ctx, count: int = 6):  # noqa: ANN001, ANN202
    loaded = ctx.loaded()
    return [ctx.adapter.encode(loaded, s.image, s.question) for s in vqa_eval_set(count).samples]


def test_fast_path_equals_generic_loop(built) -> None:  # noqa: ANN001
    runner = CpuRunner(built.build_dir / "build", FILES)
    spec = replace(built.adapter.generation_spec(built.loaded().config), eos_token_ids=())  # 12 tokens each, not answer + EOS
    assert runner.fast_decoder(spec.layers, 64) is not None

    def generic(component: str, feeds: dict) -> dict:  # a plain ComponentRunner: no fast path
        return runner(component, feeds)

    for ids, pixels in _prompts(built):
        fast, slow = generate(runner, spec, ids, pixels, 12), generate(generic, spec, ids, pixels, 12)
        assert fast.tokens == slow.tokens
        np.testing.assert_allclose(fast.first_logits, slow.first_logits, rtol=1e-5, atol=1e-5)
        assert fast.cache_bytes == spec.cache_bytes(ids.shape[1] + 12) and slow.cache_bytes == spec.cache_bytes(ids.shape[1] + len(slow.tokens) - 1)


def test_unfused_graph_falls_back_to_the_generic_loop(built) -> None:  # noqa: ANN001
    export = built.build_dir / "export"
    assert not shares_buffer(export / "decoder.onnx") and shares_buffer(built.build_dir / "build" / "decoder.onnx")
    runner = CpuRunner(export, FILES)
    spec = built.adapter.generation_spec(built.loaded().config)
    assert runner.fast_decoder(spec.layers, 64) is None
    ids, pixels = _prompts(built, 1)[0]
    assert generate(runner, spec, ids, pixels, 4).tokens == generate(CpuRunner(built.build_dir / "build", FILES), spec, ids, pixels, 4).tokens


def test_the_build_packs_gate_up_and_the_cache_has_a_limit(built, tmp_path: Path) -> None:  # noqa: ANN001
    """The ORT CPU build packed each layer's gate/up pair (exactness: tests/backends/test_decoder_fusion.py); a full cache is refused."""
    model = onnx.load(str(built.build_dir / "build" / "decoder.onnx"))
    assert sum(n.name.endswith("_gate_up") for n in model.graph.node if n.op_type == "MatMulNBits") == 2  # one per layer
    assert pack_gate_up(model)[1] == 0  # nothing left to pack
    for name in ("embed_tokens.onnx", "vision_encoder.onnx", "decoder.onnx"):
        shutil.copy(built.build_dir / "build" / name, tmp_path / name)
    spec = built.adapter.generation_spec(built.loaded().config)
    ids, _ = _prompts(built, 1)[0]
    decoder = CpuRunner(tmp_path, FILES).fast_decoder(spec.layers, ids.shape[1] + 1)
    embeds = np.zeros((1, ids.shape[1], spec.hidden), np.float32)
    decoder.prefill(embeds, spec.position_ids(0, ids.shape[1]))
    decoder.step(1, spec.position_ids(ids.shape[1], 1))
    with pytest.raises(ValueError, match="cache is full"):
        decoder.step(1, spec.position_ids(ids.shape[1] + 1, 1))
