"""``edgecompile run``: generate an answer with a built generative VLM on this machine, streaming tokens.

Loads only the processor and config from the model directory (no torch weights) and the build's
artifact through its backend's runner, then runs greedy decoding with the KV cache through
``runtime.generate``, the one loop every backend's runner serves (ORT CPU, ExecuTorch, the TensorRT
stand-in here; CoreML's stateful decoder on macOS). An artifact that cannot execute on this
machine is refused with where it can.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgecompile.cli.common import handle_errors
from edgecompile.errors import InputError


@click.command("run")
@click.option("-b", "--build", "build_dir", required=True, type=click.Path(path_type=Path, file_okay=False), help="Build directory of a generative model.")
@click.option("-i", "--image", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Image file.")
@click.option("-p", "--prompt", required=True, help="The question or instruction.")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--reference", is_flag=True, help="Run the float reference graphs (export/) instead of the compiled artifact.")
@handle_errors
def run_cmd(build_dir: Path, image: Path, prompt: str, max_new_tokens: int, reference: bool) -> None:
    """Answer PROMPT about IMAGE with the compiled model, printing tokens as they are generated."""
    from PIL import Image, UnidentifiedImageError
    from transformers import AutoConfig

    from edgecompile.backends.base import Artifact
    from edgecompile.backends.registry import get_backend
    from edgecompile.models.adapter import LoadedModel
    from edgecompile.runtime.generate import stream_tokens
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import recorded

    ctx = BuildContext.open(build_dir)
    adapter = ctx.adapter
    if adapter.family != "generative":
        raise InputError(f"{build_dir}: the model is a {adapter.family} model; 'edgecompile run' generates text with generative VLMs only")
    try:
        picture = Image.open(image).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{image}: cannot read the image: {exc}") from None
    if reference:
        exported = recorded(ctx, "export").output
        files = {c: p.name for c, p in exported.files.items()}
        directory, artifact = exported.folder, Artifact("ort-cpu", files, True, "reference")
    else:
        if not ctx.path("build", "artifact.json").is_file():
            raise InputError(f"{build_dir}: no built artifact (build/artifact.json); run 'edgecompile build' first")
        built = recorded(ctx, "build").output
        directory, artifact = built.folder, built.artifact
    if not artifact.runs_here:
        where_to = {"coreml": "; CoreML predicts on macOS only: run 'edgecompile run' on a Mac (macOS 15+) with this build directory"}.get(artifact.backend, "")
        raise InputError(f"{build_dir}: the {artifact.backend} artifact cannot execute on this machine ({artifact.where}){where_to}")
    runner = get_backend(artifact.backend).runner(directory, artifact)
    config = AutoConfig.from_pretrained(ctx.model_dir)
    loaded = LoadedModel(path=ctx.model_dir, model=None, processor=adapter.load_processor(ctx.model_dir), config=config)  # type: ignore[arg-type]
    count = _static_image_tokens(directory / artifact.components["vision_encoder"]) if "vision_encoder" in artifact.components else None
    if count is not None:
        loaded.image_token_count = count  # type: ignore[attr-defined] - the prompt's expansion without the torch weights
    ids, pixels = adapter.encode(loaded, picture, prompt)
    spec = adapter.generation_spec(config)
    if not reference and ctx.recipe.token_pruning is not None:
        from dataclasses import replace

        spec = replace(spec, visual_token_mask=True)  # the artifact's decoder prunes visual tokens when fed their mask
    stats: dict = {}
    tokens: list[int] = []
    shown = ""
    for token in stream_tokens(runner, spec, ids, pixels, max_new_tokens, stats):
        tokens.append(token)
        text = loaded.processor.decode(tokens, skip_special_tokens=True)
        click.echo(text[len(shown):], nl=False)
        sys.stdout.flush()
        shown = text
    click.echo()
    steps = len(tokens) - 1
    rate = f"{steps / stats['decode_s']:.1f} tokens/s" if steps > 0 and stats.get("decode_s") else "n/a"
    click.echo(f"[{len(tokens)} tokens, stopped by {stats['stopped_by']}; time to first token {stats['time_to_first_token_s'] * 1000:.0f} ms; decode {rate}; {artifact.backend}: {artifact.where}]", err=True)


def _static_image_tokens(vision_graph: Path) -> int | None:
    """The image-token count a vision graph emits, when its ``image_features`` output has it as a static dimension."""
    import onnx

    try:
        model = onnx.load(str(vision_graph), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file (a CoreML package, an ExecuTorch program): no shape to read
        return None
    out = next((o for o in model.graph.output if o.name == "image_features"), None)
    dims = out.type.tensor_type.shape.dim if out is not None else []
    return int(dims[1].dim_value) if len(dims) == 3 and dims[1].dim_value > 0 else None
