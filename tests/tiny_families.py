"""Tiny real-architecture checkpoints of the issue-22 families, saved with save_pretrained with a processor
(tokenizer + PIL-backed image processor + chat template), so tests use the real loading path."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_models import WORDS as DUAL_WORDS


def _siglip2_tokenizer():  # noqa: ANN202
    """A Gemma-style BPE (what Siglip2Tokenizer rebuilds around its vocab) whose merges spell whole ``▁word`` tokens.

    Only the space-prefixed forms get merges (a sentence's first word is spelled in letters), so no two
    vocabulary entries strip to the same word (what check_tokenizer would refuse)."""
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    merges: list[tuple[str, str]] = []
    for word in (w for w in DUAL_WORDS if not w.startswith(("[", "<"))):
        form = "\u2581" + word
        for ch in form:
            vocab.setdefault(ch, len(vocab))
        for i in range(1, len(form)):
            if (form[:i], form[i]) not in merges:
                merges.append((form[:i], form[i]))
            vocab.setdefault(form[: i + 1], len(vocab))
    return Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=16)


def save_tiny_siglip2(path: Path, *, patch_size: int = 8, max_num_patches: int = 16, seed: int = 0) -> Path:
    """A 2+2-layer Siglip2Model (hidden 32, a 4x4 position grid) and a Siglip2Processor (PIL image processor)."""
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model, Siglip2Processor

    tokenizer = _siglip2_tokenizer()
    torch.manual_seed(seed)
    config = Siglip2Config(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1, "projection_size": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_patches": 16, "patch_size": patch_size},
    )
    Siglip2Model(config).eval().save_pretrained(path)
    Siglip2Processor(image_processor=Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches), tokenizer=tokenizer).save_pretrained(path)
    return path


def _generative_tokenizer():  # noqa: ANN202
    from tests.tiny_llava import _tokenizer

    return _tokenizer()


def _text_config(model_type: str, vocab: int, hidden: int = 64, **extra) -> dict:  # noqa: ANN003
    return {"model_type": model_type, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab,
            "max_position_embeddings": 512, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0, "tie_word_embeddings": False, **extra}


def _sharpen_and_save(model, path: Path) -> None:  # noqa: ANN001
    with torch.no_grad():  # random init gives near-uniform logits; sharpen them so greedy decoding is stable
        model.lm_head.weight.mul_(8.0)
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path)


def save_tiny_llava_onevision(path: Path, *, tile: int = 16, patch: int = 8, seed: int = 0) -> Path:
    """LlavaOnevisionForConditionalGeneration: SigLIP tower (16 px tiles of 2x2 patches), Qwen2 decoder, anyres pinpoints up to 2x2 tiles."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessorPil

    from tests.tiny_llava import CHAT_TEMPLATE, IMAGE_TOKEN_ID, WORDS

    torch.manual_seed(seed)
    pinpoints = [[tile, tile], [tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile]]
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": tile, "patch_size": patch, "vision_use_head": False},
        text_config=_text_config("qwen2", len(WORDS)),
        image_token_index=IMAGE_TOKEN_ID, vision_feature_layer=-1, vision_feature_select_strategy="full", image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9",
    )
    _sharpen_and_save(LlavaOnevisionForConditionalGeneration(config).eval(), path)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints)
    # LlavaOnevisionProcessor cannot even be constructed without torchvision (its video processor), so the
    # parts are saved the way a hub checkpoint lays them out: tokenizer, image processor, processor config, template.
    _save_parts(path, image_processor, "LlavaOnevisionProcessor", {"image_token": "<image>", "num_image_tokens": (tile // patch) ** 2, "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}, CHAT_TEMPLATE)
    return path


def _save_parts(path: Path, image_processor, processor_class: str, processor_fields: dict, chat_template: str, tokenizer=None) -> None:  # noqa: ANN001
    import json

    (tokenizer or _generative_tokenizer()).save_pretrained(path)
    image_processor.save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": processor_class, **processor_fields}, indent=1))
    (path / "chat_template.jinja").write_text(chat_template)


def save_tiny_llava_next(path: Path, *, tile: int = 16, patch: int = 8, seed: int = 0) -> Path:
    """LlavaNextForConditionalGeneration: CLIP tower (CLS dropped), Llama decoder, anyres pinpoints up to 2x2 tiles."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    from tests.tiny_llava import CHAT_TEMPLATE, IMAGE_TOKEN_ID, WORDS

    torch.manual_seed(seed)
    pinpoints = [[tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile]]
    config = LlavaNextConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": tile, "patch_size": patch, "projection_dim": 32},
        text_config=_text_config("llama", len(WORDS)),
        image_token_index=IMAGE_TOKEN_ID, vision_feature_layer=-2, vision_feature_select_strategy="default", image_grid_pinpoints=pinpoints,
    )
    _sharpen_and_save(LlavaNextForConditionalGeneration(config).eval(), path)
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints)
    LlavaNextProcessor(image_processor=image_processor, tokenizer=_generative_tokenizer(), patch_size=patch, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                       image_token="<image>", num_additional_image_tokens=1).save_pretrained(path)
    return path


def _idefics3_tokenizer():  # noqa: ANN202
    tok = _generative_tokenizer()
    tags = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [f"<row_{r}_col_{c}>" for r in range(1, 3) for c in range(1, 3)]
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *tags]})
    return tok


def save_tiny_idefics3(path: Path, *, tile: int = 32, patch: int = 8, seed: int = 0) -> Path:
    """Idefics3ForConditionalGeneration (the SmolVLM architecture): 32 px tiles of 4x4 patches, pixel shuffle 2 -> 4 tokens a tile, Llama decoder."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    from tests.tiny_llava import CHAT_TEMPLATE, IMAGE_TOKEN_ID

    tokenizer = _idefics3_tokenizer()
    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config={"model_type": "idefics3_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": tile, "patch_size": patch},
        text_config=_text_config("llama", len(tokenizer)),
        image_token_id=IMAGE_TOKEN_ID, scale_factor=2,
    )
    _sharpen_and_save(Idefics3ForConditionalGeneration(config).eval(), path)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True)
    Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=(tile // patch) ** 2 // 4, chat_template=CHAT_TEMPLATE).save_pretrained(path)
    return path


def save_tiny_paligemma(path: Path, *, image_size: int = 16, patch: int = 8, seed: int = 0) -> Path:
    """PaliGemmaForConditionalGeneration: SigLIP tower (2x2 patches), linear projector, Gemma decoder (prefix-LM), tied lm_head."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil

    from tests.tiny_llava import IMAGE_TOKEN_ID

    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // patch) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=_generative_tokenizer())  # adds PaliGemma's <loc>/<seg> tokens
    torch.manual_seed(seed)
    text = _text_config("gemma", len(processor.tokenizer), head_dim=16)
    text["tie_word_embeddings"] = True
    config = PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": image_size, "patch_size": patch, "projection_dim": 64},
        text_config=text, image_token_id=IMAGE_TOKEN_ID, projection_dim=64,
    )
    model = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():  # tied lm_head: sharpen through the embedding table
        model.model.language_model.embed_tokens.weight.mul_(4.0)
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_qwen2_vl(path: Path, *, side: int = 32, patch: int = 8, seed: int = 0) -> Path:
    """Qwen2VLForConditionalGeneration: 2-block vision tower (8 px patches, 2x2 merge), Qwen2 decoder with M-RoPE sections [4, 2, 2].

    The processor limits (min 16x16, max 32x32 pixels) make the adapter's fixed resolution 32x32 = 4x4 patches -> 2x2 tokens.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tests.tiny_llava import CHAT_TEMPLATE

    tokenizer = _generative_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]})
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 64, "mlp_ratio": 2, "patch_size": patch, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        text_config=_text_config("qwen2_vl_text", len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}),
        image_token_id=image_token_id, vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"), vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    _sharpen_and_save(Qwen2VLForConditionalGeneration(config).eval(), path)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=side * side, patch_size=patch, merge_size=2, temporal_patch_size=2)
    template = CHAT_TEMPLATE.replace("<image> ", "<|vision_start|><|image_pad|><|vision_end|> ")
    _save_parts(path, image_processor, "Qwen2VLProcessor", {"image_token": "<|image_pad|>"}, template, tokenizer)
    return path


def save_tiny_qwen2_5_vl(path: Path, *, side: int = 64, patch: int = 8, seed: int = 0) -> Path:
    """Qwen2_5_VLForConditionalGeneration: 8x8 patches at 64 px, windows of 2x2 merged tokens (block 0 windowed, block 1 full), M-RoPE decoder."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tests.tiny_llava import CHAT_TEMPLATE

    tokenizer = _generative_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]})
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "out_hidden_size": 64, "intermediate_size": 64, "num_heads": 2, "patch_size": patch, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "in_channels": 3, "window_size": 4 * patch, "fullatt_block_indexes": [1]},
        text_config=_text_config("qwen2_5_vl_text", len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"), vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    _sharpen_and_save(Qwen2_5_VLForConditionalGeneration(config).eval(), path)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=side * side, patch_size=patch, merge_size=2, temporal_patch_size=2)
    template = CHAT_TEMPLATE.replace("<image> ", "<|vision_start|><|image_pad|><|vision_end|> ")
    _save_parts(path, image_processor, "Qwen2_5_VLProcessor", {"image_token": "<|image_pad|>"}, template, tokenizer)
    return path
