"""Address mapping: bit positions of the named schemes, round trips, capacity."""

from __future__ import annotations

import numpy as np
import pytest

from pimrec.errors import PimrecError
from pimsim.dram.mapping import MAPPING_SCHEMES, decode_addresses, encode_address

from .conftest import ddr4


def test_robaracoch_bit_positions(spec):
    # 64 B bursts: bits 0-5 offset, 6-12 column (128 bursts per 8 KB row), then bank group
    # 13-14, bank 15-16, row 17+ (one channel, one rank: zero bits each)
    d = decode_addresses(spec, np.array([1 << 6, 1 << 13, 1 << 15, 1 << 17], np.uint64))
    assert d.column.tolist() == [1, 0, 0, 0]
    assert (d.bankgroup_index.tolist(), d.bank_index.tolist()) == ([0, 1, 0, 0], [0, 4, 1, 0])
    assert d.row.tolist() == [0, 0, 0, 1]


def test_chrabaroco_puts_column_lowest_and_channel_highest():
    spec = ddr4("dram.channels=2", "dram.controller.address_mapping=ChRaBaRoCo")
    top = spec.capacity_bytes // 2
    d = decode_addresses(spec, np.array([64, top], np.uint64))
    assert d.column.tolist() == [1, 0] and d.channel.tolist() == [0, 1]


@pytest.mark.parametrize("scheme", MAPPING_SCHEMES)
def test_roundtrip(scheme):
    spec = ddr4("dram.channels=2", "dram.ranks_per_channel=2")
    rng = np.random.default_rng(0)
    for _ in range(50):
        f = dict(
            channel=int(rng.integers(2)), rank=int(rng.integers(2)),
            bankgroup=int(rng.integers(4)), bank=int(rng.integers(4)),
            row=int(rng.integers(spec.rows_per_bank)), column=int(rng.integers(128)),
        )  # fmt: skip
        a = encode_address(spec, scheme=scheme, **f)
        assert a < spec.capacity_bytes
        d = decode_addresses(spec, np.array([a], np.uint64), scheme)
        assert d.channel[0] == f["channel"] and d.row[0] == f["row"] and d.column[0] == f["column"]
        assert d.rank_index[0] == f["channel"] * 2 + f["rank"]
        assert d.bank_index[0] == (d.rank_index[0] * 4 + f["bankgroup"]) * 4 + f["bank"]


def test_beyond_capacity(spec):
    with pytest.raises(PimrecError, match="beyond capacity"):
        decode_addresses(spec, np.array([spec.capacity_bytes], np.uint64))
