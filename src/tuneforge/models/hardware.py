"""Pick the device and precision from what the hardware really does well.

bf16 autocast on a CPU without AVX512-BF16 or AMX is emulated and many times
slower than fp32, so the choice is made from CPU flags, never assumed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from tuneforge.errors import ConfigError


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def device() -> torch.device:
    """The device to train and generate on: the first CUDA GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(dev: torch.device | None = None) -> torch.dtype:
    """bf16 where the device supports it natively, fp16 on older GPUs, fp32 otherwise."""
    dev = dev or device()
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(precision: str, dev: torch.device | None = None) -> torch.dtype:
    """Map a config precision name to a dtype, refusing ones the device cannot run.

    Raises:
        ConfigError: fp16 requested on a CPU.
    """
    dev = dev or device()
    if precision == "auto":
        return auto_dtype(dev)
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("model.precision = 'fp16': not supported on CPU; use 'auto' or 'fp32'")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
