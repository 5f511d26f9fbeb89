"""A thin, deterministic PuLP layer for the planner's integer programs.

Every program is built through :class:`Model`: variables and constraints get the planner's
own names (any string, e.g. ``capacity[h100-tp2]``), PuLP sees short legal ones, and every
constraint belongs to a *family* (``capacity``, ``availability``, ``power_budget``...).
:func:`solve` picks HiGHS through ``highspy`` when it is importable, CBC (shipped with PuLP)
otherwise, with fixed options (one thread, zero MIP gap, no time limit, fixed seed) so the
same model gives the same answer byte for byte.

The answer is a :class:`SolveResult` value, never an exception used for control flow:
``optimal``, ``infeasible`` or ``unbounded``. An infeasible model is diagnosed by re-solving
it with non-negative slack variables on the constraints of one relaxable family at a time
(all other constraints hard), minimizing that family's total slack: a family whose slack
restores feasibility is *binding*, and its minimum slack, in the family's own unit (GPUs,
watts, requests/s), is the closest miss. When no single family suffices, all relaxable
families are relaxed together with each family's slack scaled by the size of its
right-hand sides, and every family that needs slack is reported.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pulp
from fleetsim.hardware.errors import ConfigError
from pydantic import BaseModel, ConfigDict, Field

SolverName = Literal["auto", "highs", "cbc"]
Sense = Literal["min", "max"]
Status = Literal["optimal", "infeasible", "unbounded"]

_ABS_TOL = 1e-7


@functools.cache
def highs_available() -> bool:
    """True when PuLP can drive HiGHS in-process through ``highspy``. The first HiGHS
    object a process makes prints a copyright banner from C++; it is made here once with
    the stdout file descriptor pointed at the null device, so solves stay silent."""
    try:
        import highspy
    except ImportError:
        return False
    if not pulp.HiGHS().available():
        return False
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return True


def resolve_solver(solver: str = "auto") -> Literal["highs", "cbc"]:
    """The solver ``solver`` names: ``auto`` is HiGHS when ``highspy`` imports, else CBC."""
    if solver == "auto":
        return "highs" if highs_available() else "cbc"
    if solver == "highs":
        if not highs_available():
            raise ConfigError("solver 'highs' needs highspy (pip install 'fleetsim[highs]')")
        return "highs"
    if solver == "cbc":
        return "cbc"
    raise ConfigError(f"solver must be one of 'auto', 'highs', 'cbc', got {solver!r}")


@contextlib.contextmanager
def _quiet_pulp() -> Iterator[None]:
    """PuLP 3.3 warns that building variables apart from a problem, and PULP_CBC_CMD, go
    away in PuLP 4; this layer shares variables between the problems it derives from one
    model (the slack re-solves) and supports PuLP >= 2.8, so those warnings are muted here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulp(\.|$)")
        yield


def _backend(name: Literal["highs", "cbc"]) -> pulp.LpSolver:
    if name == "highs":
        return pulp.HiGHS(msg=False, threads=1, gapRel=0.0, gapAbs=1e-9, random_seed=0,
                          mip_feasibility_tolerance=1e-9)
    return pulp.PULP_CBC_CMD(msg=False, threads=1, gapRel=0.0, gapAbs=1e-9,
                             options=["randomSeed 1", "randomCbcSeed 1"])


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class Miss(_Record):
    """How far one constraint family is from being satisfiable: the least total slack on its
    constraints (in the family's unit) that makes the model feasible, and the slack of each
    named constraint that needs some."""

    family: str
    slack: float = Field(ge=0)
    by_constraint: dict[str, float]

    def line(self) -> str:
        parts = ", ".join(f"{k} by {v:.6g}" for k, v in self.by_constraint.items())
        return f"{self.family} short by {self.slack:.6g} ({parts})"


class SolveResult(_Record):
    """The outcome of one solve. ``values`` maps every variable's planner name to its value
    (integers exactly integral) when ``status`` is ``optimal``; ``misses`` is set when it is
    ``infeasible``: the binding constraint families, closest miss first (smallest scaled
    slack); ``joint`` says the families had to be relaxed together."""

    status: Status
    objective: float | None
    values: dict[str, float]
    solver: Literal["highs", "cbc"]
    seconds: float = Field(ge=0)
    misses: tuple[Miss, ...] = ()
    joint: bool = False

    @property
    def reason(self) -> str:
        """One line: why the model has no optimum ("" when it has one)."""
        if self.status == "unbounded":
            return "the objective is unbounded"
        if self.status != "infeasible":
            return ""
        if not self.misses:
            return "infeasible: the hard constraints alone cannot be met"
        how = "together " if self.joint else ""
        return "infeasible: relax " + how + "; or ".join(m.line() for m in self.misses)


@dataclass(frozen=True)
class _Constraint:
    family: str
    name: str
    expr: pulp.LpAffineExpression  # the constraint is ``expr <sense> 0``
    sense: int
    relaxable: bool


class Model:
    """A linear (integer) program under construction, with named variables and constraints
    grouped into families. Build it, then hand it to :func:`solve`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._vars: dict[str, pulp.LpVariable] = {}
        self._cons: dict[str, _Constraint] = {}
        self._objective: pulp.LpAffineExpression | None = None
        self._sense: Sense = "min"

    def var(self, name: str, *, low: float | None = 0.0, high: float | None = None,
            integer: bool = False) -> pulp.LpVariable:
        """A new variable ``name`` in ``[low, high]``; ``integer`` makes it integral."""
        if name in self._vars:
            raise ValueError(f"variable {name!r} defined twice in model {self.name!r}")
        cat = pulp.LpInteger if integer else pulp.LpContinuous
        with _quiet_pulp():
            v = pulp.LpVariable(f"v{len(self._vars)}", lowBound=low, upBound=high, cat=cat)
        self._vars[name] = v
        return v

    def binary(self, name: str) -> pulp.LpVariable:
        return self.var(name, low=0, high=1, integer=True)

    def constrain(self, family: str, name: str, constraint: pulp.LpConstraint, *,
                  relaxable: bool = True) -> None:
        """Add ``constraint`` (built with ``<=``, ``>=`` or ``==``) as ``name`` of ``family``.
        Only ``relaxable`` families are candidates for the infeasibility diagnosis; structural
        constraints (one cap per pool, a share sums to one) are not."""
        if not isinstance(constraint, pulp.LpConstraint):
            raise ValueError(f"constraint {name!r} is not a linear constraint (got {constraint!r})")
        if name in self._cons:
            raise ValueError(f"constraint {name!r} defined twice in model {self.name!r}")
        expr = pulp.LpAffineExpression(constraint)
        self._cons[name] = _Constraint(family, name, expr, constraint.sense, relaxable)

    def minimize(self, expr: pulp.LpAffineExpression | pulp.LpVariable | float) -> None:
        self._objective, self._sense = pulp.LpAffineExpression(expr), "min"

    def maximize(self, expr: pulp.LpAffineExpression | pulp.LpVariable | float) -> None:
        self._objective, self._sense = pulp.LpAffineExpression(expr), "max"

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.family for c in self._cons.values()))

    def constraint_names(self, family: str) -> tuple[str, ...]:
        return tuple(c.name for c in self._cons.values() if c.family == family)

    # -- building PuLP problems -------------------------------------------------------

    def _problem(self, *args: Any, **kw: Any) -> tuple[pulp.LpProblem, dict[str, list[pulp.LpVariable]]]:
        with _quiet_pulp():
            return self._build(*args, **kw)

    def _build(self, sense: Sense, objective: pulp.LpAffineExpression | None,
                 relax: Iterable[str] = (),
                 extra: Iterable[pulp.LpConstraint] = ()) -> tuple[pulp.LpProblem, dict[str, list[pulp.LpVariable]]]:
        prob = pulp.LpProblem(self.name.replace(" ", "_") or "model",
                              pulp.LpMaximize if sense == "max" else pulp.LpMinimize)
        relaxed = set(relax)
        slacks: dict[str, list[pulp.LpVariable]] = {}
        for i, c in enumerate(self._cons.values()):
            expr = pulp.LpAffineExpression(c.expr)
            if c.family in relaxed:
                s = pulp.LpVariable(f"s{i}", lowBound=0)
                slacks[c.name] = [s]
                if c.sense == pulp.LpConstraintLE:
                    expr = expr - s
                elif c.sense == pulp.LpConstraintGE:
                    expr = expr + s
                else:
                    t = pulp.LpVariable(f"t{i}", lowBound=0)
                    slacks[c.name].append(t)
                    expr = expr + s - t
            prob += pulp.LpConstraint(expr, c.sense, name=f"c{i}", rhs=0)
        for j, con in enumerate(extra):
            prob += pulp.LpConstraint(pulp.LpAffineExpression(con), con.sense, name=f"x{j}", rhs=0)
        if objective is not None:
            prob += objective
        for v in self._vars.values():  # every variable appears, even one in no constraint
            prob.addVariable(v)
        return prob, slacks

    def _rhs_scale(self, family: str) -> float:
        rhs = [abs(c.expr.constant) for c in self._cons.values() if c.family == family]
        return max([1.0, *rhs])


def _status(prob: pulp.LpProblem) -> str:
    return str(pulp.LpStatus[prob.status])


def _run(prob: pulp.LpProblem, name: Literal["highs", "cbc"]) -> tuple[str, float]:
    t0 = time.perf_counter()
    with _quiet_pulp():
        prob.solve(_backend(name))
    return _status(prob), time.perf_counter() - t0


def _value(v: pulp.LpVariable) -> float:
    x = v.value()
    x = 0.0 if x is None else float(x)
    if v.cat == pulp.LpInteger:
        return float(round(x))
    return 0.0 if abs(x) < 1e-12 else x


def _diagnose(model: Model, name: Literal["highs", "cbc"]) -> tuple[tuple[Miss, ...], bool, float]:
    """The binding families of an infeasible model: each relaxable family alone, then all
    together. Returns the misses, whether they were joint, and the seconds spent."""
    spent = 0.0
    fams = [f for f in model.families
            if any(c.relaxable for c in model._cons.values() if c.family == f)]

    def miss(fam: str, slacks: dict[str, list[pulp.LpVariable]]) -> Miss | None:
        by = {}
        for cname in model.constraint_names(fam):
            amount = sum(_value(s) for s in slacks.get(cname, []))
            if amount > _ABS_TOL:
                by[cname] = amount
        total = sum(by.values())
        return Miss(family=fam, slack=total, by_constraint=by) if by else None

    single: list[tuple[float, Miss]] = []
    for fam in fams:
        probe, slacks = model._problem("min", None, relax=[fam])
        probe += pulp.lpSum(s for lst in slacks.values() for s in lst)
        st, sec = _run(probe, name)
        spent += sec
        if st == "Optimal":
            m = miss(fam, slacks)
            if m is not None:
                single.append((m.slack / model._rhs_scale(fam), m))
    if single:
        single.sort(key=lambda t: (t[0], t[1].family))
        return tuple(m for _, m in single), False, spent
    probe, slacks = model._problem("min", None, relax=fams)
    probe += pulp.lpSum(s / model._rhs_scale(model._cons[c].family)
                        for c, lst in slacks.items() for s in lst)
    st, sec = _run(probe, name)
    spent += sec
    if st != "Optimal":
        return (), False, spent
    joint = [m for m in (miss(f, slacks) for f in fams) if m is not None]
    return tuple(joint), True, spent


def solve(model: Model, solver: str = "auto",
          then: tuple[Sense, pulp.LpAffineExpression] | None = None) -> SolveResult:
    """Solve ``model``. ``then`` is an optional secondary objective, optimized among the
    optima of the first (lexicographic: the first objective is held at its optimum, within
    1e-7 relative); ``objective`` is the first objective's optimum from the first solve
    (the values, from the second, may give it up to that tolerance)."""
    if model._objective is None:
        raise ValueError(f"model {model.name!r} has no objective")
    name = resolve_solver(solver)
    prob, _ = model._problem(model._sense, model._objective)
    st, seconds = _run(prob, name)
    if st != "Optimal":
        # a MIP solver may report "infeasible or unbounded": a feasibility solve decides
        probe, _ = model._problem("min", None)
        fst, sec = _run(probe, name)
        seconds += sec
        if fst == "Optimal":
            return SolveResult(status="unbounded", objective=None, values={}, solver=name,
                               seconds=seconds)
        misses, joint, sec = _diagnose(model, name)
        return SolveResult(status="infeasible", objective=None, values={}, solver=name,
                           seconds=seconds + sec, misses=misses, joint=joint)
    best = float(pulp.value(model._objective) or 0.0)
    if then is not None:
        tol = 1e-7 * max(1.0, abs(best))
        hold = (model._objective <= best + tol) if model._sense == "min" else (
            model._objective >= best - tol)
        prob2, _ = model._problem(then[0], pulp.LpAffineExpression(then[1]), extra=[hold])
        st2, sec = _run(prob2, name)
        seconds += sec
        if st2 != "Optimal":  # numerically cannot happen; keep the first optimum
            prob, _ = model._problem(model._sense, model._objective)
            _run(prob, name)
    values = {k: _value(v) for k, v in model._vars.items()}
    objective = 0.0 if abs(best) < 1e-12 else best
    return SolveResult(status="optimal", objective=objective, values=values, solver=name,
                       seconds=seconds)


__all__ = ["Miss", "Model", "SolveResult", "highs_available", "resolve_solver", "solve"]
