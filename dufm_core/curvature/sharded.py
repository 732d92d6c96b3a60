"""Data-parallel Hessian products: the training set split into shards held by worker processes.

The fit term of a real network is a mean over its N training samples, so its Hessian is the
weighted sum of the shards' Hessians:

    H = ∇²_θ (1/N) Σ_i ℓ_i = Σ_s (N_s/N) H_s,     H_s = ∇²_θ (1/N_s) Σ_{i∈s} ℓ_i.

:class:`ShardedHessianOperator` splits (x, y) into W contiguous shards, starts W workers **once**
(each builds a :class:`~dufm_core.curvature.network.NetworkHessianOperator` over its shard and
keeps it), and answers every product H·V by sending V to all workers and summing
(N_s/N)·H_s·V. Everything built on ``matmat`` — the block eigensolver, SLQ, traces — runs on it
unchanged, and the result equals one worker's to rounding (the order of the sum changes).

Where the workers run (``executor``):

* ``"local"``: W processes on this machine, started with ``spawn`` (a fresh interpreter: no
  forked copy of a threaded parent), the shard tensors passed through shared memory by
  :mod:`torch.multiprocessing`; each worker gets ``threads`` intra-op threads.
* ``"ray"``: W Ray actors, on a local Ray or on a cluster (``address``), each asking for
  ``threads`` CPUs and ``gpus`` GPUs; a worker with a GPU computes there. Ray is the project's
  distributed engine already (the sweep executor); it places actors on the machines of a
  cluster without a rendezvous to configure, which ``torch.distributed`` would need. A product
  moves V (dim × m) to each worker and H_s·V back: for ResNet-20 (0.27 M parameters) and a block
  of 16 vectors that is 35 MB each way in float64, small beside the two forward and two
  backward passes over the shard that the product costs.

Use it as a context manager (``with ShardedHessianOperator(...) as op:``) or call
:meth:`~ShardedHessianOperator.close`: the workers hold the shards until then.

The report path asks for its operator through :func:`network_operator`, which gives the sharded
one while a :func:`data_parallel` block is active (the CLI's ``analyze --workers W [--executor
local|ray] [--address ADDR]``) and the single-process one otherwise, so the analysis code does
not change with where the products run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.network import NETWORK_PARAMS, NetworkHessianOperator

__all__ = ["SHARD_EXECUTORS", "DataParallel", "ShardError", "ShardedHessianOperator",
           "add_options", "data_parallel", "from_args", "network_operator", "shard_bounds"]

SHARD_EXECUTORS = ("local", "ray")
MAX_WORKERS = 256
START_TIMEOUT = 300.0  # seconds a local worker may take to import torch and build its operator


def _cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ShardError(RuntimeError):
    """A worker could not start or failed a product (the message says which and why)."""


def shard_bounds(n: int, workers: int) -> list[tuple[int, int]]:
    """``workers`` contiguous [start, stop) ranges covering 0..n, sizes differing by at most 1
    (the first ``n % workers`` one larger). Every shard is non-empty: ``workers`` ≤ n."""
    base, extra = divmod(n, workers)
    out, a = [], 0
    for s in range(workers):
        b = a + base + (1 if s < extra else 0)
        out.append((a, b))
        a = b
    return out


class ShardServer:
    """What one worker holds: the operator over its shard. Runs inside the worker process (a
    spawned process or a Ray actor); :meth:`matmat` returns H_s·V and the seconds it took."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
                 params: str, batch_size: int, chunk: int, dtype: torch.dtype, threads: int,
                 device: str = "cpu") -> None:
        torch.set_num_threads(max(1, int(threads)))
        model = model.to(device)
        self.op = NetworkHessianOperator(model, x.to(device), y.to(device), loss, params,
                                         batch_size=batch_size, chunk=chunk, dtype=dtype)

    def dim(self) -> int:
        return self.op.dim

    def matmat(self, V: torch.Tensor) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        out = self.op.matmat(V).cpu()
        return out, time.perf_counter() - t0


def _serve(conn: Any, kwargs: dict[str, Any]) -> None:
    """A local worker's loop: build the shard's operator, then answer products until ``None``.
    Replies are ``("ok", value)`` or ``("error", one line)``."""
    try:
        server = ShardServer(**kwargs)
        conn.send(("ok", server.dim()))
    except Exception as exc:  # reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            V = conn.recv()
        except EOFError:
            return
        if V is None:
            return
        try:
            conn.send(("ok", server.matmat(V)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _one_dim(dims: set[int]) -> int:
    """The operator dimension the workers reported (every shard's operator has the same)."""
    if len(dims) != 1:
        raise ShardError(f"the workers' operators disagree on the dimension: {sorted(dims)}")
    return dims.pop()


class _LocalWorkers:
    """W spawned processes, one shard each, talking over pipes."""

    def __init__(self, shard_kwargs: list[dict[str, Any]]) -> None:
        import torch.multiprocessing as tmp

        ctx = tmp.get_context("spawn")
        self.procs, self.conns = [], []
        try:
            for kw in shard_kwargs:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, kw), daemon=True)
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            dims = {self._reply(s, conn, START_TIMEOUT) for s, conn in enumerate(self.conns)}
            self.dim = _one_dim(dims)
        except BaseException:
            self.close()
            raise

    def _reply(self, s: int, conn: Any, timeout: float | None) -> Any:
        if not conn.poll(timeout):
            raise ShardError(f"worker {s} did not answer in {timeout:.0f} s")
        try:
            status, value = conn.recv()
        except EOFError as exc:
            raise ShardError(f"worker {s} exited (exit code {self.procs[s].exitcode})") from exc
        if status != "ok":
            raise ShardError(f"worker {s}: {value}")
        return value

    def matmat(self, V: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        for s, conn in enumerate(self.conns):
            try:
                conn.send(V)
            except OSError as exc:  # the worker is gone (killed, out of memory)
                raise ShardError(f"worker {s} exited (exit code "
                                 f"{self.procs[s].exitcode})") from exc
        return [self._reply(s, conn, None) for s, conn in enumerate(self.conns)]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except (OSError, BrokenPipeError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self.procs, self.conns = [], []


class _RayWorkers:
    """W Ray actors, one shard each (a local Ray, or the cluster at ``address``)."""

    def __init__(self, shard_kwargs: list[dict[str, Any]], address: str | None,
                 threads: int, gpus: float) -> None:
        import ray

        from dufm_core.process.ray_cluster import connect_ray

        self.started_here = connect_ray(address, len(shard_kwargs) * threads)
        remote = ray.remote(ShardServer).options(num_cpus=threads, num_gpus=gpus)
        self.actors = [remote.remote(**kw) for kw in shard_kwargs]
        try:
            dims = set(ray.get([a.dim.remote() for a in self.actors], timeout=START_TIMEOUT))
        except Exception as exc:
            self.close()
            raise ShardError(f"a Ray worker could not start: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        self.dim = _one_dim(dims)

    def matmat(self, V: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        import ray

        ref = ray.put(V)
        try:
            return ray.get([a.matmat.remote(ref) for a in self.actors])
        except Exception as exc:
            raise ShardError(f"a Ray worker failed a product: {type(exc).__name__}") from exc

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []
        if self.started_here and ray.is_initialized():
            ray.shutdown()


class ShardedHessianOperator(CurvatureOperator):
    """H·V = Σ_s (N_s/N)·H_s·V over W data shards held by workers (module docstring).

    Args:
        model, x, y, loss, params, batch_size, chunk, dtype: as for
            :class:`~dufm_core.curvature.network.NetworkHessianOperator` (each worker builds
            one over its shard, so the result is the same operator).
        workers: W ≥ 1 shards and workers (at most N and :data:`MAX_WORKERS`).
        executor: "local" (spawned processes) or "ray" (actors; ``address`` for a cluster).
        threads: intra-op threads (and Ray CPUs) per worker; default: this machine's CPUs / W.
        gpus: GPUs per Ray actor (0: CPU); a local worker always computes on the CPU.
        progress: called with the number of products done after each block.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: str = "mse",
        params: str = "all",
        workers: int = 2,
        executor: str = "local",
        address: str | None = None,
        batch_size: int = 512,
        chunk: int = 16,
        dtype: torch.dtype = torch.float64,
        threads: int | None = None,
        gpus: float = 0.0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        N = int(x.shape[0])
        if executor not in SHARD_EXECUTORS:
            raise ValueError(f"executor: must be one of {' | '.join(SHARD_EXECUTORS)} "
                             f"(got {executor!r})")
        if not (isinstance(workers, int) and 1 <= workers <= min(MAX_WORKERS, max(N, 1))):
            raise ValueError(f"workers: must be an integer in 1..{min(MAX_WORKERS, max(N, 1))} "
                             f"(one shard per worker, N = {N} samples; got {workers!r})")
        if address and executor != "ray":
            raise ValueError("address: only for the ray executor")
        if params not in NETWORK_PARAMS:
            raise ValueError(f"params must be one of {' | '.join(NETWORK_PARAMS)} (got {params!r})")
        if loss not in ("mse", "ce"):
            raise ValueError(f"loss must be mse | ce (got {loss!r})")
        if gpus < 0 or (gpus > 0 and executor != "ray"):
            raise ValueError("gpus: a GPU per worker is for the ray executor (got "
                             f"{gpus:g} with {executor})")
        if executor == "ray":
            from dufm_core.process.ray_cluster import ray_missing

            missing = ray_missing()
            if missing:
                raise ShardError(missing)
        self.threads = int(threads) if threads else max(1, _cpus() // workers)
        self.workers, self.executor, self.address = workers, executor, address
        self.N = N
        self.bounds = shard_bounds(N, workers)
        self.weights = [(b - a) / N for a, b in self.bounds]
        cpu = next(model.parameters()).device.type == "cpu"
        model_cpu = model if cpu else copy.deepcopy(model).to("cpu")  # the caller's stays put
        device = "cuda" if gpus > 0 else "cpu"
        kwargs = [dict(model=model_cpu, x=x[a:b].detach().cpu(), y=y[a:b].detach().cpu(),
                       loss=loss, params=params, batch_size=batch_size, chunk=chunk,
                       dtype=dtype, threads=self.threads, device=device)
                  for a, b in self.bounds]
        self._pool: _LocalWorkers | _RayWorkers | None = (
            _LocalWorkers(kwargs) if executor == "local"
            else _RayWorkers(kwargs, address, self.threads, gpus))
        # the dimension as the workers' operators count it (which parameters "head" / "all"
        # selects is NetworkHessianOperator's business, not repeated here)
        super().__init__(self._pool.dim, dtype, torch.device("cpu"))
        self.progress = progress
        self.worker_seconds: list[float] = [0.0] * workers

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Σ_s (N_s/N)·H_s·V for V of shape (dim, m)."""
        self._check_block(V)
        if self._pool is None:
            raise ShardError("the operator's workers were closed")
        V = V.detach().to(device="cpu", dtype=self.dtype).contiguous()
        parts = self._pool.matmat(V)
        out = torch.zeros_like(V)
        for s, ((part, seconds), w) in enumerate(zip(parts, self.weights, strict=True)):
            out += w * part.to(self.dtype)
            self.worker_seconds[s] += seconds
        self.matvecs += V.shape[1]
        if self.progress:
            self.progress(self.matvecs)
        return out

    def describe(self) -> str:
        """One line: how many workers, where, and the shard sizes."""
        sizes = sorted({b - a for a, b in self.bounds})
        where = (f"Ray cluster {self.address}" if self.address else "local Ray"
                 ) if self.executor == "ray" else "local processes"
        return (f"{self.workers} workers ({where}, {self.threads} threads each), shards of "
                f"{' or '.join(map(str, sizes))} of N = {self.N} samples")

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> ShardedHessianOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close must not leave processes behind
        with contextlib.suppress(Exception):
            self.close()



# --------------------------------------------------------------------------- the report's choice
@dataclass(frozen=True)
class DataParallel:
    """Where whole-network products run: ``workers`` shards on ``executor`` (see
    :class:`ShardedHessianOperator` for the fields)."""

    workers: int = 1
    executor: str = "local"
    address: str | None = None
    threads: int | None = None
    gpus: float = 0.0


_ACTIVE: ContextVar[DataParallel | None] = ContextVar("dufm_data_parallel", default=None)


@contextlib.contextmanager
def data_parallel(spec: DataParallel | None) -> Iterator[None]:
    """Inside this block, :func:`network_operator` shards products as ``spec`` says."""
    token = _ACTIVE.set(spec)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def network_operator(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
                     params: str, batch_size: int = 512,
                     progress: Callable[[int], None] | None = None,
                     ) -> Iterator[NetworkHessianOperator | ShardedHessianOperator]:
    """The whole-network fit-Hessian operator over (x, y): sharded over workers when a
    :func:`data_parallel` block asks for more than one, else in this process. The workers
    start on entry and stop on exit: once per analysis, not per product."""
    spec = _ACTIVE.get()
    if spec is None or spec.workers == 1:
        yield NetworkHessianOperator(model, x, y, loss, params, batch_size=batch_size,
                                     progress=progress)
        return
    with ShardedHessianOperator(model, x, y, loss, params, workers=spec.workers,
                                executor=spec.executor, address=spec.address,
                                batch_size=batch_size, threads=spec.threads, gpus=spec.gpus,
                                progress=progress) as op:
        yield op


# --------------------------------------------------------------------------- the CLI's options
def add_options(parser: argparse.ArgumentParser) -> None:
    """The CLI options of data-parallel whole-network products (``analyze`` and ``inspect``):
    ``--workers W [--executor local|ray] [--address ADDR] [--worker-gpus G]``."""
    parser.add_argument("--workers", type=int, default=1,
                        help="whole-network Hessian (--full --full-params all): split the data "
                             "over W worker processes (default 1: this process)")
    parser.add_argument("--executor", default="local", choices=SHARD_EXECUTORS,
                        help="where the workers run: local processes (default) or Ray actors")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (ray executor), e.g. 10.0.0.5:6379")
    parser.add_argument("--worker-gpus", type=float, default=0.0,
                        help="GPUs per Ray worker (default 0: CPU)")


def from_args(args: argparse.Namespace, whole_network: bool) -> DataParallel | None:
    """The :class:`DataParallel` the options ask for (None: one process); ValueError with one
    line for a bad combination, before anything is loaded."""
    if args.workers < 1 or args.workers > MAX_WORKERS:
        raise ValueError(f"workers: must be an integer in 1..{MAX_WORKERS} (got {args.workers})")
    if args.address and args.executor != "ray":
        raise ValueError("address: only for --executor ray")
    if args.worker_gpus < 0 or (args.worker_gpus > 0 and args.executor != "ray"):
        raise ValueError("worker-gpus: must be >= 0, and GPUs per worker need --executor ray")
    if args.workers == 1 and args.executor == "local" and not args.address:
        return None
    if not whole_network:
        raise ValueError("workers: data-parallel products are for the whole-network Hessian of a "
                         "real network (analyze --full --full-params all, inspect MODEL --full); "
                         "this analysis runs in one process")
    return DataParallel(args.workers, args.executor, args.address, gpus=args.worker_gpus)
