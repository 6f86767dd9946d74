"""The data section's source keys: ``data.sources`` (several datasets), ``data.mix`` and
``data.chunking`` (documents).

A mixture is the alternative to ``data.path``: each source is read with its own
format, mapping and system prompt, cleaned with the others, then sampled into one
training set by :mod:`tuneforge.data.mixture`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DataFormat = Literal[
    "auto",
    "openai",
    "chat",
    "alpaca",
    "sharegpt",
    "preference",
    "ranked",
    "unpaired",
    "text",
    "oasst",
    "dolly",
    "labelstudio",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChunkingConfig(_Section):
    """How documents (HTML, Markdown, PDF, DOCX) are cut into text samples."""

    max_tokens: int = Field(
        512,
        ge=16,
        description="Budget per chunk in approximate tokens (1.3 a word), heading line included.",
    )
    overlap_tokens: int = Field(
        64, ge=0, description="Trailing sentences of a chunk repeated at the next one's start."
    )

    @model_validator(mode="after")
    def _overlap_below_the_budget(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError(
                f"overlap_tokens {self.overlap_tokens} must be below max_tokens {self.max_tokens}"
            )
        return self

    def as_tuple(self) -> tuple[int, int]:
        """``(max_tokens, overlap_tokens)``, as the readers take them."""
        return self.max_tokens, self.overlap_tokens


class SourceConfig(_Section):
    """One dataset of a mixture; unset format, mapping and system prompt follow ``data``'s."""

    path: str = Field(description="Dataset file or folder, relative to the config file.")
    name: str = Field(
        min_length=1, description="Name in the books and the report (default: the file stem)."
    )
    format: DataFormat | None = Field(None, description="Record format (default: data.format).")
    weight: float = Field(
        1.0, gt=0, description="Relative share with mix.strategy weights or temperature."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Cap: at most N of its usable samples (after cleaning) in the mix."
    )
    mapping: dict[str, str] | None = Field(None, description="Default: data.mapping.")
    system_prompt: str | None = Field(None, description="Default: data.system_prompt.")
    split: Literal["val", "test"] | None = Field(
        None,
        description="Every usable sample of this source goes to this split (a given "
        "validation or test set); the fractions then split the other sources.",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_the_file_stem(cls, raw: Any) -> Any:
        # Before validation: setting it afterwards would re-run validation (validate_assignment).
        if isinstance(raw, dict) and raw.get("name") is None and isinstance(raw.get("path"), str):
            stem = Path(raw["path"].rstrip("/")).name.split(".")[0]
            return {**raw, "name": stem or raw["path"]}
        return raw


class MixConfig(_Section):
    """How the sources' usable samples become one training set."""

    strategy: Literal["concat", "weights", "temperature"] = Field(
        "concat",
        description="concat: every usable sample; weights: shares w_i / sum(w); temperature: "
        "shares proportional to w_i * n_i^(1/T).",
    )
    temperature: float = Field(
        2.0, gt=0, description="T for strategy temperature: 1 = by size, larger = flatter."
    )
    total: int | None = Field(
        None,
        ge=1,
        description="Samples in the mix (default: the most the shares allow without repeating).",
    )
    allow_repeat: bool = Field(
        False, description="Repeat a source's samples when its share needs more than it has."
    )


def check_mixture(
    path: str | None,
    sources: list[SourceConfig] | None,
    mix: MixConfig,
    max_samples: int | None,
) -> None:
    """The rules between ``data.path``, ``data.sources``, ``data.mix`` and ``data.max_samples``.

    Raises:
        ValueError: a one-line message naming the keys at fault.
    """
    if (path is None) == (sources is None):
        given = "both" if path is not None else "neither"
        raise ValueError(
            f"give exactly one of data.path (one dataset) and data.sources (a mixture); {given} "
            "given"
        )
    if sources is None:
        if mix != MixConfig():
            raise ValueError("data.mix is for data.sources; remove it or list the sources")
        return
    if not sources:
        raise ValueError("data.sources is empty; list at least one {path: ...}")
    if max_samples is not None:
        raise ValueError(
            "data.max_samples is for data.path; with data.sources set max_samples per source "
            "(a cap) or data.mix.total"
        )
    names = [source.name for source in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"data.sources: more than one source named {twice[0]!r}; give each a distinct name"
        )
    weighted = [(i, s) for i, s in enumerate(sources) if s.weight != 1.0]
    if mix.strategy == "concat" and weighted:
        index, source = weighted[0]
        raise ValueError(
            f"data.sources[{index}].weight {source.weight}: weights need data.mix.strategy "
            "weights or temperature (concat takes every sample)"
        )
