"""Synthesis against a real tuneforge server (the tiny model as the teacher), through the CLI.

The tiny teacher rarely writes the JSON it is asked for, so most answers are unparsed:
the tests pin the books, the cache and the requests the server really received, which
do not depend on what the teacher says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from serve_support import running_server
from tests_support import cli_command, cli_env, run_cli

pytest.importorskip("openai")
pytestmark = pytest.mark.slow


def served_requests(url: str) -> int:
    """Chat completions the server has answered, from its Prometheus metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tuneforge_requests_total{") and "/v1/chat/completions" in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def settled_requests(url: str, quiet_s: float = 1.5) -> int:
    """:func:`served_requests` once it has not changed for ``quiet_s`` seconds."""
    count, since = served_requests(url), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        now = served_requests(url)
        if now != count:
            count, since = now, time.monotonic()
    return count


def write_config(folder: Path, url: str, items: int, concurrency: int) -> Path:
    chunks = folder / "chunks.jsonl"
    lines = [
        {"id": f"c{i}", "text": f"Router X{i} resets when its rear button is held for {i} s."}
        for i in range(items)
    ]
    chunks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    prompts = folder / "prompts.jsonl"
    chat = [
        {"role": "user", "content": "How do I reset my router?"},
        {"role": "assistant", "content": "Hold the rear button."},
    ]
    prompts.write_text(json.dumps({"id": "p1", "messages": chat}) + "\n")
    config = folder / "synth.yaml"
    config.write_text(
        "name: synth\nmodel: {name_or_path: tiny}\ndata: {path: chunks.jsonl}\n"
        "synth:\n"
        f"  teacher: {{base_url: '{url}/v1', model: tiny, concurrency: {concurrency}}}\n"
        "  tasks:\n"
        "    - {name: qa, kind: qa, source: chunks.jsonl, max_tokens: 12, min_support: 0}\n"
        "    - {name: rephrase, kind: paraphrase, source: prompts.jsonl, max_tokens: 12,\n"
        "       per_item: 3}\n"
    )
    return config


def books(folder: Path, task: str) -> dict:
    return json.loads((folder / "synth" / f"{task}.books.json").read_text())


def test_synthesis_is_cached_books_balance_and_a_rerun_sends_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with running_server(tiny_model_dir) as (url, _):
        config = write_config(tmp_path, url, items=6, concurrency=3)
        done = run_cli("data", "synth", str(config), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        qa = books(tmp_path, "qa")
        assert qa["items"] == qa["requests"] == 6 and qa["bill"]["sent"] == 6
        assert qa["bill"]["prompt_tokens"] > 0 and qa["failed"] == {}
        answered = qa["requests"] - sum(qa["failed"].values())
        parsed = answered - qa["unparsed_answers"]
        assert qa["pairs"] == qa["kept"] + sum(qa["dropped"].values())
        assert parsed <= qa["pairs"] <= 2 * parsed
        assert books(tmp_path, "rephrase")["requests"] == 1
        assert served_requests(url) == 7
        first = (tmp_path / "synth" / "qa.jsonl").read_bytes()
        for line in first.decode().splitlines():
            meta = json.loads(line)["meta"]["synth"]
            assert meta["teacher"] == "tiny" and meta["prompt_version"] == "v1"
            assert meta["source_id"].startswith("c") and len(meta["request"]) == 16

        again = run_cli("data", "synth", str(config), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        bill = books(tmp_path, "qa")["bill"]
        assert (bill["sent"], bill["cached"]) == (0, 6)
        assert served_requests(url) == 7  # nothing sent the second time
        assert (tmp_path / "synth" / "qa.jsonl").read_bytes() == first


def test_a_killed_synthesis_resumes_without_repeating_requests(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import sqlite3

    items = 40
    with running_server(tiny_model_dir) as (url, _):
        config = write_config(tmp_path, url, items=items, concurrency=1)
        command = cli_command("data", "synth", str(config), "--task", "qa")
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cache = tmp_path / "synth" / ".cache.sqlite"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if cache.is_file():
                with sqlite3.connect(cache) as db:
                    if db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] >= 5:
                        break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        with sqlite3.connect(cache) as db:
            cached = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        assert 5 <= cached < items
        before = settled_requests(url)  # the killed client's request may still finish
        done = run_cli("data", "synth", str(config), "--task", "qa", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        bill = books(tmp_path, "qa")["bill"]
        assert (bill["sent"], bill["cached"]) == (items - cached, cached)
        assert before <= cached + 1  # at most the one request in flight was lost
        assert served_requests(url) == before + items - cached
