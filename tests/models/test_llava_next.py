"""LLaVA-NeXT and LLaVA-OneVision at a fixed anyres grid: HF equivalence, image-token expansion, an x86-cpu build."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.family_build import GENERATIVE_GATES, assert_generative_build, build_family
from tests.tiny_families import save_tiny_llava_next, save_tiny_llava_onevision

SAVERS = {"llava_next": save_tiny_llava_next, "llava_onevision": save_tiny_llava_onevision}
QUESTION = "what color is the shape ?"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("anyres")
    return {name: save(root / name) for name, save in SAVERS.items()}


def _image(h: int = 50, w: int = 50):  # noqa: ANN202
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("family", sorted(SAVERS))
def test_features_and_logits_match_hf(models, family) -> None:  # noqa: ANN001
    """Our fixed-grid vision graph equals get_image_features; spliced prefill logits equal the HF forward's."""
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.models.registry import adapter_for

    adapter = adapter_for(models[family])
    loaded = adapter.load(models[family])
    assert adapter.grid(loaded.config) == (2, 2)
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    assert pixels.shape == (1, 5, 3, 16, 16)
    tokens = 4 + 2 * 2 * (2 * 2 + 1)  # base tile (2x2 patches) + a 4x4 grid with a newline per row
    assert int((ids == adapter.image_token_id(loaded.config)).sum()) == tokens == adapter.image_tokens(loaded)
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels), image_sizes=torch.tensor([[50, 50]])).pooler_output[0]
        np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-6)
        hf = loaded.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels), image_sizes=torch.tensor([[50, 50]])).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(), QUESTION, CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True)))
        decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
        ours_logits = decoder(*(torch.from_numpy(v) for v in feeds.values()))[0]
    np.testing.assert_allclose(ours_logits.numpy(), hf.numpy(), atol=1e-4)


def test_expansion_matches_full_processor(models) -> None:  # noqa: ANN001
    """LlavaNextProcessor loads here: its input_ids and pixel_values equal the adapter's own (tokenizer + PIL image processor)."""
    from transformers import AutoProcessor

    from edgecompile.models.llava_next import LlavaNextAdapter

    adapter = LlavaNextAdapter()
    loaded = adapter.load(models["llava_next"])
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    full = AutoProcessor.from_pretrained(models["llava_next"])(images=_image(), text=adapter.prompt(loaded, QUESTION), return_tensors="np")
    np.testing.assert_array_equal(full["input_ids"], ids)
    np.testing.assert_array_equal(full["pixel_values"], pixels)


def test_onevision_full_processor_or_reason(models) -> None:  # noqa: ANN001
    """The OneVision full processor needs torchvision for its video part; where it loads, it must agree with the adapter."""
    from transformers import AutoProcessor

    from edgecompile.models.llava_next import LlavaOnevisionAdapter

    try:
        processor = AutoProcessor.from_pretrained(models["llava_onevision"])
    except (ImportError, AttributeError, ValueError, OSError) as exc:
        pytest.skip(f"LlavaOnevisionProcessor cannot load here ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}); the adapter loads the parts instead")
    adapter = LlavaOnevisionAdapter()
    loaded = adapter.load(models["llava_onevision"])
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    full = processor(images=_image(), text=adapter.prompt(loaded, QUESTION), return_tensors="np")
    np.testing.assert_array_equal(full["input_ids"], ids)
    np.testing.assert_allclose(full["pixel_values"], pixels, atol=1e-6)


def test_missing_image_processor_is_a_clear_error(models, tmp_path) -> None:  # noqa: ANN001
    import shutil

    from edgecompile.errors import InputError
    from edgecompile.models.llava_next import LlavaOnevisionAdapter

    broken = tmp_path / "ov"
    shutil.copytree(models["llava_onevision"], broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="LlavaOnevisionImageProcessorPil"):
        LlavaOnevisionAdapter().load(broken)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SAVERS))
def test_build_x86_cpu(models, family, tmp_path_factory) -> None:  # noqa: ANN001
    build, code, output = build_family(tmp_path_factory.mktemp(family), models[family], family.replace("_", "-"), GENERATIVE_GATES, samples=2)
    assert code == 0, output
    assert_generative_build(build, {("vision_encoder", "patch_embed", "fp16"), ("vision_encoder", "projector", "fp16"), ("decoder", "lm_head", "int8"), ("decoder", "attn_qkv", "int4"), ("decoder", "mlp", "int4")})
