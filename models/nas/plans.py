"""Execution plans of the supernet: which ops, inputs, sizes and column selections each block uses.

`subnet_plans` turns a subnet record into per-block `BlockPlan`s (None for dead blocks) plus the
head's column selection, either into the supernet's max-width layouts (`shared=True`, index arrays
moved to the device in one pinned, non-blocking copy) or for a standalone model (no selections).
`full_plans` is the full supernet. Layouts are described in models/nas/supernet.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from models.nas.ops import EMB, Cols
from models.nas.space import BINARY_DENSE_OPS, D2S_TOKENS, SearchSpace, Subnet, get_space


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """How one block runs: ops, input nodes, output sizes, switches and column selections."""

    dense_ops: tuple[str, ...]
    sparse_ops: tuple[str, ...]
    dense_nodes: tuple[int, ...]  # concatenated input of fc / dot
    binary_nodes: tuple[int, int] | None  # (left, right) of gating / sum
    sparse_nodes: tuple[int, ...]
    d: int
    t: int
    d2s: bool
    s2d: bool
    dense_cols: Cols = None
    tok_cols: Cols = None


def _cols(parts: list[np.ndarray], total: int) -> Cols | np.ndarray:
    idx = np.concatenate(parts)
    if np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return None if (idx[0] == 0 and len(idx) == total) else slice(int(idx[0]), int(idx[-1]) + 1)
    return idx.astype(np.int64)


# Gathered dense input columns can be padded (with zero inputs) to a multiple of this many, so the
# matmul shapes of sampled subnets repeat and the BLAS library's per-shape heuristics stay cached (a
# new shape cost ~150 us of host time on the H200 machine: benchmarks/train_mm_shapes.py). An A/B
# in one run (train_supernet.py --ab-pad) showed no gain at batch 8192 (254k vs 248k, 261k vs 260k
# samples/s), so it is off: 0 = off, "auto" = 128 on CUDA, an int forces it (tested exact).
PAD_COLS: dict[str, Any] = {"multiple": 0}


def _pad(cols: Any, device: torch.device | None) -> Any:
    multiple = PAD_COLS["multiple"]
    if multiple == "auto":
        multiple = 128 if device is not None and device.type == "cuda" else 0
    if not isinstance(cols, np.ndarray) or not multiple or len(cols) % multiple == 0:
        return cols
    extra = multiple - len(cols) % multiple
    return np.concatenate([cols, np.full(extra, cols[0], dtype=cols.dtype)])


def _to_device(plans: list[BlockPlan | None], head: Any, device: torch.device | None) -> tuple:
    """Move every index array of the plans to `device` in one (pinned, non-blocking) copy, so a
    new subnet costs one transfer and no host-device synchronisation."""
    arrays = [
        a for p in plans if p for a in (p.dense_cols, p.tok_cols) if isinstance(a, np.ndarray)
    ]
    arrays += [head] if isinstance(head, np.ndarray) else []
    if not arrays:
        return plans, head
    buf = torch.from_numpy(np.concatenate(arrays))
    if device is not None and device.type == "cuda":
        buf = buf.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        buf = buf.to(device)
    views, at = {}, 0
    for a in arrays:
        views[id(a)] = buf[at : at + len(a)]
        at += len(a)

    def conv(x: Any) -> Any:
        return views[id(x)] if isinstance(x, np.ndarray) else x

    plans = [
        None if p is None else replace(p, dense_cols=conv(p.dense_cols), tok_cols=conv(p.tok_cols))
        for p in plans
    ]
    return plans, conv(head)


def subnet_plans(
    subnet: Subnet, n_dense: int, n_sparse: int, *, shared: bool, device: torch.device | None = None
) -> tuple[list[BlockPlan | None], Cols, list[int], list[int]]:
    """Plans of the live blocks (None for dead ones) and the head's column selection.

    `shared=True` gives selections into the supernet's max-width layouts; False gives the
    standalone plans (no selections). Also returns every node's dense width and token count.
    """
    space = get_space(subnet.space)
    wmax, tslot = space.max_width, space.max_tokens + D2S_TOKENS
    widths, tokens = [n_dense], [n_sparse]
    positions = [np.arange(n_sparse)]
    live = set(subnet.live_blocks())
    plans: list[BlockPlan | None] = []
    for i, b in enumerate(subnet.blocks):
        pos = np.arange(b.sparse_tokens)
        if b.dense_to_sparse:
            pos = np.concatenate([pos, np.arange(tslot - D2S_TOKENS, tslot)])
        widths.append(b.dense_width)
        tokens.append(len(pos))
        positions.append(pos)
        if i not in live:
            plans.append(None)
            continue
        binary = b.dense_op in BINARY_DENSE_OPS
        dense_cols = tok_cols = None
        if shared:
            off_d = [0] + [n_dense + wmax * j for j in range(i)]
            off_t = [0] + [n_sparse + tslot * j for j in range(i)]
            if not binary:
                d_parts = [off_d[j] + np.arange(widths[j]) for j in b.dense_inputs]
                dense_cols = _pad(_cols(d_parts, n_dense + wmax * i), device)
            t_parts = [off_t[j] + positions[j] for j in b.sparse_inputs]
            tok_cols = _cols(t_parts, n_sparse + tslot * i)
        plans.append(
            BlockPlan(
                (b.dense_op,),
                (b.sparse_op,),
                () if binary else b.dense_inputs,
                b.dense_inputs if binary else None,
                b.sparse_inputs,
                b.dense_width,
                b.sparse_tokens,
                b.dense_to_sparse,
                b.sparse_to_dense,
                dense_cols,
                tok_cols,
            )
        )
    head_cols = None
    if shared:
        last = positions[-1]
        parts = [np.arange(widths[-1]), (wmax + last[:, None] * EMB + np.arange(EMB)).ravel()]
        head_cols = _cols(parts, wmax + tslot * EMB)
        plans, head_cols = _to_device(plans, head_cols, device)
    return plans, head_cols, widths, tokens


def full_plans(space: SearchSpace) -> list[BlockPlan]:
    """The full supernet: all ops, all connections, maximum widths, both switches."""
    binary = any(op in BINARY_DENSE_OPS for op in space.dense_ops)
    return [
        BlockPlan(
            space.dense_ops,
            space.sparse_ops,
            tuple(range(i + 1)),
            (i, max(i - 1, 0)) if binary else None,
            tuple(range(i + 1)),
            space.max_width,
            space.max_tokens,
            True,
            True,
        )
        for i in range(space.n_blocks)
    ]
