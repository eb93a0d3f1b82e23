"""Speed of `pimsim.simulate`: cycle mode per batch (full Criteo tables, batch 2048, pooling 1
and 80) and fast-mode (trace, hardware) points per minute. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/simulate_speed.py [--batch 2048] [--points 2000]
"""

from __future__ import annotations

import argparse
import time

from pimsim.presets import load_preset
from pimsim.simulate import simulate
from traces.builder import CRITEO_TABLE_SIZES, build_dlrm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--points", type=int, default=2000)
    args = ap.parse_args()
    warm = build_dlrm(CRITEO_TABLE_SIZES[:3], batch_size=8, pooling=2)
    for hw in ("hbm-pim", "dimm-nmp", "reram-isaac"):  # compile / load the kernels once
        simulate(warm, load_preset(hw), mode="cycle")
    print(f"{'measure':44s} {'value':>10s}  unit")
    traces = {}
    for pooling in (1, 80):
        t0 = time.perf_counter()
        tr = build_dlrm(CRITEO_TABLE_SIZES, batch_size=args.batch, pooling=pooling)
        traces[pooling] = tr
        print(f"{f'build trace b{args.batch} p{pooling}':44s} {time.perf_counter() - t0:10.2f}  s")
        for hw in ("hbm-pim", "dimm-nmp", "reram-isaac"):
            spec = load_preset(hw)
            t0 = time.perf_counter()
            rep = simulate(tr, spec, mode="cycle")
            dt = time.perf_counter() - t0
            print(
                f"{f'cycle b{args.batch} p{pooling} {hw} (+host baseline)':44s} {dt:10.2f}  "
                f"s/batch  (speedup {rep.speedup:.2f}x, energy ratio {rep.energy_ratio:.2f}x)"
            )
    # fast mode: a sweep over hardware points on the pooling-80 trace
    tr = traces[80]
    sweep = []
    for ch in (1, 2, 4, 8):
        for adc in (4, 6, 8):
            sweep.append(("reram-isaac", [f"dram.channels={ch}", f"xbar.adc_bits={adc}"]))
        sweep.append(("dimm-nmp", [f"dram.channels={ch}"]))
        sweep.append(("hbm-pim", [f"bank_pim.clock_mhz={150 * ch}"]))
    specs = [load_preset(hw, ov) for hw, ov in sweep]
    for s in specs:  # first touch: per-trace / per-spec caches (LRU hit counts, etc.)
        simulate(tr, s, mode="fast")
    t0 = time.perf_counter()
    n = 0
    while n < args.points:
        simulate(tr, specs[n % len(specs)], mode="fast")
        n += 1
    dt = time.perf_counter() - t0
    print(
        f"{f'fast b{args.batch} p80, {len(specs)} hardware points':44s} {n / dt * 60:10.0f}  "
        "points/min"
    )


if __name__ == "__main__":
    main()
