"""Greedy generation on ONNX Runtime equals torch's ``model.generate(do_sample=False)``; ``edgecompile run`` streams it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from edgecompile.backends.base import Artifact
from edgecompile.backends.ort_cpu.backend import OrtCpuBackend
from edgecompile.models.llava import LlavaAdapter
from edgecompile.runtime.generate import generate, splice_image_features
from tests.llava_build import built_llava

QUESTIONS = ["what color is the circle ?", "is the star on the left ?"]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    model, build_dir, code, output = built_llava(tmp_path_factory.mktemp("llava"))
    assert code == 0, output
    return model, build_dir


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize("index", [0, 1])
def test_float_graphs_generate_like_torch(build, index: int) -> None:  # noqa: ANN001
    adapter = LlavaAdapter()
    loaded = adapter.load(build[0])
    files = {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")}
    run = OrtCpuBackend().runner(build[1] / "export", Artifact("ort-cpu", files, True, "reference"))
    ids, pixels = adapter.encode(loaded, _image(index), QUESTIONS[index])
    streamed: list[int] = []
    result = generate(run, adapter.generation_spec(loaded.config), ids, pixels, 10, on_token=streamed.append)
    with torch.no_grad():
        expected = loaded.model.generate(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels), attention_mask=torch.ones(ids.shape, dtype=torch.long), max_new_tokens=10, do_sample=False)
    assert result.tokens == expected[0, ids.shape[1]:].tolist()
    assert streamed == result.tokens
    assert result.time_to_first_token_s > 0 and result.prompt_tokens == ids.shape[1]


def test_stops_on_eos() -> None:
    from edgecompile.runtime.generate import GenerationSpec

    spec = GenerationSpec(image_token_id=9, eos_token_ids=(2,), layers=1, kv_heads=1, head_dim=2, hidden=4, vocab=3)

    def run(component: str, feeds: dict) -> dict:
        if component == "embed_tokens":
            return {"inputs_embeds": np.zeros((*feeds["input_ids"].shape, 4), np.float32)}
        past = feeds["past_key_0"]
        new = np.zeros((1, 1, feeds["inputs_embeds"].shape[1], 2), np.float32)
        cache = np.concatenate([past, new], axis=2)
        logits = np.zeros((1, feeds["inputs_embeds"].shape[1], 3), np.float32)
        logits[..., 1 if cache.shape[2] < 5 else 2] = 1.0  # token 1 until the cache holds 5 positions, then EOS
        return {"logits": logits, "present_key_0": cache, "present_value_0": cache}

    result = generate(run, spec, np.array([[0, 1, 0]]), None, 20)
    assert result.tokens == [1, 1, 2] and result.stopped_by == "eos"
    assert generate(run, spec, np.array([[0, 1, 0]]), None, 2).stopped_by == "length"


def test_splice_rejects_mismatched_counts() -> None:
    with pytest.raises(ValueError, match="image tokens"):
        splice_image_features(np.array([[5, 7, 7]]), np.zeros((1, 3, 4), np.float32), np.zeros((1, 3, 4), np.float32), 7)


def test_run_command_streams_the_answer(build, tmp_path) -> None:  # noqa: ANN001
    from edgecompile.cli.main import main

    image = tmp_path / "img.png"
    _image(0).save(image)
    ref = CliRunner().invoke(main, ["run", "--build", str(build[1]), "--image", str(image), "--prompt", QUESTIONS[0], "--max-new-tokens", "6", "--reference"])
    assert ref.exit_code == 0, ref.output
    adapter = LlavaAdapter()
    loaded = adapter.load(build[0])
    ids, pixels = adapter.encode(loaded, Image.open(image).convert("RGB"), QUESTIONS[0])
    with torch.no_grad():
        expected = loaded.model.generate(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels), attention_mask=torch.ones(ids.shape, dtype=torch.long), max_new_tokens=6, do_sample=False)
    text = loaded.processor.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)
    assert ref.stdout.splitlines()[0].strip() == text.strip()
    compiled = CliRunner().invoke(main, ["run", "--build", str(build[1]), "--image", str(image), "--prompt", QUESTIONS[0], "--max-new-tokens", "6"])
    assert compiled.exit_code == 0, compiled.output
    bad = CliRunner().invoke(main, ["run", "--build", str(build[1]), "--image", str(tmp_path / "missing.png"), "--prompt", "x"])
    assert bad.exit_code != 0
