#!/usr/bin/env python3
"""Writes the three Tollgate Grafana dashboards to deploy/grafana/dashboards/*.json.

The JSON files are what users import and what Grafana provisioning loads; this script is how
they are kept consistent (one datasource variable, the same team/provider/model variables and
label filters everywhere, unique panel ids, a tidy grid). Edit here, run it, commit both:
tests/monitoring/test_dashboards.py fails when the JSON and this script disagree.

    python3 deploy/grafana/build_dashboards.py
"""

from __future__ import annotations

import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label filters, by which labels a family carries.
TPM = 'team=~"$team", provider=~"$provider", model=~"$model"'  # tokens, cost, requests, errors, ledger
PM = 'provider=~"$provider", model=~"$model"'  # latency histograms, estimated, unpriced
P = 'provider=~"$provider"'  # in-flight
T = 'team=~"$team"'  # rate limits
GW = 'job="tollgate"'  # process_* of the gateway, not of other targets
RI = "$__rate_interval"
# MCP error types that are the caller's (refusals, bad bodies, leaving), not the tool's: as in
# the rule server_tool:llm_gateway_mcp_tool_errors:rate5m.
MCP_CALLER_ERRORS = ("forbidden_tool|rate_limited|budget_exceeded|limit_backend_down|client_gone|no_response|"
                     "header_mismatch|parse_error|invalid_request|body_too_large|body_timeout|body_read|batch_refused")


def variables() -> list[dict]:
    def query_var(name: str, label: str, query: str) -> dict:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-values"},
            "refresh": 2,  # on time range change
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "options": [],
            "regex": "",
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        query_var("team", "Team", "label_values(llm_gateway_requests_total, team)"),
        query_var("provider", "Provider",
                  'label_values(llm_gateway_requests_total{team=~"$team"}, provider)'),
        query_var("model", "Model",
                  'label_values(llm_gateway_requests_total{team=~"$team", provider=~"$provider"}, model)'),
    ]


class Board:
    """Lays panels out left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str):
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0

    def _place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def panel(self, kind: str, title: str, targets: list[tuple], *, unit: str, w: int = 12,
              h: int = 8, description: str = "", instant: bool = False, **extra) -> None:
        """targets: (expr, legend) or (expr, legend, {target overrides})."""
        tgts = []
        for i, t in enumerate(targets):
            expr, legend = t[0], t[1]
            tgt = {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr,
                   "legendFormat": legend, "range": not instant, "instant": instant}
            if len(t) > 2:
                tgt.update(t[2])
            tgts.append(tgt)
        defaults = {"unit": unit}
        defaults.update(extra.pop("defaults", {}))
        p = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": tgts,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": extra.pop("options", {}),
        }
        if kind == "timeseries":
            p["fieldConfig"]["defaults"].setdefault("custom", {"drawStyle": "line",
                                                               "fillOpacity": 10,
                                                               "lineWidth": 1})
            p["options"].setdefault("legend", {"displayMode": "table", "placement": "bottom",
                                               "calcs": ["mean", "max", "lastNotNull"]})
            p["options"].setdefault("tooltip", {"mode": "multi", "sort": "desc"})
        elif kind == "stat":
            p["options"].setdefault("reduceOptions", {"calcs": ["lastNotNull"], "fields": "",
                                                      "values": False})
            p["options"].setdefault("colorMode", "value")
            p["options"].setdefault("graphMode", "area")
        elif kind == "bargauge":
            p["options"].setdefault("reduceOptions", {"calcs": ["lastNotNull"], "fields": "",
                                                      "values": False})
            p["options"].setdefault("orientation", "horizontal")
            p["options"].setdefault("displayMode", "basic")
        elif kind == "piechart":
            p["options"].setdefault("reduceOptions", {"calcs": ["lastNotNull"], "fields": "",
                                                      "values": False})
            p["options"].setdefault("legend", {"displayMode": "table", "placement": "right",
                                               "values": ["value", "percent"]})
        p.update(extra)
        self.panels.append(p)

    def json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["tollgate", "llm"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables()},
            "annotations": {"list": []},
            "links": [{"title": "Tollgate dashboards", "type": "dashboards", "tags": ["tollgate"],
                       "asDropdown": True, "includeVars": True, "keepTime": True}],
            "panels": self.panels,
        }


def token_usage() -> Board:
    b = Board("tollgate-token-usage", "LLM Gateway Token Usage",
              "Tokens through Tollgate by model, provider and team (llm_gateway_*_tokens_total).")
    b.row("Overview")
    for title, fam in (("Total tokens", "total"), ("Prompt tokens", "prompt"),
                       ("Completion tokens", "completion")):
        b.panel("stat", f"{title} (time range)",
                [(f"sum(increase(llm_gateway_{fam}_tokens_total{{{TPM}}}[$__range]))", title)],
                unit="short", w=6, h=4, instant=True)
    b.panel("stat", "Tokens per second", [(f"sum(rate(llm_gateway_total_tokens_total{{{TPM}}}[{RI}]))", "tokens/s")],
            unit="suffix: tok/s", w=6, h=4)
    b.row("Rates")
    b.panel("timeseries", "Token usage rate by model and provider",
            [(f"sum by (provider, model) (rate(llm_gateway_prompt_tokens_total{{{TPM}}}[{RI}]))", "prompt {{provider}}/{{model}}"),
             (f"sum by (provider, model) (rate(llm_gateway_completion_tokens_total{{{TPM}}}[{RI}]))", "completion {{provider}}/{{model}}"),
             (f"sum by (provider, model) (rate(llm_gateway_total_tokens_total{{{TPM}}}[{RI}]))", "total {{provider}}/{{model}}")],
            unit="suffix: tok/s", w=24, h=9,
            description="Prompt (input, cached included), completion (output, reasoning included) and total tokens per second.")
    b.panel("timeseries", "Cumulative token usage",
            [(f"sum by (provider, model) (llm_gateway_total_tokens_total{{{TPM}}})", "{{provider}}/{{model}}")],
            unit="short",
            description="Total tokens since each gateway started (the counters restart at 0 with the process; use the ledger for restart-proof totals).")
    b.panel("bargauge", "Total tokens per model",
            [(f"sort_desc(sum by (model) (increase(llm_gateway_total_tokens_total{{{TPM}}}[$__range])))", "{{model}}")],
            unit="short", instant=True, description="Bar chart of tokens per model over the selected time range.")
    b.panel("timeseries", "Token usage rate by team",
            [(f"sum by (team) (rate(llm_gateway_total_tokens_total{{{TPM}}}[{RI}]))", "{{team}}")],
            unit="suffix: tok/s")
    b.panel("bargauge", "Top keys by tokens",
            [(f"topk(10, sum by (team, key) (increase(llm_gateway_total_tokens_total{{{TPM}}}[$__range])))", "{{team}} / {{key}}")],
            unit="short", instant=True)
    b.row("Token kinds")
    b.panel("timeseries", "Cached, cache-write and reasoning tokens",
            [(f"sum by (model) (rate(llm_gateway_cached_prompt_tokens_total{{{TPM}}}[{RI}]))", "cache read {{model}}"),
             (f"sum by (model) (rate(llm_gateway_cache_write_tokens_total{{{TPM}}}[{RI}]))", "cache write {{model}}"),
             (f"sum by (model) (rate(llm_gateway_reasoning_tokens_total{{{TPM}}}[{RI}]))", "reasoning {{model}}")],
            unit="suffix: tok/s", w=8,
            description="Parts of prompt tokens (cache reads and writes) and of completion tokens (reasoning).")
    b.panel("timeseries", "Tokens per request by model",
            [(f"sum by (model) (rate(llm_gateway_total_tokens_total{{{TPM}}}[{RI}])) / sum by (model) (rate(llm_gateway_requests_total{{{TPM}}}[{RI}]))", "{{model}}")],
            unit="short", w=8)
    b.panel("timeseries", "Requests with estimated usage",
            [(f"sum by (provider, model) (rate(llm_gateway_estimated_usage_requests_total{{{PM}}}[{RI}]))", "{{provider}}/{{model}}")],
            unit="reqps", w=8,
            description="Requests whose provider reported no usage: their tokens were counted with a tokenizer.")
    return b


def cost() -> Board:
    b = Board("tollgate-cost", "LLM Cost and Budgets",
              "Spend in USD from Tollgate's price table (llm_gateway_cost_usd_total), budgets and the usage ledger.")
    b.row("Spend")
    cost_ = f"llm_gateway_cost_usd_total{{{TPM}}}"
    b.panel("stat", "Total spend (time range)", [(f"sum(increase({cost_}[$__range]))", "USD")],
            unit="currencyUSD", w=4, h=4, instant=True)
    b.panel("stat", "Spend since gateway start", [(f"sum({cost_})", "USD")], unit="currencyUSD",
            w=4, h=4, description="The counters' current value: since each gateway process started.")
    b.panel("stat", "Spend last 24 h", [(f"sum(increase({cost_}[1d]))", "USD")], unit="currencyUSD",
            w=4, h=4, instant=True)
    b.panel("stat", "Spend last 7 days", [(f"sum(increase({cost_}[7d]))", "USD")], unit="currencyUSD",
            w=4, h=4, instant=True)
    b.panel("stat", "Spend last 30 days", [(f"sum(increase({cost_}[30d]))", "USD")], unit="currencyUSD",
            w=4, h=4, instant=True)
    b.panel("stat", "Spend rate", [(f"sum(rate({cost_}[{RI}])) * 3600", "USD/h")],
            unit="currencyUSD", w=4, h=4, description="USD per hour at the current rate.")
    b.panel("timeseries", "Spend by team (USD per hour)",
            [(f"sum by (team) (rate({cost_}[{RI}])) * 3600", "{{team}}")], unit="currencyUSD", w=8)
    b.panel("timeseries", "Spend by provider (USD per hour)",
            [(f"sum by (provider) (rate({cost_}[{RI}])) * 3600", "{{provider}}")], unit="currencyUSD", w=8)
    b.panel("timeseries", "Spend by model (USD per hour)",
            [(f"sum by (model) (rate({cost_}[{RI}])) * 3600", "{{model}}")], unit="currencyUSD", w=8)
    b.panel("bargauge", "Top consumers (team / key)",
            [(f"topk(10, sum by (team, key) (increase({cost_}[$__range])))", "{{team}} / {{key}}")],
            unit="currencyUSD", instant=True, w=8)
    b.panel("bargauge", "Top models by cost",
            [(f"topk(10, sum by (model) (increase({cost_}[$__range])))", "{{model}}")],
            unit="currencyUSD", instant=True, w=8)
    b.panel("piechart", "Spend by provider",
            [(f"sum by (provider) (increase({cost_}[$__range]))", "{{provider}}")],
            unit="currencyUSD", instant=True, w=8)
    b.panel("timeseries", "MCP tool cost by team (USD per hour)",
            [(f'sum by (team, server, tool) (rate(llm_gateway_mcp_tool_cost_usd_total{{team=~"$team"}}[{RI}])) * 3600',
              "{{team}} {{server}}/{{tool}}")],
            unit="currencyUSD", w=24, h=7,
            description="The configured cost of the MCP tool calls made ([[mcp_servers.tools]] cost_usd), "
                        "charged when the tool ran (a result or an isError result).")
    b.row("Per day, week, month")
    bars = {"custom": {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1, "stacking": {"mode": "normal"}}}
    b.panel("timeseries", "Cost per day by team",
            [(f"sum by (team) (increase({cost_}[1d]))", "{{team}}", {"interval": "1d"})],
            unit="currencyUSD", w=8, defaults=bars)
    b.panel("timeseries", "Cost per week by team",
            [(f"sum by (team) (increase({cost_}[7d]))", "{{team}}", {"interval": "7d"})],
            unit="currencyUSD", w=8, defaults=bars)
    b.panel("timeseries", "Cost per month (30 days) by team",
            [(f"sum by (team) (increase({cost_}[30d]))", "{{team}}", {"interval": "30d"})],
            unit="currencyUSD", w=8, defaults=bars)
    b.row("Budgets")
    budget_defaults = {"min": 0, "max": 1, "thresholds": {"mode": "absolute", "steps": [
        {"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 1}]}}
    b.panel("bargauge", "Team budgets used",
            [('max by (name, period) (llm_gateway_budget_spent_usd{scope="team", name=~"$team"})'
              ' / max by (name, period) (llm_gateway_budget_limit_usd{scope="team", name=~"$team"} > 0)',
              "{{name}} ({{period}})")],
            unit="percentunit", instant=True, w=8, defaults=budget_defaults,
            description="Spend this period over the budget (llm_gateway_budget_*_usd{scope=\"team\"}).")
    b.panel("bargauge", "Key budgets used",
            [('max by (name, period) (llm_gateway_budget_spent_usd{scope="key"})'
              ' / max by (name, period) (llm_gateway_budget_limit_usd{scope="key"} > 0)',
              "{{name}} ({{period}})")],
            unit="percentunit", instant=True, w=8, defaults=budget_defaults,
            description="Key budgets carry no team label, so the team filter does not apply here.")
    b.panel("timeseries", "Budget spent vs limit",
            [('max by (scope, name, period) (llm_gateway_budget_spent_usd)', "spent {{scope}}/{{name}} ({{period}})"),
             ('max by (scope, name, period) (llm_gateway_budget_limit_usd)', "limit {{scope}}/{{name}} ({{period}})")],
            unit="currencyUSD", w=8)
    b.row("Metered vs ledger, efficiency")
    b.panel("timeseries", "Metered vs ledger spend",
            [(f"sum({cost_})", "metered (counters, since gateway start)"),
             (f"sum(llm_gateway_ledger_cost_usd{{{TPM}}})", "ledger (this window, restart-proof)")],
            unit="currencyUSD", w=8,
            description="The in-memory counters (since each gateway started) against the usage ledger's "
                        "restart-proof totals over its window (this UTC month by default, /api/v1/metrics). "
                        "They agree while no gateway restarted within the window and no ledger row was dropped.")
    b.panel("timeseries", "Ledger requests by team",
            [(f"sum by (team) (llm_gateway_ledger_requests{{{TPM}}})", "{{team}}")], unit="short", w=8)
    b.panel("timeseries", "Output / input token ratio by model",
            [(f"sum by (provider, model) (rate(llm_gateway_completion_tokens_total{{{TPM}}}[{RI}]))"
              f" / sum by (provider, model) (rate(llm_gateway_prompt_tokens_total{{{TPM}}}[{RI}]))",
              "{{provider}}/{{model}}")],
            unit="short", w=8,
            description="Output tokens per input token. A jump usually means a missing max_tokens or a looping agent.")
    b.panel("timeseries", "Cost per 1k tokens by model",
            [(f"1000 * sum by (model) (rate({cost_}[{RI}])) / sum by (model) (rate(llm_gateway_total_tokens_total{{{TPM}}}[{RI}]))",
              "{{model}}")], unit="currencyUSD", w=12)
    b.panel("bargauge", "Unpriced requests (cost counted as 0)",
            [(f"sum by (provider, model) (increase(llm_gateway_unpriced_requests_total{{{PM}}}[$__range]))",
              "{{provider}}/{{model}}")], unit="short", instant=True, w=12)
    est_ = f"llm_gateway_estimated_cost_usd_total{{{TPM}}}"
    b.panel("timeseries", "Spend by certainty: exact vs estimated (USD per hour)",
            [(f"(sum(rate({cost_}[{RI}])) - (sum(rate({est_}[{RI}])) or vector(0))) * 3600",
              "exact (the provider's usage)"),
             (f"(sum(rate({est_}[{RI}])) or vector(0)) * 3600", "estimated (tokens counted by the gateway)")],
            unit="currencyUSD", w=12,
            description="Spend priced from the provider's own usage, beside the part that rests on tokens the "
                        "gateway estimated (no usage reported, a stream cut before its usage). Unpriced requests "
                        "(next to it) add no spend at all: give their models a price.")
    b.panel("stat", "Share of spend on estimates",
            [(f"(sum(increase({est_}[$__range])) or vector(0)) / sum(increase({cost_}[$__range]))", "share")],
            unit="percentunit", instant=True, w=12, h=8)
    cache_row(b)
    # The provider's bill ([[billing]] sources) beside the ledger, over the same window.
    billed = f'llm_gateway_billed_cost_usd{{{PM}, provider!="unmapped"}}'
    ledger = f"llm_gateway_ledger_cost_usd{{{TPM}}}"
    b.row("Bill vs meter")
    b.panel("timeseries", "Billed vs metered by provider",
            [(f"sum by (provider) ({billed})", "billed {{provider}}"),
             (f"sum by (provider) ({ledger})", "metered {{provider}}")],
            unit="currencyUSD", w=8,
            description="The provider's bill for the gateway's own keys (llm_gateway_billed_cost_usd, from "
                        "[[billing]] sources) against the ledger's cost, both over the ledger's window. "
                        "With a team selected, metered is that team's share only.")
    b.panel("timeseries", "Capture ratio by model (metered / billed, this window)",
            [(f"sum by (provider, model) ({ledger}) / sum by (provider, model) ({billed})",
              "{{provider}}/{{model}}")],
            unit="percentunit", w=8,
            description="1 when the gateway metered the whole bill. Under 1: traffic around the gateway, "
                        "unmetered requests or a price table too low; `tollgate billing` explains each day. "
                        "The alert uses llm_gateway_billing_capture_ratio (last complete UTC day).")
    b.panel("bargauge", "Difference billed - metered by model",
            [(f"sum by (provider, model) ({billed}) - sum by (provider, model) ({ledger})",
              "{{provider}}/{{model}}")],
            unit="currencyUSD", instant=True, w=8,
            description="What the meter does not explain, in USD over the window; GET /api/v1/billing "
                        "gives the explanation per provider, model and day.")
    b.panel("bargauge", "Capture ratio, last complete UTC day (the alert's value)",
            [(f"max by (provider, model) (llm_gateway_billing_capture_ratio{{{PM}}})",
              "{{provider}}/{{model}}")], unit="percentunit", instant=True, w=8,
            description="llm_gateway_billing_capture_ratio: metered / billed for yesterday (UTC), the day the "
                        "provider has finished billing. TollgateBillingCaptureLow fires under 0.9 for 1h.")
    b.panel("stat", "Time since the bill was fetched",
            [("time() - max by (source) (llm_gateway_billing_last_success_timestamp_seconds)",
              "{{source}}")], unit="s", w=8)
    b.panel("bargauge", "Billing fetch errors",
            [("sum by (source, reason) (increase(llm_gateway_billing_fetch_errors_total[$__range]))",
              "{{source}} {{reason}}")], unit="short", instant=True, w=8)
    return b


def cache_row(b: Board) -> None:
    """The response cache ([cache]): how often it answers, what it saved, how fast it looks up,
    what it holds and why requests went around it."""
    req = "llm_gateway_requests_total"
    hit = f'{req}{{{TPM}, cache_status="hit"}}'
    looked_up = f'{req}{{{TPM}, cache_status=~"hit|miss"}}'
    saved = f"llm_gateway_cache_saved_cost_usd_total{{{TPM}}}"
    b.row("Response cache")
    b.panel("stat", "Cache hit ratio (time range)",
            [(f"sum(increase({hit}[$__range])) / sum(increase({looked_up}[$__range]))", "hit ratio")],
            unit="percentunit", w=6, h=4, instant=True,
            description="Hits over hits and misses (llm_gateway_requests_total by cache_status). Bypasses "
                        "(x-tollgate-cache: skip, Cache-Control: no-cache, not deterministic, backend down) "
                        "are left out: the cache was not asked.")
    b.panel("stat", "USD saved by the cache (time range)",
            [(f"sum(increase({saved}[$__range]))", "USD")], unit="currencyUSD", w=6, h=4, instant=True,
            description="What the requests answered from the cache cost when they were first answered "
                        "(llm_gateway_cache_saved_cost_usd_total); a hit itself costs 0.")
    b.panel("stat", "Tokens saved by the cache (time range)",
            [(f"sum(increase(llm_gateway_cache_saved_tokens_total{{{TPM}}}[$__range]))", "tokens")],
            unit="short", w=6, h=4, instant=True)
    b.panel("stat", "USD saved per hour",
            [(f"sum(rate({saved}[{RI}])) * 3600", "USD/h")], unit="currencyUSD", w=6, h=4)
    b.panel("timeseries", "Cache hit ratio by model",
            [(f"sum by (provider, model) (rate({hit}[{RI}])) / sum by (provider, model) (rate({looked_up}[{RI}]))",
              "{{provider}}/{{model}}")],
            unit="percentunit", w=8)
    b.panel("timeseries", "USD saved by team and model (USD per hour)",
            [(f"sum by (team, model) (rate({saved}[{RI}])) * 3600", "{{team}} {{model}}")],
            unit="currencyUSD", w=8)
    b.panel("bargauge", "USD saved by team and model (time range)",
            [(f"sort_desc(sum by (team, model) (increase({saved}[$__range])))", "{{team}} {{model}}")],
            unit="currencyUSD", instant=True, w=8)
    b.panel("timeseries", "Requests by cache status",
            [(f'sum by (cache_status) (rate({req}{{{TPM}, cache_status=~"hit|miss|bypass"}}[{RI}]))',
              "{{cache_status}}")],
            unit="reqps", w=8,
            description="Requests the cache answered (hit), forwarded and stored (miss) and forwarded "
                        "around it (bypass). Requests the cache is not configured for have no cache_status.")
    b.panel("timeseries", "Cache fetch latency by result",
            [(f"histogram_quantile({q}, sum by (le, cache_status) (rate(llm_gateway_cache_fetch_duration_seconds_bucket[{RI}])))",
              f"p{int(q * 100)} {{{{cache_status}}}}") for q in (0.5, 0.95)],
            unit="s", w=8,
            description="Time to look a request up (llm_gateway_cache_fetch_duration_seconds): the memory "
                        "backend answers in microseconds, Redis in a round trip.")
    b.panel("timeseries", "Cache bypasses by reason and evictions",
            [(f"sum by (reason) (rate(llm_gateway_cache_bypass_total[{RI}]))", "bypass {{reason}}"),
             (f"sum(rate(llm_gateway_cache_evictions_total[{RI}]))", "evictions")],
            unit="ops", w=8,
            description="backend_error and embeddings_error mean the cache failed and the request went "
                        "upstream; evictions mean max_bytes (or the vector index's bounds) is too small "
                        "for the TTL.")
    b.panel("timeseries", "Cache entries",
            [(f"sum by (instance) (llm_gateway_cache_entries{{{GW}}})", "entries {{instance}}"),
             (f"sum by (instance) (llm_gateway_cache_ann_vectors{{{GW}}})", "ANN vectors {{instance}}")],
            unit="short", w=12,
            description="Entries held in process (memory backend entries, or semantic vectors), and the "
                        "vectors searched through an HNSW graph.")
    b.panel("timeseries", "Cache memory",
            [(f"sum by (instance) (llm_gateway_cache_bytes{{{GW}}})", "{{instance}}")],
            unit="bytes", w=12, description="Bytes held in process; the memory backend keeps it under max_bytes.")


def health() -> Board:
    b = Board("tollgate-health", "LLM Gateway Health",
              "Requests, errors, latency, rate limits, the ledger and the gateway process.")
    req = f"llm_gateway_requests_total{{{TPM}}}"
    err = f"llm_gateway_errors_total{{{TPM}}}"
    b.row("Overview")
    b.panel("stat", "Requests per second", [(f"sum(rate({req}[{RI}]))", "req/s")], unit="reqps", w=4, h=4)
    b.panel("stat", "Error ratio", [(f"sum(rate({err}[{RI}])) / sum(rate({req}[{RI}]))", "errors")],
            unit="percentunit", w=4, h=4)
    b.panel("stat", "Gateways up", [(f'sum(up{{{GW}}})', "up")], unit="none", w=4, h=4)
    b.panel("stat", "In flight", [(f"sum(llm_gateway_requests_in_flight{{{P}}})", "in flight")], unit="none", w=4, h=4)
    b.panel("stat", "Uptime", [(f'time() - max(process_start_time_seconds{{{GW}}})', "uptime")], unit="s", w=4, h=4)
    b.panel("stat", "Series folded by the cap",
            [("sum(increase(llm_gateway_metrics_overflow_total[$__range])) or vector(0)", "folded")],
            unit="short", w=4, h=4, instant=True,
            description="Label sets folded into __other__ by max_series_per_family (llm_gateway_metrics_overflow_total).")
    b.row("Requests and errors")
    b.panel("timeseries", "Requests by status code",
            [(f"sum by (status_code) (rate({req}[{RI}]))", "{{status_code}}")], unit="reqps", w=8)
    b.panel("timeseries", "Requests by provider",
            [(f"sum by (provider) (rate({req}[{RI}]))", "{{provider}}")], unit="reqps", w=8)
    b.panel("timeseries", "Errors by type and provider",
            [(f"sum by (provider, error_type) (rate({err}[{RI}]))", "{{provider}} {{error_type}}")],
            unit="reqps", w=8)
    upstream = ('error_type=~"upstream_server_error|overloaded|timeout|rate_limited|stream_interrupted|'
                'authentication|upstream_unreachable|upstream_timeout"')
    b.panel("timeseries", "Upstream error ratio by provider",
            [(f"sum by (provider) (rate(llm_gateway_errors_total{{{TPM}, {upstream}}}[{RI}]))"
              f" / sum by (provider) (rate({req}[{RI}]))", "{{provider}}")],
            unit="percentunit", w=12,
            description="Failures that are the provider's, as in the TollgateUpstreamErrorRatioHigh alert.")
    b.panel("timeseries", "In-flight requests by provider",
            [(f"sum by (provider) (llm_gateway_requests_in_flight{{{P}}})", "{{provider}}")], unit="none", w=12)
    b.row("Latency")
    for title, fam in (("Request latency", "request_duration_seconds"),
                       ("Time to first token", "time_to_first_token_seconds")):
        b.panel("timeseries", f"{title} percentiles by model",
                [(f"histogram_quantile({q}, sum by (le, model) (rate(llm_gateway_{fam}_bucket{{{PM}}}[{RI}])))",
                  f"p{int(q * 100)} {{{{model}}}}") for q in (0.5, 0.95, 0.99)],
                unit="s", w=12)
    b.panel("timeseries", "Upstream duration p95 by provider",
            [(f"histogram_quantile(0.95, sum by (le, provider) (rate(llm_gateway_upstream_duration_seconds_bucket{{{PM}}}[{RI}])))",
              "{{provider}}")], unit="s", w=12)
    b.panel("timeseries", "Gateway overhead",
            [(f"histogram_quantile(0.99, sum by (le, endpoint) (rate(llm_gateway_overhead_seconds_bucket[{RI}])))", "p99 {{endpoint}}"),
             (f"sum by (endpoint) (rate(llm_gateway_overhead_seconds_sum[{RI}])) / sum by (endpoint) (rate(llm_gateway_overhead_seconds_count[{RI}]))", "mean {{endpoint}}")],
            unit="s", w=12, description="Time spent in the gateway itself, before and after the upstream call.")
    b.row("Rate limits")
    b.panel("timeseries", "Rate limit: allowed vs blocked",
            [(f"sum by (limit) (rate(llm_gateway_rate_limit_allowed_total{{{T}}}[{RI}]))", "allowed {{limit}}"),
             (f"sum by (limit) (rate(llm_gateway_rate_limit_blocked_total{{{T}}}[{RI}]))", "blocked {{limit}}")],
            unit="reqps", w=8)
    b.panel("timeseries", "Rate limit success ratio by team",
            [(f"sum by (team) (rate(llm_gateway_rate_limit_allowed_total{{{T}}}[{RI}]))"
              f" / (sum by (team) (rate(llm_gateway_rate_limit_allowed_total{{{T}}}[{RI}]))"
              f" + sum by (team) (rate(llm_gateway_rate_limit_blocked_total{{{T}}}[{RI}])))", "{{team}}")],
            unit="percentunit", w=8)
    b.panel("timeseries", "Blocked requests by team and limit",
            [(f"sum by (team, limit) (rate(llm_gateway_rate_limit_blocked_total{{{T}}}[{RI}]))", "{{team}} {{limit}}")],
            unit="reqps", w=8)
    b.row("Ledger and limits backend")
    b.panel("timeseries", "Ledger rows written vs dropped",
            [(f"sum(rate(llm_gateway_ledger_written_rows_total[{RI}]))", "written"),
             (f"sum(rate(llm_gateway_ledger_dropped_rows_total[{RI}]))", "dropped")],
            unit="ops", w=12)
    b.panel("timeseries", "Limits backend errors",
            [(f"sum by (instance) (rate(llm_gateway_limit_backend_errors_total[{RI}]))", "{{instance}}")],
            unit="ops", w=12)
    b.row("MCP tools")
    mcp_calls = 'llm_gateway_mcp_requests_total{method="tools/call", team=~"$team"}'
    mcp_errs = ('llm_gateway_mcp_errors_total{method="tools/call", team=~"$team", '
                f'error_type!~"{MCP_CALLER_ERRORS}"}}')
    b.panel("timeseries", "MCP tool calls by tool and team",
            [(f"sum by (server, tool, team) (rate({mcp_calls}[{RI}]))", "{{server}}/{{tool}} {{team}}")],
            unit="reqps", w=8,
            description="tools/call through /mcp/{server}, every outcome (llm_gateway_mcp_requests_total).")
    b.panel("timeseries", "MCP tool error ratio",
            [(f"sum by (server, tool) (rate({mcp_errs}[{RI}])) / sum by (server, tool) (rate({mcp_calls}[{RI}]))",
              "{{server}}/{{tool}}")],
            unit="percentunit", w=8,
            description="Calls that failed on the tool's side (isError, JSON-RPC errors, HTTP errors, timeouts, "
                        "the server unreachable or cut), as in the TollgateMcpToolErrorRatioHigh alert.")
    b.panel("timeseries", "MCP calls by outcome",
            [(f'sum by (server, method, outcome) (rate(llm_gateway_mcp_requests_total{{team=~"$team"}}[{RI}]))',
              "{{server}} {{method}} {{outcome}}")],
            unit="reqps", w=8,
            description="Every JSON-RPC message of clients, by method and how it ended (ok, tool_error, rpc_error, "
                        "forbidden, limited, timeout, ...).")
    b.panel("timeseries", "MCP tool latency p95",
            [(f'histogram_quantile(0.95, sum by (le, server, tool) (rate(llm_gateway_mcp_request_duration_seconds_bucket{{method="tools/call"}}[{RI}])))',
              "{{server}}/{{tool}}")],
            unit="s", w=8, description="From the request to its answer (llm_gateway_mcp_request_duration_seconds).")
    b.panel("timeseries", "MCP response body size p95",
            [(f'histogram_quantile(0.95, sum by (le, server, method) (rate(llm_gateway_mcp_response_body_bytes_bucket[{RI}])))',
              "{{server}} {{method}}")],
            unit="bytes", w=8, description="Size of the response bodies that answered (llm_gateway_mcp_response_body_bytes).")
    b.panel("bargauge", "MCP errors by type",
            [(f'sum by (server, error_type) (increase(llm_gateway_mcp_errors_total{{team=~"$team"}}[$__range]))',
              "{{server}} {{error_type}}")],
            unit="short", instant=True, w=8, description="Every failed message, the callers' refusals included.")
    b.row("Process")
    b.panel("timeseries", "CPU (cores)", [(f"rate(process_cpu_seconds_total{{{GW}}}[{RI}])", "{{instance}}")],
            unit="short", w=8)
    b.panel("timeseries", "Resident memory", [(f"process_resident_memory_bytes{{{GW}}}", "{{instance}}")],
            unit="bytes", w=8)
    b.panel("timeseries", "Open file descriptors",
            [(f"process_open_fds{{{GW}}} / process_max_fds{{{GW}}}", "{{instance}}")],
            unit="percentunit", w=8)
    return b


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, board in (("tollgate-token-usage", token_usage()), ("tollgate-cost", cost()),
                        ("tollgate-health", health())):
        (OUT / f"{name}.json").write_text(json.dumps(board.json(), indent=2) + "\n")


if __name__ == "__main__":
    main()
