"""The device pack: what on-device validation reads, written by the host while it validates.

Layout (all paths relative to the build directory, so the folder can be copied to the device)::

    validate/device_pack/pack.json           what to run and how to judge it (see PackWriter.finish)
    validate/device_pack/samples/00000.npz   one recorded reference call or one generation prompt
    validate/device_pack/latency/<c>.npz     the feeds the host timed each component with

Two modes. ``calls`` (encoders): every call the float reference received during evaluation is
saved with its feeds (``in.<name>``) and outputs (``ref.<name>``); the device replays the feeds
through the artifact. ``generate`` (generative VLMs): each prompt's ``input_ids`` and
``pixel_values`` with the reference's greedy tokens and first-token logits; the device generates
with the same greedy loop (edgecompile.runtime.generate). Samples stream to disk one at a time and
stop at ``max_samples``: the pack is bounded, and says how many of the eval set it holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PACK_FILE = "pack.json"
SCHEMA_VERSION = 1
MAX_SAMPLES = 1000

Feeds = dict[str, np.ndarray]
Runner = Callable[[str, Feeds], Feeds]


class PackError(Exception):
    """A device pack that is missing, incomplete or of another schema (exit 3)."""


@dataclass
class PackWriter:
    """Records the reference run into ``directory`` while the host evaluates (streamed, bounded)."""

    directory: Path
    mode: str  # "calls" | "generate"
    max_samples: int = MAX_SAMPLES
    count: int = 0
    dropped: int = 0
    _prompt: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.directory / "samples").mkdir(parents=True, exist_ok=True)

    def _save(self, arrays: dict[str, np.ndarray]) -> None:
        if self.count >= self.max_samples:
            self.dropped += 1
            return
        np.savez(self.directory / "samples" / f"{self.count:05d}.npz", **arrays)
        self.count += 1

    def wrap(self, run: Runner) -> Runner:
        """A runner that records what it is asked and answers, then answers the same."""

        def recorded(component: str, feeds: Feeds) -> Feeds:
            outputs = run(component, feeds)
            if self.mode == "calls":
                arrays = {f"in.{k}": np.asarray(v) for k, v in feeds.items()}
                arrays.update({f"ref.{k}": np.asarray(v) for k, v in outputs.items()})
                arrays["component"] = np.array(component)
                self._save(arrays)
            elif component == "embed_tokens" and feeds["input_ids"].shape[1] > 1:  # a new prompt (decode steps feed one token)
                self._prompt = {"input_ids": np.asarray(feeds["input_ids"])}
            elif component == "vision_encoder":
                self._prompt["pixel_values"] = np.asarray(feeds["pixel_values"])
            elif component == "decoder" and self._prompt:  # the prefill: the prompt is complete
                self._save(self._prompt)
                self._prompt = {}
            return outputs

        return recorded

    def save_reference(self, outputs: dict[str, np.ndarray]) -> None:
        """Generative mode: the reference's greedy tokens and first-token logits, one row per saved prompt."""
        np.savez(self.directory / "reference.npz", **{k.replace("/", "__"): np.asarray(v)[: self.count] for k, v in outputs.items()})

    def save_latency_feeds(self, component: str, feeds: Feeds) -> None:
        (self.directory / "latency").mkdir(exist_ok=True)
        np.savez(self.directory / "latency" / f"{component}.npz", **feeds)

    def finish(self, description: dict[str, Any]) -> None:
        """Write pack.json: ``description`` plus the sample count (last, so a partial pack has none)."""
        body = {"schema_version": SCHEMA_VERSION, "mode": self.mode, **description, "samples": self.count, "samples_left_out": self.dropped}
        (self.directory / PACK_FILE).write_text(json.dumps(body, indent=1, sort_keys=True))


@dataclass(frozen=True)
class DevicePack:
    """A pack read back on the device."""

    build_dir: Path
    directory: Path
    description: dict[str, Any]

    @classmethod
    def open(cls, build_dir: Path) -> DevicePack:
        from edgecompile.device import PACK_DIR

        directory = build_dir / PACK_DIR
        path = directory / PACK_FILE
        if not path.is_file():
            raise PackError(f"{build_dir}: no device pack ({path}); build it with 'edgecompile build' (the validate stage writes it)")
        description = json.loads(path.read_text())
        if description.get("schema_version") != SCHEMA_VERSION:
            raise PackError(f"{path}: schema_version: expected {SCHEMA_VERSION}, got {description.get('schema_version')!r}")
        return cls(build_dir, directory, description)

    @property
    def mode(self) -> str:
        return self.description["mode"]

    def artifact_path(self, component: str) -> Path:
        return self.build_dir / self.description["artifacts"][component]

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        """The saved samples in order, one file open at a time."""
        for i in range(self.description["samples"]):
            path = self.directory / "samples" / f"{i:05d}.npz"
            if not path.is_file():
                raise PackError(f"{path}: missing (pack.json says {self.description['samples']} samples)")
            with np.load(path, allow_pickle=False) as data:
                yield {k: data[k] for k in data.files}

    def reference(self) -> dict[str, np.ndarray]:
        with np.load(self.directory / "reference.npz", allow_pickle=False) as data:
            return {k.replace("__", "/"): data[k] for k in data.files}

    def latency_feeds(self, component: str) -> Feeds:
        with np.load(self.directory / "latency" / f"{component}.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
