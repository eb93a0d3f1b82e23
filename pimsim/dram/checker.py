"""An independent checker of emitted command logs (test mode of `simulate_requests`).

It re-derives legality from the constraint list itself, pair by pair (not from the kernel's
ready-time arrays): every (earlier, later) command pair closer than a constraint's latency on a
matching node is a violation; so are more than `window` issues within a windowed latency, a
command to a bank in the wrong state, and two commands in one cycle from one controller.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pimsim.dram.constraints import (
    ACT,
    BANKGROUP,
    CHANNEL,
    COMMAND_NAMES,
    PRE,
    PREA,
    RANK,
    RD,
    RDA,
    REF,
    WR,
    WRA,
    dram_constraints,
)
from pimsim.spec import DramSpec


def check_command_log(spec: DramSpec, log: np.ndarray, data_path: str = "channel") -> list[str]:
    """Violations (empty when the schedule is legal) of a log with `simulate.LOG_COLUMNS`."""
    cons = dram_constraints(spec, data_path)
    pair: dict[tuple[int, int], list] = defaultdict(list)
    windowed = []
    for k in cons:
        if k.window > 1:
            windowed.append(k)
        else:
            pair[(k.prev, k.next)].append(k)
    horizon = max(k.latency_dram_cycles for k in cons)
    rows = [tuple(int(v) for v in r) for r in np.asarray(log)]
    errors: list[str] = []
    r_per_ch = spec.ranks_per_channel

    def where(r: tuple) -> str:
        return f"{COMMAND_NAMES[r[1]]}@{r[0]} (rank {r[3]}, bank {r[5]})"

    for j, b in enumerate(rows):
        i = j - 1
        while i >= 0 and b[0] - rows[i][0] < horizon:
            a = rows[i]
            i -= 1
            gap = b[0] - a[0]
            if a[2] == b[2] and gap == 0:
                errors.append(f"two commands in one cycle: {where(a)} and {where(b)}")
            for k in pair.get((a[1], b[1]), ()):
                if gap >= k.latency_dram_cycles:
                    continue
                same_ch = a[3] // r_per_ch == b[3] // r_per_ch
                if k.level == CHANNEL:
                    hit = same_ch
                elif k.level == RANK:
                    hit = (same_ch and a[3] != b[3]) if k.sibling else a[3] == b[3]
                elif k.level == BANKGROUP:
                    hit = a[4] >= 0 and a[4] == b[4]
                else:
                    hit = a[5] >= 0 and a[5] == b[5]
                if hit:
                    errors.append(f"{where(a)} -> {where(b)} breaks {k.describe()}")
    for k in windowed:
        times: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            if r[1] == k.prev:
                times[r[3]].append(r[0])
        for rank, ts in times.items():
            for x in range(k.window, len(ts)):
                if ts[x] - ts[x - k.window] < k.latency_dram_cycles:
                    errors.append(f"rank {rank}: {k.describe()} broken at cycle {ts[x]}")
    errors += _check_states(spec, rows)
    return errors


def _check_states(spec: DramSpec, rows: list[tuple]) -> list[str]:
    open_row: dict[int, int] = {}
    errors = []
    for r in rows:
        t, cmd, _, rank, _, bank, row = r
        if cmd == ACT:
            if bank in open_row:
                errors.append(f"ACT@{t} to open bank {bank}")
            open_row[bank] = row
        elif cmd in (PRE,):
            if bank not in open_row:
                errors.append(f"PRE@{t} to closed bank {bank}")
            open_row.pop(bank, None)
        elif cmd in (RD, WR, RDA, WRA):
            if open_row.get(bank) != row:
                errors.append(f"{COMMAND_NAMES[cmd]}@{t} to bank {bank} row {row} not open")
            if cmd in (RDA, WRA):
                open_row.pop(bank, None)
        elif cmd in (PREA, REF):
            banks = range(rank * spec.banks_per_rank, (rank + 1) * spec.banks_per_rank)
            if cmd == REF and any(bb in open_row for bb in banks):
                errors.append(f"REF@{t} with open banks in rank {rank}")
            for bb in banks:
                open_row.pop(bb, None)
    return errors
