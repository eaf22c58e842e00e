"""model_options.tile_grid: the tiling adapters export exactly the recipe's grid; everything else refuses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompile.config.recipe import ModelOptions
from edgecompile.errors import InputError
from edgecompile.models.registry import adapter_for
from tests.tiny_families import save_tiny_idefics3, save_tiny_llava_next

QUESTION = "what color is the shape ?"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("tile_grid")
    return {"llava_next": save_tiny_llava_next(root / "llava_next"), "idefics3": save_tiny_idefics3(root / "idefics3")}


def _image(h: int, w: int):  # noqa: ANN202
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


def test_llava_next_exports_the_recipe_grid_as_hf_packs_it(models) -> None:  # noqa: ANN001
    """A 1x2 grid (a pinpoint of the tiny checkpoint, not the default 2x2): 3 tiles, 4 + 2*(4+1) tokens, equal to HF's packing."""
    from transformers import AutoProcessor

    adapter = adapter_for(models["llava_next"], ModelOptions(tile_grid=(1, 2)))
    loaded = adapter.load(models["llava_next"])
    assert adapter.grid(loaded.config) == (1, 2)
    image = _image(16, 32)  # the grid's own resolution: nothing is resized
    ids, pixels = adapter.encode(loaded, image, QUESTION)
    assert pixels.shape == (1, 3, 3, 16, 16)
    assert int((ids == adapter.image_token_id(loaded.config)).sum()) == 4 + 2 * (4 + 1) == adapter.image_tokens(loaded)
    full = AutoProcessor.from_pretrained(models["llava_next"])(images=image, text=adapter.prompt(loaded, QUESTION), return_tensors="np")
    np.testing.assert_array_equal(full["input_ids"], ids)
    np.testing.assert_array_equal(full["pixel_values"], pixels)
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels), image_sizes=torch.tensor([[16, 32]])).pooler_output[0]
    np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-6)


def test_llava_next_refuses_a_grid_its_pinpoints_lack(models) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=r"model_options\.tile_grid: \[3, 3\] is not a grid of .*image_grid_pinpoints.*\[1, 2\], \[2, 1\], \[2, 2\]"):
        adapter_for(models["llava_next"], ModelOptions(tile_grid=(3, 3)))


def test_unset_grid_keeps_the_default(models) -> None:  # noqa: ANN001
    adapter = adapter_for(models["llava_next"], ModelOptions())
    assert adapter.grid(adapter.load(models["llava_next"]).config) == (2, 2)


def test_idefics3_exports_the_recipe_grid(models) -> None:  # noqa: ANN001
    """1x2 tiles + the global tile; the HF forward on those pixels equals ours (features and logits)."""
    from edgecompile.models.decoder_export import CacheLayout

    adapter = adapter_for(models["idefics3"], ModelOptions(tile_grid=(1, 2)))
    loaded = adapter.load(models["idefics3"])
    assert adapter.grid(loaded) == (1, 2)
    ids, pixels = adapter.encode(loaded, _image(50, 50), QUESTION)
    assert pixels.shape == (1, 3, 3, 32, 32)
    assert int((ids == loaded.config.image_token_id).sum()) == 3 * 4 == adapter.image_tokens(loaded)
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output[0]
        np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-6)
        hf = loaded.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(50, 50), QUESTION, CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True)))
        decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
        np.testing.assert_allclose(decoder(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy(), hf.numpy(), atol=1e-4)


def test_idefics3_refuses_a_grid_beyond_its_processor(models) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=r"model_options\.tile_grid: \[1, 3\] exceeds .*preprocessor_config\.json.*at most 2"):
        adapter_for(models["idefics3"], ModelOptions(tile_grid=(1, 3)))


def test_families_without_tiles_refuse_it() -> None:
    clip = ROOT / "edgecompile" / "zoo" / "models" / "shapes-clip"
    with pytest.raises(InputError, match=r"model_options\.tile_grid: set to \[2, 2\], but the 'clip' family .* does not cut images into tiles.*llava_next"):
        adapter_for(clip, ModelOptions(tile_grid=(2, 2)))


def test_a_build_with_a_refused_grid_stops_before_its_directory(tmp_path: Path) -> None:
    """Through the recipe file: the refusal comes from BuildContext.create, and no build directory is left."""
    from edgecompile.stages.context import BuildContext

    recipe = tmp_path / "x86-cpu.yaml"  # a recipe's name must match its file name
    recipe.write_text((ROOT / "recipes" / "x86-cpu.yaml").read_text() + "model_options:\n  tile_grid: [2, 2]\n")
    out = tmp_path / "build"
    with pytest.raises(InputError, match=r"model_options\.tile_grid.*'llava' family"):
        BuildContext.create(recipe, str(ROOT / "edgecompile" / "zoo" / "models" / "shapes-llava"), out)
    assert not out.exists()


def test_a_build_context_carries_the_recipe_grid_to_its_adapter(tmp_path: Path) -> None:
    """shapes-llava-next (one 2x2 pinpoint): tile_grid [2, 2] reaches the adapter; [1, 2] is refused naming the allowed grid."""
    from edgecompile.stages.context import BuildContext

    model = str(ROOT / "edgecompile" / "zoo" / "models" / "shapes-llava-next")
    recipe = tmp_path / "x86-cpu.yaml"
    base = (ROOT / "recipes" / "x86-cpu.yaml").read_text()
    recipe.write_text(base + "model_options:\n  tile_grid: [2, 2]\n")
    ctx = BuildContext.create(recipe, model, tmp_path / "build")
    try:
        assert ctx.adapter.tile_grid == (2, 2)
    finally:
        ctx.close()
    recipe.write_text(base + "model_options:\n  tile_grid: [1, 2]\n")
    with pytest.raises(InputError, match=r"tile_grid: \[1, 2\] is not a grid .*expected one of \[2, 2\]"):
        BuildContext.create(recipe, model, tmp_path / "build2")
    assert not (tmp_path / "build2").exists()


def test_a_set_tile_grid_is_part_of_the_export_fingerprint(tmp_path: Path) -> None:
    """Changing the grid re-exports; an unset grid keeps the fingerprint older builds recorded."""
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.export import ExportStage

    model = str(ROOT / "edgecompile" / "zoo" / "models" / "shapes-llava-next")
    base = (ROOT / "recipes" / "x86-cpu.yaml").read_text()
    seen = []
    for extra in ("", "model_options:\n  tile_grid: [2, 2]\n"):
        recipe = tmp_path / "x86-cpu.yaml"
        recipe.write_text(base + extra)
        ctx = BuildContext.create(recipe, model, tmp_path / f"build{len(seen)}")
        try:
            seen.append(ExportStage().inputs(ctx))
        finally:
            ctx.close()
    assert "model_options" not in seen[0]
    assert seen[1]["model_options"] == {"tile_grid": [2, 2]}
