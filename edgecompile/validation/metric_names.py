"""Every metric name validation can produce, as patterns per model family.

A gate names a metric by its dotted key in report.json. A typo used to surface only as "metric
could not be computed" — or not at all, when the gate was scoped to the other family and silently
dropped. Recipes are checked against this catalogue at load time, whatever the family filter.
Keep it in step with what the adapters, validate and the backends' structural checks write.
"""

from __future__ import annotations

import re

_STAT = r"(cosine_mean|cosine_min|max_abs_error|mean_abs_error|max_rel_error)"
_COMPONENT = r"[A-Za-z0-9_]+"

COMMON = (
    r"accuracy(\.reference|\.drop|\.chance)?",
    r"accuracy\.top5(\.reference|\.drop)?",  # user classification sets with more than five classes
    r"size\.[A-Za-z0-9_]+",
    r"latency\.p90_ms",
    rf"latency\.(reference\.)?{_COMPONENT}\.(p50_ms|p90_ms)",
    rf"latency\.{_COMPONENT}\.speedup_vs_reference",
    r"memory\.peak_mb",
    r"layers\.(max_added_error|top\d+)",
    r"compare\.[^\s]+",
    r"(coreml|ort_coreml_ep|qnn|tensorrt|executorch)\.[^\s]+",  # backends' structural / build checks
)

FAMILIES = {
    "dual_encoder": (
        rf"drift\.(vision_encoder|text_encoder)\.[A-Za-z0-9_]+\.{_STAT}",
        r"retrieval\.(image_to_text|text_to_image)\.r(1|5|10)(\.reference|\.drop)?",  # user retrieval sets
    ),
    "generative": (
        rf"drift\.decoder\.first_token_logits\.{_STAT}",
        r"caption\.(token_f1|rouge_l)(\.reference|\.drop)?",  # user captioning sets (rouge_l: with rouge-score installed)
        r"generation\.(ttft_ms|decode_tokens_per_s|token_agreement|sequence_match|first_token_agreement|agreeing_prefix_mean)(\.reference|\.drop)?",
        r"accuracy\.retention",  # token_pruning: accuracy relative to the float reference
        r"token_pruning\.(kept_visual_fraction|prefill_latency_ratio|prefill_ms|unpruned_prefill_ms|kv_cache_ratio|kv_cache_bytes|flops_ratio)",
    ),
}


def known_metric(metric: str, family: str | None) -> bool:
    """Whether ``metric`` is a name validation can produce for ``family`` (None: for any family)."""
    patterns = COMMON + (FAMILIES[family] if family is not None else tuple(p for ps in FAMILIES.values() for p in ps))
    return any(re.fullmatch(p, metric) for p in patterns)


def examples(family: str | None) -> str:
    names = ["accuracy.drop", "size.compression_ratio", "latency.p90_ms", "memory.peak_mb"]
    if family in (None, "dual_encoder"):
        names.append("drift.vision_encoder.image_embeds.cosine_mean")
    if family in (None, "generative"):
        names += ["generation.token_agreement", "drift.decoder.first_token_logits.cosine_mean"]
    return ", ".join(names)
