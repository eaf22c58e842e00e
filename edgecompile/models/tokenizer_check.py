"""Refuse a tokenizer that cannot tell words apart, before any number is measured with it.

When a checkpoint's tokenizer files are missing, transformers can still build a tokenizer from
the config: one whose vocabulary holds only the special tokens, mapping every word to one id.
Reference and artifact are then equally broken, every relative gate passes, and accuracy reads
like chance. This check samples the tokenizer's own vocabulary, encodes each word on its own, and
asks that words round-trip to distinct ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompile.errors import InputError

_SAMPLE = 64
_MIN_WORDS = 4
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "special_tokens_map.json")


def _words(tokenizer: Any) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = []
    for token, _ in vocab:
        word = token.replace("</w>", "").lstrip("Ġ▁")
        if token in special or not word.isalpha() or len(word) < 2:
            continue
        words.append(word)
        if len(words) == _SAMPLE:
            break
    return words


def check_tokenizer(processor: Any, model_dir: Path) -> None:
    """InputError (exit 3) when the tokenizer maps distinct words of its own vocabulary to the same ids."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if not hasattr(tokenizer, "get_vocab"):
        return  # not a text tokenizer (nothing to check)
    present = [f for f in _TOKENIZER_FILES if (model_dir / f).is_file()]
    files = f"tokenizer files in {model_dir}: {', '.join(present) if present else 'none'}"
    words = _words(tokenizer)
    if len(words) < _MIN_WORDS:
        raise InputError(f"{model_dir}: the tokenizer's vocabulary holds {len(words)} word(s) besides special tokens ({files}); a placeholder tokenizer maps every word to one id — add the checkpoint's tokenizer files")
    unk = getattr(tokenizer, "unk_token_id", None)
    encoded = [tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
    distinct = len(set(encoded))
    unknown = sum(1 for e in encoded if not e or (unk is not None and all(i == unk for i in e)))
    if distinct < 0.9 * len(words) or unknown > 0.1 * len(words):
        raise InputError(f"{model_dir}: the tokenizer maps {len(words)} distinct words of its own vocabulary to {distinct} distinct id sequence(s) ({unknown} unknown) ({files}); it cannot tell words apart")
