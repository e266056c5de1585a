"""The alert rules of deploy/prometheus/ under Debian's promtool (issue 15): they load, their
unit tests pass, and every alert has a test where it fires and one where it stays silent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERT_TESTS = RULES_DIR / "alerts.test.yml"


def promtool(*args: str) -> None:
    # not a skip: scripts/test.sh installs it, and a skipped check would look like a pass
    assert shutil.which("promtool"), "promtool is missing: run scripts/ops-deps.sh"
    done = subprocess.run(
        ["promtool", *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def alert_cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def test_the_rules_load() -> None:
    promtool("check", "rules", ALERTS.name)


def test_the_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", ALERT_TESTS.name)


def test_every_alert_is_tested_firing_and_silent() -> None:
    # the test file must load the very rules the deployment loads
    assert yaml.safe_load(ALERT_TESTS.read_text())["rule_files"] == [ALERTS.name]
    firing = {case["alertname"] for case in alert_cases() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in alert_cases() if not case.get("exp_alerts")}
    names = alert_names()
    assert names, "no alerts found"
    assert names - firing == set(), "alerts with no test where they fire"
    assert names - silent == set(), "alerts with no test where they stay silent"
    # a case for a name alerts.yml does not have checks nothing (promtool passes it)
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_a_firing_case_checks_the_alert_annotations() -> None:
    for case in alert_cases():
        for alert in case.get("exp_alerts") or []:
            assert alert.get("exp_annotations", {}).get("summary"), case["alertname"]
            assert alert["exp_labels"]["severity"] in ("page", "ticket"), case["alertname"]
