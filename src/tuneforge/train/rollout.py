"""Sampling completions and scoring them: what online RL and feedback collection share.

Prompts are token ids from the one rendering function (``render_prompt``), so a
completion continues exactly the prefix that training and serving use. A
completion keeps the end-of-turn token that stopped it (the policy learns to stop)
and nothing after it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import ConfigError
from tuneforge.eval.generate import left_pad
from tuneforge.eval.generate import stop_ids as stop_ids  # rl and feedback import it from here
from tuneforge.plugins import load_function
from tuneforge.train.loss import IGNORE_INDEX
from tuneforge.train.reward import RewardModel

Message = dict[str, Any]


@torch.no_grad()
def sample_completions(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    n: int,
    max_new_tokens: int,
    pad_id: int,
    stop: list[int],
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> list[list[int]]:
    """``n`` completions per prompt (prompt-major order), each cut after its first stop token.

    Args:
        model: A causal LM (PEFT or plain); put in eval mode for the call.
        prompts: Prompt token ids.
        n: Completions per prompt (1 when ``greedy``).
        max_new_tokens: Longest completion.
        pad_id: Padding id (prompts are left-padded).
        stop: Stop token ids.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        greedy: Deterministic argmax decoding.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, dev)
    width = ids.shape[1]
    options: dict[str, Any] = (
        {"do_sample": False}
        if greedy
        else {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": 0,
            "num_return_sequences": n,
        }
    )
    output = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop,
        pad_token_id=pad_id,
        **options,
    )
    model.train(was_training)
    completions = []
    for row in output[:, width:].tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token in stop), len(row))
        completions.append(row[:cut])
    return completions


def completion_rows(
    prompts: Sequence[list[int]], completions: Sequence[list[int]], n: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Token rows (prompt + completion) with labels on the completion only."""
    ids, labels = [], []
    for index, completion in enumerate(completions):
        prompt = list(prompts[index // n])
        ids.append(prompt + list(completion))
        labels.append([IGNORE_INDEX] * len(prompt) + list(completion))
    return ids, labels


@dataclass
class Rewarder:
    """The weighted sum of a reward model's score and Python reward functions.

    A reward function is called as ``function(prompts, completions, references=...)``
    (``references`` only when it takes that parameter or ``**kwargs``) and returns one
    number per completion; ``prompts`` are message lists, ``completions`` strings.
    """

    model: RewardModel | None = None
    functions: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __call__(
        self, prompts: list[list[Message]], completions: list[str], references: list[str]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total reward per completion, and the mean of each source."""
        parts: list[tuple[str, list[float]]] = []
        if self.model is not None:
            conversations = [
                [*p, {"role": "assistant", "content": c}]
                for p, c in zip(prompts, completions, strict=True)
            ]
            parts.append(("reward_model", self.model.score(conversations)))
        for name, function in self.functions:
            parts.append((name, _call_reward(name, function, prompts, completions, references)))
        weights = self.weights or [1.0] * len(parts)
        pairs = zip(weights, parts, strict=True)
        total = sum(w * torch.tensor(v, dtype=torch.float) for w, (_, v) in pairs)
        means = {f"reward_{_short(name)}": sum(v) / len(v) for name, v in parts}
        return torch.as_tensor(total, dtype=torch.float), means


def build_rewarder(
    reward_model: str | None,
    functions: list[str],
    weights: list[float] | None,
    device: torch.device,
    max_length: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Rewarder:
    """Load the reward model (a folder) and the ``module:function`` rewards of the ``rl`` section.

    Raises:
        ConfigError: the reward model folder is missing or a function cannot be loaded.
    """
    model = None
    if reward_model is not None:
        if not (Path(reward_model) / "config.json").is_file():
            raise ConfigError(f"rl.reward_model {reward_model!r}: not a model folder")
        model = RewardModel(reward_model, device=device, max_length=max_length, dtype=dtype)
    loaded = [(spec, load_function(spec, "rl.reward_functions")) for spec in functions]
    return Rewarder(model, loaded, list(weights or []))


def _call_reward(
    name: str,
    function: Callable[..., Any],
    prompts: list[list[Message]],
    completions: list[str],
    references: list[str],
) -> list[float]:
    parameters = inspect.signature(function).parameters
    takes_references = "references" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    extra = {"references": references} if takes_references else {}
    values = list(function(prompts, completions, **extra))
    if len(values) != len(completions) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise ConfigError(
            f"rl.reward_functions {name}: must return one number per completion "
            f"({len(completions)}), got {values[:3]!r}..."
        )
    return [float(v) for v in values]


def _short(spec: str) -> str:
    return spec.rpartition(":")[2] or spec
