"""compose.yaml's monitoring profile and deploy/: Prometheus scrapes the bot with
its key, and the Grafana dashboard asks only for metrics storybot serves."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def test_the_monitoring_profile_adds_prometheus_and_grafana_beside_the_bot() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    profiled = {
        name: s for name, s in compose["services"].items() if "monitoring" in s.get("profiles", ())
    }
    # Only with `--profile monitoring`: a plain `docker compose up` runs the bot alone
    # (the postgres profile's server: tests/app/test_dockerfile.py).
    assert {name: s["profiles"] for name, s in profiled.items()} == {
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
    }
    assert all("profiles" in s for name, s in compose["services"].items() if name != "storybot")
    services = profiled
    for service in services.values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            assert not source.startswith("./") or (REPO / source).exists(), source
    # The key reaches Prometheus as a secret file, never as its environment.
    assert compose["secrets"]["storybot_api_key"] == {"environment": "HTTP_API_KEY"}
    assert services["prometheus"]["secrets"] == ["storybot_api_key"]
    assert "environment" not in services["prometheus"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["storybot:5000"]  # compose.yaml's port
    assert job["authorization"]["credentials_file"] == "/run/secrets/storybot_api_key"
    base = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    assert "storybot" in base and "5000:5000" in base["storybot"]["ports"][0]


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "storybot.yaml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "storybot.json").read_text())
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in [panel, *panel.get("targets", [])]
        if "datasource" in target
    }
    # Every query goes through the dashboard's datasource variable, which
    # defaults to the provisioned Prometheus and can be any other on import.
    assert uids == {"${datasource}"}
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert variable["current"]["value"] == source["uid"]


def test_the_dashboard_asks_only_for_metrics_storybot_serves() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "storybot.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    asked = {
        name
        for expr in expressions
        for name in re.findall(r"\b((?:storybot|process)_[a-z_]+)", expr)
    }
    served = set()  # every name a scrape can hold, samples or not yet
    for family in Metrics(CollectorRegistry()).registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        served |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    assert asked and asked <= served, asked - served
    # The list: each of these is on the dashboard.
    for wanted in (
        "storybot_requests_total",
        "storybot_queue_depth",
        "storybot_running_rows",
        "storybot_time_to_first_token_seconds_bucket",
        "storybot_story_seconds_bucket",
        "storybot_new_tokens_total",
        "storybot_engine_tokens_per_second",
        "storybot_batch_rows_sum",
        "storybot_remote_retries_total",
        "storybot_remote_failures_total",
        "storybot_discord_api_errors_total",
        "storybot_discord_rate_limit_waits_total",
        "storybot_models_loaded",
        "storybot_model_evictions_total",
        "storybot_database_write_seconds_bucket",
    ):
        assert wanted in asked, wanted
