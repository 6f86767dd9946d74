"""Retention benchmarks through EleutherAI's lm-eval, run on an already-loaded model.

The only module that imports ``lm_eval`` (it changes often; see DESIGN.md). Tasks
come from YAML files in a local folder (``include_path``) whose datasets are local
too, e.g. ``dataset_path: json`` with ``dataset_kwargs: {data_files: {test:
/abs/path.jsonl}}``, so a retention run needs no network. lm-eval's built-in tasks
still work when their datasets are already in the local Hugging Face cache.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError

_KEY = "eval.retention.lm_eval"


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    include_path: str | None,
    limit: int | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
) -> dict[str, dict[str, float]]:
    """Score a loaded causal LM on lm-eval tasks and return their metrics.

    The model is used as is, on its own device: a PEFT model scores with its
    adapter, or without it when the caller wraps the call in
    ``model.disable_adapter()``. Stderrs are not computed (their bootstrap forks
    worker processes), so only point estimates come back.

    Args:
        model: A Hugging Face causal LM (or a PEFT model around one).
        tokenizer: Its tokenizer. lm-eval gives it a pad token if it has none.
        tasks: Task, group or tag names, from ``include_path`` or lm-eval's own.
        include_path: Folder of task YAML files, searched before the built-in tasks.
        limit: At most this many documents per task (all when None).
        batch_size: Requests per forward pass.
        num_fewshot: Few-shot examples per prompt; None keeps each task's default.

    Returns:
        ``{task: {metric: value}}``, metric names without lm-eval's ``,none``
        filter suffix (any other filter is kept as ``metric_filter``).

    Raises:
        ConfigError: lm-eval is not installed, the folder is missing, a task is
            unknown, or a task's dataset cannot be loaded.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise ConfigError(f"{_KEY} needs lm-eval: pip install 'tuneforge[eval]'") from None
    if not tasks:
        raise ConfigError(f"{_KEY}: no tasks given; name at least one task")
    with _log_level("lm_eval", logging.WARNING):
        manager = _task_manager(tasks, include_path)
        loaded = _load_tasks(manager, tasks, include_path)
        was_training = getattr(model, "training", False)
        try:
            # Passing a loaded model is deliberate; lm-eval warns about it every time.
            with _log_level("lm_eval.models.huggingface", logging.ERROR):
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=loaded,
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                bootstrap_iters=0,
                log_samples=False,
            )
        finally:
            model.train(was_training)
    return {task: _simplify(metrics) for task, metrics in results["results"].items()}


def _task_manager(tasks: list[str], include_path: str | None) -> Any:
    """A TaskManager that knows every name in ``tasks``.

    Indexing lm-eval's thousands of built-in YAMLs takes seconds, so the local
    folder alone is tried first.
    """
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise ConfigError(f"{_KEY}: include_path {include_path} is not a folder")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(name in local.all_tasks for name in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    for name in tasks:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = f"{include_path} nor" if include_path else "no include_path and not"
            raise ConfigError(
                f"{_KEY}: unknown task {name!r} (in {where} lm-eval's built-in tasks; "
                f"a task YAML that does not parse is skipped){hint}"
            )
    return manager


def _load_tasks(manager: Any, tasks: list[str], include_path: str | None) -> list[Any]:
    """Build the task objects (this loads their datasets), one error per failing task."""
    loaded: list[Any] = []
    for name in tasks:
        try:
            built = manager.load([name])
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            local = f" (task files: {include_path})" if include_path else ""
            raise ConfigError(
                f"{_KEY}: cannot load task {name!r}{local}: {reason}; "
                "its dataset must be a local file or already in the Hugging Face cache"
            ) from err
        loaded.extend(built["groups"].values() or built["tasks"].values())
    return loaded


def _simplify(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"acc,none": 0.5, "acc_stderr,none": "N/A", "alias": ...}`` -> ``{"acc": 0.5}``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if "," not in key or isinstance(value, str) or value is None:
            continue
        metric, _, filter_name = key.partition(",")
        name = metric if filter_name == "none" else f"{metric}_{filter_name}"
        out[name] = float(value)
    return out


@contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """Raise one logger's threshold while lm-eval runs (it logs every step at INFO)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
