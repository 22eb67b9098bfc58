"""The course server's Prometheus metrics: what /metrics exposes and Lab-2.7 scrapes, plots and alerts on.

Each app gets its own `CollectorRegistry` (not prometheus_client's global one), so two servers in one
process — a notebook, a test run — never clash over a metric name. Names follow Prometheus conventions:
a unit suffix (`_seconds`), `_total` on counters (added by prometheus_client).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "course_server"
# Latency buckets for a small model on a CPU up to a larger one on a GPU: first tokens take 50 ms to tens
# of seconds under load, later tokens a few ms to a second.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class ServerMetrics:
    """Request counts by route and status, latency histograms, token counters, queue and batch gauges."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "Whole request, first byte in to "
                                  "last byte out (streams included)", ["route"], buckets=DURATION_BUCKETS,
                                  registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "From queueing a request to its "
                              "first generated token (queue wait + prefill)", buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Between two consecutive tokens of "
                             "one request (one decode step of the batch)", buckets=ITL_BUCKETS, registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter(f"{PREFIX}_completion_tokens", "Generated tokens (cancelled "
                                         "requests included: they cost compute too)", registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests waiting to join the batch", registry=r)
        self.in_flight = Gauge(f"{PREFIX}_in_flight_requests", "Requests generating in the batch now",
                               registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Requests in each model step (continuous "
                                    "batching at work)", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric above."""
        return generate_latest(self.registry)
