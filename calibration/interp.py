"""Piecewise-linear interpolation in log space that never extrapolates.

Kernel times are smooth in the logarithm of their shape (doubling M roughly doubles a
compute-bound GEMM), so the cost model interpolates *log* quantities over *log* shape
features. Calibration profiles are measured on grids, so ``GridInterp`` is multilinear on
the grid spanned by the measured points (``np.interp`` in one dimension): a query is
*inside* when it lies in a grid cell whose corners were all measured, and everything else
is reported as outside, so the caller uses a model rather than an extrapolated
interpolant. Feature columns that are constant over the points, or equal to an earlier
column (prefill grids with q_len == kv_len), are not grid axes; a query must match them.
Families of one operator kind that differ in a coordinate of their key (GEMM n and k,
attention head counts) are bridged by ``FamilyTable``: inverse-distance weighting of the
nearest measured families in log space.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right

import numpy as np
from scipy.spatial import cKDTree

_TOL = 1e-9


class GridInterp:
    """Multilinear interpolation of ``y`` over grid points ``x`` (n x d), inside the grid."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        y = np.asarray(y, dtype=float)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError("GridInterp needs as many values as points, at least one")
        ux, inv = np.unique(np.round(x, 12), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        uy = np.bincount(inv, weights=y) / np.bincount(inv)
        self.x, self.y = ux, uy
        self.kernels = 1.0
        """Kernel launches one call of this family makes (set by the profile fit)."""
        self._tree = cKDTree(ux)
        d = ux.shape[1]
        const = [j for j in range(d) if np.ptp(ux[:, j]) < _TOL]
        self.const = [(j, float(ux[0, j])) for j in const]
        active: list[int] = []
        self.dup: list[tuple[int, int]] = []
        for j in range(d):
            if j in const:
                continue
            twin = next((i for i in active if np.all(np.abs(ux[:, j] - ux[:, i]) < _TOL)), None)
            if twin is None:
                active.append(j)
            else:
                self.dup.append((j, twin))
        self.active = active
        self.axes = [np.unique(ux[:, j]) for j in active]
        shape = tuple(len(a) for a in self.axes)
        self.grid = np.full(shape, np.nan)
        if active:
            idx = tuple(np.searchsorted(a, ux[:, j]) for a, j in zip(self.axes, active, strict=True))
            self.grid[idx] = uy
        self._axes_list = [a.tolist() for a in self.axes]
        self._grid_list = self.grid.tolist()

    def __call__(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated values, a mask of queries inside the measured grid (values NaN
        outside) and a mask of queries that coincide with a measured point."""
        q = np.atleast_2d(np.asarray(q, dtype=float))
        n = q.shape[0]
        if n <= 4:
            return self._few(q)
        return self._many(q)

    def _few(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same computation in plain Python, for a handful of queries (numpy's per-call
        overhead dominates there: a simulator prices one new decode attention per step)."""
        out, oks, exacts = [], [], []
        for row in q.tolist():
            v, ok, ex = self._one(row)
            out.append(v)
            oks.append(ok)
            exacts.append(ex)
        return np.array(out, dtype=float), np.array(oks, dtype=bool), np.array(exacts, dtype=bool)

    def _one(self, row: list[float]) -> tuple[float, bool, bool]:
        nan = float("nan")
        for j, c in self.const:
            if abs(row[j] - c) >= 1e-7:
                return nan, False, False
        for j, i in self.dup:
            if abs(row[j] - row[i]) >= 1e-7:
                return nan, False, False
        if not self.active:
            return float(self.y[0]), True, True
        cells: list[tuple[int, float]] = []
        exact = True
        for a, j in zip(self._axes_list, self.active, strict=True):
            z = row[j]
            if z < a[0] - 1e-9 or z > a[-1] + 1e-9:
                return nan, False, False
            if len(a) == 1:
                cells.append((0, 0.0))
                exact = exact and abs(z - a[0]) < 1e-9
                continue
            lo = min(max(bisect_right(a, z) - 1, 0), len(a) - 2)
            f = min(max((z - a[lo]) / (a[lo + 1] - a[lo]), 0.0), 1.0)
            if abs(z - a[lo + 1]) < 1e-9:
                f = 1.0
            if abs(z - a[lo]) < 1e-9:
                f = 0.0
            exact = exact and f in (0.0, 1.0)
            cells.append((lo, f))
        acc = wsum = missing = 0.0
        for corner in range(1 << len(cells)):
            w = 1.0
            node = self._grid_list
            for ax, (lo, f) in enumerate(cells):
                up = (corner >> ax) & 1
                if up and len(self._axes_list[ax]) == 1:
                    w = 0.0
                    break
                w *= f if up else 1.0 - f
                node = node[lo + up]
            if w == 0.0:
                continue
            val = float(node)  # type: ignore[arg-type]
            if val != val:
                missing += w
            else:
                acc += val * w
                wsum += w
        if missing >= 0.5 or wsum <= 0.0:
            return nan, False, False
        return acc / wsum, True, exact

    def _many(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = q.shape[0]
        ok = np.ones(n, dtype=bool)
        for j, c in self.const:
            ok &= np.abs(q[:, j] - c) < 1e-7
        for j, i in self.dup:
            ok &= np.abs(q[:, j] - q[:, i]) < 1e-7
        out = np.full(n, np.nan)
        if not self.active:
            out[ok] = self.y[0]
            return out, ok, ok.copy()
        exact = ok.copy()
        lo_idx: list[np.ndarray] = []
        fracs: list[np.ndarray] = []
        for a, j in zip(self.axes, self.active, strict=True):
            z = q[:, j]
            ok &= (z >= a[0] - 1e-9) & (z <= a[-1] + 1e-9)
            if len(a) == 1:
                lo_idx.append(np.zeros(n, dtype=np.int64))
                fracs.append(np.zeros(n))
                exact &= np.abs(z - a[0]) < 1e-9
                continue
            lo = np.clip(np.searchsorted(a, z, side="right") - 1, 0, len(a) - 2).astype(np.int64)
            f = np.clip((z - a[lo]) / (a[lo + 1] - a[lo]), 0.0, 1.0)
            f[np.abs(z - a[lo + 1]) < 1e-9] = 1.0
            f[np.abs(z - a[lo]) < 1e-9] = 0.0
            exact &= (f == 0.0) | (f == 1.0)
            lo_idx.append(lo)
            fracs.append(f)
        acc = np.zeros(n)
        wsum = np.zeros(n)
        missing = np.zeros(n)
        for corner in range(1 << len(self.axes)):
            w = np.ones(n)
            idx = []
            for ax, (lo, f) in enumerate(zip(lo_idx, fracs, strict=True)):
                up = (corner >> ax) & 1
                if len(self.axes[ax]) == 1 and up:
                    w = np.zeros(n)
                    break
                idx.append(np.minimum(lo + up, len(self.axes[ax]) - 1))
                w = w * (f if up else 1.0 - f)
            else:
                vals = self.grid[tuple(idx)]
                have = ~np.isnan(vals)
                acc += np.where(have, np.nan_to_num(vals) * w, 0.0)
                wsum += np.where(have, w, 0.0)
                missing += np.where(have, 0.0, w)
        # A cell with unmeasured corners (grids cut by a memory or token cap) still counts as
        # inside when the measured corners carry most of the weight: renormalise over them.
        ok &= missing < 0.5
        out[ok] = acc[ok] / wsum[ok]
        return out, ok, exact & ok

    def nearest(self, q: np.ndarray) -> np.ndarray:
        """Value at the nearest measured point (Euclidean in the log features)."""
        q = np.atleast_2d(np.asarray(q, dtype=float))
        _, idx = self._tree.query(q)
        return self.y[np.asarray(idx)]


class FamilyTable:
    """Log-space tables of one operator kind, split by an exact *family* key.

    A family (e.g. GEMM with one (dtype, batch, n, k)) interpolates over its own continuous
    features (``GridInterp``). Key columns listed in ``coord_cols`` (n, k, batch) are
    coordinates: a query whose family was not measured borrows from the ``neighbours``
    nearest measured families with the same other key columns, weighted by inverse squared
    distance in the log of those coordinates.
    """

    neighbours = 2

    def __init__(self, coord_cols: tuple[int, ...]) -> None:
        self.coord_cols = coord_cols
        self.shift: tuple[int, int] | None = None
        """(feature column, coordinate index): when borrowing from a family whose coordinate
        differs, move the query's log feature by the log ratio (attention: batch x heads is
        the parallel work of a flash kernel, so 8 sequences of 25 heads read like 12.5
        sequences of 16 heads)."""
        self.family: dict[tuple, GridInterp] = {}
        self._by_cat: dict[tuple, list[tuple[np.ndarray, GridInterp]]] = {}

    @staticmethod
    def build(fam_keys: np.ndarray, fam_x: np.ndarray, y: np.ndarray,
              coord_cols: tuple[int, ...] = (), kernels: np.ndarray | None = None) -> FamilyTable:
        t = FamilyTable(coord_cols)
        rows, inv = group_rows(fam_keys)
        for g, idx in enumerate(split_groups(inv, len(rows))):
            key = tuple(rows[g].tolist())
            hi = GridInterp(fam_x[idx], y[idx])
            if kernels is not None:
                hi.kernels = float(np.max(kernels[idx]))
            t.family[key] = hi
            t._by_cat.setdefault(t.category(key), []).append((t.coords(key), hi))
        return t

    def category(self, key: tuple) -> tuple:
        return tuple(v for i, v in enumerate(key) if i not in self.coord_cols)

    def coords(self, key: tuple) -> np.ndarray:
        return np.log(np.array([key[i] for i in self.coord_cols], dtype=float))

    def borrow(self, key: tuple) -> tuple[list[tuple[GridInterp, float, float]], bool]:
        """Nearest measured families for an unmeasured key: (interpolant, weight, feature
        shift) triples and whether the key's coordinates lie inside the measured range."""
        cands = self._by_cat.get(self.category(key))
        if not cands or not self.coord_cols:
            return [], False
        c = self.coords(key)
        pts = np.array([p for p, _ in cands])
        dist = np.linalg.norm(pts - c, axis=1)
        order = np.argsort(dist)[: self.neighbours]
        w = 1.0 / np.maximum(dist[order], 1e-12) ** 2
        w = w / w.sum()
        within = bool(np.all((c >= pts.min(axis=0) - 1e-9) & (c <= pts.max(axis=0) + 1e-9)))
        out = []
        for i, wi in zip(order, w, strict=True):
            shift = 0.0
            if self.shift is not None:
                shift = float(c[self.shift[1]] - pts[i][self.shift[1]])
            out.append((cands[i][1], float(wi), shift))
        return out, within


_TEXT_CODES: dict[str, float] = {}
_CODE_TEXTS: dict[float, str] = {}


def text_code(text: str) -> float:
    """A fixed number for a text key column (dtype, kernel, collective): its CRC-32.

    The code depends only on the text, never on the order in which texts were first seen or
    on the interpreter's hash seed, so family order and tie-breaks are the same in every
    process (determinism across runs)."""
    code = _TEXT_CODES.get(text)
    if code is None:
        code = float(zlib.crc32(text.encode()) + 1)
        other = _CODE_TEXTS.setdefault(code, text)
        if other != text:
            raise ValueError(f"text key codes collide: {other!r} and {text!r}")
        _TEXT_CODES[text] = code
    return code


def text_codes(texts: list[str]) -> np.ndarray:
    for t in dict.fromkeys(texts):
        text_code(t)
    return np.fromiter(map(_TEXT_CODES.__getitem__, texts), dtype=float, count=len(texts))


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                dtype=np.uint64)


def group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a 2-D key array and, for each row, the index of its distinct row.

    Rows are hashed to one 64-bit integer (fast ``np.unique``); the grouping is verified
    and falls back to an exact row-wise ``np.unique`` on the (astronomically rare) collision.
    """
    keys = np.ascontiguousarray(np.atleast_2d(np.asarray(keys, dtype=float)))
    n, c = keys.shape
    if n == 0:
        return keys[:0], np.zeros(0, dtype=np.int64)
    if n <= 16:  # a few rows: plain tuples beat numpy's per-call overhead
        seen: dict[tuple, int] = {}
        inv_list = [seen.setdefault(tuple(r), len(seen)) for r in keys.tolist()]
        return np.array(list(seen), dtype=float).reshape(len(seen), c), np.array(inv_list, dtype=np.int64)
    h = np.zeros(n, dtype=np.uint64)
    bits = keys.view(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(c):
            h = (h ^ bits[:, j]) * _MIX[j % len(_MIX)]
            h ^= h >> np.uint64(29)
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    rows = keys[first]
    if not np.array_equal(rows[inv], keys):
        rows, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
    return rows, inv


def split_groups(inv: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Positions of each group given the group index of every row."""
    if n_groups == 1:
        return [np.arange(len(inv))]
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(1, n_groups))
    return np.split(order, bounds)
