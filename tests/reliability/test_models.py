"""Bad checkpoints: pickled weights are never unpickled, truncated or foreign weights are named.

Every case goes through ``edgecompile export`` and is refused with exit 3 naming the file, before
any loader runs (the NaN case: before export), and leaves no build directory behind.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from battery import assert_refused, cli, snapshot


class _Payload:
    """Unpickling this writes a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "unpickled"))


def _replace_weights(model: Path, name: str, data: bytes) -> None:
    (model / "model.safetensors").unlink()
    (model / name).write_bytes(data)


def _cut(model: Path, keep: int | float) -> None:
    path = model / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])


def _header(model: Path, header: bytes, length: int | None = None) -> None:
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(header) if length is None else length) + header)


# case: (damage(model, tmp), named file, words)
CASES = {
    "pytorch_model.bin only (benign pickle)": (lambda m, t: _replace_weights(m, "pytorch_model.bin", pickle.dumps({"w": [1, 2]})), "pytorch_model.bin", "convert"),
    "pytorch_model.bin only (malicious pickle)": (lambda m, t: _replace_weights(m, "pytorch_model.bin", pickle.dumps(_Payload(t / "MARKER"))), "pytorch_model.bin", "safetensors only"),
    "model.pt only": (lambda m, t: _replace_weights(m, "model.pt", pickle.dumps(1)), "model.pt", "pickle format"),
    "model.pth only": (lambda m, t: _replace_weights(m, "model.pth", pickle.dumps(1)), "model.pth", "pickle format"),
    "model.ckpt only": (lambda m, t: _replace_weights(m, "model.ckpt", pickle.dumps(1)), "model.ckpt", "pickle format"),
    "weights.pkl only": (lambda m, t: _replace_weights(m, "weights.pkl", pickle.dumps(1)), "weights.pkl", "pickle format"),
    "no weights at all": (lambda m, t: (m / "model.safetensors").unlink(), "model", "no *.safetensors weights"),
    "safetensors cut in the data": (lambda m, t: _cut(m, 0.5), "model.safetensors", "truncated safetensors file"),
    "safetensors cut one byte short": (lambda m, t: _cut(m, (m / "model.safetensors").stat().st_size - 1), "model.safetensors", "truncated safetensors file"),
    "safetensors cut in the header": (lambda m, t: _cut(m, 200), "model.safetensors", "truncated safetensors file"),
    "safetensors of 4 bytes": (lambda m, t: _cut(m, 4), "model.safetensors", "8-byte header length"),
    "safetensors of 0 bytes": (lambda m, t: _cut(m, 0), "model.safetensors", "truncated safetensors file"),
    "safetensors header not JSON": (lambda m, t: _header(m, b"{not json" + b" " * 20), "model.safetensors", "not a safetensors file"),
    "safetensors header a list": (lambda m, t: _header(m, b"[1, 2, 3]"), "model.safetensors", "not a JSON object"),
    "safetensors header without offsets": (lambda m, t: _header(m, json.dumps({"w": {"dtype": "F32", "shape": [1]}}).encode()), "model.safetensors", "data_offsets"),
    "a zip (torch.save) renamed .safetensors": (lambda m, t: (m / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 64), "model.safetensors", "truncated safetensors file"),
    "no config.json": (lambda m, t: (m / "config.json").unlink(), "model", "no config.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_is_refused_before_loading(tmp_path: Path, model_copy: Path, case: str) -> None:
    damage, named, words = CASES[case]
    damage(model_copy, tmp_path)
    out = tmp_path / "out"
    before = snapshot(model_copy)
    outcome = cli("export", "--recipe", "x86-cpu", "--model", str(model_copy), "--out", str(out))
    assert_refused(outcome, 3, named, words)
    assert not (tmp_path / "MARKER").exists(), "a pickle was loaded"
    assert not out.exists() and snapshot(model_copy) == before


def test_pickle_beside_safetensors_is_never_read(tmp_path: Path, model_copy: Path) -> None:
    """safetensors present: the check passes and the pickle is not touched by it."""
    from edgecompile.models.weights_check import check_safetensors_only

    (model_copy / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "MARKER")))
    check_safetensors_only(model_copy)
    assert not (tmp_path / "MARKER").exists()


def test_unknown_model_name(tmp_path: Path) -> None:
    outcome = cli("export", "--recipe", "x86-cpu", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "out"))
    assert_refused(outcome, 3, "no-such-org/no-such-model", "never downloads")
    assert not (tmp_path / "out").exists()


def test_nan_weights_refused_in_export_leave_no_build_directory(tmp_path: Path, model_copy: Path) -> None:
    """Refused inside the first stage (exit 3): no build.json, no recipe.resolved.json, no directory."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    weights = load_file(model_copy / "model.safetensors")
    name = sorted(k for k in weights if weights[k].dtype == np.float32)[0]
    weights[name] = np.full_like(weights[name], np.nan)
    save_file(weights, model_copy / "model.safetensors")
    out = tmp_path / "out"
    outcome = cli("export", "--recipe", "x86-cpu", "--model", str(model_copy), "--out", str(out))
    assert_refused(outcome, 3, name)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
