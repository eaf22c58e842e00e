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
PATCH_SIZE = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # CLS is dropped ("default" strategy)
MAX_LENGTH = 96

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


def build_processor() -> LlavaProcessor:
    """LlavaProcessor: CLIP image processor, tokenizer, image-token expansion, chat template."""
    return LlavaProcessor(
        image_processor=image_processor(IMAGE_SIZE), tokenizer=build_tokenizer_fast(),
        patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token=IMAGE,
    )


def llava_config(vision: CLIPVisionConfig, vocab_size: int, image_token_id: int) -> LlavaConfig:
    """CLIP vision tower + 2-layer MLP projector + a small Llama decoder (GQA 4/2 heads)."""
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        image_seq_length=IMAGE_TOKENS, vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )
