"""The tune section: the search space and budget of ``tuneforge tune``.

A search never changes what one trial produces (a trial is the base config with
the sampled values applied), so this section is left out of the config hash.

Each ``space`` key is a settable config key (``train.lr``, ``method.r``) and its
value one distribution::

    {uniform: [lo, hi]}       float in [lo, hi]
    {log_uniform: [lo, hi]}   float, log scale (lo > 0)
    {int: [lo, hi]}           integer in [lo, hi]; {int: [lo, hi], step: 8} for a grid
    {choice: [a, b, ...]}     one of the listed values
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")
# Where a run and its study live, and how it is tracked, are not hyper-parameters.
UNSEARCHABLE = ("name", "runs_dir", "track", "tune", "serve", "service", "synth")


class TuneConfig(BaseModel):
    """Hyper-parameter search: Optuna TPE (or Ray Tune) over ``space``, pruned on val loss."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Config key -> distribution: {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, "
        "{int: [lo, hi], step: N}, {choice: [...]}.",
    )
    trials: int = Field(20, ge=1, description="Finished trials the study ends with.")
    parallel: int = Field(1, ge=1, description="Trials run at once (worker processes).")
    pruner: Literal["median", "asha", "none"] = Field(
        "median",
        description="Stop unpromising trials on their validation loss (needs train.eval_every).",
    )
    startup_trials: int = Field(
        5, ge=0, description="Random trials before TPE models the space, and before pruning."
    )
    timeout_minutes: float | None = Field(
        None, gt=0, description="Start no trial after this wall-clock budget (running ones finish)."
    )
    study: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Study name (its folder under <runs_dir>/<name>/tune/); null: name.",
    )

    @field_validator("space")
    @classmethod
    def _space_is_valid(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, spec in space.items():
            check_distribution(key, spec)
        return space


def check_distribution(key: str, spec: dict[str, Any]) -> None:
    """Check one search-space entry against the config schema.

    Raises:
        ValueError: one line naming the key and what is wrong with it.
    """
    kinds = [name for name in spec if name in DISTRIBUTIONS]
    extra = sorted(set(spec) - set(DISTRIBUTIONS) - {"step"})
    if len(kinds) != 1 or extra:
        raise ValueError(
            f"{key}: expected one of {', '.join(DISTRIBUTIONS)} "
            f"(e.g. {{log_uniform: [1e-5, 1e-3]}}), got {sorted(spec)}"
        )
    kind = kinds[0]
    if "step" in spec and kind != "int":
        raise ValueError(f"{key}: step goes with int, not {kind}")
    values = spec[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ValueError(f"{key}: choice needs a non-empty list of values")
        if any(isinstance(v, dict | list) for v in values):
            raise ValueError(f"{key}: choice values must be numbers, strings, booleans or null")
    else:
        _check_range(key, kind, values, spec.get("step"))
    field = settable_field(key)
    if kind in ("uniform", "log_uniform"):  # samples are fractional: an int key refuses them
        values = [*values, values[0] + 0.37 * (values[1] - values[0])]
    for value in values:
        try:
            field.validate_python(value)
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            hint = "; use {int: [lo, hi]} or {choice: [...]}" if kind != "choice" else ""
            raise ValueError(
                f"{key}: {kind} value {value!r} does not fit: {reason}{hint}"
            ) from None


def _check_range(key: str, kind: str, values: Any, step: Any) -> None:
    numbers = isinstance(values, list) and len(values) == 2
    if not numbers or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{key}: {kind} needs [lo, hi] (two numbers), got {values!r}")
    lo, hi = values
    if lo >= hi:
        raise ValueError(f"{key}: {kind} lower bound {lo} must be below the upper bound {hi}")
    if kind == "log_uniform" and lo <= 0:
        raise ValueError(f"{key}: log_uniform needs a lower bound above 0, got {lo}")
    if kind == "int":
        if not all(isinstance(v, int) for v in values):
            raise ValueError(f"{key}: int bounds must be integers, got {values!r}")
        if step is not None and (not isinstance(step, int) or step < 1):
            raise ValueError(f"{key}: int step must be a positive integer, got {step!r}")
        if step is not None and (hi - lo) % step:
            raise ValueError(f"{key}: int range {hi} - {lo} is not a multiple of step {step}")


def settable_field(key: str) -> TypeAdapter:
    """A validator for the value of a dotted config key (``train.lr``).

    Raises:
        ValueError: the key is not in the schema or names a whole section.
    """
    from tuneforge.config.load import _submodel, _suggest
    from tuneforge.config.schema import Config

    parts = key.split(".")
    if parts[0] in UNSEARCHABLE:
        raise ValueError(f"{key}: {parts[0]} cannot be searched (it names the run or the search)")
    model: type[BaseModel] | None = Config
    for depth, part in enumerate(parts):
        fields = model.model_fields if model else {}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            raise ValueError(f"{key}: unknown key {part!r} in {where}{_suggest(part, fields)}")
        info = fields[part]
        model = _submodel(info.annotation)
        if depth < len(parts) - 1 and model is None:
            raise ValueError(f"{key}: {'.'.join(parts[: depth + 1])} has no sub-keys")
    if model is not None:
        raise ValueError(f"{key}: is a section; search one of its keys, e.g. {key}.<key>")
    return TypeAdapter(Annotated[info.annotation, *info.metadata])
