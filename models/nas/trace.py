"""Operator traces of subnets: the six operators registered with `traces.export`.

Importing this module registers a handler per supernet operator (FC, EFC, Dot-Product, Gating /
Sum, Attention), the FM term of the sparse->dense switch and the stem embedding, so
`traces.export.export_trace` records each as trace ops. `export_subnet` exports the standalone
(extracted or fresh) `SubnetModel`, which holds only live blocks: dead blocks contribute nothing.
Glue between operators (concatenations, the switches' Linears, residual sums, the head) is recorded
by the exporter itself. Matrix-product FLOPs equal `FlopCounterMode`'s, except that torch 2.13 on
CPU counts nothing for scaled-dot-product attention (traces/FORMAT.md): the trace is then above
torch by exactly its `attention` ops' 2 x MACs.

`export_subnet_file` is what `pimrec trace export --subnet S.json [--supernet CKPT]` runs: the
weights are inherited from a supernet checkpoint or fresh (seeded), the batch is the first rows of a
prepared data folder, of a Criteo TSV, or synthetic indices (traces.indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.nas.ops import EFC, EMB, FC, FM, Attention, Binary, Dot, dot_pairs, dot_tokens
from models.nas.space import Subnet
from models.nas.supernet import StemEmbedding, SubnetModel
from pimrec.errors import PimrecError
from traces.export import ExportContext, export_trace, register_module
from traces.format import Trace


def _fc(ctx: ExportContext, m: int, k: int, n: int, inputs: tuple, suffix: str) -> str:
    params = {"m": m, "k": k, "n": n, "bias": True, "static": True}
    return ctx.add("fc", params, inputs, suffix=suffix)


def _efc(ctx: ExportContext, b: int, n_in: int, n_out: int, inputs: tuple, suffix: str) -> str:
    params = {"batch": b, "tokens_in": n_in, "tokens_out": n_out, "dim": EMB, "bias": True}
    return ctx.add("efc", params, inputs, suffix=suffix)


def _ln(ctx: ExportContext, rows: int, width: int, src: str, suffix: str = "ln") -> str:
    return ctx.add(
        "layernorm", {"rows": rows, "width": width, "affine": True}, (src,), suffix=suffix
    )


def _act(ctx: ExportContext, rows: int, width: int, src: str, fn: str, suffix: str) -> str:
    return ctx.add(
        "activation", {"rows": rows, "width": width, "function": fn}, (src,), suffix=suffix
    )


def fc_handler(ctx: ExportContext, m: FC, inputs: tuple, output: Any) -> str:
    x, b, d = inputs[0], int(output.shape[0]), int(output.shape[1])
    op = _fc(ctx, b, int(x.shape[1]), d, ctx.producers(x), "linear")
    if m.ln is not None:
        op = _ln(ctx, b, d, op)
    return _act(ctx, b, d, op, "relu", "relu")


def efc_handler(ctx: ExportContext, m: EFC, inputs: tuple, output: Any) -> str:
    x = inputs[0]
    b, n, t = int(x.shape[0]), int(x.shape[1]), int(output.shape[1])
    op = _efc(ctx, b, n, t, ctx.producers(x), "linear")
    if m.ln is not None:
        op = _ln(ctx, b * t, EMB, op)
    return _act(ctx, b, t * EMB, op, "relu", "relu")


def attention_handler(ctx: ExportContext, m: Attention, inputs: tuple, output: Any) -> str:
    x = inputs[0]
    b, n, t = int(x.shape[0]), int(x.shape[1]), int(output.shape[1])
    rows = b * t
    y = _efc(ctx, b, n, t, ctx.producers(x), "linear")
    qkv = _fc(ctx, rows, EMB, 3 * EMB, (y,), "qkv")
    params = {"batch": b, "tokens": t, "width": EMB, "heads": m.heads}
    a = ctx.add("attention", params, (qkv,), suffix="attention")
    a = _fc(ctx, rows, EMB, EMB, (a,), "out")
    r = ctx.add("sum", {"rows": b, "width": t * EMB, "n_inputs": 2}, (y, a), suffix="residual1")
    y = _ln(ctx, rows, EMB, r, "ln1")
    f = _act(ctx, rows, EMB, _fc(ctx, rows, EMB, EMB, (y,), "ff1"), "relu", "relu")
    f = _fc(ctx, rows, EMB, EMB, (f,), "ff2")
    r = ctx.add("sum", {"rows": b, "width": t * EMB, "n_inputs": 2}, (y, f), suffix="residual2")
    return _ln(ctx, rows, EMB, r, "ln2")


def dot_handler(ctx: ExportContext, m: Dot, inputs: tuple, output: Any) -> str:
    x, s, d = inputs[0], inputs[2], int(inputs[4])
    b, k = int(x.shape[0]), dot_tokens(d)
    dense_tok = _fc(ctx, b, int(x.shape[1]), EMB, ctx.producers(x), "dense_proj")
    tokens = _efc(ctx, b, int(s.shape[1]), k, ctx.producers(s), "token_proj")
    if m.dense_ln is not None:
        dense_tok = _ln(ctx, b, EMB, dense_tok, "dense_ln")
    if m.token_ln is not None:
        tokens = _ln(ctx, b * k, EMB, tokens, "token_ln")
    cat = ctx.add("concat", {"rows": b, "width": (k + 1) * EMB, "n_inputs": 2},
                  (dense_tok, tokens), suffix="stack")  # fmt: skip
    params = {"batch": b, "tokens": k + 1, "dim": EMB, "self_interaction": False,
              "full_gram": True}  # fmt: skip
    op = ctx.add("dot_interaction", params, (cat,), suffix="pairs")
    if dot_pairs(k) != d:
        op = _fc(ctx, b, dot_pairs(k), d, (op,), "out")
    return _ln(ctx, b, d, op) if m.ln is not None else op


def binary_handler(ctx: ExportContext, m: Binary, inputs: tuple, output: Any) -> str:
    left, right, d = inputs[0], inputs[1], int(inputs[2])
    b, wl, wr = int(left.shape[0]), int(left.shape[1]), int(right.shape[1])
    width = max(wl, wr)
    if m.gate is not None:
        g = _fc(ctx, b, wl, width, ctx.producers(left), "gate")
        op = ctx.add("gating", {"rows": b, "width": width}, (g, *ctx.producers(right)),
                     suffix="gating")  # fmt: skip
    else:
        params = {"rows": b, "width": width, "n_inputs": 2}
        op = ctx.add("sum", params, ctx.producers(left, right), suffix="sum")
    op = op if width == d else _fc(ctx, b, width, d, (op,), "proj")
    return _ln(ctx, b, d, op) if m.ln is not None else op


def fm_handler(ctx: ExportContext, m: FM, inputs: tuple, output: Any) -> str:
    x = inputs[0]
    params = {"batch": int(x.shape[0]), "fields": int(x.shape[1]), "dim": int(x.shape[2])}
    return ctx.add("fm", params, ctx.producers(x))


def embedding_handler(ctx: ExportContext, m: StemEmbedding, inputs: tuple, output: Any) -> str:
    """One embedding_bag op (pooling 1) per feature, on table-local indices, then a concat."""
    ids = inputs[0].detach().cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(m.table_sizes)[:-1]])
    b = int(ids.shape[0])
    ops = []
    for j, rows in enumerate(m.table_sizes):
        idx = (ids[:, j] - offsets[j]).astype(np.int32 if rows < 2**31 else np.int64)
        params = {"table": ctx.table_id(_TableKey(m, j), rows, EMB), "rows": rows, "dim": EMB,
                  "batch": b, "pooling": 1, "mode": "sum", "index_bits": idx.itemsize * 8}  # fmt: skip
        ops.append(ctx.add("embedding_bag", params, suffix=f"f{j}",
                           offsets=np.arange(b + 1, dtype=np.int64), indices=idx))  # fmt: skip
    params = {"rows": b, "width": len(ops) * EMB, "n_inputs": len(ops)}
    return ctx.add("concat", params, tuple(ops), suffix="stack")


class _TableKey:
    """A stable per-(module, feature) identity for `ctx.table_id` (keyed by object id)."""

    _keys: dict[tuple[int, int], _TableKey] = {}

    def __new__(cls, module: StemEmbedding, feature: int) -> _TableKey:
        key = (id(module), feature)
        if key not in cls._keys:
            cls._keys[key] = super().__new__(cls)
        return cls._keys[key]


for _type, _handler in (
    (FC, fc_handler), (EFC, efc_handler), (Attention, attention_handler), (Dot, dot_handler),
    (Binary, binary_handler), (FM, fm_handler), (StemEmbedding, embedding_handler),
):  # fmt: skip
    register_module(_type, _handler)


def export_subnet(
    subnet: Subnet,
    dense: np.ndarray | torch.Tensor,
    sparse: np.ndarray | torch.Tensor,
    *,
    table_sizes: Sequence[int] | None = None,
    n_dense: int | None = None,
    model: SubnetModel | None = None,
    name: str = "subnet",
    dtype_bits: int = 32,
    metadata: dict[str, Any] | None = None,
) -> Trace:
    """The trace of `subnet`'s forward pass on the batch (dense [B, n_dense], sparse [B, n_sparse]
    table-local indices). `model` (e.g. from `extract_subnet`) or fresh weights from the sizes."""
    if model is None:
        if table_sizes is None or n_dense is None:
            raise ValueError("give a model or table_sizes and n_dense")
        model = SubnetModel(subnet, table_sizes, n_dense)
    d = torch.as_tensor(np.asarray(dense, dtype=np.float32))
    s = torch.as_tensor(np.asarray(sparse, dtype=np.int64))
    device = model.offsets.device
    meta = {**(metadata or {}), "subnet": subnet.to_dict(),
            "live_blocks": list(subnet.live_blocks())}  # fmt: skip
    return export_trace(model, (d.to(device), s.to(device)), name=name, dtype_bits=dtype_bits,
                        metadata=meta)  # fmt: skip


def export_subnet_file(
    subnet_path: str | Path,
    *,
    supernet: str | Path | None = None,
    tables: str = "criteo",
    batch_size: int,
    data: str | Path | None = None,
    index: str = "uniform",
    seed: int = 0,
    dtype_bits: int = 32,
) -> tuple[Trace, dict[str, Any]]:
    """(trace, FLOPs cross-check) of the subnet in `subnet_path` on one batch.

    Table sizes and dense features come from the supernet checkpoint when given, else from a
    prepared `data` folder, else from the `tables` set (traces.builder.parse_tables). The batch is
    the first `batch_size` rows of `data` (a prepared folder's train split or a Criteo raw TSV)
    or synthetic (`index` distribution, `seed`). Weights: inherited from `supernet`
    (extract_subnet) or fresh, seeded by `seed`.
    """
    from models.nas.space import load_subnet
    from traces.builder import parse_tables
    from traces.export import flop_cross_check, torch_flop_count
    from traces.export_baselines import input_batch

    subnet = load_subnet(subnet_path)
    if batch_size < 1:
        raise PimrecError(f"must be >= 1, got {batch_size}", field="--batch")
    net = None
    if supernet is not None:
        from models.nas.eval import load_supernet

        net, ckpt = load_supernet(supernet, torch.device("cpu"))
        if subnet.space != ckpt["space"]:
            raise PimrecError(
                f"subnet of space {subnet.space!r} but the supernet was trained on "
                f"{ckpt['space']!r}", file=supernet, field="space", expected=subnet.space,
            )  # fmt: skip
        sizes, n_dense, label = list(ckpt["table_sizes"]), int(ckpt["n_dense"]), "supernet"
    prepared = data is not None and Path(data).is_dir()
    if prepared:
        from models.data import read_manifest

        m = read_manifest(data)
        p_sizes, p_dense = [int(t) for t in m["table_sizes"]], len(m["dense_features"])
        if net is not None and (p_sizes, p_dense) != (sizes, n_dense):
            raise PimrecError("the data's tables differ from the supernet's", file=data,
                              field="table_sizes", expected=str(sizes))  # fmt: skip
        sizes, n_dense, label = p_sizes, p_dense, str(data)
    elif net is None:
        sizes, parsed_dense = parse_tables(tables)
        n_dense, label = parsed_dense or 13, tables
    if prepared:
        dense, sparse, source = _prepared_batch(Path(data), batch_size)
    else:
        dense, sparse, source = input_batch(data, batch_size, sizes, n_dense, index, seed)
    if net is not None:
        from models.nas.supernet import extract_subnet

        model = extract_subnet(net, subnet)
    else:
        model = SubnetModel(subnet, sizes, n_dense, seed=seed)
    meta = {"command": "pimrec trace export", "seed": seed, "tables": label,
            "batch_source": source, "subnet_file": str(subnet_path),
            "supernet": None if supernet is None else str(supernet)}  # fmt: skip
    trace = export_subnet(subnet, dense, sparse, model=model, name=Path(subnet_path).stem,
                          dtype_bits=dtype_bits, metadata=meta)  # fmt: skip
    inputs = (torch.from_numpy(dense.astype(np.float32)), torch.from_numpy(sparse.astype(np.int64)))
    check = flop_cross_check(trace, torch_flop_count(model, inputs))
    attention = 2 * sum(op.macs for op in trace.ops if op.kind == "attention")
    torch_total = check["torch_flop_counter_flops"]
    rest = check["trace_matmul_flops"] - attention
    check["trace_attention_flops"] = attention
    check["relative_difference_without_attention"] = (
        abs(rest - torch_total) / torch_total if torch_total else float(rest != 0)
    )
    trace.metadata["export"]["flop_cross_check"] = check  # type: ignore[index]
    return trace, check


def _prepared_batch(folder: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The first `batch_size` rows of a prepared folder's train split (file order)."""
    from models.data import iter_batches, open_split

    split = open_split(folder, "train")
    if len(split) < batch_size:
        raise PimrecError(f"the train split has {len(split)} rows", file=folder,
                          field="--batch", expected=f"at most {len(split)}")  # fmt: skip
    dense, sparse, _ = next(iter_batches(split, batch_size, shuffle=False, seed=0))
    source = {"data": str(folder), "split": "train", "rows": f"first {batch_size}"}
    return np.asarray(dense, np.float32), np.asarray(sparse, np.int64), source
