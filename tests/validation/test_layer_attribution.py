"""A layer quantized with a terrible activation range is ranked first, with its rule and a fix."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgecompile.backends.common.onnx_quant import QdqSettings, insert_qdq
from edgecompile.calibration.ranges import TensorRanges, load_ranges
from edgecompile.plan.plan import PrecisionPlan
from edgecompile.validation.layer_attribution import attribute_layers
from edgecompile.validation.polygraphy_compare import load_reference


def test_damaged_layer_ranked_first(built: Path) -> None:
    model = onnx.load(str(built / "export" / "vision_encoder.onnx"))
    entries = PrecisionPlan.load(built / "build" / "plan.effective.json").for_component("vision_encoder")
    int8 = [e for e in entries if e.precision == "int8"]
    assert len(int8) > 4
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    nodes = {n.name: n for n in model.graph.node}
    # a layer whose input no other layer reads (Q/K/V share theirs, and would share the damage)
    victim = [e for e in int8 if consumers[nodes[e.node].input[0]] == 1][-1]
    node = nodes[victim.node]
    ranges = load_ranges(built / "calibrate" / "ranges.json")["vision_encoder"]
    damaged = dict(ranges.ranges)
    damaged[node.input[0]] = (-1e-3, 1e-3)  # clips the layer's input to nothing
    candidate = insert_qdq(onnx.load(str(built / "export" / "vision_encoder.onnx")), "vision_encoder", entries, TensorRanges(ranges.method, damaged, ranges.samples), QdqSettings())
    feeds = load_reference(built / "validate" / "reference", "vision_encoder")[0][:2]
    rows = attribute_layers("vision_encoder", model, candidate, feeds, entries)
    assert rows[0].node == victim.node, [(r.node, r.added) for r in rows[:3]]
    assert rows[0].added > 0.5 and rows[0].added > 3 * rows[1].added
    assert rows[0].rule == victim.rule and "int8" in rows[0].suggestion and victim.node in rows[0].suggestion
    assert all(r.note == "" for r in rows)


def test_validate_writes_ranked_layers(built: Path) -> None:
    layers = json.loads((built / "validate" / "layers.json").read_text())["layers"]
    assert layers and all(r["precision"] == "int8" for r in layers)
    added = [r["added"] for r in layers if r["added"] is not None]
    assert added == sorted(added, reverse=True) and added[0] > 0
