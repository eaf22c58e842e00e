"""Complete a build's validation on the device: run the pack through the native runtime, judge the gates.

Which gates the device may decide follows the same table as the host
(edgecompile.validation.execution): accuracy and drift wherever the artifact ran on its own
runtime (or the emulator), latency and memory only on the target's runtime *and* architecture. A
gate the device measures truthfully is decided by the device's number; one it cannot stays
pending with the device's reason; the host's other gates are kept, labelled as the host's.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.builddir.atomic import write_json
from edgecompile.device import RESULT_FILE
from edgecompile.device.merge import host_digest, merged_report
from edgecompile.device.metrics import drift_metrics, token_agreement, zero_shot_accuracy
from edgecompile.device.pack import DevicePack, PackError
from edgecompile.device.probe import probe
from edgecompile.device.runtimes import open_runner, runtime_kind
from edgecompile.validation.execution import execution_context
from edgecompile.validation.gates import evaluate_gate, pending_gate

REPORT_FILE = "report.json"


def _calls(pack: DevicePack, run: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    refs: dict[str, list[np.ndarray]] = {}
    cands: dict[str, list[np.ndarray]] = {}
    for sample in pack.samples():
        component = str(sample["component"])
        feeds = {k[3:]: v for k, v in sample.items() if k.startswith("in.")}
        outputs = run(component, feeds)
        for key, ref in sample.items():
            if key.startswith("ref."):
                name = f"{component}/{key[4:]}"
                refs.setdefault(name, []).append(ref)
                cands.setdefault(name, []).append(np.asarray(outputs[key[4:]]))
    reference = {k: np.concatenate(v) for k, v in refs.items()}
    candidate = {k: np.concatenate(v) for k, v in cands.items()}
    metrics = drift_metrics(reference, candidate)
    task = pack.description.get("task", {})
    if task.get("kind") == "zero_shot" and task["image_output"] in candidate and task["text_output"] in candidate:
        images, texts = candidate[task["image_output"]], candidate[task["text_output"]]
        labels = np.asarray(task["labels"])
        if len(labels) == len(images):  # the whole eval set is in the pack
            metrics["accuracy"] = zero_shot_accuracy(images, texts, labels, int(task["per_class"]))
    return metrics, candidate


def _generate(pack: DevicePack, run: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from edgecompile.runtime.generate import GenerationSpec, generate

    spec_data = pack.description["generation"]["spec"]
    spec = GenerationSpec(**{**spec_data, "eos_token_ids": tuple(spec_data["eos_token_ids"])})
    max_new = int(pack.description["generation"]["max_new_tokens"])
    reference = pack.reference()
    tokens = np.full((pack.description["samples"], max_new), -1, np.int64)
    logits, ttft, rates = [], [], []
    for i, sample in enumerate(pack.samples()):
        result = generate(run, spec, sample["input_ids"], sample.get("pixel_values"), max_new)
        tokens[i, : len(result.tokens)] = result.tokens
        logits.append(result.first_logits)
        ttft.append(result.time_to_first_token_s * 1000.0)
        if not np.isnan(result.decode_tokens_per_s):
            rates.append(result.decode_tokens_per_s)
    candidate = {"decoder/first_token_logits": np.stack(logits), "generated/tokens": tokens}
    metrics: dict[str, Any] = {"generation.ttft_ms": float(np.median(ttft)), "generation.decode_tokens_per_s": float(np.median(rates)) if rates else float("nan")}
    metrics.update(drift_metrics(reference, candidate))
    metrics.update(token_agreement(reference["generated/tokens"], tokens))
    return metrics, candidate


def _performance(pack: DevicePack, build_dir: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    components = list(pack.description["artifacts"])
    latency = {c: probe(build_dir, c) for c in components}
    for c, lat in latency.items():
        metrics[f"latency.{c}.p50_ms"] = lat["p50_ms"]
        metrics[f"latency.{c}.p90_ms"] = lat["p90_ms"]
    metrics["latency.p90_ms"] = sum(lat["p90_ms"] for lat in latency.values())
    baseline = max(lat["peak_rss_mb"] - lat["runtime_rss_mb"] for lat in latency.values())
    metrics["memory.peak_mb"] = baseline + sum(lat["runtime_rss_mb"] for lat in latency.values())
    return metrics


def _host_report(build_dir: Path) -> dict[str, Any]:
    path = build_dir / "validate" / REPORT_FILE
    if not path.is_file():
        raise PackError(f"{build_dir}: no validate/report.json; the host's validation has not run")
    return json.loads(path.read_text())


def validate_on_device(build_dir: Path) -> dict[str, Any]:
    """Run the pack here, write device/result.json and the merged report.json; return the merged report."""
    build_dir = build_dir.resolve()
    pack = DevicePack.open(build_dir)
    d = pack.description
    host = _host_report(build_dir)
    backend = d["backend"]
    run = open_runner(backend, {c: pack.artifact_path(c) for c in d["artifacts"]}, d.get("backend_extra", {}))
    started = time.time()
    metrics, _ = (_calls if pack.mode == "calls" else _generate)(pack, run)
    for key, value in d.get("reference_metrics", {}).items():
        if key in metrics and isinstance(value, (int, float)):
            metrics[f"{key}.drop"] = value - metrics[key]
    metrics.update(_performance(pack, build_dir))
    kind = runtime_kind(backend)
    context = execution_context(backend, kind, True, d["target"]["arch"])
    gates = _judge(d["gates"], host["gates"], metrics, context, set(d.get("accept_measured_here", [])))
    where = {
        "backend": backend, "context": context.kind, "context_label": context.label, "machine": platform.machine(), "host": platform.node(), "system": platform.platform(),
        "description": f"{_runtime_name(backend, kind)} on {platform.machine()} ({platform.node()})", "wall_s": round(time.time() - started, 2),
    }
    result = {"schema_version": 1, "host_report_sha256": host_digest(build_dir), "where": where, "metrics": metrics, "gates": gates, "samples": d["samples"], "samples_left_out": d.get("samples_left_out", 0)}
    (build_dir / RESULT_FILE).parent.mkdir(exist_ok=True)
    write_json(build_dir / RESULT_FILE, result)
    report = merged_report(build_dir, host)
    write_json(build_dir / REPORT_FILE, report)
    return report


def _runtime_name(backend: str, kind: str) -> str:
    names = {"ort-cpu": "ONNX Runtime CPU", "qnn": "ONNX Runtime QNN EP (HTP)", "coreml": "CoreML", "tensorrt": "TensorRT"}
    return names.get(backend, backend) + (" emulator" if kind == "emulator" else "")


def _judge(specs: list[dict[str, Any]], host_gates: list[dict[str, Any]], metrics: dict[str, Any], context: Any, accepted: set[str]) -> list[dict[str, Any]]:
    """The device's decision for every gate it has a spec for and a number or a reason."""
    out = []
    label = f"device ({context.label}, {context.machine})"
    host_by_name = {g["name"]: g for g in host_gates}
    for spec in specs:
        name, metric, minimum, maximum = spec["name"], spec["metric"], spec.get("min"), spec.get("max")
        if name not in host_by_name:
            continue
        truthful, why = context.measures(metric)
        if metric.startswith("size.") or (metric not in metrics and host_by_name[name]["status"] != "pending"):
            continue  # static, or not something the device computes: the host's gate stands
        if truthful and metric in metrics:
            gate = evaluate_gate(name, metric, metrics, minimum, maximum)
        elif metric in accepted and metric in metrics:
            gate = replace(evaluate_gate(name, metric, metrics, minimum, maximum), reason=f"accepted by the recipe (accept_measured_here): {why.split(';')[0]}")
        elif truthful:
            gate = pending_gate(name, metric, metrics, minimum, maximum, f"the device runner does not compute {metric}")
        else:
            gate = pending_gate(name, metric, metrics, minimum, maximum, why.replace("completed on the device", "run 'python -m edgecompile.device validate' on the target itself"))
        out.append({**gate.to_json(), "measured_on": label})
    return out

