"""The search space: ``tune.space`` as Optuna distributions, and a trial's config.

A trial's config is the base config (already loaded, overridden and resolved)
with the sampled values set at their dotted keys and validated again, so a trial
differs from the base exactly by its sampled values.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import ValidationError

from tuneforge.config import Config
from tuneforge.errors import ConfigError


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, BaseDistribution]:
    """One Optuna distribution per searched key (the space was checked when it was loaded)."""
    return {key: distribution(spec) for key, spec in space.items()}


def distribution(spec: dict[str, Any]) -> BaseDistribution:
    """``{log_uniform: [1e-5, 1e-3]}`` -> ``FloatDistribution(1e-5, 1e-3, log=True)``."""
    if "choice" in spec:
        return CategoricalDistribution(spec["choice"])
    if "int" in spec:
        lo, hi = spec["int"]
        return IntDistribution(lo, hi, step=spec.get("step") or 1)
    if "log_uniform" in spec:
        lo, hi = spec["log_uniform"]
        return FloatDistribution(float(lo), float(hi), log=True)
    lo, hi = spec["uniform"]
    return FloatDistribution(float(lo), float(hi))


def trial_config(base: Config, values: dict[str, Any]) -> Config:
    """The base config with ``values`` (dotted key -> value) applied and validated.

    Raises:
        ConfigError: the combination breaks a rule of the schema (naming the values).
    """
    raw = base.model_dump(mode="json")
    for key, value in values.items():
        target = raw
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        reason = first["msg"].removeprefix("Value error, ")
        shown = ", ".join(f"{key}={value!r}" for key, value in values.items())
        raise ConfigError(f"tune.space values {shown}: {where}: {reason}") from None


def corner_values(space: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each range's bounds and each choice, one key at a time (the rest at their lows).

    Checking these before a search starts finds a value that breaks a cross-key rule
    (``data.pack_length`` below ``data.max_length``) before any trial has run.
    """
    lows = {key: _values(spec)[0] for key, spec in space.items()}
    corners = [lows]
    for key, spec in space.items():
        corners += [{**lows, key: value} for value in _values(spec)[1:]]
    return corners


def check_space(base: Config) -> None:
    """Validate the base config with every corner of ``tune.space`` applied.

    Raises:
        ConfigError: an empty space, or a corner the schema rejects.
    """
    if not base.tune.space:
        raise ConfigError(
            "tune.space is empty: add the keys to search, e.g. "
            "tune: {space: {train.lr: {log_uniform: [1e-5, 1e-3]}}}"
        )
    for values in corner_values(base.tune.space):
        trial_config(base, values)


def _values(spec: dict[str, Any]) -> list[Any]:
    kind = next(name for name in ("choice", "int", "log_uniform", "uniform") if name in spec)
    return list(spec[kind])
