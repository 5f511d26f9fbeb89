"""80% prediction intervals from held-out residuals (split conformal).

A prediction ``p`` of a time is wrong by the log ratio ``r = ln(measured / p)``. For each
group of validation rows, keyed by (GPU, class, profile), the table stores the split-conformal
10% and 90% quantiles of ``r`` over the rows it was fitted on; the interval of a new
prediction is ``[p * exp(q10), p * exp(q90)]``.

* ``cls``: what is priced: a forward pass (``prefill_eager``, ``decode_graph``, ...), a single
  operator (``gemm``, ``attention``) or a training step (``train_step``, ``train_device``,
  ``train_step_host_bound``).
* ``profile``: ``own`` when the GPU's own measured profile priced it, ``cross`` when it was
  priced without one (a roofline fitted on another GPU's profile of the same architecture;
  its residuals are the measured "no profile" spread).
* Lookup falls back from the group to the class pooled over GPUs (``gpu = *``) and then to
  every class of that profile kind (``cls = *``) when a level has fewer than ``MIN_ROWS`` rows.
* Widening for roofline-priced work: a prediction from its own profile with a share ``s`` of
  its time priced by roofline takes ``(1 - s) x`` the own quantiles plus ``s x`` the cross
  quantiles of the same GPU and class, endpoint by endpoint in log space.

Finite-sample correction: with ``n`` residuals sorted, the lower end is the
``floor(0.1 (n + 1))``-th and the upper end the ``ceil(0.9 (n + 1))``-th smallest, which
covers a new exchangeable row with probability >= 80% (Vovk et al. 2005; Lei et al. 2018);
``n >= 9`` is needed for both ends to exist. This module reads only its table; the rows
come from the validation code of the public package (``fleetsim.interval_data``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from fleetsim.hardware.errors import ConfigError, ProfileError

__all__ = ["ALPHA", "INTERVALS_CSV", "MIN_ROWS", "ROW_COLUMNS", "TABLE_COLUMNS", "IntervalTable",
           "conformal_quantiles", "coverage", "crossfit", "fit_table", "forward_class", "interval_for", "load_table",
           "summarize_coverage"]

ALPHA = 0.2
"""Miscoverage of the interval: 80% of held-out rows should fall inside."""
MIN_ROWS = math.ceil(1.0 / (ALPHA / 2.0)) - 1
"""Fewest residuals for which both finite-sample conformal ends exist (9 at ALPHA 0.2)."""
INTERVALS_CSV = Path(__file__).resolve().parent / "intervals.csv"
ROW_COLUMNS = ("gpu", "cls", "profile", "measured_s", "predicted_s", "roofline_share")
"""A residual row: what was priced, how, and the two times; ``roofline_share`` in [0, 1]."""
TABLE_COLUMNS = ("gpu", "cls", "profile", "n", "q10", "q90")
PROFILES = ("own", "cross")
ANY = "*"


def conformal_quantiles(r: Iterable[float], alpha: float = ALPHA) -> tuple[float, float] | None:
    """Split-conformal (lower, upper) ends of the residuals ``r``: the ``floor(a/2 (n+1))``-th
    and ``ceil((1-a/2)(n+1))``-th smallest; None when ``n`` is too small for either."""
    x = np.sort(np.asarray(list(r), dtype=float))
    n = len(x)
    k_lo = math.floor(alpha / 2.0 * (n + 1) + 1e-9)
    k_hi = math.ceil((1.0 - alpha / 2.0) * (n + 1) - 1e-9)
    if k_lo < 1 or k_hi > n:
        return None
    return float(x[k_lo - 1]), float(x[k_hi - 1])


def _check_rows(rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ConfigError(f"interval rows lack column(s) {', '.join(missing)} (expected {', '.join(ROW_COLUMNS)})")
    bad = ~((rows["measured_s"] > 0) & (rows["predicted_s"] > 0))
    if bad.any():
        raise ConfigError(f"interval rows: measured_s and predicted_s must be positive (row {int(np.flatnonzero(bad)[0])})")
    return rows.assign(r=np.log(rows["measured_s"] / rows["predicted_s"]))


def fit_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The interval table of ``rows`` (``ROW_COLUMNS``): one line per (gpu, cls, profile)
    group, per (``*``, cls, profile) class and per (``*``, ``*``, profile) kind that has at
    least ``MIN_ROWS`` rows. Sorted, so the same rows give the same table."""
    df = _check_rows(rows)
    out = []
    levels = (["gpu", "cls", "profile"], ["cls", "profile"], ["profile"])
    for keys in levels:
        for key, part in df.groupby(keys, sort=True):
            q = conformal_quantiles(part["r"])
            if q is None:
                continue
            k = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
            out.append({"gpu": k.get("gpu", ANY), "cls": k.get("cls", ANY), "profile": k["profile"],
                        "n": len(part), "q10": round(q[0], 6), "q90": round(q[1], 6)})
    return pd.DataFrame(out, columns=list(TABLE_COLUMNS)).sort_values(["profile", "gpu", "cls"]).reset_index(drop=True)


class IntervalTable:
    """Lookup of the fitted quantiles with the group -> class -> kind fallback."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self._q = {(str(r.gpu), str(r.cls), str(r.profile)): (float(r.q10), float(r.q90))
                   for r in table.itertuples(index=False)}

    def quantiles(self, gpu: str, cls: str, profile: str) -> tuple[float, float]:
        """(q10, q90) of the most specific level with data."""
        if profile not in PROFILES:
            raise ConfigError(f"interval profile {profile!r} is not one of {', '.join(PROFILES)}")
        for key in ((gpu, cls, profile), (ANY, cls, profile), (ANY, ANY, profile)):
            if key in self._q:
                return self._q[key]
        raise ProfileError(f"interval table has no {profile!r} rows (refit it with benchmarks/fit_intervals.py)")

    def log_bounds(self, gpu: str, cls: str, *, own_profile: bool, roofline_share: float = 0.0) -> tuple[float, float]:
        """(q10, q90) of a prediction, widened toward the cross quantiles by its roofline share."""
        if not 0.0 <= roofline_share <= 1.0 + 1e-9:
            raise ConfigError(f"roofline_share must be in [0, 1], got {roofline_share!r}")
        if not own_profile:
            return self.quantiles(gpu, cls, "cross")
        own = self.quantiles(gpu, cls, "own")
        s = min(float(roofline_share), 1.0)
        if s == 0.0:
            return own
        cross = self.quantiles(gpu, cls, "cross")
        return ((1 - s) * own[0] + s * cross[0], (1 - s) * own[1] + s * cross[1])

    def interval(self, predicted_s: float, gpu: str, cls: str, *, own_profile: bool,
                 roofline_share: float = 0.0) -> tuple[float, float]:
        """``(p10, p90)`` seconds around the point ``predicted_s``."""
        lo, hi = self.log_bounds(gpu, cls, own_profile=own_profile, roofline_share=roofline_share)
        return predicted_s * math.exp(lo), predicted_s * math.exp(hi)


_LOADED: dict[Path, IntervalTable] = {}


def load_table(path: str | Path | None = None) -> IntervalTable:
    """The committed table (``calibration/intervals.csv``) or the one at ``path``, cached."""
    p = Path(path) if path is not None else INTERVALS_CSV
    if p not in _LOADED:
        try:
            df = pd.read_csv(p, comment="#")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ProfileError(f"{p}: cannot read the interval table ({' '.join(str(exc).split())})") from None
        missing = [c for c in TABLE_COLUMNS if c not in df.columns]
        if missing:
            raise ProfileError(f"{p}: header lacks column(s) {', '.join(missing)}")
        _LOADED[p] = IntervalTable(df)
    return _LOADED[p]


def coverage(table: IntervalTable, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with each one's interval (``p10_s``, ``p90_s``) and whether the measured time
    falls inside it (``inside``; the ends count as inside)."""
    df = _check_rows(rows)
    lo, hi = [], []
    for r in df.itertuples(index=False):
        a, b = table.interval(float(r.predicted_s), str(r.gpu), str(r.cls), own_profile=r.profile == "own",
                              roofline_share=float(r.roofline_share))
        lo.append(a)
        hi.append(b)
    out = df.drop(columns="r").assign(p10_s=lo, p90_s=hi)
    out["inside"] = (out["measured_s"] >= out["p10_s"] * (1 - 1e-12)) & (out["measured_s"] <= out["p90_s"] * (1 + 1e-12))
    return out


def crossfit(rows: pd.DataFrame, split: str = "alternate", folds: int = 10) -> pd.DataFrame:
    """Every row tested once by a table fitted without it.

    ``alternate``: within each (gpu, cls, profile) group, in file order, row ``i`` goes to fold
    ``i mod folds`` (every ``folds``-th shape); each fold is tested by the table fitted on the
    others, which is the shipped table less a tenth of its rows at the default 10.
    ``gpu``: leave one GPU out; its rows are tested by the table of the other GPUs (whose
    group level then does not exist, so the class level answers).
    """
    df = rows.reset_index(drop=True)
    if split == "alternate":
        fold = df.groupby(["gpu", "cls", "profile"], sort=False).cumcount() % folds
    elif split == "gpu":
        fold = df["gpu"]
    else:
        raise ConfigError(f"crossfit split {split!r} is not one of alternate, gpu")
    parts = []
    for k in sorted(fold.unique(), key=str):
        test = df[fold == k]
        parts.append(coverage(IntervalTable(fit_table(df[fold != k])), test).assign(fold=str(k)))
    return pd.concat(parts).sort_index()


def summarize_coverage(cov: pd.DataFrame, by: tuple[str, ...] = ("gpu", "cls", "profile")) -> pd.DataFrame:
    """Held-out rows, rows inside and coverage per group, then one ``all`` line."""
    g = cov.groupby(list(by), sort=True)["inside"]
    out = pd.DataFrame({"rows": g.size(), "inside": g.sum().astype(int)}).reset_index()
    total = {k: "all" for k in by} | {"rows": len(cov), "inside": int(cov["inside"].sum())}
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True)
    out["coverage"] = out["inside"] / out["rows"]
    return out


def forward_class(prefill: bool, graphs: bool) -> str:
    """Class of a forward iteration: ``prefill_*`` when any sequence is prefilling, else ``decode_*``."""
    return f"{'prefill' if prefill else 'decode'}_{'graph' if graphs else 'eager'}"


def interval_for(time_s: float, gpu: str, cls: str, *, own_profile: bool, roofline_share: float = 0.0,
                 table: IntervalTable | None = None) -> tuple[float, float]:
    """``(p10, p90)`` seconds of a predicted ``time_s`` from the committed table (see the module doc)."""
    t = table if table is not None else load_table()
    return t.interval(time_s, gpu, cls, own_profile=own_profile, roofline_share=roofline_share)
