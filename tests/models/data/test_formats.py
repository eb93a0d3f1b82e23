"""Raw-format parsing: keys, transforms, malformed rows, the KDD12 layout (fixture written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.data import formats, open_split, prepare
from models.data.formats import dense_transform, hash_strings, open_format


def test_key_hand_computed_and_missing():
    from models.data.fields import key64_reference

    # "a": h = 1 * 0x9E3779B97F4A7C15, then splitmix64_finaliser(h ^ 0x61), by hand in Python.
    mask = (1 << 64) - 1
    z = 0x9E3779B97F4A7C15 ^ 0x61
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    keys = hash_strings(["a", "", "ab"])
    assert int(keys[0]) == z == key64_reference(b"a")
    assert keys[1] == 0  # missing
    assert keys[2] not in (0, keys[0])


def test_key_matches_reference_for_all_lengths():
    from models.data.fields import key64_reference

    values = ["x" * n for n in range(1, 30)] + ["é", "68fd1e64", "a\x00", "a"]
    want = [key64_reference(v.encode()) for v in values]
    assert hash_strings(values).tolist() == want
    assert len(set(want)) == len(want)


def test_key_independent_of_chunk_width():
    # The same value in a chunk of short strings and in a chunk with a long one.
    assert hash_strings(["ab"])[0] == hash_strings(["ab", "a-much-longer-value"])[0]
    assert hash_strings(["é"])[0] == hash_strings(["é", "x"])[0]  # non-ASCII path


def test_dense_transform_hand_values():
    x = np.array([[0.0, -5.0, np.nan, 1.0, math.e - 1.0, 1382.0]])
    got = dense_transform(x)[0]
    want = [0.0, 0.0, 0.0, math.log(2.0), 1.0, math.log(1383.0)]
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32
    assert got.dtype == np.float32


def _criteo_line(label="0", dense=None, cats=None) -> str:
    dense = dense if dense is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *dense, *cats]) + "\n"


def test_criteo_malformed_rows_are_counted(tmp_path):
    path = tmp_path / "train.txt"
    good = [_criteo_line(str(i % 2)) for i in range(20)]
    bad = [
        _criteo_line()[:-1] + "\textra\n",  # 41 columns
        "\t".join(["1", "2"]) + "\n",  # 2 columns
        _criteo_line(dense=["x", *["1"] * 12]),  # non-numeric dense
        _criteo_line(dense=["inf", *["1"] * 12]),  # infinite dense
        _criteo_line(label="2"),  # label not 0/1
        _criteo_line(label=""),  # missing label
    ]
    path.write_text("".join(good[:10] + bad + good[10:]) + "\n")  # trailing blank line ignored
    out = prepare("criteo", path, tmp_path / "out", min_count=1)
    m = open_split(out, "train").manifest
    assert m["malformed_rows"] == {
        "bad_label": 2,
        "non_numeric_dense": 2,
        "wrong_column_count": 2,
    }
    assert m["rows"] == {"read": 26, "kept": 20, "malformed": 6}
    assert sum(m["splits"][s]["rows"] for s in ("train", "val", "test")) == 20


def test_criteo_values_parse_to_expected_arrays(tmp_path):
    path = tmp_path / "t.txt"
    dense = ["", "-1", "3", *["0"] * 10]
    cats = ["", *[f"{i:08x}" for i in range(1, 26)]]
    path.write_text(_criteo_line("1", dense, cats))
    fmt = open_format("criteo", path, {})
    (chunk,) = list(fmt.chunks(10))
    assert chunk.label.tolist() == [1.0]
    np.testing.assert_allclose(chunk.dense[0, :3], [0.0, 0.0, math.log(4.0)], rtol=1e-6)
    assert chunk.keys[0, 0] == 0 and (chunk.keys[0, 1:] != 0).all()


KDD_ROWS = [
    # Click, Impression, DisplayURL, AdID, AdvertiserID, Depth, Position, QueryID, KeywordID,
    # TitleID, DescriptionID, UserID
    ["0", "1", "u1", "a1", "v1", "2", "1", "q1", "k1", "t1", "d1", "100"],
    ["2", "3", "u2", "a2", "v1", "3", "2", "q2", "k2", "t2", "d2", "200"],
    ["1", "1", "u1", "a1", "v2", "2", "2", "q1", "k1", "t1", "d1", "300"],
    ["0", "2", "u3", "a3", "v3", "1", "1", "q3", "k3", "t3", "d3", "0"],
] * 5


@pytest.mark.parametrize("layout", ["plain", "with-profile-file", "joined-columns"])
def test_kdd12_fixture(tmp_path, layout):
    path = tmp_path / "training.txt"
    profile = {"100": ("1", "3"), "200": ("2", "5")}  # UserID 300 and 0 have no profile
    rows = KDD_ROWS
    if layout == "joined-columns":
        rows = [[*r, *profile.get(r[11], ("", ""))] for r in rows]
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    settings = {"min_count": 1}
    if layout == "with-profile-file":
        prof = tmp_path / "userid_profile.txt"
        prof.write_text("".join(f"{u}\t{g}\t{a}\n" for u, (g, a) in profile.items()))
        settings["profile"] = str(prof)
    out = prepare("kdd12", path, tmp_path / "out", **settings)
    m = open_split(out, "train").manifest
    assert m["dense_features"] == list(formats.KDD12_DENSE)
    assert m["sparse_features"] == list(formats.KDD12_SPARSE)
    assert m["rows"]["kept"] == 20
    assert m["label_rate"] == pytest.approx(0.5)  # Click > 0 in 2 of 4
    gender, age = m["table_sizes"][8], m["table_sizes"][9]
    if layout == "plain":
        assert (gender, age) == (2, 2)  # only the reserved rows: always missing
    else:
        assert (gender, age) == (4, 4)  # two values each + reserved
    assert m["table_sizes"][0] == 2 + 3  # three DisplayURLs
    # label = Click > 0, dense = log1p(Impression, Depth, Position)
    parts = [open_split(out, s) for s in ("train", "val", "test")]
    dense = np.concatenate([np.asarray(p.dense) for p in parts])
    label = np.concatenate([np.asarray(p.label) for p in parts])
    sparse = np.concatenate([np.asarray(p.sparse) for p in parts])
    want = {
        tuple(np.log1p([1.0, 2.0, 2.0]).astype(np.float32)),
        tuple(np.log1p([3.0, 3.0, 2.0]).astype(np.float32)),
    }
    assert {tuple(r) for r in dense[label == 1]} == want
    if layout != "plain":
        # UserID 300 and 0 rows are missing gender (index 0); others are not.
        assert (sparse[:, 8] == 0).sum() == 10


FLOAT_CASES = [
    "0", "7", "-1", "1382", "260.0", "260.00", "-3.0", "12.", ".5", "1.25", "-0.5", "1e3",
    "2E-2", "+4", " 3", "nan", "NaN", "inf", "-inf", "x", "-", ".", "1.2.3", "12a", "a12",
    "123456789012345", "1234567890123456789", "0007", "-0", "",
]  # fmt: skip


def _reference_float(text: str) -> tuple[float, bool]:
    if text == "":
        return math.nan, False
    try:
        v = float(text)
    except ValueError:
        return math.inf, True
    return v, math.isinf(v)


def test_vectorised_floats_match_python_float():
    from models.data.fields import split_fields

    blob = "".join(f"{v}\t{v}\n" for v in FLOAT_CASES).encode()
    fields, wrong, lines = split_fields(blob, "\t", 2)
    assert (wrong, lines, fields.n) == (0, len(FLOAT_CASES), len(FLOAT_CASES))
    values, bad = fields.float_columns([0, 1])
    for i, text in enumerate(FLOAT_CASES):
        want, want_bad = _reference_float(text)
        assert bool(bad[i, 0]) == want_bad, text
        if not want_bad:
            got = values[i, 0]
            assert (math.isnan(got) and math.isnan(want)) or got == want, (text, got, want)
    np.testing.assert_array_equal(values[:, 0], values[:, 1])


def test_vectorised_hash_matches_hash_strings():
    from models.data.fields import split_fields

    values = ["a", "", "ab", "68fd1e64", "é", "a much longer value than eight bytes", "0"]
    blob = "".join(f"{v},x\n" for v in values).encode()
    fields, _, _ = split_fields(blob, ",", 2)
    np.testing.assert_array_equal(fields.hash(0), hash_strings(values))


def test_line_ends_blank_lines_and_last_line():
    from models.data.fields import split_fields

    blob = b"1,a\r\n\r\n2,b\n\n3,c,extra\nbroken\n4,d"  # CRLF, blank lines, no final newline
    fields, wrong, lines = split_fields(blob, ",", 2)
    assert (fields.n, wrong, lines) == (3, 2, 7)
    assert fields.floats(0)[0].tolist() == [1.0, 2.0, 4.0]
    np.testing.assert_array_equal(fields.hash(1), hash_strings(["a", "b", "d"]))
