"""The shipped alert rules: every alert carries what an on-call person needs, has a runbook,
and has promtool unit tests that make it fire and that hold other series quiet.

promtool itself (check config / check rules / test rules) runs in scripts/check-monitoring;
this file checks what promtool does not: our conventions.
"""

from __future__ import annotations

import re

import pytest

from conftest import ROOT, RULE_TESTS, alerts, load_yaml, rules

SEVERITIES = {"critical", "warning", "info"}


def test_rule_names_are_unique():
    names = [r.get("alert") or r["record"] for r in rules()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_recording_rule_names_follow_level_metric_operation():
    for r in rules():
        if "record" in r:
            assert re.fullmatch(r"[a-z_]+:llm_gateway_[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_has_severity_summary_description_and_runbook(alert):
    assert alert["labels"]["severity"] in SEVERITIES
    ann = alert["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert ann.get(key, "").strip(), f"{alert['alert']}: missing {key}"
    assert ann["runbook_url"] == f"docs/runbooks/{alert['alert']}.md"
    runbook = ROOT / ann["runbook_url"]
    assert runbook.is_file(), f"{runbook} missing"
    text = runbook.read_text()
    assert text.startswith(f"# {alert['alert']}\n")
    assert f"**{alert['labels']['severity']}**" in text, "runbook states another severity"


def _alert_tests():
    """(file, test name, eval_time, alertname, expected alerts) of every alert_rule_test."""
    out = []
    for path in RULE_TESTS:
        doc = load_yaml(path)
        assert doc["rule_files"] == ["../rules/tollgate.rules.yml"], path
        for t in doc["tests"]:
            for a in t.get("alert_rule_test", []):
                out.append((path.name, t["name"], a["eval_time"], a["alertname"],
                            a.get("exp_alerts") or [], t["input_series"]))
    return out


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_a_firing_and_a_quiet_case(alert):
    """A unit test where it fires (exact annotations included) and input that must not fire
    it: either an evaluation expecting no alert, or a firing case whose input holds more
    series than fire (promtool compares the whole list, so the others are proven quiet)."""
    name = alert["alert"]
    cases = [c for c in _alert_tests() if c[3] == name]
    firing = [c for c in cases if c[4]]
    assert firing, f"{name}: no unit test makes it fire"
    for c in firing:
        for exp in c[4]:
            assert exp["exp_labels"]["severity"] == alert["labels"]["severity"]
            assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
    quiet = [c for c in cases if not c[4]]
    extra_series = [c for c in firing if len(c[5]) > len(c[4])]
    assert quiet or extra_series, f"{name}: no input that must not fire it"


def test_every_unit_test_names_an_existing_alert():
    names = {a["alert"] for a in alerts()}
    for c in _alert_tests():
        assert c[3] in names, c


def test_runbooks_are_exactly_the_alerts():
    books = {p.stem for p in (ROOT / "docs" / "runbooks").glob("*.md")} - {"README"}
    assert books == {a["alert"] for a in alerts()}


def test_readme_lists_every_alert():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(Tollgate\w+)` \|", section, re.M))
    assert listed == {a["alert"] for a in alerts()}
