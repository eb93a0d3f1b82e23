"""Compile the LayerNorm and row kernels for an sm_90 (H100/H200) target without a GPU: catches
what Triton's interpreter lets through (types, constexpr handling) before a GPU run does.
Run as a script (triton imported without TRITON_INTERPRET); prints one line per kernel variant
and exits non-zero on the first compile error. tests/models/nas/test_kernels.py runs it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from models.nas import kernels as K  # noqa: E402
from models.nas import row_kernels as R  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, types: dict[str, str], constexprs: dict[str, object]) -> int:  # noqa: ANN001
    """PTX size of fn compiled with argument types `types` (constexprs by value)."""
    signature = {**types, **{k: "constexpr" for k in constexprs}}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                            target=TARGET)  # fmt: skip
    return len(kernel.asm["ptx"])


def strides(*names: str) -> dict[str, str]:
    return {f"{a}_{b}": "i64" for a in names for b in ("b", "t", "n")}


def layer_norm_variants() -> list[str]:
    out = []
    for n, x, cmask, resid in ((16, "*bf16", False, False), (16, "*fp32", False, False),
                               (1024, "*bf16", True, True), (13, "*fp32", True, False)):  # fmt: skip
        bn = max(2, 1 << (n - 1).bit_length())
        const = {"N": n, "BN": bn, "ROWS": max(1, min(256, 4096 // bn)), "RELU": not resid,
                 "TMASK": not cmask, "CMASK": cmask}  # fmt: skip
        common = {"x_ptr": x, "w_ptr": "*fp32", "b_ptr": "*fp32", "tm_ptr": "*fp32",
                  "cm_ptr": "*fp32"}  # fmt: skip
        fwd = {**common, "r_ptr": x, "y_ptr": "*bf16", "M": "i32", "T": "i32", "eps": "fp32",
               **strides("sx", "sr", "sy")}  # fmt: skip
        compile_kernel(K._ln_fwd_kernel, fwd, {**const, "RESID": resid})
        bwd = {**common, "dy_ptr": "*bf16", "dx_ptr": x, "part_ptr": "*fp32", "M": "i32",
               "T": "i32", "eps": "fp32", "G": "i32", **strides("sx", "sdy", "sdx")}  # fmt: skip
        compile_kernel(K._ln_bwd_kernel, bwd, const)
        out.append(f"layer norm N={n} {x} cmask={cmask} residual={resid}")
    return out


def row_variants() -> list[str]:
    rows = {"D": 16, "BD": 16, "BN": R.ROWS_PER_PROGRAM}
    idx = {"idx_ptr": "*i64", "n": "i32"}
    compile_kernel(R._gather_kernel, {"w_ptr": "*fp32", **idx, "out_ptr": "*fp32",
                                      "n_rows": "i32"}, rows)  # fmt: skip
    compile_kernel(R._scatter_add_kernel, {"acc_ptr": "*fp32", **idx, "g_ptr": "*bf16"}, rows)
    compile_kernel(R._owner_kernel, {"owner_ptr": "*i64", **idx}, {"BN": R.OWNER_BLOCK})
    compile_kernel(R._owned_sq_kernel, {"acc_ptr": "*fp32", **idx, "owner_ptr": "*i64",
                                        "out_ptr": "*fp32"}, rows)  # fmt: skip
    compile_kernel(R._adagrad_rows_kernel, {"p_ptr": "*fp32", "s_ptr": "*fp32",
                                            "acc_ptr": "*fp32", "owner_ptr": "*i64", **idx,
                                            "coef_ptr": "*fp32", "neg_lr": "fp32",
                                            "eps": "fp32"}, rows)  # fmt: skip
    return ["row kernels: gather, scatter-add, owners, owned norm, Adagrad rows"]


if __name__ == "__main__":
    for line in layer_norm_variants() + row_variants():
        print("compiled for sm_90:", line)
