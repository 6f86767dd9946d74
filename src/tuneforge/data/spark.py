"""The Spark executor: :func:`run_steps_spark` runs the same steps as the local one, scaled out.

The contract is :func:`tuneforge.data.steps.run_steps`'s: the same kept samples in the same
order, the same :class:`StepStats`, and the same side results (dedup ``clusters``, PII
``counts_by_type``) in the step objects the caller holds. How each kind of step runs:

* Per-sample steps (every step that is not a dedup step: filters, maps, quality, PII) run in
  ``mapPartitions`` with the very step objects the caller built (cloudpickled), one sample at a
  time; each partition returns its survivors, its books and its counters, merged on the driver.
  A step whose decision depends on other samples must not be run this way; give it a
  distributed form here, as the dedup steps have.
* :class:`ExactDedup` keeps the first occurrence per :func:`exact_digest`: ``reduceByKey`` finds
  the smallest input position per digest, every other sample is an ``exact_duplicate``.
* :class:`NearDedup` computes the MinHash signatures (the expensive part) in ``mapPartitions``
  with the step's own hasher. The keep-first LSH decision then streams the (position,
  signature) pairs to the driver in input order and decides them through the step's own
  :class:`NearDecider`, batch by batch as the local step does, so the decisions are the same by
  construction. Driver memory is the local step's: the band tables and the signature of every
  kept sample, about 0.5 KB a document at 128 permutations.

Samples travel with their input position, so the output order is the input order; the input is
parallelized from the driver, which therefore holds it once, as the local executor does. ``master``
is any Spark master URL: ``local[N]`` on one machine, ``spark://host:7077`` or ``yarn`` on a
cluster, whose executors need tuneforge installed in the same Python version.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneforge.data.dedup import (
    EXACT_DUPLICATE,
    DuplicateCluster,
    DuplicateExample,
    ExactDedup,
    NearDedup,
    exact_digest,
    excerpt,
)
from tuneforge.data.sample import Sample
from tuneforge.data.steps import Step, StepStats
from tuneforge.errors import DataError

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import SparkSession

Indexed = tuple[int, Sample]

# Small, quiet defaults for local mode; a cluster's own configuration wins where it sets these.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
    "spark.python.worker.reuse": "true",
}

_sessions: dict[str, SparkSession] = {}


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None) -> SparkSession:
    """The SparkSession for ``master``, created once and reused while it is alive.

    Spark allows one session per process, so asking for another master stops the current one.

    Raises:
        DataError: pyspark is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise DataError(
            "data.engine: spark needs pyspark and Java; run scripts/install-spark.sh"
        ) from err
    session = _sessions.get(master)
    if session is not None and session.sparkContext._jsc is not None:
        return session
    for other in list(_sessions):
        _sessions.pop(other).stop()
    if master.startswith("local"):
        # Workers must import tuneforge from the interpreter running the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName("tuneforge-data")
    for key, value in {**LOCAL_DEFAULTS, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    _sessions[master] = session
    return session


def run_steps_spark(
    samples: Iterable[Sample],
    steps: list[Step],
    master: str = "local[2]",
    partitions: int | None = None,
) -> tuple[list[Sample], list[StepStats]]:
    """Run steps in order on Spark and return the survivors and the books, as ``run_steps`` does.

    Args:
        samples: The input, in order.
        steps: The step objects; their side results (clusters, counters) are set as a local run
            would set them.
        master: Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``).
        partitions: Partitions of the input; Spark's default parallelism when None.
    """
    context = spark_session(master).sparkContext
    data = list(enumerate(samples))
    rdd = context.parallelize(data, partitions or context.defaultParallelism)
    stats: list[StepStats] = []
    size = len(data)
    persisted: list[RDD] = []
    for group in _groups(steps):
        rdd = rdd.persist()
        persisted.append(rdd)
        if isinstance(group, ExactDedup):
            record, rdd = _exact(context, rdd, group, size)
            stats.append(record)
        elif isinstance(group, NearDedup):
            record, rdd = _near(context, rdd, group)
            stats.append(record)
        else:
            records, rdd = _per_sample(rdd, group, persisted)
            stats.extend(records)
        size = stats[-1].kept
    kept = [sample for _, sample in sorted(rdd.collect(), key=lambda pair: pair[0])]
    for cached in persisted:
        cached.unpersist()
    for record in stats:
        if not record.balanced():
            raise AssertionError(f"step {record.name} does not balance: {record.to_json()}")
    return kept, stats


def _groups(steps: list[Step]) -> Iterator[Step | list[Step]]:
    """Dedup steps alone, runs of consecutive per-sample steps together."""
    run: list[Step] = []
    for step in steps:
        if isinstance(step, ExactDedup | NearDedup):
            if run:
                yield run
                run = []
            yield step
        else:
            run.append(step)
    if run:
        yield run


# --- per-sample steps --------------------------------------------------------------------------


def _counters(step: Step) -> list[str]:
    """Names of the step's Counter attributes: side results a run accumulates (PII counts)."""
    return [name for name, value in vars(step).items() if isinstance(value, Counter)]


def _run_partition(steps: list[Step], rows: Iterable[Indexed]) -> Iterator[tuple[Any, ...]]:
    """Push each sample through the steps alone; yield survivors, then the partition's books."""
    stats = [StepStats(step.name) for step in steps]
    for step in steps:  # a worker's copy: start its counters from zero, the driver adds them up
        for name in _counters(step):
            setattr(step, name, Counter())
    for index, sample in rows:
        batch = [sample]
        for step, record in zip(steps, stats, strict=True):
            batch = list(step(batch, record))
            if not batch:
                break
        yield from (("sample", index, out) for out in batch)
    side = [{name: getattr(step, name) for name in _counters(step)} for step in steps]
    yield ("books", stats, side)


def _per_sample(rdd: RDD, steps: list[Step], persisted: list[RDD]) -> tuple[list[StepStats], RDD]:
    # Cached: the books are collected first, the survivors flow on without recomputing.
    out = rdd.mapPartitions(lambda rows: _run_partition(steps, rows)).persist()
    persisted.append(out)
    stats = [StepStats(step.name) for step in steps]
    for _, partition_stats, side in out.filter(lambda row: row[0] == "books").collect():
        for total, part, step, counters in zip(stats, partition_stats, steps, side, strict=True):
            total.seen += part.seen
            total.kept += part.kept
            total.changed += part.changed
            total.dropped.update(part.dropped)
            for name, counter in counters.items():
                getattr(step, name).update(counter)
    return stats, out.filter(lambda row: row[0] == "sample").map(lambda row: (row[1], row[2]))


# --- dedup ---------------------------------------------------------------------------------------


def _drop(context: Any, rdd: RDD, dropped: set[int]) -> RDD:
    positions = context.broadcast(dropped)
    return rdd.filter(lambda pair: pair[0] not in positions.value)


def _fill_excerpts(rdd: RDD, examples: dict[int, DuplicateExample]) -> None:
    """Set the excerpts of the clusters' examples from their samples' text (few per cluster)."""
    if not examples:
        return
    wanted = set(examples)
    texts = (
        rdd.filter(lambda pair: pair[0] in wanted)
        .map(lambda pair: (pair[0], pair[1].content_key()))
        .collectAsMap()
    )
    for index, example in examples.items():
        example.excerpt = excerpt(texts[index])


def _exact(context: Any, rdd: RDD, step: ExactDedup, seen: int) -> tuple[StepStats, RDD]:
    # Every digest's members, smallest position first; only digests with duplicates come back.
    groups = (
        rdd.map(lambda pair: (exact_digest(pair[1].content_key()), [(pair[0], pair[1].id)]))
        .reduceByKey(lambda a, b: a + b, rdd.getNumPartitions())
        .filter(lambda kv: len(kv[1]) > 1)
        .collect()
    )
    duplicates = []
    for digest, members in groups:
        (_, rep_id), *rest = sorted(members)
        duplicates.extend((index, digest, sample_id, rep_id) for index, sample_id in rest)
    duplicates.sort()
    stats = StepStats(step.name, seen=seen, kept=seen - len(duplicates))
    step.clusters = {}
    examples: dict[int, DuplicateExample] = {}
    for index, digest, sample_id, rep_id in duplicates:
        stats.dropped[EXACT_DUPLICATE] += 1
        cluster = step.clusters.setdefault(digest, DuplicateCluster(rep_id))
        example = cluster.add_id(sample_id, "", 1.0, step.max_examples)
        if example is not None:
            examples[index] = example
    _fill_excerpts(rdd, examples)
    return stats, _drop(context, rdd, {index for index, *_ in duplicates})


def _signatures(step: NearDedup, rows: Iterable[Indexed]) -> Iterator[tuple[Any, ...]]:
    """Each sample's position, id, signature (bytes) and shingle count, hashed a batch at a time."""
    batch: list[Indexed] = []
    for row in rows:
        batch.append(row)
        if len(batch) == step.batch_size:
            yield from _sign(step, batch)
            batch = []
    yield from _sign(step, batch)


def _sign(step: NearDedup, batch: list[Indexed]) -> Iterator[tuple[Any, ...]]:
    if not batch:
        return
    sigs, counts = step.hasher.signatures_and_counts([s.content_key() for _, s in batch])
    for (index, sample), sig, count in zip(batch, sigs, counts.tolist(), strict=True):
        yield index, sample.id, sig.tobytes(), count


def _near(context: Any, rdd: RDD, step: NearDedup) -> tuple[StepStats, RDD]:
    signed = rdd.mapPartitions(lambda rows: _signatures(step, rows))
    stats = StepStats(step.name)
    step.clusters = {}
    decider = step.decider()
    dropped: set[int] = set()
    examples: dict[int, DuplicateExample] = {}
    last = -1
    batch: list[tuple[Any, ...]] = []

    def decide() -> None:
        sigs = np.frombuffer(b"".join(row[2] for row in batch), np.uint32)
        sigs = sigs.reshape(len(batch), step.num_perm)
        counts = np.array([row[3] for row in batch], np.int64)
        decisions = decider.decide([row[1] for row in batch], sigs, counts)
        for (index, sample_id, _, _), decision in zip(batch, decisions, strict=True):
            example = step.tally(decision, sample_id, "", stats)
            if decision.rep >= 0:
                dropped.add(index)
            if example is not None:
                examples[index] = example
        batch.clear()

    # Partitions arrive in order and keep their order, so the stream is in input order.
    for row in signed.toLocalIterator():
        if row[0] <= last:
            raise AssertionError(f"near dedup: position {row[0]} arrived after {last}")
        last = row[0]
        batch.append(row)
        if len(batch) == step.batch_size:
            decide()
    if batch:
        decide()
    _fill_excerpts(rdd, examples)
    return stats, _drop(context, rdd, dropped)
