"""Paged KV cache of one engine: a pool of fixed-size blocks plus an LRU prefix cache.

Each block holds ``block_size`` tokens of K and V for every layer of the engine. A
sequence holding ``c`` computed tokens needs ``ceil(c / block_size)`` blocks. With prefix
caching (vLLM's automatic prefix caching) a *full* block is identified by the hash of its
content (``Request.block_hashes``): blocks of a finished prefill are registered under their
hash, stay resident while referenced, and when no sequence references them they become
*evictable* (still valid, reclaimed least-recently-used first when a new block is needed).
A new request whose leading block hashes are resident reuses them and skips their prefill,
so the hit rate emerges from the workload's shared content.

Counting invariant: ``free + len(evictable) + in_use == num_blocks`` where ``in_use`` counts
blocks referenced by running sequences (a shared block once).
"""

from __future__ import annotations

from collections import OrderedDict

from fleetsim.hardware.errors import ConfigError


class KVCache:
    """Block accounting for one engine (counts, plus hashes when prefix caching is on)."""

    __slots__ = ("num_blocks", "block_size", "prefix_caching", "free", "refs", "evictable",
                 "hit_tokens", "query_tokens")

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = False) -> None:
        if num_blocks < 1:
            raise ConfigError(f"KV cache needs at least one block, got {num_blocks}")
        if block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        self.prefix_caching = prefix_caching
        self.free = self.num_blocks
        self.refs: dict[int, int] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()
        self.hit_tokens = 0
        self.query_tokens = 0

    # -- counts ---------------------------------------------------------------------------
    def available(self) -> int:
        """Blocks a new allocation can take: free ones plus evictable cached ones."""
        return self.free + len(self.evictable)

    def used(self) -> int:
        """Blocks referenced by running sequences."""
        return self.num_blocks - self.free - len(self.evictable)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # -- plain allocation -------------------------------------------------------------------
    def allocate(self, n: int) -> None:
        """Take ``n`` blocks, evicting least-recently-used cached blocks when none is free."""
        if n <= 0:
            return
        if n > self.free + len(self.evictable):
            raise RuntimeError("KV allocation beyond capacity (scheduler bug)")
        take = min(n, self.free)
        self.free -= take
        for _ in range(n - take):
            self.evictable.popitem(last=False)

    def release(self, n: int) -> None:
        """Return ``n`` unhashed blocks to the free pool."""
        self.free += n

    # -- prefix cache ---------------------------------------------------------------------
    def match(self, hashes: tuple[int, ...]) -> int:
        """Number of leading blocks of ``hashes`` resident in the cache."""
        if not self.prefix_caching:
            return 0
        n = 0
        for h in hashes:
            if h in self.refs or h in self.evictable:
                n += 1
            else:
                break
        return n

    def acquire(self, hashes: tuple[int, ...]) -> None:
        """Reference resident blocks ``hashes`` (a prefix hit): evictable ones become in use."""
        for h in hashes:
            r = self.refs.get(h)
            if r is None:
                del self.evictable[h]
                self.refs[h] = 1
            else:
                self.refs[h] = r + 1

    def register(self, hashes: tuple[int, ...]) -> int:
        """Turn freshly filled own blocks with content ``hashes`` into cached blocks held by
        the caller. A hash already resident is shared instead and the duplicate block freed.
        Returns how many own blocks became hashed (the caller's own count drops by len)."""
        for h in hashes:
            r = self.refs.get(h)
            if r is not None:
                self.refs[h] = r + 1
                self.free += 1
            elif h in self.evictable:
                del self.evictable[h]
                self.refs[h] = 1
                self.free += 1
            else:
                self.refs[h] = 1
        return len(hashes)

    def unref(self, hashes: list[int]) -> None:
        """Drop one reference to each of ``hashes``; unreferenced blocks become evictable
        (most recently used last, so the tail of a sequence is evicted first)."""
        for h in reversed(hashes):
            r = self.refs[h] - 1
            if r:
                self.refs[h] = r
            else:
                del self.refs[h]
                self.evictable[h] = None

    def cache_tail(self, hashes: tuple[int, ...]) -> int:
        """Register own blocks of a finished sequence straight as evictable cached content;
        duplicates of resident blocks are freed. Returns the number of blocks consumed."""
        for h in hashes:
            if h in self.refs or h in self.evictable:
                self.free += 1
            else:
                self.evictable[h] = None
        return len(hashes)
