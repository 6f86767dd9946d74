"""What the web UI's pages show, checked without a browser: tables, pages, ranks, launches."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fake_runs import make_run

pytest.importorskip("gradio")

from tuneforge.errors import ConfigError, DataError
from tuneforge.runs.catalog import resolve_run
from tuneforge.ui import data_view, feedback_view, runs_view
from tuneforge.ui.launcher import log_tail, validate
from tuneforge.ui.playground import Sampling, run_targets, side_by_side

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "quick/20261128-175742", created="2026-11-28T17:57:42+00:00")
    passed = json.loads(json.dumps({"gates": {"results": [{"gate": "x", "passed": True}]}}))
    make_run(
        root,
        "other/20261127-090000",
        created="2026-11-27T09:00:00+00:00",
        stages={"train": {"status": "done", "summary": {"steps": 3}}, "eval": {"summary": passed}},
        config={"name": "other", "method": {"kind": "full"}, "objective": "dpo", "seed": 3},
    )
    return root


def test_runs_table_filters_by_name_method_and_gate_state(root: Path) -> None:
    table = runs_view.runs_table(root)
    assert list(table.columns) == list(runs_view.RUN_COLUMNS)
    assert table["run"].tolist() == ["quick/20261128-175742", "other/20261127-090000"]
    assert table["gates"].tolist() == ["FAILED 1", "passed"]
    assert runs_view.runs_table(root, name="QUICK")["run"].tolist() == ["quick/20261128-175742"]
    assert runs_view.runs_table(root, method="dpo")["run"].tolist() == ["other/20261127-090000"]
    assert runs_view.runs_table(root, gates="failed")["run"].tolist() == ["quick/20261128-175742"]
    assert runs_view.runs_table(root, gates="passed")["run"].tolist() == ["other/20261127-090000"]
    assert runs_view.runs_table(root, gates="none").empty
    assert runs_view.runs_table(root / "missing").empty


def test_a_runs_curves_hold_train_loss_val_loss_and_learning_rate(root: Path) -> None:
    frame = runs_view.train_curves(resolve_run("quick", root))
    series = {
        name: list(zip(part["step"], part["value"], strict=True))
        for name, part in frame.groupby("series")
    }
    assert series["loss"] == [(1, 2.5), (2, 2.25), (3, 2.0)]
    assert series["val_loss"] == [(2, 2.125)]
    assert series["lr"] == [(1, 1e-3), (2, 1e-3), (3, 5e-4)]
    figure = runs_view.curves_figure({"quick": frame})
    loss_axis, lr_axis = figure.axes
    assert len(loss_axis.lines) == 2 and len(lr_axis.lines) == 1


def test_eval_table_shows_base_tuned_delta_and_interval(root: Path) -> None:
    run = resolve_run("quick", root)
    fallback = runs_view.eval_table(run)  # no base comparison in the summary: tuned alone
    assert dict(zip(fallback["metric"], fallback["tuned"], strict=True))["chrf"] == 40.0
    report = {
        "comparison": {
            "exact_match": {"base": 0.25, "tuned": 0.5, "delta": 0.25, "low": 0.1, "high": 0.4}
        },
        "gates": {
            "results": [
                {
                    "gate": "exact_match >= 0.6",
                    "value": 0.5,
                    "threshold": 0.6,
                    "margin": -0.1,
                    "passed": False,
                }
            ]
        },
    }
    (run.path / "eval").mkdir()
    (run.path / "eval" / "report.json").write_text(json.dumps(report))
    table = runs_view.eval_table(run)
    assert table.to_dict("records") == [
        {
            "metric": "exact_match",
            "base": 0.25,
            "tuned": 0.5,
            "delta": 0.25,
            "95% interval": "[0.1, 0.4]",
        }
    ]
    gates = runs_view.gates_table(run)
    assert gates["passed"].tolist() == ["NO"] and gates["threshold"].tolist() == [0.6]


def test_compare_lists_differing_config_keys_and_marks_the_best_run(root: Path) -> None:
    make_run(
        root,
        "quick/20261128-181010",
        created="2026-11-28T18:10:10+00:00",
        config={"name": "quick", "method": {"kind": "lora"}, "objective": "sft", "seed": 9},
        stages={"train": {"status": "done", "summary": {"val_loss_after": 1.5}}},
    )
    labels = ["quick/20261128-175742", "quick/20261128-181010"]
    figure, diff, numbers = runs_view.compare_runs(root, labels)
    assert diff.to_dict("records") == [{"key": "seed", labels[0]: "(absent)", labels[1]: "9"}]
    row = numbers[numbers["metric"] == "train.val_loss_after"].iloc[0]
    assert (row[labels[0]], row[labels[1]]) == ("2", "1.5*")  # lower loss is better
    assert len(figure.axes[0].lines) == 4  # each run: train loss and val loss
    with pytest.raises(ConfigError, match="nope"):
        runs_view.compare_runs(root, ["nope", labels[0]])


def test_lineage_is_read_per_export_folder(root: Path) -> None:
    run = resolve_run("quick", root)
    (run.path / "export" / "adapter").mkdir(parents=True)
    (run.path / "export" / "adapter" / "lineage.json").write_text('{"chain": [1]}')
    assert runs_view.lineage(run) == {"adapter": {"chain": [1]}}


def test_a_data_page_highlights_exactly_the_trained_tokens(root: Path, tiny_model_dir) -> None:
    from tuneforge.models.load import load_tokenizer

    chat_tokenizer = load_tokenizer(str(tiny_model_dir))
    run = resolve_run("quick", root)
    messages = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It ships today."},
    ]
    ids = chat_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    reply = chat_tokenizer.encode("It ships today.", add_special_tokens=False)
    labels = [-100] * (len(ids) - len(reply) - 2) + reply + [-100, -100]
    tokens = run.path / "data" / "tokens"
    tokens.mkdir(parents=True)
    rows = [{"id": f"s{i}", "input_ids": ids, "labels": labels} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(rows), tokens / "train.parquet")
    (run.path / "base").symlink_to(tiny_model_dir)  # a tiny run's base stage
    data_view.run_tokenizer.cache_clear()
    assert data_view.splits(run) == ["train"]
    assert data_view.page_count(run, "train", 5) == 2
    page = data_view.data_page(run, "train", 2, 5)
    assert "samples 6-7 of 7" in page and page.count('class="tf-sample"') == 2
    trained = re.findall(r'<span class="tf-trained" title="[^"]*">(.*?)</span>', page)
    assert [text.strip() for text in trained] == ["It ships today."] * 2
    assert f"{len(ids)} tokens, {len(reply)} trained" in page
    assert data_view.token_segments([1, 2, 3], [-100, 2, -100]) == [
        (False, [1]),
        (True, [2]),
        (False, [3]),
    ]
    with pytest.raises(FileNotFoundError, match="no prepared 'test' split"):
        data_view.data_page(run, "test", 1)


def test_quarantined_and_dropped_records_are_listed_with_reasons(root: Path) -> None:
    run = resolve_run("quick", root)
    data = run.path / "data"
    data.mkdir()
    held = [{"source": "a.jsonl:3", "reason": "not JSON", "raw": "{oops"}]
    dropped = [
        {
            "id": "x",
            "source": "a.jsonl:5",
            "step": "exact_dedup",
            "reason": "duplicate",
            "excerpt": "hi",
        }
    ] * 3
    (data / "quarantine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    (data / "dropped.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dropped))
    table, count = data_view.quarantine_table(run)
    assert count == 1 and table.to_dict("records") == held
    table, count = data_view.dropped_table(run)
    assert count == 3 and table["reason"].tolist() == ["duplicate"] * 3
    assert list(table.columns) == list(data_view.DROPPED_COLUMNS)


def labelling_file(path: Path) -> Path:
    records = [
        {
            "id": "p1",
            "prompt": [{"role": "user", "content": "Hi?"}],
            "responses": [
                {"content": "Hello!", "rank": None},
                {"content": "Go away.", "rank": None},
            ],
        },
        {
            "id": "p2",
            "prompt": "Name a colour.",
            "responses": ["Blue.", "Seven.", "Red."],
            "ranking": [2, 0, 1],
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_ranks_set_in_the_page_are_saved_and_become_pairs(tmp_path: Path) -> None:
    file = labelling_file(tmp_path / "label.jsonl")
    records = feedback_view.load_records(file)
    assert feedback_view.current_ranks(records[0]) == [None, None]
    assert feedback_view.current_ranks(records[1]) == [2, 3, 1]
    assert feedback_view.reply_texts(records[1]) == ["Blue.", "Seven.", "Red."]
    assert feedback_view.prompt_markdown(records[1]) == "**user**: Name a colour."
    status = feedback_view.set_ranks(file, records, 0, [1, 2.0, None])
    assert status == "saved record 1: 2 of 2 records fully ranked"  # p2 came ranked
    saved = [json.loads(line) for line in file.read_text().splitlines()]
    assert [r["rank"] for r in saved[0]["responses"]] == [1, 2]
    with pytest.raises(DataError, match="reply 2: rank 0"):
        feedback_view.set_ranks(file, records, 0, [1, 0])
    line = feedback_view.make_pairs(file, tmp_path / "pairs.jsonl")
    assert line.startswith("3 pairs from 2 records")  # 1 + (best vs each of 2 lower)
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 3


def test_a_bad_labelling_file_names_its_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"responses": ["a", "b"]}\n{not json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not JSON"):
        feedback_view.load_records(file)
    file.write_text(json.dumps({"responses": ["a"] * 9}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 9 replies"):
        feedback_view.load_records(file)


def test_an_edited_config_resolves_paths_against_its_original_folder(tmp_path: Path) -> None:
    origin = REPO / "examples" / "quickstart.yaml"
    config = validate(origin.read_text(), origin, tmp_path / "runs")
    assert config.data.path == str(REPO / "examples" / "data" / "support_tickets.jsonl")
    assert config.runs_dir == str(tmp_path / "runs")
    broken = origin.read_text().replace("  lr: 5.0e-3", "  lr: fast")
    line = broken.splitlines().index("  lr: fast") + 1
    with pytest.raises(ConfigError, match=rf"quickstart.yaml:{line}.*train.lr") as found:
        validate(broken, origin, tmp_path / "runs")
    assert "draft" not in str(found.value)
    assert not list((tmp_path / "runs" / ".ui" / "scratch").iterdir())


def test_a_page_reads_only_the_row_groups_that_hold_it(tmp_path: Path) -> None:
    file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"i": list(range(103))}), file, row_group_size=10)
    parquet = pq.ParquetFile(file)
    for start, count in [(0, 5), (8, 5), (9, 1), (10, 10), (95, 20), (103, 5)]:
        rows = [row["i"] for row in data_view.read_rows(parquet, start, count)]
        assert rows == list(range(start, min(103, start + count))), (start, count)


def test_launch_progress_is_the_newest_training_line(tmp_path: Path) -> None:
    from tuneforge.ui.launcher import _progress

    lines = [{"stage": "train", "step": s, "total_steps": 5000, "loss": 1.0} for s in (1, 2)]
    lines += [{"stage": "train", "step": 2, "val_loss": 0.5}, {"stage": "eval", "exact": 1}]
    padding = "x" * 70_000  # a long first line, cut off by the tail read
    text = json.dumps({"note": padding}) + "\n" + "".join(json.dumps(x) + "\n" for x in lines)
    (tmp_path / "metrics.jsonl").write_text(text)
    assert _progress(tmp_path) == (2, 5000)
    assert _progress(tmp_path / "none") == (0, 0) and _progress(None) == (0, 0)


def test_log_tail_drops_colour_codes_and_redrawn_lines(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(b"\x1b[1mdata\x1b[0m ok\nstep 1\rstep 2\rstep 3\n" + b"x\n" * 50)
    tail = log_tail(log, lines=52).splitlines()
    assert tail[:2] == ["data ok", "step 3"]
    assert log_tail(tmp_path / "none.log") == ""


def test_a_lora_run_is_tuned_through_its_adapter_on_its_base(root: Path, tmp_path: Path) -> None:
    run = resolve_run("quick", root)
    for folder in ("base", "train/adapter"):
        (run.path / folder).mkdir(parents=True)
    (run.path / "base" / "config.json").write_text("{}")
    adapter = run.path / "train" / "adapter"
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    found = run_targets(run, tmp_path / "registry")
    base, tuned = found["quick/20261128-175742 · base"], found["quick/20261128-175742 · tuned"]
    assert base.model_dir == tuned.model_dir == (run.path / "base").resolve()
    assert base.adapter is None and tuned.adapter == "quick-20261128-175742"
    copied = tmp_path / "registry" / "quick-20261128-175742" / "adapter_model.safetensors"
    assert copied.read_bytes() == b"weights"
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")  # trained again in place
    run_targets(run, tmp_path / "registry")
    assert copied.read_bytes() == b"retrained"
    (adapter / "adapter_config.json").write_text('{"peft_type": "IA3"}')  # not servable: merged
    (run.path / "export" / "merged").mkdir(parents=True)
    (run.path / "export" / "merged" / "config.json").write_text("{}")
    tuned = run_targets(run, tmp_path / "other")["quick/20261128-175742 · tuned"]
    assert tuned == type(tuned)((run.path / "export" / "merged").resolve())


class Scripted:
    """Models whose replies are fixed pieces; one of them fails part-way."""

    async def stream(self, choice, messages, sampling):
        for piece in {"a": ["Hel", "lo"], "b": ["Bo", "om"]}[choice]:
            await asyncio.sleep(0)
            if piece == "om":
                raise RuntimeError("engine gone\nmore")
            yield piece


def test_side_by_side_streams_both_and_an_error_ends_only_its_side() -> None:
    async def collect():
        conversation = [{"role": "user", "content": "hi"}]
        return [
            u async for u in side_by_side(Scripted(), ("a", "b"), (conversation,) * 2, Sampling())
        ]

    updates = asyncio.run(collect())
    assert updates[-1] == ("Hello", "Bo\n[error: engine gone]")
    assert len(updates) == 5  # 3 pieces + 2 ends
    lefts = [left for left, _ in updates]
    assert lefts == sorted(lefts, key=len)  # each side only grows
