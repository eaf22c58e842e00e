"""Word-level tokenizers for the bundled models, built with the `tokenizers` library.

Why word-level: the world's language is a closed vocabulary of a few dozen words, so one
token per word keeps the models tiny and the vocabulary readable. The tokenizer is saved
as `tokenizer.json` and wrapped in `PreTrainedTokenizerFast`, so `AutoTokenizer`,
`CLIPProcessor` and `LlavaProcessor` load it from a directory with no network.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from edgecompile.world.vocabulary import (
    CLASS_NAMES, COLOURS, COUNT_WORDS, PLURALS, POSITIONS, QUESTIONS, SHAPES,
)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
IMAGE = "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)  # ids 0..3; EOS is 3, not CLIP's legacy 2

# Words of the prompt templates and chat template that are not world vocabulary.
_TEMPLATE_TEXT = (
    "a photo of the an image with on in there are is what where how many shapes "
    "user assistant : ? . , answer in one word"
)


def world_words() -> list[str]:
    """Return the sorted vocabulary: world words plus template words."""
    words: set[str] = set(_TEMPLATE_TEXT.split())
    words.update(COLOURS, SHAPES, POSITIONS, COUNT_WORDS, PLURALS.values())
    for text in (*QUESTIONS.values(), *CLASS_NAMES):
        words.update(text.replace("?", " ?").split())
    return sorted(words)


def build_tokenizer(*, with_image_token: bool, add_bos_eos: bool) -> Tokenizer:
    """Build the raw `tokenizers.Tokenizer` (lowercasing, split on spaces and punctuation)."""
    specials = list(SPECIAL_TOKENS) + ([IMAGE] if with_image_token else [])
    vocab = {tok: i for i, tok in enumerate(specials + world_words())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    if add_bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}",
            special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
        )
    else:  # Llama style: BOS only; the chat template ends turns with EOS itself.
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])],
        )
    return tok


def wrap(tok: Tokenizer, *, model_max_length: int, padding_side: str = "right",
         extra: dict | None = None) -> PreTrainedTokenizerFast:
    """Wrap a raw tokenizer so transformers can save and reload it."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=model_max_length, padding_side=padding_side,
        **(extra or {}),
    )
