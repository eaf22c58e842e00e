"""Sweep: one base recipe x a grid of overrides, each point built in a sibling build directory.

``run_sweep`` (sweep/engine.py) builds every point in phases, reusing stages across points
(a stage whose input fingerprint equals that of an already-built sibling, or of ``reuse_from``
build directories, is copied from it instead of being run again: the export runs once per model),
merging points that would build the same artifact (sweep/dedupe.py), and writing
``<root>/sweep.json``. The local engine runs the points in this process; ``engine='ray'`` runs
each phase of each point as a Ray task (sweep/ray_engine.py, imported only then).
"""

from __future__ import annotations

from edgecompile.sweep.engine import SWEEP_FILE, LocalExecutor, run_sweep
from edgecompile.sweep.grid import load_grid, load_grid_spec, points

__all__ = ["SWEEP_FILE", "LocalExecutor", "load_grid", "load_grid_spec", "points", "run_sweep"]
