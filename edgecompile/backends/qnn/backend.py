"""Qualcomm Hexagon NPU (HTP) through ONNX Runtime's QNN execution provider (onnxruntime-qnn).

Build: static shapes + qnn_preprocess_model + exact rewrites (qnn_graph), full QDQ with uint16
activations and uint8 per-channel weights by default (qnn_quant), then an EPContext model: the
HTP context binary pre-compiled for the target's ``soc_model``/``htp_arch``, the deployable file.
The plain QDQ model is written beside it. Placement is strict: every session is opened with CPU
fallback disabled, and the build lists exactly which nodes would fall back; the recipe's
``backend_options.allow_cpu_fallback`` decides whether that is an error.

Generative VLMs (LLaVA): the vision tower as above, the embedding table as a host-side Gather, and
the decoder as static prefill/decode graphs over a fixed-size KV cache (qnn.generative,
qnn.static_decoder); the runner adapts ``runtime.generate``'s dynamic feeds to them.

Validation runs here on the HTP emulator in the Linux x86-64 wheel: accuracy and drift are the
NPU's fixed-point arithmetic; latency is the emulator's and says nothing about the device.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field, ValidationError

from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs, refuse_in_memory_over_limit
from edgecompile.backends.common.graph_tidy import topological_sort
from edgecompile.backends.qnn.quant import HtpQuantSettings, calibrate_prepared, qdq_types, quantize_for_htp, range_gap
from edgecompile.calibration.ranges import TensorRanges
from edgecompile.config.target import Strict, Target
from edgecompile.errors import BackendUnavailable, InputError, StageError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs
from edgecompile.plan.plan import PrecisionPlan
from edgecompile.plan.roles import WEIGHT_OPS

WHERE = "HTP emulator on x86-64"
# Non-linear nodes the float plan keeps in float on purpose; data movement (Reshape, Shape, ...)
# has no precision of its own and is not listed.
_COMPUTE_ROLES = {"softmax", "layernorm", "residual_add", "attn_matmul"}
# Adapters (model_types) whose decoder the static HTP graphs build.
STATIC_DECODER_FAMILIES = ("llava",)
LATENCY_NOTE = "latency figures are the x86-64 HTP emulator's (libQnnHtp.so simulating the Hexagon NPU) and are not representative of the device"


class QnnOptions(Strict):
    """``backend_options`` for the qnn backend (target's, then the recipe's on top)."""

    soc_model: int = Field(default=57, ge=0, description="QNN SoC id; 57 = SM8650 (Snapdragon 8 Gen 3)")
    htp_arch: Literal[68, 69, 73, 75, 79, 81] = 75
    allow_cpu_fallback: bool | list[str] = Field(default=False, description="false, true, or the op types allowed to run on the CPU EP")
    sequence_length: int | None = Field(default=None, ge=1, le=65536)
    attention_mask_value: float = Field(default=-100.0, le=-20.0, ge=-10000.0)
    offload_graph_io_quantization: bool = True
    weight_type: Literal["uint8", "int8"] = "uint8"
    # Generative VLMs: the static decoder graphs (edgecompile.backends.qnn.static_decoder).
    context_length: int | None = Field(default=None, ge=2, le=65536, description="L: static KV-cache slots; default the model's max_position_embeddings")
    prefill_chunk: int | None = Field(default=None, ge=1, le=65536, description="C: tokens per prefill graph call; default L/2")
    decoder_weight_type: Literal["uint8", "int8", "int4"] = Field(default="uint8", description="decoder linear weights (per output channel); int4 is accepted by the HTP emulator")
    decoder_calibration_steps: int = Field(default=8, ge=0, le=256, description="greedy decode steps per calibration prompt that calibrate the decode graph")

    def allows(self, op_types: list[str]) -> bool:
        if isinstance(self.allow_cpu_fallback, bool):
            return self.allow_cpu_fallback or not op_types
        return set(op_types) <= set(self.allow_cpu_fallback)


def qnn_options(target: Target, recipe: Any = None) -> QnnOptions:
    """Validate the merged backend_options; errors name the file and the field."""
    merged = {**target.backend_options, **(recipe.backend_options if recipe is not None else {})}
    try:
        return QnnOptions.model_validate(merged)
    except ValidationError as exc:
        where = f"targets/{target.name}.yaml" + (f" + recipes/{recipe.name}.yaml" if recipe is not None and recipe.backend_options else "")
        lines = [f"{where}: backend_options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}; got {e.get('input')!r}" for e in exc.errors()]
        raise InputError("\n".join(lines)) from None


class QnnBackend(Backend):
    name = "qnn"
    options_model = QnnOptions
    description = "Qualcomm Hexagon NPU (HTP) via ONNX Runtime QNN EP: QDQ u16/u8 + EPContext binary; validated on the x86-64 HTP emulator"

    def runtime_kind(self, artifact: Artifact) -> str:
        # On x86-64 the QNN HTP backend library is the emulator; on a Snapdragon it is the NPU.
        return "emulator" if platform.machine() in ("x86_64", "AMD64") else "native"

    def preflight(self, adapter: Any, resolved: Any) -> None:
        """Refuse, when the recipe is bound and before export runs, what the static HTP decoder cannot build.

        Generative VLMs build as LLaVA (one image, a fixed number of image tokens, 1-D positions):
        tiled/any-resolution vision inputs give a varying number of image tokens, Qwen2-VL's M-RoPE
        and PaliGemma's prefix-LM mask have no static graph here. The static decoder is re-exported
        from torch, so weight transforms on the exported ONNX would be lost: refused too.
        The text model's type is checked when the build loads the model (preflight sees no config).
        """
        if getattr(adapter, "family", "") != "generative":
            return
        where = f"{resolved.recipe_path}: target {resolved.target.name} (backend qnn)"
        types = tuple(getattr(adapter, "model_types", ()))
        if not set(types) <= set(STATIC_DECODER_FAMILIES) or getattr(adapter, "position_layout", "1d") != "1d":
            raise InputError(
                f"{where}: model type {', '.join(types) or '?'} (a generative VLM) is not supported on HTP yet; the static-shape HTP decoder builds "
                f"{', '.join(STATIC_DECODER_FAMILIES)} (one image, 1-D positions): tiled or any-resolution images, M-RoPE and prefix-LM masks have no static graph here. "
                "For this model use a target on ort-cpu, executorch, tensorrt or coreml"
            )
        recipe = getattr(resolved, "recipe", None)
        transforms = list(getattr(getattr(recipe, "quantization", None), "weight_transforms", []) or [])
        if transforms:
            raise InputError(f"{where}: quantization.weight_transforms: {transforms}: the HTP decoder is re-exported from the torch model with static shapes and would not carry these transforms; remove them for this target")

    def availability(self) -> Availability:
        from edgecompile.backends.qnn.session import register_qnn

        try:
            version = register_qnn()
        except BackendUnavailable as exc:
            return Availability(False, False, str(exc))
        runs = platform.machine() in ("x86_64", "AMD64", "aarch64", "ARM64")
        return Availability(True, runs, f"onnxruntime-qnn {version}: HTP backend library registered; runs here on the HTP emulator (accuracy yes, latency not the device's)")

    def adapt_plan(self, plan: PrecisionPlan, target: Target, ranges: dict[str, TensorRanges], graphs: dict[str, onnx.ModelProto]) -> PrecisionPlan:
        """HTP executes fixed point only (in a QDQ graph): every float node becomes 16-bit QDQ.

        - linears planned fp16/fp32/float (patch embedding, projector): W8 per-channel + A16.
        - softmax, layer norms, residual adds, attention matmuls, the rest: 16-bit QDQ (uint16),
          not float: a float op in a QDQ graph does not run on HTP (finalization fails or the
          node falls back to the CPU).
        - INT4 linears: ORT's INT4 format is MatMulNBits with float activations, a CPU/GPU
          contrib op QNN EP never places on HTP; on this target they become W8 + A16. A generative
          decoder is re-exported as static graphs (qnn.generative) and quantized there with
          ``decoder_weight_type`` (INT4 per-channel QDQ, which HTP runs, when asked).
        """
        for entry in plan.entries:
            weighted = entry.weight is not None and entry.op_type in WEIGHT_OPS
            if entry.precision == "int4":
                plan = plan.with_change(entry.component, entry.node, "int8", "HTP: INT4 exists in ORT only as MatMulNBits (float activations, CPU/GPU kernel), which QNN EP does not run on the NPU; W8 per-channel + A16 instead (a generative decoder is rebuilt as static HTP graphs whose weights follow backend_options.decoder_weight_type, int4 QDQ included)")
            elif weighted and entry.precision != "int8":
                plan = plan.with_change(entry.component, entry.node, "int8", "HTP runs no float ops in a QDQ graph: W8 per-channel + A16")
            elif not weighted and entry.role in _COMPUTE_ROLES and entry.precision != "int16":
                plan = plan.with_change(entry.component, entry.node, "int16", "HTP runs no float ops in a QDQ graph: 16-bit fixed-point Q/DQ instead of float")
        return plan

    def _settings(self, inputs: BuildInputs, options: QnnOptions) -> HtpQuantSettings:
        q, c = inputs.recipe.quantization, inputs.recipe.calibration
        # uint16 activations unless the recipe asks for 8-bit explicitly (a8w8 loses ~24 dB on ViTs).
        activation = q.activation_type if "activation_type" in q.model_fields_set else "uint16"
        if activation == "int8":
            raise InputError(f"recipes/{inputs.recipe.name}.yaml: quantization.activation_type: int8 activations are not QNN-compatible; expected uint8 or uint16")
        return HtpQuantSettings(activation_type=activation, weight_type=options.weight_type, method=c.method, percentile=c.percentile, bins=c.bins)

    def build(self, inputs: BuildInputs) -> Artifact:
        from edgecompile.backends.qnn.graph import static_shapes
        from edgecompile.backends.qnn.session import provider_options

        options = qnn_options(inputs.target, inputs.recipe)
        settings = self._settings(inputs, options)
        if inputs.calibration_feeds is None:
            raise StageError("build", "the qnn backend calibrates its prepared graph and needs the calibration feeds")
        ep_options = provider_options(options.soc_model, options.htp_arch, options.offload_graph_io_quantization)
        files: dict[str, str] = {}
        summary: dict[str, Any] = {"soc_model": options.soc_model, "htp_arch": options.htp_arch, "activation_type": settings.activation_type, "weight_type": settings.weight_type, "components": {}}
        generative = inputs.adapter is not None and getattr(inputs.adapter, "family", "") == "generative"
        if generative:
            from edgecompile.backends.qnn.generative import build_generative

            # The decoder as static prefill/decode graphs, the embedding table as a host-side Gather.
            files, summary["components"], summary["generative"] = build_generative(inputs, options, settings, ep_options, self._compile_component)
        for component, source in inputs.exported.items():
            if component in files:
                continue
            refuse_in_memory_over_limit(source, component, self.name, why="its HTP quantizer and EPContext compiler take one in-memory graph")
            model = onnx.load(str(source))
            shapes = static_shapes(model, options.sequence_length, component)
            feeds = (pad_feeds(f, shapes) for f in inputs.calibration_feeds(component))
            files[component] = f"{component}.htp_ctx.onnx"
            summary["components"][component] = self._compile_component(model, shapes, feeds, component, inputs, options, settings, ep_options)
        notes = [LATENCY_NOTE, f"EPContext binaries for soc_model {options.soc_model} / htp_arch v{options.htp_arch}; the plain QDQ models are beside them (*.qdq.onnx)"]
        fallbacks = {c: s["placement"]["fallback"] for c, s in summary["components"].items() if s["placement"]["fallback"]}
        if fallbacks:
            notes.append(f"nodes running on the CPU EP (allowed by backend_options.allow_cpu_fallback): {fallbacks}")
        if generative:
            notes.append(summary["generative"]["note"])
        return Artifact(self.name, files, runs_here=True, where=WHERE, notes=notes, extra=summary)

    def _compile_component(self, model: onnx.ModelProto, shapes: dict[str, list[int]], feeds: Any, name: str, inputs: BuildInputs, options: QnnOptions, settings: HtpQuantSettings, ep_options: dict[str, str], *, decoder: bool = False, ctx_path: Path | None = None) -> dict[str, Any]:
        """Static shapes + rewrites, calibrate, QDQ, placement check, EPContext compile of one graph."""
        from edgecompile.backends.qnn.graph import prepare
        from edgecompile.backends.qnn.session import placement

        started = time.perf_counter()
        prepared, notes = prepare(model, shapes, options.attention_mask_value, decoder=decoder)
        ranges = calibrate_prepared(prepared, feeds, settings)
        qdq = quantize_for_htp(prepared, ranges, settings)
        qdq_name = f"{name}.qdq.onnx"
        ctx_path = ctx_path or inputs.out_dir / f"{name}.htp_ctx.onnx"
        qdq = topological_sort(qdq)  # the quantizer appends Q/DQ nodes out of order; the checker and other runtimes want graph order
        onnx.save(qdq, str(inputs.out_dir / qdq_name))
        where = _placement(qdq, ep_options, placement)
        if not options.allows(where.fallback_op_types):
            raise StageError("build", f"{name}: {len(where.fallback)} node(s) cannot run on HTP and would fall back to the CPU: " + ", ".join(f"{n} ({o})" for n, o in where.fallback) + "; set backend_options.allow_cpu_fallback to true or to these op types to accept it")
        compile_started = time.perf_counter()
        _compile_context(inputs.out_dir / qdq_name, ctx_path, ep_options, strict=not where.fallback)
        return {
            "qdq": qdq_name,
            "rewrites": notes,
            "qdq_types": qdq_types(qdq),
            "calibrated_tensors": len(ranges.ranges),
            "calibration_samples": ranges.samples,
            "stage_ranges_cross_check": range_gap(inputs.ranges.get(name), ranges),
            "placement": where.to_json(),
            "context_compile_s": time.perf_counter() - compile_started,
            "build_s": time.perf_counter() - started,
        }

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        from edgecompile.backends.qnn.session import htp_session, provider_options

        extra = artifact.extra or _saved_extra(artifact_dir)
        options = provider_options(int(extra.get("soc_model", 57)), int(extra.get("htp_arch", 75)))
        allowed = {c for c, s in extra.get("components", {}).items() if s.get("placement", {}).get("fallback")}
        sessions: dict[str, Any] = {}
        hosted: dict[str, Any] = {}
        if extra.get("generative"):
            from edgecompile.backends.qnn.generative import generative_runners

            hosted = generative_runners(artifact_dir, artifact, extra["generative"], options, allowed)

        def run(component: str, feeds: Feeds) -> Outputs:
            if component in hosted:  # the host-side embedding Gather and the static decoder graphs
                return hosted[component](feeds)
            if component not in sessions:
                sessions[component] = htp_session(artifact_dir / artifact.components[component], options, strict=component not in allowed)
            session = sessions[component]
            shapes = {i.name: list(i.shape) for i in session.get_inputs()}
            names = [o.name for o in session.get_outputs()]
            batch = next(iter(feeds.values())).shape[0]
            rows = [session.run(names, pad_feeds({k: v[b : b + 1] for k, v in feeds.items() if k in shapes}, shapes)) for b in range(batch)]
            return {n: np.concatenate([r[i] for r in rows]) for i, n in enumerate(names)}

        return run


def pad_feeds(feeds: Feeds, shapes: dict[str, list[int]]) -> Feeds:
    """Pad batch-1 feeds up to the static shapes (zeros: mask 0, token 0 on padded positions)."""
    out: Feeds = {}
    for name, value in feeds.items():
        if name not in shapes:
            continue
        target = [int(d) for d in shapes[name]]
        if list(value.shape) == target:
            out[name] = np.ascontiguousarray(value)
            continue
        if value.ndim != len(target) or any(v > t for v, t in zip(value.shape, target, strict=True)):
            raise InputError(f"input '{name}' of shape {list(value.shape)} does not fit the HTP graph's static shape {target}")
        out[name] = np.pad(value, [(0, t - v) for v, t in zip(value.shape, target, strict=True)])
    return out


def _saved_extra(artifact_dir: Path) -> dict[str, Any]:
    """The build's record (SoC, allowed fallbacks) when a caller (the latency probe) passes none."""
    saved = artifact_dir / "artifact.json"
    return Artifact.load(artifact_dir).extra if saved.is_file() else {}


def _placement(qdq: onnx.ModelProto, ep_options: dict[str, str], placement: Any) -> Any:
    inputs = {i.name for i in qdq.graph.input}
    outputs = {o.name for o in qdq.graph.output}
    node_io = {n.name: (list(n.input), list(n.output)) for n in qdq.graph.node}
    return placement(qdq.SerializeToString(), ep_options, inputs, outputs, node_io)


def _compile_context(qdq_path: Path, ctx_path: Path, ep_options: dict[str, str], *, strict: bool) -> None:
    """Create the EPContext model (HTP context binary embedded) and re-open it to prove it loads."""
    from edgecompile.backends.qnn.session import htp_session

    ctx_path.unlink(missing_ok=True)
    htp_session(qdq_path, ep_options, strict=strict, context_out=ctx_path)
    if not ctx_path.is_file():
        raise StageError("build", f"QNN EP did not write the EPContext model {ctx_path.name}")
    htp_session(ctx_path, ep_options, strict=strict)

