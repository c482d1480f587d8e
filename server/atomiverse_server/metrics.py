"""Prometheus metrics at ``/metrics``: job states and controller health read from the
database at scrape time (true across several server processes), plus this process's claim
and report counters and claim latency. Per-controller series (named after tenants'
controllers) only for a credential that may see them."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.engine import Engine

from .db import controllers, jobs, read_tx
from .deps import workspace_for_bearer
from .notify import Notifier

REGISTRY = CollectorRegistry(auto_describe=True)
JOBS_CLAIMED = Counter("atomiverse_jobs_claimed_total", "Jobs leased to controllers",
                       registry=REGISTRY)
JOBS_HANDED_OFF = Counter("atomiverse_jobs_handed_off_total",
                          "Jobs claimed for a waiting controller by the submission that made "
                          "them (included in atomiverse_jobs_claimed_total)", registry=REGISTRY)
JOBS_REPORTED = Counter("atomiverse_jobs_reported_total", "Results accepted from controllers",
                        ["outcome"], registry=REGISTRY)
FAST_ANSWERS = Counter("atomiverse_fast_answers_total", "Submit-and-wait, claim and report "
                       "requests answered below FastAPI (fastwrites), by route", ["route"],
                       registry=REGISTRY)
CLAIM_LATENCY = Histogram("atomiverse_claim_seconds", "Time to answer a claim that found work",
                          registry=REGISTRY,
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


ALL_WORKSPACES = "*"  # the operator's view (metrics token)


class DatabaseCollector:
    """``scope``: None for an anonymous scrape (totals only: controller names are tenant
    data), a workspace id for that workspace's controllers, or ``ALL_WORKSPACES``."""

    def __init__(self, engine: Engine, scope: str | None) -> None:
        self.engine, self.scope = engine, scope

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily("atomiverse_jobs", "Jobs by state", labels=["state"])
        online = GaugeMetricFamily("atomiverse_controllers", "Controllers by status",
                                   labels=["status"])
        totals = GaugeMetricFamily("atomiverse_controller_slots_total",
                                   "Slots and running jobs of all controllers", labels=["kind"])
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
            all_slots = all_running = 0
            for c in conn.execute(sa.select(controllers.c.id, controllers.c.workspace_id,
                                            controllers.c.name, controllers.c.status,
                                            controllers.c.slots, controllers.c.last_seen_at)):
                by_status[c.status] = by_status.get(c.status, 0) + 1
                all_slots += c.slots
                all_running += running.get(c.id, 0)
                if self.scope in (ALL_WORKSPACES, c.workspace_id):
                    slots.add_metric([c.name, "slots"], c.slots)
                    slots.add_metric([c.name, "running"], running.get(c.id, 0))
                    age.add_metric([c.name], max(0.0, now - c.last_seen_at))
            for status, n in by_status.items():
                online.add_metric([status], n)
            totals.add_metric(["slots"], all_slots)
            totals.add_metric(["running"], all_running)
        yield from (states, online, totals)
        if self.scope is not None:
            yield from (slots, age)


class ParkedCollector:
    """This process's parked long-polls, read at scrape time: totals only, no tenant labels.
    A test waits for a poll to be parked on these, not for a guessed while."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("atomiverse_parked_claims",
                                "Controllers' claim polls parked in this process, waiting for "
                                "work", value=self.notifier.claim_waiters.parked())
        yield GaugeMetricFamily("atomiverse_parked_waits",
                                "Job waits and watches parked in this process past their first "
                                "read, asleep until a job changes or their time runs out",
                                value=self.notifier.watches.asleep)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Anyone may scrape totals; per-controller series need a credential that may see them:
    the operator's metrics token (``ATOMIVERSE_METRICS_TOKEN``) for all of them, a workspace's
    API key for its own (issue 23: controller names of every tenant were public)."""
    scope = await _scope(request)
    database = CollectorRegistry()
    database.register(DatabaseCollector(request.app.state.engine, scope))
    database.register(ParkedCollector(request.app.state.notifier))
    text = await run_in_threadpool(generate_latest, database)
    return Response(generate_latest(request.app.state.metrics_registry) + text,
                    media_type=CONTENT_TYPE_LATEST)


async def _scope(request: Request) -> str | None:
    operator_token = request.app.state.settings.metrics_token
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        return None
    if operator_token and hmac.compare_digest(secret.encode(), operator_token.encode()):
        return ALL_WORKSPACES
    workspace = await workspace_for_bearer(request, secret)
    return workspace.id if workspace is not None else None


def build_registry(engine: Engine) -> CollectorRegistry:
    """This process's counters; the database's gauges are collected per scrape, scoped to the
    credential that asks (``engine`` is kept for callers' sake)."""
    registry = CollectorRegistry()
    for metric in (JOBS_CLAIMED, JOBS_HANDED_OFF, JOBS_REPORTED, CLAIM_LATENCY, FAST_ANSWERS):
        registry.register(metric)
    return registry
