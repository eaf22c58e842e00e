"""Measure bundled models the way users will load them: `from_pretrained` on a directory.

Used by the training scripts to write the accuracy card and by the tests to check it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, CLIPModel

from edgecompile.data.eval_sets import zero_shot_eval_set
from edgecompile.data.evaluators import zero_shot_accuracy


@torch.no_grad()
def clip_embeddings(model_dir: Path, images: list, prompts: list[str],
                    batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Return (image_embeds, text_embeds) of a dual encoder loaded from `model_dir`."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    text = processor(text=prompts, padding="max_length", return_tensors="pt")
    text_embeds = model.get_text_features(input_ids=text["input_ids"],
                                          attention_mask=text["attention_mask"])
    chunks = []
    for i in range(0, len(images), batch):
        pix = processor(images=images[i:i + batch], return_tensors="pt")["pixel_values"]
        chunks.append(_as_tensor(model.get_image_features(pixel_values=pix)))
    return torch.cat(chunks).numpy(), _as_tensor(text_embeds).numpy()


def _as_tensor(out: object) -> torch.Tensor:
    # transformers 5 returns a ModelOutput with pooler_output; 4.x returned a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def evaluate_clip(model_dir: Path, count: int, seed: int = 0) -> float:
    """Zero-shot top-1 accuracy of the dual encoder in `model_dir` on `count` eval scenes."""
    eval_set = zero_shot_eval_set(count, seed=seed)
    images = [s.image for s in eval_set.samples]
    labels = [eval_set.class_names.index(s.label) for s in eval_set.samples]
    image_embeds, text_embeds = clip_embeddings(Path(model_dir), images, eval_set.prompts)
    return zero_shot_accuracy(image_embeds, text_embeds, labels)


@torch.no_grad()
def llava_answers(model_dir: Path, images: list, questions: list[str],
                  batch: int = 50) -> list[str]:
    """Greedy answers (up to 3 new tokens) of a generative VLM loaded from `model_dir`.

    The model class follows config.json (`llava` or `llava_next`); both bundled VLMs share the prompt.
    """
    from edgecompile.zoo.llava_parts import prompt

    model = _vlm_class(model_dir).from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    answers: list[str] = []
    for i in range(0, len(images), batch):
        enc = processor(images=images[i:i + batch],
                        text=[prompt(q) for q in questions[i:i + batch]],
                        padding=True, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=3, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        answers.extend(processor.batch_decode(new_tokens, skip_special_tokens=True))
    return [a.strip() for a in answers]


def _vlm_class(model_dir: Path) -> type:
    from transformers import AutoConfig, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    classes = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
    model_type = AutoConfig.from_pretrained(model_dir).model_type
    if model_type not in classes:
        raise ValueError(f"{model_dir / 'config.json'}: model_type {model_type!r}: expected one of {', '.join(classes)}")
    return classes[model_type]


def evaluate_llava(model_dir: Path, count: int, seed: int = 0, size: int = 96) -> float:
    """Exact-match accuracy of greedy answers on `count` eval questions rendered at `size` pixels.

    shapes-llava-next's card uses size 192, its grid's native resolution (one image = 2x2 tiles).
    """
    from edgecompile.data.eval_sets import vqa_eval_set
    from edgecompile.data.evaluators import exact_match

    samples = vqa_eval_set(count, seed=seed, size=size)
    predictions = llava_answers(Path(model_dir), [s.image for s in samples],
                                [s.question for s in samples])
    return exact_match(predictions, [s.answer for s in samples])
