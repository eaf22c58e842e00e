"""PaliGemma: prefix-LM decoder (bidirectional over image + prompt), 1-indexed positions, HF equivalence, an x86-cpu build."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.family_build import GENERATIVE_GATES, assert_generative_build, build_family
from tests.tiny_families import save_tiny_paligemma

QUESTION = "what color is the shape ?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return save_tiny_paligemma(tmp_path_factory.mktemp("paligemma") / "model")


def _image():  # noqa: ANN202
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((50, 50, 3)) * 255).astype(np.uint8))


def test_prefill_and_decode_match_hf_prefix_lm(model_dir) -> None:  # noqa: ANN001
    """Prefill logits equal HF's with token_type_ids (prefix = image + prompt); a decode step equals HF's with the token as suffix."""
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.models.registry import adapter_for

    adapter = adapter_for(model_dir)
    loaded = adapter.load(model_dir)
    spec = adapter.generation_spec(loaded.config)
    assert spec.position_layout == "1d_from_1" and spec.position_ids(0, 3).tolist() == [[1, 2, 3]]
    ids, pixels = adapter.encode(loaded, _image(), QUESTION)
    assert ids[0, :4].tolist() == [loaded.config.image_token_id] * 4 and ids[0, 4] == loaded.processor.tokenizer.bos_token_id
    full = loaded.processor(images=_image(), text=adapter.prompt(loaded, QUESTION), return_tensors="pt")
    layout = CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True))
    decoder = next(c.module for c in adapter.components(loaded) if c.name == "decoder")
    with torch.no_grad():
        hf = loaded.model(input_ids=full["input_ids"], pixel_values=full["pixel_values"], token_type_ids=full["token_type_ids"]).logits
        feeds = adapter._torch_prefill_feeds(loaded, _image(), QUESTION, layout)
        ours = decoder(*(torch.from_numpy(v) for v in feeds.values()))
        np.testing.assert_allclose(ours[0].numpy(), hf.numpy(), atol=1e-4)
        token = int(ours[0][0, -1].argmax())
        n = full["input_ids"].shape[1] + 1
        hf_step = loaded.model(input_ids=torch.cat([full["input_ids"], torch.tensor([[token]])], 1), pixel_values=full["pixel_values"],
                               token_type_ids=torch.cat([full["token_type_ids"], torch.ones(1, 1, dtype=torch.long)], 1)).logits[:, -1]
        embed = adapter.language_model(loaded).get_input_embeddings()(torch.tensor([[token]]))
        step = decoder(embed, torch.ones(1, n, dtype=torch.long), torch.from_numpy(spec.position_ids(n - 1, 1)), *ours[1:])
        np.testing.assert_allclose(step[0][:, -1].numpy(), hf_step.numpy(), atol=1e-4)
        # the prefix really is bidirectional: the first prompt token's logits see the later ones
        tt = full["token_type_ids"].clone()
        tt[:, 5:] = 1
        causal_tail = loaded.model(input_ids=full["input_ids"], pixel_values=full["pixel_values"], token_type_ids=tt).logits
    assert float((causal_tail - hf).abs().max()) > 1e-3


@pytest.mark.slow
def test_build_x86_cpu(model_dir, tmp_path_factory) -> None:  # noqa: ANN001
    build, code, output = build_family(tmp_path_factory.mktemp("paligemma-build"), model_dir, "paligemma-tiny", GENERATIVE_GATES, samples=2)
    assert code == 0, output
    assert_generative_build(build, {("vision_encoder", "patch_embed", "fp16"), ("vision_encoder", "projector", "fp16"), ("decoder", "attn_qkv", "int4"), ("decoder", "mlp", "int4")}, vision_parity=False)
