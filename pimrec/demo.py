"""`pimrec demo`: the main job on the embedded default, end to end.

model -> trace -> mapping -> simulation -> report, on the embedded default:
1. prepare the synthetic CTR data (Criteo-shaped, teacher labels, so the best log loss is known);
2. train each model (the hand-designed baselines by default) and score it on the test split;
3. export each model's operator trace from one real test batch (index streams from the batch);
4. simulate every trace on every PIM preset (default mapping, cycle mode) against its host;
5. print accuracy vs latency vs energy and write one report.
Once co-design search lands, this becomes the co-design run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pimrec.cli import add_command

DEFAULT_MODELS = ("dlrm", "deepfm", "dcnv2")
DEFAULT_HARDWARE = ("hbm-pim", "dimm-nmp", "reram-isaac")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "demo", help="run the main job on the embedded default",
        description=__doc__.split("\n\n", 1)[1],
        example="pimrec demo\npimrec demo --rows 20000 --steps 50 --hw dimm-nmp --out runs/small",
        handler=run_demo,
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"),
                        help="output folder (default: runs/demo); data there is reused")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows (default 200000)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per model (default 300)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=DEFAULT_MODELS)
    parser.add_argument("--hw", nargs="+", default=list(DEFAULT_HARDWARE), metavar="PRESET",
                        help=f"PIM presets to simulate on (default: {' '.join(DEFAULT_HARDWARE)})")
    parser.add_argument("--trace-batch", type=int, default=2048, help="batch of the traces (default 2048)")
    parser.add_argument("--mode", choices=("cycle", "fast"), default="cycle", help="simulation mode")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_args(args: argparse.Namespace) -> None:
    from pimrec.errors import PimrecError

    for name in ("rows", "steps", "trace_batch"):
        if getattr(args, name) < 1:
            raise PimrecError(f"must be >= 1, got {getattr(args, name)}", field=f"--{name.replace('_', '-')}")


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from models.baselines import build_baseline
    from models.data import open_split, prepare_default, read_manifest
    from models.nas.train import ModelConfig, train_model
    from pimrec.report import make_report, write_report
    from pimsim.presets import load_preset, spec_to_dict
    from pimsim.simulate import simulate
    from traces import write_trace
    from traces.export import export_trace

    _check_args(args)
    specs = {hw: load_preset(hw) for hw in args.hw}  # bad presets fail before any work
    out: Path = args.out
    print(f"[1/4] data: synthetic, {args.rows:,} rows", flush=True)
    data = prepare_default(out / "data", rows=args.rows, seed=args.seed)
    manifest = read_manifest(data)
    bayes = manifest["synthetic"]["bayes_log_loss"]["test"]
    tables, n_dense = manifest["table_sizes"], len(manifest["dense_features"])
    test = open_split(data, "test")
    batch = min(args.trace_batch, len(test.label))
    dense = torch.from_numpy(test.dense[:batch].copy())
    sparse = torch.from_numpy(test.sparse[:batch].astype("int64"))

    models: dict[str, Any] = {}
    for i, name in enumerate(args.models, 1):
        print(f"[2/4] train {name} ({i}/{len(args.models)}), {args.steps} steps", flush=True)
        cfg = ModelConfig(data=str(data), model=name, seeds=(args.seed,), max_steps=args.steps, device="cpu")
        train_model(cfg, out / "models" / name, progress=not args.no_progress)
        accuracy = json.loads((out / "models" / name / "report.json").read_text())["results"]
        print(f"[3/4] export {name} trace, batch {batch}", flush=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            net = build_baseline(name, tables, n_dense).eval()  # costs depend on shapes, not weights
        trace = export_trace(net, (dense, sparse), name=name, metadata={"data": str(data)})
        write_trace(trace, out / "traces" / f"{name}.json")
        models[name] = {"trace": trace, "auc": accuracy["auc"], "logloss": accuracy["logloss"],
                        "excess_logloss": accuracy["logloss"] - bayes}

    print(f"[4/4] simulate {len(models)} traces x {len(specs)} presets ({args.mode} mode)", flush=True)
    rows, results = [], {}
    for name, m in models.items():
        per_sample_mflops = m["trace"].totals()["flops"] / batch / 1e6
        results[name] = {"auc": m["auc"], "logloss": m["logloss"], "excess_logloss": m["excess_logloss"],
                         "mflops_per_sample": per_sample_mflops, "hardware": {}}
        for hw, spec in specs.items():
            rep = simulate(m["trace"], spec, mode=args.mode)
            results[name]["hardware"][hw] = rep.to_dict()
            rows.append((name, m["auc"], m["logloss"], m["excess_logloss"], per_sample_mflops, hw,
                         rep.totals.makespan_ns / 1e3, rep.totals.energy_pj / 1e6,
                         rep.speedup, rep.energy_ratio, rep.host))
    _print_table(rows, bayes, batch)
    config = {"rows": args.rows, "steps": args.steps, "models": list(args.models), "trace_batch": batch,
              "mode": args.mode, "data_settings_hash": manifest["settings_hash"],
              "hardware": {hw: spec_to_dict(s) for hw, s in specs.items()}}
    results["bayes_optimal_test_logloss"] = bayes
    write_report(out / "report.json", make_report("demo", config=config, results=results, seed=args.seed))
    print(f"report: {out / 'report.json'}")
    return 0


def _print_table(rows: list[tuple], bayes: float, batch: int) -> None:
    print(f"\ntest log loss of the teacher (Bayes-optimal): {bayes:.4f}; traces of batch {batch}; "
          "speedup and energy ratio against each preset's host on the same DRAM")
    head = (f"{'model':<7} {'AUC':>6} {'logloss':>8} {'excess':>7} {'MFLOP/sample':>12}  {'hardware':<12}"
            f" {'latency us':>11} {'energy uJ':>10} {'speedup':>8} {'energy x':>9}  host")
    print(head)
    print("-" * len(head))
    for name, auc, ll, ex, mf, hw, lat, en, sp, er, host in rows:
        print(f"{name:<7} {auc:>6.4f} {ll:>8.4f} {ex:>7.4f} {mf:>12.3f}  {hw:<12} {lat:>11.1f} {en:>10.1f}"
              f" {sp:>7.2f}x {er:>8.2f}x  {host}")
