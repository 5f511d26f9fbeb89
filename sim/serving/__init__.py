"""fleetsim.sim.serving."""
