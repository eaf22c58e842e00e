"""Last touches on a graph before it becomes an artifact: graph order, no exporter debug data."""

from __future__ import annotations

import onnx


def topological_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's rewriters append nodes out of order; the ONNX checker and other runtimes want graph order."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    wrapped.topological_sort()
    return wrapped.model


def strip_export_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node metadata (stack traces, module scopes).

    The build directory keeps it in export/ (roles are read from it); on the device it is dead
    weight, about 0.5% of a ViT-B artifact.
    """
    for node in model.graph.node:
        del node.metadata_props[:]
    return model


def declare_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every operator domain used by a node gets an opset import (some rewriters forget com.microsoft)."""
    declared = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node} - declared - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return model


def finish(model: onnx.ModelProto) -> onnx.ModelProto:
    """Graph order, declared domains, no exporter debug data."""
    return strip_export_metadata(declare_domains(topological_sort(model)))
