"""Prometheus metrics of the server (prometheus_client, one registry per server) and the price
per token: dollars per million tokens = hourly price / tokens generated per busy hour."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class ServerMetrics:
    """Counters the routes and the decode loop update; `render` gives the text format."""

    def __init__(self, price_per_hour: float) -> None:
        self.price_per_hour = price_per_hour
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "frugal_requests", "Requests by route and HTTP status.", ["route", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "frugal_tokens", "Tokens by kind (prompt, reasoning, answer).", ["kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "frugal_request_latency_seconds", "Time from request to last token.", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.first_token = Histogram(
            "frugal_time_to_first_token_seconds", "Time from request to first streamed token.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "frugal_batch_size", "Rows in each decode step.", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.cancelled = Counter(
            "frugal_requests_cancelled", "Requests whose client left or whose deadline passed, "
            "by where they were (queued: dropped before their prompt was processed).", ["where"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "frugal_queue_waiting", "Requests waiting for a batch slot.", registry=self.registry,
        )
        self.busy = Gauge(
            "frugal_busy_seconds", "Seconds with at least one request in flight.",
            registry=self.registry,
        )
        self.price = Gauge(
            "frugal_dollars_per_million_tokens",
            "Hourly price divided by generated tokens per busy hour, times one million.",
            registry=self.registry,
        )
        Gauge(
            "frugal_machine_price_per_hour", "The configured hourly price in dollars.",
            registry=self.registry,
        ).set(price_per_hour)
        self.generated = 0

    def count_tokens(self, prompt: int, reasoning: int, answer: int) -> None:
        self.tokens.labels("prompt").inc(prompt)
        self.tokens.labels("reasoning").inc(reasoning)
        self.tokens.labels("answer").inc(answer)
        self.generated += reasoning + answer

    def dollars_per_million(self, busy_seconds: float) -> float | None:
        """None until something was generated."""
        if not self.generated or busy_seconds <= 0:
            return None
        tokens_per_hour = self.generated / busy_seconds * 3600
        return self.price_per_hour / tokens_per_hour * 1e6

    def render(self, busy_seconds: float, waiting: int) -> bytes:
        self.busy.set(busy_seconds)
        self.waiting.set(waiting)
        price = self.dollars_per_million(busy_seconds)
        self.price.set(price if price is not None else 0.0)
        return generate_latest(self.registry)
