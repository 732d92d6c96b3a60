"""Security probes: each is an attack with an observable effect; it *held* when there was none.

- run ids from a link (``?run=``) that name a folder outside the runs folder: absolute paths,
  ``..``, symbolic links, separators, empty and very long names (:func:`dufm_core.store.find_run`
  must return None for each);
- a forged ``status.json`` naming an unrelated process's pid: cancelling that run must not
  signal it (the process must survive);
- checkpoints that carry code (a pickled ``os.system`` call, in a torch zip and as a bare
  pickle; a torch zip whose data.pkl is replaced): loading must refuse them and the marker file
  the code would write must not appear;
- tiny checkpoint files that declare huge tensors or a huge config: loading must refuse them
  without allocating (the peak memory of a child process that loads them stays small);
- the server's settings: bound to localhost, XSRF protection on, no tracebacks shown to
  visitors, an upload limit that fits checkpoints, the launcher's socket in a private folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ProbeResult:
    name: str
    held: bool
    detail: str


def _run_ids(tmp: Path) -> list[ProbeResult]:
    from dufm_core import RunConfig
    from dufm_core.store import create_run, find_run

    runs = tmp / "runs"
    outside = tmp / "outside"
    outside.mkdir(parents=True)
    (outside / "config.json").write_text("{}")
    (outside / "victim").mkdir()
    (outside / "victim" / "config.json").write_text("{}")
    run = create_run(RunConfig(K=2, n=2, width=2, depth=1, steps=1), runs)
    (runs / "link").symlink_to(outside)
    (runs / "link2").symlink_to(run.path)
    ids = [str(outside), "../outside", "../outside/victim", "link", "link2", "..", ".", "",
           "/", "/etc", "%2e%2e", "a/../" + run.id, run.id + "/..", "x\x00y", "x" * 5000,
           "~", "~/runs", run.id + "/checkpoints"]
    out = []
    for rid in ids:
        got = find_run(rid, runs)
        out.append(ProbeResult(f"run id {rid[:30]!r}", got is None,
                               "refused" if got is None else f"opened {got.path}"))
    return out


def _forged_pid(tmp: Path) -> list[ProbeResult]:
    import socket

    from dufm_core import RunConfig
    from dufm_core.process import jobs
    from dufm_core.store import create_run

    victim = subprocess.Popen(["sleep", "60"])
    try:
        run = create_run(RunConfig(K=2, n=2, width=2, depth=1, steps=1), tmp / "pid_runs")
        run.write_status(state="running", pid=victim.pid, host=socket.gethostname())
        msg = jobs.cancel(run)
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.wait(timeout=1.0)  # a signal, if one was sent, has landed by then
        alive = victim.poll() is None
        return [ProbeResult("cancel a run whose status names an unrelated pid", alive,
                            f"victim {'alive' if alive else 'killed'}; cancel said: {msg}")]
    finally:
        victim.kill()
        victim.wait()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _code_checkpoints(tmp: Path) -> list[ProbeResult]:
    from dufm_core.checkpoints import CheckpointError
    from dufm_core.kinds import load_checkpoint

    out = []
    cases: dict[str, Path] = {}
    marker = tmp / "pwned"
    p = tmp / "evil_torch.pt"
    torch.save({"format_version": 1, "config": {}, "model": {}, "x": _Payload(marker)}, p)
    cases["torch.save with an os.system reduce"] = p
    p = tmp / "evil_pickle.pt"
    p.write_bytes(pickle.dumps(_Payload(marker)))
    cases["a bare pickle with an os.system reduce"] = p
    good = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, good)
    src = zipfile.ZipFile(io.BytesIO(good.getvalue()))
    p = tmp / "evil_zip.pt"
    with zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(info, data)
    cases["a torch zip whose data.pkl is replaced"] = p
    for name, path in cases.items():
        try:
            load_checkpoint(path)
            refused, why = False, "loaded"
        except CheckpointError as exc:
            refused, why = True, str(exc).split(": ", 1)[-1][:120]
        except Exception as exc:
            refused, why = False, f"crashed: {type(exc).__name__}"
        held = refused and not marker.exists()
        advice = "weights_only=False" in why
        out.append(ProbeResult(f"checkpoint: {name}", held and not advice,
                               why + (" (suggests weights_only=False)" if advice else "")))
        marker.unlink(missing_ok=True)
    return out


_LOAD_CHILD = """
import resource, sys
from dufm_core.checkpoints import CheckpointError
from dufm_core.kinds import load_checkpoint
try:
    load_checkpoint(sys.argv[1])
    print("loaded")
except CheckpointError as exc:
    print("refused:", str(exc)[:150])
print("maxrss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _huge_declarations(tmp: Path) -> list[ProbeResult]:
    from dufm_core import RunConfig

    cfg = RunConfig(K=10, n=100000, width=65536, depth=3).to_dict()
    files: dict[str, Path] = {}

    def st(name: str, header: dict, body: bytes = b"") -> None:
        head = json.dumps(header).encode()
        path = tmp / name
        path.write_bytes(len(head).to_bytes(8, "little") + head + body)
        files[name] = path

    meta = {"format_version": "1", "step": "0", "config": json.dumps(cfg)}
    st("huge_config.safetensors", {"__metadata__": meta,
                                   "features": {"dtype": "F64", "shape": [2, 2],
                                                "data_offsets": [0, 32]}}, bytes(32))
    st("huge_shape.safetensors", {"__metadata__": meta,
                                  "features": {"dtype": "F64", "shape": [2**40, 2**20],
                                               "data_offsets": [0, 32]}}, bytes(32))
    st("negative_shape.safetensors", {"__metadata__": meta,
                                      "features": {"dtype": "F64", "shape": [-4, -8],
                                                   "data_offsets": [0, 256]}}, bytes(256))
    pt = tmp / "huge_config.pt"
    torch.save({"format_version": 1, "config": cfg, "step": 0,
                "model": {"features": torch.zeros(2, 2, dtype=torch.float64)},
                "optimizer": None}, pt)
    files["huge_config.pt"] = pt
    out = []
    for name, path in files.items():
        limit = 4 * 2**30

        def cap(limit: int = limit) -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        proc = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path)], capture_output=True,
                              text=True, timeout=120, preexec_fn=cap,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = proc.stdout.strip().splitlines()
        refused = bool(lines) and lines[0].startswith("refused")
        rss = float(lines[-1].split()[-1]) if lines and lines[-1].startswith("maxrss") else -1
        held = proc.returncode == 0 and refused and 0 < rss < 1024
        detail = (lines[0][:140] if lines else proc.stderr.strip()[-160:]) + f"; peak {rss:.0f} MB"
        out.append(ProbeResult(f"tiny file declaring a huge model: {name}", held, detail))
    return out


def _server_settings() -> list[ProbeResult]:
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server, client = conf.get("server", {}), conf.get("client", {})
    upload = server.get("maxUploadSize", 200)
    out = [
        ProbeResult("server binds to localhost", server.get("address") in ("localhost",
                                                                          "127.0.0.1"),
                    f"address = {server.get('address')!r}"),
        ProbeResult("XSRF protection on", server.get("enableXsrfProtection", True) is True,
                    f"enableXsrfProtection = {server.get('enableXsrfProtection', True)}"),
        ProbeResult("CORS not opened", server.get("enableCORS", True) is True,
                    f"enableCORS = {server.get('enableCORS', True)}"),
        ProbeResult("no tracebacks for visitors", client.get("showErrorDetails") in ("none",
                                                                                   "type"),
                    f"showErrorDetails = {client.get('showErrorDetails')!r}"),
        ProbeResult("upload limit fits checkpoints (≤ 256 MB)", upload <= 256,
                    f"maxUploadSize = {upload} MB"),
    ]
    from dufm_core.process import launcher

    sock = launcher.socket_path(ROOT / "runs")
    folder = sock.parent
    st = folder.stat() if folder.exists() else None
    private = (st is not None and st.st_uid == os.getuid() and (st.st_mode & 0o077) == 0
               and not folder.is_symlink())
    out.append(ProbeResult("launcher socket in a private folder", private,
                           f"{folder} mode {oct(st.st_mode & 0o777) if st else 'absent'}"))
    return out


def run_all(tmp: Path, progress: Callable[[str], None] = print) -> list[ProbeResult]:
    results: list[ProbeResult] = []
    for family in (_run_ids, _forged_pid, _code_checkpoints, _huge_declarations):
        sub = tmp / family.__name__.strip("_")
        sub.mkdir(parents=True)
        results += family(sub)
    results += _server_settings()
    for r in results:
        if not r.held:
            progress(f"  did not hold: {r.name}: {r.detail}")
    return results

