"""The controller's own Prometheus endpoint (optional ``--metrics-port``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class ControllerCollector:
    def __init__(self, name: str, read: Callable[[], dict[str, float]]) -> None:
        self.name, self.read = name, read

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        v = self.read()
        labels = ["controller"]
        for key, help_text in (("claimed", "Jobs claimed"), ("done", "Jobs finished ok"),
                               ("failed", "Jobs that failed"),
                               ("staged", "Short jobs sent to a worker behind its running one")):
            c = CounterMetricFamily(f"atomiverse_controller_jobs_{key}", help_text,
                                    labels=labels)
            c.add_metric([self.name], v[key])
            yield c
        for key, help_text in (("running", "Jobs running in workers"),
                               ("queued", "Jobs claimed, waiting for a slot"),
                               ("slots", "Worker slots"),
                               ("warm_workers", ("Worker processes running; idle ones "
                                                 "stop after worker_idle_seconds")),
                               ("heartbeat_age_seconds", ("Seconds since the last heartbeat "
                                                          "the server answered"))):
            g = GaugeMetricFamily(f"atomiverse_controller_{key}", help_text, labels=labels)
            g.add_metric([self.name], v[key])
            yield g


def serve_metrics(port: int, name: str, read: Callable[[], dict[str, float]]) -> None:
    registry = CollectorRegistry()
    registry.register(ControllerCollector(name, read))
    start_http_server(port, addr="127.0.0.1", registry=registry)
