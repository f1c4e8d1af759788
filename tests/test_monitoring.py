"""Alerting rules pass their promtool unit tests, and every metric the rules and the Grafana
dashboard query is one a live daemon exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import Spawned, daemon_env, http_get, require_tool

pytestmark = pytest.mark.e2e  # it runs real tools or processes

MONITORING = Path(__file__).parent.parent / "deploy" / "monitoring"
PROMETHEUS_OWN = {"up"}


def test_alert_rules_pass_promtool_unit_tests() -> None:
    promtool = require_tool("promtool")
    for argv in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run(
            [promtool, *argv], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def queried_metrics() -> set[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\b(orca_[a-z_]+|up)\b(?=\s*[{\[)=<>!]|\s*$)", expr))
    return names


def exported(metrics_text: str) -> set[str]:
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    return names


def test_every_queried_metric_is_exported_by_a_live_daemon(
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    tmp_path: Path,
    processes: Spawned,
) -> None:
    env = daemon_env(served_tradovate, redis_server.url, ORCA_HEALTH_ADDR="127.0.0.1:0")
    daemon = processes.start(env, cwd=str(tmp_path))
    health = daemon.event("daemon.starting")["health"]
    daemon.event("token.refreshed")
    metrics = wait_for(
        lambda: (
            (text := http_get(f"http://{health}/metrics")[1]) and "orca_leader 1.0" in text and text
        ),
        what="a leading daemon's metrics",
    )
    queried = queried_metrics()
    assert "orca_token_expiry_timestamp_seconds" in queried
    assert len(queried) >= 8
    assert queried - PROMETHEUS_OWN - exported(metrics) == set()
