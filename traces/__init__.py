"""traces: the versioned operator-trace format that connects models to the simulator."""
