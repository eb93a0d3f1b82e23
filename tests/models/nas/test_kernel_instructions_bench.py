"""benchmarks/kernel_instructions.py: its disassembly parser and loop finder on a hand-written
listing, and its table where triton can compile for sm_90."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SASS = """
        Function : _kernel
        /*0000*/                   MOV R1, c[0x0][0x28] ;                 /* 0x00000a0000017a02 */
        /*0010*/              @!P0 LDG.E.U16 R2, desc[UR4][R4.64] ;       /* 0x0000000404028981 */
        /*0020*/                   FFMA R3, R2, R2, R3 ;                  /* 0x0000000202037223 */
        /*0030*/                   FFMA.FTZ R3, R2, R2, R3 ;              /* 0x0000000202037223 */
        /*0040*/               @P1 BRA 0x10 ;                             /* 0xfffffffc00fc1947 */
        /*0050*/                   MUFU.EX2 R5, R3 ;                      /* 0x0000000300057308 */
        /*0060*/              @!P2 BRA 0x20 ;                             /* 0xfffffffc00fc1947 */
        /*0070*/                   BRA 0x70;                              /* 0xfffffffc00fc7947 */
        /*0080*/                   EXIT ;                                 /* 0x000000000000794d */
"""


def test_instructions_by_hand(bench_module):
    b = bench_module("kernel_instructions")
    ops = [op for _, op, _ in b.instructions(SASS)]
    assert ops == ["MOV", "LDG", "FFMA", "FFMA", "BRA", "MUFU", "BRA", "BRA", "EXIT"]
    assert b.instructions(SASS)[4] == (0x40, "BRA", "0x10")


def test_largest_loop_by_hand(bench_module):
    # two backward branches: 0x10-0x40 (4 instructions) and 0x20-0x60 (5); the self-branch at
    # 0x70 (the end-of-kernel trap) is not a loop
    lo, hi, ops = bench_module("kernel_instructions").largest_loop(SASS)
    assert (lo, hi) == (0x20, 0x60)
    assert ops == {"FFMA": 2, "BRA": 2, "MUFU": 1}
    assert bench_module("kernel_instructions").largest_loop(SASS.replace("0x10 ;", "0x50 ;")) == (
        0x20, 0x60, ops)  # fmt: skip


def test_table_for_sm90():
    pytest.importorskip("triton")
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "kernel_instructions.py")],
                         env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if "no cuobjdump" in run.stdout + run.stderr:
        pytest.skip("this triton ships no cuobjdump")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len([x for x in lines if x.startswith(("attention", "token LN", "masked LN"))]) == 14
