"""What the service's processes share: its config, folders, database and base model.

The service config is an ordinary project config (model, method, train, eval with its
gates, export) plus a ``service`` section; each job replaces its data with the uploaded
files and its hyper-parameters with the job's. Layout under ``service.root``::

    files/<file-id>.jsonl      uploads and result files
    runs/<job-id>/<stamp>/     each job's run directory (stages reused across jobs)
    models/<job-id>/           a succeeded job's adapter: what the server serves
    service.sqlite             the queue, unless service.database_url names another
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tuneforge.config import Config, load_config
from tuneforge.errors import ConfigError
from tuneforge.models.local import is_local

DATABASE_ENV = "TUNEFORGE_SERVICE_DATABASE_URL"
PLACEHOLDER_DATA = "uploads.jsonl"  # a service config needs no data: each job brings its own
LORA_KINDS = ("lora", "qlora")


@dataclass
class Runtime:
    """The service config, resolved once per process."""

    config: Config
    config_file: Path
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, config_file: str | Path, overrides: list[str] | None = None) -> Runtime:
        """Load a service config (``data`` may be left out); checks what jobs can train.

        Raises:
            ConfigError: the file is wrong, or its method is not a servable adapter.
        """
        import yaml

        path = Path(config_file)
        overrides = list(overrides or [])
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read it as a YAML config ({err})") from None
        data = raw.get("data") if isinstance(raw, dict) else None
        if not (isinstance(data, dict) and (data.get("path") or data.get("sources"))):
            overrides.insert(0, f"data.path={PLACEHOLDER_DATA}")
        config = load_config(path, overrides)
        if config.method.kind not in LORA_KINDS:
            raise ConfigError(
                f"{path}: method.kind {config.method.kind}: the service trains adapters it can "
                f"serve on its base model; use one of {', '.join(LORA_KINDS)}"
            )
        return cls(config, path.resolve(), overrides)

    @property
    def settings(self) -> Any:
        return self.config.service

    @cached_property
    def root(self) -> Path:
        root = Path(self.settings.root).expanduser().resolve()
        for folder in ("files", "runs", "models"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        return root

    @property
    def database_url(self) -> str:
        return (
            os.environ.get(DATABASE_ENV)
            or self.settings.database_url
            or f"sqlite:///{self.root / 'service.sqlite'}"
        )

    @cached_property
    def store(self) -> Any:
        from tuneforge.service.store import JobStore

        return JobStore(self.database_url)

    @property
    def base_name(self) -> str:
        """The name jobs give as ``model`` and ``ft:`` names carry."""
        if self.settings.base_name:
            return self.settings.base_name
        spec = self.config.model.name_or_path
        return Path(spec).name if is_local(spec) else spec

    def child_args(self) -> list[str]:
        """How a job process loads this same runtime: the config file and every override
        (the database URL, which may hold a password, goes by :meth:`child_env`, not argv)."""
        args = [str(self.config_file)]
        for item in self.overrides:
            args += ["--set", item]
        return [*args, "--set", f"service.root={self.root}"]

    def child_env(self) -> dict[str, str]:
        """The environment of a job process: this one's, with the queue's URL."""
        return {**os.environ, DATABASE_ENV: self.database_url}

    def base_model_path(self) -> str:
        """The base model's folder or hub id; the tiny model is built (or reused) first."""
        if self.config.model.name_or_path != "tiny":
            return self.config.model.name_or_path
        from tuneforge.pipeline import Pipeline
        from tuneforge.runs import create_run, latest_run

        config = self.job_config_raw("base")
        run = latest_run(config) or create_run(config, self.config_file)
        with Pipeline(config=config, run=run, config_file=str(self.config_file)) as pipeline:
            return str(pipeline.execute("base").path.resolve())

    def job_config_raw(self, name: str, changes: dict[str, Any] | None = None) -> Config:
        """The service config renamed ``name`` with runs under the root, and ``changes``."""
        raw = self.config.model_dump(mode="json")
        raw.update(name=name, runs_dir=str(self.root / "runs"))
        for key, value in (changes or {}).items():
            _set(raw, key, value)
        return Config.model_validate(raw)

    @cached_property
    def tokenizer(self) -> Any:
        from tuneforge.models.load import load_tokenizer

        spec = self.config.model
        return load_tokenizer(
            self.base_model_path(), revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        raw = raw.setdefault(key, {})
    raw[last] = value
