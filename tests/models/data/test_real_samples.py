"""`data prepare` end to end on the real Criteo and Avazu samples in ../shared/data."""

from __future__ import annotations

import csv
import filecmp
import json

import numpy as np
import pytest

from models.data import formats, open_split, prepare
from models.data.shards import split_sizes

# Measured C1..C26 cardinalities of the merged file (../shared/data/README.md). They count an
# empty value as one value; we map empty to the reserved "missing" row instead.
CRITEO_CARDINALITIES = [179, 388, 5611, 4103, 56, 8, 3212, 94, 3, 3024, 2099, 5370, 1735, 24,
                        2052, 4802, 9, 1157, 552, 4, 5118, 8, 13, 2563, 40, 1973]  # fmt: skip
CRITEO_HAS_EMPTY = [3, 4, 6, 12, 16, 19, 20, 21, 22, 24, 25, 26]  # C<k> with an empty value


@pytest.fixture(scope="module")
def criteo_file():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "criteo" / "criteo_labeled_merged_dedup.tsv"
    if not path.is_file():
        pytest.skip(f"real data sample not found at {path}")
    return path


@pytest.fixture(scope="module")
def avazu_file():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "avazu" / "avazu_train_head10k.csv"
    if not path.is_file():
        pytest.skip(f"real data sample not found at {path}")
    return path


@pytest.fixture(scope="module")
def criteo_prepared(criteo_file, tmp_path_factory):
    return prepare("criteo", criteo_file, tmp_path_factory.mktemp("c") / "out", min_count=1)


@pytest.fixture(scope="module")
def avazu_prepared(avazu_file, tmp_path_factory):
    return prepare("avazu", avazu_file, tmp_path_factory.mktemp("a") / "out", min_count=1)


def _check_splits(manifest, n_rows, label_rate):
    assert manifest["rows"] == {"read": n_rows, "kept": n_rows, "malformed": 0}
    assert manifest["malformed_rows"] == {}
    assert manifest["label_rate"] == pytest.approx(label_rate, abs=0.001)  # within 0.1 point
    positives = round(manifest["label_rate"] * n_rows)
    want = np.add(
        split_sizes(n_rows - positives, (0.8, 0.1, 0.1)), split_sizes(positives, (0.8, 0.1, 0.1))
    )
    got = [manifest["splits"][s]["rows"] for s in ("train", "val", "test")]
    assert got == want.tolist()
    assert abs(got[0] - 0.8 * n_rows) <= 2 and abs(got[1] - 0.1 * n_rows) <= 2
    for s in ("train", "val", "test"):
        assert manifest["splits"][s]["label_rate"] == pytest.approx(label_rate, abs=0.01)


def test_criteo_counts_and_split(criteo_prepared):
    m = json.loads((criteo_prepared / "manifest.json").read_text())
    _check_splits(m, 10181, 0.218)
    assert m["format"] == "criteo"
    assert m["dense_features"] == [f"I{i}" for i in range(1, 14)]
    assert m["sparse_features"] == [f"C{i}" for i in range(1, 27)]
    assert m["input"]["identity"] == "sha256" and len(m["input"]["sha256"]) == 64
    assert m["reserved_indices"] == {"0": "missing", "1": "out_of_vocabulary"}


def test_criteo_table_sizes_match_readme(criteo_prepared):
    m = json.loads((criteo_prepared / "manifest.json").read_text())
    want = [
        c - (1 if k + 1 in CRITEO_HAS_EMPTY else 0) + 2 for k, c in enumerate(CRITEO_CARDINALITIES)
    ]
    assert m["table_sizes"] == want


def test_criteo_arrays(criteo_prepared):
    total = 0
    for s in ("train", "val", "test"):
        sp = open_split(criteo_prepared, s)
        assert sp.dense.shape == (len(sp), 13) and sp.dense.dtype == np.float32
        assert sp.sparse.shape == (len(sp), 26) and sp.sparse.dtype == np.int32
        assert not sp.dense.flags.writeable
        assert (np.asarray(sp.sparse) < np.array(sp.manifest["table_sizes"])).all()
        assert (np.asarray(sp.sparse) >= 0).all()
        assert (np.asarray(sp.dense) >= 0).all()  # log(max(x,0)+1)
        assert set(np.unique(sp.label)) <= {0.0, 1.0}
        total += len(sp)
    assert total == 10181
    # min_count 1 over the whole file: no out-of-vocabulary value anywhere.
    train = open_split(criteo_prepared, "train")
    assert not (np.asarray(train.sparse) == 1).any()
    # I12 is empty in 7,877 of 10,181 rows (README) -> 0 after the transform.
    zero = sum(
        int((np.asarray(open_split(criteo_prepared, s).dense)[:, 11] == 0).sum())
        for s in ("train", "val", "test")
    )
    assert zero >= 7877


def test_criteo_deterministic_and_chunk_independent(criteo_file, criteo_prepared, tmp_path):
    a = prepare("criteo", criteo_file, tmp_path / "a", min_count=1, chunk_rows=1000)
    b = prepare("criteo", criteo_file, tmp_path / "b", min_count=1, chunk_rows=333)
    for other in (a, b):
        names = sorted(p.name for p in criteo_prepared.iterdir())
        assert names == sorted(p.name for p in other.iterdir())
        _, mismatch, errors = filecmp.cmpfiles(criteo_prepared, other, names, shallow=False)
        assert mismatch == [] and errors == []


def test_criteo_seed_changes_split(criteo_file, criteo_prepared, tmp_path):
    other = prepare("criteo", criteo_file, tmp_path / "s", min_count=1, seed=7)
    a = np.asarray(open_split(criteo_prepared, "val").sparse)
    b = np.asarray(open_split(other, "val").sparse)
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_criteo_min_count_and_oov(criteo_file, tmp_path):
    out = prepare("criteo", criteo_file, tmp_path / "m", min_count=2)
    m = json.loads((out / "manifest.json").read_text())
    assert all(s <= c + 2 for s, c in zip(m["table_sizes"], CRITEO_CARDINALITIES, strict=True))
    assert m["table_sizes"][2] < CRITEO_CARDINALITIES[2]  # many singletons in C3
    train = open_split(out, "train")
    assert (np.asarray(train.sparse)[:, 2] == 1).mean() > 0.1  # they go to OOV
    assert m["distinct_values_seen"][2] == CRITEO_CARDINALITIES[2] - 1


def test_criteo_csv_variant_matches_tsv_rows(tmp_path):
    from tests.conftest import SHARED_DATA

    csv_path = SHARED_DATA / "criteo" / "criteo_deepctr_sample200.csv"
    tsv_path = SHARED_DATA / "criteo" / "criteo_labeled_merged_dedup.tsv"
    if not csv_path.is_file() or not tsv_path.is_file():
        pytest.skip(f"real data samples not found under {SHARED_DATA}")

    def rows(path):
        fmt = formats.open_format("criteo", path, {})
        out = set()
        for c in fmt.chunks(5000):
            for y, d, k in zip(c.label, c.dense, c.keys, strict=True):
                out.add((float(y), d.tobytes(), k.tobytes()))
        return out

    from_csv, from_tsv = rows(csv_path), rows(tsv_path)
    # The merged file holds every row of the 200-row sample (19 among the first 10,000, the other
    # 181 appended), written as integers: parsed, the float-written CSV rows must be identical.
    assert len(from_csv) == 200
    assert from_csv <= from_tsv
    m = prepare("criteo", csv_path, tmp_path / "csv", min_count=1)
    assert json.loads((m / "manifest.json").read_text())["rows"]["kept"] == 200


def test_avazu_counts_and_split(avazu_prepared):
    m = json.loads((avazu_prepared / "manifest.json").read_text())
    _check_splits(m, 9999, 0.171)
    assert m["dense_features"] == ["const"]
    assert m["sparse_features"][:2] == ["hour_of_day", "weekday"]
    assert len(m["sparse_features"]) == 23
    assert (np.asarray(open_split(avazu_prepared, "train").dense) == 0).all()


def test_avazu_table_sizes_match_counted_cardinalities(avazu_file, avazu_prepared):
    with open(avazu_file, newline="") as fh:
        records = list(csv.DictReader(fh))
    columns = formats.AVAZU_HEADER[3:]
    want = [3, 3]  # a single hour (14102100): hour 0 and Tuesday, + 2 reserved rows each
    want += [len({r[c] for r in records} - {""}) + 2 for c in columns]
    m = json.loads((avazu_prepared / "manifest.json").read_text())
    assert m["table_sizes"] == want
    # hour 14102100 = 2014-10-21 00h, a Tuesday: every row has the same (only) value.
    sp = np.asarray(open_split(avazu_prepared, "train").sparse)
    assert (sp[:, :2] == 2).all()


def test_avazu_deterministic_and_chunk_independent(avazu_file, avazu_prepared, tmp_path):
    other = prepare("avazu", avazu_file, tmp_path / "b", min_count=1, chunk_rows=1000)
    names = sorted(p.name for p in avazu_prepared.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(avazu_prepared, other, names, shallow=False)
    assert mismatch == [] and errors == []


def test_hash_encoding(criteo_file, tmp_path):
    out = prepare("criteo", criteo_file, tmp_path / "h", encoding="hash", hash_rows=1000)
    m = json.loads((out / "manifest.json").read_text())
    assert m["table_sizes"] == [1000] * 26 and m["encoding"] == "hash"
    sp = np.asarray(open_split(out, "train").sparse)
    assert sp.max() < 1000 and not (sp == 1).any()
    assert len(np.unique(sp[:, 9])) > 500  # C10 (3,024 values) spreads over the buckets


def test_saved_vocabulary_encodes_new_rows(criteo_file, criteo_prepared):
    from models.data import open_vocabularies
    from models.data.fields import split_fields

    vocabs = open_vocabularies(criteo_prepared)
    m = json.loads((criteo_prepared / "manifest.json").read_text())
    assert [v.table_rows for v in vocabs] == m["table_sizes"]
    # Re-encoding the training file reproduces the stored indices (as a multiset of rows).
    fields, _, _ = split_fields(criteo_file.read_bytes(), "\t", 40)
    keys = fields.hash_columns(list(range(14, 40)))
    again = np.stack([v.encode(keys[:, f]) for f, v in enumerate(vocabs)], axis=1)
    stored = np.concatenate(
        [np.asarray(open_split(criteo_prepared, s).sparse) for s in ("train", "val", "test")]
    )
    assert sorted(map(bytes, again)) == sorted(map(bytes, stored))
    # The unlabeled test head (39 columns): 37-53% out-of-vocabulary on C3, C4, C12, C16, C21
    # against this vocabulary (../shared/data/README.md).
    test_head = criteo_file.parent / "criteo_kaggle_test_head10k_unlabeled.tsv"
    fields, wrong, _ = split_fields(test_head.read_bytes(), "\t", 39)
    assert fields.n == 10_000 and wrong == 0
    keys = fields.hash_columns(list(range(13, 39)))
    for c in (3, 4, 12, 16, 21):
        oov = (vocabs[c - 1].encode(keys[:, c - 1]) == 1).mean()
        assert 0.36 <= oov <= 0.54, (c, oov)
