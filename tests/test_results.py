"""ndm.pipeline.results: atomic writes (text, torch, any bytes), JSON with provenance, stale
temporaries; and the one config hash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ndm.pipeline import config, provenance, tracking
from ndm.pipeline.results import (
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    remove_stale_temporaries,
    to_json,
    write_result_json,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    atomic_write_text(path, "old\n")

    def half_then_crash(f) -> None:
        f.write(b"{\"half\": ")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_torch_save_round_trip(tmp_path: Path) -> None:
    obj = {"w": torch.arange(4.0), "step": 3}
    path = atomic_torch_save(obj, tmp_path / "sub" / "ckpt.pt")
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]


def test_stale_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".ckpt.pt.tmp.{int(dead.stdout)}"
    live = tmp_path / f".ckpt.pt.tmp.{os.getpid()}"
    stale.write_bytes(b"x")
    live.write_bytes(b"y")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_json_numbers_stay_numbers_and_objects_are_refused() -> None:
    doc = json.loads(to_json({"a": np.float32(0.5), "b": np.int64(3), "c": np.arange(2), "d": torch.tensor(1.5), "p": Path("x/y")}))
    assert doc == {"a": 0.5, "b": 3, "c": [0, 1], "d": 1.5, "p": "x/y"}
    with pytest.raises(TypeError, match="builtins.object"):
        to_json({"bad": object()})


def test_result_json_carries_provenance(tmp_path: Path) -> None:
    doc = write_result_json(tmp_path / "r.json", {"bpd": np.float64(1.25)}, device="cpu")
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    assert doc["bpd"] == 1.25 and doc["provenance"]["device"] == "cpu" and "versions" in doc["provenance"]


def test_one_config_hash_with_the_recorded_formula() -> None:
    assert config.config_hash is provenance.config_hash
    assert getattr(tracking, "config_hash", config.config_hash) is config.config_hash  # a re-export at most
    cfg = {"b": [1, 2.5], "a": {"x": None}}
    # sorted keys, json.dumps' default separators: the form every recorded hash was made with
    text = '{"a": {"x": null}, "b": [1, 2.5]}'
    assert config.config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:12]
