"""The CoreML decoder with a stateful KV cache (coremltools StateType, iOS18/macOS15).

Here (Linux): the torch wrapper whose K/V caches are fixed-size buffers written in place gives the
HF decoder's logits, and the converted ML Program declares the states, the fixed-length mask and
INT4 per-block weights. Prediction (``make_state`` / ``predict(..., state=)``) needs macOS.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompile.backends.coreml.stateful import INPUT_NAMES, STATE_NAMES, StatefulLayout, stateful_from_decoder, step_feeds
from edgecompile.models.decoder_export import CacheLayout
from tests.tiny_llava import save_tiny_llava


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):  # noqa: ANN001, ANN201
    from edgecompile.models.registry import adapter_for

    torch.set_num_threads(1)
    path = save_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "model")
    adapter = adapter_for(path)
    loaded = adapter.load(path)
    spec = next(c for c in adapter.components(loaded) if c.name == "decoder")
    cache = CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True))
    return spec, cache, StatefulLayout(cache.layers, cache.kv_heads, cache.head_dim, cache.hidden, 24)


def _call(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return module(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))


def test_stateful_wrapper_matches_the_hf_decoder(tiny_decoder) -> None:  # noqa: ANN001
    """Prefill 7 tokens, a 3-token chunk (causal inside a chunk written after a cache), then 4 decode steps."""
    spec, cache, layout = tiny_decoder
    stateful = stateful_from_decoder(spec.module, layout)
    g = torch.Generator().manual_seed(3)
    past = [torch.zeros(1, cache.kv_heads, 0, cache.head_dim) for _ in range(2 * cache.layers)]
    done, worst, agree = 0, 0.0, 0
    chunks = [7, 3, 1, 1, 1, 1]
    for n in chunks:
        embeds = torch.randn(1, n, cache.hidden, generator=g) * 0.5
        positions = cache.positions(done, n)
        with torch.no_grad():
            reference = spec.module(embeds, torch.ones(1, done + n, dtype=torch.int64), positions, *past)
        got = _call(stateful, step_feeds(layout, embeds.numpy(), positions.numpy(), done))
        assert got.shape == reference[0].shape
        worst = max(worst, float((reference[0] - got).abs().max()))
        agree += int(torch.equal(reference[0].argmax(-1), got.argmax(-1)))
        past, done = list(reference[1:]), done + n
    assert worst <= 1e-4
    assert agree == len(chunks)
    # the buffers hold the HF cache, in place, and nothing past it
    for i in range(cache.layers):
        assert torch.allclose(stateful.key_cache[i, :, :, :done], past[2 * i], atol=1e-5)
        assert torch.allclose(stateful.value_cache[i, :, :, :done], past[2 * i + 1], atol=1e-5)
    assert float(stateful.key_cache[:, :, :, done:].abs().max()) == 0.0
    with pytest.raises(ValueError, match="context_length"):
        step_feeds(layout, np.zeros((1, 2, cache.hidden), np.float32), np.zeros((1, 2), np.int64), layout.context - 1)


def test_stateful_program_declares_states_mask_and_int4_weights(tiny_decoder, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("coremltools", reason="needs coremltools")
    import coremltools as ct

    from edgecompile.backends.coreml.backend import program_states, program_summary
    from edgecompile.backends.coreml.convert import compress, convert_stateful
    from edgecompile.plan.plan import PlanEntry

    spec, cache, layout = tiny_decoder
    linears = [n for n, m in spec.module.named_modules() if isinstance(m, torch.nn.Linear)]
    entries = [PlanEntry("decoder", n, "MatMul", "decoder_linear", n, f"{n}.weight", "int4", "per_block", 32, True, "test", "test") for n in linears]
    model = convert_stateful(stateful_from_decoder(spec.module, layout), layout, entries, "macOS15", "fp16")
    model, chosen = compress(model, entries, None)
    assert sorted(chosen.values()) == ["int4"] * len(linears)
    model.save(str(tmp_path / "decoder.mlpackage"))
    path = tmp_path / "decoder.mlpackage"
    shape = [cache.layers, 1, cache.kv_heads, layout.context, cache.head_dim]
    assert program_states(path) == {n: {"shape": shape, "dtype": "fp16"} for n in STATE_NAMES}
    summary = program_summary(path)
    assert summary["inputs"] == list(INPUT_NAMES) and summary["outputs"] == ["logits"]
    assert summary["weights"].get("int4", 0) == len(linears)  # every linear INT4 per block, lm_head included
    assert {"slice_update", "write_state", "read_state"} <= set(summary["ops"])  # written in place
    loaded = ct.utils.load_spec(str(path))
    assert loaded.specificationVersion >= 9  # iOS18 / macOS15: states and INT4 per-block
    mask = next(i for i in loaded.description.input if i.name == "attention_mask").type.multiArrayType
    assert list(mask.shape) == [1, layout.context]  # the mask covers the fixed length
    embeds = next(i for i in loaded.description.input if i.name == "inputs_embeds").type.multiArrayType
    assert embeds.shapeRange.sizeRanges[1].lowerBound == 1 and embeds.shapeRange.sizeRanges[1].upperBound == layout.context - 1


def test_options_take_the_cache_layout_strictly() -> None:
    from pydantic import ValidationError

    from edgecompile.backends.coreml.backend import CoreMlOptions

    assert CoreMlOptions().coreml_kv_cache == "stateful"
    assert CoreMlOptions(coreml_kv_cache="explicit", context_length=64).context_length == 64
    with pytest.raises(ValidationError):
        CoreMlOptions(coreml_kv_cache="static")


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="CoreML prediction (make_state, predict(state=)) needs macOS")
def test_stateful_prediction_matches_torch_on_macos(tiny_decoder, tmp_path: Path) -> None:  # noqa: ANN001
    import coremltools as ct

    from edgecompile.backends.coreml.convert import convert_stateful
    from edgecompile.backends.coreml.stateful import StatefulCoreMlDecoder

    spec, cache, layout = tiny_decoder
    stateful = stateful_from_decoder(spec.module, layout)
    convert_stateful(stateful, layout, [], "macOS15", "fp16").save(str(tmp_path / "d.mlpackage"))
    model = ct.models.MLModel(str(tmp_path / "d.mlpackage"))
    g = torch.Generator().manual_seed(5)
    embeds = (torch.randn(1, 6, cache.hidden, generator=g) * 0.5).numpy()
    token_embeds = (torch.randn(1, 1, cache.hidden, generator=g) * 0.5).numpy()
    decoder = StatefulCoreMlDecoder(model, layout, lambda ids: token_embeds)
    first = decoder.prefill(embeds, cache.positions(0, 6).numpy())
    second = decoder.step(0, cache.positions(6, 1).numpy())
    stateful.reset()
    expected_first = _call(stateful, step_feeds(layout, embeds, cache.positions(0, 6).numpy(), 0))[0, -1].numpy()
    expected_second = _call(stateful, step_feeds(layout, token_embeds, cache.positions(6, 1).numpy(), 6))[0, -1].numpy()
    for got, expected in ((first, expected_first), (second, expected_second)):
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine > 0.999 and int(got.argmax()) == int(expected.argmax())


@pytest.mark.slow  # two apple-m2 builds of the tiny LLaVA (~50 s on the shared cores)
def test_apple_build_stateful_by_default_explicit_as_option(tiny_decoder, tmp_path: Path) -> None:  # noqa: ANN001
    """The tiny LLaVA on apple-m2: the decoder declares its states; ``coreml_kv_cache: explicit`` keeps past_*/present_*."""
    pytest.importorskip("coremltools", reason="needs coremltools")
    from edgecompile.backends.coreml.backend import CoreMlBackend, program_states, program_summary
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import recorded, run_until
    from tests.backends.conftest import write_recipe

    spec, cache, _ = tiny_decoder
    model = save_tiny_llava(tmp_path / "model")
    small = "calibration: {set: synthetic, samples: 2, method: minmax}\neval: {set: synthetic, samples: 2, latency_runs: 3, warmup_runs: 1}\nallow_no_gates: true\nquantization: {int4_block_size: 16}\n"
    layouts = {}
    for layout, extra in (("stateful", "backend_options: {context_length: 48}\n"), ("explicit", "backend_options: {coreml_kv_cache: explicit}\n")):
        ctx = BuildContext.create(write_recipe(tmp_path, "apple-m2", small + extra, f"m2-{layout}"), str(model), tmp_path / layout)
        run_until(ctx, "build")
        built = recorded(ctx, "build").output
        layouts[layout] = (built, program_summary(built.folder / "decoder.mlpackage"), program_states(built.folder / "decoder.mlpackage"))
    built, summary, states = layouts["stateful"]
    assert states == {n: {"shape": [cache.layers, 1, cache.kv_heads, 48, cache.head_dim], "dtype": "fp16"} for n in STATE_NAMES}
    assert summary["inputs"] == list(INPUT_NAMES) and summary["weights"].get("int4", 0) >= 2 * 7  # the decoder layers' linears
    metrics = CoreMlBackend().structural_check(built.folder, built.artifact)
    assert metrics["coreml.io_match"] == 1.0 and metrics["coreml.decoder.state_match"] == 1.0
    assert metrics["coreml.decoder.specification_version"] >= 9
    built, summary, states = layouts["explicit"]
    assert states == {} and summary["inputs"] == list(spec.input_names) and summary["outputs"] == list(spec.output_names)
    assert "stateful" not in built.artifact.extra
