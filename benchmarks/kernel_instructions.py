"""Instructions the Triton kernels issue, counted from their sm_90 machine code (prints a table;
no assertions; needs triton with its NVIDIA backend and the cuobjdump it ships, no GPU).

Why: the attention kernels and the LayerNorm backward's persistent loop are bound by the rate at
which their warps issue instructions rather than by bytes (attention at T 64 issues ~12 per
score for one exp2, and the exp2 unit runs at 1/8 of the issue rate), so instructions per loop
trip are what their changes move, and they can be counted on a machine without a GPU. Each
kernel is compiled as the training step launches it (tests/models/nas/sm90_compile.py: the
default launch, unit strides constant, 16-byte alignment known), disassembled with cuobjdump,
and its largest loop (the span of its longest backward branch) counted by opcode: per chunk of
keys or queries for attention, per row block for the LayerNorm backward; the LayerNorm forward
has no loop, so its row block is the whole kernel.

The counts depend on the Triton version: the GPU machine's is 3.6 (`pip install --target DIR
triton==3.6.0`, then `PYTHONPATH=DIR`).

    .venv/bin/python benchmarks/kernel_instructions.py
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# an instruction line of cuobjdump -sass: /*0cb0*/  @!P3 LDG.E.U16 R16, desc[...] ;
_INSTR = re.compile(
    r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)[.A-Z0-9_]*\s*([^;]*);"
)


def instructions(sass: str) -> list[tuple[int, str, str]]:
    """(address, opcode, operands) of every instruction in cuobjdump -sass text."""
    out = []
    for line in sass.splitlines():
        m = _INSTR.match(line)
        if m:
            out.append((int(m.group(1), 16), m.group(2), m.group(3).strip()))
    return out


def largest_loop(sass: str) -> tuple[int, int, collections.Counter] | None:
    """(first address, last address, opcode counts) of the longest span closed by a backward
    branch (a BRA to a lower address), or None without one."""
    code = instructions(sass)
    best = None
    for addr, op, operands in code:
        target = re.match(r"(0x[0-9a-f]+)", operands) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            lo = int(target.group(1), 16)
            ops = collections.Counter(o for a, o, _ in code if lo <= a <= addr)
            if best is None or sum(ops.values()) > sum(best[2].values()):
                best = (lo, addr, ops)
    return best


def mix(ops: collections.Counter, top: int = 8) -> str:
    return " ".join(f"{op} {n}" for op, n in ops.most_common(top))


def rows() -> list[tuple[str, int, str, collections.Counter]]:
    """(label, registers, what is counted, opcode counts) for each kernel variant."""
    sys.path.insert(0, str(ROOT / "tests" / "models" / "nas"))
    import sm90_compile as S

    out = []

    def add(label: str, kernel, unit: str) -> None:  # noqa: ANN001
        usage, sass = S.resource_usage(kernel), S.cuobjdump(kernel, "-sass")
        if usage is None or sass is None:
            raise SystemExit("this triton ships no cuobjdump")
        regs = usage[0]
        loop = largest_loop(sass)
        if loop is None:
            out.append(
                (label, regs, "kernel", collections.Counter(o for _, o, _ in instructions(sass)))
            )
        else:
            out.append((label, regs, unit, loop[2]))

    for t in (32, 64):
        for kernel in ("forward", "dq", "dkdv"):
            fn, types, const, warps, aligned = S.attention_launch(kernel, t)
            chunk = const.get("KC", const.get("QC"))
            add(f"attention {kernel} T {t}", S.compile_sm90(fn, types, const, warps, aligned),
                f"per chunk of {chunk}")  # fmt: skip
    for n, x, cmask, resid in S.LN_VARIANTS:
        if x != "*bf16":
            continue
        for backward in (False, True):
            fn, types, const, warps, aligned, nrows = S.layer_norm_launch(
                n, x, cmask, resid, backward
            )
            label = f"{'masked' if cmask else 'token'} LN N {n} {'bwd' if backward else 'fwd'}"
            add(label, S.compile_sm90(fn, types, const, warps, aligned),
                f"per block of {nrows} rows")  # fmt: skip
    return out


def main() -> None:
    try:
        import triton
        import triton.backends
    except ImportError:
        print("no triton")
        return
    if "nvidia" not in triton.backends.backends:
        print("this triton has no NVIDIA backend")
        return
    print(f"sm_90 machine code, triton {triton.__version__}")
    print(f"{'kernel':<26}{'regs':>5}  {'counted':<22}{'instr':>6}  largest opcodes")
    for label, regs, unit, ops in rows():
        print(f"{label:<26}{regs:>5}  {unit:<22}{sum(ops.values()):>6}  {mix(ops)}")


if __name__ == "__main__":
    main()
