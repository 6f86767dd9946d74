"""`tuneforge serve` as a process: it serves a run's export, and SIGTERM drains it."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests_support import cli_command, cli_env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_then_exits(tiny_model_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        cli_command("serve", str(tiny_model_dir), "--port", str(port)),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.2)
        body = {
            "model": tiny_model_dir.name,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 120,
            "temperature": 0.9,
            "seed": 1,
        }
        found = {}

        def ask() -> None:
            found["reply"] = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)

        worker = threading.Thread(target=ask)
        worker.start()
        time.sleep(0.5)  # the request is being generated
        process.send_signal(signal.SIGTERM)
        worker.join(120)
        assert found["reply"].status_code == 200
        assert found["reply"].json()["usage"]["completion_tokens"] > 0
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = process.stderr.read()
    assert '"route": "/v1/chat/completions", "status": 200' in logs
    assert "Tell me a long story" not in logs  # no request bodies in logs
