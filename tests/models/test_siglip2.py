"""SigLIP2 (Siglip2Model) at a fixed resolution: HF equivalence, export parity, an x86-cpu build."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.family_build import DUAL_GATES, build_family
from tests.tiny_families import save_tiny_siglip2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return save_tiny_siglip2(tmp_path_factory.mktemp("siglip2") / "model")


def test_fixed_resolution_vision_matches_full_processor_path(model_dir) -> None:  # noqa: ANN001
    from PIL import Image

    from edgecompile.models.registry import adapter_for

    adapter = adapter_for(model_dir)
    loaded = adapter.load(model_dir)
    image = Image.fromarray((np.random.default_rng(0).random((50, 50, 3)) * 255).astype(np.uint8))
    pixels = adapter._pixels(loaded, [image, image.resize((40, 64))])
    assert pixels.shape == (2, 3, 32, 32)  # 4x4 patches of 8 px: isqrt(max_num_patches=16)
    full = loaded.processor(images=[image], max_num_patches=16, patch_size=8, return_tensors="pt")  # the NaFlex path: patches + mask + shapes
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(torch.from_numpy(pixels))
        theirs = loaded.model.get_image_features(**full).pooler_output
    np.testing.assert_allclose(ours[:1].numpy(), theirs.numpy(), atol=1e-5)


def test_build_x86_cpu(model_dir, tmp_path_factory) -> None:  # noqa: ANN001
    build, code, output = build_family(tmp_path_factory.mktemp("siglip2-build"), model_dir, "siglip2-tiny", DUAL_GATES, samples=8)
    assert code == 0, output
    manifest = json.loads((build / "manifest.json").read_text())
    parity = manifest["stages"]["export"]["summary"]["components"]
    assert parity["vision_encoder"]["parity"]["cosine"] > 0.99999 and parity["text_encoder"]["parity"]["cosine"] > 0.99999
    plan = json.loads((build / "annotate" / "plan.json").read_text())["entries"]
    roles = {(e["component"], e["role"]) for e in plan if e["weight"]}
    assert {("vision_encoder", "patch_embed"), ("vision_encoder", "attn_qkv"), ("vision_encoder", "mlp"), ("vision_encoder", "projector"), ("text_encoder", "attn_qkv")} <= roles
    report = json.loads((build / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert report["metrics"]["drift.vision_encoder.image_embeds.cosine_mean"] > 0.99
