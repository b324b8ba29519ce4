"""Prometheus metrics of the OpenAI layer, labelled by model; BentoML serves them on ``/metrics``.

The service uses prometheus_client's default registry (BentoML collects it across workers); unit tests use
``ServerMetrics.for_registry`` with a registry of their own. The engines' own count of running requests is
read live at scrape time (``engine_gauges``), not mirrored.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import prometheus_client

from openai_routes.core.registry import ModelRegistry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class ServerMetrics:
    def __init__(self, factory: Any = prometheus_client) -> None:
        histogram, counter, gauge = factory.Histogram, factory.Counter, factory.Gauge
        self.ttft = histogram(
            "bento_oai_time_to_first_token_seconds", "Time to the first generated token.", ["model"],
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.itl = histogram(
            "bento_oai_inter_token_latency_seconds", "Time between streamed generation steps, per token.", ["model"],
            buckets=TOKEN_LATENCY_BUCKETS,
        )  # fmt: skip
        self.latency = histogram(
            "bento_oai_request_duration_seconds", "End-to-end request latency.", ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.prompt_tokens = counter("bento_oai_prompt_tokens", "Prompt tokens processed.", ["model"])
        self.generation_tokens = counter("bento_oai_generation_tokens", "Tokens generated.", ["model"])
        self.requests = counter("bento_oai_requests", "Requests answered, by status.", ["model", "status"])
        self.in_flight = gauge(
            "bento_oai_requests_in_flight", "Requests admitted and running.", ["model"], multiprocess_mode="livesum"
        )
        self.queued = gauge(
            "bento_oai_requests_queued", "Requests waiting for admission.", ["model"], multiprocess_mode="livesum"
        )
        self.batch_lines = counter(
            "bento_oai_batch_lines", "Batch lines finished, by status (completed, failed, expired, cancelled).",
            ["status"],
        )  # fmt: skip
        self.batch_lines_in_flight = gauge(
            "bento_oai_batch_lines_in_flight", "Batch lines running.", multiprocess_mode="livesum"
        )

    @classmethod
    def for_registry(cls, registry: prometheus_client.CollectorRegistry) -> ServerMetrics:
        class Factory:
            Histogram = partial(prometheus_client.Histogram, registry=registry)
            Counter = partial(prometheus_client.Counter, registry=registry)
            Gauge = partial(prometheus_client.Gauge, registry=registry)

        return cls(Factory)


def engine_gauges(registry: ModelRegistry) -> str:
    """Prometheus text for each engine's own count of unfinished requests (appended to ``/metrics``)."""
    name = "bento_oai_engine_requests_running"
    lines = [f"# HELP {name} Requests the engine itself has not finished.", f"# TYPE {name} gauge"]
    lines += [f'{name}{{model="{model.id}"}} {model.engine.num_in_flight()}' for model in registry.bases()]
    return "\n".join(lines) + "\n"
