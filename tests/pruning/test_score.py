"""Composite visual-token score (numpy reference): metrics on hand-built inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompile.pruning.allocation import allocate_keep_schedule
from edgecompile.pruning.score import (
    DEFAULT_WEIGHTS,
    METRICS,
    composite_scores,
    fake_quantize_per_token,
    kept_positions,
    robust_normalize,
    select_tokens,
    token_metrics,
)

# Sequence: [system, v0, v1, v2, text, text]; two cached keys precede the current tokens.
VISUAL = np.array([False, True, True, True, False, False])
HEADS, S, PAST = 2, 6, 2
KEY = {name: PAST + pos for name, pos in (("sys", 0), ("v0", 1), ("v1", 2), ("v2", 3))}


def _attn() -> np.ndarray:
    """Text queries look only at v1, visual queries at v0, the system query at v2."""
    attn = np.full((HEADS, S, PAST + S), 0.0)
    attn[:, 0, KEY["v2"]] = 1.0  # before the first visual token: not a text query
    attn[:, 1:4, KEY["v0"]] = 1.0
    attn[:, 4:, KEY["v1"]] = 1.0
    return attn


def _hidden() -> np.ndarray:
    hidden = np.ones((S, 4))
    hidden[3] = 10.0  # v2 has the largest magnitude
    return hidden


def test_metrics_on_known_example():
    m = token_metrics(_attn(), _hidden(), VISUAL)
    np.testing.assert_allclose(m["inter_modal"], [0.0, 1.0, 0.0])  # the system query does not count
    np.testing.assert_allclose(m["intra_visual"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["magnitude"], [2.0, 2.0, 20.0])
    np.testing.assert_allclose(m["residual"], [0.0, 0.0, 0.0])  # constant rows quantize exactly


@pytest.mark.parametrize(("metric", "winner"), [("inter_modal", 1), ("intra_visual", 0), ("magnitude", 2)])
def test_single_metric_weight_picks_its_winner(metric, winner):
    weights = dict.fromkeys(METRICS, 0.0) | {metric: 1.0}
    scores = composite_scores(_attn(), _hidden(), VISUAL, weights)
    assert int(np.argmax(scores)) == winner
    assert select_tokens(scores, 1).tolist() == [winner]


def test_composite_is_weighted_sum_of_normalized_metrics():
    rng = np.random.default_rng(0)
    attn = rng.dirichlet(np.ones(PAST + S), size=(HEADS, S))
    hidden = rng.normal(size=(S, 8))
    m = token_metrics(attn, hidden, VISUAL)
    expected = sum(DEFAULT_WEIGHTS[k] * robust_normalize(m[k]) for k in METRICS)
    np.testing.assert_allclose(composite_scores(attn, hidden, VISUAL), expected, rtol=1e-12)
    assert sum(DEFAULT_WEIGHTS.values()) == pytest.approx(1.0)


def test_text_queries_fall_back_to_all_non_visual():
    visual = np.array([False, False, True, True])
    attn = np.zeros((1, 4, 4))
    attn[0, 0, 2] = 1.0
    attn[0, 1, 3] = 0.5
    m = token_metrics(attn, np.ones((4, 2)), visual)
    np.testing.assert_allclose(m["inter_modal"], [0.5, 0.25])


def test_fake_quantize_rounds_half_to_even():
    x = np.array([[7.0, 2.5, -3.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    q = fake_quantize_per_token(x, bits=4)  # scale = 7 / 7 = 1
    np.testing.assert_array_equal(q, [[7.0, 2.0, -4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    hidden = np.zeros((2, 4))
    hidden[1] = x[0]
    m = token_metrics(np.full((1, 2, 2), 0.5), hidden, np.array([False, True]))
    assert m["residual"][0] == pytest.approx(np.sqrt(0.75))


def test_robust_normalize_linear_percentiles():
    out = robust_normalize(np.arange(11.0))  # p10 = 1, p90 = 9 with linear interpolation
    np.testing.assert_allclose(out, np.clip(np.arange(11.0) - 1, 0, 8) / 8)
    np.testing.assert_allclose(robust_normalize(np.array([0.0, 10.0])), [0.0, 1.0])
    np.testing.assert_array_equal(robust_normalize(np.full(5, 3.0)), np.zeros(5))


def test_select_tokens_tie_break_and_order():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert select_tokens(scores, 3).tolist() == [0, 1, 3]  # 0 beats 2 on the tie
    assert select_tokens(scores, 1).tolist() == [1]
    assert select_tokens(scores, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="^k:"):
        select_tokens(scores, 6)
    with pytest.raises(ValueError, match="^scores:"):
        select_tokens(np.array([np.nan, 1.0]), 1)


def test_kept_positions_ascending():
    mask = np.array([False, True, True, False, True, False])
    assert kept_positions(mask, np.array([2, 0])).tolist() == [0, 1, 3, 4, 5]
    assert kept_positions(mask, np.array([], dtype=int)).tolist() == [0, 3, 5]
    with pytest.raises(ValueError, match="^kept_visual_idx:"):
        kept_positions(mask, np.array([3]))


def test_keep_ratio_one_keeps_every_token():
    sched = allocate_keep_schedule([0.1, 0.2], [2, 3], final_keep=1.0, floor=0.1, temperature=1.0)
    n_visual = int(VISUAL.sum())
    scores = composite_scores(_attn(), _hidden(), VISUAL)
    for k in sched.budgets(n_visual):
        assert kept_positions(VISUAL, select_tokens(scores, k)).tolist() == list(range(S))


@pytest.mark.parametrize(
    ("weights", "match"),
    [({"inter_modal": 1.0}, "missing"), (DEFAULT_WEIGHTS | {"text": 0.1}, "unknown"), (DEFAULT_WEIGHTS | {"residual": "x"}, "weights.residual")],
)
def test_weights_refused(weights, match):
    with pytest.raises(ValueError, match=match):
        composite_scores(_attn(), _hidden(), VISUAL, weights)


def test_shape_refusals():
    with pytest.raises(ValueError, match="^attn:"):
        composite_scores(np.zeros((2, 6, 4)), _hidden(), VISUAL)
    with pytest.raises(ValueError, match="^hidden:"):
        composite_scores(_attn(), np.ones((5, 4)), VISUAL)
    with pytest.raises(ValueError, match="^visual:"):
        composite_scores(_attn(), _hidden(), VISUAL[:5])
