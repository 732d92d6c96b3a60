"""Benchmark: a 16-member sweep with the local executor and with Ray, against running the members
one after another.

Each member is docs/theory.md case A (K=3, n=40, d=60, L=5, lr 0.2, float64; λ over 8 values ×
2 seeds) trained for ``--steps`` GD steps and then analysed, exactly as a sweep does. Three
ways, each in a fresh runs folder, through the same :func:`dufm_core.sweeps.run_sweep`:

* sequential: the ``inline`` executor, members one after another in this (already warm) process:
  the total work, and the best case for one core;
* local: the default executor, ``--jobs`` worker processes (its start-up is included);
* ray: a local Ray instance with ``--jobs`` CPUs; timed with the instance already up (as on a
  cluster) and, separately, the time ``ray.init`` took.

The ideal is total work / cores = sequential / jobs. Goals: local within 10% of the ideal, Ray
within 20% of local. Other processes on the machine distort all of this: ``--wait-idle S`` waits
for an idle machine before each phase, the busy cores before and during each phase are recorded
(a sequential phase should show ~1, a parallel one ~``jobs``; more means someone else computed),
together with the CPU time this process and its workers used, so that the share of other
processes can be told even when the machine is saturated (``others_cores_approx``; not for Ray,
whose workers are not our children, nor for fresh local workers, reaped after the phase), and
the median of ``--repeats`` is reported.

    python -m benchmarks.bench_sweep [--steps 30000] [--repeats 2] [--jobs 2] [--no-ray]
                                     [--wait-idle S] [--quick] [--out FILE.json]
    python -m benchmarks.bench_sweep --contention [--steps N] [--jobs 2] [--wait-idle S]
    python -m benchmarks.bench_sweep --compare-start [--repeats 3] [--wait-idle S]

``$DUFM_SWEEP_START=spawn`` makes the local executor start fresh worker processes (the way it
worked before its workers were forked from the driver), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CASE_A = """
name = "bench"
[base]
K = 3
n = 40
width = 60
depth = 5
lr = 0.2
steps = {steps}
log_points = 60
checkpoint_points = 4
[grid]
lam = [0.002, 0.004, 0.006, 0.008, 0.01, 0.012, 0.014, 0.016]
seed = [0, 1]
"""

QUICK = """
name = "bench-quick"
[base]
K = 3
n = 5
width = 6
depth = 2
lr = 0.5
steps = {steps}
log_points = 20
checkpoint_points = 2
[grid]
lam = [0.005, 0.01]
seed = [0, 1]
"""


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def _own_cpu_seconds() -> float:
    """CPU seconds used by this process and its reaped children: forked local workers are
    reaped before a phase ends, fresh ones a moment later (then under-counted); Ray's workers
    are not our children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores the machine (everyone on it) keeps busy, sampled over ``seconds``."""
    b0, t0 = _cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = _cpu_jiffies()
    return (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1) if t1 > t0 else 0.0


def wait_idle(limit_s: float, threshold: float = 0.3) -> float:
    """Wait (up to ``limit_s``) until the machine is idle: fewer than ``threshold`` busy cores.
    Returns the last sample: other people share this machine, and a timing taken while they
    compute says little."""
    t0 = time.monotonic()
    sample = busy_cores()
    while sample > threshold and time.monotonic() - t0 < limit_s:
        sample = busy_cores(5.0)
    return round(sample, 2)


def _member_times(sweeps: Any, folder: Path, w0: float, w1: float) -> dict:
    """Where the wall time went, from the member records: the members' own time (inside
    ``execute_member``: training + analysis + record writes), summed and per member, their mean
    CPU time, the delay
    until the first member started (worker start-up) and the time after the last one ended."""
    recs = [sweeps.read_record(folder, m["key"]) for m in sweeps.manifest(folder)["members"]]
    spans = [
        r["finished_at"] - r["started_at"] for r in recs if r and r.get("finished_at") is not None
    ]
    if not spans:
        return {}
    cpu = [r["cpu_seconds"] for r in recs if r and r.get("cpu_seconds") is not None]
    return {
        "member_seconds_sum": round(sum(spans), 2),
        "member_seconds_mean": round(sum(spans) / len(spans), 3),
        # CPU time is what a member costs whoever else computes (time slicing does not add to it)
        "member_cpu_mean": round(sum(cpu) / len(cpu), 3) if cpu else None,
        "first_member_start_s": round(min(r["started_at"] for r in recs if r) - w0, 2),
        "after_last_member_s": round(w1 - max(r["finished_at"] for r in recs if r), 2),
    }


def _timed(spec_text: str, executor: str, jobs: int, idle_s: float) -> tuple[float, dict, dict]:
    """Run the spec in a fresh runs folder; (wall seconds, state counts, machine load: busy
    cores just before, and busy cores over the whole phase — ours included — and how the
    executor ran, e.g. whether the local workers were forked or fresh processes)."""
    from dufm_core import sweeps

    spec = sweeps.load_spec("<bench>", spec_text)
    load = {"idle_before": wait_idle(idle_s) if idle_s > 0 else None}
    with tempfile.TemporaryDirectory() as tmp:
        b0, j0 = _cpu_jiffies()
        c0 = _own_cpu_seconds()
        t0, w0 = time.perf_counter(), time.time()
        result = sweeps.run_sweep(spec, runs_dir=Path(tmp) / "runs", executor=executor, jobs=jobs)
        seconds = time.perf_counter() - t0
        w1 = time.time()
        b1, j1 = _cpu_jiffies()
        own = (_own_cpu_seconds() - c0) / seconds
        load["executor"] = sweeps.driver_status(result.folder).get("executor_detail")
        load.update(_member_times(sweeps, result.folder, w0, w1))
    load["busy_cores_during"] = round((b1 - b0) / max(j1 - j0, 1) * (os.cpu_count() or 1), 2)
    # not for Ray (its workers are not our children) nor fresh local workers (reaped by a
    # background thread after the phase, so their CPU time is not in yet)
    if executor == "inline" or "forked" in (load.get("executor") or ""):
        load["own_cores"] = round(own, 2)
        load["others_cores_approx"] = round(max(0.0, load["busy_cores_during"] - own), 2)
    print(  # as it goes: a long run under someone else's load can be judged before it ends
        f"{time.strftime('%H:%M:%S')} {executor}: {seconds:.1f} s, {result.counts}, load {load}",
        file=sys.stderr,
        flush=True,
    )
    return seconds, result.counts, load


def run(
    spec_text: str, members: int, jobs: int, repeats: int, with_ray: bool, idle_s: float = 0.0
) -> dict:
    """Time the three ways ``repeats`` times (interleaved) and summarise."""
    seq, loc, ray_t, ray_init, loads = [], [], [], [], []
    counts: dict[str, dict] = {}
    ray = None
    if with_ray:
        try:
            import ray
        except ImportError:
            with_ray = False
    for _ in range(repeats):
        t, counts["sequential"], load = _timed(spec_text, "inline", 1, idle_s)
        seq.append(t)
        loads.append({"sequential": load})
        t, counts["local"], load = _timed(spec_text, "local", jobs, idle_s)
        loc.append(t)
        loads[-1]["local"] = load
        if with_ray:
            if idle_s > 0:
                wait_idle(idle_s)
            t0 = time.perf_counter()
            ray.init(
                num_cpus=jobs,
                include_dashboard=False,
                log_to_driver=False,
            )
            ray_init.append(time.perf_counter() - t0)
            try:
                t, counts["ray"], load = _timed(spec_text, "ray", jobs, idle_s)
            finally:
                ray.shutdown()
            ray_t.append(t)
            loads[-1]["ray"] = load
    s, lo = statistics.median(seq), statistics.median(loc)
    ideal = s / jobs
    out = {
        "members": members,
        "jobs": jobs,
        "repeats": repeats,
        "cores": os.cpu_count(),
        "sequential_seconds": s,
        "local_seconds": lo,
        "ideal_seconds": ideal,
        "local_over_ideal": lo / ideal,
        "local_speedup": s / lo,
        "sequential_all": seq,
        "local_all": loc,
        "load": loads,
        "local_finished": counts["local"].get("finished", 0),
        "sequential_finished": counts["sequential"].get("finished", 0),
    }
    if with_ray:
        r = statistics.median(ray_t)
        out.update(
            ray_seconds=r,
            ray_init_seconds=statistics.median(ray_init),
            ray_all=ray_t,
            ray_init_all=ray_init,
            ray_over_local=r / lo,
            ray_over_ideal=r / ideal,
            ray_with_init_over_local=(r + statistics.median(ray_init)) / lo,
            ray_finished=counts["ray"].get("finished", 0),
        )
    return out


LAMS = [0.002, 0.004, 0.006, 0.008, 0.01, 0.012, 0.014, 0.016]  # CASE_A's λ axis


def _part_spec(steps: int, part: int, parts: int) -> str:
    """CASE_A restricted to every ``parts``-th λ from ``part`` (16/parts members)."""
    lams = ", ".join(str(v) for v in LAMS[part::parts])
    text = CASE_A.format(steps=steps).replace('name = "bench"', f'name = "bench-part{part}"')
    return text.replace(f"lam = [{', '.join(str(v) for v in LAMS)}]", f"lam = [{lams}]")


def inline_part(steps: int, part: int, parts: int) -> dict:
    """One share of the sweep with the inline executor in this process; its member times."""
    from dufm_core import sweeps

    spec = sweeps.load_spec("<bench>", _part_spec(steps, part, parts))
    with tempfile.TemporaryDirectory() as tmp:
        w0 = time.time()
        result = sweeps.run_sweep(spec, runs_dir=Path(tmp) / "runs", executor="inline")
        times = _member_times(sweeps, result.folder, w0, time.time())
        return {"members": len(spec.members()), **times}


def contention(steps: int, jobs: int, idle_s: float) -> dict:
    """Is a member slower when ``jobs`` of them compute at once, whatever runs them? The same
    sweep as ``jobs`` independent sequential processes (inline executor, one share each), first
    one share alone, then all shares side by side; compares their mean member times."""

    def cmd(part: int) -> list[str]:
        return [sys.executable, __file__, "--inline-part", f"{part}/{jobs}", "--steps", str(steps)]

    def result(out: bytes) -> dict:
        return json.loads(out.decode().strip().splitlines()[-1])

    import subprocess

    idle = {"alone": wait_idle(idle_s) if idle_s > 0 else None}
    alone = result(subprocess.run(cmd(0), check=True, capture_output=True).stdout)
    idle["together"] = wait_idle(idle_s) if idle_s > 0 else None
    procs = [subprocess.Popen(cmd(i), stdout=subprocess.PIPE) for i in range(jobs)]
    together = [result(p.communicate()[0]) for p in procs]
    mean = statistics.mean(r["member_seconds_mean"] for r in together)
    return {
        "alone": alone,
        "together": together,
        "idle_before": idle,
        "member_slowdown_together": mean / alone["member_seconds_mean"],
    }


def compare_start(steps: int, jobs: int, repeats: int, idle_s: float) -> dict:
    """The local executor with forked and with fresh workers, interleaved in this one (warm)
    process, on half the sweep (8 members): per phase the wall time and, from the records, the
    members' mean wall and CPU time (CPU time is the cleaner measure when others compute)."""
    spec = _part_spec(steps, 0, 2)
    out: dict = {"inline": _timed(spec, "inline", 1, idle_s)[2]}
    old = os.environ.get("DUFM_SWEEP_START")
    try:
        for i in range(repeats):
            for start in ("fork", "spawn"):
                os.environ["DUFM_SWEEP_START"] = start
                seconds, _, load = _timed(spec, "local", jobs, idle_s)
                out[f"{start}_{i}"] = {"seconds": round(seconds, 2), **load}
    finally:
        if old is None:
            os.environ.pop("DUFM_SWEEP_START", None)
        else:
            os.environ["DUFM_SWEEP_START"] = old
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30_000, help="GD steps per member")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="worker processes / Ray CPUs")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray executor")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each phase wait up to S seconds for an idle machine",
    )
    p.add_argument("--quick", action="store_true", help="4 tiny members, one repeat (CI smoke run)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--contention",
        action="store_true",
        help="instead: member times of jobs independent sequential processes, alone and together",
    )
    p.add_argument(
        "--compare-start",
        action="store_true",
        help="instead: local executor with forked vs fresh workers, interleaved (8 members)",
    )
    p.add_argument("--inline-part", default=None, help=argparse.SUPPRESS)  # I/N: one share
    a = p.parse_args()
    if a.compare_start:
        res = compare_start(a.steps, a.jobs, a.repeats, a.wait_idle)
        print(json.dumps(res, indent=2))
        if a.out:
            a.out.write_text(json.dumps(res, indent=2) + "\n")
        return
    if a.inline_part:
        part, parts = (int(v) for v in a.inline_part.split("/"))
        print(json.dumps(inline_part(a.steps, part, parts)))
        return
    if a.contention:
        res = contention(a.steps, a.jobs, a.wait_idle)
        print(json.dumps(res, indent=2))
        if a.out:
            a.out.write_text(json.dumps(res, indent=2) + "\n")
        return
    if a.quick:
        spec, members, repeats = QUICK.format(steps=500), 4, 1
    else:
        spec, members, repeats = CASE_A.format(steps=a.steps), 16, a.repeats
    res = run(spec, members, a.jobs, repeats, with_ray=not a.no_ray, idle_s=a.wait_idle)
    res["steps"] = 500 if a.quick else a.steps
    print(
        f"{members}-member sweep, {res['steps']} GD steps per member + analysis, "
        f"jobs={a.jobs}, median of {repeats}"
    )
    print("| way | wall s | vs ideal (sequential/jobs) | speed-up |")
    print("|---|---|---|---|")
    print(
        f"| sequential (inline) | {res['sequential_seconds']:.1f} | "
        f"{res['sequential_seconds'] / res['ideal_seconds']:.2f} | 1.00 |"
    )
    print(
        f"| local executor | {res['local_seconds']:.1f} | {res['local_over_ideal']:.3f} | "
        f"{res['local_speedup']:.2f} |"
    )
    if "ray_seconds" in res:
        print(
            f"| ray executor (instance up) | {res['ray_seconds']:.1f} | "
            f"{res['ray_over_ideal']:.3f} | "
            f"{res['sequential_seconds'] / res['ray_seconds']:.2f} |"
        )
        print(
            f"ray.init: {res['ray_init_seconds']:.1f} s; ray / local = "
            f"{res['ray_over_local']:.3f} ({res['ray_with_init_over_local']:.3f} with init)"
        )
    print(f"machine load per phase (busy cores; ours included): {res['load']}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
