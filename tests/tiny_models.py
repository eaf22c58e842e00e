"""Tiny real-architecture checkpoints saved with save_pretrained, so tests use the real loading path."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>", "a", "photo", "of", "red", "green", "blue", "yellow", "circle", "square", "triangle", "star", "on", "the", "left", "right", "center"]


def _word_tokenizer(max_length: int):  # noqa: ANN202
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_length)


def save_tiny_clip(path: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A 2-layer CLIP (hidden 32) with a word-level tokenizer and a CLIP image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": len(WORDS), "max_position_embeddings": 16, "eos_token_id": 3, "bos_token_id": 2, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": image_size, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=image_processor, tokenizer=_word_tokenizer(16)).save_pretrained(path)
    return path


def save_tiny_siglip(path: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": len(WORDS), "max_position_embeddings": 16, "pad_token_id": 0, "eos_token_id": 3, "projection_size": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": image_size, "patch_size": 8},
    )
    SiglipModel(config).eval().save_pretrained(path)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": image_size, "width": image_size}), tokenizer=_word_tokenizer(16)).save_pretrained(path)
    return path
