"""fleetsim.dashboard."""
