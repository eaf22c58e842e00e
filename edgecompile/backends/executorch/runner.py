"""Run the ``.pte`` files through ``executorch.runtime``: XNNPACK and ExecuTorch's portable kernels only.

Feeds arrive keyed by the exported ONNX components' input names; they are passed as torch tensors in
the component's input order and the outputs are named with its output names (both lists are saved in
``artifact.extra["io"]``). Programs are exported at batch 1 (``shapes.py``): a feed with a larger
batch runs one sample at a time and the outputs are concatenated, as a phone would run them. Feeds
outside the exported bounds (a sequence longer than the program's maximum) are refused with the
bound, never silently cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.backends.base import Artifact
from edgecompile.errors import InputError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs


def _check_bounds(component: str, io: dict[str, Any], feeds: Feeds) -> None:
    for name, axes in io.get("dynamic_axes", {}).items():
        if name not in feeds:
            continue
        for axis, label in axes.items():
            bound = io.get("bounds", {}).get(label)
            if bound is not None and not bound[0] <= feeds[name].shape[int(axis)] <= bound[1]:
                raise InputError(f"{component}: {name} has {label} {feeds[name].shape[int(axis)]}; the ExecuTorch program accepts {bound[0]}..{bound[1]} (backend_options.executorch_max_length)")


def executorch_runner(artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
    import torch
    from executorch.runtime import Runtime

    runtime = Runtime.get()
    methods: dict[str, Any] = {}

    def method(component: str) -> Any:
        if component not in methods:
            program = runtime.load_program(Path(artifact_dir) / artifact.components[component])
            methods[component] = program.load_method("forward")
        return methods[component]

    def tensor(array: np.ndarray) -> Any:
        # numpy gives an empty array (the prefill's empty past) all-zero strides; ExecuTorch's
        # make_tensor_ptr asserts on them and aborts the process, so empty tensors get torch's own.
        t = torch.from_numpy(np.ascontiguousarray(array))
        return torch.empty(t.shape, dtype=t.dtype) if t.numel() == 0 else t

    def run_one(component: str, io: dict[str, Any], feeds: Feeds) -> list[np.ndarray]:
        args = [tensor(feeds[n]) for n in io["inputs"]]
        outputs = method(component).execute(args)
        return [o.detach().numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]

    def run(component: str, feeds: Feeds) -> Outputs:
        io = artifact.extra["io"][component]
        missing = [n for n in io["inputs"] if n not in feeds]
        if missing:
            raise InputError(f"{component}: feeds lack {', '.join(missing)} (expected {', '.join(io['inputs'])})")
        _check_bounds(component, io, feeds)
        split = {n: int(a) for n, a in io.get("batch_axes", {}).items()}
        sizes = {feeds[n].shape[a] for n, a in split.items() if n in feeds}
        batch = sizes.pop() if len(sizes) == 1 else 1
        if batch == 1:
            results = run_one(component, io, feeds)
        else:
            parts = [run_one(component, io, {n: (np.take(v, [i], axis=split[n]) if n in split else v) for n, v in feeds.items()}) for i in range(batch)]
            results = [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(parts[0]))]
        if len(results) != len(io["outputs"]):
            raise RuntimeError(f"{component}: the ExecuTorch program returned {len(results)} outputs, the component declares {len(io['outputs'])}")
        return {name: (r.astype(np.float32) if r.dtype.kind == "f" else r) for name, r in zip(io["outputs"], results, strict=True)}

    return run
