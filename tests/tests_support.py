"""Helpers the tests import: the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}


def cli_command(*args: str) -> list[str]:
    """The argv that runs the real `tuneforge` command with this interpreter."""
    return [sys.executable, "-m", "tuneforge", *args]


def cli_env() -> dict[str, str]:
    """The environment the CLI runs in under test: offline from any model hub."""
    return {**os.environ, **ENV}


def run_cli(*args: str, cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """Run the real `tuneforge` command in a subprocess, offline, and capture its output."""
    env = cli_env()
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
