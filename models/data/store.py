"""Reading prepared data: the manifest, memory-mapped splits and a flat-memory batch iterator.

On-disk layout of a prepared folder (schema `pimrec.data/1`):
    manifest.json                       written last; its presence marks a complete folder
    {split}-{k:05d}.dense.npy           float32 [rows, n_dense]   (transformed dense features)
    {split}-{k:05d}.sparse.npy          int32   [rows, n_sparse]  (table-local indices; 0 missing,
                                                                   1 out-of-vocabulary)
    {split}-{k:05d}.label.npy           float32 [rows]            (0.0 / 1.0)
    vocabulary.keys.npy                 uint64 [sum of table rows - 2 per table] (vocab encoding
                                        only): the raw-value keys of indices 2, 3, ... per feature,
                                        feature f at manifest["vocabulary"]["offsets"][f:f+2]
for split in train, val, test and shard k = 0, 1, ... (at most `shard_rows` rows each).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pimrec.errors import PimrecError

DATA_SCHEMA = "pimrec.data/1"
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


class ShardedArray:
    """Several read-only memmaps seen as one array along axis 0 (nothing is copied until indexed).

    Supports len(), .shape, .dtype, integer / slice / integer-array indexing and np.asarray().
    """

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.offsets = np.cumsum([0, *(len(s) for s in shards)])
        self.dtype = shards[0].dtype
        self.shape = (int(self.offsets[-1]), *shards[0].shape[1:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the other axes
            rows = self[key[0]] if key else self[:]
            return rows[(slice(None), *key[1:])] if rows.ndim == self.ndim else rows[key[1:]]
        if isinstance(key, int | np.integer):
            key = int(key) + (len(self) if key < 0 else 0)
            k = int(np.searchsorted(self.offsets, key, side="right")) - 1
            return self.shards[k][key - self.offsets[k]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            parts = []
            for k, shard in enumerate(self.shards):
                lo, hi = self.offsets[k], self.offsets[k + 1]
                a, b = max(start, lo), min(stop, hi)
                if a < b:
                    parts.append(shard[a - lo : b - lo])
            if not parts:
                return np.empty((0, *self.shape[1:]), dtype=self.dtype)
            return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.where(idx < 0, idx + len(self), idx)
        out = np.empty((idx.size, *self.shape[1:]), dtype=self.dtype)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            out[sel] = self.shards[k][idx[sel] - self.offsets[k]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[:]
        return arr.astype(dtype) if dtype is not None else arr


@dataclass(frozen=True)
class SplitArrays:
    """One split of a prepared folder: dense [N, n_dense] float32, sparse [N, n_sparse] int32,
    label [N] float32, as read-only memmaps (or ShardedArray over several shards)."""

    dense: Any
    sparse: Any
    label: Any
    manifest: dict
    split: str
    shard_rows: tuple[int, ...]  # rows per shard, in order

    def __len__(self) -> int:
        return len(self.label)

    def shard(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k-th shard's (dense, sparse, label) memmaps."""
        pick = (lambda a: a.shards[k]) if isinstance(self.label, ShardedArray) else (lambda a: a)
        return pick(self.dense), pick(self.sparse), pick(self.label)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a complete prepared folder, or PimrecError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise PimrecError(
            "not a prepared data folder (no manifest.json)",
            file=folder,
            field="manifest",
            expected="the output folder of 'pimrec data prepare'",
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PimrecError(f"unreadable manifest: {exc}", file=path) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != DATA_SCHEMA:
        raise PimrecError(
            "unknown manifest schema", file=path, field="schema", expected=DATA_SCHEMA
        )
    return manifest


def open_vocabularies(folder: str | Path) -> list[Any]:
    """The saved vocabularies of a prepared folder (vocab encoding), one per sparse feature,
    each with `encode(keys) -> indices` for keys from `formats.hash_strings` or raw fields."""
    from models.data.vocab import Vocabulary

    folder = Path(folder)
    manifest = read_manifest(folder)
    info = manifest.get("vocabulary")
    if not info:
        raise PimrecError(
            "no saved vocabulary (prepared with hashing or from synthetic data)",
            file=folder,
            field="vocabulary",
        )
    keys = np.load(folder / info["keys_file"], mmap_mode="r")
    off = info["offsets"]
    return [
        Vocabulary.from_ranked(np.array(keys[off[f] : off[f + 1]])) for f in range(len(off) - 1)
    ]


def open_split(folder: str | Path, split: str) -> SplitArrays:
    """Memory-map one split (`train`, `val` or `test`) of a prepared folder, read-only."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if split not in SPLITS:
        raise PimrecError(f"unknown split {split!r}", field="split", expected="train, val or test")
    info = manifest["splits"][split]
    arrays: dict[str, list[np.ndarray]] = {"dense": [], "sparse": [], "label": []}
    for shard in info["shards"]:
        for kind in arrays:
            path = folder / shard[kind]
            try:
                arrays[kind].append(np.load(path, mmap_mode="r"))
            except (OSError, ValueError) as exc:
                raise PimrecError(f"unreadable shard: {exc}", file=path) from None
    if not info["shards"]:  # an empty split: zero-row arrays of the right width
        nd, ns = len(manifest["dense_features"]), len(manifest["sparse_features"])
        arrays = {
            "dense": [np.zeros((0, nd), np.float32)],
            "sparse": [np.zeros((0, ns), np.int32)],
            "label": [np.zeros(0, np.float32)],
        }
    joined = {k: v[0] if len(v) == 1 else ShardedArray(v) for k, v in arrays.items()}
    return SplitArrays(
        dense=joined["dense"],
        sparse=joined["sparse"],
        label=joined["label"],
        manifest=manifest,
        split=split,
        shard_rows=tuple(len(a) for a in arrays["label"]),
    )


def iter_batches(
    split: SplitArrays,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    block_rows: int = 1 << 16,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (dense, sparse, label) numpy batches covering the split once.

    Without shuffle: file order. With shuffle: each shard is cut into contiguous blocks of
    `block_rows` rows; the blocks are visited in a random order and the rows inside each block
    are permuted, so memory stays at about one block plus one batch whatever the split size.
    The order depends only on `seed` (and `block_rows`). Every batch is a C-contiguous,
    writable array that the caller may keep or hand to torch.from_numpy.
    """
    if batch_size < 1:
        raise PimrecError("batch size must be at least 1", field="batch_size")
    blocks = []
    for k, n in enumerate(split.shard_rows):
        for lo in range(0, n, block_rows):
            blocks.append((k, lo, min(lo + block_rows, n)))
    rng = np.random.default_rng(seed)
    if shuffle:
        blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_rows = 0
    for k, lo, hi in blocks:
        d, s, y = split.shard(k)
        d, s, y = d[lo:hi], s[lo:hi], y[lo:hi]
        if shuffle:
            perm = rng.permutation(hi - lo)
            d, s, y = d[perm], s[perm], y[perm]
        start = 0
        if pending_rows:  # complete the batch left over from the previous block
            take = min(batch_size - pending_rows, hi - lo)
            pending.append((d[:take], s[:take], y[:take]))
            pending_rows += take
            start = take
            if pending_rows == batch_size:
                yield tuple(np.concatenate(p) for p in zip(*pending, strict=True))  # type: ignore[misc]
                pending, pending_rows = [], 0
        n = hi - lo
        while start + batch_size <= n:
            stop = start + batch_size
            if shuffle:  # rows of a private, permuted copy of the block
                yield d[start:stop], s[start:stop], y[start:stop]
            else:  # fresh writable arrays, not views of the read-only memmaps
                yield np.array(d[start:stop]), np.array(s[start:stop]), np.array(y[start:stop])
            start = stop
        if start < n:
            pending.append((d[start:], s[start:], y[start:]))
            pending_rows += n - start
    if pending_rows and not drop_last:
        yield tuple(np.concatenate(p) for p in zip(*pending, strict=True))  # type: ignore[misc]
