"""A tiny LlavaForConditionalGeneration saved with save_pretrained: CLIP vision tower, Llama text model,
a word-level tokenizer built with the ``tokenizers`` library, and a LlavaProcessor with an image token
and a chat template, so tests exercise the real loading and prompting path."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "what", "color", "is", "the", "shape", "?", "a",
         "red", "green", "blue", "yellow", "circle", "square", "triangle", "star", "left", "right", "center", "yes", "no", "how", "many", "one", "two", "three"]
IMAGE_TOKEN_ID = 4
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image> {% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {% for item in message['content'] %}{{ item['text'] }} {% endfor %}</s> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _tokenizer():  # noqa: ANN202
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=128)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def save_tiny_llava(path: Path, *, image_size: int = 32, patch_size: int = 8, layers: int = 2, hidden: int = 64, seed: int = 0, feature_layer: int = -2, strategy: str = "default") -> Path:
    """A 2+2-layer Llava (CLIP 32 hidden, Llama 64 hidden with GQA) and its processor."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size, "projection_dim": 32},
        text_config={"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(WORDS),
                     "max_position_embeddings": 256, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0, "tie_word_embeddings": False},
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # random init gives near-uniform logits; sharpen them so greedy decoding is stable
        model.lm_head.weight.mul_(8.0)
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=_tokenizer(), patch_size=patch_size, vision_feature_select_strategy=strategy,
                               chat_template=CHAT_TEMPLATE, image_token="<image>", num_additional_image_tokens=1)
    processor.save_pretrained(path)
    return path
