"""Raw CTR formats (Criteo, Avazu, KDD12): read a file in chunks of lines and parse each chunk
into labels, transformed dense features and 64-bit categorical keys.

Transforms (search_space.md "Data conventions"): dense x -> log(max(x, 0) + 1), missing -> 0.
Categorical values become stable 64-bit keys (FNV-1a over the value's bytes, the same on every
machine and run); key 0 means missing. `models.data.vocab` turns keys into table indices.

Malformed rows (wrong column count, a label that is not 0/1, a non-numeric dense value, a bad
Avazu hour) are counted per reason and left out; they never stop the run.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


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


def hash_strings(values: list[str] | tuple[str, ...]) -> np.ndarray:
    """Stable FNV-1a 64-bit keys of strings; '' -> 0 (missing); never 0 otherwise."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    try:
        raw = np.array(values, dtype=np.bytes_)
    except UnicodeEncodeError:
        raw = np.array([v.encode("utf-8", "replace") for v in values], dtype=np.bytes_)
    width = raw.dtype.itemsize
    if width == 0:
        return np.zeros(n, dtype=np.uint64)
    octets = raw.view(np.uint8).reshape(n, width)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    for j in range(width):
        b = octets[:, j].astype(np.uint64)
        # Skip the zero padding of shorter strings so a key never depends on the chunk's width.
        h = np.where(b != 0, (h ^ b) * _FNV_PRIME, h)
    h[h == 0] = 1
    h[octets[:, 0] == 0] = 0  # empty string: missing
    return h


def dense_transform(x: np.ndarray) -> np.ndarray:
    """log(max(x, 0) + 1) with NaN (missing) -> 0, as float32."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


def _floats(col: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of numbers: (values with NaN for empty, mask of unparseable/infinite)."""
    try:
        vals = np.array([v or "nan" for v in col], dtype=np.float64)
    except ValueError:
        vals = np.empty(len(col), dtype=np.float64)
        for i, v in enumerate(col):
            try:
                vals[i] = float(v) if v else np.nan
            except ValueError:
                vals[i] = np.inf  # marked bad below
    return vals, np.isinf(vals)


class RawFormat:
    """One raw format: delimiter, header handling and the column roles."""

    name = ""
    dense_features: tuple[str, ...] = ()
    sparse_features: tuple[str, ...] = ()

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        self.settings = settings
        self.delimiter = "\t"
        self.n_columns = 0
        self.header_lines = 0

    def open_lines(self, chunk_rows: int) -> Iterator[list[str]]:
        """Chunks of at most `chunk_rows` data lines (header skipped, newline stripped)."""
        with open(self.path, encoding="utf-8", errors="replace", newline="") as fh:
            for _ in range(self.header_lines):
                fh.readline()
            chunk: list[str] = []
            for line in fh:
                chunk.append(line)
                if len(chunk) >= chunk_rows:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    def chunks(self, chunk_rows: int) -> Iterator[ParsedChunk]:
        for lines in self.open_lines(chunk_rows):
            nbytes = sum(len(line) for line in lines)
            rows = [line.rstrip("\r\n").split(self.delimiter) for line in lines]
            rows = [r for r in rows if r != [""]]  # blank lines are not rows
            bad: Counter = Counter()
            good = [r for r in rows if len(r) == self.n_columns]
            if len(good) != len(rows):
                bad["wrong_column_count"] += len(rows) - len(good)
            chunk = self.parse(good, bad)
            chunk.malformed = bad
            chunk.bytes_read = nbytes
            yield chunk

    def parse(self, rows: list[list[str]], bad: Counter) -> ParsedChunk:  # pragma: no cover
        raise NotImplementedError

    # Shared by the formats: label, dense and sparse columns by position.
    def _assemble(
        self,
        rows: list[list[str]],
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
        n = len(rows)
        n_sparse = len(self.sparse_features)
        if n == 0:
            return ParsedChunk(
                np.zeros(0, np.float32),
                np.zeros((0, len(self.dense_features)), np.float32),
                keys=np.zeros((0, n_sparse), np.uint64),
            )
        cols = list(zip(*rows, strict=True))
        label, label_bad = _floats(cols[label_col])
        if label_from_count:
            label_bad |= ~(label >= 0) | (label != np.floor(label))
            label = (label > 0).astype(np.float64)
        else:
            label_bad |= ~((label == 0) | (label == 1))
        ok = ~label_bad
        bad["bad_label"] += int(label_bad.sum())
        dense = np.zeros((n, len(self.dense_features)), dtype=np.float64)
        dense_bad = np.zeros(n, dtype=bool)
        for j, c in enumerate(dense_cols):
            dense[:, j], b = _floats(cols[c])
            dense_bad |= b
        bad["non_numeric_dense"] += int((dense_bad & ok).sum())
        ok &= ~dense_bad
        if extra_ok is not None:
            bad[extra_reason] += int((~extra_ok & ok).sum())
            ok &= extra_ok
        keys = np.zeros((n, n_sparse), dtype=np.uint64)
        for k, part in enumerate(sparse_parts):
            keys[:, k] = hash_strings(cols[part]) if isinstance(part, int) else part
        dense[~np.isfinite(dense)] = np.nan
        return ParsedChunk(label[ok].astype(np.float32), dense_transform(dense[ok]), keys=keys[ok])


class CriteoFormat(RawFormat):
    """Kaggle `train.txt` (tab-separated label, I1..I13, C1..C26) or the CSV variant with a
    `label,I1,...,C26` header (integers may be written as floats)."""

    name = "criteo"
    dense_features = CRITEO_DENSE
    sparse_features = CRITEO_SPARSE

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

    def parse(self, rows: list[list[str]], bad: Counter) -> ParsedChunk:
        return self._assemble(rows, bad, 0, list(range(1, 14)), [*range(14, 40)])


class AvazuFormat(RawFormat):
    """Kaggle Avazu CSV with its header; label `click`; `hour` (YYMMDDHH) split into
    hour_of_day and weekday; every other column except `id` is categorical; one constant
    dense feature (0.0)."""

    name = "avazu"
    dense_features = AVAZU_DENSE
    sparse_features = AVAZU_SPARSE

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

    def parse(self, rows: list[list[str]], bad: Counter) -> ParsedChunk:
        n = len(rows)
        if n == 0:
            return self._assemble(rows, bad, 1, [], [])
        hours, hour_bad = _floats(tuple(r[2] for r in rows))
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
            rows,
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

    def __init__(self, path: Path, settings: dict) -> None:
        super().__init__(path, settings)
        self.n_columns = 14 if len(_first_line(path).rstrip("\r\n").split("\t")) == 14 else 12
        self._profile: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        profile = settings.get("profile")
        if profile and self.n_columns == 12:
            self._profile = _load_profile(Path(profile))

    def parse(self, rows: list[list[str]], bad: Counter) -> ParsedChunk:
        base: list[int | np.ndarray] = [2, 3, 4, 7, 8, 9, 10, 11]
        if self.n_columns == 14:
            return self._assemble(rows, bad, 0, [1, 5, 6], [*base, 12, 13], label_from_count=True)
        n = len(rows)
        gender = np.zeros(n, dtype=np.uint64)
        age = np.zeros(n, dtype=np.uint64)
        if self._profile is not None and n and len(self._profile[0]):
            users, g, a = self._profile
            uk = hash_strings(tuple(r[11] for r in rows))
            pos = np.clip(np.searchsorted(users, uk), 0, len(users) - 1)
            found = (users[pos] == uk) & (uk != 0)
            gender = np.where(found, g[pos], np.uint64(0))
            age = np.where(found, a[pos], np.uint64(0))
        return self._assemble(rows, bad, 0, [1, 5, 6], [*base, gender, age], label_from_count=True)


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
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        return fh.readline()


def open_format(name: str, path: Path, settings: dict) -> RawFormat:
    """The reader for a raw format name."""
    cls = {"criteo": CriteoFormat, "avazu": AvazuFormat, "kdd12": Kdd12Format}[name]
    return cls(path, settings)
