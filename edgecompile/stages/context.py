"""BuildContext: what every stage can read (recipe, target, model, build directory).

Binding a recipe to a directory (create) checks everything that can be checked before a stage
runs (recipe, target, model weights, gates, calibration and eval sets) and takes the directory's
lock (builddir.lock); re-opening one (open) takes it at its first write.
``build.json`` and ``recipe.resolved.json`` are written with the first stage that completes (or
is found current), so a build refused at any point before that leaves nothing behind, not even
an empty directory it created.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
import os
from pathlib import Path

from edgecompile.backends.registry import get_backend
from edgecompile.builddir import lock
from edgecompile.pruning.recipe_plan import check_token_pruning
from edgecompile.builddir.atomic import write_json
from edgecompile.builddir.manifest import Manifest, StageRecord, update
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
    _binding: dict[str, object] | None = field(default=None, repr=False)  # build.json + recipe.resolved.json, not yet written
    _notices: dict[str, str | None] = field(default_factory=dict, repr=False)  # told the user, recorded with the binding

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

    def release_weights(self) -> LoadedModel | None:
        """Stop holding the loaded model (torch weights included) and return it, None if none was loaded:
        validate runs graphs only, and the weights are its largest object. A later ``loaded()`` loads again."""
        loaded, self._loaded = self._loaded, None
        return loaded

    def manifest(self) -> Manifest:
        """The build directory's manifest, read fresh (the one place that reads it)."""
        return read_manifest(self.build_dir)

    def record_stage(self, stage: str, record: StageRecord) -> None:
        """Record a completed stage (the one place that writes stage records): read-modify-write under the lock."""
        self.bind()
        update(self.build_dir, lambda m: m.stages.__setitem__(stage, record))

    def notice(self, key: str, message: str) -> None:
        """Tell the user something that changes what the build means, and keep it in manifest.json's notices."""
        import sys

        print(f"notice: {message}", file=sys.stderr)
        if self._binding is not None:  # nothing written yet: recorded with the binding
            self._notices[key] = message
        elif self.manifest().notices.get(key) != message:  # a read-only command writes nothing it already said
            update(self.build_dir, lambda m: m.notices.__setitem__(key, message))

    def forget(self, key: str) -> None:
        """Drop a notice that no longer holds (e.g. the recipe now asks for fewer samples than the set has)."""
        if self._binding is not None:
            self._notices[key] = None
        elif key in self.manifest().notices:
            update(self.build_dir, lambda m: m.notices.pop(key, None))

    def bind(self) -> None:
        """Write build.json and recipe.resolved.json (once): the first stage completed or found current."""
        if self._binding is None:
            return
        lock.hold(self.build_dir)
        write_json(self.build_dir / CONTEXT_FILE, self._binding["build"])
        write_json(self.build_dir / "recipe.resolved.json", self._binding["resolved"])
        self._binding = None
        notices, self._notices = self._notices, {}

        def keep(m: Manifest) -> None:
            for key, message in notices.items():
                if message is None:
                    m.notices.pop(key, None)
                else:
                    m.notices[key] = message

        update(self.build_dir, keep)

    def close(self) -> None:
        """Release the build directory's lock (the command is over)."""
        lock.release(self.build_dir)

    def path(self, *parts: str) -> Path:
        return self.build_dir.joinpath(*parts)

    @classmethod
    def create(cls, recipe_path: Path, model: str | None, out: Path | None) -> BuildContext:
        """Bind a recipe (and model) to a build directory; build.json is written by the first stage."""
        resolved = load_recipe(recipe_path)
        ref = model or resolved.recipe.model or default_model()
        model_dir = resolve_model(ref)
        check_safetensors_only(model_dir)
        adapter = adapter_for(model_dir, resolved.recipe.model_options)
        check_gates(resolved, adapter.family)  # before anything is written: a refused recipe leaves no build directory
        get_backend(resolved.target.backend).preflight(adapter, resolved)  # a model the backend cannot build: refused before export
        check_token_pruning(resolved.recipe, resolved.recipe_path, adapter, Path(model_dir))
        calibration = _calibration_size(resolved)
        _check_eval_set(resolved, adapter.family)
        build_dir = (out or Path("build") / resolved.name).resolve()
        created = lock.prepare_dir(build_dir)
        try:
            lock.hold(build_dir, created_dir=created)
        except BaseException:
            if created:
                build_dir.rmdir()
            raise
        # exclude_unset: validators and backends read which fields the user set (calibration.percentile only with
        # method percentile, QNN's uint16 default, INT4 rule granularity), so the copy must set exactly those.
        binding = {"build": {"recipe": _relative(recipe_path.resolve(), build_dir), "model": ref, "model_dir": _relative(Path(model_dir).resolve(), build_dir)}, "resolved": resolved.model_dump(mode="json", exclude_unset=True)}
        ctx = cls(build_dir, resolved, model_dir, ref, adapter, _binding=binding)
        ctx._calibration_notice(calibration)
        return ctx

    @classmethod
    def open(cls, build_dir: Path) -> BuildContext:
        """Re-open an existing build directory (the recipe file is re-read: edits take effect)."""
        record_path = build_dir / CONTEXT_FILE
        if not record_path.is_file():
            raise InputError(f"{build_dir}: not an edgecompile build directory (no {CONTEXT_FILE}); run 'edgecompile build --recipe ...' first")
        record = _read_record(record_path, ("recipe", "model", "model_dir"))
        recipe_path = _recorded_path(record["recipe"], build_dir)
        if recipe_path.is_file():
            resolved = load_recipe(recipe_path)
        else:  # the recipe moved: use the copy recorded in the build directory
            resolved = _read_resolved(build_dir / "recipe.resolved.json")
        model_dir = _recorded_path(record["model_dir"], build_dir)
        if not model_dir.is_dir():
            model_dir = resolve_model(record["model"])
        check_safetensors_only(model_dir)
        adapter = adapter_for(model_dir, resolved.recipe.model_options)
        check_gates(resolved, adapter.family)
        calibration = _calibration_size(resolved)
        read_manifest(build_dir)  # a corrupt manifest is named now, before any stage
        # No lock yet: commands that only read a build (run, report) may run side by side; the
        # first write (a stage, a notice) takes it.
        ctx = cls(build_dir.resolve(), resolved, model_dir, record["model"], adapter)
        ctx._calibration_notice(calibration)
        return ctx

    def _calibration_notice(self, available: int | None) -> None:
        asked = self.recipe.calibration.samples
        if available is None or available >= asked:
            self.forget("calibration.samples")
        else:
            self.notice("calibration.samples", f"calibration.set '{self.recipe.calibration.set}' holds {available} sample(s) but calibration.samples asks for {asked}: calibrating on {available} ({self.resolved.recipe_path})")


def _calibration_size(resolved: ResolvedRecipe) -> int | None:
    """How many samples the recipe's calibration set holds (loading it checks every file now); None: unbounded."""
    from edgecompile.data.sources import calibration_size

    return calibration_size(resolved.recipe.calibration.set)


def _check_eval_set(resolved: ResolvedRecipe, family: str) -> None:
    """Load a user eval set now (every line, label and image file; not the pixels), checked against the model family."""
    from edgecompile.data.sources import BUILTIN_EVAL_SETS, user_eval_set

    if resolved.recipe.eval.set not in BUILTIN_EVAL_SETS:
        user_eval_set(resolved.recipe.eval.set, family, Path(resolved.recipe_path))


def _read_record(path: Path, fields: tuple[str, ...]) -> dict[str, str]:
    """build.json, or a named input error (exit 3) when it is not what edgecompile wrote."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(path)
        raise InputError(f"{where}: corrupt build record (not valid JSON); rebuild with 'edgecompile build --recipe ... --out {path.parent}'") from None
    missing = [f for f in fields if not isinstance(record, dict) or not isinstance(record.get(f), str)]
    if missing:
        raise InputError(f"{path}: {', '.join(missing)}: corrupt build record (expected the string fields {', '.join(fields)})")
    return record


def _read_resolved(path: Path) -> ResolvedRecipe:
    from pydantic import ValidationError

    try:
        return ResolvedRecipe.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: missing, and the recipe recorded in build.json is gone too; rebuild with --recipe") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{path}: {'.'.join(map(str, first['loc'])) or '<document>'}: corrupt resolved recipe ({first['msg']}); rebuild with --recipe") from None


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


def _relative(path: Path, build_dir: Path) -> str:
    """A path as build.json records it: relative to the build directory, so a moved or copied
    build (the recipe and model moved with it) still opens; absolute only where no relative path exists."""
    try:
        return os.path.relpath(path, build_dir.resolve())
    except ValueError:  # another drive (Windows)
        return str(path)


def _recorded_path(recorded: str, build_dir: Path) -> Path:
    """Read back a build.json path: relative ones against the build directory (older builds wrote absolute ones)."""
    path = Path(recorded)
    return path if path.is_absolute() else (build_dir.resolve() / path).resolve()


def recorded_recipe(build_dir: Path) -> Path:
    """The recipe file a build directory was made from, as an absolute path (for tools and tests)."""
    record = _read_record(build_dir / CONTEXT_FILE, ("recipe",))
    return _recorded_path(record["recipe"], build_dir)
