"""The playground's models: a run's base and tuned model, or whatever a server serves.

In-process, a run offers two models: ``NAME/STAMP · base`` and ``NAME/STAMP · tuned``.
Both run on the serving engine (:class:`~tuneforge.serve.engine.LocalEngine`): a
LoRA run's adapter is served on its own base model by the same engine (base and
tuned rows share a batch), and any other run's tuned model is its merged export.
Prompts are rendered by the training renderer, as the server renders them.

Pointed at a running ``tuneforge serve`` (or any OpenAI-compatible server), the
models are the server's ``/v1/models`` and replies stream through the ``openai``
client.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError
from tuneforge.runs.catalog import RunInfo, find_runs

BASE, TUNED = "base", "tuned"
SEPARATOR = " · "
LOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Sampling:
    """What the page's sliders set."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int | None = 0


@dataclass(frozen=True)
class Target:
    """Where one choice of the model menu is generated: a model folder and an adapter."""

    model_dir: Path
    adapter: str | None = None


def run_targets(run: RunInfo, adapters_root: Path) -> dict[str, Target]:
    """The base and tuned models of a finished run (only those that exist on disk)."""
    base = _base_folder(run)
    found: dict[str, Target] = {}
    if base is not None:
        found[f"{run.label}{SEPARATOR}{BASE}"] = Target(base)
    adapter = run.path / "train" / "adapter"
    merged = run.path / "export" / "merged"
    if base is not None and _plain_lora(adapter):
        name = _adapter_name(run)
        _publish_adapter(adapter, adapters_root / name)
        found[f"{run.label}{SEPARATOR}{TUNED}"] = Target(base, name)
    elif (merged / "config.json").is_file():
        found[f"{run.label}{SEPARATOR}{TUNED}"] = Target(merged.resolve())
    return found


def _base_folder(run: RunInfo) -> Path | None:
    if (run.path / "base" / "config.json").is_file():
        return (run.path / "base").resolve()
    model = str((run.config.get("model") or {}).get("name_or_path", ""))
    folder = Path(model).expanduser()
    return folder.resolve() if model and (folder / "config.json").is_file() else None


def _plain_lora(adapter: Path) -> bool:
    import json

    config_file = adapter / "adapter_config.json"
    if not config_file.is_file() or not (adapter / "adapter_model.safetensors").is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return config.get("peft_type") == "LORA" and not config.get("use_dora")


def _adapter_name(run: RunInfo) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{run.name}-{run.stamp}")


def _publish_adapter(source: Path, folder: Path) -> None:
    """Copy an adapter into the playground's registry (which refuses links leading out);
    a copy whose files differ in size or time from the run's is replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        given, copy = source / name, folder / name
        stamp = (given.stat().st_size, given.stat().st_mtime_ns)
        if not copy.is_file() or (copy.stat().st_size, copy.stat().st_mtime_ns) != stamp:
            shutil.copy2(given, copy)


class LocalModels:
    """The runs' models, on in-process serving engines (one per base model folder)."""

    def __init__(self, runs_root: Path, extra: list[Path] = ()) -> None:
        self.runs_root = runs_root.resolve()
        self.adapters_root = self.runs_root / ".ui" / "adapters"
        self.extra = [path.resolve() for path in extra]
        self._engines: dict[Path, Any] = {}

    def choices(self) -> list[str]:
        """Menu labels: extra model folders, then each run's base and tuned model."""
        return list(self.targets())

    def targets(self) -> dict[str, Target]:
        found = {str(path): Target(path) for path in self.extra}
        if self.runs_root.is_dir():
            for run in find_runs(self.runs_root):
                if "train" in run.stages:
                    found.update(run_targets(run, self.adapters_root))
        return found

    async def stream(
        self, choice: str, messages: list[dict[str, Any]], sampling: Sampling
    ) -> AsyncIterator[str]:
        """The reply to ``messages`` piece by piece.

        Raises:
            ConfigError: no model of that name.
        """
        from tuneforge.data.render import render_prompt
        from tuneforge.serve.types import GenerationRequest

        target = self.targets().get(choice)
        if target is None:
            raise ConfigError(f"model {choice!r}: not a run's base or tuned model here")
        engine = self._engine(target.model_dir)
        await engine.wait_ready(LOAD_TIMEOUT_S)
        ids = render_prompt(engine.tokenizer, messages)
        request = GenerationRequest(
            prompt_ids=tuple(ids),
            adapter=target.adapter,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            request_id="ui",
        )
        stream = engine.stream(request)
        try:
            async for delta in stream:
                if delta.text:
                    yield delta.text
        finally:
            await stream.aclose()

    def _engine(self, model_dir: Path) -> Any:
        from tuneforge.serve.engine import LocalEngine
        from tuneforge.serve.registry import AdapterRegistry

        if model_dir not in self._engines:
            self.adapters_root.mkdir(parents=True, exist_ok=True)
            registry = AdapterRegistry(self.adapters_root)
            self._engines[model_dir] = LocalEngine(model_dir, registry, max_batch=8)
        return self._engines[model_dir]

    async def close(self) -> None:
        """Free every engine's model."""
        for engine in self._engines.values():
            await engine.close(timeout_s=5)
        self._engines.clear()


class RemoteModels:
    """The models of a running OpenAI-compatible server (``tuneforge serve URL``)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        from openai import AsyncOpenAI

        base = url.rstrip("/")
        self.url = base if base.endswith("/v1") else f"{base}/v1"
        self.client = AsyncOpenAI(base_url=self.url, api_key=api_key or "none", max_retries=0)

    def choices(self) -> list[str]:
        """The server's model ids (its base model and every adapter)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.client.api_key}"}
        try:
            response = httpx.get(f"{self.url}/models", headers=headers, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as err:
            raise ConfigError(f"{self.url}/models: {err}") from None
        return [model["id"] for model in response.json().get("data", [])]

    async def stream(
        self, choice: str, messages: list[dict[str, Any]], sampling: Sampling
    ) -> AsyncIterator[str]:
        """The server's streamed reply to ``messages``."""
        chunks = await self.client.chat.completions.create(
            model=choice,
            messages=messages,
            stream=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def close(self) -> None:
        await self.client.close()


async def side_by_side(
    models: LocalModels | RemoteModels,
    choices: tuple[str, str],
    conversations: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    sampling: Sampling,
) -> AsyncIterator[tuple[str, str]]:
    """Both replies as they grow: ``(left so far, right so far)`` after every piece.

    Each side streams its own reply to its own conversation, at the same time; an error
    on one side ends that side's reply with the error's message and leaves the other
    running.
    """
    texts = ["", ""]
    updates: asyncio.Queue[int | None] = asyncio.Queue()

    async def pump(side: int) -> None:
        try:
            async for piece in models.stream(choices[side], conversations[side], sampling):
                texts[side] += piece
                updates.put_nowait(None)
        except Exception as err:  # shown in that side's reply, the other goes on
            texts[side] += f"\n[error: {str(err).splitlines()[0] if str(err) else type(err)}]"
        finally:
            updates.put_nowait(side)

    tasks = [asyncio.create_task(pump(side)) for side in (0, 1)]
    finished = 0
    try:
        while finished < 2:
            if isinstance(await updates.get(), int):
                finished += 1
            yield texts[0], texts[1]
    finally:
        for task in tasks:
            task.cancel()
