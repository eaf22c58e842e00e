"""A graph held without its weights (they stay on disk), and sessions that expose a few of its tensors.

Shared by calibration (the calibrate stage's ranges) and validation (per-layer attribution), so it
lives beside neither. Why a module of its own: attribution opens many sessions over the same two
graphs (one per chunk of tensors, one per cut-out node), and calibration one per component. Holding the weights in this process's protobuf and serializing them
for every session costs a copy of the weights each time and fails outright past 2 GiB. Here the
graph is held without its weights: a graph whose weights are already external data is loaded with
``load_external_data=False`` and its folder handed to onnxruntime
(``session.model_external_initializers_file_folder_path``); a graph with embedded weights is moved
once to external data in a scratch folder. Every session then reads the weights from disk and the
protobuf that is serialized is a few kilobytes.

It also estimates each tensor's size for a given feed (ONNX shape inference with the feed's
concrete input shapes), so that attribution can size its chunks by bytes, not by tensor count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

Feeds = dict[str, np.ndarray]

# Embedded weights above this are moved to a scratch external-data file (one write per graph).
_EXTERNALIZE_ABOVE = 16 * 2**20


def _has_external(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def graph_structure(path: Path) -> onnx.ModelProto:
    """The graph at ``path`` with every initializer's bytes cleared (names, types and dims kept).

    For readers of names and shapes only (the annotate stage's roles and rules): a graph under 2 GiB
    holds its weights inline, and loading every component's whole protobuf at once held them all
    (+1.5 GB on the 0.5 B LLaVA proxy); cleared one graph at a time, the peak is one graph's load.
    Not a runnable or checkable model: sessions and savers need the real file.
    """
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for name in _DATA_FIELDS:
            tensor.ClearField(name)
    return model


class WeightlessGraph:
    """A graph whose weights live in files on disk; sessions over it expose chosen tensors."""

    def __init__(self, model: onnx.ModelProto, folder: Path | None) -> None:
        self.model = model
        self.folder = folder

    @classmethod
    def open(cls, source: onnx.ModelProto | Path, scratch: Path, name: str) -> WeightlessGraph:
        """``source``: a model file (never loaded with its external weights) or an in-memory model (copied)."""
        if isinstance(source, Path):
            model, folder = onnx.load(str(source), load_external_data=False), source.parent
        else:
            model, folder = onnx.ModelProto(), None
            model.CopyFrom(source)
        if not _has_external(model) and model.ByteSize() > _EXTERNALIZE_ABOVE:
            # In place: raw weights are written to scratch and cleared from the protobuf.
            onnx.save_model(model, str(scratch / f"{name}.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{name}.onnx.data", size_threshold=1024)
            folder = scratch
        elif _has_external(model) and folder is None:
            raise ValueError(f"{name}: an in-memory model whose weights are external data needs the folder they live in (pass the model file instead)")
        return cls(model, folder)

    def options(self, level: object) -> object:
        from onnxruntime import SessionOptions

        options = SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = level
        options.intra_op_num_threads = 1
        # No arena: many short-lived sessions one after another; freed memory goes back to the system
        # instead of growing one arena per session (measured on CLIP ViT-B/32).
        options.enable_cpu_mem_arena = False
        if self.folder is not None:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.folder.resolve()))
        return options

    def session(self, outputs: list[str], level: object) -> object:
        """An ORT session over the whole graph with ``outputs`` added as graph outputs (typeless: ORT infers them)."""
        from onnxruntime import InferenceSession

        original = list(self.model.graph.output)
        present = {o.name for o in original}
        try:
            for name in outputs:
                if name not in present:
                    self.model.graph.output.append(onnx.ValueInfoProto(name=name))
            data = self.model.SerializeToString()
        finally:
            del self.model.graph.output[:]
            self.model.graph.output.extend(original)
        return InferenceSession(data, self.options(level), providers=["CPUExecutionProvider"])

    def sub_session(self, sub: onnx.ModelProto, level: object) -> object:
        """A session over a subgraph cut out of this graph (its initializers point at the same files)."""
        from onnxruntime import InferenceSession

        return InferenceSession(sub.SerializeToString(), self.options(level), providers=["CPUExecutionProvider"])

    def tensor_bytes(self, feed: Feeds) -> dict[str, int]:
        """Estimated bytes of every tensor whose shape is known once the inputs have ``feed``'s shapes."""
        shaped = onnx.ModelProto()
        shaped.CopyFrom(self.model)
        for value in shaped.graph.input:
            if value.name in feed:
                dims = value.type.tensor_type.shape.dim
                for dim, size in zip(dims, feed[value.name].shape, strict=False):
                    dim.Clear()
                    dim.dim_value = int(size)
        try:
            inferred = onnx.shape_inference.infer_shapes(shaped, data_prop=True)
        except Exception:  # noqa: BLE001 - an estimate only: unknown sizes fall back to the largest known
            return {}
        sizes: dict[str, int] = {}
        for value in (*inferred.graph.value_info, *inferred.graph.output):
            t = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            if not t.HasField("shape") or any(d < 0 for d in dims) or t.elem_type == 0:
                continue
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
            sizes[value.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
        return sizes
