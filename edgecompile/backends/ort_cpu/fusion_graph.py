"""The graph index the decoder rewrites share: producer/consumer/initializer lookups and the report.

Its own module so that the norm fusion (decoder_fusion) and the attention fusion (decoder_attention)
both import it and neither imports the other's internals.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

@dataclass
class FusionReport:
    """What the rewrite did; ``changed`` is False when nothing matched (the graph is returned as is)."""

    rms_norms: int = 0
    skip_norms: int = 0
    attentions: int = 0
    packed_qkv: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.rms_norms or self.attentions or self.packed_qkv)


class FusionGraph:
    """Producer/consumer/initializer indexes over a GraphProto, rebuilt after each rewrite."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.refresh()

    def refresh(self) -> None:
        self.producer = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def prod(self, name: str, op: str | tuple[str, ...]) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        ops = (op,) if isinstance(op, str) else op
        return node if node is not None and node.op_type in ops else None
