"""The committed shapes-clip loads offline through transformers and reaches its accuracy."""

from __future__ import annotations

import os

import pytest
import torch

from edgecompile.data.eval_sets import zero_shot_eval_set
from edgecompile.world import generate
from edgecompile.zoo import DEFAULT_DUAL_ENCODER, model_path
from edgecompile.zoo.card import read_card
from edgecompile.zoo.evaluate import evaluate_clip
from edgecompile.zoo.images import normalize, to_uint8_batch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_files_are_safetensors_only():
    path = model_path(DEFAULT_DUAL_ENCODER)
    names = set(os.listdir(path))
    assert "model.safetensors" in names and "preprocessor_config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert (path / "model.safetensors").stat().st_size < 10 * 2**20


def test_loads_through_auto_classes():
    from transformers import AutoProcessor, AutoTokenizer, CLIPModel, CLIPProcessor

    path = model_path(DEFAULT_DUAL_ENCODER)
    model = CLIPModel.from_pretrained(path)
    assert model.config.vision_config.image_size == 96
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("a photo of a red triangle")["input_ids"]
    assert tok.unk_token_id not in ids and ids[-1] == model.config.text_config.eos_token_id
    for processor in (AutoProcessor.from_pretrained(path), CLIPProcessor.from_pretrained(path)):
        pix = processor(images=[s.image for s in generate("eval", 2)], return_tensors="pt")
        assert pix["pixel_values"].shape == (2, 3, 96, 96)


def test_training_preprocessing_matches_processor():
    from transformers import AutoProcessor

    images = [s.image for s in generate("eval", 3)]
    processor = AutoProcessor.from_pretrained(model_path(DEFAULT_DUAL_ENCODER))
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(normalize(to_uint8_batch(images)), expected, atol=1e-5)


def test_zero_shot_accuracy_on_eval_subset():
    accuracy = evaluate_clip(model_path(DEFAULT_DUAL_ENCODER), 200)
    assert accuracy >= 0.85
    card = read_card(model_path(DEFAULT_DUAL_ENCODER))
    assert card.eval_accuracy >= 0.85 and card.eval_count >= 1000
    assert abs(accuracy - card.eval_accuracy) < 0.08


def test_eval_set_has_ten_or_more_classes():
    assert len(zero_shot_eval_set(1).class_names) >= 10
