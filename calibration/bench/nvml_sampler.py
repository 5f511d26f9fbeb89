"""NVML sampling of board power, clocks, utilization, temperature and the energy counter.

A thread reads the device every ``interval_s`` seconds. Board power over a window comes from
the energy counter (``nvmlDeviceGetTotalEnergyConsumption``), whose ticks are fitted by least
squares; ``nvmlDeviceGetPowerUsage`` and the ``NVML_FI_DEV_POWER_INSTANT`` field are kept for
their spread. Clocks and limits are only read. Without NVML (a CPU run) every reading is NaN.
"""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.bench_io import cell
    from fleetsim.calibration.bench.common import quantile
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_io import cell  # type: ignore[no-redef]
    from common import quantile  # type: ignore[no-redef]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope dy/dx of (x, y) points; NaN with fewer than three."""
    if len(points) < 3:
        return math.nan
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx > 0 else math.nan


class Sampler:
    """NVML readings every ``interval_s`` on a thread; silent no-op where NVML is absent."""

    def __init__(self, device: str, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, ...]] = []
        self.nvml: Any = None
        self.handle: Any = None
        self.instant_field: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device != "cuda":
            return
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as exc:  # noqa: BLE001 - no NVML: rows keep empty power columns
            print(f"NVML unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.nvml = None
            return
        fid = getattr(self.nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if fid is not None and not math.isnan(self._instant_mw(fid)):
            self.instant_field = fid

    @property
    def active(self) -> bool:
        return self.nvml is not None

    def _instant_mw(self, fid: int) -> float:
        try:
            fv = self.nvml.nvmlDeviceGetFieldValues(self.handle, [fid])[0]
            if fv.nvmlReturn != 0:
                return math.nan
            return float(fv.value.uiVal)
        except Exception:  # noqa: BLE001 - field unsupported by this driver
            return math.nan

    def energy_j(self) -> float:
        if not self.active:
            return math.nan
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0
        except Exception:  # noqa: BLE001 - counter unsupported
            return math.nan

    def read(self) -> tuple[float, ...]:
        n, h = self.nvml, self.handle
        inst = self._instant_mw(self.instant_field) if self.instant_field is not None else math.nan
        return (time.perf_counter(), n.nvmlDeviceGetPowerUsage(h) / 1000.0, inst / 1000.0,
                float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
                float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
                float(n.nvmlDeviceGetUtilizationRates(h).gpu),
                float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)), self.energy_j())

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.read())
            except Exception:  # noqa: BLE001 - a failed read drops one sample
                pass
            time.sleep(self.interval_s)

    def start(self) -> None:
        if self.active:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """Sample statistics between host times ``t0`` and ``t1``."""
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        nan = math.nan
        if not s:
            return {"power_w_sampled_mean": nan, "power_w_p90": nan, "power_w_instant_p10": nan,
                    "power_w_instant_p90": nan, "sm_clock_mhz": nan, "mem_clock_mhz": nan,
                    "gpu_util_pct": nan, "temp_c": nan, "samples": 0}
        inst = [x[2] for x in s if not math.isnan(x[2])]
        col = list(zip(*s, strict=True))
        return {"power_w_sampled_mean": sum(col[1]) / len(s), "power_w_p90": quantile(col[1], 0.9),
                "power_w_instant_p10": quantile(inst, 0.1) if inst else nan,
                "power_w_instant_p90": quantile(inst, 0.9) if inst else nan,
                "sm_clock_mhz": quantile(col[3], 0.5), "mem_clock_mhz": quantile(col[4], 0.5),
                "gpu_util_pct": quantile(col[5], 0.5), "temp_c": quantile(col[6], 0.5),
                "samples": len(s)}

    def counter_power_w(self, t0: float, t1: float) -> float:
        """Board power over [t0, t1] from the energy counter: the least-squares slope of the
        counter against host time at the samples where it changed. The counter ticks about
        every 100 ms, so a plain difference of two reads is off by up to one tick; the ticks'
        own times (seen within one sampling interval) pin the slope far better."""
        pts = [(x[0], x[7]) for a, x in zip(self.samples, self.samples[1:], strict=False)
               if x[7] != a[7] and t0 <= x[0] <= t1 and not math.isnan(x[7])]
        return slope(pts)

    def energy_update_s(self) -> float:
        """Median interval between changes of the energy counter (its effective resolution)."""
        ch = [x[0] for a, x in zip(self.samples, self.samples[1:], strict=False) if x[7] != a[7]]
        gaps = [b - a for a, b in zip(ch, ch[1:], strict=False)]
        return quantile(gaps, 0.5) if gaps else math.nan


SAMPLE_COLUMNS = ("row", "t_s", "power_w", "power_w_instant", "sm_clock_mhz", "mem_clock_mhz",
                  "gpu_util_pct", "temp_c", "energy_j")


def write_samples(path: Path, samples: list[tuple[float, ...]],
                  windows: list[tuple[int, float, float]]) -> None:
    """Every NVML sample taken inside a row's window: ``row`` is the 0-based row of
    power_occupancy.csv, ``t_s`` seconds since that window opened, ``energy_j`` since it opened."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SAMPLE_COLUMNS)
        for k, t0, t1 in windows:
            inside = [x for x in samples if t0 <= x[0] <= t1]
            e0 = inside[0][7] if inside else math.nan
            for x in inside:
                w.writerow([str(k), cell(x[0] - t0), cell(x[1]), cell(x[2]), cell(x[3]), cell(x[4]),
                            cell(x[5]), cell(x[6]), cell(x[7] - e0)])
