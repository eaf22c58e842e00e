"""Architecture and processor of shapes-llava, shared by training and tests.

Why a separate module: the chat template, prompt format and model config must be
identical when training builds prompts by hand and when users go through LlavaProcessor.
"""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor, PreTrainedTokenizerFast,
)

from edgecompile.zoo.images import image_processor
from edgecompile.zoo.tokenizer import IMAGE, build_tokenizer, wrap

IMAGE_SIZE = 96
MAX_LENGTH = 160

# Messages are [{"role": "user"|"assistant", "content": str | [{"type": "image"|"text"}]}].
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}user : "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% else %}assistant : "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    " </s> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def prompt(question: str) -> str:
    """The text the chat template renders for one image plus one question."""
    return f"user : <image> {question} assistant :"


def build_tokenizer_fast() -> PreTrainedTokenizerFast:
    """Word-level tokenizer with an `<image>` token; left padding for batched generation."""
    return wrap(build_tokenizer(with_image_token=True, add_bos_eos=False),
                model_max_length=MAX_LENGTH, padding_side="left",
                extra={"extra_special_tokens": {"image_token": IMAGE}})


def image_tokens(patch_size: int) -> int:
    """Image placeholder tokens per image: one per patch (CLS dropped, "default" strategy)."""
    return (IMAGE_SIZE // patch_size) ** 2


def build_processor(patch_size: int) -> LlavaProcessor:
    """LlavaProcessor: CLIP image processor, tokenizer, image-token expansion, chat template."""
    return LlavaProcessor(
        image_processor=image_processor(IMAGE_SIZE), tokenizer=build_tokenizer_fast(),
        patch_size=patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token=IMAGE,
    )


def llava_config(vision: CLIPVisionConfig, vocab_size: int, image_token_id: int) -> LlavaConfig:
    """CLIP vision tower + 2-layer MLP projector + a 2-layer Llama decoder (GQA 4/2 heads)."""
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        image_seq_length=image_tokens(vision.patch_size), vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )
