"""The Ray engine: every phase of every grid point as a Ray task (imported only for ``--engine ray``).

``ray.init(num_cpus=N)`` starts a local cluster (the default), ``ray.init(address=ADDR)`` joins an
existing one (``auto`` finds the cluster this machine belongs to). The driver (sweep/engine.py)
stays in charge of phases, merges, retries and the report, so the Ray engine's sweep.json equals
the local engine's apart from timings; Ray adds parallelism, resource hints (``num_cpus`` and
``memory`` per phase from the grid's ``resources:``) and its own retry of tasks whose worker died
(``max_retries``). Stage reuse across tasks goes through the sweep root on the file system: on a
cluster of several machines, put the sweep root on storage every node mounts at the same path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from edgecompile.errors import BackendUnavailable, ExitCode, InputError
from edgecompile.sweep.grid import Resources
from edgecompile.sweep.point import run_phase

# What every worker process gets: one intra-op thread per task (tasks are the parallelism), and
# the offline switches the CLI sets (no model or data set is ever downloaded by a sweep).
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("the Ray engine needs the 'ray' package (pip install 'ray>=2.9'); the local engine (--engine local) needs nothing") from None
    return ray


class RayExecutor:
    """Submit a phase's tasks to Ray and yield their results as they finish."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 1) -> None:
        ray = _ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "logging_level": "ERROR"}
            if address:  # the cluster's workers do not inherit this process's environment
                kwargs["runtime_env"] = {"env_vars": {k: os.environ.get(k, v) for k, v in _WORKER_ENV.items()}}
                ray.init(address=address, **kwargs)
            else:  # a local cluster's workers inherit it (a runtime_env would add seconds to every start)
                for k, v in _WORKER_ENV.items():
                    os.environ.setdefault(k, v)
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
            self._started = True
        self._remote = ray.remote(max_retries=max_retries)(run_phase)

    def map(self, phase: str, tasks: list[tuple[str, tuple]], resources: Resources) -> Iterator[tuple[str, dict[str, Any]]]:
        ray = self._ray
        total = ray.cluster_resources().get("CPU", 0.0)
        if resources.num_cpus > total:
            raise InputError(f"resources.{phase}.num_cpus: {resources.num_cpus:g} is more than the Ray cluster's {total:g} CPUs; its tasks would never be scheduled")
        refs = {self._remote.options(**resources.ray_options(), name=f"{phase}:{name}").remote(phase, *args): name for name, args in tasks}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the worker died (and Ray's retries ran out), or the task could not run
                    result = {"ok": False, "error": f"ray task failed: {type(exc).__name__}: {exc}", "exit_code": ExitCode.STAGE_FAILED, "retryable": True, "wall_s": 0.0}
                yield refs[ref], result

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False
