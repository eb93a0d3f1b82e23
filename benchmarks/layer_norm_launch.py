"""The row LayerNorm kernels (models/nas/kernels.py) at the training step's shapes, by the
backward's launch (warps, rows per block, loading a block ahead or not): forward and backward
times, the backward's effective bandwidth and its time against the default launch's (the first
row of each shape), measured in the same run (prints a table; no assertions; prints "no CUDA"
without a GPU).

Why: the eager attribution of session 13 (benchmarks/block_kernels.py, H100) had the masked
LayerNorm's backward over [8192, 1024] bf16 at 55 us, ~3.6x what its 50 MB need at HBM speed,
[8192, 512] at 28 us (~3.7x), the token LayerNorm's over [8192, 64, 16] at 26 us (~1.7x): the
wide rows' persistent loop (2 rows per block on 8 warps, a few programs per SM) looks bound by
the latency of each block's loads and cross-warp sums rather than by the bytes. This measures
which launch fills the memory system. Shapes: the token LayerNorm as the sparse ops run it
(features-first input, ReLU, token mask), the masked LayerNorm as the dense ops run it (a
column mask, a residual, bf16 output).

Times: medians of triton.testing.do_bench over CUDA-graph replays (GPU time alone, as in the
graphed training step); the backward is the forward + backward replay less the forward one.
GB/s: the backward's bytes (x and the output gradient read, the input gradient written) per
second.

Then (--table part-sums or both) the backward's second kernel, the sum of its per-program
partial weight and bias gradients ([G, 2N] fp32, G its persistent grid at the default launch),
by (columns per program, rows per step): times against the default (the first row).

    PYTHONPATH=. python3 benchmarks/layer_norm_launch.py [--table launches|part-sums|both]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.attention_kernels import graphed  # noqa: E402

BATCH = 8192
# (label, tokens, features, token LayerNorm?)
SHAPES = (
    ("token [8192, 64, 16]", 64, 16, True),
    ("token [8192, 32, 16]", 32, 16, True),
    ("masked [8192, 1024]", 1, 1024, False),
    ("masked [8192, 512]", 1, 512, False),
    ("masked [8192, 128]", 1, 128, False),
)


def backward_launches(n: int) -> list[tuple[int | None, int | None, bool]]:
    """The backward launches tried for rows of n features, as (warps, rows per block, loads
    ahead): the default launch (None, None) loading ahead and not; then each (warps, rows)
    holding 4 to 16 elements per thread, loading ahead (`kernels.KERNELS["ln_prefetch"]`'s
    default)."""
    width = 1 << (max(n, 2) - 1).bit_length()  # the kernels' padded width
    out: list[tuple[int | None, int | None, bool]] = [(None, None, True), (None, None, False)]
    for warps in (1, 2, 4, 8, 16):
        for rows in (1, 2, 4, 8, 16, 32, 64):
            if 4 <= rows * width // (32 * warps) <= 16:
                out.append((warps, rows, True))
    return out


def backward_bytes(rows: int, n: int, elem_bytes: int = 2) -> int:
    """Bytes the backward must move: x and the output gradient read, the input gradient written."""
    return 3 * rows * n * elem_bytes


def inputs(tokens: int, n: int, token_ln: bool, dev: str = "cuda") -> tuple:
    """(x, weight, bias, the other _RowLayerNorm arguments, output gradient) in bf16."""
    bf = torch.bfloat16
    w = torch.randn(n, device=dev, requires_grad=True)
    b = torch.randn(n, device=dev, requires_grad=True)
    if token_ln:  # features-first storage, read transposed as the token projection makes it
        x = torch.randn(BATCH, n, tokens, device=dev, dtype=bf).transpose(1, 2).requires_grad_()
        mask = (torch.arange(tokens, device=dev) < tokens * 3 // 4).float()
        extra = (None, 1e-5, True, mask, None, None, [])
        gy = torch.randn(BATCH, tokens, n, device=dev, dtype=bf)
    else:
        x = torch.randn(BATCH, n, device=dev, dtype=bf, requires_grad=True)
        r = torch.randn(BATCH, n, device=dev, dtype=bf, requires_grad=True)
        cols = (torch.arange(n, device=dev) < n * 3 // 4).float()
        extra = (r, 1e-5, False, None, cols, bf, [])
        gy = torch.randn(BATCH, n, device=dev, dtype=bf)
    return x, w, b, extra, gy


def measure(dev: str = "cuda", shapes: tuple = SHAPES) -> list[tuple]:
    """(shape, launch, forward us, backward us, backward GB/s, programs per SM) per launch."""
    from triton.testing import do_bench

    from models.nas import kernels as K

    rows_out = []
    for label, tokens, n, token_ln in shapes:
        for warps, rows, prefetch in backward_launches(n):
            if warps is None:
                _, rows, warps = K._ln_launch(n, backward=True)
            saved = dict(K.KERNELS)
            K.KERNELS.update(ln_bwd_warps=warps, ln_bwd_rows=rows, ln_prefetch=prefetch)
            K._LN_FIT.clear()
            try:
                x, w, b, extra, gy = inputs(tokens, n, token_ln, dev)

                def fwd(x=x, w=w, b=b, extra=extra):  # noqa: ANN001, ANN202
                    return K._RowLayerNorm.apply(x, w, b, *extra)

                def both(gy=gy):  # noqa: ANN001, ANN202
                    fwd().backward(gy)

                with torch.no_grad():
                    t_fwd = do_bench(graphed(fwd), rep=200)
                both()  # the key's first launch: residency learnt before the capture
                t_bwd = do_bench(graphed(both), rep=200) - t_fwd
            finally:
                K.KERNELS.update(saved)
            fit = max((v for k, v in K._LN_FIT.items() if k[0] == "bwd"), default=0)
            gbs = backward_bytes(BATCH * tokens, n) / (t_bwd * 1e-3) / 1e9
            name = f"({warps}, {rows}) ahead {'on' if prefetch else 'off'}"
            rows_out.append((label, name, t_fwd * 1e3, t_bwd * 1e3, gbs, fit))
    return rows_out


def part_sum_launches(default: tuple[int, int]) -> list[tuple[int, int]]:
    """(columns per program, rows per step) tried for the partial sums: the default first."""
    tried = [(32, 128), (16, 256), (8, 256), (8, 512), (4, 512), (8, 1024), (4, 1024)]
    return [default] + [t for t in tried if t != default]


def measure_part_sums(dev: str = "cuda", shapes: tuple = SHAPES) -> list[tuple]:
    """(shape, G, C, (columns, rows), us) of the partial sums per shape and launch; G as the
    default backward launches it."""
    from triton.testing import do_bench

    from models.nas import kernels as K

    out, default = [], (K.LN_PART_COLS, K.LN_PART_ROWS)
    seen, part_sum = [], K._ln_part_sum
    for label, tokens, n, token_ln in shapes:
        K._LN_FIT.clear()
        x, w, b, extra, gy = inputs(tokens, n, token_ln, dev)
        K._ln_part_sum = lambda part: seen.append(part.shape) or part_sum(part)
        try:  # twice: the second launch has the grid its compiled kernel's residency allows
            for _ in range(2):
                K._RowLayerNorm.apply(x, w, b, *extra).backward(gy)
        finally:
            K._ln_part_sum = part_sum
        g = seen[-1][0]
        part = torch.randn(g, 2 * n, device=dev)
        for cols, step in part_sum_launches(default):
            K.LN_PART_COLS, K.LN_PART_ROWS = cols, step
            try:
                t = do_bench(graphed(lambda part=part: K._ln_part_sum(part)), rep=100)
            finally:
                K.LN_PART_COLS, K.LN_PART_ROWS = default
            out.append((label, g, 2 * n, (cols, step), t * 1e3))
    return out


def print_launches() -> None:
    """The backward launches' table (`measure`), each against its shape's default."""
    print(f"{'shape':<22}{'backward (warps, rows), loads ahead':<36}{'fwd us':>8}{'bwd us':>8}{'GB/s':>7}"
          f"{'per SM':>7}{'vs default':>11}")  # fmt: skip
    base = {}
    for label, name, fwd_us, bwd_us, gbs, fit in measure():
        base.setdefault(label, bwd_us)
        print(f"{label:<22}{name:<36}{fwd_us:8.1f}{bwd_us:8.1f}{gbs:7.0f}{fit:7d}"
              f"{bwd_us / base[label]:10.2f}x")  # fmt: skip


def print_part_sums() -> None:
    """The partial sums' table (`measure_part_sums`), each against its shape's default."""
    print(f"{'partial sums':<22}{'[G, C]':<14}{'(columns, rows)':<18}{'us':>7}{'vs default':>11}")
    base = {}
    for label, g, c, launch, us in measure_part_sums():
        base.setdefault(label, us)
        print(f"{label:<22}{f'[{g}, {c}]':<14}{str(launch):<18}{us:7.1f}{us / base[label]:10.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", choices=("launches", "part-sums", "both"), default="both")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    if args.table != "part-sums":
        print_launches()
    if args.table != "launches":
        print_part_sums()


if __name__ == "__main__":
    main()
