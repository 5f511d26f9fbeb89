"""Parallel layout of one model replica or training job, and one sequence of a batch step.

``ParallelConfig`` names the degrees: tensor (tp), pipeline (pp), data (dp), expert (ep) and
context (cp) parallelism, plus Megatron sequence parallelism (sp, which shards the norm/dropout
activations across the TP group and turns each TP all-reduce into a reduce-scatter plus an
all-gather). World size is tp * pp * dp * cp; expert parallelism re-partitions the same GPUs
for the MoE blocks (ep must divide dp * tp * cp), as in Megatron-Core and vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetsim.hardware.checks import integer, positive_int, validation_line
from fleetsim.hardware.errors import ConfigError, InfeasibleError, suggest
from fleetsim.workloads.models import ModelSpec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParallelConfig(BaseModel):
    """Degrees of parallelism. ``layer_split`` optionally gives the layers per pipeline stage."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    dp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    cp: int = Field(1, ge=1)
    sequence_parallel: bool = False
    layer_split: tuple[int, ...] | None = None

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(validation_line(e, "parallel config")) from None

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.sequence_parallel and self.tp == 1:
            raise ConfigError("sequence_parallel needs tp > 1")
        if self.layer_split is not None:
            if len(self.layer_split) != self.pp:
                raise ConfigError(
                    f"layer_split has {len(self.layer_split)} stages but pp={self.pp}"
                )
            if any(n < 1 for n in self.layer_split):
                raise ConfigError(f"layer_split {self.layer_split} has a stage with no layers")
        if (self.dp * self.tp * self.cp) % self.ep:
            raise ConfigError(
                f"ep={self.ep} must divide dp*tp*cp={self.dp * self.tp * self.cp} (experts are "
                "spread over the data/tensor-parallel ranks of a stage)"
            )
        return self

    @property
    def world_size(self) -> int:
        """GPUs used: tp * pp * dp * cp (ep reuses those GPUs)."""
        return self.tp * self.pp * self.dp * self.cp

    @property
    def expert_tp(self) -> int:
        """Tensor-parallel degree inside one expert: tp when ep == 1 (each expert's ffn split
        over the TP group, vLLM's default), else tp // ep when ep < tp, else 1."""
        if self.ep == 1:
            return self.tp
        return max(1, self.tp // self.ep)

    def kv_heads_per_rank(self, model: ModelSpec) -> int:
        """KV heads each TP rank holds; replicated when tp > num_kv_heads (MLA: 1 latent)."""
        if model.is_mla:
            return 1
        return max(1, model.num_kv_heads // self.tp)

    def stage_layers(self, model: ModelSpec) -> tuple[range, ...]:
        """Layer index ranges of each pipeline stage (explicit split, or as even as possible
        with the extra layers on the earliest stages)."""
        if self.layer_split is not None:
            if sum(self.layer_split) != model.num_layers:
                raise ConfigError(
                    f"layer_split {self.layer_split} sums to {sum(self.layer_split)}, "
                    f"model {model.name} has {model.num_layers} layers"
                )
            sizes = list(self.layer_split)
        else:
            if self.pp > model.num_layers:
                raise InfeasibleError(f"pp={self.pp} > {model.num_layers} layers of {model.name}")
            base, extra = divmod(model.num_layers, self.pp)
            sizes = [base + (1 if s < extra else 0) for s in range(self.pp)]
        out, start = [], 0
        for n in sizes:
            out.append(range(start, start + n))
            start += n
        return tuple(out)

    def validate_for(self, model: ModelSpec) -> None:
        """Raise ``InfeasibleError``/``ConfigError`` with a one-line reason when this layout
        cannot shard ``model``."""
        name = model.name
        if model.num_heads % self.tp:
            raise InfeasibleError(f"tp={self.tp} does not divide {model.num_heads} heads of {name}")
        if not model.is_mla:
            kv = model.num_kv_heads
            if self.tp <= kv and kv % self.tp:
                raise InfeasibleError(f"tp={self.tp} does not divide {kv} KV heads of {name}")
            if self.tp > kv and self.tp % kv:
                raise InfeasibleError(
                    f"tp={self.tp} > {kv} KV heads of {name} needs tp a multiple of {kv} to "
                    "replicate KV heads"
                )
        ffn_sizes = [model.intermediate_size] if model.num_dense_layers else []
        if model.shared_ffn_size:
            ffn_sizes.append(model.shared_ffn_size)
        for f in ffn_sizes:
            if f % self.tp:
                raise InfeasibleError(f"tp={self.tp} does not divide ffn size {f} of {name}")
        if model.is_moe:
            if model.num_experts % self.ep:
                raise InfeasibleError(
                    f"ep={self.ep} does not divide {model.num_experts} experts of {name}"
                )
            if model.moe_intermediate_size % self.expert_tp:
                raise InfeasibleError(
                    f"expert tp={self.expert_tp} does not divide expert ffn "
                    f"{model.moe_intermediate_size} of {name}"
                )
        elif self.ep > 1:
            raise ConfigError(f"ep={self.ep} > 1 but {name} is not a mixture-of-experts model")
        if self.layer_split is None and self.pp > model.num_layers:
            raise InfeasibleError(f"pp={self.pp} > {model.num_layers} layers of {name}")
        self.stage_layers(model)

    def validate(self, model: ModelSpec) -> ParallelConfig:  # type: ignore[override]
        """``validate_for(model)``, returning self so it chains."""
        self.validate_for(model)
        return self


Parallel = ParallelConfig

PARALLEL_KEYS = ("tp", "pp", "dp", "ep", "cp", "vpp", "sp")
"""Keys of the parallel shorthand; ``sp`` (sequence parallelism) takes 0/1 or true/false."""


def parse_parallel(text: str, what: str = "parallel", keys: tuple[str, ...] = PARALLEL_KEYS) -> dict[str, object]:
    """Degrees from shorthand such as ``"tp=8,pp=2"`` (commas or spaces between terms,
    as ``fleetsim`` prints layouts: ``tp=8 pp=2``); ``sp`` becomes ``sequence_parallel``.

    Every term must be ``KEY=N`` with a known key and a positive integer; errors name the term."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a string such as 'tp=8,pp=2', got {type(text).__name__}")
    terms = [t for t in text.replace(",", " ").split() if t]
    if not terms:
        raise ConfigError(f"{what} {text!r}: empty; expected e.g. 'tp=8,pp=2' (keys {', '.join(keys)})")
    out: dict[str, object] = {}
    for term in terms:
        key, eq, value = term.partition("=")
        key = key.strip().lower()
        if not eq or key not in keys:
            raise ConfigError(
                f"{what} {text!r}: bad term {term!r}; expected KEY=N with KEY one of {', '.join(keys)}"
                + (suggest(key, keys) if eq else "")
            )
        name = "sequence_parallel" if key == "sp" else key
        if name in out:
            raise ConfigError(f"{what} {text!r}: {key} given twice")
        if key == "sp":
            flag = value.strip().lower()
            if flag not in ("0", "1", "true", "false"):
                raise ConfigError(f"{what} {text!r}: sp must be 0, 1, true or false, got {value!r}")
            out[name] = flag in ("1", "true")
            continue
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: {key} must be a positive integer, got {value!r}") from None
        out[name] = positive_int(n, f"{what} {text!r}: {key}")
    return out


def as_parallel(value: object, what: str = "parallel") -> ParallelConfig:
    """A ``ParallelConfig`` from itself, a dict of its fields, or shorthand text (``"tp=8,pp=2"``)."""
    if isinstance(value, ParallelConfig):
        return value
    if isinstance(value, str):
        fields = parse_parallel(value, what, tuple(k for k in PARALLEL_KEYS if k != "vpp"))
        return ParallelConfig(**fields)
    if isinstance(value, dict):
        return ParallelConfig(**value)
    raise ConfigError(f"{what} must be a ParallelConfig, a dict or text such as 'tp=8,pp=2', "
                      f"got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Seq:
    """One sequence in a batch step: ``new_tokens`` processed now on top of ``context`` tokens
    already in the KV cache (kv_len = context + new_tokens). ``emits_token`` is False for a
    prefill chunk that is not the prompt's last (it produces no logits)."""

    new_tokens: int
    context: int = 0
    emits_token: bool = True

    def __post_init__(self) -> None:
        n, c = self.new_tokens, self.context
        if type(n) is int and type(c) is int and n >= 1 and c >= 0:  # the common case, kept cheap
            return
        what = f"Seq(new_tokens={n!r}, context={c!r})"
        integer(n, f"{what}: new_tokens", minimum=1)
        integer(c, f"{what}: context", minimum=0)

    @property
    def kv_len(self) -> int:
        return self.context + self.new_tokens

    @property
    def is_decode(self) -> bool:
        return self.new_tokens == 1 and self.context > 0
