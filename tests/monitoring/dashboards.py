"""Reading the shipped Grafana dashboards: their panels, queries and template variables, and
filling the variables in the way Grafana would, so the queries can run on a real Prometheus."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from conftest import DASHBOARDS

# Grafana's built-in interval variables, with values that suit a short test: the end-to-end
# test scrapes every second, so a 1 minute rate window spans the whole run's traffic.
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
ALL = ".*"  # allValue of the team/provider/model variables


@dataclass
class Query:
    dashboard: str
    panel_id: int
    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}]"


def load(path) -> dict:
    return json.loads(path.read_text())


def boards() -> dict[str, dict]:
    return {p.name: load(p) for p in DASHBOARDS}


def panels(board: dict) -> list[dict]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out = []
    for p in board["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def queries() -> list[Query]:
    out = []
    for name, board in boards().items():
        for p in panels(board):
            for t in p.get("targets", []):
                out.append(Query(board["title"], p["id"], p["title"], t["refId"], t["expr"],
                                 bool(t.get("instant"))))
    return out


def variable_queries() -> list[tuple[str, str]]:
    """(dashboard, label_values(...) query) of every query variable."""
    out = []
    for board in boards().values():
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                out.append((board["title"], q))
    return out


def fill(expr: str, values: dict[str, str] | None = None) -> str:
    """Replaces $var, ${var} and Grafana's interval variables; variables not given are All."""
    values = dict(BUILTINS, **(values or {}))

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, ALL)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """label_values(selector, label) -> (selector or None, label)."""
    m = LABEL_VALUES.match(query.strip())
    if not m:
        raise ValueError(f"not a label_values() query: {query}")
    return m.group(1), m.group(2)
