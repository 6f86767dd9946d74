"""Mixtures: several sources sampled by weights or temperature, with caps, into one training set."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.config import load_config
from tuneforge.config.mix_schema import MixConfig, SourceConfig
from tuneforge.config.schema import DataConfig
from tuneforge.data.mixture import mix_targets, plan_mix, target_shares
from tuneforge.data.prepare import prepare_data, read_split
from tuneforge.errors import ConfigError, DataError

SIZES = {"a": 100, "b": 30, "c": 10}
SYLLABLES = ["ka", "lo", "mi", "ne", "pu", "ra", "si", "to", "vu", "ze", "ba", "de", "fi", "go"]


def _words(rng: random.Random, n: int) -> str:
    """Random made-up words: no two samples share a long n-gram (dedup and decontamination)."""
    return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(2, 3))) for _ in range(n))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a.jsonl, b.jsonl and c.jsonl: 100, 30 and 10 distinct chat samples."""
    root = tmp_path_factory.mktemp("mix")
    for index, (name, size) in enumerate(SIZES.items()):
        rng = random.Random(index)
        lines = [
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": _words(rng, 6) + "?"},
                        {"role": "assistant", "content": _words(rng, 8) + "."},
                    ]
                }
            )
            for _ in range(size)
        ]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def mixture(folder: Path, caps: dict[str, int] | None = None, **mix) -> DataConfig:
    sources = [
        {"path": str(folder / f"{name}.jsonl"), "max_samples": (caps or {}).get(name)}
        for name in SIZES
    ]
    return DataConfig(sources=sources, mix=mix, max_length=128, packing=False)


def prepare(config: DataConfig, tokenizer, out: Path, seed: int = 3) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return prepare_data(config, tokenizer, seed=seed, out_dir=out)


def in_output(out: Path) -> Counter[str]:
    """Samples per source over every split, as written."""
    return Counter(
        record["meta"]["source_name"]
        for split in ("train", "val", "test")
        for record in read_split(out, split)
    )


def taken(books: dict) -> dict[str, int]:
    return {name: row["taken"] for name, row in books["mix"]["sources"].items()}


def assert_balanced(books: dict) -> None:
    read = books["read"] + books["expanded"] + books.get("repeated", 0)
    assert read == books["kept"] + sum(books["dropped"].values()) + books["quarantined"]


def test_concat_takes_every_sample_and_the_report_shows_the_mix(
    folder: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(mixture(folder), chat_tokenizer, tmp_path)
    assert books["read"] == 140 and books["kept"] == 140 and books["dropped"] == {}
    assert in_output(tmp_path) == Counter(SIZES)
    assert books["repeated"] == 0
    assert_balanced(books)
    rows = books["mix"]["sources"]
    assert {n: r["share"] for n, r in rows.items()} == {"a": 0.7143, "b": 0.2143, "c": 0.0714}
    assert sum(r["splits"]["train"] for r in rows.values()) == books["splits"]["train"]
    assert set(books["files"]) == {"a/a.jsonl", "b/b.jsonl", "c/c.jsonl"}  # source/file
    report = (tmp_path / "report.md").read_text()
    assert "## Mix (concat; 140 samples planned)" in report
    assert "| source | path | read | kept after cleaning |" in report
    assert f"| c | {folder / 'c.jsonl'} | 10 | 10 | 0 | 0 | 10 | 0 |" in report
    assert "<h2>Mix (concat; 140 samples planned)</h2>" in (tmp_path / "report.html").read_text()


def test_equal_weights_take_equal_counts_and_list_the_rest_as_dropped(
    folder: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(mixture(folder, strategy="weights"), chat_tokenizer, tmp_path / "one")
    assert taken(books) == {"a": 10, "b": 10, "c": 10}
    assert in_output(tmp_path / "one") == Counter({"a": 10, "b": 10, "c": 10})
    assert books["dropped"] == {"mix_sampled_out:a": 90, "mix_sampled_out:b": 20}
    assert_balanced(books)
    lines = (tmp_path / "one" / "dropped.jsonl").read_text().splitlines()
    dropped = [json.loads(line) for line in lines]
    assert Counter((d["step"], d["reason"]) for d in dropped) == {
        ("mix", "mix_sampled_out:a"): 90,
        ("mix", "mix_sampled_out:b"): 20,
    }
    assert all(d["source"].startswith(d["reason"].split(":")[1] + "/") for d in dropped)
    mix_step = next(s for s in books["steps"] if s["name"] == "mix")
    assert (mix_step["seen"], mix_step["kept"]) == (140, 30)
    # The same seed picks the same samples; another seed, others.
    again = prepare(mixture(folder, strategy="weights"), chat_tokenizer, tmp_path / "two")
    assert books["outputs"] == again["outputs"]
    sources, names = mixture(folder).sources, [n for n, size in SIZES.items() for _ in range(size)]
    picks = [
        plan_mix(names, sources, MixConfig(strategy="weights"), seed).copies for seed in (3, 4)
    ]
    assert picks[0] != picks[1] and sum(picks[0]) == sum(picks[1]) == 30


def test_temperature_flattens_the_sizes(folder: Path, chat_tokenizer, tmp_path: Path) -> None:
    # p ~ n^(1/2): 10, 5.48, 3.16 -> 53.7%, 29.4%, 17.0%; c limits N to floor(10 / 0.170) = 58.
    books = prepare(mixture(folder, strategy="temperature"), chat_tokenizer, tmp_path)
    assert taken(books) == {"a": 31, "b": 17, "c": 10}
    assert in_output(tmp_path) == Counter({"a": 31, "b": 17, "c": 10})
    assert books["mix"]["total"] == 58 and books["mix"]["temperature"] == 2.0
    assert books["dropped"] == {"mix_sampled_out:a": 69, "mix_sampled_out:b": 13}
    assert_balanced(books)
    assert (
        "## Mix (temperature, T = 2.0; 58 samples planned)" in (tmp_path / "report.md").read_text()
    )


def test_caps_come_first_and_are_dropped_with_their_own_reason(
    folder: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(mixture(folder, caps={"a": 40, "c": 50}), chat_tokenizer, tmp_path / "concat")
    assert taken(books) == {"a": 40, "b": 30, "c": 10}
    assert books["dropped"] == {"mix_cap:a": 60}
    assert_balanced(books)
    weighted = mixture(folder, caps={"b": 5}, strategy="weights")
    books = prepare(weighted, chat_tokenizer, tmp_path / "weights")
    assert taken(books) == {"a": 5, "b": 5, "c": 5}
    assert books["dropped"] == {
        "mix_cap:b": 25,
        "mix_sampled_out:a": 95,
        "mix_sampled_out:c": 5,
    }
    lines = (tmp_path / "weights" / "dropped.jsonl").read_text().splitlines()
    reasons = Counter(json.loads(line)["reason"] for line in lines)
    assert reasons == books["dropped"]


def test_repeats_fill_the_shares_in_the_training_split_only(
    folder: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(
        mixture(folder, strategy="weights", allow_repeat=True), chat_tokenizer, tmp_path
    )
    rows = books["mix"]["sources"]
    assert books["mix"]["total"] == 300 and taken(books) == {"a": 100, "b": 30, "c": 10}
    assert rows["a"]["repeated"] == 0 and rows["c"]["repeated"] > 0
    assert books["repeated"] == sum(r["repeated"] for r in rows.values())
    assert books["dropped"] == {}
    assert_balanced(books)
    held_out = [r["id"] for s in ("val", "test") for r in read_split(tmp_path, s)]
    assert len(held_out) == len(set(held_out))  # no copies outside training
    train = Counter(r["id"] for r in read_split(tmp_path, "train"))
    assert not set(train) & set(held_out)
    for name in ("b", "c"):  # every training sample of a repeated source comes 10 or 3-4 times
        copies = {n for i, n in train.items() if i.startswith(f"{name}/")}
        assert copies <= ({10} if name == "c" else {3, 4}), (name, copies)
    assert rows["c"]["splits"]["train"] == 10 * (
        10 - rows["c"]["splits"]["val"] - rows["c"]["splits"]["test"]
    )


def test_total_sets_the_size_and_is_refused_beyond_the_data(folder: Path) -> None:
    available = dict(SIZES)
    sources = [SourceConfig(path=f"{n}.jsonl") for n in SIZES]
    weights = MixConfig(strategy="weights", total=24)
    assert mix_targets(available, target_shares(available, sources, weights), weights) == {
        "a": 8,
        "b": 8,
        "c": 8,
    }
    too_many = MixConfig(strategy="weights", total=60)
    with pytest.raises(DataError) as caught:
        mix_targets(available, target_shares(available, sources, too_many), too_many)
    message = str(caught.value)
    assert message.startswith("data.mix.total 60: source 'c' has 10 usable samples")
    assert "at most 30 without repeats" in message and "\n" not in message
    proportional = MixConfig(strategy="temperature", temperature=1.0)
    assert (
        mix_targets(available, target_shares(available, sources, proportional), proportional)
        == available
    )


def test_a_weighted_source_left_empty_by_cleaning_is_named() -> None:
    sources = [SourceConfig(path="a.jsonl"), SourceConfig(path="c.jsonl")]
    with pytest.raises(DataError, match=r"^data.sources 'c': no usable samples after cleaning"):
        plan_mix(["a"] * 5, sources, MixConfig(strategy="weights"), seed=1)


def test_a_missing_source_is_named_by_its_key(folder: Path, chat_tokenizer, tmp_path: Path) -> None:
    sources = [{"path": str(folder / "a.jsonl")}, {"path": str(tmp_path / "gone.jsonl")}]
    config = DataConfig(sources=sources)
    with pytest.raises(DataError, match=r"^data.sources\[1\].path '.*gone.jsonl': file not found"):
        prepare(config, chat_tokenizer, tmp_path / "out")


def test_the_data_stage_key_follows_every_source_file(folder: Path, tmp_path: Path) -> None:
    from tuneforge.pipeline import Pipeline
    from tuneforge.runs.rundir import RunDir

    for name in SIZES:
        (tmp_path / f"{name}.jsonl").write_text((folder / f"{name}.jsonl").read_text())
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(
        "name: mix\nmodel:\n  name_or_path: tiny\ndata:\n  sources:\n"
        "    - path: a.jsonl\n    - {path: b.jsonl, weight: 2}\n    - path: c.jsonl\n"
        "  mix: {strategy: weights}\n"
    )
    config = load_config(config_file)
    assert [s.path for s in config.data.sources] == [str(tmp_path / f"{n}.jsonl") for n in SIZES]
    assert [s.name for s in config.data.sources] == list(SIZES)
    run_dir = tmp_path / "runs" / "mix" / "1"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    run = RunDir(path=run_dir, root=tmp_path / "runs")

    def key() -> str:
        return Pipeline(config=config, run=run, config_file=str(config_file))._key("data")

    before = key()
    assert key() == before
    with open(tmp_path / "c.jsonl", "a") as handle:
        handle.write('{"messages": [{"role": "user", "content": "one more"}]}\n')
    assert key() != before


GOOD = "name: mix\nmodel:\n  name_or_path: tiny\ndata:\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "  path: a.jsonl\n  sources:\n    - path: b.jsonl\n",
            r"cfg.yaml:4: data: give exactly one of data.path \(one dataset\) and data.sources "
            r"\(a mixture\); both given$",
        ),
        ("  val_fraction: 0.1\n", r"cfg.yaml:4: data: give exactly one of .*; neither given$"),
        (
            "  sources:\n    - path: a.jsonl\n      weight: 0\n",
            r"cfg.yaml:7: data.sources.0.weight = 0: Input should be greater than 0$",
        ),
        (
            "  sources:\n    - {path: a.jsonl, weight: 2}\n",
            r"cfg.yaml:4: data: data.sources\[0\].weight 2.0: weights need data.mix.strategy",
        ),
        (
            "  sources:\n    - path: x/a.jsonl\n    - path: y/a.jsonl\n",
            r"cfg.yaml:4: data: data.sources: more than one source named 'a'; give each",
        ),
        (
            "  max_samples: 5\n  sources:\n    - path: a.jsonl\n",
            r"cfg.yaml:4: data: data.max_samples is for data.path; with data.sources set",
        ),
        ("  path: a.jsonl\n  mix: {strategy: weights}\n", r"data: data.mix is for data.sources"),
        ("  sources: []\n", r"data: data.sources is empty"),
        (
            "  sources:\n    - {path: a.jsonl, wieght: 2}\n",
            r"cfg.yaml:6: data.sources.0: unknown key 'wieght'; did you mean 'weight'\?$",
        ),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, data: str, message: str) -> None:
    (tmp_path / "cfg.yaml").write_text(GOOD + data)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(tmp_path / "cfg.yaml")
    assert "\n" not in str(caught.value)
