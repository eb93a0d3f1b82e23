"""Subcommands: `pimrec train supernet|model`, `pimrec eval subnet`, `pimrec subnet sample`.

Torch and the training modules are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pimrec.cli import add_command, add_group


def _common(p: argparse.ArgumentParser, *, training: bool = True) -> None:
    p.add_argument("--batch-size", type=int, default=512, help="rows per step (default 512)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    if training:
        p.add_argument("--graphs", choices=("auto", "on", "off"), default="auto",
                       help="training steps replayed as CUDA graphs (auto: on with CUDA)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def register(subparsers: Any) -> None:
    """Add the supernet / model training and evaluation subcommands."""
    train = add_group(
        subparsers, "train", help="train a supernet or a standalone model",
        description="Train the weight-sharing supernet or a standalone subnet / baseline model.",
        example="pimrec train supernet --data prepared/ --space nasrec-full --steps 20000 --out run/",
    )  # fmt: skip
    p = add_command(
        train, "supernet", help="train the NASRec supernet (resumable)", handler=_train_supernet,
        description="""
            Single-operator any-connection supernet training (NASRec): full-supernet warm-up
            with probability 1 - step/T, Adagrad, lr with 10% warm-up then cosine, grad clip 5.
            Checkpoints go to OUT/checkpoint.pt; running the same command again resumes exactly.""",
        example="pimrec train supernet --data prepared/ --space nasrec-full --steps 20000 --out run/",
    )  # fmt: skip
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--space", default="nasrec-full", help="nasrec-full or nasrec-small")
    p.add_argument("--steps", type=int, required=True, help="training steps")
    p.add_argument("--out", required=True, help="output folder (checkpoint, log, report)")
    p.add_argument("--lr", type=float, default=0.12)
    p.add_argument("--full-warmup-steps", type=int, help="T of the full-supernet warm-up")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    _common(p)

    p = add_command(
        train, "model", help="train a subnet or baseline from scratch", handler=_train_model,
        description="""
            Train a subnet (--subnet S.json) or a baseline (--model dlrm|deepfm|dcnv2) from
            scratch with early stopping on validation log loss; report test AUC and log loss
            (mean +- std over --seeds) in OUT/report.json (results keys auc, logloss).
            Checkpoints go to OUT/checkpoint.pt; running the same command again resumes exactly.""",
        example="pimrec train model --subnet best.json --data prepared/ --out m/ --seeds 0 1 2",
    )  # fmt: skip
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--subnet", help="subnet JSON")
    g.add_argument("--model", choices=("dlrm", "deepfm", "dcnv2"), help="baseline model")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--eval-every", type=int, help="steps between validations (default: 10/run)")
    p.add_argument("--patience", type=int, default=3, help="validations without improvement")
    p.add_argument("--max-eval-rows", type=int, help="validate on the first rows only")
    p.add_argument("--lr", type=float, default=0.12)
    p.add_argument("--checkpoint-every", type=int,
                   help="steps between checkpoints (default: at every validation)")  # fmt: skip
    _common(p)

    ev = add_group(
        subparsers, "eval", help="score a subnet with inherited supernet weights",
        description="Evaluate subnets with weights inherited from a trained supernet.",
        example="pimrec eval subnet --supernet run/checkpoint.pt --subnet s.json",
    )  # fmt: skip
    p = add_command(
        ev, "subnet", help="head-only fine-tuning, then validation log loss and AUC",
        handler=_eval_subnet,
        description="""
            Extract the subnet from the supernet checkpoint, fine-tune only its final Linear
            (500 steps, lr 0.04 by default) and report validation log loss and AUC.""",
        example="pimrec eval subnet --supernet run/checkpoint.pt --subnet s.json --out e/",
    )  # fmt: skip
    p.add_argument("--supernet", required=True, help="supernet checkpoint (checkpoint.pt)")
    p.add_argument("--subnet", required=True, help="subnet JSON")
    p.add_argument("--data", help="prepared data folder (default: the supernet's)")
    p.add_argument("--finetune-steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-eval-rows", type=int, help="validate on the first rows only")
    p.add_argument("--out", help="folder for report.json")
    _common(p, training=False)

    sub = add_group(
        subparsers, "subnet", help="make subnet records",
        description="Create subnet JSON records of a search space.",
        example="pimrec subnet sample --space nasrec-full --seed 3 --out s.json",
    )  # fmt: skip
    p = add_command(
        sub, "sample", help="sample a random subnet (seeded)", handler=_sample,
        description="Draw one single-operator any-connection subnet from a search space.",
        example="pimrec subnet sample --space nasrec-small --seed 3 --out s.json",
    )  # fmt: skip
    p.add_argument("--space", default="nasrec-full")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", help="output JSON (default: stdout)")


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    from pimrec.errors import PimrecError

    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise PimrecError(f"got {value}", field=flag, expected="a positive integer")


def _train_supernet(args: argparse.Namespace) -> int:
    from models.nas.train import SupernetConfig, config_from_dict, train_supernet

    _check_positive(args, "steps", "batch_size", "checkpoint_every", "full_warmup_steps")
    config = config_from_dict(SupernetConfig, vars(args))
    r = train_supernet(config, args.out, progress=args.progress)
    print(f"supernet: {r['steps']} steps, {r['samples_per_s']:.0f} samples/s, "
          f"train log loss {r['train_logloss_ema']:.4f}; checkpoint {r['checkpoint']}")  # fmt: skip
    return 0


def _train_model(args: argparse.Namespace) -> int:
    from models.nas.standalone import ModelConfig, train_model
    from models.nas.train import config_from_dict

    _check_positive(args, "batch_size", "epochs", "max_steps", "eval_every", "patience",
                    "checkpoint_every")  # fmt: skip
    values = vars(args) | {"seeds": tuple(args.seeds)}
    r = train_model(config_from_dict(ModelConfig, values), args.out, progress=args.progress)
    print(f"test AUC {r['auc']:.4f} +- {r['auc_std']:.4f}, "
          f"log loss {r['logloss']:.4f} +- {r['logloss_std']:.4f} "
          f"({len(r['per_seed'])} seeds); report {Path(args.out) / 'report.json'}")  # fmt: skip
    return 0


def _eval_subnet(args: argparse.Namespace) -> int:
    from models.nas.eval import EvalConfig, evaluate_subnet
    from models.nas.train import config_from_dict
    from pimrec.report import make_report, write_report

    _check_positive(args, "batch_size", "max_eval_rows")
    config = config_from_dict(EvalConfig, vars(args))
    r = evaluate_subnet(config)
    results = {"auc": r["auc"], "logloss": r["logloss"], "subnet": r["subnet"]}
    if args.out:
        report = make_report("eval-subnet", config=r["config"], results=results, seed=args.seed)
        write_report(Path(args.out) / "report.json", report)
    print(f"validation log loss {r['logloss']:.5f}, AUC {r['auc']:.5f}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from models.nas.space import get_space, sample_subnet, save_subnet

    subnet = sample_subnet(get_space(args.space, field="--space"), args.seed)
    if args.out:
        save_subnet(subnet, args.out)
    else:
        sys.stdout.write(json.dumps(subnet.to_dict(), indent=1) + "\n")
    return 0
