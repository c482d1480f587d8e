"""Finding: ``/metrics`` was unauthenticated and named every tenant's controllers. Now an
anonymous scrape gets totals only; a workspace's API key sees its own controllers' series; the
operator's metrics token (ATOMIVERSE_METRICS_TOKEN, environment only) sees all. Real server
process, controllers registered over the real protocol, parsed with prometheus_client."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from conftest import start_server, stop_process
from prometheus_client.parser import text_string_to_metric_families

OPERATOR_TOKEN = "metrics-operator-secret-for-this-test"


@pytest.fixture
def two_tenants(tmp_path):
    srv = start_server(tmp_path / "home", env_extra={"ATOMIVERSE_METRICS_TOKEN": OPERATOR_TOKEN})
    keys, tokens = {}, {}
    for tenant in ("tenant-a", "tenant-b"):
        keys[tenant] = srv.new_workspace(tenant)
        r = httpx.post(f"{srv.url}/api/v1/controllers/register",
                       headers={"Authorization": f"Bearer {keys[tenant]}"},
                       json={"name": f"{tenant}-secret-box", "slots": 3, "cores_per_job": 1,
                             "capacity": None, "engines": {"xtb": "6.5.1"},
                             "hostname": "test"})
        r.raise_for_status()
        tokens[tenant] = r.json()["token"]
    yield srv, keys, tokens
    stop_process(srv.proc)


def _scrape(url: str, secret: str | None = None) -> tuple[str, dict]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    r = httpx.get(f"{url}/metrics", headers=headers)
    assert r.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r.text, samples


def _controllers_named(samples: dict) -> set[str]:
    return {dict(labels)["controller"] for (_name, labels) in samples
            if "controller" in dict(labels)}


def test_anonymous_scrapes_see_totals_not_tenants(two_tenants):
    srv, _keys, tokens = two_tenants
    text, samples = _scrape(srv.url)
    assert "tenant-" not in text
    assert _controllers_named(samples) == set()
    assert samples[("atomiverse_controller_slots_total", (("kind", "slots"),))] == 6
    # Neither do a wrong token nor a controller token see more.
    assert _controllers_named(_scrape(srv.url, "not-the-token")[1]) == set()
    assert _controllers_named(_scrape(srv.url, tokens["tenant-a"])[1]) == set()
    # Nor does any series carry a workspace or a controller label.
    labels = {name for (_metric, pairs) in samples for name, _value in pairs}
    assert not labels & {"controller", "workspace", "workspace_id", "tenant"}, labels


def test_a_workspace_sees_its_own_controllers_and_the_operator_all(two_tenants):
    srv, keys, _tokens = two_tenants
    assert _controllers_named(_scrape(srv.url, keys["tenant-a"])[1]) == {"tenant-a-secret-box"}
    assert _controllers_named(_scrape(srv.url, OPERATOR_TOKEN)[1]) == {
        "tenant-a-secret-box", "tenant-b-secret-box"}
