"""Checkpoint files: round trips (.pt and .safetensors), refusal of code, truncated and foreign
files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from dufm_core.checkpoints import CheckpointError, save_checkpoint, save_safetensors
from dufm_core.config import RunConfig
from dufm_core.kinds import load_checkpoint
from dufm_core.models import build_model
from dufm_core.store import create_run, open_run


def small_cfg(**kw) -> RunConfig:
    cfg = RunConfig(K=3, n=4, width=5, depth=2, steps=10, **kw)
    cfg.validate()
    return cfg


def test_checkpoint_roundtrip(runs_dir: Path) -> None:
    cfg = small_cfg()
    run = create_run(cfg, runs_dir)
    model = build_model(cfg)
    path = save_checkpoint(run, 7, model, None, cfg)
    assert path.name == "step_00000007.pt"
    ck = load_checkpoint(path)
    assert ck.step == 7 and ck.config == cfg
    assert torch.equal(ck.labels, torch.arange(3).repeat_interleave(4))
    for a, b in zip(ck.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert tuple(ck.model.features.shape) == (5, 12)
    assert [tuple(w.shape) for w in ck.model.weights] == [(5, 5), (3, 5)]
    assert open_run(run.path).checkpoints() == [7]
    # a plain torch.load with weights_only works on it too (the contract for other tools)
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"format_version", "config", "step", "model", "optimizer"}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "config": {}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


def test_truncated_and_foreign_checkpoints(runs_dir: Path, tmp_path: Path) -> None:
    cfg = small_cfg()
    run = create_run(cfg, runs_dir)
    good = save_checkpoint(run, 1, build_model(cfg), None, cfg)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or another format"):
        load_checkpoint(cut)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a DUFM Lab checkpoint"):
        load_checkpoint(other)
    state = torch.load(good, weights_only=True)
    state["format_version"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(tmp_path / "future.pt")
    state["format_version"] = 1
    state["model"]["features"] = torch.zeros(2, 2, dtype=torch.float64)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_safetensors_roundtrip_and_bad_files(runs_dir: Path, tmp_path: Path) -> None:
    cfg = small_cfg()
    run = create_run(cfg, runs_dir)
    ck = load_checkpoint(save_checkpoint(run, 3, build_model(cfg), None, cfg))
    out = tmp_path / "m.safetensors"
    save_safetensors(out, ck)
    back = load_checkpoint(out)
    assert back.step == 3 and back.config == cfg
    for a, b in zip(back.model.parameters(), ck.model.parameters(), strict=True):
        assert torch.equal(a, b)
    raw = out.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) - 10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "tiny.safetensors")
    bad = (16).to_bytes(8, "little") + b"not json at all!"
    (tmp_path / "bad.safetensors").write_bytes(bad)
    with pytest.raises(CheckpointError, match="not JSON"):
        load_checkpoint(tmp_path / "bad.safetensors")
    head = json.dumps({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "nometa.safetensors").write_bytes(
        len(head).to_bytes(8, "little") + head + bytes(16))
    with pytest.raises(CheckpointError, match="lacks a DUFM Lab config"):
        load_checkpoint(tmp_path / "nometa.safetensors")


