"""Recipes: how to compile one model for one target, and what 'good enough' means.

A recipe names its target, precision rules, calibration, eval set and gates. It is parsed with
yaml.safe_load and validated strictly; cross-file checks (the target exists, the backend is known)
happen in :func:`load_recipe` and still point at the recipe's line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgecompile.config.loader import error_at, load_document
from edgecompile.errors import InputError
from edgecompile.config.target import Strict, Target, load_target
from edgecompile.plan.rules import PrecisionRule

# Backends whose decoder executes a token-pruning schedule: the fused ORT CPU graph (prune steps
# inside it) and the static HTP graphs (segments with host-side prune steps between them).
PRUNING_BACKENDS = ("ort-cpu", "qnn")


class Calibration(Strict):
    """How activation ranges are measured."""

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=50.0, le=100.0)
    set: str = "balanced"
    samples: int = Field(default=64, ge=1, le=100_000)
    # None: onnxruntime's defaults, 128 bins for entropy (its KL search is quadratic in bins), 2048 for percentile
    histogram_bins: int | None = Field(default=None, ge=128, le=65_536)

    @property
    def bins(self) -> int:
        return self.histogram_bins or (128 if self.method == "entropy" else 2048)

    @model_validator(mode="after")
    def _percentile_only_for_percentile(self) -> Calibration:
        if "percentile" in self.model_fields_set and self.method != "percentile":
            raise ValueError("'percentile' is only used with method: percentile")
        return self


class Vlmq(Strict):
    """``quantization.vlmq``: settings of the VLMQ weight transform (seed 001; ``int4_algorithm: vlmq``).

    Field meanings are in ``edgecompile.transforms.vlmq.VlmqSettings`` (same names and defaults).
    """

    importance: Literal["gradient", "constant", "image_downweight"] = "gradient"
    norm: Literal["l1", "l2"] = "l1"
    perturb: Literal["inputs", "inputs_and_block"] = "inputs"
    bits: Literal[2, 4] = 4
    damping: float = Field(default=0.01, gt=0.0, le=1.0)
    act_order: bool = False
    samples: int | None = Field(default=None, ge=1, le=100_000)
    image_weight: float = Field(default=0.05, gt=0.0, le=1.0)
    image_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    chunk_tensors: int = Field(default=32, ge=1, le=4096)
    solver: Literal["reference", "onnxruntime"] = "reference"

    @model_validator(mode="after")
    def _downweight_fields(self) -> Vlmq:
        stray = sorted({"image_weight", "image_fraction", "seed"} & self.model_fields_set) if self.importance != "image_downweight" else []
        if stray:
            raise ValueError(f"{', '.join(stray)}: only used with importance: image_downweight (importance is '{self.importance}')")
        gradient_only = sorted({"norm", "perturb"} & self.model_fields_set) if self.importance != "gradient" else []
        if gradient_only:
            raise ValueError(f"{', '.join(gradient_only)}: only used with importance: gradient (importance is '{self.importance}')")
        return self


class Quantization(Strict):
    """Global quantization choices that the precision rules do not set per node."""

    activation_type: Literal["uint8", "int8", "uint16"] = "uint8"
    activation_symmetric: bool = False
    weight_type: Literal["int8", "uint8"] = "int8"
    int4_block_size: Literal[16, 32, 64, 128] = 32
    # INT4 weights of the presets: per block of int4_block_size along K, or one scale per output
    # channel (seed 002's "per-channel symmetric" W4A8; built as INT4 DequantizeLinear, not MatMulNBits).
    int4_granularity: Literal["per_block", "per_channel"] = "per_block"
    int4_algorithm: Literal["rtn", "gptq", "vlmq"] = "rtn"  # gptq / vlmq: run as that weight transform before calibration
    vlmq: Vlmq | None = None  # settings of int4_algorithm: vlmq (None: the defaults)
    # Weight transforms run in order by the transform stage (names in edgecompile.transforms.registry).
    weight_transforms: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_transforms(self) -> Quantization:
        from edgecompile.transforms.registry import transform_names

        unknown = [n for n in self.weight_transforms if n not in transform_names()]
        if unknown:
            raise ValueError(f"weight_transforms: unknown transform(s) {', '.join(unknown)}; expected names from {', '.join(transform_names())}")
        if len(set(self.weight_transforms)) != len(self.weight_transforms):
            raise ValueError("weight_transforms: a transform is named twice")
        if self.vlmq is not None and self.int4_algorithm != "vlmq" and "vlmq" not in self.weight_transforms:
            raise ValueError(f"vlmq: settings of the VLMQ transform, only used with int4_algorithm: vlmq (int4_algorithm is '{self.int4_algorithm}')")
        if {"gptq", "vlmq"} <= {*self.weight_transforms, self.int4_algorithm}:
            raise ValueError("int4_algorithm / weight_transforms: gptq and vlmq both round the INT4 weights; name one")
        return self

    @property
    def vlmq_settings(self) -> Vlmq:
        return self.vlmq or Vlmq()


class PruningSensitivity(Strict):
    """``token_pruning.sensitivity``: how the per-layer low-bit sensitivity is measured (seed 003, eq. 1)."""

    weight_bits: Literal[2, 3, 4, 8] = 4
    act_bits: Literal[4, 8] | None = 4  # None: weights only
    samples: int = Field(default=32, ge=1, le=10_000)  # of the recipe's calibration set
    mode: Literal["isolated", "cumulative"] = "isolated"


class TokenPruning(Strict):
    """``token_pruning``: QUOTA visual-token pruning executed in the compiled decoder (seed 003).

    ``schedule: quota`` allocates the drop budget over ``candidate_layers`` from the per-layer
    low-bit sensitivity measured during calibration; ``uniform`` drops the same share at each.
    ``keep_ratios`` instead gives the cumulative schedule by hand (one per candidate layer).
    ``candidate_layers: auto`` is every decoder layer from 1 to the second-to-last (layer 0's
    input is the raw embedding; after the last there is nothing left to save).
    """

    final_keep: float = Field(default=0.3, gt=0.0, le=1.0)
    candidate_layers: list[int] | Literal["auto"] = "auto"
    schedule: Literal["quota", "uniform"] = "quota"
    keep_ratios: list[float] | None = None
    floor: float = Field(default=0.05, ge=0.0, le=1.0)
    temperature: float = Field(default=0.5, gt=0.0, le=100.0)
    weights: dict[str, float] | None = None  # inter_modal, magnitude, intra_visual, residual (None: 0.45/0.25/0.10/0.20)
    residual_bits: int = Field(default=4, ge=2, le=8)
    sensitivity: PruningSensitivity = PruningSensitivity()

    @model_validator(mode="after")
    def _consistent(self) -> TokenPruning:
        from edgecompile.pruning.score import resolve_weights

        if self.weights is not None:
            resolve_weights(self.weights)  # exactly the four metric names, finite numbers
        if self.floor > self.final_keep:
            raise ValueError(f"floor: expected <= final_keep ({self.final_keep}), got {self.floor}")
        layers = self.candidate_layers
        if layers != "auto" and (not layers or any(b <= a for a, b in zip(layers, layers[1:])) or min(layers) < 0):
            raise ValueError(f"candidate_layers: expected 'auto' or non-negative layer indices in ascending order, got {layers}")
        if self.keep_ratios is not None:
            if layers == "auto" or len(self.keep_ratios) != len(layers):
                raise ValueError("keep_ratios: give one cumulative keep ratio per entry of an explicit candidate_layers list")
            if any(not 0 < r <= 1 for r in self.keep_ratios) or any(b > a for a, b in zip(self.keep_ratios, self.keep_ratios[1:])):
                raise ValueError(f"keep_ratios: expected values in (0, 1], non-increasing, got {self.keep_ratios}")
            if "final_keep" in self.model_fields_set and abs(self.keep_ratios[-1] - self.final_keep) > 1e-9:
                raise ValueError(f"keep_ratios: the last ratio ({self.keep_ratios[-1]}) is the final keep; it disagrees with final_keep ({self.final_keep})")
            stray = sorted({"schedule", "temperature", "floor", "sensitivity"} & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)}: not used with explicit keep_ratios")
        elif self.schedule == "uniform":
            stray = sorted({"temperature", "floor", "sensitivity"} & self.model_fields_set)
            if stray:
                raise ValueError(f"{', '.join(stray)}: only used with schedule: quota")
        return self


class EvalSet(Strict):
    """Which eval data validation uses."""

    # auto: the bundled world's set for the model family (zero-shot for dual encoders, VQA for generative
    # VLMs), bundled models only; zero-shot | vqa: those world sets for any model; synthetic: random
    # images (drift and latency only); anything else: a user eval set, a name in eval_sets/ or a YAML path
    # (edgecompile.data.user_eval_sets; its file is validated when the eval data is read).
    set: str = Field(default="auto", min_length=1)
    samples: int = Field(default=200, ge=1, le=100_000)
    latency_runs: int = Field(default=30, ge=3, le=10_000)
    warmup_runs: int = Field(default=3, ge=0, le=1_000)
    # Accuracy gates fail when the float reference scores below this on the eval set (and always
    # when it is within a tenth of the headroom above chance): see edgecompile.validation.meaning.
    min_reference_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("set")
    @classmethod
    def _name_or_path(cls, value: str) -> str:
        import re

        if value in ("auto", "zero-shot", "vqa", "synthetic") or value.endswith((".yaml", ".yml")) or "/" in value:
            return value
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"expected auto, zero-shot, vqa, synthetic, the name of an eval set in eval_sets/ or the path of its YAML; got {value!r}")
        return value


class Gate(Strict):
    """A threshold on one metric of report.json's ``metrics`` (a dotted key)."""

    metric: str
    min: float | None = Field(default=None, allow_inf_nan=False)  # a NaN threshold would decide nothing
    max: float | None = Field(default=None, allow_inf_nan=False)
    name: str | None = None
    # Only for models of this family (a device recipe can carry gates for CLIPs and for LLaVAs).
    family: Literal["dual_encoder", "generative"] | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Gate:
        if (self.min is None) == (self.max is None):
            raise ValueError("a gate needs exactly one of 'min' or 'max'")
        return self

    @model_validator(mode="after")
    def _known_metric(self) -> Gate:
        # Checked whatever the family filter: a typo in a gate for the other family is still a typo.
        from edgecompile.validation.metric_names import examples, known_metric

        if not known_metric(self.metric, self.family):
            scope = f" for family {self.family}" if self.family else ""
            raise ValueError(f"metric: unknown metric '{self.metric}'{scope}; expected a metric validation produces, e.g. {examples(self.family)}")
        return self


class OutputTolerance(Strict):
    """Per-output thresholds for the Polygraphy comparison (edgecompile.validation.polygraphy_compare).

    Polygraphy's ``simple`` rule: an output fails when BOTH its ``error_stat`` absolute error exceeds
    ``atol`` AND its relative error exceeds ``rtol``; ``min_cosine`` is checked on its own.
    """

    atol: float = Field(default=1e-2, ge=0.0)
    rtol: float = Field(default=1e-1, ge=0.0)
    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)


class Comparison(Strict):
    """How validate compares the artifact's outputs with the saved FP32 reference (Polygraphy).

    ``outputs`` keys are ``<component>/<output>`` (or a bare output name); unlisted outputs use
    ``default``. ``gates: true`` turns every compared output's verdict into a gate.
    """

    error_stat: Literal["max", "mean", "median"] = "median"
    default: OutputTolerance = OutputTolerance()
    outputs: dict[str, OutputTolerance] = Field(default_factory=dict)
    gates: bool = False
    max_iterations: int = Field(default=8, ge=1, le=10_000)
    layer_attribution: bool = True
    layer_samples: int = Field(default=4, ge=1, le=256)


class ModelOptions(Strict):
    """Adapter settings that change what is exported, set per recipe rather than per checkpoint."""

    # (rows, cols) of the fixed image-tile grid the tiling families export (LLaVA-NeXT/OneVision
    # anyres, Idefics3/SmolVLM image splitting); None keeps the adapter's default (2x2, capped by
    # what the checkpoint's processor allows). Other families refuse it.
    tile_grid: tuple[int, int] | None = None

    @field_validator("tile_grid")
    @classmethod
    def _small_grid(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= v <= 8 for v in value):
            raise ValueError(f"expected [rows, cols] with each between 1 and 8, got {list(value)}")
        return value


class Fallback(Strict):
    """Automatic precision fallback after a failed validation (edgecompile.search.fallback).

    Each step raises the worst offenders of the per-layer attribution one precision step
    (int4 -> int8 -> fp16 -> fp32), rebuilds what changed and re-validates; it stops at the first
    plan that passes every gate, after ``max_steps`` steps, or when nothing is left to raise.
    """

    enabled: bool = False
    max_steps: int = Field(default=8, ge=1, le=200)
    # Candidates are ranked by attributed error removed per byte added (or per estimated millisecond).
    objective: Literal["accuracy_per_byte", "accuracy_per_ms"] = "accuracy_per_byte"
    # layer: one module path per step; group: every weight of the worst transformer block at once.
    granularity: Literal["layer", "group"] = "layer"
    per_step: int = Field(default=1, ge=1, le=64)  # how many layers (or groups) one step raises


class Recipe(Strict):
    """One device recipe."""

    schema_version: Literal[1]
    fallback: Fallback = Fallback()
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    # A name looked up in targets/ (config.resolve's order), never a path: a recipe must not reach
    # outside the folders the resolver searches (``../`` or ``/etc/...``).
    target: str
    model: str | None = None
    model_options: ModelOptions = ModelOptions()

    @field_validator("target")
    @classmethod
    def _target_is_a_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value) or value.endswith((".yaml", ".yml")):
            raise ValueError("expected a target name (a file name in targets/ without .yaml, looked up beside the recipe, in ./targets, the user's and the shipped targets), not a path")
        return value
    precision_preset: Literal["fp32", "fp16", "w8a8", "w8a8-sq", "w4a8", "w4a8-awq", "w4a8-dyn", "vlm-default"] = "vlm-default"
    rules: tuple[PrecisionRule, ...] = ()
    quantization: Quantization = Quantization()
    calibration: Calibration = Calibration()
    eval: EvalSet = EvalSet()
    gates: tuple[Gate, ...] = ()
    comparison: Comparison = Comparison()
    budget_gates: bool = True
    # A recipe whose effective gate list (family filter applied, budgets included) is empty is refused:
    # "0 of 0 gates passed" is not a verdict. Set true only for exploratory builds.
    allow_no_gates: bool = False
    # Metrics whose number measured on this machine the recipe accepts in place of the device's (e.g.
    # [latency.p90_ms] for a host that is the deployment machine's twin); the report labels each one.
    accept_measured_here: tuple[str, ...] = ()

    @field_validator("accept_measured_here")
    @classmethod
    def _known_accepted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from edgecompile.validation.metric_names import known_metric

        unknown = [m for m in value if not known_metric(m, None)]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; expected metric names such as latency.p90_ms, memory.peak_mb")
        return value
    backend_options: dict[str, Any] = Field(default_factory=dict)
    opset: int = Field(default=18, ge=17, le=23)
    token_pruning: TokenPruning | None = None  # QUOTA visual-token pruning in the decoder (generative VLMs, ORT CPU and QNN)


class ResolvedRecipe(Strict):
    """A recipe with its target loaded: what the build directory records and stages read."""

    recipe: Recipe
    target: Target
    recipe_path: str
    target_path: str = ""  # the target file the recipe resolved to (config.resolve)

    @property
    def name(self) -> str:
        return self.recipe.name


def _check_backend_options(backend: Any, target: Target, target_file: Path, recipe: Recipe, recipe_file: Path) -> None:
    """Validate the target's and the recipe's backend_options against the backend's schema (file:line:field)."""
    from pydantic import ValidationError

    for source, options, file in (("target", target.backend_options, target_file), ("recipe", {**target.backend_options, **recipe.backend_options}, recipe_file)):
        if source == "recipe" and not recipe.backend_options:
            continue
        try:
            backend.options_model.model_validate(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = tuple(first["loc"])
            known = ", ".join(backend.options_model.model_fields) or "none"
            raise error_at(file, ("backend_options", *loc), f"{first['msg']} for backend '{backend.name}' (its options: {known}); got {first.get('input')!r}") from None


def _check_eval_set(recipe: Recipe, recipe_file: Path) -> None:
    """A named eval set must exist when the recipe is loaded, not after export, calibrate and build ran."""
    from edgecompile.config.resolve import resolve
    from edgecompile.data.sources import BUILTIN_EVAL_SETS

    if recipe.eval.set in BUILTIN_EVAL_SETS:
        return
    try:
        resolve("eval_set", recipe.eval.set, near=recipe_file)
    except InputError as exc:
        raise error_at(recipe_file, ("eval", "set"), str(exc)) from None


_FIELDS = ("component", "role", "op_type", "name")


def _kind(precision: str | None) -> str:
    return precision if precision in ("int8", "int4") else "float"


def _covering_kinds(later: PrecisionRule) -> tuple[str, ...]:
    """The kinds of earlier rule that take every node ``later`` would take (first match wins).

    Integer rules fall through on nodes they cannot quantize (plan.annotate: int8 takes weight-carrying
    ops only; int4 takes MatMul and embedding-table Gathers only), so they shadow only rules as narrow;
    float rules take every node they match.
    """
    kind = _kind(later.precision)
    if kind == "float":
        return ("float",)
    if kind == "int8":
        return ("float", "int8")
    m = later.match
    no_table = (m.op_type is not None and m.op_type != "Gather") or (m.role is not None and m.role != "embeddings")
    return ("float", "int4", "int8") if no_table else ("float", "int4")


def _check_shadowed_rules(recipe: Recipe, recipe_file: Path) -> None:
    """A rule that an earlier rule always wins over can never fire: that is a mistake, not a rule.

    An earlier rule covers a later one when each field it matches on is one the later rule matches
    on with the same value (a subset of its constraints) and it applies wherever the later one
    would. Each rule is looked up under the 16 subsets of its fields: linear in the rule count.
    """
    from itertools import product

    from edgecompile.config.loader import line_of

    first: dict[tuple[tuple[str | None, ...], str], int] = {}
    for j, later in enumerate(recipe.rules):
        values = tuple(getattr(later.match, f) for f in _FIELDS)
        hits = []
        for keep in product((False, True), repeat=len(_FIELDS)):
            key = tuple(v if k else None for v, k in zip(values, keep))
            if any(k and v is None for v, k in zip(values, keep)):
                continue
            hits += [first[(key, kind)] for kind in _covering_kinds(later) if (key, kind) in first]
        if hits:
            i = min(hits)
            raise error_at(
                recipe_file,
                ("rules", j),
                f"this rule can never fire: rules[{i}] (line {line_of(recipe_file, ('rules', i))}) matches every node it matches and comes first "
                f"(first match wins); remove it, or move it above rules[{i}] if it is the more specific one",
            )
        first.setdefault((values, _kind(later.precision)), j)


def _check_calibration_set(recipe: Recipe, recipe_file: Path) -> None:
    """A named calibration set must exist when the recipe is loaded, not after export and annotate ran."""
    from edgecompile.config.resolve import resolve

    if recipe.calibration.set == "synthetic":
        return
    try:  # looked up as the calibrate stage looks it up (data.sources)
        resolve("calibration_set", recipe.calibration.set)
    except InputError as exc:
        raise error_at(recipe_file, ("calibration", "set"), str(exc)) from None


def load_recipe(path: Path, targets_dir: Path | None = None) -> ResolvedRecipe:
    """Load a recipe and the target it names; every error points at the recipe's file and line."""
    from edgecompile.config.resolve import known, resolve

    recipe = load_document(path, Recipe)
    if recipe.name != path.stem:
        raise error_at(path, ("name",), f"expected '{path.stem}' (the file name), got '{recipe.name}'")
    if targets_dir is not None:
        target_file = targets_dir / f"{recipe.target}.yaml"
    else:
        try:
            target_file = resolve("target", recipe.target, near=path, names_only=True)
        except InputError:
            target_file = None
    if target_file is None or not target_file.is_file():
        names = sorted(p.stem for p in targets_dir.glob("*.yaml")) if targets_dir is not None and targets_dir.is_dir() else sorted(known("target", path))
        raise error_at(path, ("target",), f"unknown target '{recipe.target}'; expected one of {', '.join(names) or '(none found)'}")
    target = load_target(target_file)
    from edgecompile.backends.registry import backend_names, get_backend

    if target.backend not in backend_names():
        raise error_at(target_file, ("backend",), f"unknown backend '{target.backend}'; expected one of {', '.join(backend_names())}")
    _check_backend_options(get_backend(target.backend), target, target_file, recipe, path)
    _check_shadowed_rules(recipe, path)
    _check_calibration_set(recipe, path)
    _check_eval_set(recipe, path)
    if recipe.token_pruning is not None and target.backend not in PRUNING_BACKENDS:
        raise error_at(path, ("token_pruning",), f"token pruning runs in the ONNX Runtime CPU decoder (backend ort-cpu) and the static HTP decoder (backend qnn) only; target '{target.name}' builds for backend '{target.backend}'")
    return ResolvedRecipe(recipe=recipe, target=target, recipe_path=str(path.resolve()), target_path=str(target_file.resolve()))
