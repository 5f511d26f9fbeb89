"""fleetsim.hardware."""
