"""Where candidate evaluations run: in-process, a local process pool, or a Ray cluster.

An ``Executor`` maps a function over a list of items and returns the results in the items'
order, whichever worker finished first, so a plan never depends on where it was computed.
The function must be importable at module level (picklable) for the process pool and Ray;
``workers=1`` runs in-process and accepts any callable. The local pool is started once per
process and worker count and reused by every later ``map`` (a plan's analytic stage, its
capacity simulations and its re-check share it). Its workers are forked where that is safe
(Linux, and only this thread running: the workers start in milliseconds with the parent's
modules already imported) and spawned otherwise (macOS, Windows, or a threaded parent
such as the dashboard's server), so no worker inherits another thread's locks. Ray is
imported only when asked for (the ``fleetsim[ray]`` extra).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from fleetsim.hardware.errors import ConfigError, suggest

T = TypeVar("T")
R = TypeVar("R")

RAY_MISSING = "Ray asked for but not installed: pip install 'fleetsim[ray]'"


class Executor(Protocol):
    """What the planners call: ``map(fn, items)`` -> ``[fn(x) for x in items]``, in order."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]: ...


def _chunksize(n: int, workers: int) -> int:
    """Items per task: about four tasks per worker, so stragglers even out and a cheap
    evaluation is not swamped by one pickle round trip per item."""
    return max(1, n // (4 * workers))


_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}


def start_method() -> str:
    """``fork`` on Linux while this is the only thread running, else ``spawn``."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _pool(workers: int) -> ProcessPoolExecutor:
    """The process pool of ``workers`` for the current start method, started on first use."""
    key = (workers, start_method())
    pool = _POOLS.get(key)
    if pool is None:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(key[1]))
        _POOLS[key] = pool
    return pool


@atexit.register
def shutdown_pools() -> None:
    """Stop every local pool this process started (at exit, or to free the workers)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


class LocalExecutor:
    """A pool of ``workers`` processes on this machine (None: the CPUs this process may
    use); ``workers=1`` evaluates in-process, and so does a single item."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        pool = _pool(self.workers)
        try:
            return list(pool.map(fn, items, chunksize=_chunksize(len(items), self.workers)))
        except BrokenProcessPool:
            _POOLS.pop((self.workers, start_method()), None)
            raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def ray_runtime_env(*extra_paths: str) -> dict[str, Any]:
    """A Ray ``runtime_env`` whose workers import the same ``fleetsim`` source tree as this
    process (its parent folder first on ``PYTHONPATH``), plus ``extra_paths``."""
    top = sys.modules["fleetsim"].__file__  # loaded already: this module is fleetsim.planner's
    assert top is not None
    root = os.path.dirname(os.path.dirname(os.path.abspath(top)))
    paths = [root, *extra_paths, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def _run_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(x) for x in chunk]


class RayExecutor:
    """Tasks on a Ray cluster: ``address`` of a running cluster ("auto", "ray://host:port"),
    or None to join the runtime already started in this process or start a local one (whose
    workers import this process's ``fleetsim``: ``ray_runtime_env``).
    Items go out in chunks; results come back in the items' order (``ray.get`` of the task
    list keeps it)."""

    def __init__(self, address: str | None = None, chunks_per_cpu: int = 4) -> None:
        self._ray = _import_ray()
        self.address = address
        self.chunks_per_cpu = chunks_per_cpu

    def _ensure(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            env = ray_runtime_env() if self.address is None else None
            ray.init(address=self.address, runtime_env=env, ignore_reinit_error=True,
                     log_to_driver=False)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        items = list(items)
        if not items:
            return []
        self._ensure()
        ray = self._ray
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, len(items) // (self.chunks_per_cpu * cpus))
        task = ray.remote(_run_chunk)
        fn_ref = ray.put(fn)
        refs = [task.remote(fn_ref, items[i:i + size]) for i in range(0, len(items), size)]
        return [r for chunk in ray.get(refs) for r in chunk]


EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", *, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor called ``name`` (``--executor``): ``local`` (``workers`` processes) or
    ``ray`` (a cluster at ``address``)."""
    if name == "local":
        if address is not None:
            raise ConfigError("--executor local takes no address (that is for --executor ray)")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"--executor {name!r} is not one of {', '.join(EXECUTORS)}"
                      + suggest(str(name), EXECUTORS))
