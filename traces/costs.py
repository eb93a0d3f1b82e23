"""Operator kinds of trace format v1: their shape parameters and one cost function per kind.

Conventions (used everywhere in pimrec):
- `macs` counts the multiply-accumulates of matrix products only (fc, efc, dot_interaction,
  attention): exactly the work `torch.utils.flop_counter.FlopCounterMode` counts.
- `flops` = 2 * macs + elementwise FLOPs (adds of pooling, activations, normalisation, softmax),
  with the per-element counts stated in each function. Bias adds of fc/efc are folded into the
  matrix product (not counted), as FlopCounterMode does.
- Bytes are for one execution of the op over the whole batch at `dtype_bits` per value; index
  streams are counted at their own width (`index_bits`) and CSR offsets at 64 bits.
- `weight_bytes` are the op's parameters; `static_weights` marks parameters that do not change
  between inputs (a mapper may keep them resident, e.g. in crossbars).

Importable without torch or numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Elementwise FLOPs per element of each activation function.
ACTIVATION_FLOPS = {"identity": 0, "relu": 1, "sigmoid": 4, "tanh": 5, "gelu": 8, "silu": 5}

# Parameter schema per kind: name -> type. Every int is a shape (>= 1) unless listed in
# ZERO_OK; str values must be one of CHOICES[(kind, name)].
PARAMS: dict[str, dict[str, type]] = {
    "embedding_bag": {
        "table": int,
        "rows": int,
        "dim": int,
        "batch": int,
        "pooling": int,
        "mode": str,
        "index_bits": int,
    },
    "fc": {"m": int, "k": int, "n": int, "bias": bool, "static": bool},
    "efc": {"batch": int, "tokens_in": int, "tokens_out": int, "dim": int, "bias": bool},
    "dot_interaction": {
        "batch": int,
        "tokens": int,
        "dim": int,
        "self_interaction": bool,
        "full_gram": bool,
    },
    "fm": {"batch": int, "fields": int, "dim": int},
    "attention": {"batch": int, "tokens": int, "width": int, "heads": int},
    "gating": {"rows": int, "width": int},
    "sum": {"rows": int, "width": int, "n_inputs": int},
    "mul": {"rows": int, "width": int, "n_inputs": int},
    "concat": {"rows": int, "width": int, "n_inputs": int},
    "layernorm": {"rows": int, "width": int, "affine": bool},
    "activation": {"rows": int, "width": int, "function": str},
}
ZERO_OK = {("embedding_bag", "table")}
CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("embedding_bag", "mode"): ("sum", "mean"),
    ("embedding_bag", "index_bits"): (32, 64),
    ("activation", "function"): tuple(ACTIVATION_FLOPS),
}
OP_KINDS = tuple(PARAMS)


@dataclass(frozen=True)
class Cost:
    """Work and traffic of one op over the batch."""

    flops: int
    macs: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    static_weights: bool


def _b(values: int, bits: int) -> int:
    """Bytes of `values` values at `bits` each, rounded up."""
    return -(-values * bits // 8)


def embedding_bag_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Gather `nnz` rows (batch * pooling without a stream) and pool them per sample.
    Sum pooling: (nnz - batch) * dim adds; mean adds batch * dim divides."""
    b, d = p["batch"], p["dim"]
    nnz = b * p["pooling"] if nnz is None else nnz
    flops = max(nnz - b, 0) * d + (b * d if p["mode"] == "mean" else 0)
    read = _b(nnz * d, bits) + _b(nnz, p["index_bits"]) + 8 * (b + 1)
    return Cost(flops, 0, read, _b(b * d, bits), _b(p["rows"] * d, bits), True)


def fc_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """[m, k] x [k, n] (+ bias): m*k*n MACs. Non-static `fc` multiplies two activations."""
    m, k, n = p["m"], p["k"], p["n"]
    weights = k * n + (n if p["bias"] else 0)
    macs = m * k * n
    read = _b(m * k + weights, bits)
    return Cost(
        2 * macs,
        macs,
        read,
        _b(m * n, bits),
        _b(weights, bits) if p["static"] else 0,
        bool(p["static"]),
    )


def efc_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Linear over the token axis: [batch, tokens_in, dim] -> [batch, tokens_out, dim]."""
    b, ti, to, d = p["batch"], p["tokens_in"], p["tokens_out"], p["dim"]
    weights = ti * to + (to if p["bias"] else 0)
    macs = b * to * ti * d
    read = _b(b * ti * d + weights, bits)
    return Cost(2 * macs, macs, read, _b(b * to * d, bits), _b(weights, bits), True)


def dot_interaction_pairs(tokens: int, self_interaction: bool) -> int:
    """Output width of dot_interaction: the strictly-lower triangle (plus the diagonal)."""
    return tokens * (tokens - 1) // 2 + (tokens if self_interaction else 0)


def dot_interaction_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Pairwise dot products of `tokens` vectors of width `dim` per sample. With `full_gram` the
    whole T x T Gram matrix is computed (as a bmm does: batch*T*T*dim MACs) and the triangle
    kept; otherwise only the kept pairs are computed."""
    b, t, d = p["batch"], p["tokens"], p["dim"]
    pairs = dot_interaction_pairs(t, p["self_interaction"])
    macs = b * (t * t if p["full_gram"] else pairs) * d
    return Cost(2 * macs, macs, _b(b * t * d, bits), _b(b * pairs, bits), 0, False)


def fm_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Factorisation machine second-order term 0.5 * sum_d((sum_f v)^2 - sum_f v^2) -> [batch, 1].
    Per dim: (F-1) adds, 1 square, F squares, (F-1) adds, 1 subtract = 3F; then dim adds/scale."""
    b, f, d = p["batch"], p["fields"], p["dim"]
    return Cost(b * (3 * f * d + d), 0, _b(b * f * d, bits), _b(b, bits), 0, False)


def attention_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Scaled dot-product self-attention core (projections are separate fc ops): Q K^T and
    A V are 2 * batch * tokens^2 * width MACs; scale + softmax are 5 FLOPs per score."""
    b, t, w, h = p["batch"], p["tokens"], p["width"], p["heads"]
    macs = 2 * b * t * t * w
    return Cost(
        2 * macs + 5 * b * h * t * t, macs, _b(3 * b * t * w, bits), _b(b * t * w, bits), 0, False
    )


def gating_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """sigmoid(left) * right elementwise (the Linear on `left` is its own fc op): 5 per element."""
    e = p["rows"] * p["width"]
    return Cost(5 * e, 0, _b(2 * e, bits), _b(e, bits), 0, False)


def sum_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Elementwise sum of n_inputs equal-shape tensors: (n_inputs - 1) adds per element."""
    e, n = p["rows"] * p["width"], p["n_inputs"]
    return Cost((n - 1) * e, 0, _b(n * e, bits), _b(e, bits), 0, False)


def mul_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Elementwise product of n_inputs equal-shape tensors: (n_inputs - 1) multiplies per element."""
    return sum_cost(p, bits)


def concat_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Concatenate n_inputs tensors into [rows, width]: a pure copy, no FLOPs."""
    e = p["rows"] * p["width"]
    return Cost(0, 0, _b(e, bits), _b(e, bits), 0, False)


def layernorm_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """LayerNorm over `width`: 5 FLOPs per element (mean, centre, square-accumulate, scale),
    +2 with the affine weight and bias."""
    e, w = p["rows"] * p["width"], p["width"]
    affine = bool(p["affine"])
    weights = 2 * w if affine else 0
    return Cost(
        (5 + 2 * affine) * e, 0, _b(e + weights, bits), _b(e, bits), _b(weights, bits), affine
    )


def activation_cost(p: Mapping[str, Any], bits: int, nnz: int | None = None) -> Cost:
    """Elementwise activation: ACTIVATION_FLOPS[function] per element."""
    e = p["rows"] * p["width"]
    return Cost(ACTIVATION_FLOPS[p["function"]] * e, 0, _b(e, bits), _b(e, bits), 0, False)


COST_FUNCTIONS: dict[str, Callable[..., Cost]] = {
    "embedding_bag": embedding_bag_cost,
    "fc": fc_cost,
    "efc": efc_cost,
    "dot_interaction": dot_interaction_cost,
    "fm": fm_cost,
    "attention": attention_cost,
    "gating": gating_cost,
    "sum": sum_cost,
    "mul": mul_cost,
    "concat": concat_cost,
    "layernorm": layernorm_cost,
    "activation": activation_cost,
}
assert set(COST_FUNCTIONS) == set(PARAMS)


def op_cost(kind: str, params: Mapping[str, Any], dtype_bits: int, nnz: int | None = None) -> Cost:
    """The cost of one op of `kind` with validated `params` (nnz: index-stream length, if any)."""
    return COST_FUNCTIONS[kind](params, dtype_bits, nnz)
