"""Piecewise-linear interpolation in log space that never extrapolates.

Kernel times are smooth in the logarithm of their shape (doubling M roughly doubles a
compute-bound GEMM), so the cost model interpolates *log* quantities over *log* shape
features. ``HullInterp`` is linear inside the convex hull of the measured points
(barycentric on a Delaunay triangulation, or ``np.interp`` in one dimension) and reports
every query outside the hull as outside: the caller then uses a model, never an
extrapolated interpolant. Measured points that span a lower-dimensional affine subspace
(e.g. prefill rows with q_len == kv_len) are handled in that subspace; a query off it is
outside.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay, QhullError, cKDTree

_TOL = 1e-9


class HullInterp:
    """Linear interpolation of ``y`` over points ``x`` (n x d), restricted to their hull."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        y = np.asarray(y, dtype=float)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError("HullInterp needs as many values as points, at least one")
        # Average duplicate points (repeated measurements of one shape).
        ux, inv = np.unique(np.round(x, 12), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        uy = np.bincount(inv, weights=y) / np.bincount(inv)
        self.x, self.y = ux, uy
        self._tree = cKDTree(ux)
        self.center = ux.mean(axis=0)
        centered = ux - self.center
        if ux.shape[0] > 1:
            _, s, vt = np.linalg.svd(centered, full_matrices=False)
            rank = int(np.sum(s > _TOL * max(1.0, float(s[0]))))
        else:
            vt, rank = np.zeros((0, ux.shape[1])), 0
        self.basis = vt[:rank]
        self.rank = rank
        z = centered @ self.basis.T
        self._nd: LinearNDInterpolator | None = None
        if rank == 1:
            order = np.argsort(z[:, 0])
            self._z1, self._y1 = z[order, 0], uy[order]
        elif rank >= 2:
            try:
                self._nd = LinearNDInterpolator(Delaunay(z), uy)
            except QhullError:  # pragma: no cover - degenerate beyond the SVD rank test
                self.rank = 0

    def __call__(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated values and a mask of queries inside the hull (values NaN outside)."""
        q = np.atleast_2d(np.asarray(q, dtype=float))
        centered = q - self.center
        z = centered @ self.basis.T
        off = np.linalg.norm(centered - z @ self.basis, axis=1) > 1e-7
        out = np.full(q.shape[0], np.nan)
        if self.rank == 0:
            inside = ~off
            out[inside] = self.y[0]
        elif self.rank == 1:
            zz = z[:, 0]
            inside = ~off & (zz >= self._z1[0] - 1e-9) & (zz <= self._z1[-1] + 1e-9)
            out[inside] = np.interp(zz[inside], self._z1, self._y1)
        else:
            assert self._nd is not None
            vals = np.asarray(self._nd(z)).reshape(-1)
            inside = ~off & np.isfinite(vals)
            out[inside] = vals[inside]
        return out, inside

    def nearest(self, q: np.ndarray) -> np.ndarray:
        """Value at the nearest measured point (Euclidean in the log features)."""
        q = np.atleast_2d(np.asarray(q, dtype=float))
        _, idx = self._tree.query(q)
        return self.y[np.asarray(idx)]


class FamilyTable:
    """Log-space tables of one operator kind, split by an exact *family* key.

    A family (e.g. GEMM with one (dtype, batch, n, k)) interpolates over its own continuous
    features; a *super-family* (e.g. all GEMMs of one dtype) interpolates over the family
    features plus extra ones (log n, log k), for shapes whose family was not measured.
    ``exact`` maps a full key (family key + raw features) to the measured value.
    """

    def __init__(self) -> None:
        self.family: dict[tuple, HullInterp] = {}
        self.super: dict[tuple, HullInterp] = {}
        self.exact: dict[tuple, float] = {}

    @staticmethod
    def build(fam_keys: list[tuple], sup_keys: list[tuple], fam_x: np.ndarray, sup_x: np.ndarray,
              y: np.ndarray, exact_keys: list[tuple], exact_vals: np.ndarray) -> FamilyTable:
        t = FamilyTable()
        for store, keys, x in ((t.family, fam_keys, fam_x), (t.super, sup_keys, sup_x)):
            groups: dict[tuple, list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key, []).append(i)
            for key, idx in groups.items():
                store[key] = HullInterp(x[idx], y[idx])
        acc: dict[tuple, list[float]] = {}
        for key, val in zip(exact_keys, exact_vals, strict=True):
            acc.setdefault(key, []).append(float(val))
        t.exact = {k: float(np.mean(v)) for k, v in acc.items()}
        return t
