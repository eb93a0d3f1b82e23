"""Host-side cost of a bf16 matmul launch on CUDA for repeated vs ever-new shapes (prints a table).

Sampled subnets give the supernet's Linears new (m, k, n) shapes almost every step; this measures
what a new shape costs on the host (library heuristics) against a repeated one.

    PYTHONPATH=. python benchmarks/train_mm_shapes.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def host_us(fn, n):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


def main() -> None:
    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    x = torch.randn(64, 8192, device=dev, dtype=torch.bfloat16)
    w = torch.randn(1024, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(1024, device=dev, dtype=torch.bfloat16)
    ks = rng.integers(16, 6000, 400)
    ns = rng.choice([16, 32, 64, 128, 256, 512, 768, 1024], 400)
    pad = lambda v: int(-(-v // 64) * 64)  # noqa: E731
    rows = []
    for label, fn in (
        ("same shape, F.linear+bias", lambda i: F.linear(x[:, :1000], w[:256, :1000], b[:256])),
        (
            "new shapes, F.linear+bias",
            lambda i: F.linear(x[:, : ks[i]], w[: ns[i], : ks[i]], b[: ns[i]]),
        ),
        (
            "new shapes, K padded to 64",
            lambda i: F.linear(x[:, : pad(ks[i])], w[: ns[i], : pad(ks[i])], b[: ns[i]]),
        ),
        (
            "new shapes again (cached?)",
            lambda i: F.linear(x[:, : ks[i]], w[: ns[i], : ks[i]], b[: ns[i]]),
        ),
        ("new shapes, matmul no bias", lambda i: x[:, : ks[i]] @ w[: ns[i], : ks[i]].T),
    ):
        fn(0)
        rows.append((label, host_us(fn, 400)))
    for lib in ("cublas", "cublaslt"):
        try:
            torch.backends.cuda.preferred_blas_library(lib)
            ks2 = rng.integers(16, 6000, 400)
            rows.append(
                (
                    f"fresh shapes, preferred {lib}",
                    host_us(
                        lambda i, ks2=ks2: F.linear(
                            x[:, : ks2[i]], w[: ns[i], : ks2[i]], b[: ns[i]]
                        ),
                        400,
                    ),
                )
            )
        except Exception as exc:  # noqa: BLE001
            rows.append((f"{lib}: {exc}"[:40], float("nan")))
    print(f"{'case':36s} {'host us/call':>12s}")
    for label, us in rows:
        print(f"{label:36s} {us:12.1f}")


if __name__ == "__main__":
    main()
