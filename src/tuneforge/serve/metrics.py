"""Prometheus metrics of one server: requests, latencies, tokens, queue, cache, guardrails.

Each app gets its own registry, so several servers (a test's front and upstream)
can live in one process. Gauges that other parts already count (the engine's
queue, the cache's hits) are read when Prometheus scrapes, not copied on every
request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class ServerMetrics:
    """The counters and histograms the HTTP layer updates, and the gauges it reads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tuneforge_requests",
            "Requests answered, by route, model (base or base:adapter) and status code.",
            ["route", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tuneforge_request_seconds",
            "Time from request to the last byte of the answer.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "tuneforge_time_to_first_token_seconds",
            "Time from request to the first generated token (streams and batch answers).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.per_token = Histogram(
            "tuneforge_time_per_output_token_seconds",
            "Generation time divided by the tokens generated.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tuneforge_tokens", "Tokens in prompts and completions.", ["model", "kind"], registry=r
        )

    def watch(self, name: str, help_text: str, read: Callable[[], dict[str, Any]]) -> None:
        """Expose ``read()``'s numbers as gauges ``tuneforge_<name>_<key>`` at scrape time."""
        self.registry.register(_Gauges(name, help_text, read))

    def watch_labelled(
        self, name: str, help_text: str, labels: list[str], read: Callable[[], dict]
    ) -> None:
        """Expose ``read()``'s ``{(label values...): count}`` as one labelled counter."""
        self.registry.register(_LabelledCounter(name, help_text, labels, read))

    def exposition(self) -> tuple[bytes, str]:
        """The text Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def record_generation(self, model: str, timings: dict[str, float], prompt: int, out: int):
        """Token counts and the engine's timings of one answered request."""
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(out)
        if "first_token_s" in timings:
            self.first_token.labels(model).observe(timings["first_token_s"])
        if out and "total_s" in timings:
            self.per_token.labels(model).observe(timings["total_s"] / out)


class _Gauges:
    """A collector that reads a dict of numbers when scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[str, Any]]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def describe(self) -> list:
        return []  # values are only known at scrape time

    def collect(self):
        for key, value in sorted(self.read().items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            family = CounterMetricFamily if key.endswith("_total") else GaugeMetricFamily
            metric = key.removesuffix("_total")
            yield family(f"tuneforge_{self.name}_{metric}", f"{self.help}: {key}", value=value)


class _LabelledCounter:
    """A collector for counts keyed by label tuples, read when scraped."""

    def __init__(self, name: str, help_text: str, labels: list[str], read: Callable) -> None:
        self.name, self.help, self.labels, self.read = name, help_text, labels, read

    def describe(self) -> list:
        return []

    def collect(self):
        family = CounterMetricFamily(f"tuneforge_{self.name}", self.help, labels=self.labels)
        for key, value in sorted(self.read().items()):
            family.add_metric([str(part) for part in key], value)
        yield family
