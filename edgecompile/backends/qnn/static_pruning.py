"""QUOTA's prune steps between the static HTP prefill segments (seed 003 on a static-shape NPU).

The HTP graphs cannot change length inside a graph, so the pruned prefill is a chain of segment
graphs (static_decoder.py) with the prune step on the host between them: segment s returns the
residual stream after its last layer l and that layer's post-softmax attention; the host scores
the visual tokens with :func:`edgecompile.pruning.score.composite_scores` (the numpy reference the
ORT CPU graph is tested against, here executed as is), keeps the top ``k_l = ceil(rho_l * N_v)``
(:func:`select_tokens`, ties to the lower index), and gathers the kept rows, their original
position ids and the visual mask for segment s + 1, whose static length ``C - (N_ref - k_l)`` has
room for them. Host work per step is one [heads, n, n] mean and a sort over N_v values: small
beside a prefill, and the same on the device's CPU as here.

A prompt with fewer image tokens than the reference prunes to its own k (the schedule's ratios
times its own N_v) and pads; a prompt whose pruned length would exceed a segment's static length
(a longer prompt than the first chunk can hold with the drops the graphs were built for) is
refused with the lengths involved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecompile.errors import InputError

# The outputs a non-final prefill segment returns (static_decoder.py's graphs), read by the prune step.
STREAM, PROBS = "residual_stream", "attention_probs"


def first_chunk(layout: Any, visual: np.ndarray) -> int:
    """Tokens of the prompt the pruned prefill chain takes (the rest go through the decode graph).

    With image tokens: up to ``C`` (the first segment's length; the prune steps make room for the
    later ones). Without: up to the last segment's length, since nothing is dropped on the way.
    """
    total = int(visual.size)
    if visual[: layout.chunk].any():
        return min(total, layout.chunk)
    return min(total, layout.tokens(layout.prefill_kinds()[-1]))


def pruned_prefill(runner: Any, embeds: np.ndarray, positions: np.ndarray, visual: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Run the prefill segments on an empty cache: ({logits, new_key_i, new_value_i}, kept positions per step).

    ``logits`` has one row per token that reached the last segment (every text token, the kept
    visual ones), in prompt order; ``new_*_i`` holds layer i's keys/values of exactly the tokens
    that layer saw. The kept positions index the prompt (0-based), ascending.
    """
    from edgecompile.pruning.allocation import KeepSchedule
    from edgecompile.pruning.score import composite_scores, kept_positions, select_tokens

    lay = runner.layout
    n_visual = int(visual.sum())
    budgets = KeepSchedule(lay.prune_layers, lay.prune_keep, lay.image_tokens).budgets(n_visual) if n_visual else ()
    weights = dict(lay.prune_weights) or None
    hidden, pos, vis = embeds, positions, visual
    alive = np.arange(visual.size)
    result: dict[str, np.ndarray] = {}
    kept: list[np.ndarray] = []
    for s, kind in enumerate(lay.prefill_kinds()):
        count = hidden.shape[1]
        if count > lay.tokens(kind):
            after = lay.prune_layers[s - 1]
            raise InputError(f"decoder: {count} tokens reach the pruned HTP prefill segment after layer {after}, whose static length is {lay.tokens(kind)} "
                             f"(built for {lay.image_tokens} image tokens in a {lay.chunk}-token chunk); this prompt has {n_visual} image tokens and {visual.size - n_visual} others")
        out = runner.step(kind, hidden, pos, {}, 0)
        for layer in lay.layer_ids(kind):
            for kv in ("key", "value"):
                result[f"new_{kv}_{layer}"] = out[f"new_{kv}_{layer}"][:, :, :count]
        if lay.produces_logits(kind):
            result["logits"] = out["logits"][:, :count]
            break
        hidden = out[STREAM][:, :count]
        if not n_visual:
            continue
        probs = out[PROBS][0, :, :count, :count]
        scores = composite_scores(probs, hidden[0], vis, weights, lay.residual_bits)
        keep = kept_positions(vis, select_tokens(scores, budgets[s]))
        hidden, pos, vis, alive = hidden[:, keep], pos[keep], vis[keep], alive[keep]
        kept.append(alive.copy())
    return result, kept
