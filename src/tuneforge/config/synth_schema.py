"""The synth section: a teacher model behind an OpenAI-compatible endpoint writes training data.

Each task reads a source (document chunks, text or chat records) and asks the teacher
for something per item: question/answer pairs (``qa``), instruction/response pairs
(``instruction``) grounded in a chunk, or paraphrases of a chat sample's prompt
(``paraphrase``, augmentation). Answers are cached on disk as they arrive, so a
re-run (or a run after a kill) sends only the requests that never came back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.config.mix_schema import ChunkingConfig

TASK_KINDS = ("qa", "instruction", "paraphrase")


class TeacherConfig(BaseModel):
    """The endpoint that writes the data: any OpenAI-compatible server, tuneforge's included."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="OpenAI-compatible base URL (ends in /v1)."
    )
    model: str = Field(description="The teacher's model name at that endpoint.")
    api_key_env: str = Field(
        "TUNEFORGE_TEACHER_KEY", description="Environment variable holding the API key, if any."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(5, ge=0, le=20, description="Retries of a failed request.")
    backoff_s: float = Field(1.0, gt=0, description="First retry's wait; doubles each time.")
    timeout_s: float = Field(120, gt=0, description="Give up on one request after this long.")
    input_price_per_1m: float = Field(0.0, ge=0, description="Price per million prompt tokens.")
    output_price_per_1m: float = Field(
        0.0, ge=0, description="Price per million completion tokens."
    )


class SynthTask(BaseModel):
    """One kind of generated data from one source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Output file stem.")
    kind: Literal["qa", "instruction", "paraphrase"]
    source: str = Field(description="Documents folder or dataset file (relative to the config).")
    format: str = Field("auto", description="The source's data format (see data.format).")
    chunking: ChunkingConfig | None = Field(
        None, description="How a documents source is cut into items (default: data.chunking)."
    )
    prompt: str | None = Field(
        None,
        description="Prompt template ({text}, {n}); the kind's default when omitted.",
    )
    prompt_version: str = Field("v1", description="Recorded on every sample (provenance).")
    per_item: int = Field(2, ge=1, le=10, description="Pairs per chunk, or paraphrases per sample.")
    max_items: int | None = Field(None, ge=1, description="Use only the first N source items.")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    seed: int = Field(0, description="Each request's seed derives from it (repeatable sampling).")
    min_words: int = Field(2, ge=1, description="Shortest question or answer kept, in words.")
    max_words: int = Field(300, ge=1, description="Longest question or answer kept, in words.")
    min_support: float = Field(
        0.6,
        ge=0,
        le=1,
        description="qa/instruction: share of the answer's content words found in the chunk.",
    )
    dedup_against: list[str] = Field(
        default_factory=list, description="Existing datasets whose prompts are not repeated."
    )


class SynthConfig(BaseModel):
    """Teacher-written training data (``tuneforge data synth``, and first in ``data prepare``)."""

    model_config = ConfigDict(extra="forbid")

    teacher: TeacherConfig | None = None
    tasks: list[SynthTask] = Field(default_factory=list)
    out_dir: str = Field(
        "synth", description="Where <task>.jsonl and the cache go (relative to the config)."
    )
    auto: bool = Field(
        True,
        description="Run the tasks first in `tuneforge data prepare`, `run` and `train` (cached: "
        "only what is missing is asked); false: only `tuneforge data synth` runs them.",
    )
    answers: list[str] = Field(
        default_factory=list,
        description="Answer files (`data synth --export-answers`) loaded into the cache before "
        "any request: one teacher's answers shared by a team, or bundled with an example.",
    )
