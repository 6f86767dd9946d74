"""A job as the pipeline sees it: its files checked, its request resolved, its config built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.split import assign_splits
from tuneforge.errors import ConfigError
from tuneforge.service.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "examples" / "service.yaml"


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime.load(SERVICE, [f"service.root={tmp_path / 'root'}"])


def chat(user: str, reply: str | None) -> str:
    messages = [{"role": "user", "content": user}]
    if reply is not None:
        messages.append({"role": "assistant", "content": reply})
    return json.dumps({"messages": messages})


def test_a_file_check_names_the_uploaded_file_and_each_bad_line(
    tmp_path: Path, chat_tokenizer
) -> None:
    from tuneforge.service.validate import check_file

    stored = tmp_path / "file-0123.jsonl"
    stored.write_text(
        "\n".join([chat("hi", "hello"), "{not json", chat("bye", None), chat("x", "y")]) + "\n"
    )
    check = check_file(stored, "mine.jsonl", "training_file", "supervised", chat_tokenizer, None)
    assert (check.ok, check.examples) == (False, 2)
    assert check.problems[0].startswith("mine.jsonl:2: ") and "file-0123" not in check.message()
    assert check.problems[1] == "mine.jsonl:3: no assistant turn"
    assert check.message().startswith("mine.jsonl: 2 of 4 lines unusable: mine.jsonl:2")

    good = tmp_path / "file-good.jsonl"
    good.write_text(chat("How do I reset it?", "Hold the button.") + "\n")
    check = check_file(good, "g.jsonl", "training_file", "supervised", chat_tokenizer, None)
    assert check.ok and check.tokens > 5
    small = check_file(good, "g.jsonl", "training_file", "supervised", chat_tokenizer, 3)
    assert not small.ok and f"{check.tokens} tokens, above this service's limit of 3" in (
        small.message()
    )
    dpo = check_file(good, "g.jsonl", "training_file", "dpo", chat_tokenizer, None)
    assert not dpo.ok and "g.jsonl:1: " in dpo.message()  # a chat record is no preference pair


def test_a_create_request_resolves_auto_from_the_service_config(runtime: Runtime) -> None:
    from tuneforge.serve.handlers import ApiError
    from tuneforge.service.api import CreateJob, resolve_spec

    body = CreateJob(model="tiny", training_file="file-a", suffix="v1")
    spec = resolve_spec(runtime, body)
    assert spec["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"n_epochs": 3, "batch_size": 16, "learning_rate_multiplier": 1.0}
        },
    }
    assert spec["seed"] == 42
    dpo = CreateJob(
        model="tiny",
        training_file="file-a",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
    )
    assert resolve_spec(runtime, dpo)["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    old = CreateJob(model="tiny", training_file="f", hyperparameters={"n_epochs": 5})
    assert resolve_spec(runtime, old)["method"]["supervised"]["hyperparameters"]["n_epochs"] == 5
    for bad, message in [
        (CreateJob(model="gpt-4o", training_file="f"), "cannot be fine-tuned here"),
        (CreateJob(model="tiny", training_file="f", suffix="a:b"), "suffix"),
        (CreateJob(model="tiny", training_file="f", hyperparameters={"beta": 1}), "dpo"),
    ]:
        with pytest.raises(ApiError, match=message):
            resolve_spec(runtime, bad)


def test_a_job_config_carries_its_files_objective_and_hyperparameters(
    runtime: Runtime, tmp_path: Path
) -> None:
    from tuneforge.service.job import job_config

    hyper = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}
    job = {
        "id": "ftjob-0123456789abcdef01234567",
        "spec": {
            "training_file": "file-t",
            "validation_file": None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            "seed": 7,
            "examples": 100,
        },
    }
    config = job_config(runtime, job, str(tmp_path))
    assert config.model.name_or_path == str(tmp_path)
    assert config.name == job["id"] and config.seed == 7 and config.objective == "sft"
    assert (config.train.epochs, config.train.batch_size) == (2, 8)
    assert config.train.lr == pytest.approx(2.5e-3)  # 0.5 x the service's 5e-3
    assert config.data.path == str(runtime.root / "files" / "file-t.jsonl")
    assert config.train.save_every == 10 and config.train.eval_every == 10  # 80 rows / 8
    assert config.export.formats == ["adapter"] and config.eval.gates  # the service's gates
    assert config.runs_dir == str(runtime.root / "runs")

    job["spec"]["validation_file"] = "file-v"
    job["spec"]["method"] = {"type": "dpo", "dpo": {"hyperparameters": {**hyper, "beta": 0.3}}}
    config = job_config(runtime, job, str(tmp_path))
    assert config.objective == "dpo" and config.preference.beta == 0.3
    assert config.data.path is None and config.data.val_fraction == 0
    assert [(s.name, s.split) for s in config.data.sources] == [
        ("training", None),
        ("validation", "val"),
    ]


def test_a_service_trains_only_adapters_it_can_serve(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"method\.kind full: the service trains adapters"):
        Runtime.load(SERVICE, ["method.kind=full"])


def test_a_pinned_source_fills_its_split_and_the_fractions_split_the_rest() -> None:
    ranks = [bytes([i]) for i in range(20)]
    pinned = [None] * 10 + ["val"] * 10
    assigned = assign_splits(ranks, 0.0, 0.2, pinned)
    assert assigned[10:] == ["val"] * 10
    assert assigned[:10].count("test") == 2 and assigned[:10].count("train") == 8
    assert assign_splits(ranks[:10], 0.0, 0.2) == assigned[:10]  # the rest as if alone
