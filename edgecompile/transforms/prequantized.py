"""Weights a transform has already rounded to a low-bit grid, stored so a backend can pack them as they are.

GPTQ's result is not a float weight: it is integer codes with per-block scales (and zero points)
chosen column by column. Re-rounding the dequantized weights with round-to-nearest would pick new
scales and lose part of what GPTQ found, so the codes travel as they are: one safetensors file per
component with every tensor of the MatMulNBits node that replaces each MatMul, and a JSON sidecar with
the node itself (name, inputs, outputs, attributes). ``apply_prequantized`` puts those nodes back
into a graph in place of the MatMuls they replace. No pickle: safetensors and JSON only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class PrequantizedNode:
    """One MatMulNBits-style node that replaces the float MatMul whose output is ``output``."""

    replaces: str  # the float MatMul's node name
    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Any]
    initializers: list[str]


@dataclass
class Prequantized:
    """A component's prequantized nodes and their tensors."""

    nodes: list[PrequantizedNode] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, str(path))
        path.with_suffix(".json").write_text(json.dumps([n.__dict__ for n in self.nodes], indent=1))

    @classmethod
    def load(cls, path: Path) -> Prequantized:
        from safetensors.numpy import load_file

        nodes = [PrequantizedNode(**n) for n in json.loads(path.with_suffix(".json").read_text())]
        return cls(nodes, load_file(str(path)))

    @classmethod
    def from_graph(cls, model: onnx.ModelProto, op_type: str, originals: dict[str, str]) -> Prequantized:
        """Collect every ``op_type`` node of ``model``; ``originals`` maps output tensor -> the float node it replaced."""
        inits = {i.name: i for i in model.graph.initializer}
        out = cls()
        for node in model.graph.node:
            if node.op_type != op_type or node.output[0] not in originals:
                continue
            names = [i for i in node.input if i in inits]
            out.tensors.update({n: numpy_helper.to_array(inits[n]) for n in names})
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out.nodes.append(PrequantizedNode(originals[node.output[0]], node.op_type, node.domain, node.name, list(node.input), list(node.output), attributes, names))
        return out


def apply_prequantized(model: onnx.ModelProto, pre: Prequantized, only: set[str] | None = None) -> tuple[onnx.ModelProto, set[str]]:
    """Replace each float MatMul named in ``pre`` (and in ``only``, when given) by its prequantized node.

    Returns the graph and the names of the float nodes replaced. The float weight each MatMul read is
    dropped when nothing else reads it.
    """
    by_name = {n.replaces: n for n in pre.nodes if only is None or n.replaces in only}
    graph = model.graph
    replaced: set[str] = set()
    dropped_weights: set[str] = set()
    new_nodes = []
    for node in graph.node:
        spec = by_name.get(node.name)
        if spec is None:
            new_nodes.append(node)
            continue
        new_nodes.append(helper.make_node(spec.op_type, spec.inputs, spec.outputs, name=spec.name, domain=spec.domain, **spec.attributes))
        dropped_weights.add(node.input[1])
        replaced.add(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_read = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name not in dropped_weights or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    present = {i.name for i in graph.initializer}
    for spec in by_name.values():
        graph.initializer.extend(numpy_helper.from_array(pre.tensors[n], n) for n in spec.initializers if n not in present)
    domains = {o.domain for o in model.opset_import}
    for spec in by_name.values():
        if spec.domain and spec.domain not in domains:
            model.opset_import.append(helper.make_opsetid(spec.domain, 1))
            domains.add(spec.domain)
    return model, replaced
