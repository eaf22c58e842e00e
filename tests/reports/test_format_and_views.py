"""Numbers at meaningful precision, the build view (module paths, rules), grouping and the Pareto plot's labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompile.reports.aggregate import groups, objective
from edgecompile.reports.format import number
from edgecompile.reports.view import build_view, generation_rows, suggest_rule


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.99996, "0.99996"), (0.999963191709059, "0.999963"), (0.9865559, "0.9866"), (0.5, "0.5"), (31.22704859983969, "31.23"), (4096.0, "4096"), (125.1328125, "125.1"), (0.02012928616559222, "0.02013"), (None, "n/a"), (3, "3"), (0.0, "0"), (1.0, "1"), (13295.7, "13,296"), (2.4e-7, "2.4e-07")],
)
def test_numbers_keep_their_meaningful_digits(value: object, text: str) -> None:
    assert number(value) == text


def test_a_cosine_next_to_one_never_prints_as_one() -> None:
    for v in (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999):
        assert number(v) != "1" and float(number(v)) == pytest.approx(v, rel=1e-7)


def test_suggested_rule_names_the_module_path_and_is_a_valid_recipe_rule() -> None:
    from edgecompile.plan.rules import PrecisionRule

    row = {"component": "text_encoder", "node": "node_MatMul_126", "op_type": "MatMul", "precision": "int8", "suggestion": "{match: {component: text_encoder, name: node_MatMul_126}, precision: null}"}
    rule_text = suggest_rule(row, "text_model.encoder.layers.0.mlp.fc2", "mlp")
    assert "node_MatMul" not in rule_text and "text_model.encoder.layers.0.mlp.fc2" in rule_text
    import yaml

    rule = PrecisionRule.model_validate(yaml.safe_load(rule_text))
    assert rule.precision is None and rule.match.name == "text_model.encoder.layers.0.mlp.fc2"
    assert "role: mlp" in suggest_rule(row, "", "mlp")  # no module path: fall back to the role, never the node name


def test_build_view_joins_the_plan(built: Path) -> None:
    v = built / "validate"
    report = json.loads((v / "report.json").read_text())
    view = build_view(report, json.loads((v / "comparison.json").read_text()), json.loads((v / "layers.json").read_text())["layers"], json.loads((built / "annotate" / "plan.json").read_text()))
    assert view["verdict"] in ("passed", "failed", "pending")
    assert {c["name"] for c in view["components"]} == {"vision_encoder", "text_encoder"}
    card = next(c for c in view["components"] if c["name"] == "vision_encoder")
    assert card["precision_mix"].get("int8", 0) > 0 and card["size_mb"] < card["reference_size_mb"]
    assert card["drift"] and 0.5 < card["drift"][0]["cosine_mean"] <= 1.0
    assert view["layers"] and all(r["module"] for r in view["layers"])
    assert all(r["module"] in r["suggested_rule"] and r["node"] not in r["suggested_rule"] for r in view["layers"])


def test_generation_rows_pair_artifact_and_reference() -> None:
    rows = generation_rows({"generation.ttft_ms": 0.7, "generation.ttft_ms.reference": 5.3, "generation.decode_tokens_per_s": 13000.0, "generation.token_agreement": 0.97})
    assert [r["metric"] for r in rows] == ["generation.ttft_ms", "generation.decode_tokens_per_s", "generation.token_agreement"]
    assert rows[0]["reference"] == 5.3 and rows[1]["reference"] is None


def _row(config: str, model: str, family: str, acc: float | None, ref: float | None = 0.9, chance: float | None = 0.1) -> dict:
    return {"config": config, "label": config, "build_dir": f"/b/{config}", "model": model, "family": family, "clean_acc": acc, "reference_acc": ref, "chance": chance, "latency_ms": 10.0, "memory_mb": 100.0, "fidelity": 0.99}


def test_builds_are_grouped_by_model_and_task_never_one_axis() -> None:
    rows = [_row("x86-cpu", "/m/clip", "dual_encoder", 0.86), _row("x86-cpu", "/m/llava", "generative", 0.89), _row("w4", "/m/clip", "dual_encoder", 0.80)]
    found = groups(rows)
    assert [(g["name"], [r["config"] for r in g["rows"]]) for g in found] == [("clip", ["x86-cpu", "w4"]), ("llava", ["x86-cpu"])]
    assert all(g["objective"] == "clean_acc" for g in found)


def test_objective_says_accuracy_when_there_is_one_and_why_not_otherwise() -> None:
    assert objective([_row("a", "m", "dual_encoder", 0.8), _row("b", "m", "dual_encoder", 0.7)])[0] == "clean_acc"
    key, why = objective([_row("a", "m", "dual_encoder", 0.8), _row("b", "m", "dual_encoder", None)])
    assert key == "fidelity" and "no accuracy in b" in why and "a," not in why
    key, why = objective([_row("a", "m", "generative", 0.0, ref=0.0, chance=0.33)])
    assert key == "fidelity" and "chance" in why


def test_pareto_labels_do_not_collide() -> None:
    from edgecompile.reports import plots

    if plots.available() is not None:
        pytest.skip(plots.available())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(10.0 + 0.1 * i, 0.90 + 0.001 * (i % 3), f"config-{i}") for i in range(8)]  # eight points almost on top of each other
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    plots._place_labels(ax, pts)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 8
    overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert overlaps == 0
    plt.close(fig)
