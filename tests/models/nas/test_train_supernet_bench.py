"""benchmarks/train_supernet.py --switch: sets the CUDA path's module switches for A/B runs, and
rejects an unknown name or value with the parser's error (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from models.nas import optim, static


def test_switches_set_the_module_tables(benchmark, monkeypatch):
    b = benchmark("train_supernet")
    ap = argparse.ArgumentParser()
    for table in (static.BIAS_GRAD, optim.EMBEDDING, static.MASKED_LN, optim.ROW_GRAD):
        monkeypatch.setitem(table, "impl", table["impl"])  # restored after the test
    b.set_switch(ap, "bias_grad=sum")
    b.set_switch(ap, "embedding=embedding")
    b.set_switch(ap, "compile=eager")
    b.set_switch(ap, "row_grad=off")
    assert static.BIAS_GRAD["impl"] == "sum" and optim.EMBEDDING["impl"] == "embedding"
    assert static.MASKED_LN["impl"] == "eager" and optim.ROW_GRAD["impl"] == "off"
    for bad in ("bias_grad=fast", "nothing=sum", "bias_grad"):
        with pytest.raises(SystemExit) as exc:
            b.set_switch(ap, bad)
        assert exc.value.code == 2
