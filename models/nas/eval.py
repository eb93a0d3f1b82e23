"""Scoring a subnet with inherited supernet weights: extract, fine-tune the head only, validate.

NASRec's recipe: the candidate inherits the supernet's weights, trains only the final Linear for
500 steps at lr 0.04 (Adagrad, eps 1e-2, batch 512, shuffled training batches from `seed`), and is
scored by validation log loss (AUC reported beside it). The body runs without gradients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.nas.runtime import (
    BatchStream,
    autocast,
    ctr_metrics,
    load_checkpoint,
    predict,
    resolve_device,
)
from models.nas.space import Subnet, load_subnet
from pimrec.errors import PimrecError


@dataclass(frozen=True)
class EvalConfig:
    supernet: str
    subnet: str
    data: str | None = None  # default: the data folder the supernet was trained on
    finetune_steps: int = 500
    lr: float = 0.04
    adagrad_eps: float = 1e-2
    batch_size: int = 512
    seed: int = 0
    max_eval_rows: int | None = None
    device: str = "auto"
    amp: bool = True


def load_supernet(path: str | Path, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The trained `Supernet` of a checkpoint (on `device`) and the checkpoint dictionary."""
    from models.nas.supernet import Supernet

    ckpt = load_checkpoint(path, "supernet")
    net = Supernet(ckpt["space"], ckpt["table_sizes"], ckpt["n_dense"])
    net.load_state_dict(ckpt["model"])
    return net.to(device), ckpt


def finetune_and_score(
    supernet: Any,
    subnet: Subnet,
    train: Any,
    val: Any,
    *,
    steps: int = 500,
    lr: float = 0.04,
    eps: float = 1e-2,
    batch_size: int = 512,
    seed: int = 0,
    max_eval_rows: int | None = None,
    amp: bool = True,
) -> dict[str, float]:
    """Extract `subnet` from `supernet`, fine-tune its head, return validation {auc, logloss}."""
    from models.nas.supernet import extract_subnet

    device = supernet.offsets.device
    model = extract_subnet(supernet, subnet).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.requires_grad_(True)
    opt = torch.optim.Adagrad(model.head.parameters(), lr=lr, eps=eps)
    if steps > 0:
        stream = BatchStream(train, batch_size, seed=seed, device=device)
        try:
            for _ in range(steps):
                dense, sparse, label = next(stream)
                with torch.no_grad(), autocast(device, amp):
                    x = model.features(dense, sparse)
                loss = F.binary_cross_entropy_with_logits(model.head(x.float()).squeeze(-1), label)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            stream.close()
    return ctr_metrics(*predict(model, val, 4096, device, max_eval_rows, amp))


def evaluate_subnet(config: EvalConfig) -> dict[str, Any]:
    """Load the supernet checkpoint and the subnet JSON, check they match, score the subnet."""
    from models.nas.train import split_info

    device = resolve_device(config.device)
    subnet = load_subnet(config.subnet)
    net, ckpt = load_supernet(config.supernet, device)
    if subnet.space != ckpt["space"]:
        raise PimrecError(
            f"subnet of space {subnet.space!r} but the supernet was trained on {ckpt['space']!r}",
            file=config.supernet, field="space", expected=subnet.space,
        )  # fmt: skip
    data = config.data or ckpt["config"]["data"]
    train, tables, n_dense = split_info(data)
    if tables != ckpt["table_sizes"] or n_dense != ckpt["n_dense"]:
        raise PimrecError("data tables differ from the supernet's", file=data, field="table_sizes")
    val, _, _ = split_info(data, "val")
    metrics = finetune_and_score(
        net, subnet, train, val, steps=config.finetune_steps, lr=config.lr,
        eps=config.adagrad_eps, batch_size=config.batch_size, seed=config.seed,
        max_eval_rows=config.max_eval_rows, amp=config.amp,
    )  # fmt: skip
    return {**metrics, "subnet": subnet.to_dict(), "config": asdict(config) | {"data": data}}
