"""Board energy of one simulated training step, summed over every GPU of the job.

Each pipeline stage's representative GPU (``engine.py``) books the energy of the kernels it
ran, ``kernel_j`` over ``kernel_s`` seconds: forwards, backwards with their recomputation and
TP/CP/EP collectives, DDP bucket copies and the optimizer, each kernel at the board power the
occupancy model gives it (``calibration.power``). The rest of the step on that GPU, the
pipeline bubbles, the waits for exposed data-parallel communication and for the host, the
stretch of compute slowed by overlapped communication, the wait for the slowest stage, draws
the engine's gap power (``PowerState.gap_w``, the board between kernels of a running job)::

    E_stage = kernel_j + (step_s - kernel_s) x gap_w

and the step's energy is ``sum_s E_stage x world_size / pp`` (the tp/cp/dp peers of a stage
run the same schedule). Node hosts (CPUs, NICs, fans) and the facility PUE are added by the
public estimate, which knows the cluster's nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetsim.calibration.power import PowerState

from .engine import EngineResult


@dataclass(frozen=True)
class StepEnergy:
    """Joules of one step over all ``gpus`` GPUs of the job; per-stage lists are per GPU."""

    kernel_j: float
    gap_j: float
    gap_w: float
    gpus: int
    gpus_per_stage: int
    stage_kernel_j: tuple[float, ...]
    stage_kernel_s: tuple[float, ...]
    stage_gap_s: tuple[float, ...]
    power_cap_w: float | None

    @property
    def energy_j(self) -> float:
        """Board energy of every GPU of the job over the step."""
        return self.kernel_j + self.gap_j


def step_energy(eng: EngineResult, power: PowerState, world_size: int) -> StepEnergy:
    """Energy of the step that ``eng`` simulated, under ``power`` (see module doc)."""
    p = len(eng.stages)
    per = world_size // p
    gap_w = power.gap_w()
    kj = tuple(st.kernel_j for st in eng.stages)
    ks = tuple(st.kernel_s for st in eng.stages)
    gs = tuple(max(0.0, eng.step_s - k) for k in ks)
    return StepEnergy(kernel_j=per * sum(kj), gap_j=per * gap_w * sum(gs), gap_w=gap_w, gpus=world_size,
                      gpus_per_stage=per, stage_kernel_j=kj, stage_kernel_s=ks, stage_gap_s=gs,
                      power_cap_w=power.cap_w if power.capped else None)
