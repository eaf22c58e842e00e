"""Eval sets come from the eval split and carry what the metrics need."""

from edgecompile.data.eval_sets import vqa_eval_set, zero_shot_eval_set
from edgecompile.world import CLASS_NAMES, split_of_hash
from edgecompile.world.generator import draw_spec


def test_zero_shot_eval_set():
    es = zero_shot_eval_set(50)
    assert len(es.samples) == 50 and es.class_names == list(CLASS_NAMES)
    assert es.prompts[0] == f"a photo of a {CLASS_NAMES[0]}"
    assert all(s.image is not None and s.label in CLASS_NAMES for s in es.samples)
    assert max(es.label_indices()) < len(CLASS_NAMES)
    assert split_of_hash(draw_spec("eval", 0)[1]) == "eval"


def test_vqa_eval_set_covers_question_kinds():
    samples = vqa_eval_set(40)
    assert len(samples) == 40
    assert len({s.question for s in samples}) == 4
    assert all(s.answer and s.image is not None for s in samples)
