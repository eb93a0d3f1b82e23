"""Physical address -> (channel, rank, bank group, bank, row, column) by a named mapping scheme.

Scheme names list the fields from the most to the least significant bit, as in Ramulator 2;
the low log2(access_bytes) bits (the byte offset inside one burst) are dropped first. Where a name
says "Ba", the bank-group bits sit just below the bank bits, in Ramulator 2's order for that
scheme (so RoBaRaCoCh and RoBaBgRaCoCh decode the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pimrec.errors import PimrecError
from pimsim.spec import DramSpec

# Fields from the least significant bit up, per scheme.
_LSB_FIRST = {
    "RoBaRaCoCh": ("channel", "column", "rank", "bankgroup", "bank", "row"),
    "RoBaBgRaCoCh": ("channel", "column", "rank", "bankgroup", "bank", "row"),
    "ChRaBaRoCo": ("column", "row", "bank", "bankgroup", "rank", "channel"),
    "RoCoBaRaCh": ("channel", "rank", "bankgroup", "bank", "column", "row"),
}
MAPPING_SCHEMES = tuple(_LSB_FIRST)


def _field_sizes(spec: DramSpec) -> dict[str, int]:
    return {
        "channel": spec.channels,
        "rank": spec.ranks_per_channel,
        "bankgroup": spec.bank_groups_per_rank,
        "bank": spec.banks_per_group,
        "row": spec.rows_per_bank,
        "column": spec.columns_per_row // spec.burst_length,  # burst-sized column accesses
    }


@dataclass(frozen=True)
class DecodedAddresses:
    """Per-request coordinates; `*_index` are flat indices across the whole memory."""

    channel: np.ndarray  # int64
    rank_index: np.ndarray  # int64: channel * ranks + rank
    bankgroup_index: np.ndarray  # int64: rank_index * bank_groups + bank group
    bank_index: np.ndarray  # int64: bankgroup_index * banks_per_group + bank
    row: np.ndarray  # int64
    column: np.ndarray  # int64 (burst units)


def decode_addresses(
    spec: DramSpec, addr_bytes: np.ndarray, scheme: str | None = None
) -> DecodedAddresses:
    """Split byte addresses into coordinates with `scheme` (default: the controller's)."""
    scheme = scheme or spec.controller.address_mapping
    if scheme not in _LSB_FIRST:
        raise PimrecError(
            f"unknown address mapping {scheme!r}",
            field="address_mapping",
            expected=", ".join(MAPPING_SCHEMES),
        )
    addr = np.asarray(addr_bytes, dtype=np.uint64)
    if addr.size and int(addr.max()) >= spec.capacity_bytes:
        bad = int(np.argmax(addr >= np.uint64(spec.capacity_bytes)))
        raise PimrecError(
            f"address {int(addr[bad]):#x} beyond capacity",
            field=f"request {bad}",
            expected=f"an address below {spec.capacity_bytes:#x} ({spec.capacity_bytes} B)",
        )
    sizes = _field_sizes(spec)
    rest = addr >> np.uint64(int(spec.access_bytes).bit_length() - 1)
    fields: dict[str, np.ndarray] = {}
    for name in _LSB_FIRST[scheme]:
        n = sizes[name]
        fields[name] = (rest & np.uint64(n - 1)).astype(np.int64)
        rest = rest >> np.uint64(n.bit_length() - 1)
    rank_index = fields["channel"] * spec.ranks_per_channel + fields["rank"]
    bg_index = rank_index * spec.bank_groups_per_rank + fields["bankgroup"]
    return DecodedAddresses(
        channel=fields["channel"],
        rank_index=rank_index,
        bankgroup_index=bg_index,
        bank_index=bg_index * spec.banks_per_group + fields["bank"],
        row=fields["row"],
        column=fields["column"],
    )


def encode_address(
    spec: DramSpec,
    *,
    channel: int = 0,
    rank: int = 0,
    bankgroup: int = 0,
    bank: int = 0,
    row: int = 0,
    column: int = 0,
    scheme: str | None = None,
) -> int:
    """The byte address of one burst (inverse of `decode_addresses`), for tests and trace builders."""
    scheme = scheme or spec.controller.address_mapping
    values = {
        "channel": channel,
        "rank": rank,
        "bankgroup": bankgroup,
        "bank": bank,
        "row": row,
        "column": column,
    }
    sizes = _field_sizes(spec)
    addr, shift = 0, int(spec.access_bytes).bit_length() - 1
    for name in _LSB_FIRST[scheme]:
        if not 0 <= values[name] < sizes[name]:
            raise ValueError(f"{name} = {values[name]} outside 0..{sizes[name] - 1}")
        addr |= values[name] << shift
        shift += sizes[name].bit_length() - 1
    return addr
