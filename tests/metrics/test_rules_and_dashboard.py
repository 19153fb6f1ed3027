"""The alert rules and the Grafana dashboard: valid for promtool, unit-tested, and naming only metrics v6nat exports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from metrics_promql import all_exprs, grafana_to_promql, metric_names

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "contrib/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "contrib/grafana/v6nat.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_alert_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    exprs = list(all_exprs(json.loads(DASHBOARD.read_text())))
    assert len(exprs) >= 15
    # promtool has no "check expression": wrap each one in a recording rule and check the file.
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(v6nat_x_bucket{a="b{c}"}[5m])))') == {"v6nat_x_bucket"}
    assert metric_names("time() - v6nat_t{instance=~\".*\"} > 1e3 and on() v6nat_u") == {"v6nat_t", "v6nat_u"}


def test_dashboard_and_alerts_name_only_exported_metrics(exported: set[str]) -> None:
    sources = {
        "dashboard": list(all_exprs(json.loads(DASHBOARD.read_text()))),
        "alerts": list(all_exprs(yaml.safe_load(ALERTS.read_text()))),
    }
    for source, exprs in sources.items():
        for expr in exprs:
            names = metric_names(grafana_to_promql(expr))
            assert names, f"{source}: {expr!r} reads no metric"
            assert names <= exported, f"{source}: {expr!r} reads {sorted(names - exported)}, not exported"
