"""ONNX Runtime CPU: Q/DQ INT8 (W8A8) and MatMulNBits INT4 graphs, run with ORT's CPU kernels.

The artifact is a portable ONNX graph (the same file serves x86-64 and ARM64): hardware-specific
graph rewrites (QDQ fusion into integer kernels, layout changes) happen when the session loads it
with ORT_ENABLE_ALL on the device, not offline.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs, release_memory
from edgecompile.backends.ort_cpu.decoder_prep import has_kv_cache, prepare_decoder
from edgecompile.backends.ort_cpu.kv_cache import apply_kv_cache_plan
from edgecompile.backends.ort_cpu.gather_quant import quantize_gathers
from edgecompile.backends.common.fp16_storage import store_weights_fp16
from edgecompile.backends.common.graph_tidy import finish
from edgecompile.backends.common.onnx_quant import QdqSettings, insert_matmul_nbits, insert_qdq
from edgecompile.models.adapter import ComponentRunner
from edgecompile.runtime.onnx_cpu import cpu_runner
from edgecompile.transforms.prequantized import Prequantized


class OrtCpuBackend(Backend):
    name = "ort-cpu"
    description = "ONNX Runtime CPU execution provider (x86-64 and ARM64): Q/DQ INT8 + MatMulNBits INT4"
    quantized_gather = frozenset({"int4"})  # GatherBlockQuantized
    int8_kv_cache = True  # GroupQueryAttention kv_cache_bit_width=8 (backends/ort_cpu/kv_cache.py)

    def availability(self) -> Availability:
        providers = ort.get_available_providers()
        ok = "CPUExecutionProvider" in providers
        return Availability(ok, ok, f"onnxruntime {ort.__version__} on {platform.machine()}" if ok else "onnxruntime has no CPU provider")

    def settings(self, inputs: BuildInputs) -> QdqSettings:
        q = inputs.recipe.quantization
        # No Q/DQ on MatMul outputs: onnxruntime then fuses DQ+DQ+MatMul into MatMulIntegerToFloat
        # (integer GEMM, float result) instead of QLinearMatMul + a requantize/dequantize round trip;
        # measured on ViT-B/32: fewer ops, slightly faster, cosine 0.99991 instead of 0.99987.
        extra = {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
        return QdqSettings(activation_type=q.activation_type, weight_type=q.weight_type, activation_symmetric=q.activation_symmetric, extra=extra)

    def build(self, inputs: BuildInputs) -> Artifact:
        from edgecompile.models.export import save_onnx

        files: dict[str, str] = {}
        notes: list[str] = []
        for component, source in inputs.exported.items():
            model = onnx.load(str(source))
            entries = inputs.plan.for_component(component)
            model = insert_qdq(model, component, entries, inputs.ranges[component], self.settings(inputs)) if component in inputs.ranges else model
            pre = Prequantized.load(inputs.prequantized[component]) if component in inputs.prequantized else None
            model = insert_matmul_nbits(model, entries, pre, inputs.ranges.get(component), inputs.recipe.quantization.activation_type)
            model, gathers = quantize_gathers(model, entries)
            notes += [f"{component}: {len(gathers)} embedding table(s) in INT4 blocks (GatherBlockQuantized)"] if gathers else []
            model, fusion_note = prepare_decoder(model, component)
            notes += [fusion_note] if fusion_note else []
            model, kv_note = apply_kv_cache_plan(model, entries, source, inputs.calibration_feeds, component)
            notes += [kv_note] if kv_note else []
            if inputs.token_pruning is not None and has_kv_cache(model):
                model, pruning_note = self._prune(model, component, inputs)
                notes.append(pruning_note)
            model, fp16_weights = store_weights_fp16(model, entries)
            if fp16_weights:
                notes.append(f"{component}: {len(fp16_weights)} FP16-planned weight(s) stored in FP16, computed in float32 (no FP16 arithmetic on this target)")
            name = f"{component}.onnx"
            save_onnx(finish(model), inputs.out_dir / name)  # external data past 2 GiB
            files[component] = name
            del model  # before the next component's graph is read: one component's weights at a time
            release_memory()
        return Artifact(self.name, files, runs_here=True, where=f"ONNX Runtime CPU on {platform.machine()} ({platform.node()})", notes=notes)

    def _prune(self, model: onnx.ModelProto, component: str, inputs: BuildInputs) -> tuple[onnx.ModelProto, str]:
        """QUOTA's online half: the prune steps of the calibrated schedule inside the fused decoder."""
        from edgecompile.backends.ort_cpu.token_pruning import insert_token_pruning
        from edgecompile.errors import InputError

        schedule, section = inputs.token_pruning, inputs.recipe.token_pruning
        try:
            model, report = insert_token_pruning(model, dict(zip(schedule.layers, schedule.keep_ratios, strict=True)), schedule.inputs.get("weights"), section.residual_bits)
        except ValueError as exc:
            raise InputError(f"token_pruning: {component}: {exc}") from None
        steps = ", ".join(f"after layer {layer} keep {ratio:.0%} (k={k})" for (layer, ratio), k in zip(report.layers.items(), schedule.budgets(), strict=True))
        return model, f"{component}: visual tokens pruned in the graph (QUOTA): {steps} of {schedule.reference_visual_tokens} image tokens; fed visual_token_mask, the decoder runs unpruned without it"

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        return cpu_runner(artifact_dir, artifact.components)
