"""Fit a profile's power model (``power_model.json``) from its NVML occupancy rows and print
the fit and the held-out rows.

Usage: ``python3 benchmarks/fit_power.py [GPU ...] [--check]``; by default every shipped
profile with a ``power_occupancy.csv``. ``--check`` compares with the committed file instead
of writing it. See docs/power.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fleetsim

from fleetsim.calibration.measured import PROFILE_ROOT  # noqa: E402
from fleetsim.calibration.power import OCCUPANCY_FILE, POWER_MODEL_FILE, refit  # noqa: E402
from fleetsim.hardware.catalog import get_gpu  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("gpus", nargs="*", help="catalog GPU names (default: every profile with occupancy rows)")
    ap.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = ap.parse_args()
    names = args.gpus or sorted(p.parent.name for p in PROFILE_ROOT.glob(f"*/{OCCUPANCY_FILE}"))
    bad = 0
    for name in names:
        root = PROFILE_ROOT / name
        p = refit(root, get_gpu(name))
        out = root / POWER_MODEL_FILE
        print(f"{name}: base {p.base_w} W + memory {p.memory_w} W x u_mem + compute {p.compute_w} W x u_compute; "
              f"gap {p.gap_w} W, idle {p.idle_w} W, limiter settles at {p.limit_share} x limit")
        fit = p.fit or {}
        for part in ("fitted", "held_out"):
            r = fit.get(part, {})
            print(f"  {part}: {r.get('rows')} rows, MAPE {r.get('mape_pct')}%, worst {r.get('worst')}")
        text = p.to_json() + "\n"
        if args.check:
            same = out.exists() and out.read_text() == text
            print(f"  {out}: {'matches' if same else 'DIFFERS'}")
            bad += not same
        else:
            out.write_text(text)
            print(f"  wrote {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
