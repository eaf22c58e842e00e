"""FP16 weight storage for hardware without FP16 arithmetic.

The VLM plan keeps the patch embedding and projector in FP16. A CPU without FP16 arithmetic would
run FP16 nodes by casting around every one of them, so instead their weights are *stored* in FP16
(halving their bytes, keeping FP16's rounding) and cast to float32 once, when the session loads
(onnxruntime folds a Cast of a constant at initialization).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile.plan.plan import PlanEntry


def store_weights_fp16(model: onnx.ModelProto, entries: list[PlanEntry]) -> tuple[onnx.ModelProto, list[str]]:
    """Store the weights of entries planned FP16 (and run in float here) as FP16 + Cast."""
    wanted = {e.weight for e in entries if e.weight and e.precision == "float" and e.changed_from == "fp16"}
    initializers = {t.name: t for t in model.graph.initializer}
    stored: list[str] = []
    for name in sorted(wanted):
        tensor = initializers.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}__fp16")
        model.graph.initializer.remove(tensor)
        model.graph.initializer.append(half)
        model.graph.node.insert(0, onnx.helper.make_node("Cast", [half.name], [name], name=f"{name}__to_fp32", to=onnx.TensorProto.FLOAT))
        stored.append(name)
    return model, stored

