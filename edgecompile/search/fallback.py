"""Automatic precision fallback: raise the worst offenders one step at a time until every gate passes.

What users do by hand after a failed accuracy gate (read ``validate/layers.json``, add a rule
keeping the worst layer out of INT4/INT8, rebuild), done as a search against the device's own
gates:

1. build and validate the recipe as written (step 0);
2. while the verdict is ``fail`` because of a gate that precision can fix (accuracy, drift,
   comparison; not latency, memory or size budgets), rank the raisable layers by the error each
   *adds* (the isolated per-layer attribution) per byte (or per estimated millisecond) it would
   cost (search/candidates.py), raise the best ``per_step`` of them one step
   (int4 -> int8 -> fp16 -> fp32) with recipe rules on their module paths, re-run the pipeline
   (the stage runner redoes only the stages whose inputs changed: export is never redone) and
   re-validate;
3. stop at the first plan that passes every gate (PASSED), when the step limit is reached or
   nothing is left to raise (FAILED, with the best plan found), or when the verdict waits for the
   device (PENDING).

The build directory ends holding the final plan's artifact (the passing one, else the best one);
``<build>/fallback/`` holds ``fallback.json`` (every step: plan change and its reason, verdict,
accuracy, size, latency), ``rules.yaml`` (the final plan as recipe rules on module paths, to paste
into the recipe's ``rules:``), ``steps.md`` (the table), ``path.svg`` (accuracy/drift vs size per
step) and one snapshot folder per step (report, layer attribution, effective plan). The build's
``report.json`` gains a ``fallback`` entry with the same table.

Entry points for the CLI (``edgecompile build --fallback`` or ``fallback: {enabled: true}`` in the
recipe)::

    result = run_with_fallback(recipe_path, model, out)   # settings default to recipe.fallback
    result = fallback_search(ctx, on_step=print)          # or on a context the command already holds
    sys.exit(result.exit_code)                            # 0 PASSED, 1 FAILED, 6 PENDING
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
import yaml

from edgecompile.builddir.atomic import write_json, write_text
from edgecompile.config.recipe import Fallback
from edgecompile.errors import EdgecompileError, ExitCode
from edgecompile.plan.rules import PrecisionRule, RuleMatch
from edgecompile.search.candidates import Candidate, members, rank
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import run_until

FALLBACK_DIR = "fallback"
LAYERS = ("validate", "layers.json")
# Gates no precision raise can fix: raising costs bytes and time, it never buys them.
_BUDGET_PREFIXES = ("latency.", "memory.", "size.", "generation.ttft", "generation.decode")


@dataclass
class FallbackStep:
    """One plan tried: what changed from the previous one, why, and what it measured."""

    step: int
    change: list[dict[str, Any]]
    reason: str
    verdict: str
    gates_passed: int
    gates_total: int
    failed_gates: list[str]
    accuracy: float | None
    accuracy_drop: float | None
    min_cosine: float | None
    size_mb: float | None
    latency_ms: float | None
    ran: list[str]
    wall_s: float

    def row(self) -> list[str]:
        change = "; ".join(f"{c['module']} {c['from']}->{c['to']}" for c in self.change) or "(recipe as written)"
        return [str(self.step), change, self.verdict, f"{self.gates_passed}/{self.gates_total}", _fmt(self.accuracy), _fmt(self.accuracy_drop), _fmt(self.min_cosine, 5), _fmt(self.size_mb, 3), _fmt(self.latency_ms, 2)]


@dataclass
class FallbackResult:
    """The search's outcome: PASSED, FAILED or PENDING, every step, and the final plan as rules."""

    status: str
    reason: str
    build_dir: Path
    steps: list[FallbackStep]
    final_step: int
    rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"PASSED": ExitCode.PASSED, "PENDING": ExitCode.PENDING}.get(self.status, ExitCode.GATE_FAILED)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "final_step": self.final_step,
            "steps": [asdict(s) for s in self.steps],
            "rules": self.rules,
            "rules_file": str(self.build_dir / FALLBACK_DIR / "rules.yaml"),
        }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _accuracy(metrics: dict[str, Any]) -> tuple[float | None, float | None]:
    for key in ("accuracy", "vqa.accuracy", "answer_accuracy"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key]), metrics.get(f"{key}.drop")
    return None, None


def _min_cosine(metrics: dict[str, Any]) -> float | None:
    values = [v for k, v in metrics.items() if k.startswith("drift.") and k.endswith(".cosine_mean") and isinstance(v, (int, float))]
    return min(values) if values else None


def _step(index: int, change: list[dict[str, Any]], reason: str, report: dict[str, Any], ran: list[str], wall: float) -> FallbackStep:
    gates = report["gates"]
    metrics = report["metrics"]
    accuracy, drop = _accuracy(metrics)
    return FallbackStep(
        index,
        change,
        reason,
        report["verdict"],
        sum(g["status"] == "passed" for g in gates),
        len(gates),
        [g["name"] for g in gates if g["status"] == "failed"],
        accuracy,
        drop,
        _min_cosine(metrics),
        metrics.get("size.artifact_mb"),
        metrics.get("latency.p90_ms"),
        ran,
        round(wall, 2),
    )


def _fixable(report: dict[str, Any]) -> list[str]:
    """Failed gates that raising precision can fix (not budgets)."""
    return [g["name"] for g in report["gates"] if g["status"] == "failed" and not g["metric"].startswith(_BUDGET_PREFIXES)]


def _components(report: dict[str, Any], fixable: list[str], known: set[str]) -> set[str]:
    """Components the failing gates point at (``drift.<component>.…``); every one when a gate is global (accuracy)."""
    named = set()
    for g in report["gates"]:
        if g["name"] not in fixable:
            continue
        parts = g["metric"].split(".")
        hit = [c for c in known if c in parts]
        if not hit:
            return known
        named.update(hit)
    return named


def _goodness(step: FallbackStep) -> tuple:
    """Best plan found: most gates passed, then accuracy (or drift), then the smaller artifact."""
    quality = step.accuracy if step.accuracy is not None else (step.min_cosine or 0.0)
    return (step.gates_passed, quality, -(step.size_mb or 0.0), -step.step)


def _weight_sizes(export_files: dict[str, Path]) -> dict[tuple[str, str], int]:
    """Element count of every initializer, read without loading external weight data."""
    sizes: dict[tuple[str, str], int] = {}
    for component, path in export_files.items():
        model = onnx.load(str(path), load_external_data=False)
        for t in model.graph.initializer:
            n = 1
            for d in t.dims:
                n *= d
            sizes[(component, t.name)] = n
    return sizes


def _rule(component: str, module: str, precision: str, why: str) -> PrecisionRule:
    extra = {"granularity": "per_block"} if precision == "int4" else {}
    return PrecisionRule(match=RuleMatch(component=component, name=module), precision=precision, why=why, **extra)


def _rules_yaml(rules: list[PrecisionRule], status: str, recipe_name: str) -> str:
    docs = [r.model_dump(mode="json", exclude_defaults=True) for r in rules]
    for d, r in zip(docs, rules, strict=True):
        d["precision"] = r.precision  # always explicit (None means float)
    head = (
        f"# Precision fallback for recipe '{recipe_name}': {status}.\n"
        "# Paste these entries at the top of the recipe's 'rules:' (first match wins); they match module paths.\n"
    )
    return head + yaml.safe_dump({"rules": docs}, sort_keys=False)


def _svg(steps: list[FallbackStep]) -> str:
    """A small hand-drawn plot (no plotting dependency): quality vs artifact size, one point per step."""
    pts = [(s.size_mb or 0.0, s.accuracy if s.accuracy is not None else (s.min_cosine or 0.0), s) for s in steps]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1e-9
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-9
    w, h, m = 480, 300, 50

    def xy(x: float, y: float) -> tuple[float, float]:
        return m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

    label = "accuracy" if steps[0].accuracy is not None else "min drift cosine"
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y) for x, y, _ in pts))
    dots = "".join(
        f'<circle cx="{xy(x, y)[0]:.1f}" cy="{xy(x, y)[1]:.1f}" r="4" fill="{"#2a2" if s.verdict == "pass" else "#c33"}"/>'
        f'<text x="{xy(x, y)[0] + 6:.1f}" y="{xy(x, y)[1] - 6:.1f}" font-size="11">{s.step}</text>'
        for x, y, s in pts
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
        f'<rect width="{w}" height="{h}" fill="white"/>'
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>'
        f'<text x="{w / 2}" y="{h - 12}" font-size="12" text-anchor="middle">artifact size (MB): {x0:.3f} .. {x1:.3f}</text>'
        f'<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})" text-anchor="middle">{label}: {y0:.4f} .. {y1:.4f}</text>'
        f'<polyline points="{path}" fill="none" stroke="#36c"/>{dots}'
        '<text x="50" y="20" font-size="13">precision fallback path (green: all gates pass; label: step)</text></svg>'
    )


def steps_table(steps: list[FallbackStep]) -> str:
    """The steps as a Markdown table (what the report shows)."""
    head = ["Step", "Plan change", "Verdict", "Gates", "Accuracy", "Acc. drop", "Min cosine", "Size (MB)", "Latency p90 (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(s.row()) + " |" for s in steps]
    return "\n".join(lines) + "\n"


def publish_report(ctx: BuildContext) -> dict[str, Any]:
    """Copy validate/report.json to the build's top, as 'build' does (stages.validate's own helper
    cannot be imported here: only the pipeline, the CLI, the sweep and the API may import a stage)."""
    report = json.loads(ctx.path("validate", "report.json").read_text())
    write_json(ctx.path("report.json"), report)
    return report


def _snapshot(ctx: BuildContext, step: int) -> None:
    dest = ctx.path(FALLBACK_DIR, f"step-{step:02d}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for parts in (("validate", "report.json"), LAYERS, ("build", "plan.effective.json")):
        src = ctx.path(*parts)
        if src.is_file():
            shutil.copyfile(src, dest / src.name)


def _with_rules(ctx: BuildContext, base: tuple[PrecisionRule, ...], raised: dict[tuple[str, str], PrecisionRule]) -> BuildContext:
    """The same build bound to the recipe with the fallback's rules first (first match wins)."""
    keys = {(r.match.component, r.match.name) for r in raised.values()}
    kept = tuple(r for r in base if (r.match.component, r.match.name) not in keys or r.match.role or r.match.op_type)
    recipe = ctx.recipe.model_copy(update={"rules": (*raised.values(), *kept)})
    return replace(ctx, resolved=ctx.resolved.model_copy(update={"recipe": recipe}))


def run_with_fallback(
    recipe: Path,
    model: str | None = None,
    out: Path | None = None,
    *,
    settings: Fallback | None = None,
    on_step: Callable[[FallbackStep], None] | None = None,
    reuse_from: tuple[Path, ...] = (),
) -> FallbackResult:
    """Build ``recipe`` (for ``model``, into ``out``) and raise precision until every gate passes.

    ``settings`` default to the recipe's ``fallback:`` section (``edgecompile build --fallback``
    passes them with ``enabled=True``; ``enabled`` itself is not consulted here). ``on_step`` is
    called after every validated plan (progress); ``reuse_from`` names build directories whose
    matching stages step 0 may copy (as ``build --reuse`` and sweeps do). The result's ``exit_code`` is the build's: 0
    PASSED, 1 FAILED, 6 PENDING; stage failures raise as in a plain build.
    """
    ctx = BuildContext.create(Path(recipe), model, out)
    try:
        return fallback_search(ctx, settings, on_step=on_step, reuse_from=reuse_from)
    finally:
        ctx.close()


def fallback_search(
    ctx: BuildContext,
    settings: Fallback | None = None,
    *,
    on_step: Callable[[FallbackStep], None] | None = None,
    reuse_from: tuple[Path, ...] = (),
) -> FallbackResult:
    """The search on a bound build context (what ``edgecompile build`` holds after ``make_context``).

    Same as :func:`run_with_fallback`, for a caller that already created or opened the context
    (``--build DIR`` included); the caller keeps the context's lock and closes it.
    """
    settings = settings or ctx.recipe.fallback
    base_rules = tuple(ctx.recipe.rules)
    raised: dict[tuple[str, str], PrecisionRule] = {}
    steps: list[FallbackStep] = []
    history: dict[int, dict[tuple[str, str], PrecisionRule]] = {}
    shutil.rmtree(ctx.path(FALLBACK_DIR), ignore_errors=True)

    def build(current: BuildContext, index: int, change: list[dict[str, Any]], reason: str) -> tuple[dict[str, Any], list]:
        start = time.perf_counter()
        results = run_until(current, "validate", reuse_from=list(reuse_from))
        report = publish_report(current)
        step = _step(index, change, reason, report, [r.stage for r in results if not r.skipped], time.perf_counter() - start)
        steps.append(step)
        history[index] = dict(raised)
        _snapshot(current, index)
        if on_step is not None:
            on_step(step)
        return report, results

    current = ctx
    report, results = build(current, 0, [], "the recipe as written")
    status, why, broken = "", "", False
    while True:
        if report["verdict"] == "pass":
            status, why = "PASSED", f"every gate passes after {len(steps) - 1} step(s)"
            break
        if report["verdict"] == "pending":
            status, why = "PENDING", "no gate fails here, but some can only be measured on the device"
            break
        fixable = _fixable(report)
        if not fixable:
            failed = ", ".join(g["name"] for g in report["gates"] if g["status"] == "failed")
            status, why = "FAILED", f"the failing gate(s) ({failed}) are budgets that raising precision cannot fix"
            break
        if len(steps) - 1 >= settings.max_steps:
            status, why = "FAILED", f"step limit reached (max_steps: {settings.max_steps}) with {', '.join(fixable)} still failing"
            break
        layers_file = current.path(*LAYERS)
        if not layers_file.is_file():
            status, why = "FAILED", "no per-layer attribution to steer by (comparison.layer_attribution is off, or the artifact is not ONNX)"
            break
        by_stage = {r.stage: r for r in results}
        plan_entries = json.loads(by_stage["build"].output.effective_plan_path.read_text())["entries"]
        layers = json.loads(layers_file.read_text())["layers"]
        pool = members(layers, plan_entries, _weight_sizes(by_stage["export"].output.files))
        wanted = _components(report, fixable, {m.component for m in pool})  # a failing image-drift gate is not fixed in the text tower
        ranked: list[Candidate] = rank([m for m in pool if m.component in wanted], objective=settings.objective, granularity=settings.granularity)
        if not ranked:
            status, why = "FAILED", f"nothing left to raise: every attributed layer is at {'fp32'} or unattributed, and {', '.join(fixable)} still fail(s)"
            break
        chosen = ranked[: settings.per_step]
        change = []
        index = len(steps)
        for cand in chosen:
            for m in cand.members:
                why_rule = f"precision fallback step {index}: adds {m.added:.4f} relative error at {m.precision} ({settings.objective.replace('_', ' ')} score {cand.score:.3g})"
                raised[(m.component, m.module)] = _rule(m.component, m.module, m.to, why_rule)
                change.append({"component": m.component, "module": m.module, "node": m.node, "from": m.precision, "to": m.to, "added": m.added, "score": cand.score})
        reason = f"{', '.join(fixable)} failing; worst offender by {settings.objective}: {chosen[0].key} (adds {chosen[0].gain:.4f})"
        current = _with_rules(ctx, base_rules, raised)
        try:
            report, results = build(current, index, change, reason)
        except EdgecompileError as exc:  # this plan cannot be built (a backend refused it): keep the best so far
            status, why = "FAILED", f"step {index} ({', '.join(c['module'] + ' -> ' + c['to'] for c in change)}) could not be built: {exc}"
            broken = True
            break

    best = steps[-1] if status == "PASSED" else max(steps, key=_goodness)
    if best.step != steps[-1].step or broken:  # leave the build directory holding the best plan, not the last one tried
        raised = history[best.step]
        current = _with_rules(ctx, base_rules, raised)
        run_until(current, "validate")
        report = publish_report(current)
    rules = list(raised.values())
    result = FallbackResult(status, why, ctx.build_dir, steps, best.step, [r.model_dump(mode="json") for r in rules])
    folder = ctx.path(FALLBACK_DIR)
    folder.mkdir(exist_ok=True)
    write_text(folder / "rules.yaml", _rules_yaml(rules, status, ctx.recipe.name))
    write_text(folder / "steps.md", steps_table(steps))
    write_text(folder / "path.svg", _svg(steps))
    write_json(folder / "fallback.json", result.to_json())
    # The build's report data: the top-level report.json (a copy of validate's) carries the path.
    top = json.loads(ctx.path("report.json").read_text())
    top["fallback"] = {**result.to_json(), "table": steps_table(steps), "plot": str(folder / "path.svg")}
    write_json(ctx.path("report.json"), top)
    # What the build directory now records as its recipe: the plan that produced its artifact.
    write_json(ctx.path("recipe.resolved.json"), current.resolved.model_dump(mode="json"))
    return result
