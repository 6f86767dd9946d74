"""A job's files checked by the data layer before any training: format, turns, size.

The file is read exactly as the data stage will read it (OpenAI chat records for
``supervised``, OpenAI's DPO records for ``dpo``); every record that cannot become a
sample is named by the upload's file name and line, with the data layer's reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.readers import DatasetStream
from tuneforge.errors import DataError

SHOWN = 10  # problems listed in the job's error; the rest are counted
FORMAT = {"supervised": "openai", "dpo": "preference"}
KIND = {"supervised": "chat", "dpo": "preference"}


@dataclass
class FileCheck:
    """What reading one file found."""

    param: str
    filename: str
    examples: int = 0
    tokens: int = 0
    problems: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.examples > 0 and not self.problems

    def message(self) -> str:
        """One paragraph: the counts, then the first problems with file:line."""
        bad = sum(self.reasons.values())
        if not self.problems:
            return f"{self.filename}: no examples"
        head = f"{self.filename}: {bad} of {self.examples + bad} lines unusable"
        if not bad:
            head = f"{self.filename}: {self.examples} examples"
        shown = "; ".join(self.problems[:SHOWN])
        more = f"; and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
        return f"{head}: {shown}{more}"


def check_file(
    path: Path, filename: str, param: str, method: str, tokenizer: Any, max_tokens: int | None
) -> FileCheck:
    """Read ``path`` as the data stage will and report each unusable record.

    Args:
        path: The stored upload.
        filename: The name the user uploaded it as (errors name it, not the stored path).
        param: ``training_file`` or ``validation_file``.
        method: ``supervised`` or ``dpo``.
        tokenizer: The base model's tokenizer (to count tokens).
        max_tokens: Most tokens allowed in the file (None: no limit).
    """
    check = FileCheck(param, filename)
    stream = DatasetStream(path, FORMAT[method], keep_quarantined=True, key=param)
    stored = path.name
    try:
        for sample in stream:
            if sample.kind != KIND[method]:
                check.problems.append(
                    f"{_named(sample.source, stored, filename)}: a {sample.kind} record; "
                    f"{method} jobs need {KIND[method]} records"
                )
                check.reasons[f"{sample.kind} record"] += 1
                continue
            check.examples += 1
            check.tokens += _tokens(sample, tokenizer)
    except DataError as err:
        check.problems.append(str(err).replace(str(path), filename))
        return check
    for item in stream.quarantined:
        check.problems.append(f"{_named(item.source, stored, filename)}: {item.reason}")
        check.reasons[item.reason] += 1
    if max_tokens is not None and check.tokens > max_tokens:
        check.problems.append(
            f"{check.tokens:,} tokens, above this service's limit of {max_tokens:,} "
            "(service.limits.max_training_tokens); upload a smaller file"
        )
    return check


def _named(source: str, stored: str, filename: str) -> str:
    """``file-...jsonl:12`` as ``<uploaded name>:12``."""
    return source.replace(stored, filename, 1)


def _tokens(sample: Any, tokenizer: Any) -> int:
    texts = [m.get("content") or "" for m in sample.messages]
    texts += [m.get("content") or "" for m in (*sample.chosen, *sample.rejected)]
    text = "\n".join(t if isinstance(t, str) else str(t) for t in texts)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
