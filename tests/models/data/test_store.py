"""open_split, ShardedArray and iter_batches."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import iter_batches, open_split, open_vocabularies, prepare
from models.data.store import ShardedArray
from pimrec.errors import PimrecError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    one = prepare("synthetic", None, root / "one", rows=5000, seed=5)
    many = prepare("synthetic", None, root / "many", rows=5000, seed=5, shard_rows=700)
    return one, many


def _rows(dense, sparse, label):
    """Each row as bytes, to compare multisets of rows."""
    both = np.concatenate([dense.view(np.int32), sparse, label.view(np.int32)[:, None]], axis=1)
    return sorted(r.tobytes() for r in both)


def test_sharded_split_equals_single_file(folders):
    one, many = folders
    a, b = open_split(one, "train"), open_split(many, "train")
    assert isinstance(b.label, ShardedArray) and len(b.shard_rows) == 6
    assert b.shard_rows == (700,) * 5 + (len(a) - 3500,)
    assert b.dense.shape == a.dense.shape and b.sparse.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(b.sparse), a.sparse)
    np.testing.assert_array_equal(b.dense[650:1500], a.dense[650:1500])  # across shards
    np.testing.assert_array_equal(b.label[::7], a.label[::7])
    idx = np.array([0, 699, 700, 3999, -1, 1401])
    np.testing.assert_array_equal(b.sparse[idx], a.sparse[idx])
    assert b.label[-1] == a.label[-1] and b.dense[701].tolist() == a.dense[701].tolist()
    mask = np.asarray(a.label) == 1
    np.testing.assert_array_equal(b.dense[mask], a.dense[mask])
    assert b.dense[5000:5000].shape == (0, 13)
    np.testing.assert_array_equal(b.sparse[690:710, 3], a.sparse[690:710, 3])
    assert b.sparse[701, 2] == a.sparse[701, 2]


def test_memmaps_are_read_only(folders):
    sp = open_split(folders[0], "val")
    assert isinstance(sp.sparse, np.memmap) and not sp.sparse.flags.writeable
    with pytest.raises(ValueError):
        sp.sparse[0, 0] = 3


def test_in_order_batches(folders):
    for folder in folders:
        sp = open_split(folder, "train")
        batches = list(iter_batches(sp, 512, shuffle=False, seed=0))
        assert [len(y) for *_, y in batches] == [512] * 7 + [len(sp) - 7 * 512]
        dense, sparse, label = (np.concatenate(x) for x in zip(*batches, strict=True))
        np.testing.assert_array_equal(sparse, np.asarray(sp.sparse))
        np.testing.assert_array_equal(dense, np.asarray(sp.dense))
        assert all(b[1].flags.c_contiguous and b[1].dtype == np.int32 for b in batches)
        assert all(b[0].flags.writeable and not isinstance(b[0], np.memmap) for b in batches)
        dropped = list(iter_batches(sp, 512, shuffle=False, seed=0, drop_last=True))
        assert [len(y) for *_, y in dropped] == [512] * 7


@pytest.mark.parametrize("block_rows", [300, 1 << 16])
def test_shuffled_batches_are_a_permutation(folders, block_rows):
    for folder in folders:
        sp = open_split(folder, "train")
        batches = list(iter_batches(sp, 256, shuffle=True, seed=1, block_rows=block_rows))
        assert sum(len(y) for *_, y in batches) == len(sp)
        assert all(len(y) == 256 for *_, y in batches[:-1])
        got = [np.concatenate(x) for x in zip(*batches, strict=True)]
        assert _rows(*got) == _rows(
            np.asarray(sp.dense), np.asarray(sp.sparse), np.asarray(sp.label)
        )
        assert not np.array_equal(got[1], np.asarray(sp.sparse))  # actually shuffled
        again = [
            np.concatenate(x)
            for x in zip(
                *iter_batches(sp, 256, shuffle=True, seed=1, block_rows=block_rows), strict=True
            )
        ]
        np.testing.assert_array_equal(again[1], got[1])  # same seed, same order
        other = next(iter_batches(sp, 256, shuffle=True, seed=2, block_rows=block_rows))
        assert not np.array_equal(other[1], got[1][:256])


def test_shuffle_order_independent_of_shard_files(folders):
    # Blocks are shard-local, so the order depends on the layout; the rows never do.
    one, many = (open_split(f, "test") for f in folders)
    a = [np.concatenate(x) for x in zip(*iter_batches(one, 100, shuffle=True, seed=0), strict=True)]
    b = [
        np.concatenate(x) for x in zip(*iter_batches(many, 100, shuffle=True, seed=0), strict=True)
    ]
    assert _rows(*a) == _rows(*b)


def test_open_split_errors(folders, tmp_path):
    with pytest.raises(PimrecError, match="split: unknown split 'dev'"):
        open_split(folders[0], "dev")
    with pytest.raises(PimrecError, match="no manifest.json"):
        open_split(tmp_path, "train")
    with pytest.raises(PimrecError, match="vocabulary: no saved vocabulary"):
        open_vocabularies(folders[0])
    with pytest.raises(PimrecError, match="batch_size"):
        next(iter_batches(open_split(folders[0], "val"), 0, shuffle=False, seed=0))


def test_empty_test_split(tmp_path):
    out = prepare("synthetic", None, tmp_path / "e", rows=200, split=(0.9, 0.1, 0.0))
    sp = open_split(out, "test")
    assert len(sp) == 0 and sp.sparse.shape == (0, 26)
    assert list(iter_batches(sp, 8, shuffle=True, seed=0)) == []


def test_show_command(cli, folders):
    r = cli("data", "show", folders[0])
    assert r.status == 0 and "train: 4,000 rows" in r.out and "Bayes-optimal log loss" in r.out
