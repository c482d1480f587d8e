"""Prometheus metrics at ``/metrics``: job states and controller health read from the
database at scrape time (true across several server processes), plus this process's claim
and report counters and claim latency."""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.engine import Engine

from .db import controllers, jobs, read_tx

REGISTRY = CollectorRegistry(auto_describe=True)
JOBS_CLAIMED = Counter("atomiverse_jobs_claimed_total", "Jobs leased to controllers",
                       registry=REGISTRY)
JOBS_HANDED_OFF = Counter("atomiverse_jobs_handed_off_total",
                          "Jobs claimed for a waiting controller by the submission that made "
                          "them (included in atomiverse_jobs_claimed_total)", registry=REGISTRY)
JOBS_REPORTED = Counter("atomiverse_jobs_reported_total", "Results accepted from controllers",
                        ["outcome"], registry=REGISTRY)
CLAIM_LATENCY = Histogram("atomiverse_claim_seconds", "Time to answer a claim that found work",
                          registry=REGISTRY,
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


class DatabaseCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily("atomiverse_jobs", "Jobs by state", labels=["state"])
        online = GaugeMetricFamily("atomiverse_controllers", "Controllers by status",
                                   labels=["status"])
        slots = GaugeMetricFamily("atomiverse_controller_slots", "Slots and running jobs",
                                  labels=["controller", "kind"])
        age = GaugeMetricFamily("atomiverse_controller_heartbeat_age_seconds",
                                "Seconds since a controller was last heard from",
                                labels=["controller"])
        now = time.time()
        with read_tx(self.engine) as conn:
            for state, n in conn.execute(sa.select(jobs.c.state, sa.func.count())
                                         .group_by(jobs.c.state)):
                states.add_metric([state], n)
            running = dict(conn.execute(sa.select(jobs.c.claimed_by, sa.func.count())
                                        .where(jobs.c.state == "running")
                                        .group_by(jobs.c.claimed_by)).all())
            by_status: dict[str, int] = {}
            for c in conn.execute(sa.select(controllers.c.id, controllers.c.name,
                                            controllers.c.status, controllers.c.slots,
                                            controllers.c.last_seen_at)):
                by_status[c.status] = by_status.get(c.status, 0) + 1
                slots.add_metric([c.name, "slots"], c.slots)
                slots.add_metric([c.name, "running"], running.get(c.id, 0))
                age.add_metric([c.name], max(0.0, now - c.last_seen_at))
            for status, n in by_status.items():
                online.add_metric([status], n)
        yield from (states, online, slots, age)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def build_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(engine))
    for metric in (JOBS_CLAIMED, JOBS_HANDED_OFF, JOBS_REPORTED, CLAIM_LATENCY):
        registry.register(metric)
    return registry
