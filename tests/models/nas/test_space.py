"""The subnet record: JSON round trip, validation errors, seeded sampling, liveness, mutation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.nas.space import (
    SPACES,
    get_space,
    load_subnet,
    mutate_subnet,
    sample_subnet,
    save_subnet,
    subnet_from_dict,
)
from pimrec.errors import PimrecError


def test_presets():
    assert set(SPACES) >= {"nasrec-full", "nasrec-small"}
    full, small = get_space("nasrec-full"), get_space("nasrec-small")
    assert full.dense_ops == ("fc", "dot", "gating", "sum") and full.sparse_ops == (
        "efc",
        "attention",
    )
    assert small.dense_ops == ("fc", "dot") and small.sparse_ops == ("efc",)
    assert full.dense_widths == (16, 32, 64, 128, 256, 512, 768, 1024)
    assert full.sparse_tokens == (16, 32, 48, 64) and full.n_blocks == 7


def test_round_trip_and_seeded_sampling(tmp_path):
    a = sample_subnet("nasrec-full", 5)
    assert a == sample_subnet("nasrec-full", np.random.default_rng(5))
    assert a != sample_subnet("nasrec-full", 6)
    save_subnet(a, tmp_path / "s.json")
    assert load_subnet(tmp_path / "s.json") == a


def test_sampling_respects_rules():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = sample_subnet("nasrec-full", rng)
        subnet_from_dict(s.to_dict())  # every sample validates
        for i, b in enumerate(s.blocks):
            if b.dense_op in ("gating", "sum"):
                assert len(b.dense_inputs) == 2
            else:
                assert 1 <= len(b.dense_inputs) <= min(i + 1, 4)
            assert 1 <= len(b.sparse_inputs) <= min(i + 1, 4)


def test_dead_blocks():
    s = sample_subnet("nasrec-small", 0).to_dict()
    for i, b in enumerate(s["blocks"]):  # a chain 0 -> 1 -> 2 -> 6; blocks 3, 4, 5 dead
        b["dense_inputs"] = b["sparse_inputs"] = [0] if i == 0 else [i]
    s["blocks"][6]["dense_inputs"] = s["blocks"][6]["sparse_inputs"] = [3]
    assert subnet_from_dict(s).live_blocks() == (0, 1, 2, 6)


def test_mutation_changes_one_block_and_stays_valid():
    rng = np.random.default_rng(1)
    s = sample_subnet("nasrec-full", 3)
    for _ in range(100):
        m = mutate_subnet(s, rng)
        assert m != s
        assert sum(a != b for a, b in zip(m.blocks, s.blocks, strict=True)) == 1
        subnet_from_dict(m.to_dict())


def _edit(fn):
    d = sample_subnet("nasrec-full", 7).to_dict()
    d["blocks"][3]["dense_op"] = "fc"
    d["blocks"][3]["dense_inputs"] = [0, 2]
    fn(d)
    return d


BAD = {
    "unknown-op": (lambda d: d["blocks"][3].update(dense_op="conv"), "blocks[3].dense_op"),
    "width-not-in-space": (
        lambda d: d["blocks"][3].update(dense_width=100),
        "blocks[3].dense_width",
    ),
    "tokens-not-in-space": (lambda d: d["blocks"][2].update(sparse_tokens=8), "sparse_tokens"),
    "later-input": (
        lambda d: d["blocks"][3].update(sparse_inputs=[1, 5]),
        "blocks[3].sparse_inputs",
    ),
    "binary-one-input": (
        lambda d: d["blocks"][3].update(dense_op="sum", dense_inputs=[2]),
        "blocks[3].dense_inputs",
    ),
    "too-many-inputs": (
        lambda d: d["blocks"][6].update(dense_op="fc", dense_inputs=[0, 1, 2, 3, 4]),
        "blocks[6].dense_inputs",
    ),
    "missing-field": (lambda d: d["blocks"][1].pop("sparse_to_dense"), "blocks[1].sparse_to_dense"),
    "unknown-key": (lambda d: d["blocks"][1].update(colour=1), "blocks[1].colour"),
    "unknown-space": (lambda d: d.update(space="nasrec-huge"), "space"),
    "six-blocks": (lambda d: d["blocks"].pop(), "blocks"),
    "small-space-op": (lambda d: d.update(space="nasrec-small"), "blocks[0]"),
    "bool-as-int": (lambda d: d["blocks"][0].update(dense_to_sparse=1), "dense_to_sparse"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records(tmp_path, case):
    edit, field = BAD[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_edit(edit)))
    with pytest.raises(PimrecError) as err:
        load_subnet(path)
    assert str(path) in str(err.value) and field in str(err.value)
    assert "\n" not in str(err.value)


def test_not_json(tmp_path):
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(PimrecError, match="not valid JSON"):
        load_subnet(tmp_path / "x.json")
    with pytest.raises(PimrecError, match="cannot read"):
        load_subnet(tmp_path / "missing.json")
