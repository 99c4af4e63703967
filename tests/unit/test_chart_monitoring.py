"""The chart's observability (monitoring.*), tested by rendering it with helm: off by default;
on, a ServiceMonitor, a PrometheusRule and a Grafana dashboard whose every metric is one the
operator or the gateway really exports (a misspelt metric is an alert that never fires)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from docrelay.gateway.app import Metrics
from docrelay.handlers.runs_metrics import REGISTRY

CHART = Path(__file__).resolve().parents[2] / "charts" / "docrelay"
ALL_ON = (
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.grafanaDashboard.enabled=true",
    "operator.metrics.enabled=true",
)


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        from devkit import toolchain

        return str(toolchain.ensure("helm"))
    except Exception as exc:  # the toolchain builds helm from the Go module proxy
        pytest.skip(f"helm could not be built here ({type(exc).__name__}: {exc})")


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = [helm, "template", "acme", str(CHART), "-n", "team-a"]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kinds(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def exported() -> set[str]:
    """Every series name the operator's and the gateway's registries can expose."""
    names = set()
    for registry in (REGISTRY, Metrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return names


def metrics_in(text: str) -> set[str]:
    return set(re.findall(r"\b(docrelay_[a-z_]+)", text))


def test_nothing_by_default(helm: str) -> None:
    objects = render(helm)
    found = kinds(objects)
    assert "ServiceMonitor" not in found and "PrometheusRule" not in found
    assert not [
        o for o in found.get("ConfigMap", []) if o["metadata"]["name"].endswith("dashboard")
    ]


def test_the_service_monitor_scrapes_the_operator_and_the_gateway(helm: str) -> None:
    found = kinds(render(helm, *ALL_ON, "monitoring.serviceMonitor.labels.release=prom"))
    (monitor,) = found["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
        ("metrics", "/metrics"),
        ("http", "/metrics"),
    ]
    services = {s["metadata"]["name"]: s for s in found["Service"]}
    metrics = services["acme-docrelay-operator-metrics"]
    assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]
    # Without the operator's metrics there is no port to scrape: only the gateway's.
    only_gateway = kinds(render(helm, "monitoring.serviceMonitor.enabled=true"))
    (monitor,) = only_gateway["ServiceMonitor"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert "acme-docrelay-operator-metrics" not in {
        s["metadata"]["name"] for s in only_gateway["Service"]
    }


def test_the_alerts_cover_what_needs_a_person_with_real_metrics(helm: str) -> None:
    found = kinds(render(helm, *ALL_ON, "monitoring.prometheusRule.queueAgeSeconds=600"))
    (rule,) = found["PrometheusRule"]
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(rules) == {
        "DocrelayRunsDeadLettered",
        "DocrelayIntegrationPaused",
        "DocrelayQueuedTooLong",
        "DocrelayAgentFailing",
        "DocrelayGatewayRefusingDeliveries",
    }
    assert rules["DocrelayQueuedTooLong"]["expr"].endswith("> 600")
    assert (
        "docrelay replay {{ $labels.integration }}"
        in (rules["DocrelayRunsDeadLettered"]["annotations"]["description"])
    )
    used = metrics_in(json.dumps(rules))
    assert used and used <= exported(), used - exported()


def test_the_dashboard_shows_outcomes_latencies_and_the_queue_with_real_metrics(
    helm: str,
) -> None:
    found = kinds(render(helm, *ALL_ON))
    (config_map,) = [c for c in found["ConfigMap"] if c["metadata"]["name"].endswith("dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["docrelay.json"])
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title in (
        "Runs by outcome",
        "Event -> Job (start delay) percentiles",
        "Run duration percentiles",
        "Queue depth",
    ):
        assert title in panels, title
    percentiles = [t["legendFormat"] for t in panels["Run duration percentiles"]["targets"]]
    assert percentiles == ["p50", "p95", "p99"]
    used = metrics_in(config_map["data"]["docrelay.json"])
    assert used and used <= exported(), used - exported()


def test_a_typo_in_monitoring_values_is_refused(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render(helm, "monitoring.serviceMonitor.enabeld=true")
    assert "enabeld" in refused.value.stderr


def test_the_gauges_the_alerts_read() -> None:
    from datetime import UTC, datetime

    from docrelay.handlers import runs_metrics

    def run(name: str, created: str, phase: str | None) -> dict[str, Any]:
        status = {"phase": phase} if phase else {}
        return {
            "metadata": {"namespace": "team", "name": name, "creationTimestamp": created},
            "spec": {"integration": "orders"},
            "status": status,
        }

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    runs_metrics.observe_listing(
        [
            run("a", "2026-01-01T11:45:00Z", "Queued"),
            run("b", "2026-01-01T11:59:00Z", None),  # no phase yet: waiting too
            run("c", "2026-01-01T10:00:00Z", "Succeeded"),
        ],
        now,
    )
    assert runs_metrics.OLDEST_QUEUED.labels("team", "orders")._value.get() == 900
    assert runs_metrics.QUEUE_DEPTH.labels("team", "orders")._value.get() == 2

    def integration(name: str, **status: Any) -> dict[str, Any]:
        return {"metadata": {"namespace": "team", "name": name}, "spec": {}, "status": status}

    runs_metrics.observe_integrations(
        [
            integration("paused", conditions=[{"type": "Paused", "status": "True"}]),
            integration("resumed", conditions=[{"type": "Paused", "status": "False"}]),
            integration("agent", agent={"fix": {"state": "TestFailed"}}),
        ]
    )
    text = "\n".join(
        f"{s.name}{sorted(s.labels.items())}={s.value}"
        for family in runs_metrics.REGISTRY.collect()
        if family.name in ("docrelay_integration_paused", "docrelay_agent_failing")
        for s in family.samples
    )
    assert "('integration', 'paused')" in text and "('why', 'Paused')" in text
    assert "resumed" not in text
    assert "('integration', 'agent'), ('namespace', 'team'), ('task', 'fix')]=1.0" in text


@pytest.fixture(scope="module")
def promtool() -> str:
    """Prometheus's own checker, built from the Go module proxy like helm (devkit/toolchain)."""
    try:
        from devkit import toolchain

        return str(toolchain.ensure("promtool"))
    except Exception as exc:
        pytest.skip(f"promtool could not be built here ({type(exc).__name__}: {exc})")


def test_promtool_accepts_the_rules(helm: str, promtool: str, tmp_path: Path) -> None:
    (rule,) = kinds(render(helm, *ALL_ON))["PrometheusRule"]
    rules = tmp_path / "docrelay-rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
