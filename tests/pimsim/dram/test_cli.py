"""`pimrec dram`: the trace-driven mode, its report, and every kind of malformed trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pimsim.dram.trace_io import read_dram_trace, write_dram_trace


def test_loadstore_trace_runs_and_reports(cli, tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("# a comment\nLD 0x0\nLD 0x40\n\nST 0x80\nLD 0x2000\n")
    out = tmp_path / "r.json"
    res = cli("dram", "--trace", trace, "--hw", "ddr4-2400r", "--json", out)
    assert res.status == 0, res.err
    assert "row hits/misses/conflicts     2 / 2 / 0" in res.out
    report = json.loads(out.read_text())
    assert report["kind"] == "dram"
    r = report["results"]
    assert r["requests"] == 4 and r["writes"] == 1
    assert r["command_counts"]["ACT"] == 2
    assert r["energy_pj"]["act_pre"] == pytest.approx(2 * r["energy_table_pj"]["act_pre_pj"])
    assert report["config"]["trace_format"] == "loadstore"
    for key in ("simulated_dram_cycles", "simulated_ns", "bandwidth_gbps", "read_latency_p99_ns"):
        assert key in r


def test_timed_trace_and_overrides(cli, tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("0x0 READ 0\n0x40 READ 1000\n0x1f40 WRITE 1000\n")
    out = tmp_path / "r.json"
    res = cli(
        "dram", "--trace", trace, "--hw", "ddr4-2400r", "--json", out,
        "--set", "dram.controller.address_mapping=ChRaBaRoCo", "--data-path", "rank",
    )  # fmt: skip
    assert res.status == 0, res.err
    r = json.loads(out.read_text())["results"]
    assert r["read_latency_p99_dram_cycles"] >= 20
    assert r["data_path"] == "rank"


def test_trace_roundtrip(tmp_path):
    addr = np.array([0, 64, 4096], np.uint64)
    w = np.array([False, True, False])
    write_dram_trace(tmp_path / "a", addr, w)
    t = read_dram_trace(tmp_path / "a")
    assert t.addr.tolist() == addr.tolist() and t.is_write.tolist() == w.tolist()
    assert t.arrival_dram_cycles is None
    write_dram_trace(tmp_path / "b", addr, w, np.array([0, 5, 5]))
    assert read_dram_trace(tmp_path / "b").arrival_dram_cycles.tolist() == [0, 5, 5]


BAD_TRACES = {
    # id: (file text, text the one-line message must contain)
    "bad-hex": ("LD 0x0\nLD 0xZZ\n", "line 2: bad address '0xZZ'"),
    "negative-address": ("LD -0x40\n", "line 1: bad address"),
    "unknown-op": ("0x0 READ 0\n0x40 FETCH 3\n", "line 2: unknown op 'FETCH'"),
    "unknown-loadstore-op": ("LD 0x0\nXX 0x40\n", "line 2: malformed request"),
    "negative-arrival": ("0x0 READ -5\n", "line 1: bad arrival cycle '-5'"),
    "non-integer-arrival": ("0x0 READ 1.5\n", "line 1: bad arrival cycle"),
    "non-monotonic-arrival": ("0x0 READ 10\n0x40 READ 9\n", "line 2: arrival cycle 9 goes back"),
    "beyond-capacity": ("LD 0x0\nLD 0x200000000\n", "line 2: address 0x200000000 beyond"),
    "empty-file": ("", "trace holds no requests"),
    "comments-only": ("# nothing\n\n", "trace holds no requests"),
    "mixed-formats": ("LD 0x0\n0x40 READ 3\n", "line 2: malformed request"),
    "missing-arrival": ("0x0 READ 0\n0x40 READ\n", "line 2: malformed request"),
    "extra-token": ("LD 0x0 7\n", "line 1: malformed request"),
}


def _assert_clean_failure(res, out: Path, must_contain: str) -> None:
    assert res.status == 2, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, res.err
    assert lines[0].startswith("pimrec: error: ")
    assert must_contain in lines[0], lines[0]
    assert "Traceback" not in res.err
    assert res.out == ""
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_TRACES))
def test_bad_trace(cli, tmp_path, case):
    text, must_contain = BAD_TRACES[case]
    trace = tmp_path / "bad.trace"
    trace.write_text(text)
    out = tmp_path / "out.json"
    res = cli("dram", "--trace", trace, "--hw", "ddr4-2400r", "--json", out)
    _assert_clean_failure(res, out, must_contain)
    assert str(trace) in res.err  # names the file


def test_missing_trace_file(cli, tmp_path):
    out = tmp_path / "out.json"
    res = cli("dram", "--trace", tmp_path / "nope.trace", "--hw", "ddr4-2400r", "--json", out)
    _assert_clean_failure(res, out, "nope.trace: no such trace file")


def test_bad_override(cli, tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("LD 0x0\n")
    out = tmp_path / "out.json"
    res = cli(
        "dram", "--trace", trace, "--hw", "ddr4-2400r", "--json", out,
        "--set", "dram.controller.address_mapping=RoRoRo",
    )  # fmt: skip
    _assert_clean_failure(res, out, "address_mapping")
