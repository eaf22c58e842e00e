"""Metrics for user eval sets: top-k zero-shot accuracy, retrieval recall, VQA accuracy, token F1.

Pure numpy / string functions, so tests can check each against a hand-computed value and the
adapters only gather embeddings and generated text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

RECALL_KS = (1, 5, 10)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(text_embeds: np.ndarray, templates_per_class: int) -> np.ndarray:
    """One embedding per class: the mean of its unit-norm template embeddings, renormalised (CLIP's recipe).

    ``text_embeds`` is class-major: class 0's templates first, then class 1's, ...
    """
    texts = _unit(text_embeds)
    if templates_per_class < 1 or texts.shape[0] % templates_per_class:
        raise ValueError(f"{texts.shape[0]} text embeddings do not split into groups of {templates_per_class} templates")
    return _unit(texts.reshape(-1, templates_per_class, texts.shape[-1]).mean(axis=1))


def top_k_accuracy(image_embeds: np.ndarray, class_embeds: np.ndarray, labels: Sequence[int], k: int) -> float:
    """Fraction of images whose true class is among the ``k`` most similar classes (ties: lower index first)."""
    if len(labels) == 0:
        raise ValueError("no samples to score")
    scores = _unit(image_embeds) @ _unit(class_embeds).T
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))


def retrieval_recalls(image_embeds: np.ndarray, text_embeds: np.ndarray, text_image: Sequence[int], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Recall@k both ways (COCO/Flickr protocol): text ``t`` belongs to image ``text_image[t]``.

    image→text: an image counts when any of its captions is among its ``k`` most similar texts;
    text→image: a caption counts when its image is among its ``k`` most similar images.
    """
    owner = np.asarray(text_image)
    sim = _unit(image_embeds) @ _unit(text_embeds).T  # images x texts
    if sim.shape[1] != len(owner) or (len(owner) and (owner.min() < 0 or owner.max() >= sim.shape[0])):
        raise ValueError("text_image must give each text's image index")
    # Rank of the best-ranked own caption per image; rank of the own image per caption (0 = first).
    i2t_order = np.argsort(-sim, axis=1, kind="stable")
    i2t_rank = np.array([int(np.flatnonzero(owner[row] == i)[0]) for i, row in enumerate(i2t_order)])
    t2i_order = np.argsort(-sim.T, axis=1, kind="stable")
    t2i_rank = np.array([int(np.flatnonzero(row == owner[t])[0]) for t, row in enumerate(t2i_order)])
    out = {}
    for k in ks:
        out[f"retrieval.image_to_text.r{k}"] = float(np.mean(i2t_rank < k))
        out[f"retrieval.text_to_image.r{k}"] = float(np.mean(t2i_rank < k))
    return out


# --- VQA answer normalisation (after the official VQA evaluation script) -------------------------
_CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "isnt": "isn't", "shouldnt": "shouldn't", "wasnt": "wasn't",
    "werent": "weren't", "wont": "won't", "wouldnt": "wouldn't", "youre": "you're", "theyre": "they're", "whats": "what's",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:]")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")


def normalize_vqa_answer(text: str) -> str:
    """Lowercase; drop punctuation (keeping decimal points and thousands commas), articles; number words to digits."""
    text = " ".join(text.lower().replace("\n", " ").replace("\t", " ").split())
    text = _COMMA_NUMBER.sub(r"\1\3", text)
    text = _PERIOD.sub("", _PUNCT.sub(" ", text.replace("'", "")))
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def vqa_match(generated: str, answers: Sequence[str]) -> bool:
    """Exact match, after normalisation, with any answer.

    A greedy answer may run on past the expected words when the model emits no end token within the
    token budget: ``generated`` also matches when it begins with an answer's whole words.
    """
    got = normalize_vqa_answer(generated)
    for answer in answers:
        want = normalize_vqa_answer(answer)
        if got == want or (want and re.match(rf"{re.escape(want)}\b", got)):
            return True
    return False


def vqa_accuracy(generated: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Fraction of generated answers matching one of their sample's answers (:func:`vqa_match`)."""
    if len(generated) != len(answers) or not answers:
        raise ValueError(f"{len(generated)} answers generated for {len(answers)} questions")
    return sum(vqa_match(g, a) for g, a in zip(generated, answers, strict=True)) / len(answers)


# --- captioning -------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")


def caption_tokens(text: str) -> list[str]:
    """Lowercase alphanumeric words, articles dropped (SQuAD's token-F1 normalisation)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _ARTICLES]


def token_f1(generated: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of words, counts clipped); 1.0 when both are empty."""
    got, want = caption_tokens(generated), caption_tokens(reference)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> float | None:
    """Mean ROUGE-L F-measure from Google's ``rouge-score`` package; None when it is not installed."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return None
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return float(np.mean([scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, references, strict=True)]))
