"""Loader for a measured calibration profile (one directory per GPU).

The file format is fixed in docs/ARCHITECTURE.md ("Calibration profile format"). Every row
is checked as it is read: a missing column, a short row, a non-numeric number or a
non-positive time raises ``ProfileError`` naming the file and the row (its line number,
the header being line 1), so a corrupt or half-written profile is never silently used.
Files a profile lacks are simply absent from ``Profile.tables`` (the cost model then
prices those operators by the roofline).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from fleetsim.hardware.errors import ProfileError

from .bench.common import COLUMNS as WRITTEN_COLUMNS

NOT_REQUIRED: dict[str, frozenset[str]] = {
    "host_dispatch": frozenset({"p10_s", "p90_s"}),
    "sustained": frozenset({"shape", "early_s", "sm_clock_mhz", "power_w", "duration_s"}),
}
"""Columns the harness writes that a loadable profile may lack (added after the first runs)."""

COLUMNS: dict[str, tuple[str, ...]] = {
    kind: tuple(c for c in cols if c not in NOT_REQUIRED.get(kind, frozenset()))
    for kind, cols in WRITTEN_COLUMNS.items()
}
"""Required columns of each profile CSV (extra columns are allowed and ignored)."""

_TEXT = {"dtype", "backend", "phase", "kernel", "impl", "op", "direction", "mode", "op_class", "call",
         "layout"}
_BOOL = {"causal", "pinned"}
_OPTIONAL = {"p10_s", "p90_s", "sm_clock_mhz", "power_w_p90"}
"""Numeric columns that may be left blank (read as NaN)."""
_POSITIVE = {"time_s", "m", "n", "k", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads",
             "head_dim", "tokens", "experts", "top_k", "group_size", "bytes", "kernels", "rows",
             "cols", "host_s", "burst_s", "sustained_s", "ratio"}
"""Columns that must be strictly positive (a time or size of zero or less is corrupt)."""
_MAY_BE_ZERO = {"moe": {"n", "k"}}
"""Exceptions per file: MoE ``routing`` rows have no expert GEMM (n = k = 0)."""


@dataclass
class Profile:
    """A loaded profile: one validated DataFrame per CSV present, plus ``meta.json``."""

    root: Path
    gpu_name: str
    """Catalog GPU name this profile was measured on (``meta.json`` ``catalog_gpu``, else the
    directory name)."""
    meta: dict[str, object] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def launch_s(self, mode: str) -> float | None:
        """Measured per-kernel time of an empty kernel in ``mode`` (eager / graph), or None.

        With several rows (different kernel counts) the median per-kernel time is used.
        """
        df = self.tables.get("launch")
        if df is None:
            return None
        sel = df[df["mode"] == mode]
        if sel.empty:
            return None
        return float(sel["time_s"].median())

    def host_calls(self) -> dict[str, float]:
        """Measured host dispatch seconds per PyTorch call type (``host_dispatch.csv``),
        empty when the profile has none."""
        df = self.tables.get("host_dispatch")
        if df is None:
            return {}
        return {str(c): float(t) for c, t in zip(df["call"], df["host_s"], strict=True)}


def _parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "t", "y"):
        return True
    if t in ("0", "false", "no", "f", "n"):
        return False
    return None


def read_profile_csv(path: Path, kind: str) -> pd.DataFrame:
    """Read and validate one profile CSV; raise ``ProfileError`` naming file and row."""
    try:
        return _read_profile_csv(path, kind)
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text CSV file (undecodable bytes)") from None
    except csv.Error as exc:
        raise ProfileError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_profile_csv(path: Path, kind: str) -> pd.DataFrame:
    cols = COLUMNS[kind]
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ProfileError(f"{path}: empty file (expected header {','.join(cols)})") from None
        missing = [c for c in cols if c not in header]
        if missing:
            raise ProfileError(f"{path}: header lacks column(s) {', '.join(missing)}")
        pos = {c: header.index(c) for c in cols}
        records: dict[str, list[object]] = {c: [] for c in cols}
        for line, row in enumerate(reader, start=2):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) < len(header):
                raise ProfileError(f"{path}: row {line} has {len(row)} fields, header has "
                                   f"{len(header)} (partial row)")
            for c in cols:
                raw = row[pos[c]].strip()
                if c in _TEXT:
                    if not raw:
                        raise ProfileError(f"{path}: row {line}: column {c!r} is empty")
                    records[c].append(raw)
                elif c in _BOOL:
                    b = _parse_bool(raw)
                    if b is None:
                        raise ProfileError(f"{path}: row {line}: column {c!r} is not a boolean: {raw!r}")
                    records[c].append(b)
                else:
                    if not raw and c in _OPTIONAL:
                        records[c].append(math.nan)
                        continue
                    try:
                        x = float(raw)
                    except ValueError:
                        raise ProfileError(f"{path}: row {line}: column {c!r} is not a number: "
                                           f"{raw!r}") from None
                    if not math.isfinite(x):
                        raise ProfileError(f"{path}: row {line}: column {c!r} is not finite: {raw!r}")
                    if c in _POSITIVE and x <= 0 and not (x == 0 and c in _MAY_BE_ZERO.get(kind, ())):
                        raise ProfileError(f"{path}: row {line}: column {c!r} must be > 0, got {raw}")
                    if x < 0:
                        raise ProfileError(f"{path}: row {line}: column {c!r} is negative: {raw}")
                    records[c].append(x)
    return pd.DataFrame(records, columns=list(cols))


def load_profile(root: str | Path) -> Profile:
    """Load every CSV in a profile directory; ``ProfileError`` if it holds none."""
    root = Path(root)
    if not root.is_dir():
        raise ProfileError(f"profile directory {str(root)!r} does not exist")
    meta: dict[str, object] = {}
    meta_path = root / "meta.json"
    if meta_path.exists():
        try:
            loaded = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError:
            raise ProfileError(f"{meta_path}: not a text JSON file (undecodable bytes)") from None
        except OSError as exc:
            raise ProfileError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
        if not isinstance(loaded, dict):
            raise ProfileError(f"{meta_path}: expected a JSON object")
        meta = loaded
    tables = {kind: read_profile_csv(root / f"{kind}.csv", kind)
              for kind in COLUMNS if (root / f"{kind}.csv").exists()}
    if not tables:
        raise ProfileError(f"profile directory {str(root)!r} holds none of "
                           f"{', '.join(k + '.csv' for k in COLUMNS)}")
    name = str(meta.get("catalog_gpu") or root.name)
    return Profile(root=root, gpu_name=name, meta=meta, tables=tables)
