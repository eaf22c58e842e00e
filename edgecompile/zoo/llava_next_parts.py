"""Architecture and processor of shapes-llava-next, shared by training, evaluation and tests.

Why a separate module: the anyres grid, the image-token count and the prompt format must be
identical when training splices precomputed features by hand and when users go through
`LlavaNextProcessor` + `LlavaNextForConditionalGeneration`.

The layout is fixed by construction: `image_grid_pinpoints` is the single pinpoint
[GRID_SIZE, GRID_SIZE] (a 2x2 grid of 96-px tiles), so every image, whatever its size, is
resized to 192x192 and cut into four tiles plus one 96-px "base" image. With 6x6 patches per
tile the packed features are, in order: 36 base tokens, then the 12x12 tile map row by row,
each row followed by one `image_newline` embedding (12 * 13 = 156): 192 image tokens.
"""

from __future__ import annotations

from transformers import (
    CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextImageProcessorPil, LlavaNextProcessor,
)

from edgecompile.zoo.images import CLIP_MEAN, CLIP_STD
from edgecompile.zoo.llava_parts import CHAT_TEMPLATE
from edgecompile.zoo.tokenizer import IMAGE, build_tokenizer, wrap

TILE_SIZE = 96                # the shapes-clip tower's resolution
GRID = (2, 2)                 # tiles (rows, cols)
GRID_SIZE = TILE_SIZE * GRID[0]  # images are rendered (or resized) to this before tiling
LAYERS = 8
MAX_LENGTH = 320              # 192 image tokens + four chat turns with room to spare


def image_tokens(patch_size: int) -> int:
    """Image tokens per image: base tile + tile map with one newline per row (CLS dropped)."""
    side = TILE_SIZE // patch_size
    rows, cols = GRID[0] * side, GRID[1] * side
    return side * side + rows * (cols + 1)


def build_tokenizer_fast():  # noqa: ANN201 - PreTrainedTokenizerFast
    """shapes-llava's word-level tokenizer, with a longer model_max_length for 192 image tokens."""
    return wrap(build_tokenizer(with_image_token=True, add_bos_eos=False),
                model_max_length=MAX_LENGTH, padding_side="left",
                extra={"extra_special_tokens": {"image_token": IMAGE}})


def image_processor() -> LlavaNextImageProcessorPil:
    """The PIL-backed anyres processor (no torchvision): one 2x2 pinpoint, CLIP normalisation."""
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": TILE_SIZE}, crop_size={"height": TILE_SIZE, "width": TILE_SIZE},
        image_grid_pinpoints=[[GRID_SIZE, GRID_SIZE]],
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
    )


def build_processor(patch_size: int) -> LlavaNextProcessor:
    """LlavaNextProcessor: anyres image processor, tokenizer, image-token expansion, chat template."""
    return LlavaNextProcessor(
        image_processor=image_processor(), tokenizer=build_tokenizer_fast(),
        patch_size=patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE, image_token=IMAGE,
    )


def llava_next_config(vision: CLIPVisionConfig, vocab_size: int, image_token_id: int) -> LlavaNextConfig:
    """CLIP tower + 2-layer MLP projector + an 8-layer Llama decoder (hidden 128, GQA 4/2 heads)."""
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    return LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        image_grid_pinpoints=[[GRID_SIZE, GRID_SIZE]], image_seq_length=image_tokens(vision.patch_size),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )
