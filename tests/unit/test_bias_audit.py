"""The data bias audit: exact counts, flags above (and only above) the thresholds, report."""

from __future__ import annotations

import json
import random
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tuneforge.data.bias_audit import (
    ALL_SOURCES,
    NOTE,
    BiasAudit,
    Thresholds,
    audit_samples,
    load_lexicon,
    markdown,
    sample_texts,
    source_name,
    tables,
)
from tuneforge.data.sample import Sample
from tuneforge.errors import DataError


def text(source: str, body: str, n: int = 0) -> Sample:
    return Sample(id=f"{source}-{n}", kind="text", source=f"{source}:{n}", text=body)


def chat(name: str, user: str, reply: str, n: int = 0) -> Sample:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return Sample(
        id=f"{name}-{n}", kind="chat", source=f"raw/{name}.jsonl:{n}", messages=messages,
        meta={"source_name": name},
    )  # fmt: skip


def corpus() -> list[Sample]:
    """tickets.jsonl over-represents men; the forum pairs one religion with negative words."""
    samples = [text("tickets.jsonl", "He is a great engineer.", i) for i in range(25)]
    samples += [text("tickets.jsonl", "She asked about the invoice.", 25 + i) for i in range(5)]
    # too few to flag: two sentiment words, and religion in two samples
    samples += [text("tickets.jsonl", "The Hindu staff were rude.", 30 + i) for i in range(2)]
    samples.append(text("tickets.jsonl", "The printer jams on page two.", 32))
    samples += [
        chat(
            "forum",
            "Our Muslim neighbours were rude and dangerous.",
            "Christian neighbours are friendly and helpful.",
            i,
        )
        for i in range(12)
    ]
    return samples


def group(result: dict, source: str, dimension: str, name: str) -> dict:
    return result["sources"][source]["dimensions"][dimension][name]


def test_counts_per_source_are_exact() -> None:
    result = audit_samples(corpus())
    assert list(result["sources"]) == ["forum", "tickets.jsonl"]
    assert result["sources"]["tickets.jsonl"]["samples"] == 33
    assert result["sources"]["forum"]["samples"] == 12
    assert group(result, "tickets.jsonl", "gender", "male") == {
        "samples": 25, "samples_pct": 75.76, "mentions": 25,
        "positive": 25, "negative": 0, "negative_rate": 0.0,
    }  # fmt: skip
    assert group(result, "tickets.jsonl", "gender", "female") == {
        "samples": 5, "samples_pct": 15.15, "mentions": 5,
        "positive": 0, "negative": 0, "negative_rate": None,
    }  # fmt: skip
    assert group(result, "tickets.jsonl", "religion", "hindu")["negative"] == 2
    assert group(result, "forum", "religion", "muslim") == {
        "samples": 12, "samples_pct": 100.0, "mentions": 12,
        "positive": 0, "negative": 24, "negative_rate": 1.0,
    }  # fmt: skip
    assert group(result, "forum", "religion", "christian")["positive"] == 24
    assert group(result, "forum", "gender", "male")["samples"] == 0
    assert result["all"]["samples"] == 45
    assert result["all"]["dimensions"]["religion"]["muslim"]["negative"] == 24
    assert result["all"]["dimensions"]["gender"]["male"]["samples"] == 25


def test_flags_name_the_imbalances_with_numbers() -> None:
    assert audit_samples(corpus())["flags"] == [
        "source forum: religion: negative co-occurrence rate for 'muslim' 1.00 (24 of 24) vs "
        "0.00 for the dimension's other groups (0 of 24; gap > 0.25)",
        "source tickets.jsonl: gender: 'female' mentioned in 15.2% of samples vs 'male' in "
        "75.8% (ratio 5.0 > 2)",
        f"{ALL_SOURCES}: gender: 'female' mentioned in 11.1% of samples vs 'male' in 55.6% "
        "(ratio 5.0 > 2)",
        f"{ALL_SOURCES}: religion: negative co-occurrence rate for 'muslim' 1.00 (24 of 24) vs "
        "0.08 for the dimension's other groups (2 of 26; gap > 0.25)",
    ]


def test_small_counts_never_flag() -> None:
    # a 19:1 gender split and 9 negative words stay under MIN_MENTIONS and MIN_COOCCUR
    samples = [text("a.jsonl", "He was lazy.", i) for i in range(9)]
    samples += [text("a.jsonl", "He called.", 9 + i) for i in range(10)]
    samples += [text("a.jsonl", "She was kind, helpful and brilliant, a great help.", 19)]
    assert audit_samples(samples)["flags"] == []
    # one more male sample and the representation check has enough to speak
    flags = audit_samples([*samples, text("a.jsonl", "He called.", 20)])["flags"]
    assert flags == [
        "source a.jsonl: gender: 'female' mentioned in 4.8% of samples vs 'male' in 95.2% "
        "(ratio 20.0 > 2)"
    ]


def test_an_absent_group_flags_once_the_other_is_common() -> None:
    samples = [text("b.jsonl", "Ask him.", i) for i in range(20)]
    assert audit_samples(samples)["flags"] == [
        "source b.jsonl: gender: 'female' mentioned in 0.0% of samples vs 'male' in 100.0% "
        "(not mentioned)"
    ]


def test_thresholds_are_settings() -> None:
    loose = Thresholds(representation_ratio=10.0, min_mentions=5, min_cooccur=1)
    audit = BiasAudit(thresholds=loose)
    for sample in corpus():
        audit.add(sample)
    result = audit.result()
    assert result["thresholds"]["representation_ratio"] == 10.0
    assert not any("gender" in flag for flag in result["flags"])  # ratio 5 < 10
    # with one sentiment word enough, the two rude Hindu samples now count
    assert f"{ALL_SOURCES}: religion: negative co-occurrence rate for 'hindu' 1.00 (2 of 2)" in (
        "\n".join(result["flags"])
    )


def test_a_sample_without_terms_changes_only_the_totals() -> None:
    before = audit_samples(corpus())
    after = audit_samples([*corpus(), text("tickets.jsonl", "Restart the router twice.", 99)])
    assert after["sources"]["tickets.jsonl"]["samples"] == 34
    assert after["all"]["samples"] == 46
    for scope in ("tickets.jsonl", "forum"):
        for dimension, named in before["sources"][scope]["dimensions"].items():
            for name, row in named.items():
                new = after["sources"][scope]["dimensions"][dimension][name]
                assert {k: v for k, v in new.items() if k != "samples_pct"} == {
                    k: v for k, v in row.items() if k != "samples_pct"
                }


def test_cooccurrence_is_within_a_sentence() -> None:
    result = audit_samples(
        [
            text("c", "She is brilliant. He is lazy!\nThe women's team; his dull talk"),
            chat("d", "My mother is great", "and awful."),  # turns are separate sentences
        ]
    )
    assert group(result, "c", "gender", "female") == {
        "samples": 1, "samples_pct": 100.0, "mentions": 2,
        "positive": 1, "negative": 0, "negative_rate": 0.0,
    }  # fmt: skip
    assert group(result, "c", "gender", "male")["negative"] == 2
    assert group(result, "d", "gender", "female")["positive"] == 1
    assert group(result, "d", "gender", "female")["negative"] == 0


def test_words_are_whole_lowercase_and_possessive_free() -> None:
    result = audit_samples(
        [
            text("e", "HE\u2019S here. The man\u2019s plan. Muslim-majority town. Shepherd."),
            text("e", "Hermes and Mankind are not gendered words.", 1),
        ]
    )
    assert group(result, "e", "gender", "male")["mentions"] == 2
    assert group(result, "e", "gender", "male")["samples"] == 1
    assert group(result, "e", "religion", "muslim")["mentions"] == 1
    assert group(result, "e", "gender", "female")["mentions"] == 0


def test_result_is_deterministic_and_json() -> None:
    samples = corpus()
    first = json.dumps(audit_samples(samples), sort_keys=False)
    random.Random(0).shuffle(samples)
    assert json.dumps(audit_samples(samples), sort_keys=False) == first
    assert json.loads(first)["sources"]["forum"]["dimensions"]["age"]["young"]["samples"] == 0


def test_markdown_has_the_note_flags_and_a_table_per_source() -> None:
    text_md = markdown(audit_samples(corpus()))
    assert text_md.startswith(NOTE)
    assert "### Flags\n\n- source forum: religion: negative" in text_md
    assert "### All sources (45 samples)" in text_md
    assert "### Source tickets.jsonl (33 samples)" in text_md
    assert "### Source forum (12 samples)" in text_md
    assert "| dimension | group | samples % | mentions | + | \u2212 | negative rate |" in text_md
    assert "| gender | male | 75.8 | 25 | 25 | 0 | 0.00 |" in text_md
    assert "| gender | female | 15.2 | 5 | 0 | 0 | - |" in text_md
    assert "| religion | muslim | 100.0 | 12 | 0 | 24 | 1.00 |" in text_md
    assert "| age |" not in text_md  # groups no source mentions are left out


def test_markdown_without_flags_or_terms_says_so() -> None:
    text_md = markdown(audit_samples([text("f.jsonl", "Restart the router.")]))
    assert "### Flags\n\nNone: no representation ratio above 2" in text_md
    assert "### Source f.jsonl (1 samples)\n\nNo demographic terms found." in text_md
    assert "All sources" not in text_md


def test_tables_fit_the_data_report() -> None:
    titled = tables(audit_samples(corpus()))
    assert [title for title, _ in titled] == [
        "Bias audit: flags",
        "Bias audit: all sources (45 samples)",
        "Bias audit: source forum (12 samples)",
        "Bias audit: source tickets.jsonl (33 samples)",
    ]
    header, rows = titled[3][1]
    assert header[:2] == ["dimension", "group"]
    assert ["gender", "male", "75.8", 25, 25, 0, "0.00"] in rows


def test_source_names_and_texts() -> None:
    assert source_name(text("tickets.jsonl", "x", 12)) == "tickets.jsonl"
    assert source_name(Sample(id="1", kind="text", source=r"C:\data\a.jsonl:3")) == (
        r"C:\data\a.jsonl"
    )
    assert source_name(Sample(id="1", kind="text", source="hub/dataset")) == "hub/dataset"
    assert source_name(chat("forum", "a", "b")) == "forum"
    preference = Sample(
        id="p", kind="preference", source="p.jsonl:1",
        messages=[{"role": "user", "content": "q"}],
        chosen=[{"role": "assistant", "content": "good"}],
        rejected=[{"role": "assistant", "content": "bad"}, {"role": "assistant", "content": None}],
    )  # fmt: skip
    assert sample_texts(preference) == ["q", "good", "bad"]


def test_bundled_lists_are_modest_disjoint_and_match_the_eval_probes() -> None:
    lexicon = load_lexicon()
    assert list(lexicon.groups) == ["gender", "age", "nationality", "religion", "disability"]
    assert 100 <= len(lexicon.positive) <= 200 and 100 <= len(lexicon.negative) <= 200
    assert not lexicon.positive & lexicon.negative
    probes = yaml.safe_load(
        resources.files("tuneforge.eval.suites").joinpath("bias_probes.yaml").read_text("utf-8")
    )["groups"]
    assert set(lexicon.groups) >= set(probes)
    for dimension in ("gender", "nationality", "religion"):
        terms = set().union(*lexicon.groups[dimension].values())
        for variant in probes[dimension]["variants"]:
            assert {word.lower() for word in variant.values()} <= terms, (dimension, variant)


def test_user_lists_add_groups_and_bad_files_name_the_line(tmp_path: Path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("# mine\n[gender.nonbinary]\nnonbinary\ngenderqueer\n[age.old]\nolder\n")
    lexicon = load_lexicon([extra])
    assert lexicon.groups["gender"]["nonbinary"] == {"nonbinary", "genderqueer"}
    assert "older" in lexicon.groups["age"]["old"] and "elderly" in lexicon.groups["age"]["old"]
    bad = {
        "word\n": "line 1: word 'word' before any [dimension.group] header",
        "[gender]\n": "line 1: expected a header like [gender.female]",
        "[gender.x]\ntwo words\n": "line 2: 'two words' is not one word",
        "[gender.x]\nshe\n": "'she' is in both gender.female and gender.x",
        "[gender.x]\nlazy\n": "'lazy' (gender.x) is also a sentiment word",
    }
    for body, message in bad.items():
        extra.write_text(body)
        with pytest.raises(DataError, match=re.escape(message)):
            load_lexicon([extra])
    with pytest.raises(DataError, match="cannot read"):
        load_lexicon([tmp_path / "missing.txt"])
