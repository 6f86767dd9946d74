"""The one sample type every reader yields and every step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["chat", "preference", "unpaired", "text"]
Message = dict[str, Any]
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Sample:
    """One training example, whatever format it was read from.

    Attributes:
        id: Stable identifier (source file and line unless the record had one).
        kind: chat (messages), preference (prompt/chosen/rejected), unpaired
            (messages + label) or text.
        source: ``file:line`` the record came from (``file:index`` for formats
            without lines: JSON arrays, Parquet, ``datasets`` directories).
        messages: OpenAI-schema messages for chat and unpaired samples; the
            prompt (every turn before the compared replies) for preference samples.
        tools: OpenAI tool definitions (``{"type": "function", "function": ...}``), if any.
        text: Raw text for the text kind.
        label: Whether the completion is desirable, for unpaired samples.
        chosen: The preferred reply (assistant messages) of a preference sample.
        rejected: The dispreferred reply (assistant messages) of a preference sample.
        meta: Anything else the record carried that steps may use.
    """

    id: str
    kind: Kind
    source: str
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    text: str | None = None
    label: bool | None = None
    chosen: list[Message] = field(default_factory=list)
    rejected: list[Message] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> list[Message]:
        """The turns before the compared replies (preference) or the whole conversation."""
        return self.messages

    def content_key(self) -> str:
        """Text that identifies the conversation (for splitting and exact dedup)."""
        if self.kind == "text":
            return self.text or ""
        key = "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in self.messages)
        if self.kind == "preference":
            # Two pairs on one prompt are different samples; only both replies identify one.
            for name, reply in (("chosen", self.chosen), ("rejected", self.rejected)):
                key += f"\n{name}: " + "\n".join(str(m.get("content") or "") for m in reply)
        return key

    def prompt_key(self) -> str:
        """The non-assistant text; variants of one prompt share a split group."""
        if self.kind == "text":
            return self.text or ""
        return "\n".join(
            str(m.get("content") or "") for m in self.messages if m["role"] != "assistant"
        )
