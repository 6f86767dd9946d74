"""Steps count what they keep, change and drop, and the books balance."""

from __future__ import annotations

import dataclasses
from collections import Counter

from tuneforge.data.sample import Sample
from tuneforge.data.steps import FilterStep, MapStep, StepStats, chain_steps, run_steps


def sample(i: int, text: str) -> Sample:
    return Sample(id=str(i), kind="text", source=f"f:{i}", text=text)


def test_filter_and_map_keep_books() -> None:
    samples = [sample(i, t) for i, t in enumerate(["a", "", "  b ", "c", ""])]
    strip = MapStep(
        "strip", lambda s: (dataclasses.replace(s, text=s.text.strip()), s.text != s.text.strip())
    )
    nonempty = FilterStep("nonempty", lambda s: (bool(s.text), None if s.text else "empty"))
    kept, stats = run_steps(samples, [strip, nonempty])
    assert [s.text for s in kept] == ["a", "b", "c"]
    assert stats[0].to_json() == {
        "name": "strip",
        "seen": 5,
        "kept": 5,
        "changed": 1,
        "dropped": {},
    }
    assert stats[1].to_json() == {
        "name": "nonempty",
        "seen": 5,
        "kept": 3,
        "changed": 0,
        "dropped": {"empty": 2},
    }
    assert all(s.balanced() for s in stats)


def test_chain_steps_hands_every_dropped_sample_to_on_drop() -> None:
    samples = [sample(i, t) for i, t in enumerate(["a", "", "b", ""])]
    nonempty = FilterStep("nonempty", lambda s: (bool(s.text), None if s.text else "empty"))
    seen: list[tuple[str, str, str]] = []
    stream, stats = chain_steps(samples, [nonempty], lambda n, s, r: seen.append((n, s.id, r)))
    assert [s.id for s in stream] == ["0", "2"]
    assert seen == [("nonempty", "1", "empty"), ("nonempty", "3", "empty")]
    assert stats[0] == StepStats("nonempty", seen=4, kept=2, dropped=Counter(empty=2))
    assert "on_drop" not in repr(stats[0])
