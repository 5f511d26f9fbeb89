"""A one-line workload spec grammar, for the CLI and quick experiments.

    SPEC   := HEAD [":" PARAM ("," PARAM)*]
    HEAD   := poisson | gamma | constant | closed | trace | BUILTIN   (azure-conv, code, ...)
    PARAM  := KEY "=" VALUE                 (commas inside parentheses do not split)
    VALUE  := NUMBER | DIST | BUILTIN | PATH
    DIST   := fixed(N) | uniform(LOW, HIGH) | lognormal(MEDIAN, SIGMA[, MIN, MAX])
            | lognormal(median=.., sigma=.., min=.., max=.., mu=..) | empirical(PATH, COLUMN)
            | BUILTIN                       (that built-in's prompt or output distribution)

Keys (units in the name of the quantity; times in seconds, lengths in tokens):

=================  ==========================================================================
``rate``           requests (or session starts) per second - poisson, gamma, constant, built-in
``cv``             coefficient of variation of inter-arrival gaps - gamma (required), built-in
``clients``        number of concurrent clients - closed (required)
``think``          mean think time after a completion - closed
``think_cv``       CV of the think time (0 fixed, 1 exponential) - closed
``ramp``           client start times spread uniformly over [0, ramp) - closed
``path``           trace file - trace (required)
``scale``          time scale of a replayed trace (0.5 = twice as fast) - trace
``isl`` / ``osl``  prompt / output length: a number (fixed) or DIST; required for poisson,
                   gamma, constant and closed; override for trace and built-ins
``turns``          turns per session, number or DIST - enables multi-turn sessions
``system``         system-prompt tokens shared by all sessions - sessions
``turn_think``     mean think time between turns (``turn_think_cv`` its CV) - sessions
``max_context``    a session ends before a turn whose context would exceed this - sessions
``open_turns``     1: turns follow the zero-latency schedule open-loop (default 0) - sessions
``adapters``       number of LoRA adapters of the base model (popularity uniform unless
                   ``adapter_zipf`` is given) - any form
``adapter_zipf``   Zipf exponent of adapter popularity (0 = uniform) - with ``adapters``
``lora_rank``      rank of each adapter: a number or DIST, drawn once per adapter (default 16)
``adapter_trace``  trace whose ``adapter_id`` column sets the population size and a fitted
                   power-law exponent (instead of ``adapters``/``adapter_zipf``)
=================  ==========================================================================

Examples: ``poisson:rate=5,isl=1024,osl=256``;
``gamma:rate=5,cv=2,isl=lognormal(1000,1.0,1,8192),osl=azure-conv``;
``closed:clients=32,think=0,isl=2048,osl=128``; ``azure-code:rate=10``;
``trace:path=my.jsonl,scale=0.5``; ``poisson:rate=0.5,isl=200,osl=300,turns=uniform(2,8),system=1000,turn_think=20``.
``poisson:rate=5,isl=512,osl=128,adapters=2000,adapter_zipf=1.1,lora_rank=16``.
Every error names the offending token.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fleetsim.hardware.checks import validation_line
from fleetsim.hardware.errors import ConfigError, suggest
from fleetsim.workloads.arrivals import (
    ClosedLoopClients,
    ConstantArrivals,
    GammaArrivals,
    PoissonArrivals,
)
from fleetsim.workloads.defaults import (
    ALIASES,
    BUILTINS,
    canonical_name,
    load_builtin,
    trace_workload,
)
from fleetsim.workloads.lengths import (
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    UniformLength,
    min_tokens,
)
from fleetsim.workloads.lora import AdapterPopulation
from fleetsim.workloads.sessions import MultiTurnSessions
from fleetsim.workloads.workload import Workload
from pydantic import ValidationError

PROCESSES = ("poisson", "gamma", "constant", "closed", "trace")
_KEYS = {
    "poisson": {"rate", "isl", "osl"},
    "gamma": {"rate", "cv", "isl", "osl"},
    "constant": {"rate", "isl", "osl"},
    "closed": {"clients", "think", "think_cv", "ramp", "isl", "osl"},
    "trace": {"path", "scale", "isl", "osl"},
    "builtin": {"rate", "cv", "isl", "osl"},
}
_LORA_KEYS = {"adapters", "adapter_zipf", "lora_rank", "adapter_trace"}
_SESSION_KEYS = {"turns", "system", "turn_think", "turn_think_cv", "max_context", "open_turns"}
_REQUIRED = {
    "poisson": ("rate", "isl", "osl"),
    "gamma": ("rate", "cv", "isl", "osl"),
    "constant": ("rate", "isl", "osl"),
    "closed": ("clients", "isl", "osl"),
    "trace": ("path",),
    "builtin": (),
}


class _Spec:
    """Parser state: the whole text, for error messages."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, token: str, why: str) -> ConfigError:
        return ConfigError(f"workload spec {self.text!r}: bad token {token!r}: {why}")

    def split_params(self, body: str) -> list[str]:
        parts: list[str] = []
        cur: list[str] = []
        depth = 0
        for ch in body:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    raise self.error(body, "unbalanced ')'")
            if ch == "," and depth == 0:
                parts.append("".join(cur).strip())
                cur = []
            else:
                cur.append(ch)
        if depth != 0:
            raise self.error(body, "unbalanced '('")
        parts.append("".join(cur).strip())
        return parts

    def number(self, token: str, value: str, *, integer: bool = False, positive: bool = False) -> Any:
        try:
            x = float(value)
        except ValueError:
            raise self.error(token, f"{value!r} is not a number") from None
        if not math.isfinite(x) or x < 0 or (positive and x == 0):
            raise self.error(token, f"{value!r} must be {'positive' if positive else '>= 0'} and finite")
        if integer:
            if x != int(x):
                raise self.error(token, f"{value!r} must be a whole number")
            return int(x)
        return x

    def finite(self, token: str, value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise self.error(token, f"{value!r} is not a number") from None
        if not math.isfinite(x):
            raise self.error(token, f"{value!r} must be finite")
        return x

    def length(self, token: str, value: str, role: str) -> Any:
        """A length distribution from a VALUE (number, DIST or built-in name) whose every draw
        is at least 1 (a request has a prompt token and an output token; a session a turn)."""
        dist = self._length(token, value, role)
        low = min_tokens(dist)
        if low is not None and low < 1:
            key = token.split("=", 1)[0].strip()
            raise self.error(token, f"{key} must be >= 1, got a {dist.kind} length that can draw {low}")
        return dist

    def _length(self, token: str, value: str, role: str) -> Any:
        value = value.strip()
        if "(" not in value:
            canon = canonical_name(value)
            if canon is not None and role == "turns":
                raise self.error(token, "turns takes a number or a distribution, not a workload name")
            if canon is not None:
                w = load_builtin(canon)
                return w.prompt if role == "prompt" else w.output
            return FixedLength(tokens=self.number(token, value, integer=True))
        if not value.endswith(")"):
            raise self.error(token, "a distribution must end with ')'")
        name, inner = value[:-1].split("(", 1)
        name = name.strip().lower()
        args = self.split_params(inner) if inner.strip() else []
        pos = [a for a in args if "=" not in a]
        kw = dict(a.split("=", 1) for a in args if "=" in a)
        kw = {k.strip(): v.strip() for k, v in kw.items()}
        try:
            if name == "fixed":
                self._arity(token, name, pos, kw, 1, 1, set())
                return FixedLength(tokens=self.number(token, pos[0], integer=True))
            if name == "uniform":
                self._arity(token, name, pos, kw, 2, 2, set())
                lo, hi = (self.number(token, a, integer=True) for a in pos)
                return UniformLength(low=lo, high=hi)
            if name == "lognormal":
                names = ("median", "sigma", "min", "max")
                self._arity(token, name, pos, kw, 2, 5, {*names, "mu"})
                fields: dict[str, Any] = dict(zip(names, pos, strict=False)) | kw
                parsed = {
                    k: self.number(token, v, integer=k in ("min", "max"), positive=k == "median")
                    if k != "mu" else self.finite(token, v)
                    for k, v in fields.items()
                }
                return LognormalLength(**parsed)
            if name == "empirical":
                self._arity(token, name, pos, kw, 1, 2, {"path", "column"})
                p = kw.get("path", pos[0] if pos else "")
                col = kw.get("column", pos[1] if len(pos) > 1 else f"{role}_tokens")
                if not Path(p).is_file():
                    raise self.error(token, f"trace file {p!r} not found")
                return EmpiricalLength(path=Path(p), column=col)
        except ValidationError as exc:
            raise self.error(token, exc.errors()[0]["msg"]) from None
        except ValueError as exc:  # a bad number inside mu=...
            if isinstance(exc, ConfigError):
                raise
            raise self.error(token, str(exc)) from None
        raise self.error(token, f"unknown distribution {name!r}{suggest(name, ['fixed', 'uniform', 'lognormal', 'empirical'])}")

    def _arity(
        self, token: str, name: str, pos: list[str], kw: dict[str, str], lo: int, hi: int, keys: set[str]
    ) -> None:
        unknown = sorted(set(kw) - keys)
        if unknown:
            raise self.error(token, f"{name}() has no argument {unknown[0]!r}")
        if not lo <= len(pos) + len(kw) <= hi:
            raise self.error(token, f"{name}() takes {lo}..{hi} arguments, got {len(pos) + len(kw)}")


def parse_workload_spec(text: str) -> Workload:
    """Parse a one-line spec (grammar in the module docstring) into a ``Workload``."""
    sp = _Spec(text)
    head, _, body = text.partition(":")
    head = head.strip().lower()
    builtin = canonical_name(head)
    if head not in PROCESSES and builtin is None:
        if not body and ("/" in text or Path(text).suffix):
            raise ConfigError(f"workload {text!r}: file not found (and not a built-in name or spec)")
        choices = [*PROCESSES, *BUILTINS, *ALIASES]
        raise ConfigError(
            f"workload {text!r}: not a built-in workload, an existing file, or a spec; bad token "
            f"{head!r}{suggest(head, choices)} (expected one of {', '.join([*PROCESSES, *BUILTINS])})"
        )
    form = "builtin" if builtin is not None else head
    params: dict[str, tuple[str, str]] = {}
    for token in sp.split_params(body) if body.strip() else []:
        if "=" not in token:
            raise sp.error(token, "expected KEY=VALUE")
        key, value = (s.strip() for s in token.split("=", 1))
        key = key.lower()
        allowed = _KEYS[form] | _SESSION_KEYS | _LORA_KEYS
        if key not in allowed:
            raise sp.error(token, f"unknown key {key!r} for {head}{suggest(key, allowed)}; "
                                  f"allowed: {', '.join(sorted(allowed))}")
        if key in params:
            raise sp.error(token, f"key {key!r} given twice")
        if not value:
            raise sp.error(token, "empty value")
        params[key] = (token, value)
    missing = [k for k in _REQUIRED[form] if k not in params]
    if missing:
        raise ConfigError(f"workload spec {text!r}: {head} needs {', '.join(k + '=' for k in missing)}")

    def num(key: str, **kw: Any) -> Any:
        token, value = params[key]
        return sp.number(token, value, **kw)

    try:
        w = _base_workload(sp, form, head, builtin, params, num)
        update: dict[str, Any] = {}
        for key, role in (("isl", "prompt"), ("osl", "output")):
            if key in params:
                update[role] = sp.length(params[key][0], params[key][1], role)
        if any(k in params for k in _SESSION_KEYS):
            update["sessions"] = _sessions(sp, params, num)
        if any(k in params for k in _LORA_KEYS):
            update["adapters"] = _adapters(sp, params, num)
        return w.model_copy(update=update)
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, f"workload spec {text!r}")) from None


def _base_workload(
    sp: _Spec, form: str, head: str, builtin: str | None, params: dict[str, tuple[str, str]], num: Any
) -> Workload:
    fixed1 = FixedLength(tokens=1)
    if form == "builtin":
        assert builtin is not None
        w = load_builtin(builtin)
        if "cv" in params:
            if not isinstance(w.arrivals, GammaArrivals):
                raise sp.error(params["cv"][0], f"{builtin} arrivals are not gamma")
            w = w.model_copy(update={"arrivals": w.arrivals.model_copy(update={"cv": num("cv", positive=True)})})
        if "rate" in params:
            w = w.with_rate(num("rate", positive=True))
        return w
    if form == "trace":
        token, value = params["path"]
        if not Path(value).is_file():
            raise sp.error(token, f"trace file {value!r} not found")
        scale = num("scale", positive=True) if "scale" in params else 1.0
        return trace_workload(value, time_scale=scale)
    arrivals: Any
    if form == "poisson":
        arrivals = PoissonArrivals(rate_rps=num("rate", positive=True))
    elif form == "gamma":
        arrivals = GammaArrivals(rate_rps=num("rate", positive=True), cv=num("cv", positive=True))
    elif form == "constant":
        arrivals = ConstantArrivals(rate_rps=num("rate", positive=True))
    else:
        arrivals = ClosedLoopClients(
            num_clients=num("clients", integer=True, positive=True),
            think_time_s=num("think") if "think" in params else 0.0,
            think_cv=num("think_cv") if "think_cv" in params else 0.0,
            ramp_s=num("ramp") if "ramp" in params else 0.0,
        )
    return Workload(name=head, arrivals=arrivals, prompt=fixed1, output=fixed1)


def _sessions(sp: _Spec, params: dict[str, tuple[str, str]], num: Any) -> MultiTurnSessions:
    fields: dict[str, Any] = {}
    if "turns" in params:
        token, value = params["turns"]
        fields["turns"] = sp.length(token, value, "turns")
    if "system" in params:
        fields["system_prompt_tokens"] = num("system", integer=True)
    if "turn_think" in params:
        fields["think_time_s"] = num("turn_think")
    if "turn_think_cv" in params:
        fields["think_cv"] = num("turn_think_cv")
    if "max_context" in params:
        fields["max_context_tokens"] = num("max_context", integer=True, positive=True)
    if "open_turns" in params:
        flag = num("open_turns", integer=True)
        if flag not in (0, 1):
            raise sp.error(params["open_turns"][0], "open_turns must be 0 or 1")
        fields["closed_loop"] = flag == 0
    return MultiTurnSessions(**fields)


def _adapters(sp: _Spec, params: dict[str, tuple[str, str]], num: Any) -> AdapterPopulation:
    fields: dict[str, Any] = {}
    if "lora_rank" in params:
        token, value = params["lora_rank"]
        fields["rank"] = sp.length(token, value, "lora_rank")
    if "adapter_trace" in params:
        token, value = params["adapter_trace"]
        for key in ("adapters", "adapter_zipf"):
            if key in params:
                raise sp.error(params[key][0], f"{key} and adapter_trace are exclusive (the trace sets both)")
        if not Path(value).is_file():
            raise sp.error(token, f"trace file {value!r} not found")
        return AdapterPopulation.from_trace(value, **fields)
    if "adapters" not in params:
        key = next(k for k in ("adapter_zipf", "lora_rank") if k in params)
        raise sp.error(params[key][0], f"{key} needs adapters=N (the number of adapters)")
    fields["num_adapters"] = num("adapters", integer=True, positive=True)
    if "adapter_zipf" in params:
        fields["popularity"] = "zipf"
        fields["zipf_a"] = num("adapter_zipf")
    return AdapterPopulation(**fields)
