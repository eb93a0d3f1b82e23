"""benchmarks/block_kernels.py: attribution of device work to blocks and aten ops, on a trace
written by hand (GPU kernels launched through the runtime and the driver), and a whole CPU run."""

from __future__ import annotations


def _x(name, ts, dur, cat="cpu_op", tid=1, **args):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "cat": cat, "tid": tid, "args": args}


def test_kernels_go_to_their_block_and_innermost_op(bench_module):
    b = bench_module("block_kernels")
    events = [
        _x("BLOCK fwd 2 fc/efc 128/32", 0, 100, cat="user_annotation"),
        _x("aten::linear", 10, 40, **{"Input Dims": [[8, 4]]}),
        _x("aten::addmm", 20, 20, **{"Input Dims": [[8, 4], [4, 4]]}),
        _x("cudaLaunchKernel", 25, 2, cat="cuda_runtime", correlation=1),
        _x("aten::mul", 120, 10, **{"Input Dims": [[8]]}),
        _x("cuLaunchKernelEx", 122, 2, cat="cuda_driver", correlation=2),  # Triton, cuBLASLt
        _x("gemm", 30, 7.0, cat="kernel", tid=7, correlation=1),
        _x("triton_mul", 130, 3.0, cat="kernel", tid=7, correlation=2),
        _x("orphan", 140, 9.0, cat="kernel", tid=7, correlation=99),  # no launch seen: left out
    ]
    rows = b.attribute(events, on_gpu=True)
    assert sorted(rows) == [
        ("-", "aten::mul", "[[8]]", 3.0),
        ("BLOCK fwd 2 fc/efc 128/32", "aten::addmm", "[[8, 4], [4, 4]]", 7.0),
    ]
    text = b.tables(rows, steps=1, top=5)
    assert "work per step: 2 units, 0.01 ms" in text and "fwd 2 fc/efc 128/32" in text


def test_cpu_run_prints_blocks(bench_module, capsys):
    b = bench_module("block_kernels")
    argv = ["--device", "cpu", "--batch-size", "32", "--rows", "4000", "--steps", "1", "--top", "5"]
    assert b.main(argv) == 0
    out = capsys.readouterr().out
    assert "work per step" in out and "\nfwd " in out and "\nbwd " in out
