"""transform: the recipe's weight transforms rewrite the float graphs before calibration.

Each transform named by ``quantization.weight_transforms`` (and ``gptq`` when
``int4_algorithm: gptq``) runs in order on every component it applies to. The stage writes the
transformed graphs (only for components a transform touched), prequantized weights where a
transform produced them, and ``transforms.json``: which graph each component's later stages read,
and one row per changed layer. With no transforms it writes only the record (the exported graphs
are read as they are), so it costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgecompile.builddir.atomic import write_json
from edgecompile.data.sources import calibration_fingerprint, calibration_samples
from edgecompile.models.export import save_onnx
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import TRANSFORM_FILE, TransformedGraphs, Upstream
from edgecompile.transforms.registry import get_transform



def transforms_for(recipe: Any) -> list[str]:
    """The transforms a recipe asks for, in order (``int4_algorithm: gptq`` is the GPTQ transform)."""
    from edgecompile.plan.rules import PRESET_TRANSFORMS

    names = [*PRESET_TRANSFORMS.get(recipe.precision_preset, ()), *(n for n in recipe.quantization.weight_transforms if n not in PRESET_TRANSFORMS.get(recipe.precision_preset, ()))]
    if recipe.quantization.int4_algorithm in ("gptq", "vlmq") and recipe.quantization.int4_algorithm not in names:
        names.append(recipe.quantization.int4_algorithm)
    return names


def _save(model: onnx.ModelProto, path: Path) -> None:
    save_onnx(model, path)  # external data past 2 GiB


class TransformStage(Stage):
    name = "transform"
    requires = ("export", "annotate")
    output_type = TransformedGraphs

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        names = transforms_for(ctx.recipe)
        needs_data = any(get_transform(n).needs_activations for n in names)
        c = ctx.recipe.calibration
        inputs = {"transforms": ",".join(names), "calibration": f"{c.set}/{c.samples}/{calibration_fingerprint(c.set)}" if needs_data else "-"}
        if "vlmq" in names:  # only then: builds without VLMQ keep the fingerprints they recorded
            inputs["vlmq"] = ctx.recipe.quantization.vlmq_settings.model_dump_json()
        return inputs

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        names = transforms_for(ctx.recipe)
        transforms = [get_transform(n) for n in names]
        plan = upstream.annotate.plan()
        cal = ctx.recipe.calibration
        graphs: dict[str, str] = {}
        prequantized: dict[str, str] = {}
        layers: list[dict[str, Any]] = []
        for component, path in upstream.export.files.items():
            entries = plan.for_component(component)
            wanted = [t for t in transforms if t.applies_to(entries)]
            if not wanted:
                graphs[component] = str(path.relative_to(ctx.build_dir))
                continue
            model = onnx.load(str(path))

            def feeds(component: str = component):  # noqa: ANN202 - a fresh Iterator[Feeds] per call
                return ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(cal.set, cal.samples), component)

            for transform in wanted:
                if getattr(transform, "needs_model", False):  # VLMQ: token importance from the torch model and the raw samples
                    from edgecompile.transforms.vlmq import TorchSide

                    transform = transform.bind(TorchSide(ctx.adapter, ctx.loaded(), lambda: calibration_samples(cal.set, cal.samples)), ctx.recipe.quantization.vlmq_settings)
                outcome = transform.apply(model, component, entries, feeds if transform.needs_activations else None)
                for name, doc in getattr(outcome, "files", {}).items():
                    write_json(out / name, doc)
                model = outcome.model
                layers += outcome.layers
                if outcome.prequantized is not None and outcome.prequantized.nodes:
                    (out / transform.name).mkdir(exist_ok=True)
                    rel = f"{transform.name}/{component}.safetensors"
                    outcome.prequantized.save(out / rel)
                    prequantized[component] = rel
            _save(model, out / f"{component}.onnx")
            graphs[component] = f"{self.name}/{component}.onnx"
        write_json(out / TRANSFORM_FILE, {"transforms": names, "graphs": graphs, "prequantized": prequantized, "layers": layers})
        return {"transforms": names, "components": sorted(c for c, g in graphs.items() if g.startswith(f"{self.name}/")), "layers": len(layers)}
