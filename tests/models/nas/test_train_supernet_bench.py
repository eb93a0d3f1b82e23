"""benchmarks/train_supernet.py: --switch sets the CUDA path's module switches for A/B runs and
rejects an unknown name or value with the parser's error (exit 2); the kernel histogram and the
timed passes' spread by hand."""

from __future__ import annotations

import argparse

import pytest
import torch

from models.nas import fused_adagrad, optim, runtime, static


def test_switches_set_the_module_tables(bench_module, monkeypatch):
    b = bench_module("train_supernet")
    ap = argparse.ArgumentParser()
    tables = (static.BIAS_GRAD, optim.EMBEDDING, static.MASKED_LN, optim.ROW_GRAD,
              static.LN_KERNEL, static.PARAM_LEAVES, optim.LIVE_PREFIX, runtime.H2D,
              runtime.LOADER, fused_adagrad.NORM)  # fmt: skip
    for table in tables:
        monkeypatch.setitem(table, "impl", table["impl"])  # restored after the test
    b.set_switch(ap, "bias_grad=sum")
    b.set_switch(ap, "embedding=embedding")
    b.set_switch(ap, "compile=eager")
    b.set_switch(ap, "row_grad=off")
    b.set_switch(ap, "ln_kernel=compiled")
    b.set_switch(ap, "param_leaves=off")
    b.set_switch(ap, "live_prefix=off")
    b.set_switch(ap, "h2d=inline")
    b.set_switch(ap, "loader=thread")
    b.set_switch(ap, "clip_norm=foreach")
    assert static.BIAS_GRAD["impl"] == "sum" and optim.EMBEDDING["impl"] == "embedding"
    assert static.MASKED_LN["impl"] == "eager" and optim.ROW_GRAD["impl"] == "off"
    assert static.LN_KERNEL["impl"] == "compiled"
    assert static.PARAM_LEAVES["impl"] == "off" and optim.LIVE_PREFIX["impl"] == "off"
    assert runtime.H2D["impl"] == "inline" and runtime.LOADER["impl"] == "thread"
    assert fused_adagrad.NORM["impl"] == "foreach"
    for bad in ("bias_grad=fast", "nothing=sum", "bias_grad"):
        with pytest.raises(SystemExit) as exc:
            b.set_switch(ap, bad)
        assert exc.value.code == 2


def test_kernel_histogram_hand_counted(bench_module):
    # 2 steps: kernels of 1, 2.5, 3, 40, 150 and 150 us -> 3 per step, 173.25 us per step;
    # < 3 us: 1, 2.5 (1.75 us per step); < 6 us: 3; < 50 us: 40; >= 100 us: 150, 150
    text = bench_module("train_supernet").kernel_histogram([1, 2.5, 3, 40, 150, 150], 2)
    lines = text.splitlines()
    assert lines[0] == "kernels per step 3.0, kernel time per step 0.173 ms"
    assert lines[1].split() == ["<", "3", "us", "1.0", "kernels", "0.002", "ms"]
    assert lines[2].split()[3] == "0.5" and lines[5].split()[3] == "0.5"
    assert lines[7].split() == [">=", "100", "us", "1.0", "kernels", "0.150", "ms"]
    assert [line.split()[3] for line in lines[3:5] + lines[6:7]] == ["0.0", "0.0", "0.0"]


def test_timed_passes_and_their_spread(bench_module):
    b = bench_module("train_supernet")
    calls = []
    per_pass = b.time_passes(lambda: calls.append(1), 4, torch.device("cpu"), 3)
    assert len(per_pass) == 3 and len(calls) == 12 and all(x >= 0 for x in per_pass)
    # 8.8, 8.6 and 8.7 ms per step: median 8.70, fastest 8.60, slowest 8.80
    note = b.passes_note("graphed", [0.0088, 0.0086, 0.0087])
    assert note == "graphed: 3 passes, ms/step median 8.70 (fastest 8.60, slowest 8.80)"


def test_host_issue_time_excludes_the_wait_for_the_device(bench_module, monkeypatch):
    """Each step is timed from after a device synchronisation to its return: a step whose host
    work takes ~20 ms times at >= 20 ms, the synchronisations' own 50 ms each stay outside."""
    import time

    b = bench_module("train_supernet")
    syncs = []
    monkeypatch.setattr(b, "sync", lambda device: (syncs.append(1), time.sleep(0.05)))
    times, cpu = b.host_issue_s(lambda: time.sleep(0.02), 3, torch.device("cpu"))
    assert len(times) == 3 and len(syncs) == 4  # one before each step, one at the end
    assert all(0.02 <= t < 0.06 for t in times), times
    assert all(0 <= c < 0.01 for c in cpu), cpu  # asleep, not on a CPU
    busy, busy_cpu = b.host_issue_s(lambda: sum(range(300_000)), 3, torch.device("cpu"))
    assert all(c > 0.2 * t for t, c in zip(busy, busy_cpu, strict=True))  # on a CPU
    assert b.host_note("host", [0.009, 0.011, 0.010], [0.004, 0.006, 0.005]) == (
        "host: median 10.00 ms, the main thread on a CPU for 5.00 ms of it"
    )


def test_host_profile_names_the_steps_work_and_not_the_syncs(bench_module, monkeypatch):
    """The profile holds what each step called, n calls of it, and none of the synchronisations
    between the steps."""
    b = bench_module("train_supernet")

    def device_wait(device):
        return None

    def step_work():
        return sum(range(1000))

    monkeypatch.setattr(b, "sync", device_wait)
    text = b.host_profile(step_work, 4, torch.device("cpu"))
    assert text.startswith("host profile: 4 steps")
    work = [line for line in text.splitlines() if "(step_work)" in line]
    assert work and all(line.split()[0] == "4" for line in work)  # ncalls: once per step
    assert "device_wait" not in text


def test_ab_passes_alternate_the_variants_and_restore_the_switches(bench_module, monkeypatch):
    """Each round times every variant once, in order, with its switches set while its pass runs
    and restored after; --ab takes only the switches read at run time."""
    b = bench_module("train_supernet")
    for name in b.AB_SWITCHES:
        table = b.switch_table(name)
        monkeypatch.setitem(table, "impl", table["impl"])
    ap = argparse.ArgumentParser()
    assert b.parse_ab(ap, "clip_norm=foreach") == [("clip_norm", "foreach")]
    assert b.parse_ab(ap, "loader=thread,h2d=inline") == [("loader", "thread"), ("h2d", "inline")]
    # graph-baked, unknown value, no value, one bad part
    for bad in ("compile=eager", "clip_norm=fast", "clip_norm", "loader=thread,compile=eager"):
        with pytest.raises(SystemExit) as exc:
            b.parse_ab(ap, bad)
        assert exc.value.code == 2
    seen = []

    def run_pass(switches):
        seen.append((tuple(switches), fused_adagrad.NORM["impl"], runtime.LOADER["impl"]))
        return 0.008 if not switches else 0.010

    variants = [("default", []), ("clip_norm=foreach", [("clip_norm", "foreach")]),
                ("loader=thread", [("loader", "thread")])]  # fmt: skip
    got = b.ab_passes(variants, run_pass, 2)
    assert [s[0] for s in seen] == [(), (("clip_norm", "foreach"),), (("loader", "thread"),)] * 2
    assert [s[1:] for s in seen[:3]] == [("table", "auto"), ("foreach", "auto"),
                                         ("table", "thread")]  # fmt: skip
    assert fused_adagrad.NORM["impl"] == "table" and runtime.LOADER["impl"] == "auto"
    assert got == {"default": [0.008] * 2, "clip_norm=foreach": [0.010] * 2,
                   "loader=thread": [0.010] * 2}  # fmt: skip
    # 8 ms and 10 ms per step: ratio 1.25
    assert b.ab_note(got) == (
        "CUDA graphs, A/B over 2 alternated rounds in this process: default 8.00 ms/step "
        "(1.000x); clip_norm=foreach 10.00 ms/step (1.250x); loader=thread 10.00 ms/step (1.250x)"
    )
