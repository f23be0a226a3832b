"""Shared paths and loaders for the monitoring checks."""

from __future__ import annotations

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "tollgate.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def load_yaml(path: pathlib.Path):
    return yaml.safe_load(path.read_text())


def rules() -> list[dict]:
    """Every rule of the shipped rules file, each with its group name under `group`."""
    out = []
    for group in load_yaml(RULES_FILE)["groups"]:
        for rule in group["rules"]:
            out.append(dict(rule, group=group["name"]))
    return out


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]
