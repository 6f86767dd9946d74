"""A remote worker: `tuneforge service worker --once` takes a DPO job from a PostgreSQL queue."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests_support import cli_command, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[2]
PREFERENCES = REPO / "examples" / "rlhf" / "data" / "routing_preferences.jsonl"


def openai_dpo_lines(count: int) -> str:
    """The example's preference pairs in OpenAI's DPO upload format."""
    lines = []
    for line in PREFERENCES.read_text().splitlines()[:count]:
        pair = json.loads(line)
        record = {
            "input": {"messages": pair["messages"]},
            "preferred_output": [{"role": "assistant", "content": pair["chosen"]}],
            "non_preferred_output": [{"role": "assistant", "content": pair["rejected"]}],
        }
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def add_upload(store, root: Path, name: str, text: str) -> str:
    body = text.encode()
    row = store.add_file(
        "team-a",
        filename=name,
        purpose="fine-tune",
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        path="",
    )
    path = root / "files" / f"{row['id']}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    store.set_file_path(row["id"], str(path))
    return row["id"]


def test_a_worker_elsewhere_validates_and_trains_a_dpo_job_from_the_shared_queue(
    tmp_path: Path,
) -> None:
    from postgres_support import postgres_server
    from tuneforge.service.store import JobStore

    root = tmp_path / "root"
    hyper = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0, "beta": 0.1}
    method = {"type": "dpo", "dpo": {"hyperparameters": hyper}}  # supervised: test_service.py
    with postgres_server() as url:
        store = JobStore(url)
        jobs = {}
        for name, text in [("bad.jsonl", "oops\n"), ("good.jsonl", openai_dpo_lines(160))]:
            spec = {
                "model": "tiny",
                "training_file": add_upload(store, root, name, text),
                "validation_file": None,
                "method": method,
                "suffix": "remote",
                "seed": 3,
                "metadata": None,
            }
            jobs[name] = store.create_job("team-a", spec)["id"]
        args = ["service", "worker", str(REPO / "examples" / "service.yaml"), "--once"]
        for item in (
            f"service.root={root}",
            "model.tiny.pretrain_steps=30",
            "eval.max_new_tokens=8",
            "eval.bias.enabled=false",
            "eval.retention.enabled=false",
            "service.poll_s=0.2",
        ):
            args += ["--set", item]
        done = subprocess.run(
            cli_command(*args),
            env={**cli_env(), "TUNEFORGE_SERVICE_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "worker stopped after 1 job(s)" in done.stderr
        bad, good = store.job(None, jobs["bad.jsonl"]), store.job(None, jobs["good.jsonl"])
        events = [e["message"] for e in store.events_of(good["id"], None, 500)[0]]
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_training_file"
    assert bad["error"]["message"].startswith("bad.jsonl: 1 of 1 lines unusable: bad.jsonl:1: ")
    assert good["status"] == "succeeded", (good["error"], events[:5])
    assert good["fine_tuned_model"] == f"ft:tiny:remote:{good['id']}" and good["worker"] is None
    assert events[0] == "The job has successfully completed"
    assert any(message.startswith("Step ") for message in events)
    adapter = root / "models" / good["id"]
    assert (adapter / "fine_tuned_model.txt").read_text().strip() == good["fine_tuned_model"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    (run_config,) = (root / "runs" / good["id"]).glob("*/config.yaml")
    assert "objective: dpo" in run_config.read_text()  # the job's method, through the pipeline
