"""The hand-computed cost suite (pimsim.validate) against its stated tolerances."""

from __future__ import annotations

import pytest

from pimsim.validate import run_cases


@pytest.fixture(scope="module")
def results():
    return run_cases()


def test_every_case_within_tolerance(results):
    bad = [(r.name, r.expected, r.simulated) for r in results if not r.ok]
    assert not bad


def test_suite_covers_each_unit(results):
    names = " ".join(r.name for r in results)
    for word in ("hbm-pim peak", "one bank", "bank PIM", "rank NMP", "xbar", "host roofline"):
        assert word in names


def test_one_bank_bag_exact(results):
    # (n - 1) tRC + tRCD + (k - 1) tCCD_L + CL + BL; hbm-pim: 15*48 + 14 + 4 + 14 + 2 = 754 ns
    r = next(r for r in results if r.name.startswith("bag of 16 rows on one bank, hbm-pim"))
    assert r.expected == pytest.approx(754.0)
    assert r.simulated == pytest.approx(754.0, rel=0.05)
    # ddr4-2400r: (15*55 + 16 + 16 + 4) cycles x 0.833 ns = 717.2 ns, k = 1
    r = next(r for r in results if "dimm-nmp rank_nmp" in r.name)
    assert r.expected == pytest.approx((15 * 55 + 36) * 0.833)


def test_validate_cli(cli):
    res = cli("validate")
    assert res.status == 0, res.out
    assert "cases within tolerance" in res.out and "expected" in res.out
