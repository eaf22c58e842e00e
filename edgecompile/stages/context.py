"""BuildContext: what every stage can read (recipe, target, model, build directory)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgecompile.builddir.atomic import write_json
from edgecompile.builddir.manifest import Manifest, StageRecord
from edgecompile.config.recipe import ResolvedRecipe, load_recipe
from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel, ModelAdapter
from edgecompile.models.registry import adapter_for
from edgecompile.models.resolve import default_model, resolve_model
from edgecompile.models.weights_check import check_safetensors_only

CONTEXT_FILE = "build.json"


@dataclass
class BuildContext:
    """A build directory bound to its recipe, target and model."""

    build_dir: Path
    resolved: ResolvedRecipe
    model_dir: Path
    model_ref: str
    adapter: ModelAdapter
    _loaded: LoadedModel | None = field(default=None, repr=False)

    @property
    def recipe(self):  # noqa: ANN201 - Recipe
        return self.resolved.recipe

    @property
    def target(self):  # noqa: ANN201 - Target
        return self.resolved.target

    def loaded(self) -> LoadedModel:
        """The torch model and processor, loaded once per process and only when a stage needs them."""
        if self._loaded is None:
            self._loaded = self.adapter.load(self.model_dir)
        return self._loaded

    def manifest(self) -> Manifest:
        """The build directory's manifest, read fresh (the one place that reads it)."""
        return read_manifest(self.build_dir)

    def record_stage(self, stage: str, record: StageRecord) -> None:
        """Record a completed stage (the one place that writes the manifest)."""
        manifest = self.manifest()
        manifest.record(stage, record)

    def path(self, *parts: str) -> Path:
        return self.build_dir.joinpath(*parts)

    @classmethod
    def create(cls, recipe_path: Path, model: str | None, out: Path | None) -> BuildContext:
        """Bind a recipe (and model) to a build directory, recording both in build.json."""
        resolved = load_recipe(recipe_path)
        ref = model or resolved.recipe.model or default_model()
        model_dir = resolve_model(ref)
        check_safetensors_only(model_dir)
        adapter = adapter_for(model_dir)
        check_gates(resolved, adapter.family)  # before anything is written: a refused recipe leaves no build directory
        build_dir = (out or Path("build") / resolved.name).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        write_json(build_dir / CONTEXT_FILE, {"recipe": str(recipe_path.resolve()), "model": ref, "model_dir": str(model_dir)})
        write_json(build_dir / "recipe.resolved.json", resolved.model_dump(mode="json"))
        return cls(build_dir, resolved, model_dir, ref, adapter)

    @classmethod
    def open(cls, build_dir: Path) -> BuildContext:
        """Re-open an existing build directory (the recipe file is re-read: edits take effect)."""
        record_path = build_dir / CONTEXT_FILE
        if not record_path.is_file():
            raise InputError(f"{build_dir}: not an edgecompile build directory (no {CONTEXT_FILE}); run 'edgecompile build --recipe ...' first")
        record = json.loads(record_path.read_text())
        recipe_path = Path(record["recipe"])
        if recipe_path.is_file():
            resolved = load_recipe(recipe_path)
        else:  # the recipe moved: use the copy recorded in the build directory
            resolved = ResolvedRecipe.model_validate_json((build_dir / "recipe.resolved.json").read_text())
        model_dir = Path(record["model_dir"])
        if not model_dir.is_dir():
            model_dir = resolve_model(record["model"])
        check_safetensors_only(model_dir)
        adapter = adapter_for(model_dir)
        check_gates(resolved, adapter.family)
        return cls(build_dir.resolve(), resolved, model_dir, record["model"], adapter)


def check_gates(resolved: ResolvedRecipe, family: str) -> None:
    """Refuse a recipe whose gates, for this model's family, are none at all (exit 3)."""
    recipe = resolved.recipe
    effective = [g for g in recipe.gates if g.family in (None, family)]
    if effective or recipe.budget_gates or recipe.comparison.gates or recipe.allow_no_gates:
        return
    scoped = f" ({len(recipe.gates)} gate(s) scoped to another family)" if recipe.gates else ""
    raise InputError(
        f"{resolved.recipe_path}: gates: no gate applies to this {family} model{scoped} and budget_gates is false; "
        "a verdict of '0 of 0 gates passed' means nothing. Add gates, or set 'allow_no_gates: true' for an exploratory build"
    )


def read_manifest(build_dir: Path) -> Manifest:
    """The manifest of any build directory (a sweep reads its siblings' records through this)."""
    return Manifest.load(build_dir)
