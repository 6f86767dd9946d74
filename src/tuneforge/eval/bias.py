"""Counterfactual bias probes: the same prompt with swapped demographic terms.

Each probe template is asked once per variant of its group (``A man applied ...`` /
``A woman applied ...``), and every pair of variants is compared two ways:

* **Output divergence**: 1 - the word-level similarity (``difflib``) of the two
  greedy replies, after each reply's own variant terms are masked, so that a reply
  that only echoes the swapped word scores 0. 1 means nothing in common.
* **Likelihood gap**: the absolute difference of the mean per-token log-prob of the
  template's continuation (``The {who} is well qualified.``), each variant scored
  after its own prompt. It shows a preference that greedy replies may hide.

The bundled probes (``suites/bias_probes.yaml``) cover gender, age, nationality,
religion and disability with neutral, respectful prompts; users add or replace
groups with files of the same schema. Both numbers are relative: compare the tuned
model with its base, and read the largest gaps, which come with their examples.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from tuneforge.data.render import render_prompt_batch
from tuneforge.data.sample import Message
from tuneforge.errors import ConfigError
from tuneforge.eval.generate import generate
from tuneforge.train.loss import IGNORE_INDEX, token_logps

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TOKENS = re.compile(r"\w+|[^\w\s]")
_MASK = " {term} "
_GROUP_KEYS = ("variants", "templates")
_TEMPLATE_KEYS = ("id", "prompt", "continuation")


@dataclass(frozen=True)
class ProbeTemplate:
    """A neutral prompt with ``{key}`` placeholders, and an optional continuation to score."""

    id: str
    prompt: str
    continuation: str | None = None


@dataclass(frozen=True)
class ProbeGroup:
    """Counterfactual variants (each a ``{key: word}`` mapping) and the templates they fill."""

    name: str
    variants: tuple[dict[str, str], ...]
    templates: tuple[ProbeTemplate, ...]

    @property
    def prompts(self) -> int:
        """How many prompts the group asks: one per template and variant."""
        return len(self.variants) * len(self.templates)


def load_probes(
    extra: Sequence[str | Path] = (), *, include_bundled: bool = True
) -> list[ProbeGroup]:
    """The bundled probe groups and those of the user's YAML files.

    A group in a later file replaces the group of the same name (so a user file can
    adjust a bundled group); new names add groups.

    Args:
        extra: YAML files in the bundled schema (see ``suites/bias_probes.yaml``).
        include_bundled: Start from the bundled groups; False uses only ``extra``.

    Raises:
        ConfigError: a file is missing or malformed; the message names the file and key.
    """
    groups: dict[str, ProbeGroup] = {}
    if include_bundled:
        bundled = resources.files("tuneforge.eval.suites").joinpath("bias_probes.yaml")
        groups.update(_parse(bundled.read_text("utf-8"), "bias_probes.yaml (bundled)"))
    for path in extra:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as err:
            raise ConfigError(f"bias probes: cannot read {path}: {err.strerror}") from None
        groups.update(_parse(text, str(path)))
    if not groups:
        raise ConfigError("bias probes: no groups given; keep the bundled ones or add a file")
    return list(groups.values())


def _parse(text: str, name: str) -> dict[str, ProbeGroup]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"bias probes: {name}{line}: not valid YAML") from None
    if not isinstance(raw, dict) or set(raw) != {"groups"} or not isinstance(raw["groups"], dict):
        raise ConfigError(
            f"bias probes: {name}: expected one top-level key 'groups: {{name: ...}}'"
        )
    return {str(group): _group(str(group), body, name) for group, body in raw["groups"].items()}


def _group(group: str, body: Any, name: str) -> ProbeGroup:
    where = f"bias probes: {name}: groups.{group}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping with {_GROUP_KEYS}")
    _known_keys(body, _GROUP_KEYS, where)
    variants = _variants(body.get("variants"), f"{where}.variants")
    keys = set(variants[0])
    raw_templates = body.get("templates")
    if not isinstance(raw_templates, list) or not raw_templates:
        raise ConfigError(f"{where}.templates: expected a non-empty list")
    templates = tuple(
        _template(item, keys, f"{where}.templates[{i}]", f"{group}-{i}")
        for i, item in enumerate(raw_templates)
    )
    return ProbeGroup(group, variants, templates)


def _variants(raw: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigError(f"{where}: expected a list of two or more {{key: word}} mappings")
    for i, variant in enumerate(raw):
        if not isinstance(variant, dict) or not variant:
            raise ConfigError(f"{where}[{i}]: expected a {{key: word}} mapping")
        for key, word in variant.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError(f"{where}[{i}]: key {key!r} must be a name (letters, digits, _)")
            if not isinstance(word, str) or not word.strip():
                raise ConfigError(f"{where}[{i}].{key}: expected a word (quote numbers)")
        if set(variant) != set(raw[0]):
            missing = sorted(set(raw[0]) ^ set(variant))[0]
            raise ConfigError(f"{where}[{i}]: key {missing!r} is not in every variant")
    return tuple(dict(variant) for variant in raw)


def _template(raw: Any, keys: set[str], where: str, default_id: str) -> ProbeTemplate:
    if isinstance(raw, str):
        raw = {"prompt": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a prompt string or a mapping with {_TEMPLATE_KEYS}")
    _known_keys(raw, _TEMPLATE_KEYS, where)
    prompt, continuation = raw.get("prompt"), raw.get("continuation")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}.prompt: expected a non-empty string")
    if continuation is not None and (not isinstance(continuation, str) or not continuation.strip()):
        raise ConfigError(f"{where}.continuation: expected a non-empty string")
    if not _PLACEHOLDER.search(prompt):
        raise ConfigError(
            f"{where}.prompt: has no {{key}} placeholder; every variant reads the same"
        )
    for field, text in (("prompt", prompt), ("continuation", continuation or "")):
        for key in _PLACEHOLDER.findall(text):
            if key not in keys and _lower_first(key) not in keys:
                raise ConfigError(
                    f"{where}.{field}: placeholder {{{key}}} is not a variant key {sorted(keys)}"
                )
    return ProbeTemplate(str(raw.get("id", default_id)), prompt, continuation)


def _known_keys(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {allowed}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def fill(text: str, variant: dict[str, str]) -> str:
    """``text`` with each ``{key}`` replaced by the variant's word (``{Key}``: capitalised)."""

    def word(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in variant:
            return variant[key]
        value = variant[_lower_first(key)]
        return value[:1].upper() + value[1:]

    return _PLACEHOLDER.sub(word, text)


def _lower_first(key: str) -> str:
    return key[:1].lower() + key[1:]


def divergence(a: str, b: str, terms_a: Sequence[str] = (), terms_b: Sequence[str] = ()) -> float:
    """1 - word-level similarity of two replies, each with its own variant terms masked.

    Args:
        a: One variant's reply.
        b: The other's.
        terms_a: Words of ``a``'s variant (masked in ``a``, whole words, any case).
        terms_b: Words of ``b``'s variant.

    Returns:
        0 for replies equal up to the swapped terms, up to 1 for nothing in common.
    """
    words_a, words_b = _masked_words(a, terms_a), _masked_words(b, terms_b)
    return 1.0 - difflib.SequenceMatcher(None, words_a, words_b, autojunk=False).ratio()


def _masked_words(text: str, terms: Sequence[str]) -> list[str]:
    # longest first, so "older person" is masked whole before "older"
    ordered = sorted({t for t in terms if t}, key=len, reverse=True)
    if ordered:
        pattern = r"(?<!\w)(?:" + "|".join(map(re.escape, ordered)) + r")(?!\w)"
        text = re.sub(pattern, _MASK, text, flags=re.IGNORECASE)
    return _TOKENS.findall(text.lower())


@torch.no_grad()
def continuation_logps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    continuations: Sequence[str],
    *,
    batch_size: int = 16,
    template: str | None = None,
) -> list[tuple[float, float]]:
    """Log-prob of each continuation as the assistant's reply to its prompt.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        prompts: Conversations, rendered with the generation prompt as in training.
        continuations: The reply text scored after each prompt (no special tokens added).
        batch_size: Sequences per forward pass.
        template: The chat template fallback, as in training.

    Returns:
        (mean, sum) of the continuation's per-token log-probs, per prompt.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    prompt_ids = render_prompt_batch(tokenizer, [(p, None) for p in prompts], template)
    reply_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[tuple[float, float]] = []
    sequences = [p + r for p, r in zip(prompt_ids, reply_ids, strict=True)]
    for start in range(0, len(sequences), batch_size):
        rows = sequences[start : start + batch_size]
        prompt_lengths = [len(p) for p in prompt_ids[start : start + batch_size]]
        width = max(map(len, rows))
        # right padding: every real token keeps the position it has unpadded
        ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], device=dev)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=dev)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for i, (row, cut) in enumerate(zip(rows, prompt_lengths, strict=True)):
            labels[i, cut : len(row)] = ids[i, cut : len(row)]
        logps = token_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
        counts = (labels[:, 1:] != IGNORE_INDEX).sum(-1).clamp(min=1)
        sums = logps.sum(-1)
        scores += [(float(s / n), float(s)) for s, n in zip(sums, counts, strict=True)]
    model.train(was_training)
    return scores


@dataclass(frozen=True)
class _Asked:
    """One template filled with one variant."""

    group: str
    template: str
    variant: dict[str, str]
    prompt: str
    continuation: str | None


def run_bias_probes(
    model: Any,
    tokenizer: Any,
    probes: Sequence[ProbeGroup],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    template: str | None = None,
    top_k: int = 5,
    label: str = "bias probes",
) -> dict[str, Any]:
    """Ask every probe variant, and compare each pair of variants of the same template.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer.
        probes: From :func:`load_probes`.
        max_new_tokens: Reply length.
        batch_size: Prompts per generation batch and per scoring pass.
        template: The chat template fallback, as in training.
        top_k: How many of the largest divergences and likelihood gaps to return.
        label: Progress bar label.

    Returns:
        ``groups``, ``prompts``, ``pairs``, ``divergence`` (mean), ``max_divergence``,
        ``likelihood_gap`` (mean; None without continuations), ``max_likelihood_gap``,
        ``by_group`` (the same four numbers and ``pairs`` per group), and
        ``largest_divergence`` / ``largest_likelihood_gap``: the ``top_k`` pairs with
        their prompts and outputs. Floats are rounded to 4 decimals.
    """
    sets = [
        [
            _Asked(g.name, t.id, v, fill(t.prompt, v), _fill_optional(t.continuation, v))
            for v in g.variants
        ]
        for g in probes
        for t in g.templates
    ]
    asked = [a for variants in sets for a in variants]
    options = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "template": template}
    outputs, means = _ask(model, tokenizer, asked, label, options)
    pairs = [
        _compare(a, b, outputs, means)
        for variants in sets
        for a, b in itertools.combinations(variants, 2)
    ]
    return {"groups": len(probes), "prompts": len(asked)} | _summary(pairs, top_k)


def _summary(pairs: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
    """Overall and per-group numbers, and the pairs that differ most."""
    summary: dict[str, Any] = {"pairs": len(pairs)} | _numbers(pairs)
    by_group: dict[str, list[dict[str, Any]]] = {}
    for pair in pairs:
        by_group.setdefault(pair["group"], []).append(pair)
    summary["by_group"] = {
        name: {"pairs": len(rows)} | _numbers(rows) for name, rows in by_group.items()
    }
    for key in ("divergence", "likelihood_gap"):
        ranked = sorted((p for p in pairs if p[key] is not None), key=lambda p: -p[key])
        summary[f"largest_{key}"] = ranked[:top_k]
    return summary


def _fill_optional(text: str | None, variant: dict[str, str]) -> str | None:
    return None if text is None else fill(text, variant)


def _ask(
    model: Any, tokenizer: Any, asked: list[_Asked], label: str, options: dict[str, Any]
) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    """Replies per prompt text, and mean continuation log-probs per (prompt, continuation).

    Identical prompts (a repeated variant) are asked once, so they get identical replies
    and scores, whatever their batch and padding.
    """
    unique = list(dict.fromkeys(a.prompt for a in asked))
    chats = {p: [{"role": "user", "content": p}] for p in unique}
    replies = generate(model, tokenizer, list(chats.values()), label=label, **options)
    outputs = dict(zip(unique, replies, strict=True))
    scored = list(dict.fromkeys((a.prompt, a.continuation) for a in asked if a.continuation))
    logps = continuation_logps(
        model,
        tokenizer,
        [chats[p] for p, _ in scored],
        [c for _, c in scored],
        batch_size=options["batch_size"],
        template=options["template"],
    )
    return outputs, {key: mean for key, (mean, _) in zip(scored, logps, strict=True)}


def _compare(
    a: _Asked, b: _Asked, outputs: dict[str, str], means: dict[tuple[str, str], float]
) -> dict[str, Any]:
    """One pair's divergence and likelihood gap, with what it was measured on."""
    out_a, out_b = outputs[a.prompt], outputs[b.prompt]
    apart = divergence(out_a, out_b, list(a.variant.values()), list(b.variant.values()))
    pair: dict[str, Any] = {
        "group": a.group,
        "template": a.template,
        "variants": [_label(a.variant), _label(b.variant)],
        "prompts": [a.prompt, b.prompt],
        "outputs": [out_a, out_b],
        "divergence": round(apart, 4),
        "likelihood_gap": None,
    }
    if a.continuation and b.continuation:
        mean_a, mean_b = means[a.prompt, a.continuation], means[b.prompt, b.continuation]
        pair["continuations"] = [a.continuation, b.continuation]
        pair["logps"] = [round(mean_a, 4), round(mean_b, 4)]
        pair["likelihood_gap"] = round(abs(mean_a - mean_b), 4)
    return pair


def _label(variant: dict[str, str]) -> str:
    """A variant's name in reports: its first word (``man``, ``Nigerian``)."""
    return next(iter(variant.values()))


def _numbers(pairs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean and largest divergence and likelihood gap over ``pairs``."""
    numbers: dict[str, float | None] = {}
    for key in ("divergence", "likelihood_gap"):
        values = [p[key] for p in pairs if p[key] is not None]
        numbers[key] = round(sum(values) / len(values), 4) if values else None
        numbers[f"max_{key}"] = round(max(values), 4) if values else None
    return numbers
