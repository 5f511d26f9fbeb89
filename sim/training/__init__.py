"""fleetsim.sim.training."""
