"""Exact and near-duplicate removal: decisions, clusters, books, and quality on a planted corpus."""

from __future__ import annotations

import string

import numpy as np
import pytest
from benchmarks.dedup import Settings, planted_duplicates, precision_recall
from benchmarks.synthetic_corpus import Corpus, generate
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.dedup import (
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    DuplicateCluster,
    ExactDedup,
    NearDedup,
    largest_clusters,
    normalize_exact,
)
from tuneforge.data.minhash import LshIndex, MinHasher, band_keys, lsh_params, shingles
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats, run_steps


def text_sample(i: int | str, text: str) -> Sample:
    return Sample(id=str(i), kind="text", source=f"f:{i}", text=text)


def prose(seed: int, n_words: int = 120) -> str:
    """Random words from a 5000-word vocabulary: unrelated texts share almost no shingle."""
    rng = np.random.default_rng(seed)
    return " ".join(f"w{i}" for i in rng.integers(0, 5000, n_words))


def edited(text: str, every: int) -> str:
    """Replace every ``every``-th word."""
    words = text.split()
    return " ".join("zzz" if i % every == 0 else w for i, w in enumerate(words))


def mutated(text: str, share: float, seed: int) -> str:
    """Replace a random ``share`` of the words."""
    rng = np.random.default_rng(seed)
    words = text.split()
    return " ".join(f"x{seed}" if rng.random() < share else w for w in words)


def run(step: ExactDedup | NearDedup, samples: list[Sample]) -> tuple[list[str], StepStats]:
    stats = StepStats(step.name)
    kept = [s.id for s in step(samples, stats)]
    assert stats.balanced()
    return kept, stats


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate(2000, seed=0)


@pytest.fixture(scope="module")
def corpus_samples(corpus: Corpus) -> list[Sample]:
    return [text_sample(d.id, d.text) for d in corpus.documents]


# --- exact -----------------------------------------------------------------------------------


def test_normalize_exact() -> None:
    assert normalize_exact("  Stra\u00dfe\tCAF\u0065\u0301 \n ok. ") == "strasse café ok."


def test_exact_dedup_drops_normalised_copies_and_keeps_the_first() -> None:
    texts = [
        "The Café opens at nine.",
        "the cafe\u0301   opens at NINE.",  # decomposed é, case, spacing
        "The café opens at nine!",  # punctuation differs: not an exact duplicate
        "THE CAFÉ OPENS AT NINE.",
        "",
        "",
    ]
    step = ExactDedup()
    kept, stats = run(step, [text_sample(i, t) for i, t in enumerate(texts)])
    assert kept == ["0", "2", "4"]
    assert stats.to_json()["dropped"] == {EXACT_DUPLICATE: 3}
    clusters = {c.representative: c.to_json() for c in step.clusters.values()}
    assert clusters["0"]["duplicates"] == ["1", "3"]
    assert clusters["0"]["examples"][0] == {
        "id": "1",
        "similarity": 1.0,
        "excerpt": "the cafe\u0301 opens at NINE.",
    }
    assert clusters["4"]["size"] == 2


def test_exact_dedup_compares_whole_conversations() -> None:
    def chat(i: int, user: str, assistant: str) -> Sample:
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return Sample(id=str(i), kind="chat", source="f", messages=messages)

    samples = [chat(0, "Hi", "Hello!"), chat(1, "hi ", "hello!"), chat(2, "Hi", "Bye")]
    assert run(ExactDedup(), samples)[0] == ["0", "2"]


def test_exact_dedup_drops_exactly_the_planted_exact_copies(
    corpus: Corpus, corpus_samples: list[Sample]
) -> None:
    kept, _ = run(ExactDedup(), corpus_samples)
    exact = {d.id for d in corpus.documents if d.duplicate_kind == "exact"}
    assert len(exact) == 90
    assert {s.id for s in corpus_samples} - set(kept) == exact


# --- hashing and bands -------------------------------------------------------------------------


def test_shingles() -> None:
    assert shingles("The cat, the HAT!  sat.", 2) == ["the cat", "cat the", "the hat", "hat sat"]
    assert shingles("Two words", 5) == ["two words"]
    assert shingles("... !!", 5) == []
    assert shingles("Ab, c", 2, "char") == ["ab", "b ", " c"]


@pytest.mark.parametrize(
    ("threshold", "num_perm", "fp_weight", "expected"),
    # Pinned from datasketch 2.0's _optimal_param, which integrates with scipy.
    [
        (0.8, 128, 0.5, (9, 13)),
        (0.8, 128, 0.2, (12, 10)),
        (0.5, 128, 0.5, (25, 5)),
        (0.9, 256, 0.5, (9, 28)),
        (0.7, 64, 0.2, (10, 6)),
        (0.85, 256, 0.2, (16, 16)),
    ],
)
def test_lsh_params_match_datasketch(
    threshold: float, num_perm: int, fp_weight: float, expected: tuple[int, int]
) -> None:
    assert lsh_params(threshold, num_perm, fp_weight) == expected


def test_signatures_are_fixed_across_machines_and_runs() -> None:
    sigs = MinHasher().signatures(["Hello, world!", "", "hello world"])
    assert sigs.dtype == np.uint32 and sigs.shape == (3, 128)
    assert sigs[0, :4].tolist() == [682173472, 4280090814, 2784598672, 3002586389]
    assert (sigs[1] == 0xFFFFFFFF).all()
    assert (sigs[0] == sigs[2]).all()
    chars = MinHasher(shingle="char").signatures(["Hello, world!"])
    assert chars[0, :4].tolist() == [620842785, 180315810, 422717644, 875938849]


def test_signatures_do_not_depend_on_the_batch() -> None:
    long_text = prose(7, 30_000)  # spans several blocks of shingles
    texts = ["a b c d e f", long_text, "", "x y", long_text[:80], "Hello, world!"]
    hasher = MinHasher()
    one_by_one = np.stack([hasher.signatures([t])[0] for t in texts])
    assert (hasher.signatures(texts) == one_by_one).all()
    char_hasher = MinHasher(shingle="char")
    one_by_one = np.stack([char_hasher.signatures([t])[0] for t in texts])
    assert (char_hasher.signatures(texts) == one_by_one).all()


@pytest.mark.parametrize("kind", ["word", "char"])
def test_estimated_jaccard_is_unbiased(kind: str) -> None:
    hasher = MinHasher(shingle=kind, shingle_size=3)  # type: ignore[arg-type]
    errors, variances = [], []
    for seed in range(60):
        a = prose(seed, 200)
        b = edited(a, 2 + seed % 20)
        exact_a, exact_b = set(shingles(a, 3, kind)), set(shingles(b, 3, kind))  # type: ignore[arg-type]
        jaccard = len(exact_a & exact_b) / len(exact_a | exact_b)
        sigs = hasher.signatures([a, b])
        errors.append(np.mean(sigs[0] == sigs[1]) - jaccard)
        variances.append(jaccard * (1 - jaccard) / 128)
    errors = np.array(errors)
    # The MinHash estimator's standard error is sqrt(J(1-J)/k); check the mean and the spread.
    assert abs(errors.mean()) < 3 * np.sqrt(np.mean(variances) / len(errors))
    assert np.sqrt(np.mean(errors**2)) < 1.3 * np.sqrt(np.mean(variances))


def naive_decisions(sigs: np.ndarray, counts: np.ndarray, bands: int, rows: int, needed: int):
    """Reference: each text against every kept text sharing a band, one at a time."""
    keys = band_keys(sigs, bands, rows)
    kept: list[int] = []
    out = []
    for i in range(len(sigs)):
        shared = [k for k in kept if (keys[k] == keys[i]).any()] if counts[i] else []
        agree = [int((sigs[k] == sigs[i]).sum()) for k in shared]
        best = max(range(len(shared)), key=lambda j: (agree[j], -j), default=None)
        if best is not None and agree[best] >= needed:
            out.append((kept.index(shared[best]), agree[best]))
        else:
            out.append((-1, 0))
            if counts[i]:
                kept.append(i)
    return out


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_lsh_index_matches_one_at_a_time_reference(batch: int) -> None:
    bases = [prose(seed, 60) for seed in range(40)]
    # Copies with 0-12% of words replaced: Jaccard from 1 down to ~0.3 around the 0.5 threshold.
    texts = [mutated(bases[i % 40], (i // 40) * 0.03, i) for i in range(200)] + ["", "..."] * 3
    sigs, counts = MinHasher().signatures_and_counts(texts)
    bands, rows = lsh_params(0.5, 128, 0.1)
    index = LshIndex(bands, rows, 128, needed=64)
    decisions = []
    for start in range(0, len(texts), batch):
        rep, agree = index.add_batch(sigs[start : start + batch], counts[start : start + batch])
        pairs = zip(rep.tolist(), agree.tolist(), strict=True)
        decisions += [(r, a if r >= 0 else 0) for r, a in pairs]
    expected = naive_decisions(sigs, counts, bands, rows, 64)
    assert decisions == expected
    assert sum(r >= 0 for r, _ in decisions) == 93


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_lsh_index_points_at_the_most_agreeing_then_earliest_kept_text(batch: int) -> None:
    x = [3, 3, 3, 3, 2, 2, 2, 2, 5, 5]
    y = [1, 1, 1, 1, 2, 2, 2, 2, 0, 0]  # 4 rows agree with x: kept
    z = [1, 1, 1, 1, 2, 2, 2, 2, 5, 5]  # 6 rows agree with x, 8 with y
    w = [1, 1, 1, 1, 2, 2, 2, 2, 7, 7]  # 4 with x (too few), 8 with y
    v = [1, 1, 3, 3, 2, 2, 2, 2, 0, 5]  # 7 with x, 7 with y: the earlier wins
    sigs = np.array([x, y, z, w, v], dtype=np.uint32)
    index = LshIndex(bands=2, rows=4, num_perm=10, needed=6)
    reps, agrees = [], []
    for start in range(0, 5, batch):
        rep, agree = index.add_batch(
            sigs[start : start + batch], np.ones(len(sigs[start : start + batch]))
        )
        reps += rep.tolist()
        agrees += agree.tolist()
    assert reps == [-1, -1, 1, 1, 0]
    assert agrees == [0, 0, 8, 8, 7]
    assert index.size == 2


# --- near --------------------------------------------------------------------------------------


def test_near_dedup_keeps_the_first_occurrence() -> None:
    a, b = prose(1), prose(2)
    near_a = edited(a, 60)  # 2 of 120 words replaced: Jaccard 0.85 on 5-word shingles
    step = NearDedup()
    assert run(step, [text_sample("a", a), text_sample("a2", near_a), text_sample("b", b)])[0] == [
        "a",
        "b",
    ]
    assert [c.to_json()["duplicates"] for c in step.clusters.values()] == [["a2"]]
    assert run(step, [text_sample("a2", near_a), text_sample("a", a)])[0] == ["a2"]
    far_a = edited(a, 8)  # 15 of 120 words: Jaccard ~0.45, kept
    assert run(step, [text_sample("a", a), text_sample("f", far_a)])[0] == ["a", "f"]


def test_near_dedup_keeps_texts_without_shingles() -> None:
    samples = [text_sample(i, t) for i, t in enumerate(["", "", "?!", "...", "word"])]
    assert run(NearDedup(), samples)[0] == ["0", "1", "2", "3", "4"]


def test_near_dedup_precision_and_recall_on_planted_corpus(
    corpus: Corpus, corpus_samples: list[Sample]
) -> None:
    step = NearDedup()
    kept, stats = run(step, corpus_samples)
    dropped = {s.id for s in corpus_samples} - set(kept)
    truth = planted_duplicates(corpus, Settings())
    precision, recall = precision_recall(dropped, truth)
    # Measured 0.964 / 0.952: 240 of 249 drops are true, of 252 true duplicates (90 exact).
    assert len(truth) == 252
    assert precision >= 0.95
    assert recall >= 0.94
    assert stats.to_json()["dropped"] == {NEAR_DUPLICATE: len(dropped)}
    # Every dropped sample sits in exactly one cluster, under a kept representative.
    members = [d for c in step.clusters.values() for d in c.duplicates]
    assert sorted(members) == sorted(dropped)
    assert {c.representative for c in step.clusters.values()} <= set(kept)
    texts = {s.id: " ".join(s.text.split()) for s in corpus_samples}
    for cluster in step.clusters.values():
        assert len(cluster.examples) == min(3, len(cluster.duplicates))
        for example in cluster.examples:
            assert example.similarity >= 0.8
            assert texts[example.id].startswith(example.excerpt) and len(example.excerpt) == 120


def test_near_dedup_with_character_shingles(corpus: Corpus) -> None:
    small = Corpus(corpus.documents[:1000])
    settings_ = Settings(shingle="char")
    samples = [text_sample(d.id, d.text) for d in small.documents]
    kept, _ = run(settings_.step(), samples)
    dropped = {s.id for s in samples} - set(kept)
    precision, recall = precision_recall(dropped, planted_duplicates(small, settings_))
    # Measured 0.988 / 0.938 on 5-character shingles: 167 of 169 drops true, of 178.
    assert precision >= 0.97
    assert recall >= 0.92


def test_near_dedup_is_deterministic_and_batch_invariant(corpus_samples: list[Sample]) -> None:
    first = run(NearDedup(), corpus_samples[:600])[0]
    assert run(NearDedup(), corpus_samples[:600])[0] == first
    assert run(NearDedup(batch_size=37), corpus_samples[:600])[0] == first
    assert len(first) < 600


def test_books_balance_through_run_steps(corpus: Corpus, corpus_samples: list[Sample]) -> None:
    kept, stats = run_steps(corpus_samples, [ExactDedup(), NearDedup()])
    exact, near = (s.to_json() for s in stats)
    assert exact == {
        "name": "exact_dedup",
        "seen": 2000,
        "kept": 1910,
        "changed": 0,
        "dropped": {EXACT_DUPLICATE: 90},
    }
    assert near == {
        "name": "near_dedup",
        "seen": 1910,
        "kept": 1751,
        "changed": 0,
        "dropped": {NEAR_DUPLICATE: 159},
    }
    assert len(kept) == 1751


def test_largest_clusters_orders_by_size_then_discovery() -> None:
    clusters = [DuplicateCluster("a", ["1"]), DuplicateCluster("b", ["2", "3"])]
    clusters.append(DuplicateCluster("c", ["4", "5"]))
    assert [c.representative for c in largest_clusters(clusters, 2)] == ["b", "c"]
    assert [c.size for c in largest_clusters(clusters)] == [3, 3, 2]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        NearDedup(threshold=0)
    with pytest.raises(ValueError, match="batch_size"):
        NearDedup(batch_size=0)
    with pytest.raises(ValueError, match="shingle"):
        NearDedup(shingle="sentence")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

NEAR = NearDedup()
EXACT = ExactDedup()
texts = st.text(min_size=1, max_size=300).filter(lambda t: shingles(t))


@settings(max_examples=60, deadline=None)
@given(texts)
def test_a_text_and_its_copy_are_always_caught(text: str) -> None:
    samples = [text_sample(0, text), text_sample(1, text)]
    assert run(NEAR, samples)[0] == ["0"]
    assert run(EXACT, samples)[0] == ["0"]


def words_from(alphabet: str) -> st.SearchStrategy[str]:
    word = st.text(alphabet=alphabet, min_size=1, max_size=8)
    return st.lists(word, min_size=1, max_size=60).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(words_from(string.ascii_lowercase[:13]), words_from(string.ascii_lowercase[13:]))
def test_unrelated_texts_are_never_dropped(first: str, second: str) -> None:
    samples = [text_sample(0, first), text_sample(1, second)]
    assert run(NEAR, samples)[0] == ["0", "1"]
