"""Qwen2-VL at a fixed resolution: vision tower and M-RoPE positions equal HF's, the runtime's positions, an x86-cpu build."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.family_build import GENERATIVE_GATES, assert_generative_build, build_family
from tests.tiny_families import save_tiny_qwen2_5_vl, save_tiny_qwen2_vl

QUESTION = "what color is the shape ?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return save_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2vl") / "model")


def _image():  # noqa: ANN202
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((50, 50, 3)) * 255).astype(np.uint8))


def test_features_positions_and_logits_match_hf(model_dir) -> None:  # noqa: ANN001
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.models.registry import adapter_for

    adapter = adapter_for(model_dir)
    loaded = adapter.load(model_dir)
    assert adapter.side(loaded.config) == 32 and adapter.grid(loaded.config) == (4, 4)  # max_pixels 32x32, 8 px patches
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    image_id = loaded.config.image_token_id
    assert pixels.shape == (1, 16, 3 * 2 * 8 * 8) and int((ids == image_id).sum()) == 4 == adapter.image_tokens(loaded)
    grid = torch.tensor([[1, 4, 4]])
    mm = torch.from_numpy((ids == image_id).astype(np.int32))
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels[0]), image_grid_thw=grid).pooler_output[0]
        np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-5)
        spec = adapter.generation_spec(loaded.config)
        positions, delta = spec.prompt_position_ids(ids)
        hf_positions, hf_delta = loaded.model.model.get_rope_index(torch.from_numpy(ids), mm, grid)
        np.testing.assert_array_equal(positions, hf_positions.numpy())
        assert delta == int(hf_delta) < 0  # the 2x2 image spans 4 tokens but advances positions by 2
        hf = loaded.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels[0]), image_grid_thw=grid, mm_token_type_ids=mm).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(), QUESTION, CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True)))
        decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
        np.testing.assert_allclose(decoder(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy(), hf.numpy(), atol=1e-4)


def test_qwen2_5_window_attention_matches_hf(tmp_path) -> None:  # noqa: ANN001
    """Qwen2.5-VL: 4 windows of 16 patches in block 0, full attention in block 1; features, positions and logits equal HF's."""
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.models.registry import adapter_for

    model_dir = save_tiny_qwen2_5_vl(tmp_path / "q25")
    adapter = adapter_for(model_dir)
    loaded = adapter.load(model_dir)
    assert type(adapter).__name__ == "Qwen2_5_VLAdapter" and adapter.grid(loaded.config) == (8, 8)
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    vision = adapter.vision_module(loaded)
    assert vision.full_blocks == (1,) and sorted(set((vision.window_mask[0, 0] == 0).sum(1).tolist())) == [16]
    grid = torch.tensor([[1, 8, 8]])
    mm = torch.from_numpy((ids == loaded.config.image_token_id).astype(np.int32))
    with torch.no_grad():
        theirs = loaded.model.model.get_image_features(pixel_values=torch.from_numpy(pixels[0]), image_grid_thw=grid).pooler_output[0]
        np.testing.assert_allclose(vision(torch.from_numpy(pixels))[0].numpy(), theirs.numpy(), atol=1e-5)
        vision.full_blocks = (0, 1)  # without the windows the features differ: the mask is what makes them equal
        assert float((vision(torch.from_numpy(pixels))[0] - theirs).abs().max()) > 1e-4
        vision.full_blocks = (1,)
        positions, _ = adapter.generation_spec(loaded.config).prompt_position_ids(ids)
        np.testing.assert_array_equal(positions, loaded.model.model.get_rope_index(torch.from_numpy(ids), mm, grid)[0].numpy())
        hf = loaded.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels[0]), image_grid_thw=grid, mm_token_type_ids=mm).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(), QUESTION, CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True)))
        decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
        np.testing.assert_allclose(decoder(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy(), hf.numpy(), atol=1e-4)


def test_generation_spec_round_trips_mrope(tmp_path) -> None:  # noqa: ANN001
    from edgecompile.runtime.generate import GenerationSpec

    spec = GenerationSpec(9, (3,), 2, 2, 16, 64, 40, "mrope", (2, 3))
    spec.save(tmp_path)
    loaded = GenerationSpec.load(tmp_path)
    assert loaded == spec
    positions, delta = loaded.prompt_position_ids(np.array([[1, 9, 9, 9, 9, 9, 9, 5]]))
    assert positions[:, 0].tolist() == [[0, 1, 1, 1, 1, 1, 1, 4], [0, 1, 1, 1, 2, 2, 2, 4], [0, 1, 2, 3, 1, 2, 3, 4]]
    assert delta == 5 - 8 and loaded.position_ids(8 + delta, 1).shape == (3, 1, 1)
    with pytest.raises(ValueError, match="image_grid"):
        loaded.prompt_position_ids(np.array([[1, 9, 9, 5]]))


def test_full_processor_or_reason(model_dir) -> None:  # noqa: ANN001
    """Qwen2VLProcessor builds a video processor (torchvision); where it loads it must agree with the adapter's own expansion."""
    from transformers import AutoProcessor

    from edgecompile.models.qwen2_vl import Qwen2VLAdapter

    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except (ImportError, AttributeError, ValueError, OSError) as exc:
        pytest.skip(f"Qwen2VLProcessor cannot load here ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}); the adapter loads the parts instead")
    adapter = Qwen2VLAdapter()
    loaded = adapter.load(model_dir)
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    full = processor(images=[_image().resize((32, 32))], text=adapter.prompt(loaded, QUESTION), return_tensors="np")
    np.testing.assert_array_equal(full["input_ids"], ids)
    np.testing.assert_allclose(full["pixel_values"], pixels[0], atol=1e-6)


def test_build_x86_cpu(model_dir, tmp_path_factory) -> None:  # noqa: ANN001
    build, code, output = build_family(tmp_path_factory.mktemp("qwen2vl-build"), model_dir, "qwen2-vl-tiny", GENERATIVE_GATES, samples=2)
    assert code == 0, output
    assert_generative_build(build, {("vision_encoder", "patch_embed", "fp16"), ("vision_encoder", "projector", "fp16"), ("vision_encoder", "attn_qkv", "int8"), ("decoder", "attn_qkv", "int4"), ("decoder", "mlp", "int4")})
    spec = json.loads((build / "build" / "bundle" / "io.json").read_text())["generation"]  # what the device runtime reads
    assert spec["position_layout"] == "mrope" and list(spec["image_grid"]) == [2, 2]


@pytest.mark.slow
def test_build_x86_cpu_qwen2_5(tmp_path_factory) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("qwen25-build")
    build, code, output = build_family(root, save_tiny_qwen2_5_vl(root / "model"), "qwen2-5-vl-tiny", GENERATIVE_GATES, samples=2)
    assert code == 0, output
    components = json.loads((build / "manifest.json").read_text())["stages"]["export"]["summary"]["components"]
    assert components["vision_encoder"]["parity"]["cosine"] > 0.99999 and components["decoder"]["parity"]["decode_cosine"] > 0.99999
    assert json.loads((build / "report.json").read_text())["verdict"] == "pass"
