"""The serving planner: candidates -> analytic pruning -> simulated capacity -> MILP -> plans."""
