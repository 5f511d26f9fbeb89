"""The planner's integer programs: GPU mix, power caps, disaggregated prefill/decode pools.

Each program takes numbers the simulator derived (a deployment's capacity in requests/s per
request-size bucket within the SLOs, a pool's goodput and power at each power cap, a prefill
or decode replica's tokens/s) and chooses integer replica counts. Inputs are strict, frozen
pydantic records; bad input is a one-line :class:`ConfigError` naming the field. The answer is
a plan record whose ``status`` is ``optimal``, ``infeasible`` (with the binding constraint
family and its closest miss, see :mod:`planner.solver`) or ``unbounded``; never an exception.

GPU mix (after Melange, Griggs et al. 2024, arXiv:2404.14527, with deployments that may span
several GPUs): replicas ``x_d`` (integer) of deployment ``d`` and the share ``y_bd`` of bucket
``b``'s load that ``d`` serves. A replica of ``d`` serving only bucket ``b`` sustains
``cap_bd`` requests/s within SLO, so the load routed to ``d`` needs
``sum_b load_b * y_bd / cap_bd <= x_d`` replicas (capacity is shared linearly, Melange's
assumption). ``sum_d y_bd = 1`` serves every bucket; GPUs of each type stay within
availability and ``sum_d power_d * x_d`` within the facility budget. The inventory variant
(``max_goodput``) serves at most the whole load (``sum_d y_bd <= 1``) and maximizes the load
served with the GPUs there are.

Ties are broken by a second, lexicographic objective (cost for most, GPUs for ``min_cost``)
so a plan never carries replicas that serve nothing.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import pulp
from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError
from fleetsim.planner.solver import Miss, Model, SolveResult, Status, solve
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MixObjective = Literal["min_cost", "min_gpus", "min_energy", "max_goodput"]
CapObjective = Literal["max_goodput", "min_energy"]
DisaggObjective = Literal["min_cost", "min_gpus", "min_energy"]


class _Record(BaseModel):
    """Strict, frozen, no unknown keys; a validation failure is one ConfigError line."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
    _what: ClassVar[str] = "record"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(validation_line(exc, type(self)._what)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _lists_are_tuples(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


def _unique(names: list[str], field: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{field}: {n!r} appears twice")
        seen.add(n)


def _positive_map(m: dict[str, float] | dict[str, int] | None, field: str, *, allow_zero: bool) -> None:
    for k, v in (m or {}).items():
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"{field}[{k!r}] must be {bound}, got {v!r}")


# -- GPU mix ----------------------------------------------------------------------------


class Bucket(_Record):
    """A request-size bucket of the workload and its arrival rate (requests/s)."""

    _what: ClassVar[str] = "bucket"
    name: str = Field(min_length=1)
    load_rps: float = Field(ge=0)


class Deployment(_Record):
    """One way to serve: a replica of ``gpus_per_replica`` GPUs of type ``gpu`` (any TP/PP
    layout, engine settings and power cap folded into ``id``), its price and power per
    replica, and the requests/s one replica sustains within SLO for each bucket it can serve
    (a bucket it cannot serve within SLO is left out)."""

    _what: ClassVar[str] = "deployment"
    id: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    gpus_per_replica: int = Field(ge=1)
    price_per_hour: float = Field(ge=0)
    power_w: float = Field(gt=0)
    capacity_rps: dict[str, float]

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        _positive_map(self.capacity_rps, f"deployment {self.id!r} capacity_rps", allow_zero=False)
        return self


class _Limits(_Record):
    availability: dict[str, int] | None = None
    """Most GPUs of each type (types not listed are unlimited)."""
    power_budget_w: float | None = Field(None, gt=0)
    """Facility power budget over all replicas (W)."""

    @model_validator(mode="after")
    def _check_limits(self) -> _Limits:
        _positive_map(self.availability, "availability", allow_zero=True)
        return self


class MixProblem(_Limits):
    """Buckets x deployments, an objective and optional availability and power budget."""

    _what: ClassVar[str] = "mix problem"
    buckets: tuple[Bucket, ...] = Field(min_length=1)
    deployments: tuple[Deployment, ...] = Field(min_length=1)
    objective: MixObjective = "min_cost"

    @model_validator(mode="after")
    def _check(self) -> MixProblem:
        _unique([b.name for b in self.buckets], "buckets")
        _unique([d.id for d in self.deployments], "deployments")
        names = {b.name for b in self.buckets}
        for d in self.deployments:
            for b in d.capacity_rps:
                if b not in names:
                    raise ConfigError(f"deployment {d.id!r} capacity_rps: unknown bucket {b!r}")
        return self


class _Outcome(_Record):
    status: Status
    objective_name: str
    objective: float | None
    solver: str
    seconds: float
    reason: str = ""
    """Why there is no plan: the binding constraint family and its closest miss."""
    misses: tuple[Miss, ...] = ()


class MixPlan(_Outcome):
    """The chosen GPU mix: replicas per deployment (only those used), the share of each
    bucket each deployment serves, and the totals."""

    _what: ClassVar[str] = "mix plan"
    replicas: dict[str, int] = {}
    assignment: dict[str, dict[str, float]] = {}
    cost_per_hour: float = 0.0
    gpus: int = 0
    gpus_by_type: dict[str, int] = {}
    power_w: float = 0.0
    goodput_rps: float = 0.0


def _replica_bound(load: dict[str, float], cap: dict[str, float]) -> int:
    """Replicas of one deployment that serve all the load it can serve: an optimum never
    needs more (its share of every bucket is at most 1)."""
    need = sum(load[b] / c for b, c in cap.items())
    return max(0, math.ceil(need - 1e-9))


def _limits(m: Model, items: list[tuple[str, str, int, float, pulp.LpVariable]],
            availability: dict[str, int] | None, budget: float | None) -> None:
    """Availability per GPU type and the facility power budget over (id, gpu, gpus, power, x)."""
    for gpu, cap in (availability or {}).items():
        used = [g * x for _, t, g, _, x in items if t == gpu]
        if used:
            m.constrain("availability", f"availability[{gpu}]", pulp.lpSum(used) <= cap)
    if budget is not None:
        m.constrain("power_budget", "power_budget", pulp.lpSum(p * x for *_, p, x in items) <= budget)


def plan_mix(problem: MixProblem | None = None, /, *, solver: str = "auto", **fields: Any) -> MixPlan:
    """Choose the GPU mix for ``problem`` (or a :class:`MixProblem` built from ``fields``)."""
    p = problem if problem is not None else MixProblem(**fields)
    load = {b.name: b.load_rps for b in p.buckets if b.load_rps > 0}
    m = Model(f"mix_{p.objective}")
    x = {d.id: m.var(f"x[{d.id}]", integer=True,
                     high=_replica_bound(load, {b: c for b, c in d.capacity_rps.items() if b in load}))
         for d in p.deployments}
    y = {(b, d.id): m.var(f"y[{b},{d.id}]", high=1.0)
         for b in load for d in p.deployments if b in d.capacity_rps}
    for b, lam in load.items():
        served = pulp.lpSum(lam * y[b, d.id] for d in p.deployments if (b, d.id) in y)
        con = served <= lam if p.objective == "max_goodput" else served == lam
        m.constrain("coverage", f"coverage[{b}]", con)
    for d in p.deployments:
        work = pulp.lpSum(load[b] / c * y[b, d.id] for b, c in d.capacity_rps.items() if b in load)
        m.constrain("capacity", f"capacity[{d.id}]", work - x[d.id] <= 0, relaxable=False)
    _limits(m, [(d.id, d.gpu, d.gpus_per_replica, d.power_w, x[d.id]) for d in p.deployments],
            p.availability, p.power_budget_w)
    cost = pulp.lpSum(d.price_per_hour * x[d.id] for d in p.deployments)
    gpus = pulp.lpSum(d.gpus_per_replica * x[d.id] for d in p.deployments)
    power = pulp.lpSum(d.power_w * x[d.id] for d in p.deployments)
    goodput = pulp.lpSum(load[b] * v for (b, _), v in y.items())
    primary = {"min_cost": cost, "min_gpus": gpus, "min_energy": power, "max_goodput": goodput}
    if p.objective == "max_goodput":
        m.maximize(goodput)
    else:
        m.minimize(primary[p.objective])
    second = gpus if p.objective == "min_cost" else cost
    r = solve(m, solver, then=("min", second))
    if r.status != "optimal":
        return MixPlan(**_failed(r, p.objective))
    v = r.values
    reps = {d.id: int(v[f"x[{d.id}]"]) for d in p.deployments if v[f"x[{d.id}]"] > 0}
    by_type: dict[str, int] = {}
    for d in p.deployments:
        if d.id in reps:
            by_type[d.gpu] = by_type.get(d.gpu, 0) + d.gpus_per_replica * reps[d.id]
    assign = {b: {d: v[f"y[{b},{d}]"] for (bb, d) in y if bb == b and v[f"y[{b},{d}]"] > 1e-9}
              for b in load}
    by_id = {d.id: d for d in p.deployments}
    return MixPlan(
        status="optimal", objective_name=p.objective, objective=r.objective, solver=r.solver,
        seconds=r.seconds, replicas=reps, assignment=assign,
        cost_per_hour=sum(by_id[i].price_per_hour * n for i, n in reps.items()),
        gpus=sum(by_type.values()), gpus_by_type=by_type,
        power_w=sum(by_id[i].power_w * n for i, n in reps.items()),
        goodput_rps=sum(load[b] * s for b, row in assign.items() for s in row.values()),
    )


def _failed(r: SolveResult, objective: str) -> dict[str, Any]:
    return {"status": r.status, "objective_name": objective, "objective": None,
            "solver": r.solver, "seconds": r.seconds, "reason": r.reason, "misses": r.misses}


# -- power caps under a facility budget ---------------------------------------------------


class CapOption(_Record):
    """One power cap of a pool: per replica, the goodput (requests/s within SLO) and the
    power drawn (W) at that cap."""

    _what: ClassVar[str] = "cap option"
    cap_w: float = Field(gt=0)
    goodput_rps: float = Field(ge=0)
    power_w: float = Field(gt=0)


class CapPool(_Record):
    """``replicas`` identical replicas on ``gpu`` that all run at one chosen cap."""

    _what: ClassVar[str] = "cap pool"
    name: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    replicas: int = Field(ge=1)
    options: tuple[CapOption, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CapPool:
        _unique([f"{o.cap_w:g} W" for o in self.options], f"pool {self.name!r} options")
        return self


class CapProblem(_Record):
    """``max_goodput`` under ``power_budget_w``, or ``min_energy`` (least power, hence least
    energy per hour) serving at least ``demand_rps`` (and within the budget when given)."""

    _what: ClassVar[str] = "cap problem"
    pools: tuple[CapPool, ...] = Field(min_length=1)
    objective: CapObjective = "max_goodput"
    power_budget_w: float | None = Field(None, gt=0)
    demand_rps: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> CapProblem:
        _unique([q.name for q in self.pools], "pools")
        if self.objective == "max_goodput" and self.power_budget_w is None:
            raise ConfigError("power_budget_w is required for objective 'max_goodput'")
        if self.objective == "min_energy" and self.demand_rps is None:
            raise ConfigError("demand_rps is required for objective 'min_energy'")
        return self


class CapPlan(_Outcome):
    """The cap chosen for each pool (W) and the totals."""

    _what: ClassVar[str] = "cap plan"
    caps_w: dict[str, float] = {}
    goodput_rps: float = 0.0
    power_w: float = 0.0


def plan_caps(problem: CapProblem | None = None, /, *, solver: str = "auto", **fields: Any) -> CapPlan:
    """Choose one power cap per pool for ``problem`` (or a :class:`CapProblem` from ``fields``)."""
    p = problem if problem is not None else CapProblem(**fields)
    m = Model(f"caps_{p.objective}")
    z = {(q.name, i): m.binary(f"z[{q.name},{o.cap_w:g}]")
         for q in p.pools for i, o in enumerate(q.options)}
    for q in p.pools:
        m.constrain("one_cap", f"one_cap[{q.name}]",
                    pulp.lpSum(z[q.name, i] for i in range(len(q.options))) == 1, relaxable=False)
    goodput = pulp.lpSum(q.replicas * o.goodput_rps * z[q.name, i]
                         for q in p.pools for i, o in enumerate(q.options))
    power = pulp.lpSum(q.replicas * o.power_w * z[q.name, i]
                       for q in p.pools for i, o in enumerate(q.options))
    if p.power_budget_w is not None:
        m.constrain("power_budget", "power_budget", power <= p.power_budget_w)
    if p.objective == "max_goodput":
        m.maximize(goodput)
        r = solve(m, solver, then=("min", power))
    else:
        assert p.demand_rps is not None
        m.constrain("demand", "demand", goodput >= p.demand_rps)
        m.minimize(power)
        r = solve(m, solver, then=("max", goodput))
    if r.status != "optimal":
        return CapPlan(**_failed(r, p.objective))
    caps: dict[str, float] = {}
    for q in p.pools:
        (i,) = [i for i in range(len(q.options)) if r.values[f"z[{q.name},{q.options[i].cap_w:g}]"] > 0.5]
        caps[q.name] = q.options[i].cap_w
    chosen = {q.name: next(o for o in q.options if o.cap_w == caps[q.name]) for q in p.pools}
    return CapPlan(
        status="optimal", objective_name=p.objective, objective=r.objective, solver=r.solver,
        seconds=r.seconds, caps_w=caps,
        goodput_rps=sum(q.replicas * chosen[q.name].goodput_rps for q in p.pools),
        power_w=sum(q.replicas * chosen[q.name].power_w for q in p.pools),
    )


# -- disaggregated prefill/decode (xPyD) with mixed GPU types ---------------------------


class _ReplicaOption(_Record):
    id: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    gpus_per_replica: int = Field(ge=1)
    price_per_hour: float = Field(ge=0)
    power_w: float = Field(gt=0)


class PrefillOption(_ReplicaOption):
    """A prefill replica: prompt tokens/s it processes within the TTFT SLO."""

    _what: ClassVar[str] = "prefill option"
    prompt_tokens_per_s: float = Field(gt=0)


class DecodeOption(_ReplicaOption):
    """A decode replica: output tokens/s it generates within the TPOT SLO."""

    _what: ClassVar[str] = "decode option"
    output_tokens_per_s: float = Field(gt=0)


class KvRoute(_Record):
    """The link a prefill option's KV caches take to a decode option: the prompt tokens/s one
    prefill replica's share of that link carries (link bytes/s over KV bytes per prompt
    token). With routes given, a pair of options without one may not serve together (its
    TTFT with the transfer misses the target, say)."""

    _what: ClassVar[str] = "kv route"
    prefill: str = Field(min_length=1)
    decode: str = Field(min_length=1)
    prompt_tokens_per_s: float = Field(gt=0)


class DisaggProblem(_Limits):
    """The workload's prompt and output token rates, the options of each role, an objective;
    ``single_pool`` keeps one option per role (one prefill pool, one decode pool; they may
    be different GPU types), otherwise each role may mix options. ``routes`` (single pool
    only): the KV transfer link of each allowed (prefill, decode) pair."""

    _what: ClassVar[str] = "disaggregation problem"
    prefill: tuple[PrefillOption, ...] = Field(min_length=1)
    decode: tuple[DecodeOption, ...] = Field(min_length=1)
    prompt_tokens_per_s: float = Field(gt=0)
    output_tokens_per_s: float = Field(gt=0)
    objective: DisaggObjective = "min_cost"
    single_pool: bool = True
    routes: tuple[KvRoute, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> DisaggProblem:
        _unique([o.id for o in self.prefill] + [o.id for o in self.decode], "prefill and decode ids")
        if self.routes is not None:
            if not self.single_pool:
                raise ConfigError("routes: KV transfer routes need single_pool=True (one pair of pools)")
            _unique([f"{r.prefill}->{r.decode}" for r in self.routes], "routes")
            pre, dec = {o.id for o in self.prefill}, {o.id for o in self.decode}
            for r in self.routes:
                if r.prefill not in pre or r.decode not in dec:
                    raise ConfigError(f"routes: {r.prefill!r} -> {r.decode!r} names an unknown prefill or decode option")
        return self


class DisaggPlan(_Outcome):
    """``prefill`` (x) and ``decode`` (y) replicas per option id, their GPU types, totals."""

    _what: ClassVar[str] = "disaggregation plan"
    prefill: dict[str, int] = {}
    decode: dict[str, int] = {}
    prefill_gpus: tuple[str, ...] = ()
    decode_gpus: tuple[str, ...] = ()
    cost_per_hour: float = 0.0
    gpus: int = 0
    gpus_by_type: dict[str, int] = {}
    power_w: float = 0.0
    kv_link_load: float | None = None
    """Prompt tokens/s over what the chosen pair's KV links carry (routes given; 1 = full)."""

    @property
    def x(self) -> int:
        """Prefill replicas (the x of xPyD)."""
        return sum(self.prefill.values())

    @property
    def y(self) -> int:
        """Decode replicas (the y of xPyD)."""
        return sum(self.decode.values())


def plan_disaggregated(problem: DisaggProblem | None = None, /, *, solver: str = "auto",
                       **fields: Any) -> DisaggPlan:
    """Choose prefill and decode replicas for ``problem`` (or a :class:`DisaggProblem`)."""
    p = problem if problem is not None else DisaggProblem(**fields)
    m = Model(f"disagg_{p.objective}")
    roles: list[tuple[str, list[tuple[str, str, int, float, float, float]], float]] = [
        ("prefill", [(o.id, o.gpu, o.gpus_per_replica, o.prompt_tokens_per_s, o.price_per_hour,
                      o.power_w) for o in p.prefill], p.prompt_tokens_per_s),
        ("decode", [(o.id, o.gpu, o.gpus_per_replica, o.output_tokens_per_s, o.price_per_hour,
                     o.power_w) for o in p.decode], p.output_tokens_per_s),
    ]
    x: dict[str, pulp.LpVariable] = {}
    u: dict[str, pulp.LpVariable] = {}
    items = []
    slowest = {o.id: min((r.prompt_tokens_per_s for r in p.routes or () if r.prefill == o.id),
                         default=math.inf) for o in p.prefill}
    for role, opts, rate in roles:
        # more replicas never help an objective that grows with x: the role's rate alone, or
        # for a prefill option its slowest KV link's, bounds them
        bounds = {oid: math.ceil(rate / min(cap, slowest.get(oid, math.inf)) - 1e-9)
                  for oid, _, _, cap, _, _ in opts}
        for oid, gpu, g, _, _, pw in opts:
            x[oid] = m.var(f"{role}[{oid}]", integer=True, high=bounds[oid])
            items.append((oid, gpu, g, pw, x[oid]))
        family = "prompt_throughput" if role == "prefill" else "output_throughput"
        m.constrain(family, family, pulp.lpSum(cap * x[oid] for oid, _, _, cap, _, _ in opts) >= rate)
        if p.single_pool:
            mine = {oid: m.binary(f"use_{role}[{oid}]") for oid, *_ in opts}
            u |= mine
            m.constrain(f"one_{role}_pool", f"one_{role}_pool", pulp.lpSum(mine.values()) <= 1,
                        relaxable=False)
            for oid, *_ in opts:
                m.constrain(f"{role}_pool", f"{role}_pool[{oid}]", x[oid] - bounds[oid] * u[oid] <= 0,
                            relaxable=False)
    routes = {(r.prefill, r.decode): r for r in p.routes or ()}
    for pre_o in p.prefill if p.routes is not None else ():
        for dec_o in p.decode:
            pair, r = f"{pre_o.id}->{dec_o.id}", routes.get((pre_o.id, dec_o.id))
            if r is None:
                m.constrain("kv_route", f"kv_route[{pair}]", u[pre_o.id] + u[dec_o.id] <= 1, relaxable=False)
            else:  # binds only for the chosen pair (both use_ binaries 1)
                rate = p.prompt_tokens_per_s
                m.constrain("kv_transfer", f"kv_transfer[{pair}]",
                            r.prompt_tokens_per_s * x[pre_o.id] - rate * (u[pre_o.id] + u[dec_o.id]) >= -rate)
    _limits(m, items, p.availability, p.power_budget_w)
    every = [(o.id, o.gpus_per_replica, o.price_per_hour, o.power_w) for o in p.prefill] + [
        (o.id, o.gpus_per_replica, o.price_per_hour, o.power_w) for o in p.decode]
    cost = pulp.lpSum(c * x[i] for i, _, c, _ in every)
    gpus = pulp.lpSum(g * x[i] for i, g, _, _ in every)
    power = pulp.lpSum(w * x[i] for i, _, _, w in every)
    m.minimize({"min_cost": cost, "min_gpus": gpus, "min_energy": power}[p.objective])
    r = solve(m, solver, then=("min", gpus if p.objective == "min_cost" else cost))
    if r.status != "optimal":
        return DisaggPlan(**_failed(r, p.objective))
    v = r.values
    pre = {o.id: int(v[f"prefill[{o.id}]"]) for o in p.prefill if v[f"prefill[{o.id}]"] > 0}
    dec = {o.id: int(v[f"decode[{o.id}]"]) for o in p.decode if v[f"decode[{o.id}]"] > 0}
    by_type: dict[str, int] = {}
    both: tuple[_ReplicaOption, ...] = (*p.prefill, *p.decode)
    for o in both:
        n = pre.get(o.id, 0) + dec.get(o.id, 0)
        if n:
            by_type[o.gpu] = by_type.get(o.gpu, 0) + o.gpus_per_replica * n
    opts_by_id: dict[str, _ReplicaOption] = {o.id: o for o in (*p.prefill, *p.decode)}
    used = {**pre, **dec}
    load = None
    if p.routes is not None:
        ((pi, xp),), (di,) = pre.items(), dec
        load = p.prompt_tokens_per_s / (routes[pi, di].prompt_tokens_per_s * xp)
    return DisaggPlan(
        status="optimal", objective_name=p.objective, objective=r.objective, solver=r.solver,
        seconds=r.seconds, prefill=pre, decode=dec,
        prefill_gpus=tuple(dict.fromkeys(o.gpu for o in p.prefill if o.id in pre)),
        decode_gpus=tuple(dict.fromkeys(o.gpu for o in p.decode if o.id in dec)),
        cost_per_hour=sum(opts_by_id[i].price_per_hour * n for i, n in used.items()),
        gpus=sum(by_type.values()), gpus_by_type=by_type,
        power_w=sum(opts_by_id[i].power_w * n for i, n in used.items()), kv_link_load=load,
    )


__all__ = ["Bucket", "CapOption", "CapPlan", "CapPool", "CapProblem", "DecodeOption",
           "Deployment", "DisaggPlan", "DisaggProblem", "KvRoute", "MixPlan", "MixProblem", "PrefillOption",
           "plan_caps", "plan_disaggregated", "plan_mix"]
