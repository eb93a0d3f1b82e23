"""The exact stratified split and the writer of the `.npy` shards of one split.

The split: within each class (label 0 / 1) the rows, in file order, take the entries of a
shuffled list holding round(n_c * ratio) ids of each split (largest remainders), drawn from
`numpy.random.default_rng([seed, class])`. So the split sizes are exact, the label rate of each
split matches the file's up to rounding, and the result does not depend on the chunk size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def split_sizes(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Rows per split for `n` rows: floors of n * ratio, the remainder to the largest
    fractional parts (ties to the earlier split). Sums to n exactly."""
    raw = [n * r for r in ratios]
    sizes = [math.floor(x) for x in raw]
    rest = n - sum(sizes)
    order = sorted(range(3), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[:rest]:
        sizes[i] += 1
    return sizes


def stratified_assignment(
    label_counts: np.ndarray, ratios: tuple[float, float, float], seed: int
) -> list[np.ndarray]:
    """Per class, a shuffled int8 array of split ids (0 train, 1 val, 2 test), one per row of
    that class in file order."""
    out = []
    for cls in (0, 1):
        n = int(label_counts[cls])
        ids = np.repeat(np.arange(3, dtype=np.int8), split_sizes(n, ratios))
        np.random.default_rng([seed, cls]).shuffle(ids)
        out.append(ids)
    return out


class ShardWriter:
    """Preallocated `.npy` shards of one split, filled in order. Each write maps the shard,
    copies the rows in and unmaps, so written pages never pile up in this process."""

    KINDS = ("dense", "sparse", "label")

    def __init__(
        self, folder: Path, split: str, rows: int, n_dense: int, n_sparse: int, shard_rows: int
    ) -> None:
        from numpy.lib.format import open_memmap

        self.folder = folder
        self.shards: list[dict[str, Any]] = []
        for k, lo in enumerate(range(0, rows, shard_rows)):
            n = min(shard_rows, rows - lo)
            names = {kind: f"{split}-{k:05d}.{kind}.npy" for kind in self.KINDS}
            self.shards.append({**names, "rows": n})
            for kind, dtype, shape in (
                ("dense", np.float32, (n, n_dense)),
                ("sparse", np.int32, (n, n_sparse)),
                ("label", np.float32, (n,)),
            ):
                arr = open_memmap(folder / names[kind], "w+", dtype, shape)
                del arr  # header written, file sized; filled by write()
        self.shard_rows = shard_rows
        self.cursor = 0

    def write(self, dense: np.ndarray, sparse: np.ndarray, label: np.ndarray) -> None:
        done = 0
        while done < len(label):
            k, off = divmod(self.cursor, self.shard_rows)
            shard = self.shards[k]
            take = min(len(label) - done, shard["rows"] - off)
            for kind, src in zip(self.KINDS, (dense, sparse, label), strict=True):
                dst = np.load(self.folder / shard[kind], mmap_mode="r+")
                dst[off : off + take] = src[done : done + take]
                del dst  # unmapped; the kernel writes the pages back
            done += take
            self.cursor += take

    def close(self) -> None:
        pass
