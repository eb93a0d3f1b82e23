"""Where must a sampled supernet step's GPU time go? A roofline count of one training step.

Runs the CUDA path's training step (static shapes, models/nas/static.py: forward, backward,
gradient clipping and Adagrad) for --paths sampled subnets on the meta device: every aten op is
dispatched with its real shapes but nothing is computed, so it needs no GPU and takes seconds.
Per aten op it counts kernels, bytes read + written (inputs + outputs at their dtype; views
are free) and FLOPs (mm, addmm, bmm), and turns them into a lower bound on GPU time:
    max(bytes / bandwidth, FLOPs / peak) per op, summed,
with the H200's peaks (--bandwidth-tb-s 4.8 HBM3e, --peak-tflops 989 dense bf16; NVIDIA's H200
product brief). Real kernels reach a fraction of both peaks and a kernel takes a few microseconds
however small it is (the `kernels x 2 us` line).

Why: the 1M samples/s target at batch 8192 is 8.2 ms per step, and the H200 measured ~16.8 ms of
GPU work per graphed step (benchmarks/train_supernet.py). If this bound for the static-shape
design is already near 8.2 ms, fusing kernels cannot reach the target and the shapes must shrink
(width-bucketed graphs); if it is far below, fusion is the way.

--dtype bfloat16 (default) runs the whole supernet in bf16, the traffic of the CUDA path's bf16
activations under autocast, except that the autocast casts (~0.9 ms on the H200) and its fp32
LayerNorm statistics are not in it; --dtype float32 is the fp32 path. The masked LayerNorm runs
eagerly here (on CUDA it is compiled: fewer kernels, less traffic), so its lines are an upper bound.

    .venv/bin/python benchmarks/step_roofline.py --paths 16 [--path sliced] [--top 25]
Measured 2026-11-26 (nasrec-full, batch 8192, bf16, Criteo tables capped at 0.5M rows, 16 paths;
each run takes seconds on the CPU):
  static path (CUDA's until session 7): 41.6 GB per step (forward 16.4, backward 23.3, Adagrad
  1.9) and 720 GFLOP: at least 8.66 ms per step, 946k samples/s at most (before the nodes a block does not read
  came detached, 43.5 GB and 9.07 ms: autograd summed their zero gradients). The H200 measured
  ~16.8 ms of GPU work, so kernels reach ~52 % of this bound. Even perfect kernels on this design
  fall short of 1M. Largest items: backward mm (6.9 GB), backward add (4.0 GB: node gradients
  summed over the blocks that read them, residuals), forward cat (2.7 GB, every block's input is
  all earlier nodes), forward clone (2.4 GB, mostly the token projection's transposed copies).
  sliced path (each op at its chosen widths, attention fused as on the static path): 9.9 GB and
  86 GFLOP, at least 2.06 ms per step (3.97M samples/s), 4.4x less traffic, but ~1,370 kernels
  (the optimizer's per-tensor ops included: CUDA's foreach kernels batch those). So the 1M target
  needs the shapes to shrink, e.g. graphs captured per width and token bucket, not more fusion.
  capped path (CUDA's since session 7: outputs at the blocks' size classes, inputs at maximum
  sizes): 32.3 GB and 360 GFLOP per step, at least 6.72 ms (1.22M samples/s); the H200 measured
  15.5 ms (~43 % of the bound). What is left at maximum sizes is the input side: every block
  concatenates all earlier nodes (cat 2.7 GB), the token projection's transposed copies (clone
  2.3 GB), input gradients (backward mm 5.5 GB) and their sums over the readers (add 3.2 GB).
  With the sparse inputs concatenated features-first (no transposed copy before the token
  projection): 30.8 GB, at least 6.43 ms (1.27M samples/s); the H200 measured 14.8 ms.
  Session 8, the chain over shared node buffers (models/nas/chain.py; what the capped and static
  paths count now; gathers and scatters count only their rows): 29.3 GB, then with masks in
  the activations' dtype and outputs written at their size classes 20.2 GB and 408 GFLOP, at
  least 4.21 ms (1.94M samples/s); the H200 measured 12.6 ms (~33 % of the bound).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

# Aten ops that return views or metadata: no kernel, no traffic.
FREE = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze",
    "squeeze", "slice", "select", "narrow", "as_strided", "detach", "alias", "split",
    "split_with_sizes", "unbind", "chunk", "view_as", "_reshape_alias", "lift_fresh",
    "unflatten", "flatten", "sym_size", "sym_numel", "sym_stride", "is_same_size", "empty",
    "empty_like", "new_empty", "empty_strided", "new_empty_strided", "set_", "_to_copy_noop",
})  # fmt: skip


def matmul_flops(name: str, args: tuple, out: torch.Tensor) -> int:
    """2 * multiply-adds of mm / addmm / bmm / baddbmm (output elements times the inner size)."""
    if name in ("mm", "bmm"):
        a = args[0]
    elif name in ("addmm", "baddbmm"):
        a = args[1]
    else:
        return 0
    return 2 * out.numel() * a.shape[-1]


class OpCounter(TorchDispatchMode):
    """Counts kernels, bytes and FLOPs per (phase, aten op) of everything dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "forward"
        self.paused = False
        self.rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0])
        self.shapes: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")
        if self.paused or name in FREE:
            return out
        flops = matmul_flops(name, args, out) if isinstance(out, torch.Tensor) else 0
        # A gather or scatter touches only the indexed rows of its big operand.
        if name == "index_add":  # reads the source and index, reads and writes those rows
            self.record(name, (args[2], args[3], args[3], args[3]))
        elif name == "index_select":  # reads the index and the selected rows, writes them
            self.record(name, (args[2], out, out))
        else:
            self.record(name, (args, kwargs, out), flops)
        return out

    def record(self, name: str, tree: object, flops: int = 0) -> None:
        """One kernel reading and writing every tensor in `tree` once."""
        tensors = [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        row = self.rows[(self.phase, name)]
        row[0] += 1
        row[1] += nbytes
        row[2] += flops
        shape = "x".join(map(str, tensors[-1].shape)) if tensors else ""
        self.shapes[(self.phase, name, shape)][0] += nbytes
        self.shapes[(self.phase, name, shape)][1] += 1

    @contextmanager
    def pause(self):  # noqa: ANN201
        self.paused, was = True, self.paused
        try:
            yield
        finally:
            self.paused = was


class _Fused(torch.autograd.Function):
    """A region that is one kernel forward and one backward on the GPU (a Triton or compiled
    kernel): counted as reading its inputs and writing its output (forward), reading inputs,
    output and output gradient and writing the gradients of the inputs that require them
    (backward)."""

    @staticmethod
    def forward(ctx, counter, name, fn, *args):  # noqa: ANN001, ANN205
        ctx.counter, ctx.name, ctx.fn, ctx.args = counter, name, fn, args  # meta: no storage
        with counter.pause():
            out = fn(*args)
        counter.record(name, (args, out))
        return out

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        counter = ctx.counter
        wants = [isinstance(a, torch.Tensor) and a.requires_grad for a in ctx.args]
        args = [
            a.detach().requires_grad_() if w else a for a, w in zip(ctx.args, wants, strict=True)
        ]
        with counter.pause(), torch.enable_grad():
            out = ctx.fn(*args)
            inputs = [a for a, w in zip(args, wants, strict=True) if w]
            grads = iter(torch.autograd.grad(out, inputs, dy, allow_unused=True))
        result = [next(grads) if w else None for w in wants]
        counter.record(ctx.name + "_backward", (args, out, dy, result))
        return (None, None, None, *result)


@contextmanager
def gpu_fusions(counter: OpCounter):  # noqa: ANN201
    """Count the regions that are single kernels on the GPU as such: the Triton attention and
    token LayerNorm (models/nas/kernels.py) and the compiled masked LayerNorm (static.py); on
    the sliced path, attention as if it used the same fused kernel."""
    from models.nas import kernels, ops, static

    places = ((kernels, "fused_attention", "fused_attention"), (ops, "attend", "fused_attention"),
              (kernels, "fused_attention_qkv", "fused_attention"),
              (kernels, "token_layer_norm", "token_layer_norm"),
              (static, "_masked_ln", "masked_layer_norm"), (static, "_fm", "fm_term"),
              (static, "_fm_grad", "fm_term_backward"))  # fmt: skip
    saved = [getattr(module, attr) for module, attr, _ in places]
    for (module, attr, name), fn in zip(places, saved, strict=True):
        setattr(module, attr, lambda *a, fn=fn, name=name: _Fused.apply(counter, name, fn, *a))
    try:
        yield
    finally:
        for (module, attr, _), fn in zip(places, saved, strict=True):
            setattr(module, attr, fn)


def count_step(model, net, opt, batch, subnet, counter: OpCounter) -> None:
    """One training step of `subnet` through `model` (the supernet: the sliced path, each op at
    its chosen widths; or a models.nas.chain.BlockChain over it: CUDA's static shapes, choices
    as masks, node buffers), phase by phase."""
    from models.nas.optim import clip_grad_norm

    dense, sparse, label = batch
    opt.zero_grad(set_to_none=True)
    counter.phase = "forward"
    logits = model(dense, sparse, subnet)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), label)
    counter.phase = "backward"
    loss.backward()
    counter.phase = "optimizer"
    clip_grad_norm(net.parameters(), 5.0)
    opt.step()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nasrec-full")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument(
        "--path",
        choices=("capped", "static", "sliced"),
        default="capped",
        help="capped: the CUDA path (inputs at maximum shapes, outputs at the blocks' size "
        "classes, choices as masks); static: every block at maximum shapes; sliced: every op "
        "at its chosen widths",
    )
    p.add_argument("--paths", type=int, default=8, help="sampled subnets averaged over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-table-rows", type=int, default=500_000)
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--bandwidth-tb-s", type=float, default=4.8)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--kernel-floor-us", type=float, default=2.0)
    p.add_argument(
        "--no-fused",
        dest="fused",
        action="store_false",
        help="count the GPU's fused kernels (attention, LayerNorms) op by op",
    )
    p.add_argument("--top", type=int, default=15, help="rows of the (op, shape) table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from models.data.synthetic import RESERVED_ROWS, SHAPES
    from models.nas.chain import BlockChain
    from models.nas.optim import make_optimizer
    from models.nas.space import sample_subnet
    from models.nas.supernet import Supernet

    args = parse_args(argv)
    shape = SHAPES["criteo"]
    tables = [min(t + RESERVED_ROWS, args.max_table_rows) for t in shape["sizes"]]
    n_dense, bs, dt = len(shape["dense"]), args.batch_size, getattr(torch, args.dtype)
    with torch.device("meta"):
        net = Supernet(args.space, tables, n_dense, sparse_grad=False).to("meta", dt)
        batch = (torch.empty(bs, n_dense, dtype=dt), torch.zeros(bs, len(tables), dtype=torch.int32),
                 torch.empty(bs))  # fmt: skip
    opt = make_optimizer(net.parameters(), 0.01, 1e-2)
    model = net if args.path == "sliced" else BlockChain(net, capped=args.path == "capped")
    rng = np.random.default_rng(args.seed)
    counter = OpCounter()
    with counter, gpu_fusions(counter) if args.fused else nullcontext():
        for _ in range(args.paths):
            count_step(model, net, opt, batch, sample_subnet(net.space, rng), counter)

    bw, peak, n = args.bandwidth_tb_s * 1e12, args.peak_tflops * 1e12, args.paths
    ms = lambda b, f: 1e3 * max(b / bw, f / peak) / n  # noqa: E731 - per step
    print(f"{args.space}, {args.path} path, batch {bs}, {args.dtype}, mean of {n} sampled paths "
          f"per step; bound = max(bytes / {args.bandwidth_tb_s} TB/s, FLOPs / "
          f"{args.peak_tflops:.0f} TFLOP/s)")  # fmt: skip
    print(
        f"{'phase':10s} {'aten op':28s} {'kernels':>8s} {'GB':>8s} {'GFLOP':>9s} {'bound ms':>9s}"
    )
    totals = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    ranked = sorted(counter.rows.items(), key=lambda kv: -ms(kv[1][1], kv[1][2]))
    for (phase, name), (k, b, f) in ranked:
        t = ms(b, f)
        for key in (phase, "step"):
            acc = totals[key]
            acc[0] += k / n
            acc[1] += b / n
            acc[2] += f / n
            acc[3] += t
        if t >= 0.05:
            print(f"{phase:10s} {name:28s} {k / n:8.1f} {b / n / 1e9:8.3f} {f / n / 1e9:9.1f} "
                  f"{t:9.3f}")  # fmt: skip
    print("(ops under 0.05 ms left out of the table, not of the totals)")
    for key in ("forward", "backward", "optimizer", "step"):
        k, b, f, t = totals[key]
        print(f"{key:10s} {'total':28s} {k:8.1f} {b / 1e9:8.3f} {f / 1e9:9.1f} {t:9.3f}")
    k_step, t_step = totals["step"][0], totals["step"][3]
    floor = k_step * args.kernel_floor_us / 1e3
    print(f"kernels x {args.kernel_floor_us:g} us = {floor:.2f} ms; bound {t_step:.2f} ms per "
          f"step = {bs / (t_step / 1e3):,.0f} samples/s at best (target 1M: 8.19 ms)")  # fmt: skip
    print(f"\n{'phase':10s} {'aten op':22s} {'last output shape':24s} {'calls':>6s} "
          f"{'GB/step':>8s}")  # fmt: skip
    top = sorted(counter.shapes.items(), key=lambda kv: -kv[1][0])[: args.top]
    for (phase, name, shape), (b, calls) in top:
        print(f"{phase:10s} {name:22s} {shape:24s} {calls / n:6.1f} {b / n / 1e9:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
