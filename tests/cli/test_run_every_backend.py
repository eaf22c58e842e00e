"""``edgecompile run --build DIR`` on every backend that executes generative builds here.

One tiny LLaVA (Llama decoder with GQA) built with each shipped recipe — ORT CPU, ExecuTorch
(XNNPACK 8da4w) and the TensorRT recipe's ORT stand-in — is answered through the CLI, and its
greedy tokens (the same ``runtime.generate`` loop the CLI drives) are compared with the float
reference graphs. The CoreML build cannot predict off macOS and the CLI says so.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tests.tiny_llava import save_tiny_llava

REPO = Path(__file__).resolve().parents[2]
PROMPT = "what color is the shape ?"
NEW_TOKENS = 8
# ExecuTorch's pt2e + XNNPACK lowering is the slow case (~60-90 s on the shared 2 cores).
EXECUTING = ["x86-cpu", pytest.param("android-arm64-cpu", marks=pytest.mark.slow), "jetson-orin-nano"]
# Greedy tokens equal to the float reference's over NEW_TOKENS steps (the first one included).
# INT4 per-block weights on a 64-wide random decoder move some later argmaxes; a broken cache or
# position layout agrees on ~1/vocab of them.
MIN_AGREEMENT = 0.6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # noqa: ANN001, ANN201
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("run-every-backend")
    model = save_tiny_llava(root / "model")
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 24, 24), fill="red")
    image.save(root / "red.png")
    (root / "recipes").mkdir()
    shutil.copytree(REPO / "targets", root / "targets")
    return root, model


def _built(root: Path, model: Path, recipe_name: str) -> Path:
    """The shipped recipe, with a small synthetic calibration/eval set, built up to the artifact."""
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    recipe = yaml.safe_load((REPO / "recipes" / f"{recipe_name}.yaml").read_text())
    recipe.update(calibration={"method": "minmax", "set": "synthetic", "samples": 4}, eval={"set": "synthetic", "samples": 2, "latency_runs": 3, "warmup_runs": 1}, gates=[], allow_no_gates=True, budget_gates=False)
    recipe.setdefault("quantization", {})["int4_block_size"] = 16
    path = root / "recipes" / f"{recipe_name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ctx = BuildContext.create(path, str(model), root / recipe_name)
    run_until(ctx, "build")
    return root / recipe_name


def _tokens(build: Path, image: Path, reference: bool) -> list[int]:
    """The tokens ``edgecompile run`` streams, through the same loader and loop (without the printing)."""
    from PIL import Image
    from transformers import AutoConfig

    from edgecompile.backends.base import Artifact
    from edgecompile.backends.registry import get_backend
    from edgecompile.models.adapter import LoadedModel
    from edgecompile.runtime.generate import generate
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import recorded

    ctx = BuildContext.open(build)
    if reference:
        exported = recorded(ctx, "export").output
        directory, artifact = exported.folder, Artifact("ort-cpu", {c: p.name for c, p in exported.files.items()}, True, "reference")
    else:
        built = recorded(ctx, "build").output
        directory, artifact = built.folder, built.artifact
    config = AutoConfig.from_pretrained(ctx.model_dir)
    loaded = LoadedModel(path=ctx.model_dir, model=None, processor=ctx.adapter.load_processor(ctx.model_dir), config=config)  # type: ignore[arg-type]
    ids, pixels = ctx.adapter.encode(loaded, Image.open(image).convert("RGB"), PROMPT)
    run = get_backend(artifact.backend).runner(directory, artifact)
    return generate(run, ctx.adapter.generation_spec(config), ids, pixels, NEW_TOKENS).tokens


@pytest.mark.parametrize("recipe_name", EXECUTING)
def test_run_generates_on_the_backend_and_agrees_with_the_float_reference(tiny, recipe_name: str) -> None:  # noqa: ANN001
    from edgecompile.cli.main import main

    root, model = tiny
    if recipe_name == "android-arm64-cpu":
        pytest.importorskip("executorch", reason="needs executorch")
    build = _built(root, model, recipe_name)
    result = CliRunner().invoke(main, ["run", "--build", str(build), "-i", str(root / "red.png"), "-p", PROMPT, "--max-new-tokens", str(NEW_TOKENS)])
    assert result.exit_code == 0, result.output
    assert "time to first token" in result.output and "tokens, stopped by" in result.output
    got = _tokens(build, root / "red.png", reference=False)
    expected = _tokens(build, root / "red.png", reference=True)
    assert 1 <= len(got) <= NEW_TOKENS and len(expected) >= 1
    assert got[0] == expected[0]  # the prefill's argmax
    steps = min(len(got), len(expected))
    agreement = float(np.mean([a == b for a, b in zip(got[:steps], expected[:steps], strict=True)]))
    assert agreement >= MIN_AGREEMENT, (got, expected)


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS the CoreML build predicts; the refusal is for other systems")
def test_run_says_coreml_needs_macos(tiny) -> None:  # noqa: ANN001
    pytest.importorskip("coremltools", reason="needs coremltools")
    from edgecompile.cli.main import main

    root, model = tiny
    build = _built(root, model, "apple-m2")
    result = CliRunner().invoke(main, ["run", "--build", str(build), "-i", str(root / "red.png"), "-p", PROMPT])
    assert result.exit_code == 3
    assert "coreml" in result.output and "macOS" in result.output
