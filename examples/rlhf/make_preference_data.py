"""Generate the RLHF example's preference data ``examples/rlhf/data/routing_preferences.jsonl``.

The prompts are the quickstart's support tickets (``examples/make_quickstart_data.py``,
with their own seed so they are new tickets); the chosen reply is the correct routing
JSON and the rejected reply one of the mistakes a routing model makes: the wrong team,
the wrong priority, both, a reply that is not JSON, or JSON cut short. A reward model
trained on these pairs learns what a good routing reply is, and its score is the
reward the RL stage maximises.

Standard library only, fixed seed: running it always writes the same bytes::

    python examples/rlhf/make_preference_data.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from make_quickstart_data import PRIORITIES, TEAMS, build_records

SEED = 20261128
N_RECORDS = 600
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "routing_preferences.jsonl"
NOT_JSON = (
    "Thank you for reaching out, we will look into this.",
    "Please contact the right team.",
    "I am not sure who should handle this ticket.",
    "Routing: maybe billing or technical.",
)


def rejected_reply(rng: random.Random, team: str, priority: str) -> str:
    """A plausible wrong reply to a ticket that should go to ``team`` at ``priority``."""
    other_team = rng.choice([t for t in TEAMS if t != team])
    other_priority = rng.choice([p for p in PRIORITIES if p != priority])
    mistake = rng.choice(("team", "priority", "both", "prose", "cut"))
    if mistake == "prose":
        return rng.choice(NOT_JSON)
    if mistake == "cut":
        return json.dumps({"team": team})[:-1]
    chosen = {
        "team": other_team if mistake in ("team", "both") else team,
        "priority": other_priority if mistake in ("priority", "both") else priority,
    }
    return json.dumps(chosen)


def build_pairs(seed: int = SEED, n: int = N_RECORDS) -> list[dict[str, object]]:
    """Preference records: ``messages`` (the prompt), ``chosen`` and ``rejected`` replies."""
    rng = random.Random(seed)
    pairs = []
    for record in build_records(seed=seed, n=n):
        messages = record["messages"]
        answer = messages[-1]["content"]
        routing = json.loads(answer)
        pairs.append(
            {
                "messages": messages[:-1],
                "chosen": answer,
                "rejected": rejected_reply(rng, routing["team"], routing["priority"]),
            }
        )
    return pairs


def main(out_path: str | Path | None = None) -> int:
    """Write the pairs as JSON Lines and return how many were written."""
    path = Path(out_path) if out_path is not None else DEFAULT_OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs = build_pairs()
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(f"wrote {len(pairs)} pairs to {path}")
    return len(pairs)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
