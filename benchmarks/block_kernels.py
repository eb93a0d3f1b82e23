"""Where a sampled supernet step's device time goes, block by block and op by op (prints tables).

Runs --steps sampled subnets through the CUDA path's block chain (models/nas/chain.py) eagerly,
so that every kernel can be traced to the aten op that launched it (inside a CUDA graph that
link is lost), under torch.profiler. Each block's forward and backward run inside a
`record_function` label. Every unit of work is attributed to its block (or "-" outside the
blocks) and to the innermost aten op around its launch:
  - on CUDA, every GPU kernel, memcpy and memset (launched through the runtime or the driver, so
    Triton and cuBLAS kernels count too), by its GPU time;
  - on the CPU, every leaf aten op (one that calls no other), by its CPU time.
Tables: time per step by block phase, op pair and size classes; then the largest (phase, aten op,
input shapes) rows. The eager kernels are the ones the graphs replay, so their times carry over,
without the graphs' launch gaps.

    PYTHONPATH=. python benchmarks/block_kernels.py --device cuda --batch-size 8192 --data D
    .venv/bin/python benchmarks/block_kernels.py --device cpu --batch-size 256 --rows 20000
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")


def labelled_chain(net: torch.nn.Module):  # noqa: ANN201
    """A BlockChain (eager) whose block forwards and backwards run inside labels
    "BLOCK fwd|bwd i dense/sparse wc/tc"."""
    from models.nas.chain import BlockChain

    class Labelled(BlockChain):
        def _block_forward(self, e, bufs):  # noqa: ANN001, ANN202
            with record_function(label("fwd", e.block)):
                return super()._block_forward(e, bufs)

        def _block_backward(self, e, outs, bufs):  # noqa: ANN001, ANN202
            with record_function(label("bwd", e.block)):
                return super()._block_backward(e, outs, bufs)

    return Labelled(net, graphs=False)


def label(phase: str, blk) -> str:  # noqa: ANN001
    return f"BLOCK {phase} {blk.i} {blk.dense_op}/{blk.sparse_op} {blk.wc}/{blk.tc}"


def attribute(events: list[dict], on_gpu: bool) -> list[tuple[str, str, str, float]]:
    """(block label or "-", innermost aten op, its input shapes, microseconds) per unit of work
    in a chrome trace's events."""
    ops = sorted((e for e in events if e.get("ph") == "X"
                  and e.get("cat") in ("cpu_op", "user_annotation")), key=lambda e: e["ts"])  # fmt: skip
    by_tid: dict = collections.defaultdict(list)
    for o in ops:
        by_tid[o["tid"]].append(o)
    starts = {t: [o["ts"] for o in v] for t, v in by_tid.items()}

    def around(ts: float, tid: object) -> list[dict]:
        """The ops of thread tid open at ts, outermost first."""
        v, out = by_tid[tid], []
        j = bisect.bisect_right(starts[tid], ts) - 1
        while j >= 0:
            if v[j]["ts"] + v[j]["dur"] >= ts:
                out.append(v[j])
                if v[j]["name"].startswith("BLOCK"):
                    break
            j -= 1
        return out[::-1]

    if on_gpu:
        launches = {e["args"]["correlation"]: e for e in events
                    if e.get("cat") in LAUNCH_CATS and "correlation" in e.get("args", {})}  # fmt: skip
        work = []
        for k in events:
            if k.get("cat") in DEVICE_CATS:
                launch = launches.get(k.get("args", {}).get("correlation"))
                if launch is not None:
                    work.append((launch["ts"], launch["tid"], k["dur"]))
    else:  # leaf CPU ops: no op starts inside them
        work = []
        for tid, v in by_tid.items():
            for j, o in enumerate(v):
                nxt = v[j + 1]["ts"] if j + 1 < len(v) else float("inf")
                if o.get("cat") == "cpu_op" and nxt >= o["ts"] + o["dur"]:
                    work.append((o["ts"] + o["dur"] / 2, tid, o["dur"]))
    rows = []
    for ts, tid, dur in work:
        stack = around(ts, tid)
        blocks = [o["name"] for o in stack if o["name"].startswith("BLOCK")]
        aten = [o for o in stack if o.get("cat") == "cpu_op"]
        op = aten[-1]["name"] if aten else "?"
        shapes = str(aten[-1].get("args", {}).get("Input Dims", "")) if aten else ""
        rows.append((blocks[0] if blocks else "-", op, shapes, float(dur)))
    return rows


def tables(rows: list[tuple[str, str, str, float]], steps: int, top: int) -> str:
    per_block: dict = collections.defaultdict(lambda: [0, 0.0])
    per_op: dict = collections.defaultdict(lambda: [0, 0.0])
    for block, op, shapes, us in rows:
        per_block[block][0] += 1
        per_block[block][1] += us
        phase = block.split()[1] if block != "-" else "-"
        per_op[(phase, op, shapes)][0] += 1
        per_op[(phase, op, shapes)][1] += us
    total = sum(v[1] for v in per_block.values()) / steps
    lines = [f"work per step: {len(rows) / steps:.0f} units, {total / 1e3:.2f} ms",
             f"{'block (phase, position, ops, classes)':40s} {'units/step':>10s} {'us/step':>9s}"]  # fmt: skip
    for name, (n, us) in sorted(per_block.items(), key=lambda kv: kv[0]):
        lines.append(f"{name[6:] if name != '-' else '- (outside blocks)':40s} "
                     f"{n / steps:10.1f} {us / steps:9.1f}")  # fmt: skip
    lines.append(f"\n{'phase':5s} {'aten op':28s} {'input shapes':58s} {'n/step':>7s} "
                 f"{'us/step':>9s} {'us each':>8s}")  # fmt: skip
    for (phase, op, shapes), (n, us) in sorted(per_op.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"{phase:5s} {op[:28]:28s} {shapes[:58]:58s} {n / steps:7.1f} "
                     f"{us / steps:9.1f} {us / n:8.1f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=4, help="profiled steps (one subnet each)")
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic rows when no --data")
    ap.add_argument("--data")
    ap.add_argument("--space", default="nasrec-full")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)

    from models.data import open_split, prepare
    from models.nas.runtime import BatchStream, resolve_device
    from models.nas.space import sample_subnet
    from models.nas.supernet import Supernet
    from models.nas.train import make_optimizer, train_step

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="pimrec-bench-"))
    data = args.data or prepare(
        "synthetic", None, tmp / "data", rows=args.rows, max_table_rows=500_000, progress=False
    )
    split = open_split(data, "train")
    tables_, n_dense = split.manifest["table_sizes"], len(split.manifest["dense_features"])
    net = Supernet(args.space, tables_, n_dense).to(device)
    opt = make_optimizer(net.parameters(), 0.01, 1e-2)
    chain = labelled_chain(net)
    stream = BatchStream(split, args.batch_size, seed=0, device=device)
    rng = np.random.default_rng(0)
    subnets = [sample_subnet(net.space, rng) for _ in range(args.steps)]
    amp = device.type == "cuda"

    def run() -> None:
        for sub in subnets:
            train_step(chain, opt, next(stream), 0.01, 5.0, amp, device, subnet=sub)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up: compilation, Triton autotuning, allocator
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        run()
    stream.close()
    trace = tmp / "trace.json"
    prof.export_chrome_trace(str(trace))
    rows = attribute(json.loads(trace.read_text())["traceEvents"], device.type == "cuda")
    print(f"device {torch.cuda.get_device_name() if amp else 'cpu'}, space {args.space}, "
          f"batch {args.batch_size}, {args.steps} subnets, eager chain"
          f"{' (bf16 autocast)' if amp else ''}")  # fmt: skip
    print(tables(rows, args.steps, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
