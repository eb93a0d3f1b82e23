"""Jitted timing state: the earliest legal cycle of a command, and the update when one issues.

State is one int64 array `ready[node, command]`: the earliest cycle `command` may issue at `node`.
Nodes are numbered channels first, then ranks, bank groups and banks (see `node_offsets`), so a
command's earliest cycle is a max over the (up to) four nodes on its path. Windowed constraints
(4 ACT per tFAW) keep a ring of the last issue cycles per rank in `win_hist[w, rank, :]`.
"""

# ruff: noqa: ANN001, ANN201

from __future__ import annotations

import numpy as np
from numba import njit

from pimsim.dram.constraints import N_COMMANDS, CompiledConstraints


def node_offsets(channels: int, ranks: int, bankgroups: int, banks: int) -> tuple[int, ...]:
    """(rank_offset, bankgroup_offset, bank_offset, n_nodes) for the flat `ready` array."""
    rank_off = channels
    bg_off = rank_off + ranks
    bank_off = bg_off + bankgroups
    return rank_off, bg_off, bank_off, bank_off + banks


def new_timing_state(
    n_nodes: int, n_ranks: int, cc: CompiledConstraints
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh (ready, win_hist, win_count): everything may issue at cycle 0."""
    n_win = len(cc.win_prev)
    max_w = int(cc.win_size.max()) if n_win else 1
    return (
        np.zeros((n_nodes, N_COMMANDS), dtype=np.int64),
        np.zeros((max(n_win, 1), n_ranks, max_w), dtype=np.int64),
        np.zeros((max(n_win, 1), n_ranks), dtype=np.int64),
    )


@njit(cache=True)
def earliest_cycle(ready, cmd, ch_node, rank_node, bg_node, bank_node):
    """Earliest cycle `cmd` may issue on the path; bg_node/bank_node < 0 for rank commands."""
    t = ready[ch_node, cmd]
    r = ready[rank_node, cmd]
    if r > t:
        t = r
    if bg_node >= 0:
        r = ready[bg_node, cmd]
        if r > t:
            t = r
        r = ready[bank_node, cmd]
        if r > t:
            t = r
    return t


@njit(cache=True)
def record_issue(
    ready,
    win_hist,
    win_count,
    cmd,
    t,
    ch_node,
    rank_node,
    bg_node,
    bank_node,
    rank_off,
    ranks_per_channel,
    prev_start,
    level,
    next_cmd,
    latency,
    sibling,
    win_prev,
    win_next,
    win_latency,
    win_size,
):
    """Apply every constraint whose `prev` is `cmd`, issued at cycle `t` on the given path."""
    for k in range(prev_start[cmd], prev_start[cmd + 1]):
        v = t + latency[k]
        n = next_cmd[k]
        lv = level[k]
        if lv == 0:
            node = ch_node
        elif lv == 1:
            if sibling[k] != 0:
                first = rank_off + ((rank_node - rank_off) // ranks_per_channel) * ranks_per_channel
                for other in range(first, first + ranks_per_channel):
                    if other != rank_node and ready[other, n] < v:
                        ready[other, n] = v
                continue
            node = rank_node
        elif lv == 2:
            node = bg_node
        else:
            node = bank_node
        if node >= 0 and ready[node, n] < v:
            ready[node, n] = v
    rank = rank_node - rank_off
    for w in range(win_prev.shape[0]):
        if win_prev[w] != cmd:
            continue
        size = win_size[w]
        count = win_count[w, rank]
        win_hist[w, rank, count % size] = t
        count += 1
        win_count[w, rank] = count
        if count >= size:
            v = win_hist[w, rank, count % size] + win_latency[w]
            n = win_next[w]
            if ready[rank_node, n] < v:
                ready[rank_node, n] = v
