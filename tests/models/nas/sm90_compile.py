"""Compile the LayerNorm, attention and row kernels for an sm_90 (H100/H200) target without a
GPU: catches what Triton's interpreter lets through (types, constexpr handling) before a GPU run
does, and checks that the LayerNorm and attention kernels at their default launch settings
(`kernels._ln_launch`, `kernels._attn_launch`) do not spill registers (cuobjdump's stack size,
where triton ships cuobjdump). benchmarks/kernel_instructions.py counts their instructions.
Run as a script (triton imported without TRITON_INTERPRET); prints one line per kernel variant
and exits non-zero on the first compile error or spill. tests/models/nas/test_kernels.py runs
it."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from models.nas import kernels as K  # noqa: E402
from models.nas import row_kernels as R  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_sm90(fn, types: dict[str, str], constexprs: dict[str, object],  # noqa: ANN001, ANN201
                 warps: int = 4, aligned: tuple[str, ...] = ()):  # fmt: skip
    """fn compiled for sm_90 with argument types `types` (constexprs by value) on `warps` warps,
    specialised as a launch specialises it: an integer argument passed as 1 belongs in
    `constexprs`; `aligned` names the pointers and integers known to be multiples of 16 (bytes,
    elements). Returns Triton's compiled kernel (its `asm` holds ttgir, ptx and cubin)."""
    signature = {**types, **{k: "constexpr" for k in constexprs}}
    params = list(inspect.signature(fn.fn).parameters)
    signature = {k: signature[k] for k in params}
    attrs = {(params.index(k),): [["tt.divisibility", 16]] for k in aligned}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=TARGET, options={"num_warps": warps})


def cuobjdump(kernel, option: str) -> str | None:  # noqa: ANN001
    """`cuobjdump OPTION` (-res-usage, -sass) of a compiled kernel's cubin; None where triton
    ships no cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None
    cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"sm90_{os.getpid()}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    try:
        return subprocess.run([str(tool), option, str(cubin)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    finally:
        cubin.unlink()


def resource_usage(kernel) -> tuple[int, int] | None:  # noqa: ANN001
    """A compiled kernel's (registers, stack bytes) per thread, None without cuobjdump."""
    res = cuobjdump(kernel, "-res-usage")
    if res is None:
        return None
    fields = dict(f.split(":") for f in res.split() if f.startswith(("REG:", "STACK:")))
    return int(fields["REG"]), int(fields["STACK"])


def compile_kernel(fn, types: dict[str, str], constexprs: dict[str, object],  # noqa: ANN001
                   warps: int = 4, aligned: tuple[str, ...] = ()) -> tuple[int, int] | None:  # fmt: skip
    """`compile_sm90`'s `resource_usage`."""
    return resource_usage(compile_sm90(fn, types, constexprs, warps, aligned))


def usage_text(usage: tuple[int, int] | None) -> str:
    return "registers ?, stack ?" if usage is None else f"registers {usage[0]}, stack {usage[1]}"


def strides(*names: str) -> dict[str, str]:
    return {f"{a}_{b}": "i64" for a in names for b in ("b", "t", "n")}


def unit_strides(types: dict[str, str], cmask: bool, backward: bool) -> tuple[list, tuple]:
    """The stride arguments that are 1 as the training step launches a LayerNorm kernel (the
    masked LayerNorm's rows are contiguous; the token LayerNorm reads, and the forward writes,
    features-first slots, tokens contiguous, and the backward writes a token-major gradient),
    and the arguments that are multiples of 16 there (the tensors and the other strides: rows of
    128-1024 columns, slots of 8 x 72 tokens)."""
    if cmask:
        ones = [k for k in types if k.startswith("s") and k.endswith("_n")]
    else:
        ones = ["sx_t", "sdy_t", "sdx_n"] if backward else ["sx_t", "sr_t", "sy_t"]
    strides = [k for k in types if k.startswith("s") and k[-2:] in ("_b", "_t", "_n")]
    tensors = ["x_ptr", "r_ptr", "y_ptr", "dy_ptr", "dx_ptr", "part_ptr"]
    return ones, tuple(k for k in strides + tensors if k in types and k not in ones)


LN_VARIANTS = ((16, "*bf16", False, False), (16, "*fp32", False, False),
               (13, "*fp32", True, False), (128, "*bf16", True, True),
               (512, "*bf16", True, True), (1024, "*bf16", True, True))  # fmt: skip


def layer_norm_launch(n: int, x: str, cmask: bool, resid: bool, backward: bool) -> tuple:
    """`compile_sm90`'s arguments for a LayerNorm kernel at its default launch for N features
    (x's dtype; a column mask and a residual as the masked LayerNorm has, else the token
    LayerNorm's ReLU and token mask), specialised as the step launches it: (fn, types,
    constexprs, warps, aligned, rows)."""
    common = {"x_ptr": x, "w_ptr": "*fp32", "b_ptr": "*fp32", "tm_ptr": "*fp32", "cm_ptr": "*fp32"}
    if backward:
        fn, only = K._ln_bwd_kernel, {"PREFETCH": bool(K.KERNELS["ln_prefetch"])}
        types = {**common, "dy_ptr": "*bf16", "dx_ptr": x, "part_ptr": "*fp32", "M": "i32",
                 "T": "i32", "eps": "fp32", "G": "i32", **strides("sx", "sdy", "sdx")}  # fmt: skip
    else:
        fn, only = K._ln_fwd_kernel, {"RESID": resid}
        types = {**common, "r_ptr": x, "y_ptr": "*bf16", "M": "i32", "T": "i32", "eps": "fp32",
                 "G": "i32", **strides("sx", "sr", "sy")}  # fmt: skip
    bn, rows, warps = K._ln_launch(n, backward=backward)
    const = {"N": n, "BN": bn, "ROWS": rows, "RELU": not resid, "TMASK": not cmask,
             "CMASK": cmask, **only}  # fmt: skip
    ones, aligned = unit_strides(types, cmask, backward)
    types = {k: v for k, v in types.items() if k not in ones}
    return fn, types, {**const, **dict.fromkeys(ones, 1)}, warps, aligned, rows


def layer_norm_variants() -> list[str]:
    """Forward and backward at their default launches for each width (token LayerNorm at 16,
    masked LayerNorm up to 1024), and the partial sums' reduction; a spill is a SystemExit."""
    out = []
    for n, x, cmask, resid in LN_VARIANTS:
        line = f"layer norm N={n} {x} cmask={cmask} residual={resid}:"
        for name, backward in (("forward", False), ("backward", True)):
            fn, types, const, warps, aligned, rows = layer_norm_launch(n, x, cmask, resid, backward)
            usage = compile_kernel(fn, types, const, warps, aligned)
            line += f" {name} ({rows} rows, {warps} warps) {usage_text(usage)};"
            if usage is not None and usage[1]:
                raise SystemExit(f"spills: {line}")
        out.append(line)
    usage = compile_kernel(K._ln_part_sum_kernel, {"part_ptr": "*fp32", "out_ptr": "*fp32",
                           "G": "i32", "C": "i32"},
                           {"BC": K.LN_PART_COLS, "BG": K.LN_PART_ROWS})  # fmt: skip
    out.append(f"layer norm partial sums: {usage_text(usage)}")
    return out


def attention_launch(kernel: str, t: int) -> tuple:
    """`compile_sm90`'s arguments for an attention kernel ("forward", "dq", "dkdv") at its
    default launch for T tokens, bf16 heads of 2 in the packed q/k/v projection, specialised as
    the step launches it (unit feature strides; the tensors and the sample and token strides
    multiples of 16): (fn, types, constexprs, warps, aligned)."""
    heads = ("sq", "sk", "sv")
    base = {"tv_ptr": "*i64", "tv": "i32", "T": "i32", "H": "i32", "qk_scale": "fp32"}
    bf16 = lambda *names: {f"{n}_ptr": "*bf16" for n in names}  # noqa: E731
    f32 = lambda *names: {f"{n}_ptr": "*fp32" for n in names}  # noqa: E731
    hstrides = lambda *ns: {f"{a}_{b}": "i64" for a in ns for b in "bhtd"}  # noqa: E731
    if kernel == "forward":
        fn = K._attn_fwd_kernel
        ptrs, names = {**bf16("q", "k", "v", "o"), **f32("lse")}, (*heads, "so")
    elif kernel == "dq":
        fn = K._attn_bwd_dq_kernel
        ptrs = {**bf16("q", "k", "v", "o", "do"), **f32("lse", "delta"), **bf16("dq")}
        names = (*heads, "so", "sdo", "sg")
    else:
        fn = K._attn_bwd_dkdv_kernel
        ptrs = {**bf16("q", "k", "v", "do"), **f32("lse", "delta"), **bf16("dk", "dv")}
        names = (*heads, "sdo", "sg")
    scale = {} if kernel == "forward" else {"sm_scale": "fp32"}
    types = {**ptrs, **base, **scale, **hstrides(*names)}
    bt = K._block_t(t)
    launch = K._attn_launch(bt)
    chunk = {"QC" if kernel == "dkdv" else "KC": launch["KC"]}
    ones = [k for k in types if k.endswith("_d")]
    aligned = tuple(k for k in types if k.endswith(("_ptr", "_b", "_t")) and k != "tv_ptr")
    const = {"D": 2, "DP": 2, "BT": bt, "TV_PTR": True, **chunk, **dict.fromkeys(ones, 1)}
    types = {k: v for k, v in types.items() if k not in ones}
    return fn, types, const, launch["num_warps"], aligned


def attention_variants() -> list[str]:
    """The attention kernels at their default launches for T 32 and 64; a spill is a
    SystemExit."""
    line = "attention (bf16, heads of 2):"
    for t in (32, 64):
        for kernel in ("forward", "dq", "dkdv"):
            usage = compile_kernel(*attention_launch(kernel, t))
            line += f" T {t} {kernel} {usage_text(usage)};"
            if usage is not None and usage[1]:
                raise SystemExit(f"spills: {line}")
    return [line]


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
    for line in layer_norm_variants() + attention_variants() + row_variants():
        print("compiled for sm_90:", line)
