"""Shared fixtures: the project's own tiny model and tokenizer, public sample data, the CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests_support import run_cli

REPO = Path(__file__).resolve().parents[1]
PUBLIC_FIXTURES = Path(
    os.environ.get("TUNEFORGE_PUBLIC_FIXTURES", REPO.parent / "shared" / "fixtures" / "public")
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _tracking_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """No experiment tracker (MLflow's import and sqlite store cost seconds a run).

    The tracking tests turn it back on; subprocesses of the CLI inherit the setting.
    """
    monkeypatch.setenv("TUNEFORGE_TRACK_BACKENDS", "")


@pytest.fixture(scope="session", autouse=True)
def _shared_tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    """One tiny-model cache for the session ($TUNEFORGE_TINY_CACHE, docs/models.md).

    Runs in different runs directories build each tiny base (same model.tiny and seed)
    once: the quickstart and the RLHF example share theirs, as they do in ./runs.
    Subprocesses of the CLI inherit the setting.
    """
    from tuneforge.models.tiny import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("tiny-cache")))
        yield


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The tiny model's BPE tokenizer with its ChatML template, trained on a small corpus."""
    from tuneforge.models.corpus import assistant_dialogues, general_corpus
    from tuneforge.models.tiny import train_tokenizer

    return train_tokenizer(general_corpus(0, 200), assistant_dialogues(0, 100), vocab_size=600)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model folder built through the library (briefly pre-trained)."""
    from tuneforge.config.schema import TinyModelConfig
    from tuneforge.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    spec = TinyModelConfig(
        vocab_size=600,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        corpus_paragraphs=200,
        corpus_dialogues=100,
        pretrain_steps=20,
        pretrain_seq_len=64,
    )
    build_tiny_model(out, spec, seed=0)
    return out


@pytest.fixture
def public_fixtures() -> Path:
    """The shared real-world sample datasets; skip where they are absent."""
    if not PUBLIC_FIXTURES.is_dir():
        pytest.skip(f"public fixtures not found at {PUBLIC_FIXTURES}")
    return PUBLIC_FIXTURES


@pytest.fixture
def cli():
    """The real CLI in a subprocess: ``cli("run", "cfg.yaml", cwd=path)``."""
    return run_cli


class RedisServerURL(str):
    """A test Redis server's URL; ``stop()`` kills the server (to test an outage)."""

    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``redis-server`` on a free port, without persistence; yields its URL.

    Skips when redis-server (``scripts/install-redis.sh``) or redis-py is missing.
    """
    import shutil
    import socket
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed; run scripts/install-redis.sh (root, apt)")
    redis = pytest.importorskip("redis", reason="redis-py missing; pip install -e '.[serve]'")
    folder = tmp_path_factory.mktemp("redis")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = folder / "redis.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                pytest.fail(f"redis-server on port {port} did not answer PING: {tail}")
            time.sleep(0.02)
    client.close()
    url = RedisServerURL(f"redis://127.0.0.1:{port}/0")
    url.process = process
    yield url
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
