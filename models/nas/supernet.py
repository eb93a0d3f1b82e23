"""The weight-sharing supernet, the standalone subnet model, and extraction between them.

`Supernet(space, table_sizes, n_dense)` holds every layer once at maximum width. Its forward runs
either the full supernet (`subnet=None`: all ops summed, all connections, maximum widths, both
switches on) or one subnet, on slices of the shared weights (only the chosen inputs' columns and
the first d outputs), skipping dead blocks. `extract_subnet(supernet, subnet)` copies those slices
into a `SubnetModel`, which instantiates only the live blocks, chosen ops, inputs and widths.

Layouts at maximum width (W = max dense width, T = max tokens + 8):
- block i's dense input columns: node 0 at [0, n_dense), node j >= 1 at n_dense + W (j - 1);
- block i's sparse input tokens: node 0 at [0, n_sparse), node j >= 1 at n_sparse + T (j - 1);
  inside a block's slot its op tokens sit at [0, t) and its dense->sparse tokens at [T - 8, T);
- head input: dense output at [0, W), then the flattened token slot (token-major, 16 per token).
Choices where search_space.md is silent: the full supernet averages its ops' outputs (a plain sum
grows the logits to ~1e3 through seven blocks at initialisation); the switches both read the ops' outputs before either is
applied (dense->sparse reads the dense op output, the FM of sparse->dense reads the sparse op
output); in the full supernet the binary ops read left = node i, right = node max(i - 1, 0); the
embedding table is one concatenated table (per-feature offsets), initialised U(-0.05, 0.05), with
sparse gradients on the CPU and dense ones on CUDA (`sparse_grad=None`; True / False force one; the
same Adagrad update with weight decay 0; models/nas/optim.py has the clipping and the H200 figures).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from models.nas.ops import (
    EFC,
    EMB,
    FC,
    FM,
    Attention,
    Binary,
    Cols,
    Dot,
    copy_layer_norm,
    copy_linear,
    dot_tokens,
    sliced_layer_norm,
)
from models.nas.ops import sliced_linear as _linear
from models.nas.optim import AutoSparseEmbedding
from models.nas.plans import BlockPlan, full_plans, subnet_plans
from models.nas.space import D2S_TOKENS, SearchSpace, Subnet, get_space


class Block(nn.Module):
    """One choice block holding the given ops at the given (maximum) sizes."""

    def __init__(
        self,
        dense_ops: Sequence[str],
        sparse_ops: Sequence[str],
        *,
        dense_in: int,
        tokens_in: int,
        d: int,
        t: int,
        left_max: int,
        d2s: bool,
        s2d: bool,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        make = {
            "fc": lambda: FC(dense_in, d, layer_norm),
            "dot": lambda: Dot(dense_in, tokens_in, dot_tokens(d), d, layer_norm),
            "gating": lambda: Binary(left_max, left_max, d, True, layer_norm=layer_norm),
            "sum": lambda: Binary(left_max, left_max, d, False, layer_norm=layer_norm),
            "efc": lambda: EFC(tokens_in, t, layer_norm),
            "attention": lambda: Attention(tokens_in, t),
        }
        self.dense = nn.ModuleDict({op: make[op]() for op in dense_ops})
        self.sparse = nn.ModuleDict({op: make[op]() for op in sparse_ops})
        self.d2s = nn.Linear(d, D2S_TOKENS * EMB) if d2s else None
        self.s2d = nn.Linear(EMB, d) if s2d else None
        # The FM term is quartic in the embeddings: normalised after its projection (NASRec).
        self.s2d_ln = nn.LayerNorm(d) if s2d and layer_norm else None
        self.fm = FM()

    def forward(
        self,
        dx: torch.Tensor | None,
        left: torch.Tensor | None,
        right: torch.Tensor | None,
        sx: torch.Tensor,
        p: BlockPlan,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """dx [B, Din], left/right [B, w], sx [B, N, 16] -> dense [B, d], sparse [B, t(+8), 16]."""
        dense = sparse = None
        for op in p.dense_ops:
            m = self.dense[op]
            if op == "fc":
                y = m(dx, p.dense_cols, p.d)
            elif op == "dot":
                y = m(dx, p.dense_cols, sx, p.tok_cols, p.d)
            else:
                y = m(left, right, p.d)
            dense = y if dense is None else dense + y
        for op in p.sparse_ops:
            y = self.sparse[op](sx, p.tok_cols, p.t)
            sparse = y if sparse is None else sparse + y
        if len(p.dense_ops) > 1:  # full supernet: the mean of the ops keeps one op's scale
            dense = dense / len(p.dense_ops)
        if len(p.sparse_ops) > 1:
            sparse = sparse / len(p.sparse_ops)
        out_d, out_s = dense, sparse
        if p.s2d:
            fm = _linear(self.fm(sparse), self.s2d, p.d, None)
            out_d = dense + sliced_layer_norm(fm, self.s2d_ln, p.d)
        if p.d2s:
            extra = _linear(dense, self.d2s, None, slice(0, p.d)).view(-1, D2S_TOKENS, EMB)
            out_s = torch.cat([sparse, extra.to(sparse.dtype)], 1)
        return out_d, out_s

    def extract(self, p: BlockPlan, wl: int, wr: int, dense_in: int | None = None) -> Block:
        """A standalone copy of the slice of this block that plan `p` uses (`dense_in`: the true
        width of the concatenated dense input, when the plan's selection is padded)."""
        new = Block((), (), dense_in=1, tokens_in=1, d=1, t=1, left_max=1, d2s=False, s2d=False)
        if isinstance(p.dense_cols, torch.Tensor) and dense_in is not None:  # drop the padding
            p = replace(p, dense_cols=p.dense_cols[:dense_in])
        for op in p.dense_ops:
            m = self.dense[op]
            if op == "fc":
                new.dense[op] = m.extract(p.dense_cols, p.d)
            elif op == "dot":
                new.dense[op] = m.extract(p.dense_cols, p.tok_cols, p.d)
            else:
                new.dense[op] = m.extract(wl, wr, p.d)
        for op in p.sparse_ops:
            new.sparse[op] = self.sparse[op].extract(p.tok_cols, p.t)
        if p.d2s:
            new.d2s = copy_linear(self.d2s, None, slice(0, p.d))
        if p.s2d:
            new.s2d = copy_linear(self.s2d, p.d, None)
            new.s2d_ln = copy_layer_norm(self.s2d_ln, p.d)
        return new


class StemEmbedding(AutoSparseEmbedding):
    """One concatenated table for all categorical features (row offsets per feature);
    `sparse_grad` None: sparse gradients on the CPU, dense elsewhere."""

    def __init__(self, table_sizes: Sequence[int], *, sparse_grad: bool | None = None) -> None:
        super().__init__(int(sum(table_sizes)), EMB, sparse_grad=sparse_grad)
        self.table_sizes = [int(t) for t in table_sizes]
        nn.init.uniform_(self.weight, -0.05, 0.05)


class _Network(nn.Module):
    """Stem (concatenated embedding table), blocks and head; the forward both models share."""

    def _init_stem(self, table_sizes: Sequence[int], sparse_grad: bool | None) -> None:
        self.embedding = StemEmbedding(table_sizes, sparse_grad=sparse_grad)
        offsets = np.concatenate([[0], np.cumsum(table_sizes)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.from_numpy(offsets), persistent=False)

    def _run(
        self,
        dense: torch.Tensor,
        sparse: torch.Tensor,
        plans: Sequence[BlockPlan | None],
        head_cols: Cols,
        run_block: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        x = self._features(dense, sparse, plans, run_block)
        return _linear(x, self.head, None, head_cols).squeeze(-1)

    def _features(
        self,
        dense: torch.Tensor,
        sparse: torch.Tensor,
        plans: Sequence[BlockPlan | None],
        run_block: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """The head's input: last block's dense output and flattened sparse output.
        `run_block(i, dx, left, right, sx, plan)` runs block i (default: the module itself)."""
        nodes_d: list = [dense]
        nodes_s: list = [self.embedding(sparse.long() + self.offsets)]
        for i, p in enumerate(plans):
            if p is None:
                nodes_d.append(None)
                nodes_s.append(None)
                continue
            dx = torch.cat([nodes_d[j] for j in p.dense_nodes], 1) if p.dense_nodes else None
            left, right = (nodes_d[j] for j in p.binary_nodes) if p.binary_nodes else (None, None)
            sx = torch.cat([nodes_s[j] for j in p.sparse_nodes], 1)
            if run_block is None:
                d, s = self._block(i)(dx, left, right, sx, p)
            else:
                d, s = run_block(i, dx, left, right, sx, p)
            nodes_d.append(d)
            nodes_s.append(s)
        return torch.cat([nodes_d[-1], nodes_s[-1].flatten(1).to(nodes_d[-1].dtype)], 1)


class Supernet(_Network):
    """All blocks at maximum width; `forward(dense [B, n_dense], sparse [B, n_sparse] int,
    subnet=None) -> logits [B]` (None = the full supernet)."""

    def __init__(
        self,
        space: str | SearchSpace,
        table_sizes: Sequence[int],
        n_dense: int,
        *,
        layer_norm: bool = True,
        seed: int = 0,
        sparse_grad: bool | None = None,
    ) -> None:
        super().__init__()
        self.space = get_space(space) if isinstance(space, str) else space
        self.table_sizes, self.n_dense = [int(t) for t in table_sizes], int(n_dense)
        sp, n_sparse = self.space, len(table_sizes)
        tslot = sp.max_tokens + D2S_TOKENS
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init_stem(table_sizes, sparse_grad)
            self.embedding.row_grad = True  # eager lookups only: models/nas/optim.py
            self.blocks = nn.ModuleList(
                Block(
                    sp.dense_ops,
                    sp.sparse_ops,
                    dense_in=n_dense + sp.max_width * i,
                    tokens_in=n_sparse + tslot * i,
                    d=sp.max_width,
                    t=sp.max_tokens,
                    left_max=max(n_dense, sp.max_width) if i else n_dense,
                    d2s=True,
                    s2d=True,
                    layer_norm=layer_norm,
                )
                for i in range(sp.n_blocks)
            )
            self.head = nn.Linear(sp.max_width + tslot * EMB, 1)
        self._full = full_plans(sp)
        self._cache: OrderedDict = OrderedDict()

    def _block(self, i: int) -> Block:
        return self.blocks[i]

    def plans(self, subnet: Subnet) -> tuple[list[BlockPlan | None], Cols]:
        """The (cached) shared-weight plans of `subnet` on this module's device."""
        device = self.offsets.device
        key = (subnet, str(device))
        if key not in self._cache:
            if subnet.space != self.space.name:
                raise ValueError(f"subnet of space {subnet.space} on a {self.space.name} supernet")
            n_sparse = len(self.table_sizes)
            plans, head_cols, _, _ = subnet_plans(
                subnet, self.n_dense, n_sparse, shared=True, device=device
            )
            self._cache[key] = (plans, head_cols)
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return self._cache[key]

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, subnet: Subnet | None = None
    ) -> torch.Tensor:
        if subnet is None:
            return self._run(dense, sparse, self._full, None)
        return self._run(dense, sparse, *self.plans(subnet))


class SubnetModel(_Network):
    """A standalone subnet: only live blocks, chosen ops, inputs and widths (fresh weights)."""

    def __init__(
        self,
        subnet: Subnet,
        table_sizes: Sequence[int],
        n_dense: int,
        *,
        layer_norm: bool = True,
        seed: int = 0,
        sparse_grad: bool | None = None,
    ) -> None:
        super().__init__()
        self.subnet = subnet
        self.table_sizes, self.n_dense = [int(t) for t in table_sizes], int(n_dense)
        self._plans, _, widths, tokens = subnet_plans(
            subnet, n_dense, len(table_sizes), shared=False
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init_stem(table_sizes, sparse_grad)
            self.blocks = nn.ModuleDict()
            for i, p in enumerate(self._plans):
                if p is None:
                    continue
                wl, wr = (widths[j] for j in p.binary_nodes) if p.binary_nodes else (0, 0)
                self.blocks[str(i)] = Block(
                    p.dense_ops,
                    p.sparse_ops,
                    dense_in=sum(widths[j] for j in p.dense_nodes),
                    tokens_in=sum(tokens[j] for j in p.sparse_nodes),
                    d=p.d,
                    t=p.t,
                    left_max=max(wl, 1),
                    d2s=p.d2s,
                    s2d=p.s2d,
                    layer_norm=layer_norm,
                )
                if p.binary_nodes:
                    gate = p.dense_ops[0] == "gating"
                    m = max(wl, wr)
                    self.blocks[str(i)].dense[p.dense_ops[0]] = Binary(
                        wl, m, p.d, gate, m != p.d, layer_norm=layer_norm
                    )
            self.head = nn.Linear(widths[-1] + tokens[-1] * EMB, 1)
        self._widths = widths

    def _block(self, i: int) -> Block:
        return self.blocks[str(i)]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, n_dense] float, sparse [B, n_sparse] int -> logits [B]."""
        return self._run(dense, sparse, self._plans, None)

    def features(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """The head's input [B, d_last + tokens_last * 16] (for head-only fine-tuning)."""
        return self._features(dense, sparse, self._plans)


@torch.no_grad()
def extract_subnet(supernet: Supernet, subnet: Subnet) -> SubnetModel:
    """A standalone `SubnetModel` holding copies of the supernet weights `subnet` uses."""
    model = SubnetModel(
        subnet, supernet.table_sizes, supernet.n_dense, sparse_grad=supernet.embedding.sparse_grad
    )
    device = supernet.offsets.device
    shared, head_cols = supernet.plans(subnet)
    model.to(device)
    model.embedding.weight.copy_(supernet.embedding.weight)
    for i, p in enumerate(shared):
        if p is None:
            continue
        wl, wr = (model._widths[j] for j in p.binary_nodes) if p.binary_nodes else (0, 0)
        dense_in = sum(model._widths[j] for j in p.dense_nodes)
        model.blocks[str(i)] = supernet.blocks[i].extract(p, wl, wr, dense_in).to(device)
    model.head = copy_linear(supernet.head, None, head_cols)
    return model


def count_parameters(module: nn.Module, *, embeddings: bool = False) -> int:
    """Number of parameters (embedding table excluded unless asked)."""
    return sum(
        p.numel() for n, p in module.named_parameters() if embeddings or not n.startswith("emb")
    )
