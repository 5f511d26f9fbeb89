"""CSV rows, skip notes and a meta file for the stand-alone device scripts
(``power_occupancy.py``, ``lora.py``).

Standard library only: the scripts run as plain files on a GPU box without fleetsim's
dependencies, and the tests import the scripts' pure helpers on a machine without torch.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

try:
    from fleetsim.calibration.bench.common import catalog_name_for, collect_meta
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import catalog_name_for, collect_meta  # type: ignore[no-redef]


def cell(value: Any) -> str:
    """A CSV cell: floats to 6 significant digits, NaN and None as empty (not measured)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def append_row(path: Path, cols: tuple[str, ...], row: dict[str, Any]) -> None:
    """Append one row, header first when the file is new; a missing column is an error."""
    missing = [c for c in cols if c not in row]
    if missing:
        raise ValueError(f"{path.name} row lacks columns {missing}")
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(cols)
        w.writerow([cell(row[c]) for c in cols])


def note_skip(out: Path, what: str, reason: str) -> None:
    """A point that could not be measured: one line in ``<out>/skipped.txt`` and on stderr."""
    line = f"{what}: {reason.splitlines()[0][:300] if reason else '?'}"
    print(f"SKIP {line}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "skipped.txt").open("a") as fh:
        fh.write(line + "\n")


def write_script_meta(out: Path, script: str, device: str, argv: list[str],
                      extra: dict[str, Any]) -> Path:
    """``<out>/<script>_meta.json``: device, driver, versions, date, invocation and ``extra``."""
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    meta = collect_meta(catalog_gpu=catalog_name_for(name),
                        invocation=f"python3 calibration/bench/{script}.py " + " ".join(argv),
                        torch_version=torch.__version__, cuda_version=str(torch.version.cuda),
                        device_name=name,
                        num_gpus=torch.cuda.device_count() if device == "cuda" else 0,
                        extra=extra)
    path = out / f"{script}_meta.json"
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path
