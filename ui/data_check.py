"""The Train page's data check for real-network configs: is the data there, and is ``n`` small
enough? Runs :func:`dufm_core.data.train_class_counts` (the loader's own file checks, without
building a training set) once per data folder state, cached across reruns."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dufm_core import data
from dufm_core.config import RunConfig

_MAX_ENTRIES = 256  # files looked at for the folder's signature (data folders hold a handful)


def folder_signature(data_dir: str) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of the files in ``data_dir`` and two levels below it: the cache key
    that makes a fixed or refilled folder be read again. Empty for a missing folder."""
    root = Path(data_dir).expanduser() if data_dir else None
    if root is None or not root.is_dir():
        return ()
    out: list[tuple[str, int, int]] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        if len(Path(folder).parts) - base_depth >= 2:
            dirs[:] = []
        for name in sorted(files):
            try:
                st_ = (Path(folder) / name).stat()
            except OSError:
                continue
            out.append((str(Path(folder) / name), st_.st_size, st_.st_mtime_ns))
            if len(out) >= _MAX_ENTRIES:
                return tuple(out)
    return tuple(out)


@st.cache_data(max_entries=32, show_spinner="Reading the data set…")
def _counts(
    dataset: str,
    data_dir: str,
    seed: int,
    test_fraction: float,
    signature: tuple[tuple[str, int, int], ...],
) -> list[int] | str:
    """Training samples per class, or the loader's one-line error message."""
    del signature  # only part of the cache key
    try:
        return data.train_class_counts(dataset, data_dir, seed, test_fraction)
    except data.DataError as exc:
        return str(exc)


def class_counts(cfg: RunConfig) -> list[int]:
    """Training samples per class of ``cfg``'s data set; raises :class:`data.DataError` with
    the loader's message when the folder or a file is missing or malformed. The digits are
    bundled (no folder); nothing is ever downloaded."""
    data_dir = "" if cfg.dataset == "digits" else cfg.data_dir
    result = _counts(
        cfg.dataset,
        data_dir,
        int(cfg.seed),
        float(cfg.test_fraction),
        folder_signature(data_dir),
    )
    if isinstance(result, str):
        field, _, message = result.partition(": ")
        raise data.DataError(field, message)
    return result


def check(cfg: RunConfig) -> list[int]:
    """Everything the loader would refuse about a validated real-network ``cfg`` (the data
    folder and its files, n) as a :class:`data.DataError`; returns the class counts."""
    counts = class_counts(cfg)
    data.check_n(cfg.dataset, cfg.n, counts, cfg.test_fraction)
    return counts
