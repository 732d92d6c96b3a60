"""Run every reliability probe and print the table of docs/reliability.md (see the package doc).

    python -m scripts.reliability [--kills 40] [--json artifacts/reliability.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

from scripts.reliability import faults, inputs, probes


def main() -> None:
    ap = argparse.ArgumentParser(description="DUFM Lab reliability probes (docs/reliability.md)")
    ap.add_argument("--kills", type=int, default=40, help="SIGKILLs of a training process")
    ap.add_argument("--workers", type=int, default=2, help="input processes at once")
    ap.add_argument("--only", choices=("inputs", "faults", "probes"), default=None)
    ap.add_argument("--json", default=None, help="also write every outcome to this file")
    args = ap.parse_args()
    t0 = time.time()
    out: dict = {"machine": f"{platform.machine()} {platform.python_version()}"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dufm-reliability-") as tmp_s:
        tmp = Path(tmp_s)
        if args.only in (None, "inputs"):
            print("inputs …", flush=True)
            res = inputs.run_all(tmp / "inputs", args.workers)
            count = {k: sum(r.outcome == k for r in res)
                     for k in (inputs.REFUSED, inputs.ACCEPTED, inputs.CRASHED, inputs.HUNG)}
            rows.append(("bad inputs (CLI arguments and files)", len(res),
                         f"refused with one line {count['refused']} · accepted "
                         f"{count['accepted']} · crashed {count['crashed']} · hung "
                         f"{count['hung']}"))
            out["inputs"] = [dataclasses.asdict(r) for r in res]
        if args.only in (None, "faults"):
            print("faults: kills …", flush=True)
            kill = faults.kill_loop(tmp / "kills", args.kills)
            rows.append(("SIGKILL of a training process, then resume", kill.kills,
                         f"survived {kill.survived} · data lost {kill.data_lost}"))
            print("faults: corrupt files …", flush=True)
            cor = faults.corrupt_matrix(tmp / "corrupt")
            ops = len(faults.OPERATIONS)
            crashed = sum(bool(r.crashed) for r in cor)
            lost = sum(bool(r.data_lost) for r in cor)
            rows.append((f"corrupt files × {ops} operations", len(cor),
                         f"survived {len(cor) - crashed} · data lost {lost}"))
            out["kills"] = dataclasses.asdict(kill)
            out["corrupt"] = [dataclasses.asdict(r) for r in cor]
        if args.only in (None, "probes"):
            print("probes …", flush=True)
            res_p = probes.run_all(tmp / "probes")
            held = sum(r.held for r in res_p)
            rows.append(("security probes", len(res_p), f"held {held} · did not hold "
                                                        f"{len(res_p) - held}"))
            out["probes"] = [dataclasses.asdict(r) for r in res_p]
    out["seconds"] = round(time.time() - t0, 1)
    print("\n| family | tried | outcome |\n|---|---:|---|")
    for name, n, outcome in rows:
        print(f"| {name} | {n} | {outcome} |")
    print(f"\n({out['seconds']} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
