"""fleetsim.planner."""
