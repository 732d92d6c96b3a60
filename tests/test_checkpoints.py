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
    with pytest.raises(CheckpointError, match=r"truncated or corrupt \(\d+ bytes\)"):
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
    with pytest.raises(CheckpointError, match=r"'features' should be \[5, 12\] float64, the "
                                              r"file has \[2, 2\] float64"):
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




# --------------------------------------------------------------------------- issue #12
def _safetensors(path: Path, header: object, body: bytes = b"") -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + body)
    return path


def _meta(**cfg) -> dict:
    base = {"K": 3, "n": 4, "width": 5, "depth": 2}
    return {"format_version": "1", "step": "0", "config": json.dumps({**base, **cfg})}


def test_a_tiny_file_whose_config_is_huge_allocates_nothing(tmp_path: Path) -> None:
    """A 600-byte checkpoint whose config asks for width 65536 and n 100000 (half a terabyte)
    is refused before any model is built: its tensors do not match, and with matching
    declarations the memory cap refuses it."""
    meta = _meta(width=65536, n=100000, K=10, steps=10)
    small = _safetensors(tmp_path / "a.safetensors", {"__metadata__": meta, "features": {
        "dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8))
    assert small.stat().st_size < 1000
    with pytest.raises(CheckpointError, match="memory cap"):
        load_checkpoint(small)
    pt = tmp_path / "a.pt"
    torch.save({"format_version": 1, "config": json.loads(meta["config"]), "step": 0,
                "model": {"features": torch.zeros(1)}, "optimizer": None}, pt)
    with pytest.raises(CheckpointError, match="memory cap"):
        load_checkpoint(pt)
    # under the cap, the first bad tensor is named with both shapes
    ok = _safetensors(tmp_path / "b.safetensors", {"__metadata__": _meta(), "features": {
        "dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(CheckpointError, match=r"missing 'weights\.0', 'weights\.1'"):
        load_checkpoint(ok)


def test_safetensors_headers_that_lie_are_one_line(tmp_path: Path) -> None:
    meta = _meta()
    cases = {
        "list": [1, 2, 3],
        "nested": json.loads("[" * 50 + "]" * 50),
        "negative": {"__metadata__": meta, "w": {"dtype": "F64", "shape": [-1, 2],
                                                 "data_offsets": [0, 16]}},
        "overflow": {"__metadata__": meta, "w": {"dtype": "F64", "shape": [2**62, 2**62],
                                                 "data_offsets": [0, 16]}},
        "past_end": {"__metadata__": meta, "w": {"dtype": "F64", "shape": [4],
                                                 "data_offsets": [0, 32]}},
        "overlap": {"__metadata__": meta,
                    "a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
                    "b": {"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}},
        "dtype": {"__metadata__": meta, "w": {"dtype": "BOOM", "shape": [2],
                                              "data_offsets": [0, 16]}},
        "meta_list": {"__metadata__": [1], "w": {"dtype": "F64", "shape": [2],
                                                 "data_offsets": [0, 16]}},
    }
    for name, header in cases.items():
        path = _safetensors(tmp_path / f"{name}.safetensors", header, bytes(24))
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert len(str(err.value).splitlines()) == 1, name
    deep = tmp_path / "deep.safetensors"
    text = b"[" * 100_000 + b"]" * 100_000
    deep.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(CheckpointError, match="not JSON"):
        load_checkpoint(deep)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="declares 1099511627776 bytes"):
        load_checkpoint(huge)


def test_safetensors_data_are_read_once_through_a_map(runs_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader never reads the whole file into memory: the header with bounded reads, the
    tensors from a memory map (Path.read_bytes is not called)."""
    cfg = small_cfg()
    run = create_run(cfg, runs_dir)
    ck = load_checkpoint(save_checkpoint(run, 2, build_model(cfg), None, cfg))
    out = tmp_path / "m.safetensors"
    save_safetensors(out, ck)

    def no_read_bytes(self: Path) -> bytes:
        raise AssertionError(f"read_bytes({self}) called")

    monkeypatch.setattr(Path, "read_bytes", no_read_bytes)
    back = load_checkpoint(out)
    assert torch.equal(back.model.features, ck.model.features)
    assert back.model.features.requires_grad and back.model.features.is_contiguous()


def test_restore_builds_on_meta_and_keeps_the_numbers(runs_dir: Path) -> None:
    cfg = small_cfg(dtype="float32")
    run = create_run(cfg, runs_dir)
    model = build_model(cfg)
    ck = load_checkpoint(save_checkpoint(run, 1, model, None, cfg))
    assert ck.model.features.dtype == torch.float32
    assert not any(t.is_meta for t in [*ck.model.parameters(), *ck.model.buffers()])
    assert torch.equal(ck.model.labels, torch.arange(3).repeat_interleave(4))
    for a, b in zip(ck.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b) and isinstance(a, torch.nn.Parameter)
    state = torch.load(run.checkpoint_path(1), weights_only=True)
    state["model"]["features"] = state["model"]["features"].double()
    bad = run.path / "dtype.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"'features' should be .*float32, the file has "
                                              r".*float64"):
        load_checkpoint(bad)


def test_refusal_messages_are_honest(runs_dir: Path, tmp_path: Path) -> None:
    """Random bytes are not 'code'; code is named and PyTorch's advice to turn the safety off is
    never passed on; a truncated file is 'truncated or corrupt (N bytes)' in our own words."""
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(7, 256)) * 3)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(noise)
    assert "not a PyTorch or safetensors file" in str(err.value)
    assert "code" not in str(err.value)
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "config": {}, "x": _Evil()}, evil)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil)
    msg = str(err.value)
    assert "system" in msg and "nothing was executed" in msg
    assert "weights_only" not in msg and "False" not in msg
    cfg = small_cfg()
    good = save_checkpoint(create_run(cfg, runs_dir), 1, build_model(cfg), None, cfg)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cut)
    assert str(err.value).endswith("truncated or corrupt (300 bytes)")


def test_the_public_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_safetensors_header gives the checked entries and reads no data;
    read_safetensors_tensors then reads them; load_pt_safely refuses a file over the memory cap
    unread (the readers that dufm_core.inspection shares)."""
    from dufm_core import checkpoints

    for name in ("read_safetensors_header", "read_safetensors_tensors", "load_pt_safely",
                 "short_name_list", "SafetensorsHeader", "SafetensorsEntry"):
        assert name in checkpoints.__all__ and hasattr(checkpoints, name)
    w = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = tmp_path / "w.safetensors"
    checkpoints.write_safetensors(out, {"w": w, "i": torch.arange(2)}, {"k": "v"})
    header = checkpoints.read_safetensors_header(out)
    assert header.metadata == {"k": "v"} and set(header.entries) == {"w", "i"}
    assert header.entries["w"].shape == (2, 3) and header.entries["w"].dtype == "F64"
    assert header.data_start + header.entries["i"].end == out.stat().st_size
    back = checkpoints.read_safetensors_tensors(out, header)
    assert torch.equal(back["w"], w) and torch.equal(back["i"], torch.arange(2))
    assert checkpoints.short_name_list(["a", "b", "c", "d", "e"]) == "'a', 'b', 'c' and 2 more"
    torch.save({"w": torch.zeros(1000, dtype=torch.float64)}, tmp_path / "big.pt")
    monkeypatch.setenv("DUFM_MEMORY_CAP", "1K")
    with pytest.raises(CheckpointError, match=r"memory cap .*; not read$"):
        checkpoints.load_pt_safely(tmp_path / "big.pt")
