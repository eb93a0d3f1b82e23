"""The jitted, event-driven memory controller (Ramulator 2 generic-controller semantics).

Per controller (a channel, or a rank for near-memory data paths): a read queue, a write queue
(each held as per-bank lists in age order) and an active buffer (requests whose row it opened);
one command per cycle. At each cycle the controller issues, in order of preference:
  1. the oldest ready request of the active buffer;
  2. while a refresh is pending for one of its ranks: PREA (once no active-buffer request
     targets that rank), then REF; nothing else;
  3. FR-FCFS over the read queue, or over the write queue while draining writes (enter when the
     write queue holds >= high-watermark entries or no read is queued; leave when it holds
     <= low-watermark entries and a read is queued): the oldest request among those whose next
     command (ACT, PRE or the column command) is ready first; a PRE that would close a row an
     active-buffer request waits for is held back.
Within a bank all requests that need the same command are ready at the same cycle, so each bank
offers at most two candidates per queue (the oldest row hit, or the oldest request when the bank
is closed; and the oldest other request, which needs PRE). Candidates and the bank-group and bank
part of their ready cycle are cached per bank and refreshed only when that bank's list, state or
bank-group timing changes; a scan adds the channel and rank part, shared by a rank's banks.
Instead of ticking, a controller's scan returns the first cycle at which it will issue and what;
nothing changes before then unless a request arrives or a refresh falls due, so the loop jumps
to the earliest of those events. The timing update and the candidate refresh are inlined by
hand: as separate njit functions with many array arguments they were measured 2-3x slower here.
"""
# ruff: noqa: ANN001, ANN201

from __future__ import annotations

import numpy as np
from numba import njit

INF = 1 << 62
HIT, MISS, CONFLICT, FORWARDED = 0, 1, 2, 3  # per-request row outcome codes
# decision kinds
K_NONE, K_ACTIVE, K_READ, K_WRITE, K_REFRESH = 0, 1, 2, 3, 4
# Command codes as in constraints.py: ACT 0, PRE 1, PREA 2, RD 3, WR 4, RDA 5, WRA 6, REF 7.


@njit(cache=True)
def _next_write_mode(mode, rq_len, wq_len, hi_wm, lo_wm):
    if not mode:
        return wq_len >= hi_wm or rq_len == 0
    return not (wq_len <= lo_wm and rq_len != 0)


@njit(cache=True)
def _remove(qb, qbn, q, b, i):
    m = qbn[q, b]
    pos = 0
    while qb[q, b, pos] != i:
        pos += 1
    for s in range(pos, m - 1):
        qb[q, b, s] = qb[q, b, s + 1]
    qbn[q, b] = m - 1


@njit(cache=True)
def simulate_kernel(
    req_ctrl, req_bank, req_row, req_write, req_arrival, req_line,
    bank_ch_node, bank_rank_node, bank_bg_node,
    n_ctrl, banks_per_ctrl, ranks_per_ctrl, banks_per_rank, banks_per_group, ranks_per_channel,
    rank_off, bank_off,
    rq_cap, wq_cap, hi_wm, lo_wm, closed_policy, fcfs, read_latency, write_latency, trefi,
    prev_start, level, next_cmd, latency, sibling, win_prev, win_next, win_latency, win_size,
    ready, win_hist, win_count,
    enqueue_cycle, done_cycle, outcome, cmd_counts, rank_active_cycles, log, loop_stats,
):  # fmt: skip
    """Run all requests; returns (status 0 ok / 1 deadlock, commands logged, last cycle)."""
    n = req_ctrl.shape[0]
    n_banks = bank_ch_node.shape[0]
    n_ranks = rank_active_cycles.shape[0]
    open_row = np.full(n_banks, -1, np.int64)
    rank_open = np.zeros(n_ranks, np.int64)
    rank_open_since = np.zeros(n_ranks, np.int64)
    ref_pending = np.zeros(n_ranks, np.int64)
    # per-bank request lists, oldest first: [0] reads, [1] writes
    qb = np.empty((2, n_banks, max(rq_cap, wq_cap)), np.int64)
    qbn = np.zeros((2, n_banks), np.int64)
    hits = np.zeros((2, n_banks), np.int64)  # list entries whose row is the open row
    cand = np.full((2, 2, 3, n_banks), INF, np.int64)  # see _refresh_candidates
    base = np.zeros(8, np.int64)  # channel and rank part of the ready cycle, per command
    dirty = np.zeros(n_banks, np.bool_)  # banks whose candidates must be re-derived
    rq_n = np.zeros(n_ctrl, np.int64)
    wq_n = np.zeros(n_ctrl, np.int64)
    aq = np.empty((n_ctrl, banks_per_ctrl), np.int64)
    aq_n = np.zeros(n_ctrl, np.int64)
    write_mode = np.zeros(n_ctrl, np.bool_)
    ctrl_free = np.zeros(n_ctrl, np.int64)
    valid = np.zeros(n_ctrl, np.bool_)
    dec_t = np.full(n_ctrl, INF, np.int64)
    dec_kind = np.zeros(n_ctrl, np.int64)
    dec_id = np.zeros(n_ctrl, np.int64)
    dec_cmd = np.zeros(n_ctrl, np.int64)
    log_cap = log.shape[0]
    n_log = 0
    head = 0
    front_min = 0
    now = 0
    next_ref = trefi if trefi > 0 else INF
    n_done = 0
    last = 0
    outcome[:] = -1
    merge_arrival = False
    while n_done < n:
        loop_stats[0] += 1
        do_arrivals = merge_arrival
        if merge_arrival:
            merge_arrival = False
            now += 1
        else:
            # ---- the frontend's next enqueue (in order; blocks while the target queue is full)
            t_front = INF
            if head < n:
                c = req_ctrl[head]
                room = (wq_n[c] < wq_cap) if req_write[head] else (rq_n[c] < rq_cap)
                if room:
                    t_front = max(req_arrival[head], front_min)
            # ---- every invalidated controller decides its next issue
            best_c = -1
            best_t = INF
            for c in range(n_ctrl):
                if not valid[c]:
                    loop_stats[1] += 1
                    t0 = max(now, ctrl_free[c])
                    kind, did, dcmd, t = K_NONE, -1, -1, INF
                    for s in range(aq_n[c]):
                        i = aq[c, s]
                        b = req_bank[i]
                        cmd = 4 if req_write[i] else 3
                        r = ready[bank_ch_node[b], cmd]
                        x = ready[bank_rank_node[b], cmd]
                        if x > r:
                            r = x
                        x = ready[bank_bg_node[b], cmd]
                        if x > r:
                            r = x
                        x = ready[bank_off + b, cmd]
                        if x > r:
                            r = x
                        if r < t0:
                            r = t0
                        if r < t or (r == t and i < did):
                            kind, did, dcmd, t = K_ACTIVE, i, cmd, r
                    ta = t
                    ref_rank = -1
                    for rr in range(c * ranks_per_ctrl, (c + 1) * ranks_per_ctrl):
                        if ref_pending[rr] > 0:
                            ref_rank = rr
                            break
                    if ref_rank >= 0:
                        rcmd = 2 if rank_open[ref_rank] > 0 else 7
                        blocked = False
                        if rcmd == 2:
                            for s in range(aq_n[c]):
                                if req_bank[aq[c, s]] // banks_per_rank == ref_rank:
                                    blocked = True
                        if not blocked:
                            tr = max(
                                ready[ref_rank // ranks_per_channel, rcmd],
                                ready[rank_off + ref_rank, rcmd],
                            )
                            if tr < t0:
                                tr = t0
                            if tr < t:
                                kind, did, dcmd, t = K_REFRESH, ref_rank, rcmd, tr
                    else:
                        wm = _next_write_mode(write_mode[c], rq_n[c], wq_n[c], hi_wm, lo_wm)
                        write_mode[c] = wm
                        q = 1 if wm else 0
                        bkind = K_WRITE if wm else K_READ
                        cas = 4 if wm else 3
                        b_from = c * banks_per_ctrl
                        b_to = b_from + banks_per_ctrl
                        fcfs_id = -1
                        if fcfs:  # only the oldest request of the queue is a candidate
                            oldest, ob = INF, -1
                            for b in range(b_from, b_to):
                                if qbn[q, b] > 0 and qb[q, b, 0] < oldest:
                                    oldest, ob = qb[q, b, 0], b
                            b_from, b_to = (ob, ob + 1) if ob >= 0 else (0, 0)
                            fcfs_id = oldest
                        tb, b_id, b_cmd = INF, INF, -1
                        cur_rank = -1
                        for b in range(b_from, b_to):
                            if dirty[b]:  # re-derive this bank's candidates
                                dirty[b] = False
                                orow = open_row[b]
                                bgn = bank_bg_node[b]
                                bkn = bank_off + b
                                for qq in range(2):
                                    m = qbn[qq, b]
                                    cand[qq, 0, 2, b] = INF
                                    cand[qq, 1, 2, b] = INF
                                    if m == 0:
                                        continue
                                    if orow < 0:
                                        cand[qq, 0, 0, b] = qb[qq, b, 0]
                                        cand[qq, 0, 1, b] = 0
                                        cand[qq, 0, 2, b] = max(ready[bgn, 0], ready[bkn, 0])
                                        continue
                                    if hits[qq, b] > 0:
                                        s = 0
                                        while req_row[qb[qq, b, s]] != orow:
                                            s += 1
                                        cmd = 3 + qq
                                        cand[qq, 0, 0, b] = qb[qq, b, s]
                                        cand[qq, 0, 1, b] = cmd
                                        cand[qq, 0, 2, b] = max(ready[bgn, cmd], ready[bkn, cmd])
                                    if hits[qq, b] < m:
                                        s = 0
                                        while req_row[qb[qq, b, s]] == orow:
                                            s += 1
                                        cand[qq, 1, 0, b] = qb[qq, b, s]
                                        cand[qq, 1, 1, b] = 1
                                        cand[qq, 1, 2, b] = max(ready[bgn, 1], ready[bkn, 1])
                            rk = bank_rank_node[b]
                            if rk != cur_rank:  # channel and rank part, shared by the rank's banks
                                cur_rank = rk
                                chn = bank_ch_node[b]
                                base[0] = max(ready[chn, 0], ready[rk, 0])
                                base[1] = max(ready[chn, 1], ready[rk, 1])
                                base[cas] = max(ready[chn, cas], ready[rk, cas])
                            for slot in range(2):
                                loc = cand[q, slot, 2, b]
                                if loc >= INF:
                                    continue
                                cid = cand[q, slot, 0, b]
                                if fcfs and cid != fcfs_id:
                                    continue
                                r = max(loc, base[cand[q, slot, 1, b]], t0)
                                if r < tb or (r == tb and cid < b_id):
                                    tb, b_id, b_cmd = r, cid, cand[q, slot, 1, b]
                        if tb < t:
                            guarded = False
                            if b_cmd == 1:
                                for s in range(aq_n[c]):
                                    if req_bank[aq[c, s]] == req_bank[b_id]:
                                        guarded = True
                            if guarded:  # re-decide next cycle or when the active request issues
                                loop_stats[2] += 1
                                kind, did, dcmd, t = K_NONE, -1, -1, min(ta, tb + 1)
                            else:
                                kind, did, dcmd, t = bkind, b_id, b_cmd, tb
                    valid[c] = True
                    dec_t[c], dec_kind[c], dec_id[c], dec_cmd[c] = t, kind, did, dcmd
                if dec_t[c] < best_t:
                    best_t, best_c = dec_t[c], c
            if best_t >= INF and t_front >= INF:
                return 1, n_log, last
            # ---- events first: a refresh falling due, or requests arriving
            if next_ref <= best_t or t_front <= best_t:
                if next_ref <= t_front:
                    now = next_ref
                    next_ref += trefi
                    ref_pending += 1
                    valid[:] = False
                    continue
                now = t_front
                do_arrivals = True
        if do_arrivals:
            while head < n and req_arrival[head] <= now:
                i = head
                c = req_ctrl[i]
                b = req_bank[i]
                if req_write[i]:
                    if wq_n[c] >= wq_cap:
                        break
                    qb[1, b, qbn[1, b]] = i
                    qbn[1, b] += 1
                    wq_n[c] += 1
                    if req_row[i] == open_row[b]:
                        hits[1, b] += 1
                else:
                    if rq_n[c] >= rq_cap:
                        break
                    fwd = False
                    for s in range(qbn[1, b]):
                        if req_line[qb[1, b, s]] == req_line[i]:
                            fwd = True
                    if fwd:  # served from the write queue (write-to-read forwarding)
                        enqueue_cycle[i] = now
                        done_cycle[i] = now + 1
                        last = max(last, now + 1)
                        outcome[i] = FORWARDED
                        n_done += 1
                        head += 1
                        continue
                    qb[0, b, qbn[0, b]] = i
                    qbn[0, b] += 1
                    rq_n[c] += 1
                    if req_row[i] == open_row[b]:
                        hits[0, b] += 1
                enqueue_cycle[i] = now
                head += 1
                dirty[b] = True
                refreshing = False
                for rr in range(c * ranks_per_ctrl, (c + 1) * ranks_per_ctrl):
                    if ref_pending[rr] > 0:
                        refreshing = True
                if refreshing:
                    continue  # meanwhile only the active buffer and the refresh are served
                if not valid[c] or fcfs or dec_kind[c] == K_NONE:
                    valid[c] = False
                    continue
                # a younger request changes the decision only if it is ready strictly earlier
                wm = _next_write_mode(write_mode[c], rq_n[c], wq_n[c], hi_wm, lo_wm)
                if wm != write_mode[c]:
                    valid[c] = False
                    continue
                if wm != (req_write[i] != 0):
                    continue
                orow = open_row[b]
                if orow < 0:
                    cmd = 0
                elif orow == req_row[i]:
                    cmd = 4 if req_write[i] else 3
                else:
                    cmd = 1
                r = ready[bank_ch_node[b], cmd]
                x = ready[bank_rank_node[b], cmd]
                if x > r:
                    r = x
                x = ready[bank_bg_node[b], cmd]
                if x > r:
                    r = x
                x = ready[bank_off + b, cmd]
                if x > r:
                    r = x
                r = max(r, now, ctrl_free[c])
                if r < dec_t[c]:
                    if cmd == 1:
                        for s in range(aq_n[c]):
                            if req_bank[aq[c, s]] == b:
                                r = INF
                    if r < dec_t[c]:
                        dec_t[c], dec_id[c], dec_cmd[c] = r, i, cmd
                        dec_kind[c] = K_WRITE if req_write[i] else K_READ
            continue
        # ---- issue the earliest decision
        c = best_c
        now = best_t
        kind = dec_kind[c]
        valid[c] = False
        if kind == K_NONE:
            continue
        cmd = dec_cmd[c]
        i = dec_id[c]
        if kind == K_REFRESH:
            rr, b, row = i, -1, -1
            chn, rkn, bgn, bkn = rr // ranks_per_channel, rank_off + rr, -1, -1
            if cmd == 2:
                for bb in range(rr * banks_per_rank, (rr + 1) * banks_per_rank):
                    open_row[bb] = -1
                    hits[0, bb] = 0
                    hits[1, bb] = 0
                rank_active_cycles[rr] += now - rank_open_since[rr]
                rank_open[rr] = 0
            else:
                ref_pending[rr] -= 1
        else:
            b = req_bank[i]
            row = req_row[i]
            rr = b // banks_per_rank
            chn, rkn, bgn, bkn = bank_ch_node[b], bank_rank_node[b], bank_bg_node[b], bank_off + b
            if outcome[i] < 0:
                outcome[i] = MISS if cmd == 0 else (CONFLICT if cmd == 1 else HIT)
            if cmd == 0:  # ACT: the request moves to the active buffer
                q = 0 if kind == K_READ else 1
                _remove(qb, qbn, q, b, i)
                if q == 0:
                    rq_n[c] -= 1
                else:
                    wq_n[c] -= 1
                front_min = now + 1
                aq[c, aq_n[c]] = i
                aq_n[c] += 1
                open_row[b] = row
                for q in range(2):
                    h = 0
                    for s in range(qbn[q, b]):
                        if req_row[qb[q, b, s]] == row:
                            h += 1
                    hits[q, b] = h
                if rank_open[rr] == 0:
                    rank_open_since[rr] = now
                rank_open[rr] += 1
            elif cmd == 1:
                open_row[b] = -1
                hits[0, b] = 0
                hits[1, b] = 0
                rank_open[rr] -= 1
                if rank_open[rr] == 0:
                    rank_active_cycles[rr] += now - rank_open_since[rr]
            else:  # the column command: the request's last
                if kind == K_ACTIVE:
                    pos = 0
                    while aq[c, pos] != i:
                        pos += 1
                    for s in range(pos, aq_n[c] - 1):
                        aq[c, s] = aq[c, s + 1]
                    aq_n[c] -= 1
                else:
                    q = 0 if kind == K_READ else 1
                    _remove(qb, qbn, q, b, i)
                    hits[q, b] -= 1
                    if q == 0:
                        rq_n[c] -= 1
                    else:
                        wq_n[c] -= 1
                    front_min = now + 1
                wanted = hits[0, b] + hits[1, b]  # queued requests for this open row
                for s in range(aq_n[c]):  # and one that opened it, if another request did
                    if req_bank[aq[c, s]] == b:
                        wanted += 1
                if closed_policy and wanted == 0:
                    cmd += 2  # RDA / WRA: auto-precharge, no other request wants this row
                    open_row[b] = -1
                    rank_open[rr] -= 1
                    if rank_open[rr] == 0:
                        rank_active_cycles[rr] += now - rank_open_since[rr]
                done_cycle[i] = now + (write_latency if req_write[i] else read_latency)
                if done_cycle[i] > last:
                    last = done_cycle[i]
                n_done += 1
        # ---- record the issue in the timing state, then refresh the cached candidates of the
        # banks whose bank-group or bank timing (or state) it changed
        for k in range(prev_start[cmd], prev_start[cmd + 1]):  # record_issue(), inlined
            v = now + latency[k]
            nx = next_cmd[k]
            lv = level[k]
            if lv == 0:
                node = chn
            elif lv == 1:
                if sibling[k] != 0:
                    first = rank_off + (rr // ranks_per_channel) * ranks_per_channel
                    for other in range(first, first + ranks_per_channel):
                        if other != rkn and ready[other, nx] < v:
                            ready[other, nx] = v
                    continue
                node = rkn
            elif lv == 2:
                node = bgn
            else:
                node = bkn
            if node >= 0 and ready[node, nx] < v:
                ready[node, nx] = v
        for w in range(win_prev.shape[0]):
            if win_prev[w] == cmd:
                size = win_size[w]
                count = win_count[w, rr]
                win_hist[w, rr, count % size] = now
                count += 1
                win_count[w, rr] = count
                if count >= size:
                    v = win_hist[w, rr, count % size] + win_latency[w]
                    if ready[rkn, win_next[w]] < v:
                        ready[rkn, win_next[w]] = v
        if b >= 0:
            b_lo = b - b % banks_per_group
            b_hi = b_lo + banks_per_group
        elif cmd == 2:
            b_lo = rr * banks_per_rank
            b_hi = b_lo + banks_per_rank
        else:
            b_lo = b_hi = 0
        for bb in range(b_lo, b_hi):
            dirty[bb] = True
        cmd_counts[cmd] += 1
        ctrl_free[c] = now + 1
        # the frontend refills a freed slot at the next cycle: do it now when no other event
        # can come first (saves a loop iteration per request)
        if (
            head < n
            and front_min == now + 1
            and req_arrival[head] <= now + 1
            and next_ref > now + 1
        ):
            early = False
            for cc in range(n_ctrl):
                if cc != c and (not valid[cc] or dec_t[cc] <= now):
                    early = True
            if not early:
                merge_arrival = True
        if n_log < log_cap:
            log[n_log, 0] = now
            log[n_log, 1] = cmd
            log[n_log, 2] = c
            log[n_log, 3] = rr
            log[n_log, 4] = bgn
            log[n_log, 5] = b
            log[n_log, 6] = row
            n_log += 1
    for rr in range(n_ranks):
        if rank_open[rr] > 0:
            rank_active_cycles[rr] += max(last, rank_open_since[rr]) - rank_open_since[rr]
    return 0, n_log, last
