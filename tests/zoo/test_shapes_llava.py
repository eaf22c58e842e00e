"""The committed shapes-llava loads offline and answers world questions with greedy decoding."""

from __future__ import annotations

import os

import pytest

from edgecompile.world import generate
from edgecompile.zoo import DEFAULT_GENERATIVE, model_path
from edgecompile.zoo.card import read_card
from edgecompile.zoo.evaluate import evaluate_llava
from edgecompile.zoo.llava_parts import image_tokens

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_files_are_safetensors_only():
    path = model_path(DEFAULT_GENERATIVE)
    names = set(os.listdir(path))
    assert {"model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert (path / "model.safetensors").stat().st_size < 10 * 2**20


def test_processor_expands_image_token_and_has_chat_template():
    from transformers import AutoProcessor, AutoTokenizer, LlavaProcessor

    path = model_path(DEFAULT_GENERATIVE)
    processor = AutoProcessor.from_pretrained(path)
    assert isinstance(processor, LlavaProcessor)
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "what colour is the shape?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(images=[generate("eval", 1)[0].image], text=[text], return_tensors="pt")
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == image_tokens(
        processor.patch_size)
    assert AutoTokenizer.from_pretrained(path).unk_token_id not in enc["input_ids"][0].tolist()


def test_llava_model_class_and_answer_accuracy():
    from transformers import LlavaForConditionalGeneration

    path = model_path(DEFAULT_GENERATIVE)
    config = LlavaForConditionalGeneration.config_class.from_pretrained(path)
    assert config.text_config.model_type == "llama"
    accuracy = evaluate_llava(path, 100)
    assert accuracy >= 0.8
    card = read_card(path)
    assert card.eval_accuracy >= 0.8 and card.eval_count >= 1000
