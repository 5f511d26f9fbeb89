"""fleetsim.workloads."""
