"""ReRAM crossbar tiles (ISAAC style): weight-stationary matrix-vector products for `fc` / `efc`.

Closed-form cost of an M x K by K x N layer (M input vectors, K inputs, N outputs) on R x C arrays
with w-bit weights stored c bits per cell (S = ceil(w / c) bit slices per weight) and a-bit inputs
fed d bits per read through the DACs (a / d reads per input vector), following hardware.md s5:

- arrays per copy of the weights: ceil(K / R) row tiles x ceil(N * S / C) column groups;
- per input vector and copy: every array is read a / d times; each read drives the active rows of
  its array (one DAC action per row) and converts every active column (one ADC conversion each);
- shift-and-add: one per ADC conversion (bit-slice and input-bit weighting) plus N * (row tiles - 1)
  additions of partial sums across row tiles;
- tile buffer (eDRAM): the input vector is read once and the output vector written once per vector,
  in 256-bit accesses; router: when one copy spans several tiles, each extra tile sends its partial
  sums of the N outputs (256-bit transfers) once per vector;
- latency: arrays work in parallel and vectors are pipelined through them, one vector per
  (a / d) x read_latency_ns per copy of the weights; `replicas` copies split the M vectors;
- energy convention (ADC): per conversion = power / sample rate (ISAAC, CiMLoop). Programming the
  static weights into the cells is a one-time cost and is not part of an inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pimrec.errors import PimrecError
from pimsim.spec import XbarSpec

OUTPUT_BITS = 16  # width of the digital outputs and partial sums moved through buffers and routers


@dataclass(frozen=True)
class XbarLayerCost:
    """Action counts, latency and energy of one layer on crossbars (counts over all copies)."""

    arrays_per_replica: int
    replicas: int
    tiles: int
    macs: int
    crossbar_reads: int
    dac_drives: int
    adc_conversions: int
    shift_adds: int
    buffer_accesses_256b: int
    router_transfers_256b: int
    latency_ns: float
    energy_pj: dict[str, float]

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())


def arrays_for_layer(x: XbarSpec, k_inputs: int, n_outputs: int) -> tuple[int, int]:
    """(row tiles, column groups) of one copy of a K x N weight matrix."""
    if k_inputs <= 0 or n_outputs <= 0:
        raise PimrecError(f"layer shape must be positive, got K={k_inputs}, N={n_outputs}",
                          field="xbar layer")
    row_tiles = math.ceil(k_inputs / x.array_rows)
    col_groups = math.ceil(n_outputs * x.slices_per_weight / x.array_cols)
    return row_tiles, col_groups


def xbar_layer_cost(
    x: XbarSpec, m_vectors: int, k_inputs: int, n_outputs: int, *, replicas: int = 1,
    available_arrays: int | None = None,
) -> XbarLayerCost:
    """Cost of M input vectors through a K x N static-weight layer held in crossbars.

    `available_arrays` (default: every array of the accelerator) bounds arrays x replicas; a layer
    that does not fit is a `PimrecError`, never a silent truncation.
    """
    if m_vectors <= 0:
        raise PimrecError(f"number of input vectors must be positive, got {m_vectors}", field="xbar layer")
    if replicas <= 0:
        raise PimrecError(f"replicas must be positive, got {replicas}", field="xbar layer")
    row_tiles, col_groups = arrays_for_layer(x, k_inputs, n_outputs)
    arrays = row_tiles * col_groups
    limit = x.total_arrays if available_arrays is None else available_arrays
    if arrays * replicas > limit:
        raise PimrecError(
            f"a {k_inputs} x {n_outputs} layer needs {arrays} arrays x {replicas} replicas = "
            f"{arrays * replicas}, but only {limit} are available", field="xbar capacity",
            expected=f"at most {limit // arrays} replicas, or a larger xbar preset")
    reads_per_vector = math.ceil(x.input_bits / x.dac_bits)
    columns = n_outputs * x.slices_per_weight  # active columns summed over the column groups
    dac = m_vectors * reads_per_vector * k_inputs * col_groups
    adc = m_vectors * reads_per_vector * columns * row_tiles
    shift_adds = adc + m_vectors * n_outputs * (row_tiles - 1)
    reads = m_vectors * reads_per_vector * arrays
    buffer = m_vectors * (math.ceil(k_inputs * x.input_bits / 256) + math.ceil(n_outputs * OUTPUT_BITS / 256))
    tiles_per_replica = math.ceil(arrays / x.arrays_per_tile)
    router = m_vectors * math.ceil(n_outputs * OUTPUT_BITS / 256) * (tiles_per_replica - 1)
    cells = m_vectors * reads_per_vector * k_inputs * columns
    latency = math.ceil(m_vectors / replicas) * reads_per_vector * x.read_latency_ns
    energy = {
        "adc_pj": adc * x.adc_energy_pj,
        "dac_pj": dac * x.dac_energy_pj,
        "shift_add_pj": shift_adds * x.shift_add_energy_pj,
        "cell_pj": cells * x.cell_read_energy_pj,
        "buffer_pj": buffer * x.buffer_energy_pj_per_256b,
        "router_pj": router * x.router_energy_pj_per_256b,
    }
    return XbarLayerCost(
        arrays_per_replica=arrays, replicas=replicas, tiles=tiles_per_replica * replicas,
        macs=m_vectors * k_inputs * n_outputs, crossbar_reads=reads, dac_drives=dac,
        adc_conversions=adc, shift_adds=shift_adds, buffer_accesses_256b=buffer,
        router_transfers_256b=router, latency_ns=latency, energy_pj=energy,
    )
