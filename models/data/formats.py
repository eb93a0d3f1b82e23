"""Raw CTR formats (Criteo, Avazu, KDD12): read a file in chunks of lines and parse each chunk
into labels, transformed dense features and 64-bit categorical keys.

Transforms (search_space.md "Data conventions"): dense x -> log(max(x, 0) + 1), missing -> 0.
Categorical values become stable 64-bit keys (`fields.key64_reference` of the value's bytes,
the same on every machine and run); key 0 means missing. `models.data.vocab` turns keys into table indices.

Malformed rows (wrong column count, a label that is not 0/1, a non-numeric dense value, a bad
Avazu hour) are counted per reason and left out; they never stop the run.
"""

from __future__ import annotations

import datetime as _dt
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data.fields import Fields, split_fields
from pimrec.errors import PimrecError

FORMATS = ("criteo", "avazu", "kdd12")

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
    "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
    "C14,C15,C16,C17,C18,C19,C20,C21"
).split(",")
# `hour` (YYMMDDHH) is split into hour-of-day and weekday: 22 raw categorical columns -> 23.
AVAZU_SPARSE = ("hour_of_day", "weekday", *AVAZU_HEADER[3:])
AVAZU_DENSE = ("const",)  # one constant dense feature (always 0.0), per search_space.md
KDD12_COLUMNS = (
    "Click,Impression,DisplayURL,AdID,AdvertiserID,Depth,Position,QueryID,KeywordID,"
    "TitleID,DescriptionID,UserID"
).split(",")
KDD12_DENSE = ("Impression", "Depth", "Position")
KDD12_SPARSE = (
    "DisplayURL",
    "AdID",
    "AdvertiserID",
    "QueryID",
    "KeywordID",
    "TitleID",
    "DescriptionID",
    "UserID",
    "Gender",
    "Age",
)


@dataclass
class ParsedChunk:
    """The well-formed rows of one chunk. dense is already transformed; keys are 0 for missing.

    For already-indexed sources (synthetic data) `sparse` holds table indices and `keys` is None;
    `prob` is the teacher's click probability when known.
    """

    label: np.ndarray  # float32 [n], 0/1
    dense: np.ndarray  # float32 [n, n_dense]
    keys: np.ndarray | None = None  # uint64 [n, n_sparse]
    sparse: np.ndarray | None = None  # int32 [n, n_sparse]
    prob: np.ndarray | None = None  # float64 [n]
    malformed: Counter = field(default_factory=Counter)
    bytes_read: int = 0

    def __len__(self) -> int:
        return int(self.label.shape[0])


def hash_strings(values: list[str]) -> np.ndarray:
    """Stable 64-bit keys of strings (of their UTF-8 bytes; `fields.key64_reference`), the same
    as the keys of the raw fields; '' -> 0 (missing); never 0 otherwise."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    encoded = [v.encode("utf-8", "replace") for v in values]
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(encoded) + bytes(64), dtype=np.uint8)
    starts = np.cumsum(lens) - lens
    return Fields(buf, starts[:, None], lens[:, None]).hash(0)


def dense_transform(x: np.ndarray) -> np.ndarray:
    """log(max(x, 0) + 1) with NaN (missing) -> 0, as float32."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


class RawFormat:
    """One raw format: delimiter, header handling and the column roles."""

    name = ""
    dense_features: tuple[str, ...] = ()
    sparse_features: tuple[str, ...] = ()
    notes = ""  # how the raw columns became features, for the manifest

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        self.settings = settings
        self.delimiter = "\t"
        self.n_columns = 0
        self.header_lines = 0

    def open_chunks(self, chunk_rows: int) -> Iterator[bytes]:
        """Chunks of at most `chunk_rows` raw lines as bytes (header skipped)."""
        with open(self.path, "rb") as fh:
            if fh.read(3) != b"\xef\xbb\xbf":  # skip a UTF-8 byte-order mark
                fh.seek(0)
            for _ in range(self.header_lines):
                fh.readline()
            while True:
                lines = list(itertools.islice(fh, chunk_rows))
                if not lines:
                    return
                yield b"".join(lines)

    def chunks(self, chunk_rows: int) -> Iterator[ParsedChunk]:
        for blob in self.open_chunks(chunk_rows):
            fields, wrong, _ = split_fields(blob, self.delimiter, self.n_columns)
            bad: Counter = Counter()
            if wrong:
                bad["wrong_column_count"] += wrong
            chunk = self.parse(fields, fields.n, bad)
            chunk.malformed = bad
            chunk.bytes_read = len(blob)
            yield chunk

    def parse(self, cols: Fields, n: int, bad: Counter) -> ParsedChunk:  # pragma: no cover
        """Parse the `n` well-formed rows of a chunk."""
        raise NotImplementedError

    # Shared by the formats: label, dense and sparse columns by position.
    def _assemble(
        self,
        cols: Fields,
        n: int,
        bad: Counter,
        label_col: int,
        dense_cols: list[int],
        sparse_parts: list[int | np.ndarray],
        *,
        label_from_count: bool = False,
        extra_ok: np.ndarray | None = None,
        extra_reason: str = "",
    ) -> ParsedChunk:
        """Parse label/dense columns by position; `sparse_parts` are column positions to hash or
        precomputed key arrays (one per row), in feature order."""
        n_sparse = len(self.sparse_features)
        if n == 0:
            return ParsedChunk(
                np.zeros(0, np.float32),
                np.zeros((0, len(self.dense_features)), np.float32),
                keys=np.zeros((0, n_sparse), np.uint64),
            )
        label, label_bad = cols.floats(label_col)
        if label_from_count:
            label_bad |= ~(label >= 0) | (label != np.floor(label))
            label = (label > 0).astype(np.float64)
        else:
            label_bad |= ~((label == 0) | (label == 1))
        ok = ~label_bad
        bad["bad_label"] += int(label_bad.sum())
        dense = np.zeros((n, len(self.dense_features)), dtype=np.float64)
        dense_bad = np.zeros(n, dtype=bool)
        if dense_cols:
            dense[:, : len(dense_cols)], b = cols.float_columns(dense_cols)
            dense_bad = b.any(axis=1)
        bad["non_numeric_dense"] += int((dense_bad & ok).sum())
        ok &= ~dense_bad
        if extra_ok is not None:
            bad[extra_reason] += int((~extra_ok & ok).sum())
            ok &= extra_ok
        keys = np.zeros((n, n_sparse), dtype=np.uint64)
        raw = [k for k, part in enumerate(sparse_parts) if isinstance(part, int)]
        if raw:
            keys[:, raw] = cols.hash_columns([int(sparse_parts[k]) for k in raw])
        for k, part in enumerate(sparse_parts):
            if not isinstance(part, int):
                keys[:, k] = part
        dense[~np.isfinite(dense)] = np.nan
        return ParsedChunk(label[ok].astype(np.float32), dense_transform(dense[ok]), keys=keys[ok])


class CriteoFormat(RawFormat):
    """Kaggle `train.txt` (tab-separated label, I1..I13, C1..C26) or the CSV variant with a
    `label,I1,...,C26` header (integers may be written as floats)."""

    name = "criteo"
    dense_features = CRITEO_DENSE
    sparse_features = CRITEO_SPARSE
    notes = "label, I1..I13 dense, C1..C26 categorical; tab-separated or CSV with a header"

    def __init__(self, path: Path, settings: dict) -> None:
        super().__init__(path, settings)
        self.n_columns = 40
        first = _first_line(path)
        if first.startswith("label,"):
            header = first.rstrip("\r\n").split(",")
            expected = ["label", *CRITEO_DENSE, *CRITEO_SPARSE]
            if header != expected:
                raise PimrecError(
                    f"CSV header has {len(header)} columns starting {header[:3]}",
                    file=path,
                    field="header",
                    expected="label,I1..I13,C1..C26",
                )
            self.delimiter = ","
            self.header_lines = 1

    def parse(self, cols: Fields, n: int, bad: Counter) -> ParsedChunk:
        return self._assemble(cols, n, bad, 0, list(range(1, 14)), [*range(14, 40)])


class AvazuFormat(RawFormat):
    """Kaggle Avazu CSV with its header; label `click`; `hour` (YYMMDDHH) split into
    hour_of_day and weekday; every other column except `id` is categorical; one constant
    dense feature (0.0)."""

    name = "avazu"
    dense_features = AVAZU_DENSE
    sparse_features = AVAZU_SPARSE
    notes = (
        "label = click; id dropped; hour (YYMMDDHH) split into hour_of_day (0-23) and weekday "
        "(0 = Monday); the other 21 columns categorical as-is; one constant dense feature "
        "'const' = 0.0"
    )

    def __init__(self, path: Path, settings: dict) -> None:
        super().__init__(path, settings)
        header = _first_line(path).rstrip("\r\n").split(",")
        if header != AVAZU_HEADER:
            missing = [c for c in AVAZU_HEADER if c not in header]
            shown = missing[:4] + ([f"... {len(missing) - 4} more"] if len(missing) > 4 else [])
            detail = f"missing columns {shown}" if missing else f"columns {header[:4]}..."
            raise PimrecError(
                f"not an Avazu header: {detail}",
                file=path,
                field="header",
                expected="id,click,hour,C1,banner_pos,...,C21 (24 columns)",
            )
        self.delimiter = ","
        self.n_columns = len(AVAZU_HEADER)
        self.header_lines = 1
        self._weekday_cache: dict[int, int] = {}

    def parse(self, cols: Fields, n: int, bad: Counter) -> ParsedChunk:
        if n == 0:
            return self._assemble(cols, n, bad, 1, [], [])
        hours, hour_bad = cols.floats(2)
        hour_bad = hour_bad | ~np.isfinite(hours) | (hours != np.floor(hours))
        hv = np.where(hour_bad, 0, hours).astype(np.int64)
        hh = hv % 100
        day = hv // 100  # YYMMDD
        weekday = np.zeros(n, dtype=np.int64)
        for d in np.unique(day[~hour_bad]):
            weekday[day == d] = self._weekday(int(d))
        ok = ~hour_bad & (hh < 24) & (weekday >= 0)
        # Keys: value + 1 so that 0 stays "missing".
        hour_key = (hh + 1).astype(np.uint64)
        weekday_key = (weekday + 1).astype(np.uint64)
        return self._assemble(
            cols,
            n,
            bad,
            1,
            [],
            [hour_key, weekday_key, *range(3, 24)],
            extra_ok=ok,
            extra_reason="bad_hour",
        )

    def _weekday(self, yymmdd: int) -> int:
        if yymmdd not in self._weekday_cache:
            try:
                date = _dt.date(2000 + yymmdd // 10000, (yymmdd // 100) % 100, yymmdd % 100)
                self._weekday_cache[yymmdd] = date.weekday()
            except ValueError:
                self._weekday_cache[yymmdd] = -1
        return self._weekday_cache[yymmdd]


class Kdd12Format(RawFormat):
    """KDD Cup 2012 track 2 `training.txt`: tab-separated Click, Impression, DisplayURL, AdID,
    AdvertiserID, Depth, Position, QueryID, KeywordID, TitleID, DescriptionID, UserID, optionally
    followed by the joined profile columns Gender, Age (14 columns). Otherwise Gender and Age come
    from `profile=userid_profile.txt` (UserID, Gender, Age) or are missing. label = Click > 0."""

    name = "kdd12"
    dense_features = KDD12_DENSE
    sparse_features = KDD12_SPARSE
    notes = (
        "label = Click > 0; dense Impression, Depth, Position; Gender and Age from joined "
        "profile columns or a profile file, else missing"
    )

    def __init__(self, path: Path, settings: dict) -> None:
        super().__init__(path, settings)
        self.n_columns = 14 if len(_first_line(path).rstrip("\r\n").split("\t")) == 14 else 12
        self._profile: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        profile = settings.get("profile_path")
        if profile and self.n_columns == 12:
            self._profile = _load_profile(Path(profile))

    def parse(self, cols: Fields, n: int, bad: Counter) -> ParsedChunk:
        base: list[int | np.ndarray] = [2, 3, 4, 7, 8, 9, 10, 11]
        if self.n_columns == 14:
            return self._assemble(
                cols, n, bad, 0, [1, 5, 6], [*base, 12, 13], label_from_count=True
            )
        gender = np.zeros(n, dtype=np.uint64)
        age = np.zeros(n, dtype=np.uint64)
        if self._profile is not None and n and len(self._profile[0]):
            users, g, a = self._profile
            uk = cols.hash(11)
            pos = np.clip(np.searchsorted(users, uk), 0, len(users) - 1)
            found = (users[pos] == uk) & (uk != 0)
            gender = np.where(found, g[pos], np.uint64(0))
            age = np.where(found, a[pos], np.uint64(0))
        return self._assemble(
            cols, n, bad, 0, [1, 5, 6], [*base, gender, age], label_from_count=True
        )


def _load_profile(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """userid_profile.txt (UserID, Gender, Age; tab-separated) as sorted key arrays."""
    if not path.is_file():
        raise PimrecError("no such file", file=path, field="profile")
    users, genders, ages = [], [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 3:
                users.append(parts[0])
                genders.append(parts[1])
                ages.append(parts[2])
    uk = hash_strings(users)
    order = np.argsort(uk, kind="stable")
    return uk[order], hash_strings(genders)[order], hash_strings(ages)[order]


def _first_line(path: Path) -> str:
    # utf-8-sig: a leading byte-order mark is not part of the header.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return fh.readline()


def open_format(name: str, path: Path, settings: dict) -> RawFormat:
    """The reader for a raw format name."""
    cls = {"criteo": CriteoFormat, "avazu": AvazuFormat, "kdd12": Kdd12Format}[name]
    return cls(path, settings)
