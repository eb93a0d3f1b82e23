"""Standalone training of a subnet or a baseline from scratch, per seed, with early stopping and
exact resume.

Per seed: Adagrad (eps 1e-2, no weight decay) with 10 % linear warm-up then cosine over
`total_steps` (`max_steps`, or `epochs` x batches per epoch), grad-norm clip 5, batches from the
seed's shuffle; every `eval_every` steps the validation log loss is measured, the best weights are
kept, and the seed stops after `patience` validations without improvement. The best weights are
scored on the test split; the report gives AUC and log loss as mean and sample std over seeds.

Resume: `OUT/checkpoint.pt` is written atomically at every validation (or every
`checkpoint_every` steps when set) and when a seed ends. It holds the finished seeds' results and,
for the seed in progress, model, optimizer, step, data position, early-stopping state (best log
loss, its step and weights, validations without improvement) and the RNG states. Running the same
command with the same --out continues exactly where the checkpoint stopped (bitwise on the CPU;
tested, also after a SIGKILL); a different setting is a PimrecError naming it. A finished folder
rewrites the same report without training.

Output folder: `checkpoint.pt`, `train.log` (starts with the resolved config), `report.json`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.nas import train as _train
from models.nas.graphs import graph_model, graphs_wanted
from models.nas.optim import make_optimizer
from models.nas.runtime import (
    CHECKPOINT_FORMAT,
    BatchStream,
    ctr_metrics,
    load_checkpoint,
    lr_at,
    predict,
    remove_stale_temporaries,
    resolve_device,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from models.nas.train import CHECKPOINT, RunLog, check_resume, split_info
from pimrec.errors import PimrecError
from pimrec.report import make_report, write_report

# Settings that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {"device", "graphs", "checkpoint_every", "subnet"}  # the subnet's record is compared


@dataclass(frozen=True)
class ModelConfig:
    data: str
    subnet: str | None = None  # path of a subnet JSON
    model: str | None = None  # dlrm, deepfm or dcnv2
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 512
    lr: float = 0.12
    adagrad_eps: float = 1e-2
    lr_warmup_frac: float = 0.1
    clip_norm: float = 5.0
    eval_every: int | None = None  # steps between validations; None: 10 per run
    patience: int = 3
    max_eval_rows: int | None = None
    device: str = "auto"
    amp: bool = True
    graphs: str = "auto"  # the training step as CUDA graphs: auto (on with CUDA), on, off
    checkpoint_every: int | None = None  # steps between checkpoints; None: at each validation


def build_model(config: ModelConfig, tables: list[int], n_dense: int, seed: int) -> torch.nn.Module:
    """A freshly initialised subnet (from its JSON) or baseline, seeded."""
    from models.nas.space import load_subnet
    from models.nas.supernet import SubnetModel

    if (config.subnet is None) == (config.model is None):
        raise PimrecError("give exactly one of a subnet or a model", field="--subnet/--model")
    if config.subnet is not None:
        return SubnetModel(load_subnet(config.subnet), tables, n_dense, seed=seed)
    from models.baselines import build_baseline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_baseline(config.model, tables, n_dense, embedding_dim=16)


@dataclass
class _SeedState:
    """Training state of the seed in progress (what a checkpoint stores for it)."""

    seed: int
    step: int = 0
    position: tuple[int, int] = (0, 0)
    best: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad: int = 0


def train_model(
    config: ModelConfig,
    out: str | Path,
    *,
    progress: bool = True,
    stop_after: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train (or resume) from scratch per seed into `out`; returns the report's results: test
    `auc`, `logloss` (means), `auc_std`, `logloss_std` (sample std over seeds) and `per_seed`.

    `stop_after=(seed, step)` ends the run after that step of that seed, after writing a
    checkpoint (as a kill would), for tests of resumption; it then returns
    {"stopped_at": {...}, "per_seed": [finished seeds]} and writes no report.
    """
    out = Path(out)
    arrays, tables, n_dense = split_info(config.data)
    val, _, _ = split_info(config.data, "val")
    test, _, _ = split_info(config.data, "test")
    device = resolve_device(config.device)
    graphs_wanted(config.graphs, device)  # a bad setting fails before any work
    build_model(config, tables, n_dense, config.seeds[0])  # bad --subnet / --model: fail early
    per_epoch = len(arrays) // config.batch_size
    total = per_epoch * config.epochs if config.max_steps is None else config.max_steps
    if total < 1:
        raise PimrecError("no training steps", field="steps", expected="at least one batch")
    every = config.eval_every or max(1, total // 10)
    cfg = asdict(config) | {"seeds": list(config.seeds), "total_steps": total, "eval_every": every}
    if config.subnet is not None:
        from models.nas.space import load_subnet

        cfg["subnet_record"] = load_subnet(config.subnet).to_dict()
    path = out / CHECKPOINT
    remove_stale_temporaries(path)
    ckpt = _resume(path, cfg, tables, n_dense)
    finished: list[dict[str, Any]] = list(ckpt["finished"]) if ckpt else []
    current = ckpt["current"] if ckpt else None
    resumed_at = None
    if current is not None:
        resumed_at = f"seed {current['seed']} step {current['step']}"
    elif ckpt is not None:
        left = config.seeds[len(finished) :]
        resumed_at = f"seed {left[0]} step 0" if left else "the end (every seed finished)"
    log = RunLog(out / "train.log", cfg, resumed_at)
    run = _Run(config, cfg, out, device, tables, n_dense, (val, test), log, progress)
    for seed in config.seeds[len(finished) :]:
        state = current if current is not None and current["seed"] == seed else None
        result = run.seed(arrays, seed, state, finished, total, every, stop_after)
        current = None
        if result is None:  # stopped by stop_after
            return {"stopped_at": {"seed": seed, "step": stop_after[1]}, "per_seed": finished}
        finished.append(result)
        run.checkpoint(finished, None)
    auc = np.array([r["auc"] for r in finished])
    ll = np.array([r["logloss"] for r in finished])
    std = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    results = {
        "auc": float(auc.mean()), "auc_std": std(auc), "logloss": float(ll.mean()),
        "logloss_std": std(ll), "per_seed": finished,
    }  # fmt: skip
    write_report(out / "report.json", make_report("train-model", config=cfg, results=results,
                                                  seed=config.seeds[0]))  # fmt: skip
    return results


class _Run:
    """The pieces one `train_model` call shares between its seeds."""

    def __init__(self, config: ModelConfig, cfg: dict[str, Any], out: Path, device: torch.device,
                 tables: list[int], n_dense: int, eval_splits: tuple, log: RunLog,
                 progress: bool) -> None:  # fmt: skip
        self.config, self.cfg, self.out, self.device = config, cfg, out, device
        self.tables, self.n_dense, self.log, self.progress = tables, n_dense, log, progress
        self.val, self.test = eval_splits
        self.np_rng = np.random.default_rng(0)  # unused by training; its state is saved anyway

    def checkpoint(self, finished: list[dict[str, Any]], current: dict[str, Any] | None) -> None:
        save_checkpoint(
            self.out / CHECKPOINT,
            {"kind": "model", "format": CHECKPOINT_FORMAT, "config": self.cfg, "table_sizes": self.tables,
             "n_dense": self.n_dense, "finished": finished, "current": current},
        )  # fmt: skip

    def seed(
        self, arrays: Any, seed: int, saved: dict[str, Any] | None, finished: list[dict[str, Any]],
        total: int, every: int, stop_after: tuple[int, int] | None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """Train one seed (from `saved` when resuming); its results, or None when stopped."""
        from tqdm import tqdm

        config, device = self.config, self.device
        model = build_model(config, self.tables, self.n_dense, seed).to(device)
        opt = make_optimizer(model, config.lr, config.adagrad_eps)
        st = _SeedState(seed)
        if saved is not None:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            restore_rng(saved["rng"], self.np_rng)
            st = _SeedState(seed, int(saved["step"]), tuple(saved["data_position"]),
                            float(saved["best"]), int(saved["best_step"]), saved["best_state"],
                            int(saved["bad"]))  # fmt: skip
            if st.best_state is None and st.best_step == st.step and st.step > 0:
                st.best_state = copy.deepcopy(model.state_dict())
        if graphs_wanted(config.graphs, device):
            graph_model(model, config.batch_size, self.n_dense, len(self.tables), amp=config.amp)

        def checkpoint(position: tuple[int, int]) -> None:
            best_state = None if st.best_step == st.step else st.best_state  # else: = model
            self.checkpoint(finished, {
                "seed": seed, "step": st.step, "data_position": list(position),
                "model": model.state_dict(), "optimizer": opt.state_dict(), "best": st.best,
                "best_step": st.best_step, "best_state": best_state, "bad": st.bad,
                "rng": rng_state(self.np_rng),
            })  # fmt: skip

        stream = BatchStream(arrays, config.batch_size, seed=seed, device=device,
                             position=st.position)  # fmt: skip
        bar = tqdm(total=total, initial=st.step, disable=not self.progress, unit="step",
                   desc=f"seed {seed}")  # fmt: skip
        try:
            while st.step < total and st.bad < config.patience:
                lr = lr_at(st.step, total, config.lr, config.lr_warmup_frac)
                _train.train_step(model, opt, next(stream), lr, config.clip_norm, config.amp,
                                  device)  # fmt: skip
                st.step += 1
                bar.update(1)
                validated = st.step % every == 0 or st.step == total
                if validated:
                    bar.set_postfix(val_logloss=f"{self._validate(model, st):.4f}")
                stop = stop_after is not None and stop_after == (seed, st.step)
                ck = config.checkpoint_every
                if stop or (st.step % ck == 0 if ck else validated):
                    checkpoint(stream.position)
                if stop:
                    return None
        finally:
            bar.close()
            stream.close()
        if st.best_state is None:  # every validation log loss was NaN (training diverged)
            raise PimrecError(
                f"seed {seed}: the validation log loss was never finite (training diverged)",
                field="lr", expected=f"a smaller learning rate than {config.lr}",
            )  # fmt: skip
        model.load_state_dict(st.best_state)
        test_m = ctr_metrics(*predict(model, self.test, 4096, device, None))
        self.log.write(f"seed {seed} test {json.dumps(test_m)}")
        return {"seed": seed, "steps": st.step, "val_logloss": st.best, **test_m}

    def _validate(self, model: torch.nn.Module, st: _SeedState) -> float:
        """Validation log loss; updates the early-stopping state."""
        m = ctr_metrics(*predict(model, self.val, 4096, self.device, self.config.max_eval_rows))
        self.log.write(f"seed {st.seed} step {st.step} val {json.dumps(m)}")
        if m["logloss"] < st.best:
            st.best, st.best_step, st.bad = m["logloss"], st.step, 0
            st.best_state = copy.deepcopy(model.state_dict())
        else:
            st.bad += 1
        return m["logloss"]


def _resume(path: Path, cfg: dict[str, Any], tables: list[int], n_dense: int) -> dict | None:
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, "model")
    check_resume(path, ckpt, cfg, tables, n_dense, RESUMABLE_CHANGES)
    seeds = [r["seed"] for r in ckpt["finished"]]
    if seeds != list(cfg["seeds"][: len(seeds)]):  # cannot differ once the configs agree
        raise PimrecError("finished seeds differ from --seeds", file=path, field="seeds")
    return ckpt
