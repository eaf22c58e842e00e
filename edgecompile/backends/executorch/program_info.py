"""What a written ``.pte`` really holds: its XNNPACK delegates and the storage type of their weights.

Read back from the file, not from the build's own bookkeeping, so a check that "the planned INT8
linears are quantized" looks at the program the runtime loads: each XNNPACK delegate payload is an
``XNNHeader`` + an ``XNNGraph`` flatbuffer (``executorch/backends/xnnpack/serialization/schema.fbs``),
decoded to JSON with the ``flatc`` that executorch ships. Constant tensors of rank >= 2 are the
weights of linears/convolutions; their XNNPACK datatype says how they are stored:
``qcint8`` (INT8 per channel), ``qint8`` (INT8 per tensor), ``qbint4`` (INT4 per block),
``qcint4`` (INT4 per channel), ``fp32`` / ``fp16`` (float).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

_DTYPES = {"xnn_datatype_qcint8": "int8", "xnn_datatype_qint8": "int8", "xnn_datatype_qbint4": "int4", "xnn_datatype_qcint4": "int4", "xnn_datatype_fp32": "fp32", "xnn_datatype_fp16": "fp16"}


def _delegate_payloads(data: bytes) -> list[bytes]:
    from executorch.exir._serialize._program import _extract_delegate_payload

    payloads = []
    while (payload := _extract_delegate_payload(data, "xnnpack", len(payloads))) is not None:
        payloads.append(payload)
    return payloads


def _graph_json(payload: bytes, tmp: Path) -> dict[str, Any]:
    import executorch.backends.xnnpack.serialization as serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
    flat = payload[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    binary = tmp / "graph.bin"
    binary.write_bytes(flat)
    schema = Path(next(iter(serialization.__path__))) / "schema.fbs"
    subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", str(tmp), str(schema), "--", str(binary)], check=True, capture_output=True)
    return json.loads((tmp / "graph.json").read_text())


def _tensor(value: dict[str, Any]) -> dict[str, Any] | None:
    union = value.get("xvalue_union", {})
    return union.get("tensor_value", union) if "datatype" in union.get("tensor_value", union) else None


def program_summary(pte: Path) -> dict[str, Any]:
    """{delegates, weights: {int8/int4/fp32/...: count}, bytes} of one .pte file."""
    data = pte.read_bytes()
    weights: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    payloads = _delegate_payloads(data)
    with tempfile.TemporaryDirectory(prefix="edgecompile-pte-") as tmp:
        for payload in payloads:
            graph = _graph_json(payload, Path(tmp))
            for value in graph.get("xvalues", []):
                tensor = _tensor(value)
                if tensor is None:
                    continue
                constant = int(tensor.get("constant_buffer_idx", 0) or 0) != 0 or bool(tensor.get("named_key"))
                if constant and len(tensor.get("dims", [])) >= 2:
                    weights[_DTYPES.get(tensor["datatype"], tensor["datatype"].removeprefix("xnn_datatype_"))] += 1
            for node in graph.get("xnodes", []):
                nodes[str(node.get("xnode_union_type", "?")).removeprefix("XNN")] += 1
    return {"delegates": len(payloads), "weights": dict(sorted(weights.items())), "xnnpack_nodes": dict(sorted(nodes.items())), "bytes": len(data)}
