"""torch component -> CoreML ML Program, with the precision plan applied by coremltools' compression.

Conversion goes through ``torch.export`` (coremltools' supported path for recent torch):

* Dynamic dims are exported twice: once with ``Dim.AUTO`` to learn each dim's range, then with
  named dims of min 1 (``Dim.AUTO`` starts ranges at 2, and CoreML would then refuse batch 1).
* ``run_decompositions`` with a small table: with torch 2.13, coremltools 9.0 has no converter for
  ``aten.new_ones`` / ``new_zeros`` / ``new_full`` nor for ``aten.__and__.Tensor`` (CLIP's causal
  and padding mask); they are decomposed into ops it knows (``full``, ``bitwise_and``).
* ``aten.alias`` nodes (SigLIP's text tower) are dropped after decomposition: coremltools 9 has
  no converter for them and in an inference graph they are the identity.
* Dynamic shapes are passed in ``forward``'s signature shape, so a KV-cache decoder's ``*past``
  takes one tuple; a decoder whose export guards its example sizes is re-exported size-oblivious.
* FP16 compute by default; ops of the plan's FP32 roles stay FP32 (op_selector).
* Weight compression per plan entry (``coremltools.optimize.coreml``): INT8 per-channel symmetric
  linear quantization, INT4 per-block (iOS18/macOS15 opset), or palettization of the INT8 entries
  as a recipe option; FP16 entries (patch embedding, projector) are left alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

from edgecompile.backends.common.export_shapes import signature_shaped
from edgecompile.errors import InputError
from edgecompile.models.adapter import ComponentSpec
from edgecompile.plan.plan import PlanEntry

# MIL op types that the plan's FP32 roles map to (kept FP32 when the plan says fp32).
FP32_ROLE_OPS = {"layernorm": {"layer_norm", "reduce_mean", "pow", "sqrt", "rsqrt", "real_div", "sub", "mul", "add"}, "softmax": {"softmax", "reduce_max", "exp", "reduce_sum"}}


def _quiet() -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    for name in ("coremltools", "torch.export", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return stack


def _decompositions() -> dict:
    import torch
    from torch._decomp import get_decompositions

    table = get_decompositions([torch.ops.aten.new_ones, torch.ops.aten.new_zeros, torch.ops.aten.new_full])
    table[torch.ops.aten.__and__.Tensor] = lambda a, b: torch.ops.aten.bitwise_and.Tensor(a, b)
    return table


def by_signature(spec: ComponentSpec, per_input: dict[str, Any]) -> tuple[Any, ...]:
    """``dynamic_shapes`` shaped like ``forward``'s signature, one entry per parameter.

    torch.export matches a dict's keys to the parameter names, and a ``*past`` parameter takes one
    tuple for all the cache tensors: a dict keyed by the component's input names (``past_key_0``...)
    is refused for a KV-cache decoder ("dynamic_shapes keys do not match the arguments").
    """
    return signature_shaped(spec, [per_input.get(n) or None for n in spec.input_names])


def export_program(spec: ComponentSpec) -> Any:
    """``torch.export`` of one component with min-1 dynamic dims, decomposed for coremltools."""
    import torch

    auto = by_signature(spec, {n: {axis: torch.export.Dim.AUTO for axis in spec.dynamic_axes.get(n, {})} for n in spec.input_names})
    with torch.no_grad():
        probe = torch.export.export(spec.module.eval(), spec.example_inputs, dynamic_shapes=auto)
    by_name = {n.name: n for n in probe.graph.nodes if n.op == "placeholder"}
    # torch names a ``*past`` argument's placeholders after the parameter: map them by position
    placeholders = dict(zip(spec.input_names, (by_name[u] for u in probe.graph_signature.user_inputs), strict=True))
    upper: dict[str, int | None] = {}
    for name in spec.input_names:
        for axis, label in spec.dynamic_axes.get(name, {}).items():
            size = placeholders[name].meta["val"].shape[axis]
            if not hasattr(size, "node"):
                continue  # torch.export found this dim static
            value_range = probe.range_constraints.get(size.node.expr)
            try:
                hi = int(value_range.upper) if value_range is not None else None
            except (TypeError, ValueError, OverflowError, AttributeError):  # torch int_oo
                hi = None  # unbounded
            upper[label] = hi if label not in upper else (min(x for x in (upper[label], hi) if x is not None) if (upper[label] or hi) else None)
    dims = {label: torch.export.Dim(label, min=1, max=hi) if hi else torch.export.Dim(label, min=1) for label, hi in upper.items()}
    shapes = by_signature(spec, {n: {axis: dims[label] for axis, label in spec.dynamic_axes.get(n, {}).items() if label in dims} for n in spec.input_names})
    import torch.fx.experimental._config as fx_config

    try:
        with torch.no_grad():
            program = torch.export.export(spec.module.eval(), spec.example_inputs, dynamic_shapes=shapes)
    except torch._dynamo.exc.UserError:
        # A KV-cache decoder ties total_length to past_length + sequence, and its example sizes
        # specialize guards (total_length >= 4) that min-1 dims violate: size-oblivious export
        # keeps them symbolic. Not the default: it adds guards (batch != 1) to other towers.
        with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
            program = torch.export.export(spec.module.eval(), spec.example_inputs, dynamic_shapes=shapes)
    return drop_aliases(program.run_decompositions(_decompositions()))


def drop_aliases(program: Any) -> Any:
    """Remove ``aten.alias`` nodes, which coremltools 9 cannot convert ("Unsupported fx node alias").

    An alias is a view that shares its input's storage: in an inference graph with no mutation
    it is the identity, so each use reads the input instead (SigLIP's text tower takes the last
    token's hidden state through one). Graph outputs that are aliases are redirected the same way.
    """
    import torch

    graph = program.graph_module.graph
    aliases = [n for n in graph.nodes if n.op == "call_function" and n.target in (torch.ops.aten.alias.default, torch.ops.aten.alias_copy.default)]
    for node in aliases:
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
    if aliases:
        graph.lint()
        program.graph_module.recompile()
    return program


def _fp32_selector(entries: list[PlanEntry]) -> Callable[[Any], bool]:
    keep = set().union(*(FP32_ROLE_OPS.get(e.role, set()) for e in entries if e.precision == "fp32")) if entries else set()

    def selector(op: Any) -> bool:  # True: this op computes in FP16
        return op.op_type not in keep

    return selector


def _target_and_precision(entries: list[PlanEntry], deployment: str, compute_precision: str, stateful: bool = False) -> tuple[Any, Any]:
    """coremltools' deployment target and compute precision for the recipe's options, refusing what the target cannot hold."""
    import coremltools as ct

    targets = {"macOS15": ct.target.macOS15, "iOS18": ct.target.iOS18, "macOS14": ct.target.macOS14, "iOS17": ct.target.iOS17}
    if deployment not in targets:
        raise InputError(f"backend_options.coreml_deployment_target: expected one of {', '.join(targets)}, got '{deployment}'")
    if any(e.precision == "int4" for e in entries) and deployment not in ("macOS15", "iOS18"):
        raise InputError(f"backend_options.coreml_deployment_target: INT4 per-block weights need iOS18/macOS15, got '{deployment}'")
    if stateful and deployment not in ("macOS15", "iOS18"):
        raise InputError(f"backend_options.coreml_deployment_target: a stateful KV cache (coreml_kv_cache: stateful) needs iOS18/macOS15, got '{deployment}'; or set coreml_kv_cache: explicit")
    precision = ct.transform.FP16ComputePrecision(op_selector=_fp32_selector(entries)) if compute_precision == "fp16" else ct.precision.FLOAT32
    return targets[deployment], precision


def convert_stateful(decoder: Any, layout: Any, entries: list[PlanEntry], deployment: str, compute_precision: str) -> Any:
    """The decoder as an ML Program with the KV cache as two CoreML states (see ``backends.coreml.stateful``).

    ``decoder`` is a :class:`~edgecompile.backends.coreml.stateful.StatefulDecoder`; the chunk length
    is dynamic from 1 to L-1 tokens (L: its fixed cache length), every other shape static.
    """
    import coremltools as ct
    import numpy as np
    import torch

    from edgecompile.backends.coreml.stateful import STATE_NAMES, stateful_example_inputs

    target, precision = _target_and_precision(entries, deployment, compute_precision, stateful=True)
    seq = torch.export.Dim("sequence", min=1, max=layout.context - 1)
    shapes = ({1: seq}, {1: seq}, None, None)
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=layout.state_shape, dtype=np.float16), name=n) for n in STATE_NAMES]
    with _quiet():
        with torch.no_grad():
            program = torch.export.export(decoder.eval(), stateful_example_inputs(layout), dynamic_shapes=shapes)
        program = drop_aliases(program.run_decompositions(_decompositions()))
        model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=target, compute_precision=precision, states=states)
    mlspec = model.get_spec()
    produced = [o.name for o in mlspec.description.output]
    if len(produced) != 1:
        raise InputError(f"decoder: the stateful CoreML program has {len(produced)} outputs, expected 1 (logits)")
    if produced[0] != "logits":
        ct.utils.rename_feature(mlspec, produced[0], "logits")
    return ct.models.MLModel(mlspec, weights_dir=model.weights_dir, skip_model_load=True)


def convert(spec: ComponentSpec, entries: list[PlanEntry], deployment: str, compute_precision: str) -> Any:
    """The ML Program for one component, outputs renamed to the component's output names."""
    import coremltools as ct

    target, precision = _target_and_precision(entries, deployment, compute_precision)
    with _quiet():
        program = export_program(spec)
        model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=target, compute_precision=precision)
    mlspec = model.get_spec()
    taken = [i.name for i in mlspec.description.input]
    if len(taken) != len(spec.input_names):
        raise InputError(f"{spec.name}: CoreML program has {len(taken)} inputs, the component declares {len(spec.input_names)}")
    for old, new in zip(taken, spec.input_names, strict=True):  # ``*past`` arguments come out as past_0, past_1...
        if old != new:
            ct.utils.rename_feature(mlspec, old, new)
    produced = [o.name for o in mlspec.description.output]
    if len(produced) != len(spec.output_names):
        raise InputError(f"{spec.name}: CoreML program has {len(produced)} outputs, the component declares {len(spec.output_names)}")
    for old, new in zip(produced, spec.output_names, strict=True):
        if old != new:
            ct.utils.rename_feature(mlspec, old, new)
    return ct.models.MLModel(mlspec, weights_dir=model.weights_dir, skip_model_load=True)


def _key(name: str) -> str:
    """Normalize a module path or a MIL weight-constant name to one comparable key."""
    name = re.sub(r"_to_fp(16|32)$", "", name)
    name = re.sub(r"^p_", "", name)
    name = re.sub(r"_weight$", "", name)
    name = re.sub(r"^m_", "", name)
    return name.replace(".", "_")


def weight_constants(model: Any) -> dict[str, str]:
    """MIL weight-constant name -> key of the module owning it (for linear/conv/matmul weights)."""
    from coremltools.optimize.coreml import get_weights_metadata

    with _quiet():
        metadata = get_weights_metadata(model, weight_threshold=0)
    out = {}
    for name, meta in metadata.items():
        if any(c.op_type in ("linear", "conv", "matmul") for c in meta.child_ops) and len(meta.val.shape) >= 2:
            out[name] = _key(name)
    return out


def compress(model: Any, entries: list[PlanEntry], palettize_bits: int | None) -> tuple[Any, dict[str, str]]:
    """Apply the plan's INT8/INT4 entries to the matching weight constants; return (model, const -> precision)."""
    import coremltools.optimize.coreml as cto

    wanted = {_key(e.module): e for e in entries if e.precision in ("int8", "int4") and e.module}
    chosen: dict[str, str] = {}
    int8_configs: dict[str, Any] = {}
    int4_configs: dict[str, Any] = {}
    for const, key in weight_constants(model).items():
        entry = wanted.get(key)
        if entry is None:
            continue
        if entry.precision == "int4":
            int4_configs[const] = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=entry.block_size or 32, weight_threshold=0)
            chosen[const] = "int4"
        elif palettize_bits:
            int8_configs[const] = cto.OpPalettizerConfig(mode="kmeans", nbits=palettize_bits, granularity="per_tensor", weight_threshold=0)
            chosen[const] = f"palettized{palettize_bits}"
        else:
            int8_configs[const] = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)
            chosen[const] = "int8"
    with _quiet():
        if int8_configs and palettize_bits:
            model = cto.palettize_weights(model, cto.OptimizationConfig(op_name_configs=int8_configs))
        elif int8_configs:
            model = cto.linear_quantize_weights(model, cto.OptimizationConfig(op_name_configs=int8_configs))
        if int4_configs:
            model = cto.linear_quantize_weights(model, cto.OptimizationConfig(op_name_configs=int4_configs))
    return model, chosen
