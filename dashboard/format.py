"""Numbers with units and errors as plain text, for every view of the dashboard.

The dashboard only formats; every number comes from the public API. Units are SI inside
(seconds, bytes, watts, joules) and converted here, at the edge."""

from __future__ import annotations

import math
import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def escape_md(text: str) -> str:
    """``text`` with every Markdown/LaTeX control character escaped, so ``st.error`` and
    ``st.markdown`` show it literally (``tp*cp*pp*dp`` stays ``tp*cp*pp*dp``)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def one_line(exc: BaseException | str, hide: dict[str, str] | None = None) -> str:
    """The first line of an error message, with server paths in ``hide`` replaced by the
    names the user knows them by (an upload's file name) and capped at 400 characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for path, shown in (hide or {}).items():
        text = text.replace(path, shown)
    return text if len(text) <= 400 else text[:397] + "..."


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def seconds(v: float | None) -> str:
    """A duration: us / ms / s / min / h / days by size."""
    if not _finite(v):
        return "n/a"
    assert v is not None
    a = abs(v)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{v * 1e6:.3g} us"
    if a < 1:
        return f"{v * 1e3:.3g} ms"
    if a < 120:
        return f"{v:.3g} s"
    if a < 7200:
        return f"{v / 60:.3g} min"
    if a < 3 * 86400:
        return f"{v / 3600:.3g} h"
    return f"{v / 86400:.3g} days"


def _scaled(v: float | None, unit: str, steps: tuple[tuple[float, str], ...]) -> str:
    if not _finite(v):
        return "n/a"
    assert v is not None
    for factor, prefix in steps:
        if abs(v) >= factor:
            return f"{v / factor:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def watts(v: float | None) -> str:
    return _scaled(v, "W", _SI)


def joules(v: float | None) -> str:
    return _scaled(v, "J", _SI)


def flops(v: float | None) -> str:
    return _scaled(v, "FLOP/s", _SI)


def nbytes(v: float | None) -> str:
    """Bytes in binary units (GiB, as nvidia-smi and PyTorch report memory)."""
    return _scaled(v, "B", ((2**50, "Pi"), (2**40, "Ti"), (2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")))


def rate(v: float | None, unit: str) -> str:
    """A rate such as ``req/s`` or ``tok/s``."""
    return _scaled(v, unit, ((1e9, "G"), (1e6, "M"), (1e3, "k")))


def usd(v: float | None, per: str = "") -> str:
    if not _finite(v):
        return "n/a"
    assert v is not None
    text = f"${v:,.2f}" if abs(v) >= 1 else f"${v:.3g}"
    return text + (f"/{per}" if per else "")


def share(v: float | None) -> str:
    """A fraction as a percentage."""
    return "n/a" if not _finite(v) else f"{100 * float(v or 0):.1f} %"


def count(v: float | int | None) -> str:
    return "n/a" if not _finite(v) else f"{int(round(float(v or 0))):,}"


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """A serving summary as (metric, value with unit) rows, by the unit suffix of each key
    (``_s`` seconds, ``_w`` watts, ``_j`` joules, ``_bytes``, ``_rps``, ``_per_s``)."""
    rows = []
    for k, v in summary.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            rows.append((k, str(v)))
        elif k.endswith("_s") and not k.endswith("_per_s"):
            rows.append((k, seconds(v)))
        elif k.endswith("_w"):
            rows.append((k, watts(v)))
        elif k.endswith("_j") or k.startswith("j_per"):
            rows.append((k, joules(v) + ("/tok" if "per_output_token" in k or "per_token" in k else "")))
        elif k.endswith("_bytes"):
            rows.append((k, nbytes(v)))
        elif k.endswith("_rps"):
            rows.append((k, rate(v, "req/s")))
        elif k.endswith("tokens_per_s") or k.endswith("tok_s"):
            rows.append((k, rate(v, "tok/s")))
        elif k.endswith("_per_s"):
            rows.append((k, rate(v, "/s")))
        elif "share" in k or "rate" in k or "occupancy" in k or "util" in k or "attainment" in k:
            rows.append((k, share(v) if 0 <= v <= 1 else f"{v:.4g}"))
        elif isinstance(v, int) or float(v).is_integer():
            rows.append((k, count(v)))
        else:
            rows.append((k, f"{v:.4g}"))
    return rows


def show_error(message: BaseException | str) -> None:
    """One line in an error box, every character shown as typed (Markdown escaped)."""
    import streamlit as st

    st.error(escape_md(one_line(message)), icon=None)
