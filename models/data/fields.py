"""Vectorised field splitting of a chunk of delimited text held as bytes (no per-field objects).

`split_fields(blob, delimiter, n_columns)` finds every line and delimiter with NumPy, keeps the
lines with exactly `n_columns` fields and returns a `Fields` view: per row and column the start
offset and length of the field inside the chunk. Columns are then hashed (8 bytes at a time) or
parsed as numbers (one byte position at a time) across all rows at once, which is what makes
`prepare` fast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# _KEEP_LOW_BYTES[k]: a mask keeping the low k bytes of a little-endian word (k = 0..8).
_KEEP_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_NL = ord("\n")
_PAD = 64  # zero bytes appended to each chunk buffer


def _mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (a bijection on uint64)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def key64_reference(value: bytes) -> int:
    """The categorical key of a field's bytes, in plain Python (the definition; `hash_columns`
    is its vectorised form): h = len * 0x9E3779B97F4A7C15; for each 8-byte little-endian word w
    (the last one zero-padded): h = splitmix64_finaliser(h ^ w); 0 -> 1; empty -> 0 (missing)."""
    mask = (1 << 64) - 1
    if not value:
        return 0
    h = (len(value) * 0x9E3779B97F4A7C15) & mask
    for i in range(0, len(value), 8):
        h ^= int.from_bytes(value[i : i + 8].ljust(8, b"\0"), "little")
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & mask
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & mask
        h ^= h >> 31
    return h or 1


class Fields:
    """Fields of the well-formed rows of one chunk: offsets [n, n_columns] and lengths."""

    def __init__(self, buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
        self.buf = buf
        self.starts = starts
        self.lens = lens
        self.n = int(starts.shape[0])

    def _byte_reader(self, cols: list[int]) -> Callable[[int], np.ndarray]:
        """j -> byte j of each field of `cols` ([n, len(cols)]); bytes past a field's end are
        whatever follows it (callers mask with lens > j)."""
        base = self.starts[:, cols]
        last = len(self.buf) - 1

        def at(j: int) -> np.ndarray:
            if j < _PAD:  # the buffer carries _PAD spare bytes: no clipping needed
                return self.buf[base + j]
            return self.buf[np.minimum(base + j, last)]

        return at

    def hash_columns(self, cols: list[int]) -> np.ndarray:
        """key64 of every field of `cols` ([n, len(cols)] uint64; see `key64_reference`)."""
        lens = self.lens[:, cols]
        base = self.starts[:, cols]
        h = lens.astype(np.uint64) * _GOLDEN
        words = self._words()
        for w in range(-(-int(lens.max(initial=0)) // 8)):
            left = np.clip(lens - 8 * w, 0, 8)  # bytes of this word inside the field
            word = words[np.minimum(base + 8 * w, len(words) - 1)] & _KEEP_LOW_BYTES[left]
            h = np.where(left > 0, _mix64(h ^ word), h)
        h[h == 0] = 1
        h[lens == 0] = 0
        return h

    def _words(self) -> np.ndarray:
        """An overlapping view: element i is the little-endian uint64 of bytes i..i+7."""
        n = len(self.buf) - 7
        return np.ndarray((n,), dtype="<u8", buffer=self.buf, offset=0, strides=(1,))

    def hash(self, col: int) -> np.ndarray:
        """`hash_columns` of one column, as [n]."""
        return self.hash_columns([col])[:, 0]

    def text(self, col: int, rows: np.ndarray) -> list[str]:
        """The fields of `rows` in one column as strings (for the slow paths)."""
        raw = self.buf.tobytes() if not hasattr(self, "_raw") else self._raw
        self._raw = raw
        s, ln = self.starts[rows, col], self.lens[rows, col]
        return [raw[a : a + b].decode("utf-8", "replace") for a, b in zip(s, ln, strict=True)]

    def floats(self, col: int) -> tuple[np.ndarray, np.ndarray]:
        """`float_columns` of one column, as [n] arrays."""
        value, bad = self.float_columns([col])
        return value[:, 0], bad[:, 0]

    def float_columns(self, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(values, bad) [n, len(cols)]: float64 with NaN for an empty field; `bad` marks fields
        that are not a finite number. Plain integers (optionally written "12.0") are parsed here, exactly;
        anything else (fractions, exponents, "nan", garbage) goes through Python's float()."""
        lens = self.lens[:, cols]
        shape = lens.shape
        width = int(lens.max(initial=0))
        if width == 0:
            return np.full(shape, np.nan), np.zeros(shape, dtype=bool)
        at = self._byte_reader(cols)
        first = at(0)
        neg = (first == ord("-")) & (lens > 0)
        value = np.zeros(shape, dtype=np.float64)
        in_int = ~neg  # still reading integer digits
        simple = np.ones(shape, dtype=bool)  # matches -?[0-9]+(\.0*)?
        seen_digit = np.zeros(shape, dtype=bool)
        seen_dot = np.zeros(shape, dtype=bool)
        for j in range(width):
            live = lens > j
            c = at(j)
            if j == 0:
                live = live & ~neg
            digit = (c >= 48) & (c <= 57)
            dot = c == ord(".")
            take = live & in_int & digit
            value = np.where(take, value * 10 + (c.astype(np.float64) - 48), value)
            seen_digit |= take
            starts_frac = live & in_int & dot
            seen_dot |= starts_frac
            in_int &= ~starts_frac
            frac_ok = live & seen_dot & ~starts_frac & (c == 48)  # only zeros after the dot
            simple &= ~(live & ~take & ~starts_frac & ~frac_ok)
        simple &= seen_digit & (lens <= 15)  # integers below 10^15: exact in float64
        value = np.where(neg, -value, value)
        empty = lens == 0
        value[empty] = np.nan
        bad = np.zeros(shape, dtype=bool)
        for k, col in enumerate(cols):
            slow = np.flatnonzero(~simple[:, k] & ~empty[:, k])
            if not slow.size:
                continue
            for i, text in zip(slow, self.text(col, slow), strict=True):
                try:
                    value[i, k] = float(text)  # an explicit "nan" stays NaN: missing
                except ValueError:
                    value[i, k] = np.inf
            bad[:, k] = np.isinf(value[:, k])
        return value, bad


def split_fields(blob: bytes, delimiter: str, n_columns: int) -> tuple[Fields, int, int]:
    """Split a chunk of lines. Returns (fields of the good rows, number of non-blank lines
    with a wrong field count, number of lines read including blank ones)."""
    if b"\r" in blob:
        blob = blob.replace(b"\r\n", b"\n")
    if blob and not blob.endswith(b"\n"):
        blob += b"\n"
    size = len(blob)
    buf = np.frombuffer(blob + bytes(_PAD), dtype=np.uint8)
    nl = np.flatnonzero(buf[:size] == _NL)
    line_start = np.r_[0, nl[:-1] + 1] if nl.size else np.zeros(0, dtype=np.int64)
    dl = np.flatnonzero(buf[:size] == ord(delimiter))
    first_dl = np.searchsorted(dl, line_start)
    n_delims = np.searchsorted(dl, nl) - first_dl
    blank = (nl - line_start == 0) & (n_delims == 0)
    good = n_delims == n_columns - 1
    wrong = int((~good & ~blank).sum())
    rows = np.flatnonzero(good)
    k = n_columns - 1
    ends_inner = dl[first_dl[rows][:, None] + np.arange(k)] if k else np.zeros((rows.size, 0), int)
    starts = np.concatenate([line_start[rows][:, None], ends_inner + 1], axis=1)
    ends = np.concatenate([ends_inner, nl[rows][:, None]], axis=1)
    index = np.int32 if len(buf) < 2**31 - 1 else np.int64  # halves the offset arrays
    fields = Fields(buf, starts.astype(index), (ends - starts).astype(index))
    return fields, wrong, int(nl.size)
