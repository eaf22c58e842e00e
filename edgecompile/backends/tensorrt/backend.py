"""TensorRT: an explicit-quantization ONNX graph per component, and an engine where TensorRT and a GPU exist.

Engines are specific to the GPU and TensorRT version, so the usual flow builds them on the device
(Jetson): the build always writes ``build_engine.sh`` (a trtexec command line per component) beside
the ONNX files. Where ``tensorrt`` imports and a GPU is present, the engine is built here too with
Polygraphy's loaders over the TensorRT Python API (strongly typed network, one optimization
profile for the dynamic dims, a timing cache, a workspace limit from the target's memory budget),
cached under a key of model hash, recipe hash, TensorRT version and GPU name, and validated with
Polygraphy's TrtRunner.

Without TensorRT the explicit-quantization ONNX itself runs on ONNX Runtime CPU (same Q/DQ
arithmetic, other kernels) and validation of that graph stands in for the engine's; the artifact
says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pydantic import Field

from edgecompile.config.target import Strict
from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs
from edgecompile.runtime.onnx_cpu import cpu_runner
from edgecompile.backends.tensorrt.profiles import derive_profile, outside_profile
from edgecompile.backends.tensorrt.explicit_quant import check_explicit_quantization, explicit_quantization_graph
from edgecompile.errors import BackendUnavailable, InputError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs
from edgecompile.plan.roles import classify_graph

STAND_IN = "TensorRT engine not built: no GPU/tensorrt here; validated the explicit-quantization ONNX on ONNX Runtime CPU as a stand-in"
WORKSPACE_SHARE = 0.25  # of the target's memory budget: the rest is for weights, activations and the app


def tensorrt_status() -> tuple[str | None, str | None, str]:
    """(TensorRT version, GPU name, reason) — version and GPU are None where missing."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional SDK
    except ImportError:
        return None, None, "the 'tensorrt' package is not installed (pip install tensorrt on a machine with an NVIDIA GPU)"
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415

        err, props = cudart.cudaGetDeviceProperties(0)
        gpu = props.name.decode().strip("\x00") if int(err) == 0 else None
    except Exception:  # noqa: BLE001 - any failure to reach a GPU means "no GPU"
        gpu = None
    if gpu is None:
        try:
            import torch  # noqa: PLC0415

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            gpu = None
    return trt.__version__, gpu, f"tensorrt {trt.__version__}" + (f" on {gpu}" if gpu else ", but no NVIDIA GPU is visible")


def engine_cache_key(onnx_path: Path, recipe_json: str, trt_version: str, gpu: str) -> str:
    """Engines are reusable only for the same graph, recipe, TensorRT version and GPU."""
    digest = hashlib.sha256()
    for part in (hashlib.sha256(onnx_path.read_bytes()).hexdigest(), hashlib.sha256(recipe_json.encode()).hexdigest(), trt_version, gpu):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _sequence_max(inputs: BuildInputs) -> int | None:
    if inputs.model_dir is None:
        return None
    import json

    config = json.loads((Path(inputs.model_dir) / "config.json").read_text())
    for holder in (config.get("text_config") or {}, config):
        if isinstance(holder.get("max_position_embeddings"), int):
            return holder["max_position_embeddings"]
    return None


def shape_profile(model: onnx.ModelProto, options: dict[str, Any], sequence_max: int | None) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """(min, opt, max) shape per graph input: see :mod:`edgecompile.backends.tensorrt.profiles`."""
    return derive_profile(model, options, sequence_max).shapes


def _shape(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims)


def trtexec_command(onnx_name: str, engine_name: str, profile: dict[str, tuple[list[int], list[int], list[int]]], workspace_mib: int) -> str:
    args = ["trtexec", f"--onnx={onnx_name}", "--stronglyTyped", f"--saveEngine={engine_name}", "--timingCacheFile=timing.cache", f"--memPoolSize=workspace:{workspace_mib}M"]
    dynamic = {n: p for n, p in profile.items() if p[0] != p[2]}
    if dynamic:
        for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(f"{flag}=" + ",".join(f"{n}:{_shape(p[i])}" for n, p in dynamic.items()))
    return " ".join(shlex.quote(a) for a in args)


def _write_script(out: Path, commands: list[str]) -> None:
    body = "#!/bin/sh\n# Build the TensorRT engines on the target device (engines are GPU- and TensorRT-version-specific).\nset -e\ncd \"$(dirname \"$0\")\"\n" + "\n".join(commands) + "\n"
    script = out / "build_engine.sh"
    script.write_text(body)
    script.chmod(0o755)


def build_engine(onnx_path: Path, engine_path: Path, profile: dict[str, tuple[list[int], list[int], list[int]]], workspace_bytes: int, timing_cache: Path) -> None:
    """Build one engine with Polygraphy's loaders (TensorRT Python API underneath)."""
    import tensorrt as trt  # noqa: PLC0415
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, SaveEngine  # noqa: PLC0415

    trt_profile = Profile()
    for name, (lo, opt, hi) in profile.items():
        trt_profile.add(name, min=lo, opt=opt, max=hi)
    config = CreateConfig(profiles=[trt_profile], memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_bytes}, load_timing_cache=str(timing_cache) if timing_cache.exists() else None)
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    SaveEngine(EngineFromNetwork(network, config=config, save_timing_cache=str(timing_cache)), str(engine_path))()


def _cache_dir() -> Path:
    return Path(os.environ.get("EDGECOMPILE_TRT_CACHE", Path.home() / ".cache" / "edgecompile" / "tensorrt"))


def refuse_unhonoured_int4(inputs: BuildInputs) -> None:
    """INT4 settings this backend would silently ignore are refused (exit 3), naming the field.

    TensorRT's INT4 weight-only path here is symmetric block DequantizeLinear rounded to nearest
    (explicit_quant.insert_int4_block_dq): GPTQ's rounding (int4_algorithm: gptq, or GPTQ codes from
    the transform stage) and asymmetric INT4 rules would be built as something else and PASS.
    """
    int4 = [e for c in inputs.exported for e in inputs.plan.for_component(c) if e.precision == "int4"]
    if not int4:
        return
    where = getattr(inputs.recipe, "name", "recipe")
    if inputs.recipe.quantization.int4_algorithm != "rtn" or inputs.prequantized:
        raise InputError(
            f"recipes/{where}.yaml: quantization.int4_algorithm: '{inputs.recipe.quantization.int4_algorithm}' is not honoured by the TensorRT backend "
            "(its INT4 weight-only graph is symmetric round-to-nearest block DequantizeLinear); use 'rtn', or a backend that packs GPTQ codes (ort-cpu)"
        )
    asymmetric = sorted({e.rule for e in int4 if not e.symmetric})
    if asymmetric:
        raise InputError(
            f"recipes/{where}.yaml: precision rule(s) {', '.join(repr(r) for r in asymmetric)}: symmetric: false is not honoured for INT4 by the TensorRT backend "
            "(TensorRT takes symmetric INT4 weights, zero point 0); set symmetric: true"
        )


class TensorRtOptions(Strict):
    """``backend_options`` for the tensorrt backend: the optimisation profile per dynamic dim, [min, opt, max]."""

    trt_profile: dict[str, tuple[int, int, int]] = {}
    # KV-cache decoders: the profile is derived from these (see tensorrt/profiles.py); None: from the model.
    context_length: int | None = Field(default=None, ge=2)
    prefill_chunk: int | None = Field(default=None, ge=1)


class TensorRtBackend(Backend):
    name = "tensorrt"
    options_model = TensorRtOptions
    description = "NVIDIA TensorRT: explicit-quantization ONNX (INT8 Q/DQ, INT4 block DQ, FP16) + engine on the GPU"

    def runtime_kind(self, artifact: Artifact) -> str:
        return "stand_in" if artifact.extra.get("stand_in") or artifact.where.startswith("stand-in") else "native"

    def availability(self) -> Availability:
        version, gpu, reason = tensorrt_status()
        if version and gpu:
            return Availability(True, True, reason)
        return Availability(True, True, f"{reason}; the explicit-quantization ONNX is built here and runs on ONNX Runtime CPU as a stand-in")

    def build(self, inputs: BuildInputs) -> Artifact:
        refuse_unhonoured_int4(inputs)
        version, gpu, reason = tensorrt_status()
        options = {**inputs.target.backend_options, **inputs.recipe.backend_options}
        workspace = int(inputs.target.memory_budget_mb * WORKSPACE_SHARE) << 20
        files: dict[str, str] = {}
        checks: dict[str, Any] = {}
        commands: list[str] = []
        engines: dict[str, str] = {}
        profiles: dict[str, Any] = {}
        for component, source in inputs.exported.items():
            model = onnx.load(str(source))
            entries = inputs.plan.for_component(component)
            residual = {i.name for i in classify_graph(model) if i.role == "residual_add"}
            model = explicit_quantization_graph(model, component, entries, inputs.ranges.get(component))
            check = check_explicit_quantization(model, residual)
            if check.problems:
                raise InputError(f"{component}: the explicit-quantization graph breaks TensorRT's rules: {'; '.join(check.problems[:5])}")
            name = f"{component}.onnx"
            onnx.save(model, str(inputs.out_dir / name))
            files[component] = name
            checks[component] = check.to_json()
            derived = derive_profile(model, options, _sequence_max(inputs))
            profile = derived.shapes
            profiles[component] = derived.to_json()
            commands.append(trtexec_command(name, f"{component}.engine", profile, workspace >> 20))
            if version and gpu:
                engines[component] = self._engine(inputs, name, profile, workspace, version, gpu)
        _write_script(inputs.out_dir, commands)
        extra = {"quantization_check": checks, "tensorrt": version, "gpu": gpu, "engines": engines, "workspace_bytes": workspace, "profiles": profiles}
        if engines:
            return Artifact(self.name, files, runs_here=True, where=f"TensorRT {version} engine on {gpu} (Polygraphy TrtRunner)", notes=[f"engines built here: {', '.join(engines.values())}"], extra=extra)
        notes = [STAND_IN, f"why: {reason}", "build_engine.sh builds the engines on the device (trtexec --stronglyTyped)"]
        return Artifact(self.name, files, runs_here=True, where=f"stand-in: explicit-quantization ONNX on ONNX Runtime CPU ({STAND_IN})", notes=notes, extra={**extra, "stand_in": True})

    def _engine(self, inputs: BuildInputs, name: str, profile: dict, workspace: int, version: str, gpu: str) -> str:
        # The profile and workspace come from the target; they shape the engine as much as the recipe does.
        settings = json.dumps({"recipe": json.loads(inputs.recipe.model_dump_json()), "target": json.loads(inputs.target.model_dump_json()), "profile": profile, "workspace": workspace}, sort_keys=True, default=str)
        key = engine_cache_key(inputs.out_dir / name, settings, version, gpu)
        cache = _cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        cached = cache / f"{key}.engine"
        if not cached.exists():
            partial = cache / f"{key}.engine.partial-{uuid.uuid4().hex[:8]}"  # concurrent builds never share one
            try:
                build_engine(inputs.out_dir / name, partial, profile, workspace, cache / "timing.cache")
                partial.replace(cached)
            finally:
                partial.unlink(missing_ok=True)
        engine_name = f"{Path(name).stem}.engine"
        shutil.copyfile(cached, inputs.out_dir / engine_name)
        return engine_name

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        engines = artifact.extra.get("engines") or {}
        if engines:
            return self._trt_runner(artifact_dir, engines)
        run = cpu_runner(artifact_dir, artifact.components)  # the stand-in: the same ONNX on ORT CPU
        # KV-cache decoders: the stand-in accepts any shape, the engine only its profile's. A call
        # outside it (a prompt longer than the prefill chunk) is refused here as it would be there.
        guarded = {c: p for c, p in (artifact.extra.get("profiles") or {}).items() if any("past" in d for d in p.get("dims", {}))}
        if not guarded:
            return run

        def checked(component: str, feeds: Feeds) -> Outputs:
            problems = outside_profile(guarded[component], feeds) if component in guarded else []
            if problems:
                raise InputError(f"{component}: a call outside the engine's optimisation profile ({'; '.join(problems)}); raise backend_options.prefill_chunk / context_length, or set backend_options.trt_profile")
            return run(component, feeds)

        return checked

    def _trt_runner(self, artifact_dir: Path, engines: dict[str, str]) -> ComponentRunner:
        version, gpu, reason = tensorrt_status()
        if not (version and gpu):
            raise BackendUnavailable(f"this artifact holds TensorRT engines, which need TensorRT and a GPU here: {reason}")
        from polygraphy.backend.common import BytesFromPath  # noqa: PLC0415
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner  # noqa: PLC0415

        runners: dict[str, Any] = {}

        def run(component: str, feeds: Feeds) -> Outputs:
            if component not in runners:
                runners[component] = TrtRunner(EngineFromBytes(BytesFromPath(str(artifact_dir / engines[component]))))
                runners[component].activate()
            outputs = runners[component].infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            return {k: np.asarray(v) for k, v in outputs.items()}

        return run

