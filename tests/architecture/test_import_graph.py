"""The package's shape: no import cycles, stages that never import each other, one package per backend."""

from __future__ import annotations

import re

from tests.architecture.import_graph import PACKAGE_ROOT, cycles, import_graph, modules

STAGE_MODULES = {f"edgecompile.stages.{s}" for s in ("export", "annotate", "transform", "calibrate", "build", "validate")}
SDKS = ("coremltools", "tensorrt", "onnxruntime_qnn", "executorch")


def test_the_import_graph_has_no_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_stage_module_imports_another_stage_module() -> None:
    graph = import_graph()
    for stage in STAGE_MODULES:
        assert stage in graph, f"{stage} is missing"
        assert not (graph[stage] & (STAGE_MODULES - {stage})), f"{stage} imports {sorted(graph[stage] & STAGE_MODULES)}"


def test_only_the_pipeline_knows_every_stage_and_nothing_below_stages_imports_up() -> None:
    graph = import_graph()
    importers = {m for m, edges in graph.items() if edges & STAGE_MODULES}
    # The pipeline runs them; CLI commands and the sweep call the pipeline and publish the report.
    allowed = re.compile(r"^edgecompile\.(stages\.pipeline|cli\..*|sweep|api)$")
    assert all(allowed.match(m) for m in importers), sorted(m for m in importers if not allowed.match(m))
    for m, edges in graph.items():
        if m.startswith(("edgecompile.validation", "edgecompile.backends", "edgecompile.transforms", "edgecompile.plan", "edgecompile.calibration", "edgecompile.models")):
            assert not any(e.startswith("edgecompile.stages") for e in edges), f"{m} imports up into stages: {sorted(edges)}"


def test_every_backend_is_its_own_package() -> None:
    backends = PACKAGE_ROOT / "backends"
    loose = sorted(p.name for p in backends.glob("*.py") if p.name not in ("__init__.py", "base.py", "registry.py"))
    assert loose == [], f"backend modules outside a backend package: {loose}"
    from edgecompile.backends.registry import _PACKAGES

    for name, package in _PACKAGES.items():
        folder = PACKAGE_ROOT.parent / package.replace(".", "/")
        assert (folder / "__init__.py").is_file(), name


def test_backends_do_not_import_each_other() -> None:
    graph = import_graph()
    packages = {m.split(".")[2] for m in modules() if m.startswith("edgecompile.backends.") and m.count(".") >= 3}
    for m, edges in graph.items():
        if not m.startswith("edgecompile.backends.") or m.count(".") < 2:
            continue
        own = m.split(".")[2]
        for e in edges:
            if e.startswith("edgecompile.backends.") and e.count(".") >= 2:
                other = e.split(".")[2]
                assert other in (own, "base", "registry", "common") or other not in packages, f"{m} imports backend {other}"


def test_sdks_are_imported_only_inside_their_backend_package() -> None:
    for name, path in modules().items():
        text = path.read_text()
        for sdk in SDKS:
            if re.search(rf"^\s*(import|from) {sdk}\b", text, re.M):
                # edgecompile.device.runtimes: the device-side runners (no backend package: those import the build tooling).
                assert name.startswith("edgecompile.backends.") or name == "edgecompile.device.runtimes", f"{name} imports the {sdk} SDK"
                assert re.search(rf"^(import|from) {sdk}\b", text, re.M) is None, f"{name} imports {sdk} at module level"
