"""Supernet training throughput and single-path overhead (prints a table; no assertions).

Measures, on one device:
  1. supernet training samples/s, sampled single paths (the NASRec step after warm-up), batches
     streamed from the prepared shards through `BatchStream` (numpy gather in a child process
     on CUDA, in a thread on the CPU; the copy to the GPU one batch ahead), Adagrad + clipping,
     bf16 autocast on CUDA;
  2. the same with the full supernet (the warm-up step);
  3. the end-to-end `train_supernet` command path (checkpoint writes excluded by the trainer);
  4. per sampled path: step time through the supernet / step time of the extracted standalone
     subnet (same weights, same on-device batch, own Adagrad), in the same process: both eager,
     and on CUDA both as CUDA graphs (models/nas/graphs.py).
The graphed row is steady state: a warm-up pass over --steps sampled subnets captures their
block graphs, then --passes timed passes replay the same subnets (no capture inside the timing);
the row is their median, and a note gives the fastest and slowest pass (runs in one call on an
H100 in session 18 spread over 887-957k samples/s, one pass each). Another note gives the host's
own time per step (each step issued into an idle GPU): where it nears the step time, the host
bounds the step and host-side changes count; well below it, only GPU time does.

    PYTHONPATH=. python benchmarks/train_supernet.py --device cuda --batch-size 8192
    ... --ab clip_norm=foreach --ab loader=thread,h2d=inline   (A/B passes in one process)
    .venv/bin/python benchmarks/train_supernet.py --device cpu --steps 6 --paths 3
Measured 2026-12-07, session 23 (same settings; torch 2.11.0+cu130, Triton 3.6.0): 093f48a on
  an NVIDIA H200 at 1,106,370 and 1,102,242 samples/s (7.40 and 7.43 ms per step; passes
  7.40-7.44), the host 3.2 ms per step; --ab clip_norm=foreach 1.005x, loader=thread 1.000x.
  Single-path overhead 1.08x median, 1.10x max over 3 paths (eager). On an H100 the same code
  at 1,001,878 (8.18 ms), the host 6.4 ms; clip_norm=foreach 1.006x, loader=thread 1.028x.
Measured 2026-12-07, session 22 (same settings; four calls on H100s, Triton 3.6; no H200
  came): 9ae5ffd (loader thread) at 9.15, 10.98 and 9.84 ms per step on one machine (10.90
  and 10.52 with --switch h2d=inline), 12.81 on a second; the host's time to issue a step
  into an idle GPU 7.1-11.0 ms: the host bounds the step. On a third: 10.04 ms against 8.20
  for one pass over the same steps with their batches taken beforehand, so the loader thread
  cost ~1.8 ms per step. With the batches gathered in a child process (models/data/feed.py),
  on a fourth: 8.21 ms (998,159 samples/s; passes 8.19-8.88) against 8.19 with the batches
  taken beforehand: the loader no longer costs the step. Then, untimed: the clipping norm
  taken over the fused update's table (--switch clip_norm=foreach is the A/B).
Measured 2026-12-07, session 21 (same settings; two calls on H100s, Triton 3.6; no H200
  came): e923cd2 at 10.61, 10.12, 9.70 ms against 8.41, 8.40, 9.06 for d9f8e6c with
  --switch cast_ahead=off (live prefixes as views cost host time); then, with the prefixes as
  counts in the fused update's table and the d2s flag compiled (static.flagged): 8.33, 8.35,
  8.43 ms (983k, 982k, 971k samples/s) against 9.06, 8.51, 8.47 for d9f8e6c; --switch
  live_prefix=off 8.93. Then, untimed: batches copied to the GPU on the loader thread's own
  stream (--switch h2d=inline is the A/B) and the host-time note.
Measured 2026-12-07, session 20 (same settings; two calls on one H100, Triton 3.6; no H200
  came): d9f8e6c at 8.49, 8.49, 8.36, 8.38, 9.04 ms (median of 5 passes; 965k, 965k, 980k,
  977k, 906k samples/s); e5b6dd2 at 8.53 ms (960k, one pass) in the same call; --switch
  cast_ahead=off 8.40, 8.43, 8.66, 8.41 ms (so the multi-tensor cast went). block_kernels.py:
  678 kernels, 7.55 ms of kernel time per step. Then, untimed: fm_term's input gradients
  summed in its compiled backward, and the fused Adagrad over live gradient prefixes
  (--switch live_prefix=off is the A/B).
Measured 2026-12-07, session 18 (same settings; three calls on H100s, Triton 3.6; no H200 was
  granted; runs alternated within each call): session 17's d58fe70 at 943.0k, 907.3k, 949.0k,
  887.8k, 951.4k, 936.4k samples/s; e603b9d at 914.4k, 885.9k, 913.2k, 915.9k, 907.8k; with
  the chunked tiny weight gradient off 957.6k, 955.6k, 955.4k, 953.1k, 953.6k (8.56-8.59 ms),
  so it was reverted; then e5b6dd2 at 931.8k, 940.2k, 951.4k (8.61-8.79 ms). Parameter leaves
  off (--switch param_leaves=off): 905.5k, 838.0k. Eager attribution (block_kernels.py):
  765 kernels, 7.79 ms of kernel time per step; 198 under 3 us (0.32 ms). Then, untimed:
  the sparse->dense switch as its LayerNorm's column mask (af47e3b; two scalar muls per block
  each way fewer), a binary op's input gradients staged as dense [B, width] sides (one
  multi-tensor copy instead of two strided ones), and a block's bf16 parameter casts made in
  one multi-tensor copy (--switch cast_ahead=off was the A/B; removed in session 20).
Measured 2026-12-07, session 17 (same settings; one H100 call, Triton 3.6; no H200 was
  granted): e603b9d (session 16's last commit) at 916,820 samples/s (8.94 ms). Its eager step
  in benchmarks/block_kernels.py: 994 kernels, 8.17 ms of kernel time per step (so ~0.8 ms of
  the graphed step is launch gaps); 455 kernels under 3 us (0.67 ms), most of them autograd's
  around the parameters: zero-filled parameter-sized gradients with the slice's copied in
  (~70 fills, ~70 copies per step), casts of bf16 weight gradients back to float32 (~70), a
  fresh vector of ones per bias gradient (~40 fills); and the block-0 gate's [13, 8192] x
  [8192, 13] weight gradient at ~79 us in one cuBLAS kernel. Then (untimed: the device time
  ran out) parameters taken as leaves of their own (--switch param_leaves=off is the A/B),
  kept vectors of ones, tiny misaligned weight gradients over 64 batched row blocks
  (--switch tiny_wgrad=mm), and the node-gradient buffers written by the last block's single
  input product instead of zeroed each step (88 us in the attribution).
Measured 2026-12-07, session 16 (same settings; one H100, Triton 3.6; no H200 was granted):
  session 15's 484f978 at 886,915 samples/s (9.24 ms) and, with --profile, 889,820 (9.21 ms),
  against 889,013 (9.21 ms) for session 14's cf69be7 and 883,172 (9.28 ms) with --switch
  attn_regs=ptxas (484f978's attention without its register caps), all in one call: session
  15's attention changes (~30% fewer instructions per chunk, counted on the CPU machine)
  changed nothing measurable and were reverted (docs/models.md). Profile: 1,034 kernels and
  9.01 ms of kernel time per step (attention 1.26 ms, the LayerNorm backward 0.45 and its
  partial sums 0.20, the LayerNorm forward 0.25, strided elementwise kernels ~0.79, cuBLAS
  split-K reductions 0.27; 580 kernels under 3 us, 0.81 ms). At session 11's H100 / H200
  ratio (1.15) 9.21 ms would be ~8.0 ms (~1.02M samples/s) on the H200: an estimate, not a
  measurement. Then the LayerNorm backward at 16 elements per thread (from
  benchmarks/layer_norm_launch.py on that H100) and its partial sums at 8 x 512, in a second
  call on an H100: 914,512 and 914,694 samples/s (8.96 ms, two runs) against 887,693 (9.23 ms)
  for 484f978, +3.0%; ~7.8 ms (~1.05M samples/s) on an H200 at the 1.15 ratio, an estimate.
  The partial sums then went to 4 x 512 (faster in layer_norm_launch.py; untimed in the step).
Measured 2026-12-06, session 14 (same settings; --command-steps 0 --full-steps 0 --paths 1;
  one H100 once, after 19 refused requests; no H200): commit f8ac1a4 890,318 samples/s
  (9.20 ms) against 828,847 (9.88 ms) for session 12's c611832 in the same call (+7.4%; this
  machine ran c611832 between session 13's two, 837k and 791k). Warm-up over the 50 subnets
  37.0 s, 196 block graphs, peak 5.4 GiB. Since c611832: the LayerNorm backward's rework, grid,
  load-ahead and per-element weight and bias sums, the binary ops' identity switch folded into
  their weight (compiled), two leaves for their inputs, and no select per score in attention
  (benchmarks/kernel_instructions.py, sm_90 code under Triton 3.6: attention 813 -> 765,
  975 -> 863, 1162 -> 999 instructions per chunk at T 64; LayerNorm backward 493-624 ->
  357-455 per row block). With session 11's H100 / H200 ratio (1.15) 9.20 ms would be ~8.0 ms
  (~1.02M samples/s) on the H200: an estimate; the target stays open until an H200 runs it.
  Not run (no device time left): benchmarks/layer_norm_launch.py, --switch ln_kernel=compiled.
  tests/models/nas/test_kernels.py on that H100: 71 passed. After the run (untimed): the
  LayerNorm forward on a persistent grid (weight, bias and column mask loaded once per
  program): 377-480 instructions per row block instead of 512-712.
Measured 2026-12-06, session 13 (same settings; --command-steps 0 --full-steps 0 --paths 1; the
  H200 kind was served by H100s, Triton 3.6): the session-12 commit c611832 ran at 837,422
  samples/s (9.78 ms) on one H100 and 790,556 (10.36 ms) on another: machines differ by ~6%, so
  only numbers from one call compare. --profile on the first: 1,067 kernels and 9.53 ms of
  kernel time per step; the LayerNorm backward 551 us (26 launches; its masked N = 128 variant
  spilled under Triton 3.6: 255 registers and a 144-byte stack), the torch sums of its partial
  buffers 236 us, the LayerNorm forward 254 us, attention 1.28 ms. Then on the second machine,
  one call each: the LayerNorm backward at 8 elements per thread with per-block weight and bias
  sums and its partials summed by a small kernel, 797,207 (10.28 ms) against 790,556; a "dot"
  attention variant (one score tile per (b, h) on the tensor cores, one backward kernel)
  770,217 (10.64 ms): removed. Untimed (no device time left): the LayerNorm backward's grid
  sized from the compiled kernel's registers (Triton 3.6 gives it 165, not the 96-108 of 3.7
  that the fixed 16 warps per SM assumed, so a third of the programs waited for a second
  wave). benchmarks/block_kernels.py on the second machine: the masked LayerNorm backward over
  [8192, 1024] at 55 us and [8192, 512] at 28 us, ~3.6x what their bytes need (~550 us per
  step); since then (untimed) it loads a block ahead, and
  benchmarks/layer_norm_launch.py, written for it, is the next run. Also untimed: the binary
  and Dot-Product ops' identity flag folded into their projection's weight (static.
  switched_linear) and a binary op's inputs as two leaves, 16.81 -> 15.39 GB per step in
  benchmarks/step_roofline.py --paths 16 (CPU, meta tensors). Target 1M on the
  H200: not met (~8.9 ms per step expected there from 10.28 on this H100).
Measured 2026-12-06, session 12 (same settings; --command-steps 0 --full-steps 0 --paths 1; no
  H200 was granted, so every number is an H100's, each against others from the same session):
  session 11's code (row gradients untimed till then): 740,492 samples/s (11.06 ms) against
  770,939 (10.63 ms) with --switch row_grad=off: the row path was slower, its five 130 us
  gathers of 213k 64-byte rows (torch's index_select gives each row a few threads) costing
  more than the dense passes it saved. With models/nas/row_kernels.py (a Triton gather,
  scatter-add, owned-row norm and in-place Adagrad row update): 802,653 (10.21 ms) against
  777,320 (10.54 ms) off, so row gradients stay on. Then, from benchmarks/block_kernels.py's
  attribution: owners marked by atomic max (scatter_reduce_ took 68 us), the op tokens' token
  LayerNorm writing into the node slot (~190 us of transposing copies), the head computed
  from the last slots (no cat, no gradient copies), the attention residuals' gradients added
  in the q/k/v and feed-forward matmuls (~220 us of adds): 839,046 samples/s (9.76 ms), 1,085
  kernels and 9.36 ms of eager kernel time per step. The last change, the masked LayerNorm
  through the row LayerNorm kernel (no contiguous copies of slot gradients, the FM term's
  residual add and slot write fused), is validated in Triton's interpreter and compiled for
  sm_90 here but untimed (device time ran out): --switch ln_kernel=compiled is the A/B. Also
  untimed: the LayerNorm kernels' launch at 16 elements per thread instead of 32, where ptxas
  showed the token LayerNorm spilling (backward: 255 registers and a 392-byte stack per
  thread); a forward-only sweep on the H100 earlier in the session had the old launch the
  slowest of eight settings (41.8 us token-major, 85.2 us features-first, against 17.2 / 28.1
  us for 64 rows on 2 warps, the new default; [8192, 64, 16] bf16, do_bench).
  Target 1M on the H200 (8.19 ms): the H100 / H200 ratio of session 11 (11.2 / 9.75 ms) puts
  9.76 ms on the H100 near 8.5 ms on the H200, ~965k samples/s: not met yet.
Session 11 (2026-12-06, same settings),
  session 10's changes on the H200, both in one call: 840,468 samples/s (9.75 ms per step)
  against 659,002 (12.43 ms) for the session-9 commit 37580aa; eager 175k against 167k. The
  warm-up pass over the 40 subnets takes 61.0 s instead of 14.9 s (torch.compile of the weight
  selection, masked LayerNorm and FM term); 171 block graphs, peak GPU memory 5.2 GiB as before.
  A/B of the switches (H100, the graphed steady state of the same 40 subnets in one call, two
  timed passes each; the benchmark's loop in a scratch script with torch.profiler added):
  default 730k / 732k samples/s (11.23 / 11.19 ms); compile=eager 505k (16.20 ms);
  bias_grad=sum 695k / 696k (11.79 / 11.77 ms); embedding=embedding 690k / 703k (11.87 /
  11.66 ms): every default kept. Profile of the default there: 1,109 kernels and 10.55 ms of
  kernel time per step; strided elementwise kernels 1.51 ms (166 kernels), vectorised ones
  0.88 ms (272), attention 1.56 ms (backward dk/dv 0.61, dq 0.51, forward 0.44), token
  LayerNorm backward 0.45 ms and forward 0.17 ms, fused Adagrad 0.41 ms, cuBLAS split-K reduces
  0.28 ms (84 kernels), the embedding gather 0.13 ms.
  Tried and removed: the token LayerNorm over [samples, tokens, features] tiles (tokens a
  compile-time size, so a transposed input is read along its contiguous token axis): 725k /
  726k against 712k / 725k for the same commit without it (H100, one call): no gain.
  Then (untimed: no GPU time left) the stem's row gradients (models/nas/optim.py): the table's
  dense gradient, its norm pass and its share of the fused update (~1.4 GB per step) replaced by
  row gathers and scatters; --switch row_grad=off gives the A/B.
  Target 1M: still not met (8.19 ms per step needed).
Session 10 (2026-12-06): the changes, made after these profiles and timed in session 11.
  Profile of the session-9 code (H100, graphed steady state, 567k samples/s, 14.4 ms): 1,548
  kernels per step, 13.7 ms of kernel time; strided (non-vectorised) elementwise kernels 3.1 ms,
  tiny vectorised ones 1.3 ms, reductions 1.1 ms (mostly bias gradients: 20 us for a column sum
  of a [131072, 64] gradient), attention kernels 1.6 ms, Adagrad 0.42 ms. Per block (eager, H200)
  the largest non-matmul items were attention's stack + permute copy of dq/dk/dv (~180 us per
  t = 64 run), the token masks and ReLU on strided views, the FM term, slot padding and the
  binary ops' full-width pair copies, and outside the blocks F.embedding's gather (130 us) and
  sorted backward (375 us). Each of these was removed or shrunk (docs/models.md); roofline
  (benchmarks/step_roofline.py --paths 16) 19.8 -> 16.9 GB and 2,184 -> 1,919 kernels per step.
  Timed in session 11 (above), each switch against the default on one machine.
Measured 2026-11-26, session 9 (same settings; --command-steps 0 --full-steps 0 --paths 1):
  654k samples/s (12.52 ms per step) in two runs, with the fused optimizer's host checks cached
  and the interaction switches folded into weights; session 8's 650-652k is within noise of it.
  --key-table: block graphs 3.14 ms forward + 7.52 ms backward per step. Per block run (forward
  + backward, with whichever dense op), 1.81 ms with Attention at t 32 and 2.64 ms at t 64
  against 1.24 and 1.37 ms with EFC; by dense op 1.3-1.9 ms at width class 128, Dot 2.0-3.0 ms.
  The blocks with Attention (~3 runs per step) take ~6.5 of the 10.7 ms; Attention's excess over
  EFC is ~2.6 ms per step (1.1 at t 32, 1.5 at t 64), the largest single item. Host time per
  step, the GPU idle at its start: ~7.4 ms (clip + Adagrad 2.2 of it, from 2.7-3.4), so the
  step stays GPU-bound.
  Tried and removed: the Attention layer after its token projection as one Triton kernel each way
  (one program per sample, the whole layer in registers, recomputed in the backward): correct to
  1e-4 against float64, but 1.18 + 5.82 ms per t = 64 block run against 0.74 + 1.88 ms (likely
  register pressure: eight [64, 64] heads per program; not profiled); a step took 22.7 ms.
  Target 1M: still not met.
Measured 2026-11-26, session 8 (same settings; --command-steps 0 --full-steps 0 --paths 1):
  sampled paths over shared node buffers (models/nas/chain.py: one forward and one backward graph
  per block key, no input copies, input gradients added in the input products' matmuls) with
  clip + Adagrad as one Triton kernel (models/nas/fused_adagrad.py): 607k samples/s (13.49 ms);
  then masks in the activations' dtype, outputs written at their size classes, ReLU and the
  output cast fused into the masked LayerNorm: 639k (12.82 ms), 650k and 652k (12.60, 12.57 ms)
  in two runs. 171 block keys for 40 subnets; peak GPU memory 5.2 GiB (62.9 GiB with the
  make_graphed_callables graphs of session 7). With --full-steps 4 --command-steps 20 --paths 2
  every row now runs at batch 8192: full supernet 93k eager, 94k graphed; the command 41k
  (20 steps, captures included).
  The profile of the graphed step (--profile): ~12.4 ms of GPU work, 3.5 ms in the forward
  graphs, 7.7 ms in the backward graphs, 0.3 ms Adagrad, 0.4 ms dense embedding gradient; the
  host needs ~8.4 ms per step. Non-vectorised elementwise kernels (strided token-major views,
  casts) and reductions are the largest items; the matmuls take ~1.5 ms.
  Target 1M: still not met.
Measured 2026-11-26, session 7 (same settings; --command-steps 0 --full-steps 0 --paths 2):
  blocks at their size classes (models/nas/static.py block_caps): 528k samples/s (15.51 ms per
  step), 196 block graphs for the 50 subnets, captured in 30.2 s, peak GPU memory 62.9 GiB;
  every block at maximum sizes (--uncapped), the next run on the same machine: 367k (22.32 ms),
  55 graphs, 20.0 GiB. Size classes: 1.44x. (Eager sampled paths 164k and 187k in the two runs.)
  Then sparse inputs concatenated features-first (static.token_project reads [B, 16, tokens]
  without a transposed copy): 553k and 550k in two runs (14.82 and 14.89 ms per step).
  At batch 8192 the later rows ran out of the H200's memory then (~70 GiB of graphs, and more);
  fixed in session 8.
Measured 2026-11-26 (nasrec-full, Criteo-shaped tables capped at 0.5M rows, H200, torch 2.11, bf16
autocast, data from the shards):
  batch 8192: sampled single paths 448k samples/s through the per-block CUDA graphs (18.3 ms per
  step) vs 209k eager (39.2 ms); 56 block graphs captured in 4.6 s, peak GPU memory 20.6 GiB; full
  supernet 91k eager (another run: 74k eager vs 93k through 7 block graphs). Per path (4 paths), supernet / standalone: both eager median 1.15x, max
  1.29x; both graphed median 1.51x, max 2.25x (graphed standalone steps 7.8-19.9 ms: a standalone
  subnet has its own small shapes, the supernet path runs at maximum widths with masks).
  batch 512: sampled paths 42k samples/s graphed (12.1 ms) vs 14k eager (35.8 ms); graphed
  standalone steps 5.2-5.9 ms vs 26-32 ms eager. At this batch the step is host-bound, even graphed.
  Target 1M samples/s at batch 8192: not met, and not reachable at these static shapes: their
  traffic alone bounds a step at >= 8.66 ms, 946k samples/s (benchmarks/step_roofline.py).
  With the unread nodes detached (their zero gradients no longer summed: 41.6 GB of traffic per
  step instead of 43.5), two later runs measured 17.97 and 18.74 ms per graphed step: no change
  beyond run-to-run noise.
  Host time: at batch 512 a graphed step is host-bound at ~11.7 ms. A one-graph clipping + Adagrad
  update over all parameters (persistent gradient buffers) was tried and removed: sampled paths
  at batch 512 10.4 -> 9.0 ms and 15.1 -> 10.8 ms (two rounds), but at batch 8192 18.0 -> 20.7 ms
  (it reads and writes every weight; a sampled path reaches a fraction of them), and graphed
  standalone steps no faster (DLRM 4.66 -> 5.22 ms at 8192, a subnet 5.70 -> 6.32 ms at 512).
  The profile of a graphed step (gprof-style torch.profiler, 10 steps) shows ~16.9 ms of GPU
  work: ~14 ms inside the block graphs (the masked elementwise work at maximum widths dominates;
  attention ~1.5 ms with the fused kernels) and ~2.5 ms of eager Adagrad, clipping and dense
  embedding gradients.
  Before the graphs (earlier in the session): the GPU side alone was ~17.8 ms per step and the host
  needed ~41 ms to issue ~700 launches; bmm + softmax of the 2-wide attention heads were ~47 % of
  the GPU time (now Triton kernels, benchmarks/attention_kernels.py).
  2-core CPU shared with other jobs (torch 2.13): sampled paths ~660 samples/s before sparse
  embedding gradients; 1.8x faster per CPU-second after (models/nas/optim.py).
Data: a Criteo-shaped synthetic folder (tables capped at 0.5M rows) made with `models.data.prepare`
unless --data names one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step_fn, n, device, warm=3):
    for _ in range(warm):
        step_fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        step_fn()
    sync(device)
    return (time.perf_counter() - t) / n


def time_passes(step_fn, n, device, passes) -> list[float]:
    """Seconds per step of each of `passes` back-to-back timed passes of n steps (no warm-up)."""
    return [time_steps(step_fn, n, device, warm=0) for _ in range(passes)]


def host_issue_s(step_fn, n, device) -> tuple[list[float], list[float]]:
    """Host seconds to issue each of n steps into an idle GPU (synchronised before each step, not
    after it): the host's own cost of a step, nothing waited for; and of each, the seconds the
    calling thread ran on a CPU (the rest it waited: on another thread holding the GIL, or in a
    blocking driver call). A step time near the first means the host bounds the step; well
    above it, the GPU does."""
    wall, cpu = [], []
    for _ in range(n):
        sync(device)
        t, c = time.perf_counter(), time.thread_time()
        step_fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    sync(device)
    return wall, cpu


def host_note(label, wall_s, cpu_s) -> str:
    """`host_issue_s`'s medians in ms."""
    return (f"{label}: median {statistics.median(wall_s) * 1e3:.2f} ms, the main thread on a "
            f"CPU for {statistics.median(cpu_s) * 1e3:.2f} ms of it")  # fmt: skip


def host_profile(step_fn, n, device, top=35) -> str:
    """cProfile of the host's work in n steps, each issued into an idle GPU (the synchronisations
    outside the profile): functions by their own time, then by cumulative time. cProfile's cost
    per Python call inflates Python-heavy code against calls into C++ (CUDA-graph replays,
    kernel launches); read it for where the host's time goes, not for absolute figures."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    for _ in range(n):
        sync(device)
        prof.enable()
        step_fn()
        prof.disable()
    sync(device)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    out.write(f"host profile: {n} steps (per-call times are per step x {n})\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def passes_note(label, per_step_s) -> str:
    """The spread of `time_passes`: median, fastest and slowest pass, in ms per step."""
    ms = sorted(x * 1e3 for x in per_step_s)
    return (f"{label}: {len(ms)} passes, ms/step median {statistics.median(ms):.2f} "
            f"(fastest {ms[0]:.2f}, slowest {ms[-1]:.2f})")  # fmt: skip


def print_profile(label, step_fn, device, steps=10, warm=3):
    """torch.profiler tables of `steps` steps: by GPU time (kernels inside CUDA graphs too), then
    by host time."""
    from torch.profiler import ProfilerActivity, profile

    if warm:
        time_steps(step_fn, warm, device, warm=0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        time_steps(step_fn, steps, device, warm=0)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"profile: {label}, {steps} steps")
    if device.type == "cuda":
        cuda = torch.autograd.DeviceType.CUDA
        gpu = [e.device_time for e in prof.events() if e.device_type == cuda]
        print(kernel_histogram(gpu, steps))
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                    max_name_column_width=40))  # fmt: skip


KERNEL_BUCKETS_US = (3, 6, 12, 25, 50, 100)


def kernel_histogram(durations_us, steps) -> str:
    """Kernels and kernel time per step, in all and by duration (< 3 us, < 6 us, ... >= 100 us):
    how much of a step is launch-sized kernels (fusion's target) and how much is long ones."""
    counts = [0] * (len(KERNEL_BUCKETS_US) + 1)
    times = [0.0] * len(counts)
    for d in durations_us:
        i = next((i for i, top in enumerate(KERNEL_BUCKETS_US) if d < top), len(KERNEL_BUCKETS_US))
        counts[i] += 1
        times[i] += d
    names = [f"< {top} us" for top in KERNEL_BUCKETS_US] + [f">= {KERNEL_BUCKETS_US[-1]} us"]
    lines = [f"kernels per step {len(durations_us) / steps:,.1f}, kernel time per step "
             f"{sum(times) / steps / 1e3:.3f} ms"]  # fmt: skip
    lines += [f"  {name:10s} {c / steps:8.1f} kernels {t / steps / 1e3:8.3f} ms"
              for name, c, t in zip(names, counts, times, strict=True)]  # fmt: skip
    return "\n".join(lines)


def key_table(chain, subnets, batch) -> str:
    """GPU time of the captured block graphs per step, by dense op and width class, sparse op and
    token class, and block position: each key's forward graph replayed alone, then forward +
    backward pairs (a backward reads what its own forward left in the position's pool, so it is
    never replayed alone), weighted by how often the timed subnets run that key."""
    import collections

    runs = collections.Counter()
    for sub in subnets:
        live = set(sub.live_blocks())
        for i, b in enumerate(sub.blocks):
            if i in live:
                runs[chain.block_key(i, b, batch)] += 1 / len(subnets)
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    total = [0.0, 0.0]
    for key, entry in chain._entries.items():
        if entry.graphs is None or not runs[key]:
            continue
        fwd, bwd = entry.graphs
        ms = []
        for pair in (False, True):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                fwd.replay()
                if pair:
                    bwd.replay()
            end.record()
            torch.cuda.synchronize()
            ms.append(start.elapsed_time(end) / 10)
        f, b, w = ms[0], ms[1] - ms[0], runs[key]
        total[0], total[1] = total[0] + f * w, total[1] + b * w
        i, dense_op, sparse_op, caps, _ = key
        wc, tc = caps or ("max", "max")  # --uncapped: every block at maximum sizes
        for name in (f"dense {dense_op} w{wc}", f"sparse {sparse_op} t{tc}", f"block {i}"):
            g = groups[name]
            g[0], g[1], g[2] = g[0] + f * w, g[1] + b * w, g[2] + w
    lines = [f"block graphs per step: forward {total[0]:.2f} ms, backward {total[1]:.2f} ms",
             f"{'key group':22s} {'runs/step':>9s} {'fwd ms/step':>11s} {'bwd ms/step':>11s} "
             f"{'fwd ms/run':>10s} {'bwd ms/run':>10s}"]  # fmt: skip
    for name, (f, b, w) in sorted(groups.items()):
        lines.append(f"{name:22s} {w:9.2f} {f:11.3f} {b:11.3f} {f / w:10.3f} {b / w:10.3f}")
    return "\n".join(lines)


def attention_table(device, batch) -> str:
    """Forward + backward time of one Attention op (t = 64 tokens) per kernel choice."""
    from models.nas import ops

    lines = [f"{'attention impl':16s} {'ms fwd+bwd':>10s}"]
    x = torch.randn(batch, 200, 16, device=device, requires_grad=True)
    best = (float("inf"), None)
    for impl, ln in (("sdpa", "module"), ("math", "module"), ("bf16", "module"),
                     ("bf16", "compiled"), ("compiled", "compiled"), ("sdpa", "compiled")):  # fmt: skip
        ops.ATTENTION["impl"], ops.TOKEN_LN["impl"] = impl, ln
        impl = f"{impl}+ln-{ln}"
        torch.manual_seed(0)
        m = ops.Attention(200, 64).to(device)

        def step(m=m):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = m(x, None, 64)
            y.float().square().mean().backward()

        try:
            ms = time_steps(step, 10, device) * 1e3
            lines.append(f"{impl:24s} {ms:10.2f}")
            best = min(best, (ms, (ops.ATTENTION["impl"], ops.TOKEN_LN["impl"])))
        except Exception as exc:  # noqa: BLE001 - a kernel choice that does not run here
            lines.append(f"{impl:24s} failed: {str(exc).splitlines()[0][:60]}")
    ops.ATTENTION["impl"], ops.TOKEN_LN["impl"] = "auto", "auto"
    lines.append(f"fastest: attention {best[1][0]}, token LayerNorm {best[1][1]}; running 'auto'")
    return "\n".join(lines)


# name: (the models.nas module and its switch table, values with the default first)
SWITCH_VALUES = {
    "bias_grad": ("static.BIAS_GRAD", ("mv", "sum")),
    "embedding": ("optim.EMBEDDING", ("index_select", "embedding")),
    "compile": ("static.MASKED_LN", ("auto", "eager")),  # every compiled function
    "row_grad": ("optim.ROW_GRAD", ("auto", "off")),  # the stem's row gradients
    "ln_kernel": ("static.LN_KERNEL", ("triton", "compiled")),  # the masked LayerNorm's kernel
    "param_leaves": ("static.PARAM_LEAVES", ("on", "off")),  # parameters taken as leaves
    "live_prefix": ("optim.LIVE_PREFIX", ("on", "off")),  # the update over live prefixes
    "h2d": ("runtime.H2D", ("side", "inline")),  # the thread loader's copies on its own stream
    "clip_norm": ("fused_adagrad.NORM", ("table", "foreach")),  # the fused update's norm
    "loader": ("runtime.LOADER", ("auto", "thread", "process")),  # who gathers batches
}


# Switches read on every step or when a batch stream starts, which `--ab` can flip between the
# passes of one process (the others are baked into the captured graphs: --switch, one run each).
AB_SWITCHES = ("live_prefix", "clip_norm", "loader", "h2d")
STREAM_SWITCHES = ("loader", "h2d")  # read when a BatchStream starts


def switch_table(name: str) -> dict:
    """The module table of switch `name` (SWITCH_VALUES)."""
    import importlib

    module, table = SWITCH_VALUES[name][0].split(".")
    return getattr(importlib.import_module(f"models.nas.{module}"), table)


def parse_ab(ap: argparse.ArgumentParser, item: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of one --ab NAME=VALUE[,NAME=VALUE...] variant, or exit with the
    parser's error."""
    pairs = []
    for part in item.split(","):
        name, _, value = part.partition("=")
        if name not in AB_SWITCHES or value not in SWITCH_VALUES[name][1]:
            choices = ", ".join(f"{k}={'|'.join(SWITCH_VALUES[k][1])}" for k in AB_SWITCHES)
            ap.error(f"--ab {item}: expected NAME=VALUE[,NAME=VALUE...] of {choices}")
        pairs.append((name, value))
    return pairs


def ab_passes(variants, run_pass, rounds) -> dict[str, list[float]]:
    """Seconds per step of each (label, [(switch, value), ...]) variant, over `rounds` rounds
    that each time one pass of every variant in turn (alternated, so drifts of the machine
    fall on all of them), each with its switches set and restored after. `run_pass(switches)`
    times one pass."""
    out: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(rounds):
        for label, switches in variants:
            tables = [(switch_table(name), value) for name, value in switches]
            saved = [table["impl"] for table, _ in tables]
            for table, value in tables:
                table["impl"] = value
            try:
                out[label].append(run_pass(switches))
            finally:
                for (table, _), old in zip(tables, saved, strict=True):
                    table["impl"] = old
    return out


def ab_note(per_variant: dict[str, list[float]]) -> str:
    """`ab_passes`' medians in ms per step, each against the first variant's."""
    medians = {k: statistics.median(v) * 1e3 for k, v in per_variant.items()}
    base = next(iter(medians.values()))
    parts = [f"{k} {m:.2f} ms/step ({m / base:.3f}x)" for k, m in medians.items()]
    n = len(next(iter(per_variant.values())))
    return f"CUDA graphs, A/B over {n} alternated rounds in this process: " + "; ".join(parts)


def switch_choices() -> str:
    return ", ".join(f"{k}={'|'.join(v)}" for k, (_, v) in SWITCH_VALUES.items())


def set_switch(ap: argparse.ArgumentParser, item: str) -> None:
    """Set one module switch from NAME=VALUE (SWITCH_VALUES), or exit with the parser's error."""
    name, _, value = item.partition("=")
    where, values = SWITCH_VALUES.get(name, ("", ()))
    if value not in values:
        ap.error(f"--switch {item}: expected one of {switch_choices()}")
    switch_table(name)["impl"] = value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--paths", type=int, default=8)
    ap.add_argument("--passes", type=int, default=5,
                    help="timed passes over the --steps subnets of the graphed row (its median)")  # fmt: skip
    ap.add_argument("--full-steps", type=int, default=10, help="0 skips the full-supernet rate")
    ap.add_argument("--command-steps", type=int, default=60, help="0 skips train_supernet")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--space", default="nasrec-full")
    ap.add_argument("--data")
    ap.add_argument("--no-amp", dest="amp", action="store_false")
    ap.add_argument("--out")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table")
    ap.add_argument("--host-profile", action="store_true",
                    help="print a cProfile of the host's work per graphed step")  # fmt: skip
    ap.add_argument("--no-kernel-table", dest="kernel_table", action="store_false")
    ap.add_argument("--key-table", action="store_true",
                    help="GPU time of the block graphs per step by op, size class and block")  # fmt: skip
    ap.add_argument("--ab-pad", action="store_true", help="sampled paths with and without padding")
    ap.add_argument(
        "--no-graphs", dest="graphs", action="store_false", help="skip the CUDA-graph rows"
    )
    ap.add_argument(
        "--uncapped",
        action="store_true",
        help="graphed blocks at maximum sizes (default: at their size classes)",
    )
    ap.add_argument("--switch", action="append", default=[], metavar="NAME=VALUE",
                    help="run with a switch of the CUDA path changed, for A/B runs on one machine: "
                         + switch_choices())  # fmt: skip
    ap.add_argument("--ab", action="append", default=[], metavar="NAME=VALUE[,...]",
                    help="after the graphed row, alternate timed passes of the default and of "
                         "each such variant in this process (the graphs captured once): "
                         + ", ".join(AB_SWITCHES))  # fmt: skip
    args = ap.parse_args()
    if args.passes < 1:
        ap.error(f"--passes: expected at least 1, got {args.passes}")
    for item in args.switch:
        set_switch(ap, item)
    ab = [parse_ab(ap, item) for item in args.ab]

    from models.data import open_split, prepare
    from models.nas.graphs import graph_model
    from models.nas.runtime import BatchStream, resolve_device
    from models.nas.space import sample_subnet
    from models.nas.supernet import Supernet, count_parameters, extract_subnet
    from models.nas.train import SupernetConfig, make_optimizer, train_step, train_supernet

    device = resolve_device(args.device)
    if device.type == "cuda" and args.kernel_table:
        print(attention_table(device, args.batch_size))
    tmp = Path(tempfile.mkdtemp(prefix="pimrec-bench-"))
    t = time.perf_counter()
    data = args.data or prepare(
        "synthetic", None, tmp / "data", rows=args.rows, max_table_rows=500_000, progress=False
    )
    prep_s = time.perf_counter() - t
    split = open_split(data, "train")
    tables, n_dense = split.manifest["table_sizes"], len(split.manifest["dense_features"])
    bs, amp = args.batch_size, args.amp
    net = Supernet(args.space, tables, n_dense).to(device)
    opt = make_optimizer(net.parameters(), 0.01, 1e-2)
    stream = BatchStream(split, bs, seed=0, device=device)
    rng = np.random.default_rng(0)
    rows, notes, graphed = [], [], None

    def sampled_step():
        train_step(
            net, opt, next(stream), 0.01, 5.0, amp, device, subnet=sample_subnet(net.space, rng)
        )

    def full_step():
        train_step(net, opt, next(stream), 0.01, 5.0, amp, device, subnet=None)

    if args.profile and not args.graphs:
        print_profile("eager sampled paths", sampled_step, device)
    if args.ab_pad:
        from models.nas import plans

        for rnd in range(2):
            for multiple in (0, 128):
                plans.PAD_COLS["multiple"] = multiple
                net._cache.clear()
                s = time_steps(sampled_step, args.steps, device)
                rows.append(
                    (f"sampled paths, K padded to {multiple} (round {rnd})", bs / s, s * 1e3)
                )
        plans.PAD_COLS["multiple"] = "auto"
        net._cache.clear()
    s = time_steps(sampled_step, args.steps, device)
    rows.append(("supernet, sampled single paths, data from shards", bs / s, s * 1e3))
    if device.type == "cuda" and args.graphs:
        from models.nas.graphs import GraphedSupernet

        graphed = GraphedSupernet(net, amp=amp, capped=not args.uncapped)
        # Steady state: the timed steps replay the subnets of the warm-up pass, so no step
        # captures a graph (each subnet's blocks were captured when it first ran).
        subnets = [sample_subnet(net.space, rng) for _ in range(args.steps)]
        turn = iter(range(10**9))

        def graphed_step(batches=stream):
            sub = subnets[next(turn) % len(subnets)]
            train_step(graphed, opt, next(batches), 0.01, 5.0, amp, device, subnet=sub)

        t = time.perf_counter()
        time_steps(graphed_step, args.steps, device, warm=0)
        warm_s = time.perf_counter() - t
        per_pass = time_passes(graphed_step, args.steps, device, args.passes)
        s = statistics.median(per_pass)
        notes.append(passes_note("CUDA graphs, steady state", per_pass))
        notes.append(host_note("CUDA graphs, host time to issue a step into an idle GPU (the "
                               "step is host-bound where this nears its time)",
                               *host_issue_s(graphed_step, args.steps, device)))  # fmt: skip
        # The same with the steps' batches taken from the stream beforehand: the loader idle
        # (its slots or queue full) while they run, so what it costs the training thread shows
        # as the difference, and the host profile holds that thread alone.
        ahead = [next(stream) for _ in range(args.steps)]

        def ahead_steps():
            """A step function over the batches taken beforehand, from the first."""
            batches = iter(ahead)
            return lambda: graphed_step(batches)

        notes.append(host_note("CUDA graphs, host time as above, batches taken beforehand (the "
                               "loader idle)", *host_issue_s(ahead_steps(), args.steps,
                                                             device)))  # fmt: skip
        notes.append(
            f"CUDA graphs, one pass with batches taken beforehand: "
            f"{time_steps(ahead_steps(), args.steps, device, warm=0) * 1e3:.2f} ms/step"
        )
        if ab:

            def ab_pass(switches):
                if not any(name in STREAM_SWITCHES for name, _ in switches):
                    return time_steps(graphed_step, args.steps, device, warm=2)
                own = BatchStream(split, bs, seed=0, device=device)  # started under the switch
                try:
                    return time_steps(lambda: graphed_step(own), args.steps, device, warm=2)
                finally:
                    own.close()

            variants = [("default", []), *zip(args.ab, ab, strict=True)]
            notes.append(ab_note(ab_passes(variants, ab_pass, args.passes)))
        if args.profile:
            print_profile("CUDA-graph sampled paths (steady state)", graphed_step, device, warm=0)
        if args.host_profile:  # the main thread alone (Python 3.12's cProfile sees all threads)
            print(host_profile(ahead_steps(), args.steps, device))
        if args.key_table:
            notes.append(key_table(graphed.chain, subnets, bs))
        kind = "maximum sizes" if args.uncapped else "size classes"
        rows.append((f"supernet, sampled single paths, CUDA graphs ({kind}), data from shards",
                     bs / s, s * 1e3))  # fmt: skip
        notes.append(f"CUDA graphs: {graphed.captured()} block graphs captured in "
                     f"{graphed.capture_s:.1f} s (the warm-up pass over the {args.steps} subnets "
                     f"took {warm_s:.1f} s); peak GPU memory "
                     f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")  # fmt: skip
    if args.full_steps:
        s = time_steps(full_step, args.full_steps, device, warm=1)
        rows.append(("full supernet (warm-up step), data from shards", bs / s, s * 1e3))
        if graphed is not None:
            s = time_steps(lambda: train_step(graphed, opt, next(stream), 0.01, 5.0, amp, device),
                           args.full_steps, device, warm=2)  # fmt: skip
            rows.append(("full supernet, CUDA graphs, data from shards", bs / s, s * 1e3))
    stream.close()

    # The command path: train_supernet end to end (its own stream, warm-up p = 0).
    if args.command_steps:
        cfg = SupernetConfig(str(data), space=args.space, steps=args.command_steps, batch_size=bs,
                             full_warmup_steps=0, device=str(device), amp=amp,
                             checkpoint_every=10**9, log_every=10**9)  # fmt: skip
        res = train_supernet(cfg, tmp / "run", progress=False)
        rows.append(("train_supernet command (incl. start-up steps)", res["samples_per_s"], None))

    # Single-path overhead against the extracted standalone subnet, same batch on the device.
    one = BatchStream(split, bs, seed=1, device=device)
    batch = next(one)
    one.close()  # (on CUDA its loader is a process)
    ratios = []
    for p in range(args.paths):
        sub = sample_subnet(net.space, 1000 + p)
        model = extract_subnet(net, sub)
        mopt = make_optimizer(model.parameters(), 0.01, 1e-2)
        n = max(3, args.steps // 5)
        t_super = time_steps(
            lambda sub=sub: train_step(net, opt, batch, 0.01, 5.0, amp, device, subnet=sub),
            n, device,
        )  # fmt: skip
        t_alone = time_steps(lambda m=model, o=mopt: train_step(m, o, batch, 0.01, 5.0, amp, device),
                             n, device)  # fmt: skip
        t_graph = t_alone_graph = float("nan")
        if graphed is not None:
            t_graph = time_steps(
                lambda sub=sub: train_step(graphed, opt, batch, 0.01, 5.0, amp, device, subnet=sub),
                n, device,
            )  # fmt: skip
            graph_model(model, bs, n_dense, len(tables), amp=amp)  # the standalone step, graphed
            t_alone_graph = time_steps(
                lambda m=model, o=mopt: train_step(m, o, batch, 0.01, 5.0, amp, device), n, device
            )
        ratios.append((t_super / t_alone, t_super * 1e3, t_alone * 1e3, len(sub.live_blocks()),
                       count_parameters(model), t_graph * 1e3, t_alone_graph * 1e3,
                       t_graph / t_alone_graph))  # fmt: skip
        del model, mopt

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\ndevice {name}, torch {torch.__version__}, space {args.space}, batch {bs}, "
          f"amp {amp and device.type == 'cuda'}, tables {len(tables)} x <=0.5M rows "
          f"({sum(tables)} rows), supernet {count_parameters(net) / 1e6:.1f}M dense params, "
          f"data prepare {prep_s:.1f}s")  # fmt: skip
    print(f"{'measurement':52s} {'samples/s':>12s} {'ms/step':>9s}")
    for label, sps, ms in rows:
        print(f"{label:52s} {sps:12,.0f} {ms if ms is not None else float('nan'):9.2f}")
    for note in notes:
        print(note)
    print(f"\n{'path':>4s} {'supernet ms':>12s} {'standalone ms':>14s} {'ratio':>6s} {'live':>5s}"
          f" {'params':>10s}   graphed: {'supernet':>8s} {'standalone':>10s} {'ratio':>6s}")  # fmt: skip
    for i, (r, a, b, live, params, g, ga, gr) in enumerate(ratios):
        print(f"{i:4d} {a:12.2f} {b:14.2f} {r:6.2f} {live:5d} {params:10,d}   "
              f"        {g:8.2f} {ga:10.2f} {gr:6.2f}")  # fmt: skip
    if graphed is not None:
        print(f"single-path overhead, both graphed (supernet / standalone): "
              f"median {statistics.median(r[7] for r in ratios):.2f}x, "
              f"max {max(r[7] for r in ratios):.2f}x")  # fmt: skip
    med = statistics.median(r[0] for r in ratios)
    print(
        f"single-path overhead (supernet / standalone step time): median {med:.2f}x, "
        f"max {max(r[0] for r in ratios):.2f}x over {len(ratios)} paths"
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "ratios": ratios, "device": name}))


if __name__ == "__main__":
    main()
