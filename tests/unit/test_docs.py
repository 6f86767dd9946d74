"""Shipped examples validate, and every command the README and docs show exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from tuneforge.cli.main import app, main
from tuneforge.config import load_config

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:sh|console|bash)\n(.*?)```", re.DOTALL)


def documented_commands(program: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text()):
            for line in block.splitlines():
                line = line.removeprefix("$ ").split("#")[0].strip()
                if line.startswith(program + " "):
                    found.append((doc.name, line))
    return found


@pytest.mark.parametrize("path", sorted((REPO / "examples").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates(path: Path) -> None:
    if "service:" in path.read_text():  # a service config: each job brings its data
        from tuneforge.service.runtime import Runtime

        assert Runtime.load(path).config.data.path.endswith("uploads.jsonl")
        return
    config = load_config(path)
    written = {str(Path(config.synth.out_dir) / f"{t.name}.jsonl") for t in config.synth.tasks}
    for data in config.data.input_paths():  # there, or written by a synth task first
        assert Path(data).exists() or data in written, data
    assert all(Path(answers).is_file() for answers in config.synth.answers)
    assert all(Path(task.source).exists() for task in config.synth.tasks)


def test_readme_opens_with_the_two_commands() -> None:
    first_block = FENCE.search((REPO / "README.md").read_text()).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == [
        "make demo",
        "make test",
    ]


def test_documented_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    commands = documented_commands("make")
    assert {line.split()[1] for _, line in commands} >= {"demo", "test"}
    for doc, line in commands:
        target = line.split()[1]
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), (doc, line)


def test_documented_tuneforge_commands_exist(capsys: pytest.CaptureFixture[str]) -> None:
    root = typer.main.get_command(app)
    commands = documented_commands("tuneforge")
    assert len(commands) >= 8
    for doc, line in commands:
        words = shlex.split(line)[1:]
        path, group = [], root
        while words and hasattr(group, "commands") and words[0] in group.commands:
            group = group.commands[words[0]]
            path.append(words.pop(0))
        assert path, (doc, line)
        assert main([*path, "--help"]) == 0, (doc, line)
        help_text = capsys.readouterr().out
        for option in (w.split("=")[0] for w in words if w.startswith("--")):
            assert option in help_text, (doc, line, option)
