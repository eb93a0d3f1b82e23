"""Per-command DRAM energies from IDD currents (DRAMsim3 formulas, times tCK, times devices).

Units: mA x V = mW, and mW x ns = pJ. Every figure is per rank (all its devices together); for
HBM2 the preset's currents are per pseudo-channel, which is modelled as a one-device rank.
Two known mistakes are avoided on purpose (hardware.md s1): DRAMsim3 drops the tCK factor
(its issue #18) and Ramulator 2.0a drops the devices-per-rank factor (its issue #280).
"""

from __future__ import annotations

from pimsim.spec import DramSpec

ENERGY_CLASSES = ("act_pre", "rd", "wr", "ref", "background_active", "background_precharged")


def dram_energy_table(spec: DramSpec) -> dict[str, float]:
    """pJ per command class per rank: `act_pre_pj` (one ACT and its PRE), `rd_pj`, `wr_pj` (one
    burst), `ref_pj` (one all-bank refresh), and background pJ per DRAM cycle with at least one
    bank open (`background_active_pj_per_dram_cycle`) or all banks precharged."""
    t, e = spec.timing, spec.energy
    tck_ns = t.tck_ps / 1000.0
    dev = spec.devices_per_rank
    v = e.vdd_v
    act_ma_cycles = e.idd0_ma * t.trc_cycles - (
        e.idd3n_ma * t.tras_cycles + e.idd2n_ma * t.trp_cycles
    )
    return {
        "act_pre_pj": v * act_ma_cycles * tck_ns * dev,
        "rd_pj": v * (e.idd4r_ma - e.idd3n_ma) * t.tbl_cycles * tck_ns * dev,
        "wr_pj": v * (e.idd4w_ma - e.idd3n_ma) * t.tbl_cycles * tck_ns * dev,
        "ref_pj": v * (e.idd5ab_ma - e.idd3n_ma) * t.trfc_cycles * tck_ns * dev,
        "background_active_pj_per_dram_cycle": v * e.idd3n_ma * tck_ns * dev,
        "background_precharged_pj_per_dram_cycle": v * e.idd2n_ma * tck_ns * dev,
    }


def energy_breakdown_pj(
    spec: DramSpec,
    *,
    n_act: int,
    n_rd: int,
    n_wr: int,
    n_ref: int,
    active_rank_dram_cycles: int,
    total_rank_dram_cycles: int,
) -> dict[str, float]:
    """Energy in pJ per class: counts x per-command energy, plus background over all ranks
    (`total_rank_dram_cycles` = simulated cycles x ranks, of which `active_...` had a bank open)."""
    tab = dram_energy_table(spec)
    out = {
        "act_pre": n_act * tab["act_pre_pj"],
        "rd": n_rd * tab["rd_pj"],
        "wr": n_wr * tab["wr_pj"],
        "ref": n_ref * tab["ref_pj"],
        "background_active": active_rank_dram_cycles * tab["background_active_pj_per_dram_cycle"],
        "background_precharged": (total_rank_dram_cycles - active_rank_dram_cycles)
        * tab["background_precharged_pj_per_dram_cycle"],
    }
    out["total"] = sum(out.values())
    return out
