"""LLM-as-judge: score model outputs against references with a rubric.

Any OpenAI-compatible chat endpoint can judge (a hosted API, vLLM, tuneforge's
own server). It is optional and off by default: nothing else in the evaluation
depends on it, and no test needs the network for it.

Each output is judged on its own (pointwise), without the name of the model that
wrote it, so the judge cannot favour a position or a label.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import ConfigError, StageFailed

DEFAULT_RUBRIC = (
    "Correctness: the answer agrees with the reference on every fact that matters.\n"
    "Completeness: it does everything the prompt asks.\n"
    "Clarity: it is direct and well organised, without padding.\n"
    "An answer that contradicts the reference scores at most 2, however well written."
)
# Local servers without auth still need some key for the client to send.
_PLACEHOLDER_KEY = "not-needed"
_SCORE_LINE = re.compile(r"score\W{0,6}(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeSpec:
    """Which endpoint judges, with what rubric and scale.

    Attributes:
        base_url: The endpoint's API root, e.g. ``http://localhost:8000/v1``.
        model: The judge model's name on that endpoint.
        rubric: The criteria the judge scores by.
        api_key_env: Environment variable holding the API key (unset: a placeholder
            key, for local servers without auth).
        scale: Scores run from 1 to ``scale``.
        max_concurrency: Requests in flight at once.
        timeout_s: Seconds to wait for one reply.
    """

    base_url: str
    model: str
    rubric: str = DEFAULT_RUBRIC
    api_key_env: str = "OPENAI_API_KEY"
    scale: int = 5
    max_concurrency: int = 4
    timeout_s: float = 60


def judge(
    spec: JudgeSpec,
    prompts: list[str],
    references: list[str],
    outputs: dict[str, list[str]],
) -> dict[str, Any]:
    """Ask the judge to score every output of every model, one request per output.

    Args:
        spec: The judge endpoint, rubric and scale.
        prompts: The prompts the models answered.
        references: The reference answer for each prompt.
        outputs: Each model's answers (e.g. ``{"base": [...], "tuned": [...]}``),
            aligned with ``prompts``.

    Returns:
        Per model: ``score`` (mean raw score mapped to [0, 1] as
        ``(s - 1) / (scale - 1)``), ``mean_raw``, ``parsed`` and ``failed`` (replies
        with and without a usable score), ``per_example`` (raw scores, None where
        unparseable) and ``reasons`` (the judge's reason, or its whole reply).
        ``score`` and ``mean_raw`` are None when no reply parsed.

    Raises:
        ConfigError: openai is missing, the scale is below 2, or lengths differ.
        StageFailed: The endpoint cannot be reached or answers with an error.
    """
    _check_inputs(spec, prompts, references, outputs)
    client = _client(spec)
    replies = _ask_all(client, spec, prompts, references, outputs)
    results: dict[str, Any] = {}
    for name, texts in outputs.items():
        parsed = [parse_score(replies[name, i], spec.scale) for i in range(len(texts))]
        results[name] = _summarise(parsed, spec.scale)
    return results


def _ask_all(
    client: Any,
    spec: JudgeSpec,
    prompts: list[str],
    references: list[str],
    outputs: dict[str, list[str]],
) -> dict[tuple[str, int], str]:
    """Every judge reply, keyed by (model name, example index); stops at the first failure."""
    with ThreadPoolExecutor(max_workers=max(1, spec.max_concurrency)) as pool:
        futures = {
            (name, i): pool.submit(_ask, client, spec, prompts[i], references[i], text)
            for name, texts in outputs.items()
            for i, text in enumerate(texts)
        }
        try:
            return {key: future.result() for key, future in futures.items()}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def parse_score(reply: str, scale: int) -> tuple[float | None, str]:
    """The score and reason in a judge's reply; score None when absent or off the scale.

    Accepts a JSON object ``{"score": N, "reason": "..."}`` (also inside a code
    fence or prose) or a line like ``Score: N`` / ``**Score:** N/5``.
    """
    reply = reply.strip()
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(reply) if char == "{"):
        try:
            obj, _ = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            reason = str(obj.get("reason", reply))
            return _on_scale(obj["score"], scale), reason
    match = _SCORE_LINE.search(reply)
    return (_on_scale(match.group(1), scale) if match else None), reply


def _on_scale(value: Any, scale: int) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 1 <= score <= scale else None


def _summarise(parsed: list[tuple[float | None, str]], scale: int) -> dict[str, Any]:
    scores = [s for s, _ in parsed]
    valid = [s for s in scores if s is not None]
    mean_raw = sum(valid) / len(valid) if valid else None
    return {
        "score": (mean_raw - 1) / (scale - 1) if mean_raw is not None else None,
        "mean_raw": mean_raw,
        "parsed": len(valid),
        "failed": len(scores) - len(valid),
        "per_example": scores,
        "reasons": [reason for _, reason in parsed],
    }


def _messages(spec: JudgeSpec, prompt: str, reference: str, output: str) -> list[dict]:
    system = (
        "You grade an answer to a prompt against a reference answer, by this rubric:\n"
        f"{spec.rubric}\n\n"
        f"Give an integer score from 1 (worst) to {spec.scale} (best). Reply with one line "
        f'of JSON and nothing else: {{"score": <1-{spec.scale}>, "reason": "<one sentence>"}}'
    )
    user = f"Prompt:\n{prompt}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{output}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _ask(client: Any, spec: JudgeSpec, prompt: str, reference: str, output: str) -> str:
    """One judge request; its reply text ("" when the reply has no content)."""
    import openai

    try:
        response = client.chat.completions.create(
            model=spec.model, messages=_messages(spec, prompt, reference, output), temperature=0
        )
    except openai.APIConnectionError as err:
        reason = _first_line(err.__cause__ or err)
        raise StageFailed(f"eval.judge: cannot reach {spec.base_url}: {reason}") from err
    except openai.APIStatusError as err:
        hint = f" (check the key in ${spec.api_key_env})" if err.status_code in (401, 403) else ""
        raise StageFailed(
            f"eval.judge: {spec.base_url} answered HTTP {err.status_code}: "
            f"{_first_line(err.message)}{hint}"
        ) from err
    choices = response.choices or []
    return (choices[0].message.content or "") if choices else ""


def _client(spec: JudgeSpec) -> Any:
    try:
        from openai import OpenAI
    except ImportError:
        raise ConfigError("eval.judge needs openai: pip install 'tuneforge[eval]'") from None
    return OpenAI(
        base_url=spec.base_url,
        api_key=os.environ.get(spec.api_key_env) or _PLACEHOLDER_KEY,
        timeout=spec.timeout_s,
        max_retries=1,
    )


def _check_inputs(
    spec: JudgeSpec, prompts: list[str], references: list[str], outputs: dict[str, list[str]]
) -> None:
    if spec.scale < 2:
        raise ConfigError(f"eval.judge.scale: {spec.scale} is below 2; use 2 or more (e.g. 5)")
    if len(references) != len(prompts):
        raise ConfigError(
            f"eval.judge: {len(prompts)} prompts but {len(references)} references; "
            "give one reference per prompt"
        )
    for name, texts in outputs.items():
        if len(texts) != len(prompts):
            raise ConfigError(
                f"eval.judge: model {name!r} has {len(texts)} outputs for {len(prompts)} "
                "prompts; give one output per prompt"
            )


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
