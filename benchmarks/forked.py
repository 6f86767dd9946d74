"""Run a measurement in a forked child, so its peak memory is its own."""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable
from typing import Any


def rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(fn: Callable[..., Any], args: tuple[Any, ...], queue: Any) -> None:
    start_rss = rss_mb()
    result = fn(*args)
    queue.put((result, peak_mb(), peak_mb() - start_rss))


def in_child(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run ``fn`` in a forked child: its result, peak RSS MB, and RSS it added MB."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(fn, args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result
