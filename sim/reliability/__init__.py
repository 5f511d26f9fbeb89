"""Training runs under failures: checkpoint costs, stragglers, and a discrete-event
simulation of a whole run with steps in closed form between events (``run.simulate_run``)."""

from .checkpoint import CheckpointCost, checkpoint_cost, young_daly_interval_s
from .run import FailureProcess, RunOutcome, RunSpec, simulate_run
from .stragglers import StragglerSpec, draw_max_slowdown, expected_max_slowdown

__all__ = ["CheckpointCost", "FailureProcess", "RunOutcome", "RunSpec", "StragglerSpec", "checkpoint_cost",
           "draw_max_slowdown", "expected_max_slowdown", "simulate_run", "young_daly_interval_s"]
