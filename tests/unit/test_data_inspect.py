"""`tuneforge data inspect`: trained tokens highlighted, token counts exact."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from tuneforge.cli.data_inspect import (
    TRAINED_STYLE,
    TemplateChoice,
    TrainOnChoice,
    highlight,
    inspect,
)
from tuneforge.data.render import render_chat
from tuneforge.models.load import load_tokenizer

CHATS = [
    [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "It ships today."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye!"},
        {"role": "assistant", "content": "Goodbye."},
    ],
    [{"role": "user", "content": "Unshown?"}, {"role": "assistant", "content": "Yes."}],
]


@pytest.fixture
def chats_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_inspect_prints_samples_and_exact_token_counts(
    chats_file, tiny_model_dir, tokenizer, capsys
) -> None:
    inspect(chats_file, str(tiny_model_dir), n=2)
    printed = capsys.readouterr().out
    totals = [len(render_chat(tokenizer, chat).input_ids) for chat in CHATS[:2]]
    # each reply and its <|im_end|> carry loss
    trained = [
        n_tokens(tokenizer, "It ships today.") + 1,
        n_tokens(tokenizer, "Hello.") + n_tokens(tokenizer, "Goodbye.") + 2,
    ]
    assert f"tokens: {totals[0]} total, {trained[0]} trained" in printed
    assert f"tokens: {totals[1]} total, {trained[1]} trained" in printed
    assert f"2 samples shown: {sum(totals)} tokens, {sum(trained)} trained" in printed
    assert "<|im_start|>user\nWhere is my parcel?<|im_end|>" in printed
    assert "Unshown?" not in printed


def test_inspect_train_on_all_and_a_fallback_template(
    chats_file, tiny_model_dir, tokenizer, capsys
) -> None:
    inspect(
        chats_file,
        str(tiny_model_dir),
        n=1,
        train_on=TrainOnChoice.all,
        template=TemplateChoice.alpaca,
    )
    printed = capsys.readouterr().out
    total = len(render_chat(tokenizer, CHATS[0], template="alpaca").input_ids)
    assert f"tokens: {total} total, {total} trained" in printed
    assert "### Instruction:\nWhere is my parcel?" in printed


def test_highlight_styles_exactly_the_trained_runs(tokenizer) -> None:
    text = highlight(tokenizer, render_chat(tokenizer, CHATS[1]))
    trained = [text.plain[s.start : s.end] for s in text.spans if s.style == TRAINED_STYLE]
    assert trained == ["Hello.<|im_end|>", "Goodbye.<|im_end|>"]
    assert text.plain == tokenizer.apply_chat_template(CHATS[1], tokenize=False)


def test_inspect_options_parse_as_a_command(chats_file, tiny_model_dir) -> None:
    app = typer.Typer()
    app.command()(inspect)
    app.command("other")(lambda: None)  # two commands, so the name is given as on the CLI
    args = ["inspect", str(chats_file), "--model", str(tiny_model_dir), "-n", "1"]
    result = CliRunner().invoke(app, [*args, "--train-on", "last_assistant"])
    assert result.exit_code == 0, result.output
    assert "1 samples shown" in result.output
    bad = CliRunner().invoke(app, [*args, "--train-on", "everything"])
    assert bad.exit_code == 2
