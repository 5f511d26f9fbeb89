"""Pure-Python plumbing of the calibration harness: statistics, CSV rows, resume, budget, meta.

Nothing here imports torch, so it is testable on any machine and importable by the
cost model. The harness modules run either as ``fleetsim.calibration.bench.*`` or as
plain files (``python3 calibration/bench/harness.py``) on a GPU machine that has torch
but not fleetsim's other dependencies; that is why these modules import only the
standard library.

Profile CSV columns follow docs/ARCHITECTURE.md ("Calibration profile format"); the
``COLUMNS`` table below is that contract in code.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("dtype", "m", "n", "k", "batch", "time_s", "p10_s", "p90_s"),
    "gemm_layout": ("dtype", "layout", "m", "n", "k", "batch", "time_s", "p10_s", "p90_s"),
    "attention": (
        "backend", "phase", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads",
        "head_dim", "v_head_dim", "causal", "dtype", "time_s", "p10_s", "p90_s",
    ),
    "elementwise": ("kernel", "rows", "cols", "dtype", "bytes", "time_s", "p10_s", "p90_s"),
    "moe": ("impl", "tokens", "experts", "top_k", "n", "k", "dtype", "time_s", "p10_s", "p90_s"),
    "collective": ("op", "group_size", "bytes", "time_s", "p10_s", "p90_s"),
    "memcpy": ("direction", "bytes", "pinned", "time_s", "p10_s", "p90_s"),
    "launch": ("mode", "kernels", "time_s"),
    "power": ("op_class", "power_w_mean", "power_w_p90", "sm_clock_mhz", "duration_s"),
    "host_dispatch": ("call", "host_s", "p10_s", "p90_s"),
    "sustained": ("op_class", "shape", "flops", "bytes", "burst_s", "early_s", "sustained_s", "ratio",
                  "sm_clock_mhz", "power_w", "duration_s"),
}
"""Columns of each profile CSV, in order. The leading columns up to ``time_s`` are the key."""

KEY_COLUMNS: dict[str, tuple[str, ...]] = {"host_dispatch": ("call",), "sustained": ("op_class",)}
"""Identity columns of the kinds whose measured columns are not the ``time_s`` statistics."""
STAT_COLUMNS = ("time_s", "p10_s", "p90_s")
META_FIELDS = (
    "gpu_name", "catalog_gpu", "driver", "cuda", "torch", "date", "sm_clock_max_mhz",
    "mem_clock_max_mhz", "power_limit_w", "invocation", "hostname", "num_gpus",
)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default 'linear' method) of a non-empty sequence."""
    if not values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q={q} outside [0, 1]")
    xs = sorted(float(v) for v in values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return xs[lo] + (xs[hi] - xs[lo]) * frac


def summarize(times_s: Sequence[float]) -> tuple[float, float, float]:
    """Median, 10th and 90th percentile of repeated timings, in seconds."""
    return quantile(times_s, 0.5), quantile(times_s, 0.1), quantile(times_s, 0.9)


def rotation_count(set_bytes: int, l2_bytes: int, *, factor: float = 3.0, cap: int = 64) -> int:
    """Number of distinct operand sets to cycle through so their total exceeds ``factor`` x L2.

    A kernel timed repeatedly on one small buffer reads it from L2 after the first run,
    which a real model step (whose weights stream from HBM layer after layer) never does.
    Cycling through ``n`` sets whose total exceeds the L2 capacity several times evicts each
    set before it is reused. Sets already larger than ``factor`` x L2 need no rotation.
    """
    if set_bytes <= 0:
        raise ValueError(f"set_bytes must be positive, got {set_bytes}")
    need = math.ceil(factor * l2_bytes / set_bytes)
    return max(1, min(cap, need))


def row_key(kind: str, row: dict[str, object]) -> tuple[str, ...]:
    """Identity of a measurement: its non-statistic columns, as strings (for resume)."""
    if kind in KEY_COLUMNS:
        return tuple(_fmt(row[c]) for c in KEY_COLUMNS[kind])
    cols = COLUMNS[kind]
    key_cols = [c for c in cols if c not in STAT_COLUMNS and not c.startswith("power_w")
                and c not in ("sm_clock_mhz", "duration_s")]
    return tuple(_fmt(row[c]) for c in key_cols)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class ProfileWriter:
    """Appends rows to ``<out>/<kind>.csv`` as they are measured; knows which rows exist.

    Rows are flushed one at a time so a run stopped by its budget (or killed) leaves
    every finished measurement on disk, and ``--resume`` skips them.
    """

    def __init__(self, out_dir: Path, *, resume: bool, fresh: Iterable[str] | None = None) -> None:
        """``fresh``: the kinds a run without ``resume`` starts over (default: all); the
        other CSVs of the folder are kept and appended to."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self._done: dict[str, set[tuple[str, ...]]] = {}
        self.rows_written = 0
        restart = set(COLUMNS if fresh is None else fresh)
        for kind in COLUMNS:
            path = self.path(kind)
            if path.exists() and not resume and kind in restart:
                path.unlink()
            self._done[kind] = set()
            if path.exists():
                with path.open(newline="") as fh:
                    for rec in csv.DictReader(fh):
                        self._done[kind].add(row_key(kind, dict(rec)))

    def path(self, kind: str) -> Path:
        return self.out_dir / f"{kind}.csv"

    def done(self, kind: str, row: dict[str, object]) -> bool:
        """True when a row with the same key is already in the CSV."""
        return row_key(kind, row) in self._done[kind]

    def write(self, kind: str, row: dict[str, object]) -> None:
        cols = COLUMNS[kind]
        missing = [c for c in cols if c not in row]
        if missing:
            raise ValueError(f"{kind} row lacks columns {missing}")
        path = self.path(kind)
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(cols)
            w.writerow([_fmt(row[c]) if not isinstance(row[c], float) else f"{row[c]:.6g}"
                        for c in cols])
        self._done[kind].add(row_key(kind, {c: _cell(row[c]) for c in cols}))
        self.rows_written += 1


def _cell(value: object) -> object:
    """What a value reads back as from the CSV (floats are written with 6 significant digits)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class Budget:
    """Wall-clock budget shared by all suites; ``left_s()`` never goes below zero."""

    def __init__(self, total_s: float, clock: object = time.monotonic) -> None:
        self.total_s = float(total_s)
        self._clock = clock
        self.start = self._now()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def elapsed_s(self) -> float:
        return self._now() - self.start

    def left_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s())

    def exhausted(self) -> bool:
        return self.left_s() <= 0.0


class Progress:
    """Prints ``[suite] rows done/total, elapsed, ETA`` lines on stderr, at most every ``every_s``."""

    def __init__(self, suite: str, total: int, *, every_s: float = 5.0, stream: Any = None) -> None:
        self.suite = suite
        self.total = max(total, 0)
        self.done = 0
        self.every_s = every_s
        self.start = time.monotonic()
        self._last = -1e9
        self.stream = stream if stream is not None else sys.stderr

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            print(self.line(now - self.start), file=self.stream, flush=True)

    def line(self, elapsed_s: float) -> str:
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"[{self.suite}] {self.done}/{self.total} rows, {elapsed_s:.0f} s elapsed, "
                f"ETA {eta:.0f} s")


def _smi(query: str) -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def gpu_info_from_smi() -> dict[str, object]:
    """Device name, driver, max clocks and power limit of GPU 0 read through nvidia-smi."""
    lines = _smi("name,driver_version,clocks.max.sm,clocks.max.mem,power.limit")
    if not lines:
        return {}
    parts = [p.strip() for p in lines[0].split(",")]
    if len(parts) < 5:
        return {}
    return {
        "gpu_name": parts[0], "driver": parts[1], "sm_clock_max_mhz": _num(parts[2]),
        "mem_clock_max_mhz": _num(parts[3]), "power_limit_w": _num(parts[4]),
        "num_gpus": len(lines),
    }


def collect_meta(*, catalog_gpu: str, invocation: str, torch_version: str, cuda_version: str,
                 device_name: str, num_gpus: int, extra: dict[str, object] | None = None
                 ) -> dict[str, object]:
    """meta.json content: what ran where, with the card's clocks and power limit as found."""
    info = gpu_info_from_smi()
    meta: dict[str, object] = {
        "gpu_name": device_name or info.get("gpu_name", ""),
        "catalog_gpu": catalog_gpu,
        "driver": info.get("driver", ""),
        "cuda": cuda_version,
        "torch": torch_version,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sm_clock_max_mhz": info.get("sm_clock_max_mhz"),
        "mem_clock_max_mhz": info.get("mem_clock_max_mhz"),
        "power_limit_w": info.get("power_limit_w"),
        "invocation": invocation,
        "hostname": platform.node(),
        "num_gpus": num_gpus,
        "python": platform.python_version(),
    }
    if extra:
        meta.update(extra)
    return meta


def write_meta(out_dir: Path, meta: dict[str, object], *, merge: bool = True) -> Path:
    """Write meta.json; with ``merge`` keep keys of an earlier run (e.g. a resumed one) and
    record each invocation under ``invocations``."""
    path = Path(out_dir) / "meta.json"
    old: dict[str, object] = {}
    if merge and path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    prior = old.get("invocations")
    invs: list[Any] = list(prior) if isinstance(prior, list) else []
    entry: dict[str, object] = {"invocation": meta.get("invocation"), "date": meta.get("date")}
    entry.update({k: meta[k] for k in ("elapsed_s", "rows_written") if k in meta})
    invs.append(entry)
    merged: dict[str, object] = {**old, **meta, "invocations": invs}
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return path


def catalog_name_for(device_name: str) -> str:
    """Catalog GPU name for a CUDA device string ('NVIDIA H100 80GB HBM3' -> 'H100-SXM')."""
    name = device_name.upper()
    table = (("H200", "H200-SXM"), ("H100 PCIE", "H100-PCIE"), ("H100", "H100-SXM"),
             ("H20", "H20"), ("B200", "B200"), ("GB200", "GB200"), ("A100-SXM4-80GB", "A100-SXM-80GB"),
             ("A100", "A100-SXM"), ("L40S", "L40S"), ("L4", "L4"), ("A10G", "A10G"))
    for needle, cat in table:
        if needle in name:
            return cat
    return "".join(ch if ch.isalnum() else "-" for ch in device_name).strip("-") or "unknown"


def parse_only(text: str | None, known: Iterable[str]) -> list[str]:
    """Split ``--only gemm,attention`` into suite names, rejecting unknown ones."""
    known_l = list(known)
    if not text:
        return known_l
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known_l]
    if bad:
        raise ValueError(f"unknown suite(s) {bad} in --only; known: {', '.join(known_l)}")
    return names


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
