"""Supernet training (NASRec recipe) with exact resume; the training step shared with standalone
training (models/nas/standalone.py).

Supernet recipe: each step trains the full supernet with probability max(0, 1 - step / T) (T =
`full_warmup_steps`; default 20 % of the run, as NASRec's 15k of ~70k Criteo steps at batch 512),
otherwise one single-operator any-connection subnet drawn from the run's numpy generator. Adagrad
(eps 1e-2, no weight decay), lr 0.12 with 10 % linear warm-up then cosine to 0, grad-norm clip 5,
batch 512, BCE-with-logits. On CUDA the forward runs under bf16 autocast. The embedding table
has sparse gradients on the CPU (models/nas/optim.py: Adagrad and clipping for them; on CUDA one
fused kernel, models/nas/fused_adagrad.py). On CUDA the sampled single paths run at static shapes
through per-block CUDA graphs over shared node buffers (`graphs`: auto, on, off;
models/nas/static.py, models/nas/chain.py, models/nas/graphs.py): the same function, so the same
training to rounding, with unused weight columns getting zero gradients, which Adagrad treats as
no gradient.

Resume is bitwise exact on the CPU (tested). On CUDA the embedding and index_select backward
passes use atomic adds, so a resumed run matches an uninterrupted one only to rounding.

Output folder: `checkpoint.pt` (every `checkpoint_every` steps and at the end; running the same
command again resumes from it exactly), `train.log` (starts with the resolved config), and
`report.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.nas.optim import clip_and_step, make_optimizer, optimizer_parameters
from models.nas.runtime import (
    CHECKPOINT_FORMAT,
    BatchStream,
    autocast,
    load_checkpoint,
    lr_at,
    remove_stale_temporaries,
    resolve_device,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from pimrec.errors import PimrecError
from pimrec.report import make_report, write_report

CHECKPOINT = "checkpoint.pt"
# Settings that may differ between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = {"device", "graphs", "checkpoint_every", "log_every", "progress"}


@dataclass(frozen=True)
class SupernetConfig:
    data: str
    space: str = "nasrec-full"
    steps: int = 1000
    batch_size: int = 512
    lr: float = 0.12
    adagrad_eps: float = 1e-2
    lr_warmup_frac: float = 0.1
    clip_norm: float = 5.0
    full_warmup_steps: int | None = None  # None: 20 % of `steps`
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    graphs: str = "auto"  # CUDA graphs for sampled paths: auto (on with CUDA), on, off
    checkpoint_every: int = 500
    log_every: int = 100

    def resolved(self) -> dict[str, Any]:
        d = asdict(self)
        if d["full_warmup_steps"] is None:
            d["full_warmup_steps"] = int(0.2 * self.steps)
        return d


def split_info(data: str | Path, split: str = "train") -> tuple[Any, list[int], int]:
    """The opened split, its table sizes and dense feature count (PimrecError when missing)."""
    from models.data import open_split

    if not Path(data).is_dir():
        raise PimrecError("data folder not found", file=data, expected="a prepared data folder")
    arrays = open_split(data, split)
    m = arrays.manifest
    return arrays, [int(t) for t in m["table_sizes"]], len(m["dense_features"])


def train_step(
    model: Any, opt: torch.optim.Optimizer, batch: tuple, lr: float, clip: float, amp: bool,
    device: torch.device, **kwargs: Any,
) -> torch.Tensor:  # fmt: skip
    """One optimiser step; returns the (device) loss tensor without synchronising. Gradients are
    clipped over the parameters `opt` steps (every caller's optimizer holds all its model's)."""
    dense, sparse, label = batch
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(dense, sparse, **kwargs)
    loss = F.binary_cross_entropy_with_logits(logits.float(), label)
    loss.backward()
    clip_and_step(opt, optimizer_parameters(opt), clip)  # a list: no module traversal
    return loss.detach()


class RunLog:
    """The per-run log: the resolved config first, then one line per event (appended on resume)."""

    def __init__(self, path: Path, config: dict[str, Any], resumed_at: int | str | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is None or not path.exists():
            path.write_text("config " + json.dumps(config, sort_keys=True) + "\n")
        if resumed_at is not None:
            where = f"step {resumed_at}" if isinstance(resumed_at, int) else resumed_at
            self.write(f"resumed at {where}")

    def write(self, line: str) -> None:
        with self.path.open("a") as fh:
            fh.write(line + "\n")


def train_supernet(
    config: SupernetConfig, out: str | Path, *, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Train (or resume) a supernet into `out`; returns the report's results.

    `stop_after` ends the run after that global step (as a kill would, after a checkpoint), for
    tests of resumption.
    """
    from tqdm import tqdm

    from models.nas.graphs import GraphedSupernet, graphs_wanted
    from models.nas.space import get_space, sample_subnet
    from models.nas.supernet import Supernet

    out = Path(out)
    cfg = config.resolved()
    get_space(config.space, field="space")
    arrays, tables, n_dense = split_info(config.data)
    device = resolve_device(config.device)
    use_graphs = graphs_wanted(config.graphs, device)
    remove_stale_temporaries(out / CHECKPOINT)
    ckpt = _resume_state(out / CHECKPOINT, cfg, tables, n_dense)
    net = Supernet(config.space, tables, n_dense, seed=config.seed).to(device)
    opt = make_optimizer(net, config.lr, config.adagrad_eps)
    model = GraphedSupernet(net, amp=config.amp) if use_graphs else net
    rng = np.random.default_rng(config.seed)
    step, position, ema = 0, (0, 0), None
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"], rng)
        step, position = int(ckpt["step"]), tuple(ckpt["data_position"])
        ema = ckpt["train_logloss_ema"]
    log = RunLog(out / "train.log", cfg, step if ckpt is not None else None)
    stream = BatchStream(
        arrays, config.batch_size, seed=config.seed, device=device, position=position
    )
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    warm_t = cfg["full_warmup_steps"]

    def checkpoint() -> None:
        save_checkpoint(
            out / CHECKPOINT,
            {
                "kind": "supernet", "format": CHECKPOINT_FORMAT, "config": cfg, "space": config.space,
                "table_sizes": tables, "n_dense": n_dense, "model": net.state_dict(),
                "optimizer": opt.state_dict(), "step": step, "data_position": list(stream.position),
                "scheduler": {"kind": "linear-warmup-cosine", "base_lr": config.lr,
                              "warmup_frac": config.lr_warmup_frac, "total_steps": config.steps},
                "rng": rng_state(rng), "train_logloss_ema": ema,
            },
        )  # fmt: skip

    bar = tqdm(total=config.steps, initial=step, disable=not progress, unit="step", desc="supernet")
    t0, s0, full_steps, ck_s = time.perf_counter(), step, 0, 0.0
    try:
        while step < last:
            full = rng.random() < max(0.0, 1.0 - step / warm_t) if warm_t > 0 else False
            subnet = None if full else sample_subnet(net.space, rng)
            full_steps += full
            batch = next(stream)
            lr = lr_at(step, config.steps, config.lr, config.lr_warmup_frac)
            loss = train_step(
                model, opt, batch, lr, config.clip_norm, config.amp, device, subnet=subnet
            )
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == last:
                value = float(loss)
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                bar.set_postfix(loss=f"{ema:.4f}")
                log.write(f"step {step} loss {value:.5f} ema {ema:.5f} lr {lr:.5f}")
            if step % config.checkpoint_every == 0 or step == last:
                t_ck = time.perf_counter()
                checkpoint()
                ck_s += time.perf_counter() - t_ck
    finally:
        bar.close()
        stream.close()
    wall = time.perf_counter() - t0
    train_s = wall - ck_s
    results = {
        "steps": step,
        "train_logloss_ema": ema,
        "samples_per_s": (step - s0) * config.batch_size / train_s if train_s > 0 else None,
        "checkpoint_s": ck_s,
        "full_supernet_steps": full_steps,
        "cuda_graphs": model.captured() if use_graphs else None,
        "graph_capture_s": model.capture_s if use_graphs else None,
        "wall_s": wall,
        "device": str(device),
        "checkpoint": str(out / CHECKPOINT),
    }
    log.write("done " + json.dumps(results, sort_keys=True))
    if step >= config.steps:
        write_report(out / "report.json", make_report("train-supernet", config=cfg,
                                                      results=results, seed=config.seed))  # fmt: skip
    return results


def _resume_state(
    path: Path, cfg: dict[str, Any], tables: list[int], n_dense: int
) -> dict[str, Any] | None:
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, "supernet")
    check_resume(path, ckpt, cfg, tables, n_dense, RESUMABLE_CHANGES)
    return ckpt


def check_resume(
    path: Path, ckpt: dict[str, Any], cfg: dict[str, Any], tables: list[int], n_dense: int,
    resumable: set[str],
) -> None:  # fmt: skip
    """PimrecError naming the first setting (outside `resumable`) that differs from the
    checkpoint's, or the data when its tables differ."""
    old = ckpt["config"]
    for key in sorted(set(cfg) | set(old)):
        if key not in resumable and old.get(key) != cfg.get(key):
            raise PimrecError(
                f"the checkpoint in the output folder was trained with {key}={old.get(key)!r}",
                file=path, field=key, expected=f"{cfg.get(key)!r} (or a fresh --out folder)",
            )  # fmt: skip
    if ckpt["table_sizes"] != tables or ckpt["n_dense"] != n_dense:
        raise PimrecError("checkpoint does not match the data's tables", file=path, field="data")


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from the matching keys of `values` (e.g. argparse's namespace)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names and v is not None})


def __getattr__(name: str) -> Any:
    """Standalone training moved to models.nas.standalone; these names still import from here."""
    if name in ("ModelConfig", "build_model", "train_model"):
        from models.nas import standalone

        return getattr(standalone, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
