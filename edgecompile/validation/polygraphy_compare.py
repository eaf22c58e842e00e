"""Saved FP32 reference and per-output comparison with Polygraphy's comparator.

Validate runs the float reference once; :class:`ReferenceRecorder` wraps that run and keeps the
first few feeds and outputs of every component. They are written in Polygraphy's own formats
(inputs: ``save_json`` of a list of feed dicts; outputs: ``RunResults.save``) so that the same
comparison can be repeated on another machine (the device) with ``polygraphy run --load-inputs
--load-outputs`` and without re-running the reference. The candidate is then compared per output
with ``SimpleCompareFunc`` (max/mean/median abs and rel error) and ``CosineSimilarityCompareFunc``,
thresholds per output from the recipe's ``comparison`` section, and the ``AccuracyResults`` saved.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs
from edgecompile.validation.gates import GateResult, evaluate_gate

REFERENCE_DIR = "reference"
COMPARE_DIR = "comparison"
REFERENCE_RUNNER = "fp32-reference"
CANDIDATE_RUNNER = "candidate"
_STATS = ("max", "mean", "median")


# Bytes of feeds + outputs one component's saved reference may hold. A real-size decoder's prefill
# returns logits for every prompt position (600 tokens x 152k vocabulary: 365 MB); held through both
# evaluations, base64-encoded by save_json and loaded again beside the candidate's sessions, that one
# call was validate's largest object. Calls over the budget are left out of the reference (counted in
# ``skipped``) and the comparison runs on the ones that fit (e.g. the decode steps); the first-token
# logits are still compared by validate's drift metrics.
MAX_REFERENCE_BYTES = 128 * 2**20


@dataclass
class ReferenceRecorder:
    """Wraps a component runner and keeps the first ``max_iterations`` calls of every component that fit ``max_bytes``."""

    max_iterations: int = 8
    max_bytes: int = MAX_REFERENCE_BYTES
    feeds: dict[str, list[Feeds]] = field(default_factory=dict)
    outputs: dict[str, list[Outputs]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)

    def wrap(self, run: ComponentRunner) -> ComponentRunner:
        def recorded(component: str, feeds: Feeds) -> Outputs:
            out = run(component, feeds)
            kept = self.feeds.setdefault(component, [])
            if len(kept) < self.max_iterations and not self.names:  # nothing is recorded after release()
                size = sum(np.asarray(v).nbytes for v in (*feeds.values(), *out.values()))
                if self.held.get(component, 0) + size > self.max_bytes:
                    self.skipped[component] = self.skipped.get(component, 0) + 1
                    return out
                self.held[component] = self.held.get(component, 0) + size
                kept.append({k: np.array(v) for k, v in feeds.items()})
                self.outputs.setdefault(component, []).append({k: np.array(v) for k, v in out.items()})
            return out

        return recorded

    def output_names(self) -> dict[str, list[str]]:
        """component -> the outputs its recorded calls returned (what the comparison gates expect)."""
        return dict(self.names) if self.names else {c: list(outs[0]) for c, outs in self.outputs.items() if outs}

    def release(self) -> None:
        """Drop the recorded arrays once saved (the comparison reads them back from disk), keeping the output names."""
        self.names = self.output_names()
        self.feeds, self.outputs = {}, {}

    def save(self, directory: Path) -> dict[str, dict[str, str]]:
        """Write ``<component>.inputs.json`` and ``<component>.outputs.json`` (Polygraphy formats)."""
        from polygraphy.comparator import IterationResult, RunResults
        from polygraphy.json import save_json

        directory.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, str]] = {}
        if self.skipped:
            (directory / "skipped.json").write_text(json.dumps({"max_bytes": self.max_bytes, "calls_over_budget": self.skipped}, indent=2))
        for component, feeds in self.feeds.items():
            if not feeds:
                continue
            inputs_file, outputs_file = f"{component}.inputs.json", f"{component}.outputs.json"
            results = RunResults()
            results.add([IterationResult(o, runner_name=REFERENCE_RUNNER) for o in self.outputs[component]], runner_name=REFERENCE_RUNNER)
            with _quiet():
                save_json(feeds, directory / inputs_file, description=f"{component} reference inputs")
                results.save(str(directory / outputs_file))
            files[component] = {"inputs": inputs_file, "outputs": outputs_file}
        return files


def _quiet():  # noqa: ANN202 - Polygraphy's logger context
    from polygraphy.logger import G_LOGGER

    return G_LOGGER.verbosity(G_LOGGER.CRITICAL)


def load_reference(directory: Path, component: str) -> tuple[list[Feeds], Any]:
    """The saved feeds and ``RunResults`` of one component (as written by :meth:`ReferenceRecorder.save`)."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    with _quiet():
        feeds = load_json(directory / f"{component}.inputs.json", description=f"{component} reference inputs")
        return list(feeds), RunResults.load(str(directory / f"{component}.outputs.json"))


def tolerance_for(comparison: Any, component: str, output: str) -> Any:
    """The recipe's thresholds for ``component/output`` (or bare ``output``), else its default."""
    return comparison.outputs.get(f"{component}/{output}") or comparison.outputs.get(output) or comparison.default


def _run_candidate(run: ComponentRunner, component: str, feeds: list[Feeds]) -> Any:
    from polygraphy.comparator import IterationResult, RunResults

    results = RunResults()
    results.add([IterationResult(run(component, f), runner_name=CANDIDATE_RUNNER) for f in feeds], runner_name=CANDIDATE_RUNNER)
    return results


def compare_component(reference: Any, candidate: Any, comparison: Any, component: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Polygraphy comparison of one component: (AccuracyResults, per-output summary)."""
    from polygraphy.comparator import Comparator, CosineSimilarityCompareFunc, RunResults, SimpleCompareFunc

    names = list(reference[0][1][0].keys())
    tol = {n: tolerance_for(comparison, component, n) for n in names}
    simple = SimpleCompareFunc(
        check_error_stat=comparison.error_stat,
        atol={n: t.atol for n, t in tol.items()},
        rtol={n: t.rtol for n, t in tol.items()},
    )
    cosine = CosineSimilarityCompareFunc(cosine_similarity_threshold={n: t.min_cosine for n, t in tol.items()})
    both = RunResults([*candidate.lst, *reference.lst])  # as `polygraphy run --load-outputs` orders them: rel error is vs the reference
    with _quiet():
        accuracy = Comparator.compare_accuracy(both, compare_func=[simple, cosine])
    pair = (CANDIDATE_RUNNER, REFERENCE_RUNNER)
    simple_iters, cosine_iters = accuracy[0][pair], accuracy[1][pair]
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        per_iter = [it[name] for it in simple_iters if name in it]
        cos = [float(it[name].cosine_similarity) for it in cosine_iters if name in it]
        row: dict[str, Any] = {"atol": tol[name].atol, "rtol": tol[name].rtol, "min_cosine": tol[name].min_cosine, "error_stat": comparison.error_stat}
        for stat in _STATS:
            row[f"{stat}_absdiff"] = max(float(r.metric_values()[f"{stat}_absdiff"]) for r in per_iter) if per_iter else None
            row[f"{stat}_reldiff"] = max(float(r.metric_values()[f"{stat}_reldiff"]) for r in per_iter) if per_iter else None
        row["cosine_min"] = min(cos) if cos else None
        row["cosine_mean"] = float(np.mean(cos)) if cos else None
        row["simple_passed"] = bool(per_iter) and all(bool(r) for r in per_iter)
        row["cosine_passed"] = bool(cos) and all(bool(it[name]) for it in cosine_iters if name in it)
        row["iterations"] = len(per_iter)
        summary[name] = row
    return accuracy, summary


def polygraphy_command(model: Path, reference_dir: Path, component: str, outputs: dict[str, dict[str, Any]], error_stat: str) -> str:
    """The ``polygraphy run`` line that repeats this comparison from the saved reference."""
    parts = ["polygraphy", "run", str(model), "--onnxrt", "--load-inputs", str(reference_dir / f"{component}.inputs.json")]
    parts += ["--load-outputs", str(reference_dir / f"{component}.outputs.json"), "--compare-func", "simple", "cosine_similarity", "--check-error-stat", error_stat]
    parts += ["--atol", *[f"{n}:{r['atol']}" for n, r in outputs.items()]]
    parts += ["--rtol", *[f"{n}:{r['rtol']}" for n, r in outputs.items()]]
    parts += ["--cosine-similarity-threshold", *[f"{n}:{r['min_cosine']}" for n, r in outputs.items()]]
    return shlex.join(parts)


def compare_with_reference(
    reference_dir: Path, out_dir: Path, run: ComponentRunner, comparison: Any, components: dict[str, Path]
) -> dict[str, Any]:
    """Compare every component of the candidate ``run`` against the saved reference in ``reference_dir``.

    ``components`` maps component -> the candidate's model file (for the reproduction command).
    Writes ``<component>.accuracy.json`` (Polygraphy AccuracyResults) and returns the summary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"components": {}, "commands": {}}
    skipped = reference_dir / "skipped.json"
    if skipped.is_file():
        result["reference_calls_over_budget"] = json.loads(skipped.read_text())
    for component, model in components.items():
        if not (reference_dir / f"{component}.inputs.json").is_file():
            continue
        feeds, reference = load_reference(reference_dir, component)
        accuracy, summary = compare_component(reference, _run_candidate(run, component, feeds), comparison, component)
        with _quiet():
            accuracy.save(str(out_dir / f"{component}.accuracy.json"))
        result["components"][component] = summary
        result["commands"][component] = polygraphy_command(model, reference_dir, component, summary, comparison.error_stat)
    return result


def comparison_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """Flatten the summary into report metrics ``compare.<component>.<output>.<stat>``."""
    metrics: dict[str, float | None] = {}
    for component, outputs in result["components"].items():
        for name, row in outputs.items():
            for key in ("cosine_min", "cosine_mean", *(f"{s}_{k}" for s in _STATS for k in ("absdiff", "reldiff"))):
                metrics[f"compare.{component}.{name}.{key}"] = row[key]
    return metrics


def comparison_gates(result: dict[str, Any], comparison: Any, expected: dict[str, list[str]] | None = None) -> list[GateResult]:
    """One cosine gate and one Polygraphy 'simple' gate per compared output.

    ``expected`` (component -> output names) makes an output that was never compared a failed gate
    (a gate never passes without its number).
    """
    gates: list[GateResult] = []
    expected = expected or {c: list(o) for c, o in result["components"].items()}
    metrics = comparison_metrics(result)
    for component, names in expected.items():
        for name in names:
            row = result["components"].get(component, {}).get(name)
            tol = tolerance_for(comparison, component, name)
            key = f"compare.{component}.{name}"
            gates.append(evaluate_gate(f"polygraphy cosine {component}/{name}", f"{key}.cosine_min", metrics, tol.min_cosine, None))
            stat = f"{key}.{comparison.error_stat}_absdiff"
            if row is None or row[f"{comparison.error_stat}_absdiff"] is None:
                gates.append(evaluate_gate(f"polygraphy simple {component}/{name}", stat, {}, None, tol.atol))
                continue
            rel = row[f"{comparison.error_stat}_reldiff"]
            reason = "" if row["simple_passed"] else f"Polygraphy simple ({comparison.error_stat}): abs error > atol and rel error {rel:.4g} > rtol {tol.rtol:g}"
            gates.append(GateResult(f"polygraphy simple {component}/{name}", stat, float(row[f"{comparison.error_stat}_absdiff"]), tol.atol, "<=", row["simple_passed"], reason))
    return gates


