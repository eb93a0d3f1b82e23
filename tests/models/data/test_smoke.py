"""The public API end to end on a small synthetic set."""

from __future__ import annotations

import numpy as np

from models.data import iter_batches, open_split, prepare


def test_synthetic_prepare_open_iterate(tmp_path):
    out = prepare("synthetic", None, tmp_path / "syn", rows=3000, seed=1)
    train = open_split(out, "train")
    assert len(train) == train.manifest["splits"]["train"]["rows"]
    assert train.dense.dtype == np.float32 and train.sparse.dtype == np.int32
    rows = sum(len(y) for _, _, y in iter_batches(train, 512, shuffle=True, seed=0))
    assert rows == len(train)
