"""Load a VLM's preprocessing as separate parts: tokenizer, PIL-backed image processor, chat template.

In transformers 5, ``AutoProcessor`` for LLaVA-OneVision, Idefics3/SmolVLM and Qwen2-VL always builds
the *video* processor too, which imports torchvision (and SmolVLM's ``num2words``); those processors
cannot even be constructed without it. Compiling an image+text model needs none of that, so these
adapters load the three parts on their own — the tokenizer (``AutoTokenizer``), the family's
PIL-backed image processor class (no torchvision), and the chat template from wherever the
checkpoint keeps it — and do the image-token expansion themselves. A part that cannot load is an
:class:`InputError` naming the part, the file and the reason (ImportError included).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompile.errors import InputError
from edgecompile.models.tokenizer_check import check_tokenizer

_LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, ImportError, AttributeError)


@dataclass
class ProcessorParts:
    """What the generative adapters read from a processor: the tokenizer, the image processor, the template."""

    tokenizer: Any
    image_processor: Any
    chat_template: str | None
    image_token: str
    fields: dict[str, Any] = field(default_factory=dict)  # processor_config.json (num_image_tokens, image_seq_len, ...)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, add_generation_prompt=add_generation_prompt, tokenize=False)

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the processor config: {exc}") from None
    return data if isinstance(data, dict) else {}


def _chat_template(path: Path, fields: dict[str, Any], tokenizer: Any) -> str | None:
    """The template from chat_template.jinja, chat_template.json, processor_config.json or the tokenizer, in that order."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    template = _read_json(path / "chat_template.json").get("chat_template") or fields.get("chat_template")
    return template if isinstance(template, str) else getattr(tokenizer, "chat_template", None)


def load_parts(path: Path, image_processor_class: str, default_image_token: str, trust_remote_code: bool = False) -> ProcessorParts:
    """Tokenizer + ``transformers.<image_processor_class>`` (a PIL-backed class) + chat template of the checkpoint in ``path``."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as exc:
        raise InputError(f"{path}: cannot load the tokenizer (tokenizer.json / tokenizer_config.json): {type(exc).__name__}: {exc}") from None
    try:
        cls = getattr(importlib.import_module("transformers"), image_processor_class)
        image_processor = cls.from_pretrained(path)
    except _LOAD_ERRORS as exc:
        raise InputError(f"{path}: cannot load the image processor ({image_processor_class} from preprocessor_config.json / processor_config.json): {type(exc).__name__}: {exc}") from None
    fields = _read_json(path / "processor_config.json")
    token = fields.get("image_token") or getattr(tokenizer, "image_token", None) or default_image_token
    parts = ProcessorParts(tokenizer, image_processor, _chat_template(path, fields, tokenizer), str(token), fields)
    check_tokenizer(parts, path)
    return parts
