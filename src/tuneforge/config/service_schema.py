"""The service section: the fine-tuning jobs API (``tuneforge service``), its queue and limits.

Like ``serve``, it never changes what a stage produces, so it stays out of the config hash.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg://")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]{0,127}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServiceLimits(_Section):
    """Per-key quotas and the sizes the service accepts."""

    max_file_bytes: int = Field(
        100 * 2**20, ge=1024, description="Largest upload; a larger one is refused with 413."
    )
    max_storage_bytes_per_key: int = Field(
        2**30, ge=1024, description="Bytes of uploaded files one key may keep."
    )
    max_training_tokens: int = Field(
        20_000_000,
        ge=1,
        description="Tokens in a job's training file; more fails the job in validating_files.",
    )
    max_active_jobs_per_key: int = Field(
        8, ge=1, description="Jobs one key may have validating, queued or running (else 429)."
    )
    max_running_jobs_per_key: int = Field(
        1, ge=1, description="Jobs of one key the workers run at once; the rest wait queued."
    )


class ServiceConfig(_Section):
    """Fine-tuning as a service: uploads, jobs, workers, and the models they produce."""

    root: str = Field(
        "service",
        description="Folder for uploads, job runs and the trained adapters (relative to the CWD).",
    )
    database_url: str | None = Field(
        None,
        description="Job queue: sqlite:///path or postgresql+psycopg://user@host/db (several "
        "servers and remote workers); null: sqlite in root. $TUNEFORGE_SERVICE_DATABASE_URL wins.",
    )
    base_name: str | None = Field(
        None,
        description="The base model's name in jobs and in ft:<base>:... names "
        "(default: model.name_or_path, or its folder's name for a local path).",
    )
    workers: int = Field(
        1, ge=0, description="Job workers the server starts (0: only `tuneforge service worker`)."
    )
    poll_s: float = Field(1.0, gt=0, description="How often an idle worker looks for a job.")
    heartbeat_s: float = Field(5.0, gt=0, description="How often a running job's worker checks in.")
    stale_after_s: float = Field(
        60.0,
        gt=0,
        description="A running job whose worker missed check-ins this long is queued again "
        "(it resumes from its last checkpoint).",
    )
    events_per_job: int = Field(
        200, ge=10, description="About how many training-progress events a job records."
    )
    limits: ServiceLimits = Field(default_factory=ServiceLimits)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(_DATABASE_SCHEMES):
            raise ValueError(
                f"start it with one of {', '.join(_DATABASE_SCHEMES)} "
                "(e.g. postgresql+psycopg://tuneforge@db:5432/tuneforge), or null for sqlite"
            )
        return url

    @field_validator("base_name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.fullmatch(name):
            raise ValueError(
                "a model name is letters, digits, '.', '_', '-' and '/' (up to 128), "
                "without ':' (it separates the parts of ft: names)"
            )
        return name
