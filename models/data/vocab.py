"""Categorical keys -> table indices: a streaming counter, frequency vocabularies and hashing.

Index 0 is reserved for a missing value and index 1 for out-of-vocabulary (OOV) values, in every
table; real values start at 2. A vocabulary orders its values by count (descending, ties by key),
so frequent values get small indices. Counting keeps 16 bytes per distinct value (uint64 key +
int64 count), whatever the number of rows.
"""

from __future__ import annotations

import numpy as np

MISSING_INDEX = 0
OOV_INDEX = 1
RESERVED_ROWS = 2


class KeyCounter:
    """Counts of non-zero uint64 keys, merged chunk by chunk (amortised: pending chunk counts
    are merged once they outgrow the merged table)."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.uint64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, keys: np.ndarray) -> None:
        keys = keys[keys != 0]
        if keys.size == 0:
            return
        uniq, counts = np.unique(keys, return_counts=True)
        self._pending.append((uniq, counts.astype(np.int64)))
        self._pending_size += uniq.size
        if self._pending_size > max(self._keys.size, 1 << 18):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self._keys = keys[start]
        self._counts = np.add.reduceat(counts, start) if keys.size else counts
        self._pending = []
        self._pending_size = 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct keys, their counts)."""
        self._merge()
        return self._keys, self._counts


class Vocabulary:
    """Frequency vocabulary of one feature: keys seen at least `min_count` times, at most
    `max_rows - 2` of them (the most frequent) when `max_rows` is set."""

    def __init__(
        self, keys: np.ndarray, counts: np.ndarray, min_count: int, max_rows: int | None
    ) -> None:
        keep = counts >= min_count
        keys, counts = keys[keep], counts[keep]
        order = np.lexsort((keys, -counts))  # count descending, then key ascending
        if max_rows is not None:
            order = order[: max(max_rows - RESERVED_ROWS, 0)]
        self._set(keys[order])
        self.distinct_seen = int(keep.size)

    def _set(self, ranked: np.ndarray) -> None:
        self.ranked_keys = ranked  # key of index 2, 3, ...
        by_key = np.argsort(ranked, kind="stable")
        self.sorted_keys = ranked[by_key]
        self.sorted_index = (by_key + RESERVED_ROWS).astype(np.int32)
        self.table_rows = int(ranked.size + RESERVED_ROWS)

    @classmethod
    def from_ranked(cls, ranked_keys: np.ndarray) -> Vocabulary:
        """The vocabulary whose index 2 + i holds `ranked_keys[i]` (as saved by `prepare`)."""
        vocab = cls.__new__(cls)
        vocab._set(np.asarray(ranked_keys, dtype=np.uint64))
        vocab.distinct_seen = int(vocab.ranked_keys.size)
        return vocab

    def encode(self, keys: np.ndarray) -> np.ndarray:
        """int32 indices: 0 missing, 1 OOV, 2.. in-vocabulary."""
        out = np.full(keys.shape, OOV_INDEX, dtype=np.int32)
        if self.sorted_keys.size:
            pos = np.searchsorted(self.sorted_keys, keys)
            np.minimum(pos, self.sorted_keys.size - 1, out=pos)
            found = self.sorted_keys[pos] == keys
            out[found] = self.sorted_index[pos[found]]
        out[keys == 0] = MISSING_INDEX
        return out


class Hasher:
    """Hashing into a fixed table of `table_rows` rows (2 reserved: 0 missing, 1 unused)."""

    def __init__(self, table_rows: int) -> None:
        self.table_rows = int(table_rows)
        self._buckets = np.uint64(table_rows - RESERVED_ROWS)

    def encode(self, keys: np.ndarray) -> np.ndarray:
        # Mix the key once more (splitmix64 finaliser) before taking it modulo the table rows.
        z = keys.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        out = (z % self._buckets).astype(np.int32) + RESERVED_ROWS
        out[keys == 0] = MISSING_INDEX
        return out
