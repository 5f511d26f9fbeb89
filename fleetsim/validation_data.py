"""Where validation ground truth lives, and one strict reader for its CSV tables.

* Our own measurements ship with the package: ``fleetsim/calibration/validation/<GPU>/``
  (``VALIDATION_ROOT``, located through the installed ``fleetsim.calibration`` package, so
  an installed copy finds them wherever it runs).
* Published tables (Korthikanti et al. 2022) are not redistributed: the user points to the
  folder holding them with ``--published-dir`` or the ``FLEETSIM_PUBLISHED_DIR``
  environment variable (in a checkout: ``../shared/data/published``).

Every failure is one ``FleetsimError`` line naming the file (and row, and column).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fleetsim.calibration.measured import VALIDATION_ROOT
from fleetsim.hardware.errors import ConfigError, ProfileError

PUBLISHED_ENV = "FLEETSIM_PUBLISHED_DIR"
PUBLISHED_FILES = ("korthikanti2022_table5.csv", "korthikanti2022_fig1_memory_gib.csv")
SECTION_FILES = {"ops": "ops_heldout.csv", "forward": "forward.csv", "training": "training.csv"}
"""Ground-truth file of each ``fleetsim validate`` section, per ``<GPU>/`` folder."""

__all__ = ["PUBLISHED_ENV", "PUBLISHED_FILES", "SECTION_FILES", "VALIDATION_ROOT", "check_dir",
           "gpus_with_data", "published_dir", "read_table"]


def check_dir(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing directory; else one ``ConfigError`` line
    that starts with ``what`` (the flag or variable that named it)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    if not p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is not a directory")
    return p


def published_dir(path: str | Path | None = None) -> Path | None:
    """The folder of published tables: ``path`` if given, else ``$FLEETSIM_PUBLISHED_DIR``,
    else None (not pointed to). A folder that is pointed to must exist and hold every file
    of ``PUBLISHED_FILES``."""
    what = "--published-dir"
    if path is None:
        env = os.environ.get(PUBLISHED_ENV, "").strip()
        if not env:
            return None
        path, what = env, f"${PUBLISHED_ENV}"
    p = check_dir(path, what)
    missing = [f for f in PUBLISHED_FILES if not (p / f).is_file()]
    if missing:
        raise ConfigError(f"{what} {str(p)!r} lacks {', '.join(missing)} "
                          "(point it at the folder holding the published tables, e.g. ../shared/data/published)")
    return p


def gpus_with_data(root: Path, files: Iterable[str] = tuple(SECTION_FILES.values())) -> list[str]:
    """Names of the ``<GPU>/`` folders under ``root`` that hold any of ``files``."""
    names = tuple(files)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any((d / f).is_file() for f in names))


def read_table(path: Path, required: Iterable[str], numeric: Iterable[str] = (),
               positive: Iterable[str] = (), *, keep: tuple[str, str] | None = None) -> pd.DataFrame:
    """Read one ground-truth CSV. ``required`` columns must be in the header, ``numeric``
    ones finite numbers, ``positive`` ones > 0, on every row kept; ``keep = (column, value)``
    keeps only the rows whose ``column`` equals ``value`` (when the column exists)."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ProfileError(f"{path}: empty file (expected a header with {', '.join(required)})") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text CSV file (undecodable bytes)") from None
    except (OSError, pd.errors.ParserError) as exc:
        msg = " ".join(str(exc).split())
        raise ProfileError(f"{path}: cannot read ({msg})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ProfileError(f"{path}: header lacks column(s) {', '.join(missing)}")
    if keep is not None and keep[0] in df.columns:
        df = df[df[keep[0]].astype(str).str.strip() == keep[1]]
    if df.empty:
        raise ProfileError(f"{path}: no data rows")
    pos = set(positive)
    for c in dict.fromkeys([*numeric, *positive]):
        x = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(x) | ((x <= 0) if c in pos else False))
        if bad.size:
            line = int(df.index[bad[0]]) + 2
            need = "a positive number" if c in pos else "a finite number"
            raise ProfileError(f"{path}: row {line}: column {c!r} must be {need}, got {str(df[c].iloc[bad[0]])!r}")
    return df
