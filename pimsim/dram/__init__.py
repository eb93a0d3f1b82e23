"""DRAM core: organisation, JEDEC timing, FR-FCFS controller, energy (issue 4)."""
