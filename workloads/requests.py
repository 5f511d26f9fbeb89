"""Serving requests: one ``Request`` record and the columnar ``RequestStream``.

A request is what a serving replica sees: when it arrives, how many prompt tokens
it must prefill and how many output tokens it will decode. Two optional pieces of
structure let the simulator model effects that are not in the lengths alone:

* **Prefix sharing** (prefix caching). ``prefix_tokens`` leading prompt tokens are
  identical to tokens some earlier request with the same ``prefix_id`` already
  carried. A nested ``system_prefix_id``/``system_prefix_tokens`` (<= prefix_tokens)
  marks the leading part shared across *all* requests with that id (a common system
  prompt). ``block_hashes`` turns this into one 64-bit hash per full KV block, so a
  KV cache that keys blocks by hash finds hits exactly where content repeats and the
  hit rate emerges from the simulation rather than being assumed.
* **Closed-loop chains.** ``client_id >= 0`` puts a request in a client's chain:
  the simulator issues it ``think_s`` seconds after the previous request of the same
  client *completes* (the first request of a chain is issued at ``arrival_s``). For
  chained requests ``arrival_s`` is the zero-latency schedule (the issue time if every
  request completed instantly), a lower bound the simulator shifts by real latency.

``RequestStream`` keeps the same fields as numpy columns (about 60 bytes per request),
so a million-request stream costs ~60 MB and iterates lazily into ``Request`` objects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pandas as pd
from fleetsim.hardware.errors import ConfigError

# Namespaces keep the three kinds of block identity from ever colliding by construction
# of the pre-image (the 64-bit mix itself is a bijection).
_NS_SYSTEM = 1
_NS_PREFIX = 2
_NS_UNIQUE = 3


_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, a bijective 64-bit mix (Steele et al. 2014), elementwise."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _splitmix64_int(x: int) -> int:
    """The same mix on one Python int (no numpy call overhead)."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


_mixed_index = _splitmix64(np.arange(1024, dtype=np.uint64))


def _mixed_indices(count: int) -> np.ndarray:
    """``splitmix64(i)`` for ``i < count``, from a table grown by doubling."""
    global _mixed_index
    if count > len(_mixed_index):
        size = max(count, 2 * len(_mixed_index))
        _mixed_index = _splitmix64(np.arange(size, dtype=np.uint64))
    return _mixed_index[:count]


@functools.lru_cache(maxsize=2048)
def _owner_hashes(namespace: int, owner: int, count: int) -> tuple[int, ...]:
    """Hashes of blocks ``0..count-1`` of ``owner`` in ``namespace``.

    Memoised (callers round ``count`` up to a power of two and slice), because an engine
    asks for the same prefix, or a growing sequence's blocks, many times.
    """
    base = _splitmix64_int((namespace << 56) ^ (owner & 0x00FFFFFFFFFFFFFF))
    return tuple(_splitmix64(np.uint64(base) ^ _mixed_indices(count)).tolist())


def _block_range(namespace: int, owner: int, first: int, last: int) -> tuple[int, ...]:
    """Hashes of blocks ``first..last-1`` of ``owner``: ``mix(mix(key) ^ mix(i))``."""
    if last <= first:
        return ()
    return _owner_hashes(namespace, owner, 1 << max(6, (last - 1).bit_length()))[first:last]


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request; token counts are integers, times in seconds."""

    req_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    session_id: int | None = None
    prefix_id: int | None = None
    prefix_tokens: int = 0
    system_prefix_id: int | None = None
    system_prefix_tokens: int = 0
    client_id: int | None = None
    think_s: float = 0.0
    adapter_id: int | None = None
    """LoRA adapter this request runs with (None: the base model)."""
    lora_rank: int = 0
    """Rank of that adapter (0: no LoRA computation, the base model's cost)."""

    def block_hashes(self, block_size: int, num_tokens: int | None = None) -> tuple[int, ...]:
        """One hash per full KV block of the first ``num_tokens`` tokens (default: prompt).

        Block ``i`` covers tokens ``[i*block_size, (i+1)*block_size)``. Its identity is
        ``(system_prefix_id, i)`` when it lies wholly inside the system prefix,
        ``(prefix_id, i)`` when it lies wholly inside the shared prefix - or anywhere, for a
        session request, because a conversation's context only grows by appending, so
        this turn's prompt and output become the next turn's prefix - and
        ``(req_id, i)`` otherwise (content nobody else has). Passing ``num_tokens`` past
        the prompt gives the hashes of blocks filled during decode, with the same rule.
        Deterministic across processes: no Python ``hash`` of strings is involved.
        """
        if block_size <= 0:
            raise ConfigError(f"block_size must be positive, got {block_size}")
        total = self.prompt_tokens if num_tokens is None else int(num_tokens)
        n_full = total // block_size
        n_sys = self.system_prefix_tokens // block_size if self.system_prefix_id is not None else 0
        n_sys = min(n_sys, n_full)
        out = _block_range(_NS_SYSTEM, self.system_prefix_id or 0, 0, n_sys)
        if self.prefix_id is not None:
            n_pre = n_full if self.session_id is not None else self.prefix_tokens // block_size
            n_pre = min(max(n_pre, n_sys), n_full)
            out += _block_range(_NS_PREFIX, self.prefix_id, n_sys, n_pre)
        else:
            n_pre = n_sys
        return out + _block_range(_NS_UNIQUE, self.req_id, n_pre, n_full)

    def prompt_hashes(self, block_size: int) -> tuple[int, ...]:
        """One hash per full KV block of the prompt (see ``block_hashes``)."""
        return self.block_hashes(block_size)


# Column name -> (dtype, fill value meaning "absent").
COLUMNS: dict[str, tuple[Any, float | int]] = {
    "arrival_s": (np.float64, 0.0),
    "prompt_tokens": (np.int64, 0),
    "output_tokens": (np.int64, 0),
    "session_id": (np.int64, -1),
    "prefix_id": (np.int64, -1),
    "prefix_tokens": (np.int64, 0),
    "system_prefix_id": (np.int64, -1),
    "system_prefix_tokens": (np.int64, 0),
    "client_id": (np.int64, -1),
    "think_s": (np.float64, 0.0),
    "adapter_id": (np.int64, -1),
    "lora_rank": (np.int64, 0),
}
REQUIRED_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
_OPTIONAL_IDS = ("session_id", "prefix_id", "system_prefix_id", "client_id", "adapter_id")


class RequestStream:
    """Columnar, immutable-by-convention sequence of requests.

    Columns are the ``Request`` fields (``-1`` in an id column means "none").
    ``req_id`` is a column too (default ``0..n-1``) so slices keep original ids.
    Construct with keyword arrays; absent optional columns get their fill value.
    """

    __slots__ = ("_cols",)

    def __init__(self, *, req_id: Any = None, validate: bool = True, **columns: Any) -> None:
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise ConfigError(f"RequestStream: unknown column(s) {unknown}; known: {list(COLUMNS)}")
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ConfigError(f"RequestStream: missing required column(s) {missing}")
        n = len(np.asarray(columns["arrival_s"]))
        cols: dict[str, np.ndarray] = {}
        for name, (dtype, fill) in COLUMNS.items():
            if name in columns and columns[name] is not None:
                arr = np.ascontiguousarray(np.asarray(columns[name]), dtype=dtype)
                if arr.shape != (n,):
                    raise ConfigError(
                        f"RequestStream: column {name!r} has shape {arr.shape}, expected ({n},)"
                    )
            else:
                arr = np.full(n, fill, dtype=dtype)
            cols[name] = arr
        ids = np.arange(n, dtype=np.int64) if req_id is None else np.asarray(req_id, np.int64)
        if ids.shape != (n,):
            raise ConfigError(f"RequestStream: column 'req_id' has shape {ids.shape}, expected ({n},)")
        cols["req_id"] = ids
        self._cols = cols
        if validate:
            self.validate()

    # -- construction helpers ---------------------------------------------------------
    @classmethod
    def from_columns(
        cls, columns: dict[str, Any], req_id: Any = None, validate: bool = True
    ) -> RequestStream:
        """Build from a mapping of column name -> array (the keyword form, as a dict)."""
        return cls(req_id=req_id, validate=validate, **columns)

    @classmethod
    def empty(cls) -> RequestStream:
        return cls(arrival_s=np.zeros(0), prompt_tokens=np.zeros(0), output_tokens=np.zeros(0))

    @classmethod
    def from_requests(cls, requests: list[Request]) -> RequestStream:
        """Build from ``Request`` objects (small streams, tests)."""
        data: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        ids = []
        for r in requests:
            ids.append(r.req_id)
            for name, (_, fill) in COLUMNS.items():
                v = getattr(r, name)
                data[name].append(fill if v is None else v)
        return cls.from_columns(data, req_id=ids)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RequestStream:
        """Inverse of ``to_frame``; unknown columns are an error."""
        cols = {c: frame[c].to_numpy() for c in frame.columns if c != "req_id"}
        req_id = frame["req_id"].to_numpy() if "req_id" in frame.columns else None
        return cls(req_id=req_id, **cols)

    @classmethod
    def concat(cls, streams: list[RequestStream]) -> RequestStream:
        """Concatenate streams in the given order (no re-sorting, ids kept)."""
        if not streams:
            return cls.empty()
        cols = {name: np.concatenate([s._cols[name] for s in streams]) for name in COLUMNS}
        ids = np.concatenate([s._cols["req_id"] for s in streams])
        return cls.from_columns(cols, req_id=ids)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first offending request of any invalid column."""
        c = self._cols
        checks = [
            (~np.isfinite(c["arrival_s"]), "arrival_s is not finite"),
            (c["arrival_s"] < 0, "arrival_s is negative"),
            (c["prompt_tokens"] < 0, "prompt_tokens is negative"),
            (c["output_tokens"] < 0, "output_tokens is negative"),
            (c["prefix_tokens"] < 0, "prefix_tokens is negative"),
            (c["prefix_tokens"] > c["prompt_tokens"], "prefix_tokens exceeds prompt_tokens"),
            (c["system_prefix_tokens"] > c["prefix_tokens"], "system_prefix_tokens exceeds prefix_tokens"),
            (c["system_prefix_tokens"] < 0, "system_prefix_tokens is negative"),
            (~np.isfinite(c["think_s"]) | (c["think_s"] < 0), "think_s is negative or not finite"),
            (c["lora_rank"] < 0, "lora_rank is negative"),
            ((c["lora_rank"] > 0) & (c["adapter_id"] < 0), "lora_rank given without an adapter_id"),
        ]
        for bad, what in checks:
            if bad.any():
                i = int(np.argmax(bad))
                raise ConfigError(f"request {int(c['req_id'][i])} (row {i}): {what}")
        ids = c["req_id"]
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            uniq, counts = np.unique(ids, return_counts=True)
            if len(uniq) < len(ids):
                dup = int(uniq[np.argmax(counts > 1)])
                raise ConfigError(f"request id {dup} appears more than once; ids must be unique")
        for name in _OPTIONAL_IDS:
            if (c[name] < -1).any():
                i = int(np.argmax(c[name] < -1))
                raise ConfigError(f"request {int(c['req_id'][i])} (row {i}): {name} below -1")

    # -- sequence protocol ------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._cols["arrival_s"].shape[0])

    @overload
    def __getitem__(self, i: int) -> Request: ...

    @overload
    def __getitem__(self, i: slice) -> RequestStream: ...

    def __getitem__(self, i: int | slice) -> Request | RequestStream:
        """An int gives one ``Request``; a slice a new stream (ids kept)."""
        if isinstance(i, slice):
            return self._take(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"request index {i} out of range for stream of {n}")
        return self._request(i % n if i < 0 else i)

    def _request(self, i: int) -> Request:
        c = self._cols

        def opt(name: str) -> int | None:
            v = int(c[name][i])
            return None if v < 0 else v

        return Request(
            req_id=int(c["req_id"][i]),
            arrival_s=float(c["arrival_s"][i]),
            prompt_tokens=int(c["prompt_tokens"][i]),
            output_tokens=int(c["output_tokens"][i]),
            session_id=opt("session_id"),
            prefix_id=opt("prefix_id"),
            prefix_tokens=int(c["prefix_tokens"][i]),
            system_prefix_id=opt("system_prefix_id"),
            system_prefix_tokens=int(c["system_prefix_tokens"][i]),
            client_id=opt("client_id"),
            think_s=float(c["think_s"][i]),
            adapter_id=opt("adapter_id"),
            lora_rank=int(c["lora_rank"][i]),
        )

    def __iter__(self) -> Iterator[Request]:
        # Whole columns become Python lists once (ids: -1 -> None) and rows are built
        # positionally: ~5x faster than indexing numpy arrays per element.
        c = self._cols

        def ids(name: str) -> list[int | None]:
            return [None if v < 0 else v for v in c[name].tolist()]

        rows = zip(
            c["req_id"].tolist(),
            c["arrival_s"].tolist(),
            c["prompt_tokens"].tolist(),
            c["output_tokens"].tolist(),
            ids("session_id"),
            ids("prefix_id"),
            c["prefix_tokens"].tolist(),
            ids("system_prefix_id"),
            c["system_prefix_tokens"].tolist(),
            ids("client_id"),
            c["think_s"].tolist(),
            ids("adapter_id"),
            c["lora_rank"].tolist(),
            strict=True,
        )
        for row in rows:
            yield Request(*row)

    def __repr__(self) -> str:
        n = len(self)
        span = f", {self.duration_s:.3g} s" if n else ""
        return f"RequestStream({n} requests{span})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestStream):
            return NotImplemented
        return len(self) == len(other) and all(
            np.array_equal(self._cols[k], other._cols[k]) for k in self._cols
        )

    __hash__ = None  # type: ignore[assignment]

    # -- columns ----------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """A read-only view of one column (``req_id`` or any ``COLUMNS`` name)."""
        if name not in self._cols:
            raise ConfigError(f"RequestStream has no column {name!r}; known: {list(self._cols)}")
        view = self._cols[name].view()
        view.flags.writeable = False
        return view

    @property
    def req_id(self) -> np.ndarray:
        return self.column("req_id")

    @property
    def arrival_s(self) -> np.ndarray:
        return self.column("arrival_s")

    @property
    def prompt_tokens(self) -> np.ndarray:
        return self.column("prompt_tokens")

    @property
    def output_tokens(self) -> np.ndarray:
        return self.column("output_tokens")

    @property
    def session_id(self) -> np.ndarray:
        return self.column("session_id")

    @property
    def prefix_id(self) -> np.ndarray:
        return self.column("prefix_id")

    @property
    def prefix_tokens(self) -> np.ndarray:
        return self.column("prefix_tokens")

    @property
    def system_prefix_id(self) -> np.ndarray:
        return self.column("system_prefix_id")

    @property
    def system_prefix_tokens(self) -> np.ndarray:
        return self.column("system_prefix_tokens")

    @property
    def client_id(self) -> np.ndarray:
        return self.column("client_id")

    @property
    def think_s(self) -> np.ndarray:
        return self.column("think_s")

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self._cols.values())

    # -- summaries --------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (0 for fewer than two requests)."""
        a = self._cols["arrival_s"]
        return float(a.max() - a.min()) if len(a) > 1 else 0.0

    @property
    def rate_rps(self) -> float:
        """Mean arrival rate, (n-1)/duration: the maximum-likelihood Poisson rate."""
        d = self.duration_s
        return (len(self) - 1) / d if d > 0 else float("nan")

    @property
    def is_closed_loop(self) -> bool:
        """True when some request waits on a previous one of its client (``client_id``)."""
        return bool((self._cols["client_id"] >= 0).any())

    def is_sorted(self) -> bool:
        """True when arrivals are non-decreasing."""
        a = self._cols["arrival_s"]
        return bool(np.all(a[1:] >= a[:-1])) if len(a) > 1 else True

    def check_sorted(self) -> None:
        """Raise ``ConfigError`` naming the first request that arrives before its predecessor."""
        a = self._cols["arrival_s"]
        bad = a[1:] < a[:-1]
        if bad.any():
            i = int(np.argmax(bad)) + 1
            raise ConfigError(
                f"request stream not sorted: request {int(self._cols['req_id'][i])} (row {i}) "
                f"arrives at {a[i]:.6f} s, before the previous one at {a[i - 1]:.6f} s"
            )

    def summary(self) -> dict[str, float]:
        """Mean/median/p90 of the lengths and the arrival rate, in plain numbers."""
        p = self._cols["prompt_tokens"]
        o = self._cols["output_tokens"]
        out: dict[str, float] = {"num_requests": float(len(self)), "rate_rps": self.rate_rps}
        for name, arr in (("prompt", p), ("output", o)):
            if len(arr):
                out[f"{name}_mean"] = float(arr.mean())
                out[f"{name}_median"] = float(np.median(arr))
                out[f"{name}_p90"] = float(np.quantile(arr, 0.9))
        return out

    # -- transforms (each returns a new stream) ----------------------------------------
    def _take(self, index: Any) -> RequestStream:
        cols = {k: v[index] for k, v in self._cols.items()}
        ids = cols.pop("req_id")
        return RequestStream.from_columns(cols, req_id=ids, validate=False)

    def select(self, mask: np.ndarray) -> RequestStream:
        """The requests where boolean ``mask`` is true, in order, ids kept."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ConfigError(f"select: mask has shape {mask.shape}, expected ({len(self)},)")
        return self._take(mask)

    def sorted(self) -> RequestStream:
        """Stable sort by arrival time."""
        return self if self.is_sorted() else self._take(np.argsort(self._cols["arrival_s"], kind="stable"))

    def head(self, n: int) -> RequestStream:
        """The first ``n`` requests."""
        if n < 0:
            raise ConfigError(f"head(n) needs n >= 0, got {n}")
        return self._take(slice(0, n))

    def window(self, start_s: float, end_s: float) -> RequestStream:
        """Requests with ``start_s <= arrival_s < end_s`` (times unchanged)."""
        if end_s < start_s:
            raise ConfigError(f"window end {end_s} s is before start {start_s} s")
        a = self._cols["arrival_s"]
        return self._take((a >= start_s) & (a < end_s))

    def scale_time(self, factor: float) -> RequestStream:
        """Multiply arrival and think times by ``factor`` (0.5 = twice the request rate)."""
        if not np.isfinite(factor) or factor <= 0:
            raise ConfigError(f"time scale factor must be positive and finite, got {factor}")
        cols = {k: v.copy() for k, v in self._cols.items()}
        cols["arrival_s"] *= factor
        cols["think_s"] *= factor
        ids = cols.pop("req_id")
        return RequestStream.from_columns(cols, req_id=ids, validate=False)

    def shift_time(self, offset_s: float) -> RequestStream:
        """Subtract ``offset_s`` from every arrival (e.g. to start at zero)."""
        cols = {k: v.copy() for k, v in self._cols.items()}
        cols["arrival_s"] -= offset_s
        ids = cols.pop("req_id")
        return RequestStream.from_columns(cols, req_id=ids)

    def to_frame(self) -> pd.DataFrame:
        """A pandas DataFrame with ``req_id`` and every column."""
        return pd.DataFrame({"req_id": self._cols["req_id"], **{k: self._cols[k] for k in COLUMNS}})
