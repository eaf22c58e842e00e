"""validate: the artifact against the float reference, on the eval set, then the gates.

Writes validate/report.json (and a copy at the build directory's top) with the verdict, every
gate, every metric, the stages' summaries, the artifacts and where it all ran; and
validate/device_pack/ (edgecompile.device.pack): the reference run's preprocessed inputs and outputs,
recorded while it runs, so that the device completes the pending gates without torch.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, replace
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.backends.base import artifact_bytes, release_memory
from edgecompile.backends.registry import get_backend
from edgecompile.builddir.atomic import write_json
from edgecompile.data.sources import eval_data, eval_fingerprint
from edgecompile.device import PACK_DIR
from edgecompile.device.pack import PackWriter
from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.resolve import is_bundled
from edgecompile.reports.build_report import write_build_reports
from edgecompile.runtime.onnx_cpu import cpu_runner
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import REPORT_FILE, Upstream, ValidationReport
from edgecompile.validation import deep
from edgecompile.validation.drift import drift
from edgecompile.validation.execution import ExecutionContext, execution_context
from edgecompile.validation.gates import GateResult, evaluate_gate, pending_gate, verdict
from edgecompile.validation.meaning import chance_accuracy, non_finite_outputs, reference_floor
from edgecompile.validation.latency import probe

class ValidateStage(Stage):
    name = "validate"
    requires = ("export", "annotate", "transform", "calibrate", "build")
    output_type = ValidationReport

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        gates = [g.model_dump_json() for g in ctx.recipe.gates]
        e = ctx.recipe.eval
        return {"eval": e.model_dump_json(), "eval_data": eval_fingerprint(e.set, e.samples, ctx.adapter.family, near=Path(ctx.resolved.recipe_path)), "comparison": ctx.recipe.comparison.model_dump_json(), "platform": f"{platform.system()}-{platform.machine()}", "gates": str(gates), "budget": f"{ctx.target.memory_budget_mb}/{ctx.target.latency_budget_ms}/{ctx.target.ttft_budget_ms}/{ctx.target.min_decode_tokens_per_s}/{ctx.recipe.budget_gates}/{ctx.recipe.accept_measured_here}"}

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        report = validate(ctx, out, upstream)
        write_json(out / REPORT_FILE, report)
        write_build_reports(out, report)
        return {"verdict": report["verdict"], "failed_gates": [g["name"] for g in report["gates"] if g["status"] == "failed"], "pending_gates": [g["name"] for g in report["gates"] if g["status"] == "pending"]}


def _latency(ctx: BuildContext, feeds: dict[str, Any], backend: str, directory: Path, files: dict[str, str]) -> dict[str, dict[str, float]]:
    e = ctx.recipe.eval
    return {c: probe(backend, directory, c, f, feeds[c], e.latency_runs, e.warmup_runs) for c, f in files.items()}


def _without_weights(loaded: LoadedModel) -> LoadedModel:
    """The processor, config and the adapter's plain cached values (token counts); no torch modules."""
    view = LoadedModel(path=loaded.path, model=None, processor=loaded.processor, config=loaded.config)  # type: ignore[arg-type]
    for key, value in vars(loaded).items():
        if key not in vars(view) and isinstance(value, (bool, int, float, str, tuple)):
            setattr(view, key, value)
    return view


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def _pack_task(data: Any, ref_outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the device needs to score accuracy itself: zero-shot labels as class indices (class-major prompts)."""
    class_names = getattr(data, "class_names", None)
    labels = [getattr(s, "label", None) for s in data.samples]
    image, text = "vision_encoder/image_embeds", "text_encoder/text_embeds"
    if not class_names or any(label is None for label in labels) or image not in ref_outputs or text not in ref_outputs:
        return {}
    index = {name: i for i, name in enumerate(class_names)}
    per_class, rest = divmod(len(ref_outputs[text]), len(index))
    if rest or per_class == 0 or len(labels) != len(ref_outputs[image]):
        return {}
    return {"kind": "zero_shot", "labels": [index[label] for label in labels], "per_class": per_class, "image_output": image, "text_output": text}


def _backend_extra(artifact: Any) -> dict[str, Any]:
    """What a device runner needs from the build's record (QNN: the SoC, and which components may fall back to CPU)."""
    extra = artifact.extra or {}
    if artifact.backend != "qnn":
        return {}
    allowed = [c for c, s in extra.get("components", {}).items() if s.get("placement", {}).get("fallback")]
    return {"soc_model": extra.get("soc_model", 57), "htp_arch": extra.get("htp_arch", 75), "fallback_allowed": allowed}


def _write_pack(ctx: BuildContext, loaded: LoadedModel, latency_feeds: dict[str, Any], pack: PackWriter, artifact: Any, artifact_dir: Path, data: Any, ref_metrics: dict[str, Any], ref_outputs: dict[str, np.ndarray]) -> None:
    """Finish the device pack (samples were streamed in while the reference ran)."""
    e = ctx.recipe.eval
    for component in artifact.components:
        pack.save_latency_feeds(component, latency_feeds[component])
    description: dict[str, Any] = {
        "recipe": ctx.recipe.name,
        "family": ctx.adapter.family,
        "backend": artifact.backend,
        "target": {"name": ctx.target.name, "arch": ctx.target.arch, "backend": ctx.target.backend},
        "artifacts": {c: str((artifact_dir / f).relative_to(ctx.build_dir)) for c, f in artifact.components.items()},
        "backend_extra": _backend_extra(artifact),
        "gates": [{"name": n, "metric": m, "min": lo, "max": hi} for n, m, lo, hi in _gate_specs(ctx)],
        "accept_measured_here": list(ctx.recipe.accept_measured_here),
        "reference_metrics": {k: v for k, v in ref_metrics.items() if isinstance(v, (int, float))},
        "latency": {"runs": e.latency_runs, "warmup": e.warmup_runs},
        "eval_samples": len(data.samples) if hasattr(data.samples, "__len__") else None,
    }
    if pack.mode == "generate":
        pack.save_reference({k: v for k, v in ref_outputs.items()})
        spec = _pruned_spec(ctx, loaded) or ctx.adapter.generation_spec(loaded.config)
        description["generation"] = {"spec": asdict(spec), "max_new_tokens": int(ref_outputs["generated/tokens"].shape[1])}
    else:
        description["task"] = _pack_task(data, ref_outputs)
    pack.finish(description)


PRUNING_PROMPTS = 4  # eval prompts the pruned-vs-unpruned prefill is timed on


def _pruned_spec(ctx: BuildContext, loaded: LoadedModel):  # noqa: ANN202 - GenerationSpec | None
    """The artifact's generation spec when its decoder prunes visual tokens (fed the mask), else None."""
    if ctx.recipe.token_pruning is None or ctx.adapter.family != "generative":
        return None
    return replace(ctx.adapter.generation_spec(loaded.config), visual_token_mask=True)


def _pruning_metrics(ctx: BuildContext, loaded: LoadedModel, run: Any, spec: Any, data: Any, upstream: Upstream) -> dict[str, float]:
    """token_pruning.*: the artifact's prefill pruned vs unpruned on the first eval prompts (validation.pruning_metrics)."""
    from edgecompile.models.generative import DEFAULT_QUESTION
    from edgecompile.validation.pruning_metrics import pruning_metrics

    prompts = []
    for sample in list(data.samples)[:PRUNING_PROMPTS]:
        question = getattr(sample, "question", None) or getattr(sample, "text", None) or DEFAULT_QUESTION
        prompts.append(ctx.adapter.encode(loaded, sample.image, question))
    metrics = pruning_metrics(run, spec, prompts, loaded.config.get_text_config(decoder=True), upstream.calibrate.keep_schedule(), runs=max(3, min(ctx.recipe.eval.latency_runs, 10)))
    artifact = upstream.build.artifact
    if get_backend(artifact.backend).runtime_kind(artifact) != "native":
        # An emulator's (the x86-64 HTP simulator's) prefill times say nothing about the device:
        # the pruned/unpruned latency rows are left out; kept fraction, KV cache and FLOPs stay.
        metrics = {k: v for k, v in metrics.items() if "prefill" not in k}
    return metrics


def _size_mb(directory: Path, files: dict[str, str]) -> float:
    return sum(artifact_bytes(directory / f) for f in files.values()) / 2**20


def validate(ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
    """Compute metrics for the artifact and the reference (the exported float graphs), then the gates."""
    artifact_dir, artifact = upstream.build.folder, upstream.build.artifact
    backend = get_backend(artifact.backend)
    exported = upstream.export.files
    ref_files = {c: p.name for c, p in exported.items()}
    data = eval_data(ctx.recipe.eval.set, ctx.recipe.eval.samples, ctx.adapter.family, bundled=is_bundled(ctx.model_dir), near=Path(ctx.resolved.recipe_path))
    # Graphs are run here, never the torch model: what needs it (latency feeds: a generative model's image
    # token count runs its vision tower) is computed first, then its weights, the largest object, are let go.
    loaded = ctx.loaded()
    latency_feeds = {c: ctx.adapter.latency_feeds(loaded, c) for c in {**ref_files, **artifact.components}}
    loaded = _without_weights(loaded)
    ctx.release_weights()
    release_memory()
    metrics: dict[str, Any] = {}
    notes: list[str] = list(artifact.notes)

    recorder = deep.recorder_for(ctx.recipe.comparison)
    pack = PackWriter(out / Path(PACK_DIR).name, "generate" if ctx.adapter.family == "generative" else "calls")
    reference_run = pack.wrap(recorder.wrap(cpu_runner(upstream.export.folder, ref_files)))
    ref_metrics, ref_outputs = ctx.adapter.evaluate(loaded, reference_run, data)
    broken = non_finite_outputs(ref_outputs)
    if broken:
        raise InputError(f"{ctx.model_dir}: the float reference's outputs hold NaN or Inf ({', '.join(broken)}) on the eval set; nothing can be compared with them")
    chance = chance_accuracy(data)
    if chance is not None:
        metrics["accuracy.chance"] = chance
    deep.save_reference(recorder, out)
    np.savez_compressed(out / "reference_outputs.npz", **{k.replace("/", "__"): v for k, v in ref_outputs.items()})
    for key, value in ref_metrics.items():
        metrics[f"{key}.reference"] = value
    _write_pack(ctx, loaded, latency_feeds, pack, artifact, artifact_dir, data, ref_metrics, ref_outputs)
    # The reference run is recorded (outputs, Polygraphy reference, pack): accuracy, drift and
    # attribution reuse it, so its sessions are closed before the candidate's open.
    del reference_run
    release_memory()

    ref_latency = _latency(ctx, latency_feeds, "ort-cpu", upstream.export.folder, ref_files)
    for c, lat in ref_latency.items():
        metrics[f"latency.reference.{c}.p50_ms"] = lat["p50_ms"]
        metrics[f"latency.reference.{c}.p90_ms"] = lat["p90_ms"]

    ref_size = _size_mb(upstream.export.folder, ref_files)
    art_size = _size_mb(artifact_dir, artifact.components)
    metrics.update({"size.reference_mb": ref_size, "size.artifact_mb": art_size, "size.compression_ratio": ref_size / art_size if art_size else None})
    for c, f in artifact.components.items():
        metrics[f"size.{c}_mb"] = artifact_bytes(artifact_dir / f) / 2**20

    repeat: dict[str, str] = {}
    if artifact.runs_here:
        candidate_run = backend.runner(artifact_dir, artifact)
        pruned_spec = _pruned_spec(ctx, loaded)
        cand_metrics, cand_outputs = ctx.adapter.evaluate(loaded, candidate_run, data, **({"spec": pruned_spec} if pruned_spec else {}))
        for key, value in cand_metrics.items():
            metrics[key] = value
            if key in ref_metrics:
                metrics[f"{key}.drop"] = ref_metrics[key] - value
        if pruned_spec is not None:
            metrics.update(_pruning_metrics(ctx, loaded, candidate_run, pruned_spec, data, upstream))
            if ref_metrics.get("accuracy"):
                metrics["accuracy.retention"] = cand_metrics.get("accuracy", float("nan")) / ref_metrics["accuracy"]
        compare = getattr(ctx.adapter, "compare_outputs", None)  # optional hook: e.g. token agreement for generative models
        if compare is not None:
            metrics.update(compare(ref_outputs, cand_outputs))
        for key, ref in ref_outputs.items():
            if ref.dtype.kind != "f":  # token ids and the like: compared by the adapter's hook, not by cosine
                continue
            for name, value in drift(ref, cand_outputs[key]).items():
                metrics[f"drift.{key.replace('/', '.')}.{name}"] = value
        del cand_outputs
        comparison = deep.compare_candidate(ctx.recipe.comparison, out, ctx.path("validate"), candidate_run, artifact_dir, artifact)
        # Attribution opens its own sessions a chunk at a time (weights read from disk): the candidate's close first.
        del candidate_run
        release_memory()
        metrics.update(deep.attribute_candidate(ctx.recipe.comparison, out, comparison, artifact_dir, artifact, exported, upstream.build.effective_plan_path, fp16_native=ctx.target.executes("fp16")))
        repeat = _read_json(out / deep.COMPARISON_FILE).get("commands", {})
        latency = _latency(ctx, latency_feeds, artifact.backend, artifact_dir, artifact.components)
        for c, lat in latency.items():
            metrics[f"latency.{c}.p50_ms"] = lat["p50_ms"]
            metrics[f"latency.{c}.p90_ms"] = lat["p90_ms"]
            metrics[f"latency.{c}.speedup_vs_reference"] = ref_latency[c]["p50_ms"] / lat["p50_ms"]
        metrics["latency.p90_ms"] = sum(lat["p90_ms"] for lat in latency.values())
        # On the device every component is resident at once: one runtime baseline plus each component's own memory.
        baseline = max(lat["peak_rss_mb"] - lat["runtime_rss_mb"] for lat in latency.values())
        metrics["memory.peak_mb"] = baseline + sum(lat["runtime_rss_mb"] for lat in latency.values())
        metrics.update(backend.structural_check(artifact_dir, artifact))  # e.g. weight storage types read back from the program
    else:
        notes.append(f"the {artifact.backend} artifact cannot execute on this machine ({platform.machine()}); accuracy, drift, latency and memory were not measured here")
        metrics.update(backend.structural_check(artifact_dir, artifact))

    context = execution_context(artifact.backend, backend.runtime_kind(artifact), artifact.runs_here, ctx.target.arch)
    gates = _meaningful(ctx, metrics, _gates(ctx, metrics, context)) + deep.extra_gates(ctx.recipe.comparison, out, recorder)
    manifest = ctx.manifest()
    return {
        "schema_version": 1,
        "verdict": verdict(gates),
        "recipe": ctx.recipe.name,
        "target": ctx.target.name,
        "tier": ctx.target.tier,
        "model": ctx.model_ref,
        "gates": [g.to_json() for g in gates],
        "metrics": metrics,
        "stages": {name: {"wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb, "summary": r.summary} for name, r in manifest.stages.items()},
        "artifacts": {c: str((artifact_dir / f).relative_to(ctx.build_dir)) for c, f in artifact.components.items()},
        "where": {"backend": artifact.backend, "executed": artifact.runs_here, "description": artifact.where, "context": context.kind, "context_label": context.label, "machine": platform.machine(), "host": platform.node(), "system": platform.platform()},
        "repeat_commands": {"cwd": "the build directory", "commands": repeat},
        "device_pack": PACK_DIR,  # complete the pending gates on the device: python -m edgecompile.device validate --build DIR
        "notes": notes,
    }


def _gates(ctx: BuildContext, metrics: dict[str, Any], context: ExecutionContext) -> list[GateResult]:
    """The recipe's gates for this family, plus the target's budgets; pending where this machine cannot measure."""
    accepted = set(ctx.recipe.accept_measured_here)
    results = []
    for name, metric, minimum, maximum in _gate_specs(ctx):
        truthful, why = context.measures(metric)
        if truthful:
            results.append(evaluate_gate(name, metric, metrics, minimum, maximum))
        elif metric in accepted and metric in metrics:
            gate = evaluate_gate(name, metric, metrics, minimum, maximum)
            results.append(replace(gate, reason=f"accepted by the recipe (accept_measured_here): {why.split(';')[0]}"))
        else:
            results.append(pending_gate(name, metric, metrics, minimum, maximum, why))
    return results


def _gate_specs(ctx: BuildContext) -> list[tuple[str, str, float | None, float | None]]:
    """(name, metric, min, max) of every gate: the recipe's for this family, then the target's budgets."""
    wanted = [(g.name or g.metric, g.metric, g.min, g.max) for g in ctx.recipe.gates if g.family in (None, ctx.adapter.family)]
    if ctx.recipe.budget_gates:
        if ctx.adapter.family == "generative":  # judged as users feel it: first token, then the decode rate
            wanted.append(("time to first token budget", "generation.ttft_ms", None, ctx.target.ttft_budget_ms))
            wanted.append(("decode rate budget", "generation.decode_tokens_per_s", ctx.target.min_decode_tokens_per_s, None))
        else:
            wanted.append(("latency budget", "latency.p90_ms", None, ctx.target.latency_budget_ms))
        wanted.append(("memory budget", "memory.peak_mb", None, float(ctx.target.memory_budget_mb)))
    return wanted


def _meaningful(ctx: BuildContext, metrics: dict[str, Any], gates: list[GateResult]) -> list[GateResult]:
    """Accuracy gates fail, with the reason, when the float reference does not solve the eval set.

    Only where accuracy is gated: a recipe gating drift and latency on a synthetic set (random
    answers, where accuracy means nothing by design) is not judged on it.
    """
    reference, chance = metrics.get("accuracy.reference"), metrics.get("accuracy.chance")
    if reference is None or chance is None or not any(g.metric.startswith("accuracy") for g in gates):
        return gates
    floor = reference_floor(chance, ctx.recipe.eval.min_reference_accuracy)
    if reference >= floor:
        return gates
    reason = f"the eval set does not fit this model: the float reference scores {reference:.3f}, below {floor:.3f} (chance {chance:.3f})"
    out = [replace(g, passed=False, reason=reason) if g.metric.startswith("accuracy") else g for g in gates]
    out.append(GateResult("reference fits the eval set", "accuracy.reference", float(reference), floor, ">=", False, reason))
    return out


def publish_report(ctx: BuildContext) -> dict[str, Any]:
    """Copy validate/report.json to the build directory's top and return it."""
    import json

    source = ctx.path("validate", REPORT_FILE)
    report = json.loads(source.read_text())
    tmp = ctx.path(f".{REPORT_FILE}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(ctx.path(REPORT_FILE))
    return report
