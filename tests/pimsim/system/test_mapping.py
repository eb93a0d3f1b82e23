"""Mappings: default placement, JSON round trip and capacity checks."""

from __future__ import annotations

import json

import pytest

from pimrec.errors import PimrecError
from pimsim.mapping import (
    Mapping,
    TablePlacement,
    check_mapping,
    default_mapping,
    load_mapping,
    save_mapping,
)
from pimsim.presets import load_preset


def test_default_mapping_units(dlrm_tiny):
    for hw, emb in (("hbm-pim", "bank_pim"), ("dimm-nmp", "rank_nmp"), ("host-cpu", "host")):
        m = default_mapping(dlrm_tiny, load_preset(hw))
        for op in dlrm_tiny.ops:
            if op.kind == "embedding_bag":
                assert m.unit(op.id) == emb
            elif op.kind != "fc":
                assert m.unit(op.id) == "host"
    m = default_mapping(dlrm_tiny, load_preset("reram-isaac"))
    assert {m.unit(op.id) for op in dlrm_tiny.ops if op.kind == "fc"} == {"xbar"}
    assert m.unit("interaction") == "host"


def test_json_round_trip(tmp_path, dlrm_tiny):
    spec = load_preset("dimm-nmp")
    m = default_mapping(dlrm_tiny, spec)
    m = Mapping(m.ops, {1: TablePlacement((0, 2), (1,))}, {"top_mlp.0": 2})
    path = tmp_path / "m.json"
    save_mapping(m, path)
    back = load_mapping(path)
    assert back.to_dict() == m.to_dict()
    assert json.loads(path.read_text())["schema"] == "pimrec.mapping/1"
    lay = check_mapping(dlrm_tiny, spec, back)
    assert lay[1].slots == ((0, 1), (2, 1))


def test_tables_pack_after_each_other(dlrm_tiny):
    spec = load_preset("dimm-nmp")
    lay = check_mapping(dlrm_tiny, spec, default_mapping(dlrm_tiny, spec))
    # 8 slots, 1 burst per 64 B row: table 0 (1000 rows) takes ceil(1000/8) = 125 bursts per slot
    assert lay[0].base_burst == 0 and lay[1].base_burst == 125
    assert lay[2].base_burst == 125 + 7  # ceil(50/8) = 7


def test_table_too_large(dlrm_p1):
    spec = load_preset("hbm-pim", ["dram.rows_per_bank=1024"])  # 256 MiB stack
    with pytest.raises(PimrecError, match=r"table 2 .* does not fit"):
        check_mapping(dlrm_p1, spec, default_mapping(dlrm_p1, spec))


def test_table_on_one_rank_too_large(dlrm_p1):
    spec = load_preset("dimm-nmp", ["dram.rows_per_bank=8192"])  # 1 GiB per rank, 8 ranks
    m = default_mapping(dlrm_p1, spec)
    check_mapping(dlrm_p1, spec, m)  # 2.2 GB of tables fit over all ranks ...
    placed = {t: TablePlacement((0,), (0,)) for t in range(26)}
    with pytest.raises(PimrecError, match="a rank holds"):
        check_mapping(dlrm_p1, spec, Mapping(m.ops, placed))


def test_layer_too_large_for_crossbars(dlrm_tiny):
    spec = load_preset("reram-isaac", ["xbar.tiles_per_chip=1", "xbar.arrays_per_tile=2"])
    m = default_mapping(dlrm_tiny, spec)  # default falls back to the host where it does not fit
    assert "host" in {m.unit(op.id) for op in dlrm_tiny.ops if op.kind == "fc"}
    ops = dict(m.ops)
    ops.update({op.id: "xbar" for op in dlrm_tiny.ops if op.kind == "fc"})
    with pytest.raises(PimrecError, match="crossbar arrays"):
        check_mapping(dlrm_tiny, spec, Mapping(ops))
