"""Structure Grafana needs from the shipped dashboards, checked without Grafana: unique panel
ids, grid positions on the 24-column grid without overlaps, every panel and target on the
`datasource` variable, known units, targets on every panel, the template variables; every
query parses (promtool, each wrapped as a recording rule); the JSON is what
deploy/grafana/build_dashboards.py writes. That the queries return data is the end-to-end
test's job (test_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import DASHBOARDS, DEPLOY
from dashboards import boards, fill, panels, parse_label_values, queries, variable_queries

DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids the dashboards may use (a subset of Grafana's catalogue), plus custom
# "suffix:<text>" units.
UNITS = {"short", "none", "percent", "percentunit", "s", "ms", "µs", "ns", "bytes", "decbytes",
         "reqps", "ops", "rps", "currencyUSD", "dtdurations"}
TITLES = {"LLM Gateway Token Usage", "LLM Cost and Budgets", "LLM Gateway Health"}
# Panels the dashboards promise (README, docs/metrics.md): title -> dashboard.
REQUIRED = {
    "LLM Gateway Token Usage": ["Token usage rate by model and provider", "Cumulative token usage",
                                "Total tokens per model"],
    "LLM Cost and Budgets": ["Total spend (time range)", "Spend by team (USD per hour)",
                             "Spend by provider (USD per hour)", "Spend by model (USD per hour)",
                             "Top consumers (team / key)", "Cost per day by team",
                             "Cost per week by team", "Cost per month (30 days) by team",
                             "Team budgets used", "Budget spent vs limit",
                             "Metered vs ledger spend", "Output / input token ratio by model",
                             "Cache hit ratio (time range)", "USD saved by the cache (time range)",
                             "USD saved by team and model (USD per hour)",
                             "Cache fetch latency by result", "Cache entries", "Cache memory",
                             "Cache bypasses by reason and evictions"],
    "LLM Gateway Health": ["Requests by status code", "Errors by type and provider",
                           "Request latency percentiles by model",
                           "Time to first token percentiles by model",
                           "Rate limit: allowed vs blocked", "In-flight requests by provider",
                           "Gateway overhead", "CPU (cores)", "Resident memory"],
}


def test_three_dashboards_with_their_titles_and_unique_uids():
    b = boards()
    assert {d["title"] for d in b.values()} == TITLES
    uids = [d["uid"] for d in b.values()]
    assert len(set(uids)) == len(uids) == 3
    for d in b.values():
        assert d["schemaVersion"] >= 36 and d["panels"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables(path):
    board = json.loads(path.read_text())
    v = {x["name"]: x for x in board["templating"]["list"]}
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    for name in ("team", "provider", "model"):
        assert v[name]["type"] == "query"
        assert v[name]["datasource"] == DS_REF
        assert v[name]["includeAll"] and v[name]["multi"] and v[name]["allValue"] == ".*"
        selector, label = parse_label_values(v[name]["query"]["query"])
        assert label == name and selector


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_ids_grid_datasource_units_targets(path):
    board = json.loads(path.read_text())
    ids = [p["id"] for p in board["panels"]] + [q["id"] for p in board["panels"]
                                                 for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells = set()
    for p in board["panels"] + [q for p in board["panels"] for q in p.get("panels", [])]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh"), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']}: past the 24 grid columns"
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (mine & cells), f"{p['title']} overlaps another panel"
        cells |= mine
        assert p.get("title"), "panel without a title"
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS_REF, p["title"]
        unit = p["fieldConfig"]["defaults"]["unit"]
        assert unit in UNITS or unit.startswith("suffix:"), f"{p['title']}: unit {unit}"
        assert p["targets"], f"{p['title']}: no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
            assert t["expr"].strip(), p["title"]


def test_required_panels_exist():
    by_title = {d["title"]: {p["title"] for p in panels(d)} for d in boards().values()}
    for board, titles in REQUIRED.items():
        missing = set(titles) - by_title[board]
        assert not missing, f"{board}: missing {missing}"


def test_every_query_uses_the_variables_of_its_family():
    """Token, cost, request and error queries follow the team/provider/model selection."""
    for q in queries():
        for fam in ("tokens_total", "cost_usd_total", "requests_total{", "errors_total{",
                    "ledger_cost_usd", "ledger_requests"):
            if f"llm_gateway_{fam}" in q.expr and "requests_in_flight" not in q.expr:
                assert '$team' in q.expr and '$model' in q.expr, q.name


def test_every_query_parses(tmp_path):
    """Each query, variables filled, wrapped as a recording rule: promtool parses them all."""
    rules = [{"record": f"dashboard:query:{i}", "expr": fill(q.expr)}
             for i, q in enumerate(queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_variable_queries_are_label_values():
    for board, q in variable_queries():
        parse_label_values(q)


def test_json_is_what_the_builder_writes(tmp_path):
    builder = DEPLOY / "grafana" / "build_dashboards.py"
    code = builder.read_text().replace(
        'OUT = pathlib.Path(__file__).resolve().parent / "dashboards"', f'OUT = pathlib.Path("{tmp_path}")')
    subprocess.run([sys.executable, "-c", code], check=True)
    for path in DASHBOARDS:
        assert (tmp_path / path.name).read_text() == path.read_text(), \
            f"{path.name} differs from build_dashboards.py's output: run it and commit"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in DASHBOARDS)
