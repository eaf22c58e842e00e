"""Idefics3 / SmolVLM at a fixed tile grid: HF equivalence, the processor's prompt layout, an x86-cpu build."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.family_build import GENERATIVE_GATES, assert_generative_build, build_family
from tests.tiny_families import save_tiny_idefics3

QUESTION = "what color is the shape ?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return save_tiny_idefics3(tmp_path_factory.mktemp("idefics3") / "model")


def _image(h: int = 50, w: int = 50):  # noqa: ANN202
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


def test_features_and_logits_match_hf(model_dir) -> None:  # noqa: ANN001
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.models.registry import adapter_for

    adapter = adapter_for(model_dir)
    loaded = adapter.load(model_dir)
    assert adapter.grid(loaded) == (2, 2)
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    assert pixels.shape == (1, 5, 3, 32, 32)  # 2x2 tiles + the global tile
    assert int((ids == loaded.config.image_token_id).sum()) == 5 * 4 == adapter.image_tokens(loaded)  # 4x4 patches, pixel shuffle 2
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output[0]
        np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-6)
        hf = loaded.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(), QUESTION, CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True)))
        decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
        np.testing.assert_allclose(decoder(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy(), hf.numpy(), atol=1e-4)


@pytest.mark.parametrize("size", [(50, 50), (30, 70)])
def test_prompt_and_pixels_match_full_processor(model_dir, size) -> None:  # noqa: ANN001
    """Idefics3Processor (no video part) loads here; for an image at the grid's aspect ratio it agrees exactly.

    A non-square image is squashed to the fixed grid first; the full processor then sees that image.
    """
    from transformers import AutoProcessor

    from edgecompile.models.idefics3 import Idefics3Adapter

    adapter = Idefics3Adapter()
    loaded = adapter.load(model_dir)
    ids, pixels = adapter.encode(loaded, _image(*size), QUESTION)
    image = _image(*size)
    if size[0] != size[1]:
        from PIL import Image

        image = image.resize((64, 64), Image.Resampling.LANCZOS)
    full = AutoProcessor.from_pretrained(model_dir)(images=[image], text=adapter.prompt(loaded, QUESTION), return_tensors="np")
    np.testing.assert_array_equal(full["input_ids"], ids)
    np.testing.assert_allclose(full["pixel_values"], pixels, atol=1e-6)


@pytest.mark.slow
def test_build_x86_cpu(model_dir, tmp_path_factory) -> None:  # noqa: ANN001
    build, code, output = build_family(tmp_path_factory.mktemp("idefics3-build"), model_dir, "idefics3-tiny", GENERATIVE_GATES, samples=2)
    assert code == 0, output
    assert_generative_build(build, {("vision_encoder", "patch_embed", "fp16"), ("vision_encoder", "projector", "fp16"), ("decoder", "lm_head", "int8"), ("decoder", "attn_qkv", "int4"), ("decoder", "mlp", "int4")})
