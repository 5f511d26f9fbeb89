"""fleetsim.sim.serving: discrete-event simulation of LLM serving (SimPy).

``steptime`` prices engine iterations from the op graph and cost model; ``engine`` runs
one engine's continuous-batching loop (``scheduler``, ``kvcache``, ``speculative``);
``cluster`` places replicas, routes (``router``), admits and disaggregates (``disagg``);
``results`` turns a run into tables. The public entry point is
``fleetsim.serving.simulate_serving``.
"""

from fleetsim.sim.serving.config import (
    Deployment,
    EngineConfig,
    PoolDeployment,
    SpecDecode,
    StaticScheduler,
    VllmScheduler,
)

__all__ = ["Deployment", "EngineConfig", "PoolDeployment", "SpecDecode", "StaticScheduler", "VllmScheduler"]
