"""Exported program -> XNNPACK-delegated ExecuTorch program (``.pte`` bytes) and what was delegated.

``to_edge_transform_and_lower`` with ExecuTorch's ``XnnpackPartitioner``: XNNPACK takes the linears
(float, static INT8, dynamic INT8/INT4), convolutions, matmuls and most elementwise ops; what it does
not take runs on ExecuTorch's portable CPU kernels inside the same program. The op counts outside
the delegate are returned so the artifact says how much XNNPACK really runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from typing import Any


@contextlib.contextmanager
def quiet():  # noqa: ANN201
    """Silence the exporters' FutureWarnings and INFO logs (nothing actionable for a user)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(n) for n in ("torch.export", "torch._dynamo", "torch.fx", "executorch", "torchao", "root")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def lower_to_xnnpack(program: Any) -> tuple[bytes, dict[str, Any]]:
    """(.pte bytes, {delegates, ops_outside_delegates}) for one exported program."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with quiet():
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        outside: Counter[str] = Counter()
        delegates = 0
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            name = getattr(node.target, "__name__", str(node.target))
            if name == "executorch_call_delegate":
                delegates += 1
            elif name not in ("getitem", "sym_size.int", "sym_size", "add", "mul", "sub") and not name.startswith("sym_"):
                outside[name.split(".")[0].removeprefix("aten::")] += 1
        buffer = edge.to_executorch().buffer
    return bytes(buffer), {"delegates": delegates, "ops_outside_delegates": dict(sorted(outside.items()))}
