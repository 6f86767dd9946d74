"""The Spark executor equals the local one: kept samples, order, books, clusters, PII counts.

Local-mode Spark (``local[2]``) on a few hundred samples per case; one session for the module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from benchmarks.synthetic_corpus import generate

from tuneforge.config.schema import DataConfig
from tuneforge.data.configure import build_steps
from tuneforge.data.dedup import ExactDedup, NearDedup
from tuneforge.data.pii import PiiStep
from tuneforge.data.readers import read_dataset
from tuneforge.data.sample import Sample
from tuneforge.data.steps import Step, run_steps

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None,
        reason="pyspark not installed (scripts/install-spark.sh)",
    ),
    pytest.mark.skipif(
        shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
        reason="java not found (scripts/install-spark.sh)",
    ),
]

MASTER = "local[2]"


@pytest.fixture(scope="module")
def spark():
    from tuneforge.data.spark import spark_session

    session = spark_session(MASTER)
    yield session
    session.stop()


def chat(sample_id: str, text: str) -> Sample:
    """A text wrapped as a one-turn conversation, so the sft chain keeps it."""
    messages = [
        {"role": "user", "content": "Write a passage."},
        {"role": "assistant", "content": text},
    ]
    return Sample(id=sample_id, kind="chat", source=f"synthetic:{sample_id}", messages=messages)


def clusters(steps: list[Step]) -> list[list[dict]]:
    return [
        [c.to_json() for c in s.clusters.values()]
        for s in steps
        if isinstance(s, ExactDedup | NearDedup)
    ]


def pii_counts(steps: list[Step]) -> list[dict[str, int]]:
    return [dict(s.counts_by_type) for s in steps if isinstance(s, PiiStep)]


def assert_same(
    samples: list[Sample], make_steps: Callable[[], list[Step]], partitions: int = 3
) -> tuple[list[Step], list]:
    """Run both executors on fresh steps and compare everything; return the local results."""
    from tuneforge.data.spark import run_steps_spark

    local_steps, spark_steps = make_steps(), make_steps()
    kept, stats = run_steps(samples, local_steps)
    spark_kept, spark_stats = run_steps_spark(samples, spark_steps, MASTER, partitions)
    assert [s.id for s in spark_kept] == [s.id for s in kept]
    assert spark_kept == kept  # texts, redactions, meta: every field
    assert [s.to_json() for s in spark_stats] == [s.to_json() for s in stats]
    assert clusters(spark_steps) == clusters(local_steps)
    assert pii_counts(spark_steps) == pii_counts(local_steps)
    return local_steps, stats


def test_alpaca_fixture_sft_chain(spark, public_fixtures: Path) -> None:
    samples = read_dataset(public_fixtures / "alpaca_en_demo.json", limit=400).samples
    _, stats = assert_same(samples, lambda: build_steps(DataConfig(path="x")))
    assert stats[0].seen == 400
    assert any(s.dropped for s in stats)  # the fixture holds exact duplicates


def test_c4_fixture_as_chat(spark, public_fixtures: Path) -> None:
    texts = read_dataset(public_fixtures / "c4_demo.jsonl", limit=200).samples
    samples = [chat(s.id, s.text or "") for s in texts]
    # A planted exact copy (case and spacing changed) and a near copy (one word edited).
    samples.append(chat("copy", "  " + (texts[3].text or "").upper()))
    words = (texts[7].text or "").split()
    samples.append(chat("near", " ".join(["edited", *words[1:]])))
    config = DataConfig(path="x", pii={"mode": "drop"})
    _, stats = assert_same(samples, lambda: build_steps(config), partitions=2)
    dropped = {reason for s in stats for reason in s.dropped}
    assert {"exact_duplicate", "near_duplicate"} <= dropped


def test_synthetic_corpus_with_planted_duplicates_and_pii(spark) -> None:
    corpus = generate(300, seed=3)
    samples = [chat(d.id, d.text) for d in corpus.documents]

    def make_steps() -> list[Step]:
        steps = build_steps(DataConfig(path="x"))
        for step in steps:
            if isinstance(step, NearDedup):
                step.batch_size = 64  # the decision crosses batches, as on a large corpus
        return steps

    steps, stats = assert_same(samples, make_steps, partitions=4)
    by_name = {s.name: s for s in stats}
    assert by_name["exact_dedup"].dropped["exact_duplicate"] > 0
    assert by_name["near_dedup"].dropped["near_duplicate"] > 0
    assert sum(pii_counts(steps)[0].values()) > 0
    assert all(c for c in clusters(steps))


def test_data_stage_with_the_spark_engine_writes_what_the_local_one_does(
    spark, chat_tokenizer, tmp_path: Path
) -> None:
    from tuneforge.config.schema import DataConfig
    from tuneforge.data.prepare import prepare_data

    data_file = Path(__file__).resolve().parents[2] / "examples" / "data" / "support_tickets.jsonl"
    outputs, listed = {}, {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        out.mkdir()
        config = DataConfig(path=str(data_file), max_samples=120, engine=engine)
        books = prepare_data(config, chat_tokenizer, seed=1, out_dir=out)
        listed[engine] = books["outputs"].pop("dropped.jsonl", None)
        files = ("samples/train.jsonl", "samples/test.jsonl", "quarantine.jsonl")
        outputs[engine] = (books, [(out / f).read_text() for f in files])
    assert outputs["spark"] == outputs["local"]
    assert outputs["local"][0]["read"] == 120
    # Spark counts the dropped samples on its workers; only the local engine lists them.
    assert listed["local"] is not None and listed["spark"] is None
    assert "not listed" in (tmp_path / "spark" / "report.md").read_text()
