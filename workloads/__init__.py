"""fleetsim.workloads."""

DEFAULT_NUM_REQUESTS = 1000
"""Requests drawn from a built-in or spec workload when neither a request count nor a
duration is given (a trace file replays its own arrivals once). Here, not in a heavier
module, so that the CLI can name it in its help without importing the simulator."""
