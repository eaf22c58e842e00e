"""CoreML: one ML Program (.mlpackage) per component, converted from torch, weights compressed per plan.

Conversion and compression run anywhere coremltools installs (Linux included); prediction needs
macOS. On Linux the artifact does not run (``runs_here=False``) and validation reads
:meth:`CoreMlBackend.structural_check` instead: op counts, the dtypes of the linear weights after
compression, how much of the plan was applied, size, and whether inputs/outputs match the exported
components. Accuracy, drift, latency and memory are then not measured, and their gates fail with
"metric could not be computed" — a Linux build of an Apple recipe never passes silently.

CoreML compresses weights, not activations: the plan's INT8 (W8A8) nodes become INT8 per-channel
weights with FP16 activations (W8A16). Activation quantization in coremltools
(``linear_quantize_activations``) calibrates by running the model, which needs macOS.

A generative VLM's decoder is converted with a stateful KV cache by default (``coreml_kv_cache:
stateful``, iOS18/macOS15): the cache is two CoreML states of fixed length ``context_length``
written in place (``backends.coreml.stateful``); ``coreml_kv_cache: explicit`` keeps the cache as
inputs/outputs with dynamic lengths. The structural check reads the states' names, shapes and
dtypes from the saved program.

Recipe option ``backend_options.coreml_format: ort-coreml-ep`` writes FP16 ONNX graphs for ONNX
Runtime's CoreML execution provider instead (float plans only: that EP does not take Q/DQ graphs),
with the EP's static partition coverage from onnxruntime's mobile usability checker.
"""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import numpy as np
import onnx

from edgecompile.config.target import Strict
from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs, artifact_bytes
from edgecompile.errors import BackendUnavailable, InputError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs

COMPRESSED_OPS = {"constexpr_blockwise_shift_scale", "constexpr_affine_dequantize", "constexpr_lut_to_dense"}
_DTYPES = {"INT8": "int8", "INT4": "int4", "UINT8": "uint8", "UINT4": "uint4", "FLOAT16": "fp16", "FLOAT32": "fp32", "UINT6": "uint6", "UINT2": "uint2", "UINT3": "uint3", "UINT1": "uint1"}


def quiet_import_coremltools():  # noqa: ANN201 - the coremltools module
    """Import coremltools without its import-time chatter on Linux.

    On Linux it logs one "Failed to load _MLModelProxy" line per native proxy and warns about the
    torch version; neither is actionable here (prediction needs macOS, which availability() says).
    """
    import contextlib
    import io
    import logging
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            import coremltools
        finally:
            logging.disable(previous)
    return coremltools


def _onnx_io(path: Path) -> dict[str, list[str]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {"inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}


def _program_ops(spec: Any) -> list[Any]:
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def _tensor_dtype(value_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    return _DTYPES.get(MIL_pb2.DataType.Name(value_type.tensorType.dataType), MIL_pb2.DataType.Name(value_type.tensorType.dataType).lower())


def program_summary(mlpackage: Path) -> dict[str, Any]:
    """Op counts and the storage dtype of every linear/conv/matmul weight of one ML Program."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(mlpackage))
    ops = _program_ops(spec)
    producer = {out.name: op for op in ops for out in op.outputs}
    weights: list[str] = []
    for op in ops:
        if op.type not in ("linear", "conv", "matmul") or ("weight" not in op.inputs and "y" not in op.inputs):
            continue
        binding = (op.inputs["weight"] if "weight" in op.inputs else op.inputs["y"]).arguments[0]
        if binding.HasField("value"):
            weights.append(_tensor_dtype(binding.value.type))
            continue
        source = producer.get(binding.name)
        if source is None:
            continue  # an activation operand (attention matmuls), not a weight
        if source.type in COMPRESSED_OPS:
            key = "data" if "data" in source.inputs else "indices"
            data = source.inputs[key].arguments[0] if key in source.inputs else None
            if data is not None and data.HasField("value"):
                dtype = _tensor_dtype(data.value.type)
            else:
                data_op = producer.get(data.name) if data is not None else None
                dtype = _tensor_dtype(data_op.outputs[0].type) if data_op is not None else "unknown"
            weights.append(f"palettized-{dtype}" if source.type == "constexpr_lut_to_dense" else dtype)
        elif source.type == "const":
            weights.append(_tensor_dtype(source.outputs[0].type))
    description = spec.description
    return {
        "ops": dict(sorted(Counter(op.type for op in ops).items())),
        "weights": dict(Counter(weights)),
        "inputs": [i.name for i in description.input],
        "outputs": [o.name for o in description.output],
        "specification_version": int(spec.specificationVersion),
        "bytes": artifact_bytes(mlpackage),
    }


def program_states(mlpackage: Path) -> dict[str, dict[str, Any]]:
    """The states an ML Program declares: name -> {shape, dtype} (empty for a stateless program)."""
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    out = {}
    for state in ct.utils.load_spec(str(mlpackage)).description.state:
        array = state.type.stateType.arrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
        out[state.name] = {"shape": [int(d) for d in array.shape], "dtype": {"FLOAT16": "fp16", "FLOAT32": "fp32"}.get(dtype, dtype.lower())}
    return out


def _stateful_layout(inputs: BuildInputs, loaded: Any, options: dict[str, Any]):  # noqa: ANN202 - StatefulLayout | None
    """The stateful cache's layout for a generative decoder, or None (explicit layout) where it does not apply.

    It covers the plain causal ``DecoderWithCache`` with 1-D positions (Llama, Qwen2, Mistral...);
    a prefix-LM mask (PaliGemma) or M-RoPE positions (Qwen2-VL) keep the explicit layout.
    """
    if inputs.adapter.family != "generative" or options.get("coreml_kv_cache", "stateful") != "stateful":
        return None
    from edgecompile.backends.coreml.stateful import StatefulLayout
    from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache

    decoder = next((c.module for c in inputs.adapter.components(loaded) if c.name == "decoder"), None)
    text = loaded.config.get_text_config(decoder=True)
    cache = CacheLayout.from_text_config(text)
    if type(decoder) is not DecoderWithCache or cache.position_dims != 1:
        return None
    limit = getattr(text, "max_position_embeddings", None)
    wanted = options.get("context_length")
    if wanted is not None and limit is not None and wanted > limit:
        raise InputError(f"backend_options.context_length: {wanted} exceeds the model's max_position_embeddings {limit}")
    context = int(wanted or min(limit or 4096, 4096))
    return StatefulLayout(cache.layers, cache.kv_heads, cache.head_dim, cache.hidden, context)


def pad_empty_past(feeds: Feeds) -> tuple[Feeds, bool]:
    """A decoder call with an empty KV cache, given one masked slot instead (CoreML has no 0-size dims).

    The converted decoder's ``past_*`` inputs take 1..n cache slots. The first prefill has none, so
    one zero slot is put in front with ``attention_mask`` 0 there: the slot is never attended to
    and the result is the same; :func:`crop_padded_present` drops it from the returned cache.
    """
    past = [k for k in feeds if k.startswith("past_")]
    if not past or any(feeds[k].shape[2] != 0 for k in past) or "attention_mask" not in feeds:
        return feeds, False
    out = dict(feeds)
    for k in past:
        shape = list(feeds[k].shape)
        shape[2] = 1
        out[k] = np.zeros(shape, dtype=feeds[k].dtype)
    mask = feeds["attention_mask"]
    out["attention_mask"] = np.concatenate([np.zeros((*mask.shape[:-1], 1), dtype=mask.dtype), mask], axis=-1)
    return out, True


def crop_padded_present(outputs: Outputs) -> Outputs:
    """The returned cache without the slot :func:`pad_empty_past` added."""
    return {k: (v[:, :, 1:] if k.startswith("present_") else v) for k, v in outputs.items()}


class CoreMlOptions(Strict):
    """``backend_options`` for the coreml backend."""

    coreml_format: Literal["mlprogram", "ort-coreml-ep"] = "mlprogram"
    coreml_palettize_bits: Literal[1, 2, 3, 4, 6, 8] | None = None
    coreml_deployment_target: str = "macOS15"  # checked against coremltools' targets when converting
    coreml_compute_precision: Literal["fp16", "fp32"] = "fp16"
    coreml_kv_cache: Literal["stateful", "explicit"] = Field(default="stateful", description="generative decoders: the KV cache as CoreML states (iOS18/macOS15) or as explicit inputs/outputs")
    context_length: int | None = Field(default=None, ge=2, le=65536, description="L: the stateful cache's slots; default min(max_position_embeddings, 4096)")


class CoreMlBackend(Backend):
    name = "coreml"
    options_model = CoreMlOptions
    description = "Apple CoreML ML Program (coremltools): FP16 compute, INT8/INT4/palettized weights; runs on macOS"

    def availability(self) -> Availability:
        try:
            ct = quiet_import_coremltools()
        except ImportError:
            return Availability(False, False, "coremltools is not installed (pip install coremltools)")
        here = platform.system() == "Darwin"
        return Availability(True, here, f"coremltools {ct.__version__}" + ("" if here else f"; prediction needs macOS, this is {platform.system()} (build and structural checks only)"))

    def build(self, inputs: BuildInputs) -> Artifact:
        options = {**inputs.target.backend_options, **inputs.recipe.backend_options}
        if options.get("coreml_format", "mlprogram") == "ort-coreml-ep":
            from edgecompile.backends.coreml.ort_ep import build_ort_coreml_ep

            return build_ort_coreml_ep(inputs)
        if inputs.model_dir is None or inputs.adapter is None:
            raise InputError("the coreml backend converts from the torch model: the build needs the model directory and adapter (BuildInputs.model_dir/adapter)")
        from edgecompile.backends.coreml.convert import compress, convert

        loaded = inputs.adapter.load(Path(inputs.model_dir))
        palettize = options.get("coreml_palettize_bits")
        if palettize is not None and palettize not in (1, 2, 3, 4, 6, 8):
            raise InputError(f"backend_options.coreml_palettize_bits: expected one of 1, 2, 3, 4, 6, 8, got {palettize!r}")
        deployment = str(options.get("coreml_deployment_target", "macOS15"))
        compute = str(options.get("coreml_compute_precision", "fp16"))
        files: dict[str, str] = {}
        applied: dict[str, dict[str, str]] = {}
        expected_io = {c: _onnx_io(p) for c, p in inputs.exported.items()}
        stateful = _stateful_layout(inputs, loaded, options)
        for spec in inputs.adapter.components(loaded):
            entries = inputs.plan.for_component(spec.name)
            if spec.name == "decoder" and stateful is not None:
                from edgecompile.backends.coreml.convert import convert_stateful
                from edgecompile.backends.coreml.stateful import INPUT_NAMES, stateful_from_decoder

                model = convert_stateful(stateful_from_decoder(spec.module, stateful), stateful, entries, deployment, compute)
                expected_io[spec.name] = {"inputs": list(INPUT_NAMES), "outputs": ["logits"]}
            else:
                model = convert(spec, entries, deployment, compute)
            model, chosen = compress(model, entries, palettize)
            name = f"{spec.name}.mlpackage"
            model.save(str(inputs.out_dir / name))
            files[spec.name] = name
            applied[spec.name] = chosen
        planned = {c: sum(1 for e in inputs.plan.for_component(c) if e.precision in ("int8", "int4")) for c in files}
        notes = [
            "INT8 plan entries are INT8 per-channel weights with FP16 activations (W8A16): CoreML's activation quantization calibrates by running the model, which needs macOS",
            f"minimum deployment target {deployment}, compute precision {compute}",
        ]
        here = platform.system() == "Darwin"
        where = f"CoreML on {platform.machine()} macOS" if here else f"not executed: CoreML prediction needs macOS (built on {platform.system()} {platform.machine()})"
        extra = {"expected_io": expected_io, "compressed": applied, "planned_integer_entries": planned, "palettize_bits": palettize, "deployment_target": deployment}
        if stateful is not None:
            extra["stateful"] = asdict(stateful)
            notes.append(f"decoder KV cache: CoreML states key_cache/value_cache {list(stateful.state_shape)} FP16 ({stateful.state_bytes() / 2**20:.2f} MiB), written in place; context {stateful.context} tokens")
        elif inputs.adapter.family == "generative":
            notes.append("decoder KV cache: explicit inputs/outputs (backend_options.coreml_kv_cache: explicit, or a decoder the stateful layout does not cover)")
        return Artifact(self.name, files, runs_here=here, where=where, notes=notes, extra=extra)

    def structural_check(self, artifact_dir: Path, artifact: Artifact) -> dict[str, Any]:
        if artifact.extra.get("format") == "ort-coreml-ep":
            return dict(artifact.extra.get("partition_metrics", {}))
        metrics: dict[str, Any] = {}
        all_match = True
        planned_total = applied_total = 0
        for component, file in artifact.components.items():
            summary = program_summary(artifact_dir / file)
            expected = artifact.extra.get("expected_io", {}).get(component, {})
            io_match = summary["inputs"] == expected.get("inputs") and summary["outputs"] == expected.get("outputs")
            all_match &= io_match
            total = sum(summary["weights"].values())
            metrics[f"coreml.{component}.ops"] = summary["ops"]
            metrics[f"coreml.{component}.op_count"] = sum(summary["ops"].values())
            metrics[f"coreml.{component}.weights"] = summary["weights"]
            metrics[f"coreml.{component}.linear_weights"] = total
            for dtype in ("int8", "int4", "fp16", "fp32"):
                metrics[f"coreml.{component}.weights_{dtype}_fraction"] = summary["weights"].get(dtype, 0) / total if total else 0.0
            metrics[f"coreml.{component}.io_match"] = 1.0 if io_match else 0.0
            metrics[f"coreml.{component}.specification_version"] = summary["specification_version"]  # 9: iOS18/macOS15
            planned = int(artifact.extra.get("planned_integer_entries", {}).get(component, 0))
            compressed = sum(n for d, n in summary["weights"].items() if d in ("int8", "int4") or d.startswith("palettized"))
            planned_total += planned
            applied_total += min(compressed, planned)
        if "stateful" in artifact.extra and "decoder" in artifact.components:
            from edgecompile.backends.coreml.stateful import STATE_NAMES, StatefulLayout

            declared = program_states(artifact_dir / artifact.components["decoder"])
            shape = list(StatefulLayout(**artifact.extra["stateful"]).state_shape)
            metrics["coreml.decoder.states"] = declared
            match = sorted(declared) == sorted(STATE_NAMES) and all(d == {"shape": shape, "dtype": "fp16"} for d in declared.values())
            metrics["coreml.decoder.state_match"] = 1.0 if match else 0.0
            all_match &= match
        metrics["coreml.io_match"] = 1.0 if all_match else 0.0
        metrics["coreml.plan_applied_fraction"] = applied_total / planned_total if planned_total else 1.0
        return metrics

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        if platform.system() != "Darwin":
            raise BackendUnavailable(f"CoreML prediction needs macOS; this is {platform.system()}")
        if artifact.extra.get("format") == "ort-coreml-ep":
            from edgecompile.backends.coreml.ort_ep import ort_coreml_runner

            return ort_coreml_runner(artifact_dir, artifact)
        return CoreMlRunner(artifact_dir, artifact)


class CoreMlRunner:
    """The runtime's ComponentRunner on CoreML (macOS): ``MLModel.predict`` per component.

    A stateful decoder also offers :meth:`fast_decoder` (``runtime.generate`` drives it with one
    ``make_state()`` per answer, keys/values written in place), and answers explicit-cache calls
    (``past_*`` in, ``present_*`` out) by writing the past into a fresh state and reading it back.
    """

    def __init__(self, artifact_dir: Path, artifact: Artifact) -> None:
        self.directory, self.artifact = artifact_dir, artifact
        self.models: dict[str, Any] = {}
        self.layout = None
        if "stateful" in artifact.extra:
            from edgecompile.backends.coreml.stateful import StatefulLayout

            self.layout = StatefulLayout(**artifact.extra["stateful"])

    def model(self, component: str) -> Any:
        if component not in self.models:
            import coremltools as ct

            self.models[component] = ct.models.MLModel(str(self.directory / self.artifact.components[component]), compute_units=ct.ComputeUnit.ALL)
        return self.models[component]

    def fast_decoder(self, layers: int, max_length: int):  # noqa: ANN201 - StatefulCoreMlDecoder | None
        if self.layout is None:
            return None
        if max_length > self.layout.context:
            raise InputError(f"decoder: the prompt and max_new_tokens need {max_length} cache slots, the stateful CoreML decoder holds {self.layout.context} (backend_options.context_length)")
        from edgecompile.backends.coreml.stateful import StatefulCoreMlDecoder

        return StatefulCoreMlDecoder(self.model("decoder"), self.layout, lambda ids: self("embed_tokens", {"input_ids": ids})["inputs_embeds"])

    def __call__(self, component: str, feeds: Feeds) -> Outputs:
        model = self.model(component)
        if component == "decoder" and self.layout is not None:
            from edgecompile.backends.coreml.stateful import explicit_call

            return explicit_call(model, self.layout, feeds)
        feeds, padded = pad_empty_past(feeds)
        kinds = {i.name: i.type.multiArrayType.dataType for i in model.get_spec().description.input}
        cast = {65568: np.float32, 65552: np.float16, 131104: np.int32}  # ArrayFeatureType.ArrayDataType values
        prepared = {k: np.ascontiguousarray(v.astype(cast.get(kinds[k], v.dtype))) for k, v in feeds.items() if k in kinds}
        outputs = {k: np.asarray(v, dtype=np.float32) for k, v in model.predict(prepared).items()}
        return crop_padded_present(outputs) if padded else outputs
