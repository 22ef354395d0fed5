"""The shipped alert rules and dashboard: valid for Prometheus and Grafana.

`promtool` (Debian's `prometheus` package; .ci/run installs it) checks the rules and runs
their unit tests (deploy/prometheus/alerts.test.yml). Without it the test skips, except on
CI (CI=true), where it fails. That every metric the rules and the dashboard name is really
exported is checked against real scrapes in test_operating.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "pizza-saga.json"

_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords aside)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", query)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[found.end() :].lstrip()
        word = found.group()
        if following.startswith("(") or word.lower() in _PROMQL_WORDS or word.startswith("$"):
            continue
        names.add(word)
    return names


def rule_expressions() -> list[str]:
    """Each alert rule's expression, from the shipped rules file (YAML read by promtool)."""
    # No YAML library in the product: each `expr:` is a folded scalar or a one-liner.
    lines = RULES.read_text().splitlines()
    exprs: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        rest = stripped.removeprefix("expr:").strip()
        if rest not in (">-", ">", "|", "|-"):
            exprs.append(rest)
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following.strip())
        exprs.append(" ".join(body))
    return exprs


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing on CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


@pytest.mark.processes
def test_promtool_accepts_the_alert_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


@pytest.mark.processes
def test_the_alerts_fire_when_and_only_when_their_unit_tests_say() -> None:
    tested = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_loads_and_every_panel_queries_prometheus() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "pizza-saga"
    titles = [panel["title"] for panel in board["panels"]]
    assert len(titles) == len(set(titles))
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_metric_names_are_read_out_of_promql() -> None:
    query = (
        'histogram_quantile(0.95, sum by (le, task_queue) (rate(saga_x_bucket{step="a"}[5m])))'
        " / on (task_queue) group_left sum(pizza_y_total) or absent_over_time(up[2m])"
    )
    assert metric_names(query) == {"saga_x_bucket", "pizza_y_total", "up"}
    assert len(rule_expressions()) == 5
