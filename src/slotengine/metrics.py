"""Prometheus metrics: what each process counts, and what the whole engine shares.

Reservations and request latency are counted per API process, as Prometheus expects of
processes it scrapes one by one. Expiry lateness is observed wherever a hold lapses (workers,
mostly, which serve no HTTP), so its histogram lives in Redis and every API process exposes
the engine-wide figures. Active holds and queue length are read from PostgreSQL at scrape
time: the record, not a gauge that can drift.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RESERVATIONS = Counter(
    "slotengine_reservations",
    "reserveSlot calls by result: held, queued, replayed, or the error's type",
    ["result"],
    registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "slotengine_http_request_duration_seconds",
    "HTTP request latency by route, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
TRANSACTION_RETRIES = Counter(
    "slotengine_transaction_retries",
    "slot transactions run again after PostgreSQL aborted them, by SQLSTATE (40001, 40P01)",
    ["sqlstate"],
    registry=REGISTRY,
)
ACTIVE_HOLDS = Gauge("slotengine_active_holds", "bookings RESERVED now", registry=REGISTRY)
QUEUE_LENGTH = Gauge("slotengine_queue_length", "bookings PENDING (waiting) now", registry=REGISTRY)

EXPIRY_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SUM_FIELD = "sum"
_COUNT_FIELD = "count"


def lateness_fields(lateness_seconds: Iterable[float]) -> dict[str, float]:
    """Increments of the shared expiry histogram's Redis hash for these observations."""
    increments: dict[str, float] = {}
    for seconds in lateness_seconds:
        seconds = max(seconds, 0.0)
        index = bisect.bisect_left(EXPIRY_BUCKETS, seconds)
        bucket = str(EXPIRY_BUCKETS[index]) if index < len(EXPIRY_BUCKETS) else "+Inf"
        increments[bucket] = increments.get(bucket, 0) + 1
        increments[_SUM_FIELD] = increments.get(_SUM_FIELD, 0.0) + seconds
        increments[_COUNT_FIELD] = increments.get(_COUNT_FIELD, 0) + 1
    return increments


class SharedExpiryLateness(Collector):
    """The engine-wide expiry lateness histogram, as last read from Redis."""

    def __init__(self) -> None:
        self.fields: dict[str, float] = {}

    def update(self, raw: dict[Any, Any]) -> None:
        self.fields = {_text(k): float(v) for k, v in raw.items()}

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "slotengine_expiry_lateness_seconds",
            "time from a hold's expiresAt to its EXPIRED transition, engine-wide",
        )
        family.add_metric([], _cumulative(self.fields), self.fields.get(_SUM_FIELD, 0.0))
        yield family


def _cumulative(fields: dict[str, float]) -> Sequence[tuple[str, float]]:
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in (*map(str, EXPIRY_BUCKETS), "+Inf"):
        running += fields.get(bound, 0.0)
        buckets.append((bound, running))
    return buckets


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


EXPIRY_LATENESS = SharedExpiryLateness()
REGISTRY.register(EXPIRY_LATENESS)


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
