"""Fused Triton attention and token LayerNorm against the PyTorch paths on CUDA (prints tables).

(a) attention over [B=8192, H=8, T, D=2] bf16 for T in (16, 32, 64): models.nas.kernels'
    fused_attention vs the current unfused bf16 path (models.nas.ops._attend_bf16) and
    F.scaled_dot_product_attention; (b) token LayerNorm over [8192, 64, 16] (fp32 and bf16):
    the fused kernel vs F.layer_norm and the torch.compile'd ops._ln16 (the current CUDA default).
Times are medians of triton.testing.do_bench in ms: forward alone, forward + backward, and forward
+ backward replayed from a CUDA graph (GPU time alone, as in graph-captured training steps); the
speed-ups are against the references measured in the same run. At T = 64 the fused kernel is also
timed with t_valid = 32 and 16 (key and query chunks past t_valid are skipped). Prints "no CUDA"
without a GPU.

    PYTHONPATH=. python3 benchmarks/attention_kernels.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

B, H, D = 8192, 8, 2
T_MAX = 64
LN_SHAPE = (8192, 64, 16)


def graphed(fn):
    """fn captured in a CUDA graph (after two warm-up calls on a side stream): its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def timed(fn, inputs, grad):
    """ms of fn(*inputs): forward, forward + backward (from the fixed `grad`), and forward +
    backward replayed from a CUDA graph (no Python or launch overhead)."""
    from triton.testing import do_bench

    def fwd():
        with torch.no_grad():
            fn(*inputs)

    def fwd_bwd():
        fn(*inputs).backward(grad)

    try:
        eager = do_bench(fwd), do_bench(fwd_bwd, grad_to_none=inputs)
        for x in inputs:
            x.grad = None
        return (*eager, do_bench(graphed(fwd_bwd)))
    except Exception as e:  # noqa: BLE001 - a reference without a kernel for this shape
        print(f"  ({type(e).__name__}: {str(e)[:100]})")
        return float("nan"), float("nan"), float("nan")


def table(title, rows):
    """rows: (label, fwd, fwd+bwd, graphed fwd+bwd) in ms; speed-ups of the first row (the fused
    kernel) over each other row."""
    print(f"\n{title}")
    print(
        f"  {'impl':<34}{'fwd':>8}{'fwd+bwd':>9}{'graphed':>9}"
        f"   speed-up of the fused kernel: fwd, fwd+bwd, graphed"
    )
    base = rows[0][1:]
    for label, *ms in rows:
        line = f"  {label:<34}" + "".join(
            f"{x:>9.3f}" if i else f"{x:>8.3f}" for i, x in enumerate(ms)
        )
        if label != rows[0][0]:
            line += "   " + ", ".join(f"{x / b:.2f}x" for x, b in zip(ms, base, strict=True))
        print(line)


def attention_rows(t):
    from models.nas.kernels import fused_attention
    from models.nas.ops import _attend_bf16

    def leaf():
        return torch.randn(B, H, t, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    q, k, v = leaf(), leaf(), leaf()
    grad = torch.randn(B, H, t, D, device="cuda", dtype=torch.bfloat16)
    impls = [
        ("fused_attention (triton)", fused_attention),
        ("ops._attend_bf16 (bmm)", _attend_bf16),
        ("F.scaled_dot_product_attention", F.scaled_dot_product_attention),
    ]
    if t == T_MAX:  # the static-shape path: T at its maximum, t_valid (a tensor) tokens used
        for n in (32, 16):
            n_dev = torch.tensor(n, device="cuda")
            impls.append(
                (
                    f"  fused, t_valid={n} (tensor)",
                    lambda q, k, v, n=n_dev: fused_attention(q, k, v, n),
                )
            )
    return [(label, *timed(fn, (q, k, v), grad)) for label, fn in impls]


def layer_norm_rows(dtype):
    from models.nas.kernels import token_layer_norm
    from models.nas.ops import _ln16

    x = torch.randn(LN_SHAPE, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(16, device="cuda", requires_grad=True)
    b = torch.randn(16, device="cuda", requires_grad=True)
    grad = torch.randn(LN_SHAPE, device="cuda", dtype=dtype)
    compiled = torch.compile(_ln16, dynamic=False)
    impls = (
        ("token_layer_norm (triton)", token_layer_norm),
        ("F.layer_norm", lambda x, w, b: F.layer_norm(x, (16,), w.to(x.dtype), b.to(x.dtype))),
        ("compiled ops._ln16", lambda x, w, b: compiled(x, w, b).to(x.dtype)),
    )
    return [(label, *timed(fn, (x, w, b), grad)) for label, fn in impls]


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA")
        return
    from models.nas.kernels import triton_available

    if not triton_available():
        print("no triton")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for t in (16, 32, 64):
        table(f"attention [B={B}, H={H}, T={t}, D={D}] bf16", attention_rows(t))
    for dtype in (torch.float32, torch.bfloat16):
        table(f"token LayerNorm {list(LN_SHAPE)} {dtype}", layer_norm_rows(dtype))


if __name__ == "__main__":
    main()
