"""Precision is chosen from what the hardware does natively."""

from __future__ import annotations

import pytest
import torch

from tuneforge.errors import ConfigError
from tuneforge.models import hardware


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (frozenset({"avx2", "fma"}), torch.float32),
        (frozenset({"avx512f", "avx512_bf16"}), torch.bfloat16),
        (frozenset({"amx_bf16", "amx_tile"}), torch.bfloat16),
        (frozenset(), torch.float32),
    ],
)
def test_cpu_precision_follows_flags(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.auto_dtype(torch.device("cpu")) == expected


def test_explicit_precisions(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert hardware.resolve_dtype("fp32", cpu) == torch.float32
    assert hardware.resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match=r"fp16'.*not supported on CPU"):
        hardware.resolve_dtype("fp16", cpu)


def test_this_machine_reads_real_flags() -> None:
    flags = hardware.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this platform")
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert (hardware.auto_dtype(torch.device("cpu")) == torch.bfloat16) == native
