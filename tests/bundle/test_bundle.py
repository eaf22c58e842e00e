"""The deployable bundle of real builds of the bundled CLIP and LLaVA, and every ONNX file they hold."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from device.shapes_builds import shapes_build

CLIP_X86 = ("x86-cpu", "shapes-clip")
LLAVA_X86 = ("x86-cpu", "shapes-llava")
CLIP_QNN = ("snapdragon-8-gen-3", "shapes-clip")


def _onnx_files(build: Path) -> list[Path]:
    return sorted(p for p in build.rglob("*.onnx") if "bundle" not in p.parts)


@pytest.mark.parametrize("which", [CLIP_X86, LLAVA_X86, CLIP_QNN], ids=lambda w: f"{w[1]}-{w[0]}")
def test_every_onnx_file_the_build_writes_passes_the_onnx_checker(tmp_path_factory: pytest.TempPathFactory, which: tuple[str, str]) -> None:
    build = shapes_build(tmp_path_factory, *which)
    failures = {}
    for path in _onnx_files(build) + sorted((build / "build" / "bundle").glob("*.onnx")):
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            failures[str(path.relative_to(build))] = str(exc).splitlines()[0]
    assert failures == {}


def test_the_clip_bundle_describes_its_io_and_preprocessing(tmp_path_factory: pytest.TempPathFactory) -> None:
    bundle = shapes_build(tmp_path_factory, *CLIP_X86) / "build" / "bundle"
    record = json.loads((bundle / "bundle.json").read_text())
    io = json.loads((bundle / "io.json").read_text())
    assert set(record["components"]) == {"vision_encoder", "text_encoder"}
    vision = io["components"]["vision_encoder"]
    assert vision["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 96, 96]}]
    assert vision["outputs"][0]["name"] == "image_embeds"
    assert {i["name"] for i in io["components"]["text_encoder"]["inputs"]} == {"input_ids", "attention_mask"}
    image = io["preprocessing"]["image"]
    assert image["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073]) and image["std"][0] == pytest.approx(0.26862954)
    assert image["center_crop"] == {"height": 96, "width": 96}
    assert {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= set(record["model_files"])
    for name, entry in record["files"].items():
        assert not Path(name).is_absolute() and (bundle / name).stat().st_size == entry["bytes"]
    assert "/" not in json.dumps(record["components"]) and str(bundle.parent.parent) not in (bundle / "bundle.json").read_text()


def test_the_printed_polygraphy_lines_run_from_the_build_directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ORT CPU repeat line, exactly as printed (relative paths, --onnxrt on the CPU provider), passes."""
    build = shapes_build(tmp_path_factory, *CLIP_X86)
    commands = json.loads((build / "validate" / "comparison.json").read_text())["commands"]
    line = commands["vision_encoder"]
    assert line.startswith("polygraphy run build/vision_encoder.onnx --onnxrt --providers cpu --load-inputs validate/reference/")
    assert str(build) not in line
    polygraphy = Path(sys.executable).parent / "polygraphy"
    done = subprocess.run([str(polygraphy), *shlex.split(line)[1:]], cwd=build, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0 and "PASSED" in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]


def test_onnxruntime_genai_generates_the_same_tokens_as_edgecompiles_runtime(tmp_path_factory: pytest.TempPathFactory) -> None:
    """genai loads the generative bundle (genai_config.json) and, greedy, matches edgecompile's generation token for token.

    Text prompts: genai's pipeline feeds input_ids to one decoder graph; images reach the decoder only
    through edgecompile's runtime (see edgecompile/bundle/genai.py for why). Prompts are tokenized
    with the `tokenizers` library: genai's own tokenizer (onnxruntime-extensions) cannot parse the
    zoo model's WordLevel tokenizer.json ("Cannot know how to parse line").
    """
    og = pytest.importorskip("onnxruntime_genai")
    from tokenizers import Tokenizer

    from edgecompile.runtime.generate import GenerationSpec, generate
    from edgecompile.runtime.onnx_cpu import cpu_runner

    bundle = shapes_build(tmp_path_factory, *LLAVA_X86) / "build" / "bundle"
    config = json.loads((bundle / "genai_config.json").read_text())
    assert config["model"]["decoder"]["filename"] == "genai_model.onnx"
    model = og.Model(str(bundle))
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    generation = json.loads((bundle / "io.json").read_text())["generation"]
    spec = GenerationSpec(**{**generation, "eos_token_ids": tuple(generation["eos_token_ids"])})
    run = cpu_runner(bundle, {"embed_tokens": "embed_tokens.onnx", "decoder": "decoder.onnx"})
    compared = 0
    for prompt in ("USER: what color is the shape? ASSISTANT:", "USER: where is the shape? ASSISTANT:", "USER: what shape is it? ASSISTANT:"):
        ids = np.array(tokenizer.encode(prompt).ids, np.int64)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + 10, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids.astype(np.int32))
        genai_tokens = []
        while not generator.is_done():
            generator.generate_next_token()
            genai_tokens.append(int(generator.get_next_tokens()[0]))
        ours = generate(run, spec, ids[None], None, 10).tokens
        assert genai_tokens == ours, prompt
        compared += len(ours)
    assert compared >= 3


def test_genai_cannot_feed_the_separate_embedding_graph_and_says_why(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The image path needs genai to run embed_tokens -> decoder(inputs_embeds); this genai refuses it: the exact reason."""
    og = pytest.importorskip("onnxruntime_genai")
    import shutil

    bundle = shapes_build(tmp_path_factory, *LLAVA_X86) / "build" / "bundle"
    folder = tmp_path / "split"
    shutil.copytree(bundle, folder)
    config = json.loads((folder / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]
    decoder["filename"] = "decoder.onnx"
    decoder["inputs"] = {"inputs_embeds": "inputs_embeds", **{k: v for k, v in decoder["inputs"].items() if k != "input_ids"}}
    config["model"]["embedding"] = {"filename": "embed_tokens.onnx", "inputs": {"input_ids": "input_ids"}, "outputs": {"inputs_embeds": "inputs_embeds"}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError) as refused:
        og.Model(str(folder))
    assert "requires the dynamic-batching Engine" in str(refused.value)
    pytest.skip(f"onnxruntime-genai {getattr(og, '__version__', '?')} cannot run this architecture's image path: {refused.value}")
