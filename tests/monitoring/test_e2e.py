"""End to end: a real Prometheus (the Debian `prometheus` binary) with the shipped rules and
scrape jobs, a 1 s scrape and evaluation interval, its own storage in a temp directory, on a
loopback port, scraping a live gateway (the built binary, `tollgate serve`) in front of
`tollgate sim`, with the metrics bearer token on, while traffic from several teams and models
runs: plain and streamed requests, OpenAI and Anthropic shapes, embeddings, reasoning, cache
reads, an unpriced model, usage the gateway must estimate, provider errors (5xx, overload,
the provider's 429s, a stream cut mid-way) and a bad key; the gateway's own 429s once the rate
limits are merged; the response cache, on for one key (misses, hits, a skip, a refresh).

Then every panel query of every dashboard and every rule expression runs through
Prometheus' HTTP API with the template variables filled in: each must parse and run; each
panel query must return data; the recording rules must record and every rule must evaluate
without error; some alerts must be pending or firing; and the numbers that are known exactly
(tokens per model, prompt/completion/cached/reasoning tokens, cost, requests by status,
estimated and unpriced requests, the cache's hits, bypasses and savings) must equal what the
traffic produced, as the clients saw it in the responses.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
import warnings
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
import yaml

from conftest import DEPLOY, ROOT, RULES_FILE, rules
from dashboards import fill, parse_label_values, queries, variable_queries

# Families on the catalogue whose code is still on other branches (rate limits, budgets, the
# ledger). Queries over them must parse and run, but cannot return data yet. Remove a family
# from this list once it is merged: the test then requires data from every panel and rule
# over it (and turns on the config that makes the gateway produce it, below).
PENDING_FAMILIES: list[str] = []

TRAFFIC_SECONDS = 8
WORKERS = 4
METRICS_TOKEN = "e2e-metrics-token"
# Teams whose usage the provider reports; "cache" is the only team of the key the response
# cache is on for (cache-app): its hits add no tokens or cost, which the sums below prove.
EXACT_TEAMS = ["search", "support", "research", "cache"]

sys.path.insert(0, str(ROOT / "tests" / "sdk"))
from sdk_helpers import Proc, start  # noqa: E402  (the SDK suite's process helpers)

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pending(expr: str) -> list[str]:
    return [f for f in PENDING_FAMILIES if re.search(rf"\b{f}\b", expr)]


def any_pending(prefix: str) -> bool:
    return any(f.startswith(prefix) for f in PENDING_FAMILIES)


# --------------------------------------------------------------------------- the gateway

# --------------------------------------------------------------------------- the bill

def billing_mock() -> tuple[str, "object"]:
    """OpenAI's billing API, as documented (docs: provider-apis.md), with today's bill for
    project proj_e2e: 1.25 USD of gpt-4o-mini input, 1000 input and 100 output tokens; and
    yesterday's: 2.00 USD of gpt-4o that never went through the gateway (capture 0, the last
    complete day: TollgateBillingCaptureLow goes pending)."""
    import http.server
    day = int(time.time()) // 86400 * 86400

    def bucket(results, yesterday=()):
        data = [{"object": "bucket", "start_time": day, "end_time": day + 86400, "results": results}]
        if yesterday:
            data.insert(0, {"object": "bucket", "start_time": day - 86400, "end_time": day,
                            "results": list(yesterday)})
        return json.dumps({"object": "page", "has_more": False, "next_page": None, "data": data})

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            if self.headers.get("Authorization") != "Bearer sk-admin-e2e":
                code, body = 401, json.dumps({"error": {"message": "bad key", "type": "invalid_request_error", "param": None, "code": None}})
            elif path == "/v1/organization/costs":
                code, body = 200, bucket([{"object": "organization.costs.result",
                                           "amount": {"value": 1.25, "currency": "usd"},
                                           "line_item": "gpt-4o-mini, input_tokens", "project_id": "proj_e2e"}],
                                         [{"object": "organization.costs.result",
                                           "amount": {"value": 2.0, "currency": "usd"},
                                           "line_item": "gpt-4o, input_tokens", "project_id": "proj_e2e"}])
            elif path == "/v1/organization/usage/completions":
                code, body = 200, bucket([{"object": "organization.usage.completions.result",
                                           "input_tokens": 1000, "output_tokens": 100, "num_model_requests": 4,
                                           "project_id": "proj_e2e", "model": "gpt-4o-mini"}])
            elif path == "/v1/organization/usage/embeddings":
                code, body = 200, bucket([])
            else:
                code, body = 404, "{}"
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


def mcp_mock() -> tuple[str, "object"]:
    """An MCP server speaking the official SDK's wire shapes (provider-apis.md §2.5): tools/list
    as JSON, `add` answered on an event stream, `broken` with an isError result."""
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rid, method = msg.get("id"), msg.get("method")
            tool = (msg.get("params") or {}).get("name")
            sse = False
            if method == "tools/list":
                result = {"tools": [{"name": n, "inputSchema": {"type": "object"}}
                                    for n in ("add", "broken", "secret")]}
            elif tool == "add":
                result, sse = {"content": [{"type": "text", "text": "5"}], "isError": False}, True
            else:
                result = {"content": [{"type": "text", "text": "boom"}], "isError": True}
            data = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result})
            body = (f"event: message\r\ndata: {data}\r\n\r\n" if sse else data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


def gateway_config(sim: str, workdir: pathlib.Path, billing: str | None = None,
                   mcp: str = "http://127.0.0.1:9") -> str:
    cfg = f"""
[metrics]
bearer_token = "{METRICS_TOKEN}"

[[providers]]
name = "openai"
kind = "openai"
base_url = "{sim}/v1"
forward_headers = ["x-sim-*"]
api_key = "sk-sim-openai"
models = ["gpt-4o-mini", "gpt-4o", "o4-mini", "text-embedding-3-small"]

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{sim}"
forward_headers = ["x-sim-*"]
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

[[providers]]
name = "local-vllm"
kind = "openai-compatible"
base_url = "{sim}/v1"
forward_headers = ["x-sim-*"]
models = ["llama-3.1-8b"]
"""
    limits = ("" if any_pending("llm_gateway_rate_limit")
              else "\nlimits = { requests_per_minute = 30 }")
    key_budget = ("" if any_pending("llm_gateway_budget")
                  else '\nbudget = { usd = 500, period = "month", action = "alert" }')
    for name, team, extra in (("search-app", "search", key_budget), ("support-bot", "support", ""),
                              ("research-agent", "research", ""), ("batch-job", "batch", ""),
                              ("burst-app", "search", limits), ("cache-app", "cache", "")):
        cfg += f'\n[[keys]]\nname = "{name}"\nkey = "tg-e2e-{name}"\nteam = "{team}"{extra}\n'
    # The MCP gateway: team batch may call add (priced) and broken, not secret.
    cfg += (f'\n[[mcp_servers]]\nname = "e2e-tools"\nurl = "{mcp}/mcp"\n'
            '[[mcp_servers.access]]\nteam = "batch"\nallowed_tools = ["add", "broken"]\n'
            '[[mcp_servers.tools]]\nname = "add"\ncost_usd = "0.002"\n')
    # The response cache, for key cache-app only: the other keys' requests, and so every other
    # known value, are as without a cache (no cache_status on their series).
    cfg += '\n[cache]\nmode = "exact"\nkeys = ["cache-app"]\n'
    # What the pending branches need to produce their families (shapes from ARCHITECTURE.md).
    if not any_pending("llm_gateway_budget"):
        cfg += '\n[[teams]]\nname = "research"\nbudget = { usd = 1000, period = "day", action = "block" }\n'
    if not any_pending("llm_gateway_ledger"):
        # Gauges over this month (the default window), refreshed every second, so they can be
        # compared exactly with the counters.
        cfg += f'\n[ledger]\nurl = "sqlite://{workdir}/ledger.db"\nmetrics_cache_secs = 1\n'
        if billing:
            # The bill of the "openai" provider's project, fetched at start.
            cfg += (f'\n[[billing]]\nname = "openai-org"\nkind = "openai"\nadmin_key = "sk-admin-e2e"\n'
                    f'base_url = "{billing}/v1"\n[[billing.providers]]\nprovider = "openai"\n'
                    'project_ids = ["proj_e2e"]\n')
    return cfg


# --------------------------------------------------------------------------- traffic

MSG = [{"role": "user", "content": "How much did this request cost?"}]
CACHE_MSG = [{"role": "user", "content": "What does a cached answer cost?"}]
# (key, path, body, headers, how to read the usage out of the response)
WORKLOAD = [
    ("search-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 20}, {}, "chat"),
    ("search-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 30, "stream": True,
                                            "stream_options": {"include_usage": True}}, {}, "chat_stream"),
    ("search-app", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["token", "metering"]}, {}, "embeddings"),
    ("support-bot", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 40, "messages": MSG},
     {"x-sim-cached-tokens": "64", "anthropic-version": "2023-06-01"}, "anthropic"),
    ("support-bot", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 25, "messages": MSG, "stream": True},
     {"anthropic-version": "2023-06-01"}, "anthropic_stream"),
    ("support-bot", "/v1/chat/completions", {"model": "gpt-4o", "messages": MSG, "max_tokens": 15, "stream": True,
                                             "stream_options": {"include_usage": True}}, {}, "chat_stream"),
    ("research-agent", "/v1/responses", {"model": "o4-mini", "input": "Plan an experiment", "max_output_tokens": 50},
     {"x-sim-reasoning-tokens": "16"}, "responses"),
    ("research-agent", "/v1/chat/completions", {"model": "llama-3.1-8b", "messages": MSG, "max_tokens": 12}, {}, "chat"),
    ("batch-job", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 10},
     {"x-sim-no-usage": "1"}, "estimated"),
    ("research-agent", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": MSG},
     {"x-sim-status": "529", "anthropic-version": "2023-06-01"}, "error"),
    ("search-app", "/v1/chat/completions", {"model": "gpt-4o", "messages": MSG, "max_tokens": 10},
     {"x-sim-status": "500"}, "error"),
    ("support-bot", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 10},
     {"x-sim-status": "429"}, "error"),  # the provider's rate limit
    ("batch-job", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 40, "stream": True},
     {"x-sim-cut-after": "3"}, "cut"),  # the provider breaks the stream
    ("not-a-key", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG}, {}, "error"),
    ("burst-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 5}, {}, "chat"),
    # The response cache (key cache-app): the same deterministic requests again and again, so a
    # miss each, then hits (concurrent identical misses collapse onto the first); the client
    # skipping the cache (bypass, reason client) and refreshing it (no-cache: bypass of the read).
    ("cache-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CACHE_MSG, "max_tokens": 20}, {}, "chat"),
    ("cache-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CACHE_MSG, "max_tokens": 30, "stream": True,
                                           "stream_options": {"include_usage": True}}, {}, "chat_stream"),
    ("cache-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CACHE_MSG, "max_tokens": 20},
     {"x-tollgate-cache": "skip"}, "chat"),
    ("cache-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CACHE_MSG, "max_tokens": 20},
     {"cache-control": "no-cache"}, "chat"),
    ("cache-app", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CACHE_MSG, "max_tokens": 20}, {}, "chat"),
]
TEAM_OF = {"search-app": "search", "support-bot": "support", "research-agent": "research",
           "batch-job": "batch", "burst-app": "search", "cache-app": "cache"}
PROVIDER_OF = {"gpt": "openai", "o4": "openai", "text": "openai", "claude": "anthropic", "llama": "local-vllm"}


def sse_data(body: bytes) -> list[dict]:
    out = []
    for line in body.decode().splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            out.append(json.loads(line[5:]))
    return out


def usage_of(kind: str, body: bytes) -> dict:
    """Input (all of it), output, cached and reasoning tokens, as the response reports them."""
    if kind in ("chat", "embeddings"):
        u = json.loads(body)["usage"]
        return {"input": u["prompt_tokens"], "output": u.get("completion_tokens", 0),
                "cached": (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                "reasoning": (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)}
    if kind == "chat_stream":
        return usage_of("chat", json.dumps({"usage": [e for e in sse_data(body) if e.get("usage")][-1]["usage"]}).encode())
    if kind == "responses":
        u = json.loads(body)["usage"]
        return {"input": u["input_tokens"], "output": u["output_tokens"],
                "cached": u["input_tokens_details"]["cached_tokens"],
                "reasoning": u["output_tokens_details"]["reasoning_tokens"]}
    if kind in ("anthropic", "anthropic_stream"):
        if kind == "anthropic":
            u = json.loads(body)["usage"]
            output = u["output_tokens"]
        else:
            events = sse_data(body)
            u = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
            output = [e for e in events if e["type"] == "message_delta"][-1]["usage"]["output_tokens"]
        cached, written = u.get("cache_read_input_tokens", 0), u.get("cache_creation_input_tokens", 0)
        return {"input": u["input_tokens"] + cached + written, "output": output, "cached": cached,
                "reasoning": 0, "cache_write": written}
    raise ValueError(kind)


def load_prices() -> dict[str, dict[str, int]]:
    """Model -> pico-USD per token, from the built-in price table the gateway uses."""
    table = tomllib.loads((ROOT / "prices" / "prices.toml").read_text())
    out = {}
    for m in table["models"]:
        pico = {k: int(Decimal(m[k]) * 1_000_000) for k in ("input", "output") if k in m}
        pico["cached_input"] = int(Decimal(m.get("cached_input", m["input"])) * 1_000_000)
        pico["cache_write"] = int(Decimal(m.get("cache_write", m["input"])) * 1_000_000)
        for name in [m["name"], *m.get("aliases", [])]:
            out[name] = pico
    return out


def cost_nanos(price: dict[str, int], u: dict) -> int:
    """As src/metering/pricing.rs: pico-USD summed, rounded to the nearest nano-USD."""
    written = u.get("cache_write", 0)
    pico = ((u["input"] - u["cached"] - written) * price["input"] + u["cached"] * price["cached_input"]
            + written * price["cache_write"] + u["output"] * price["output"])
    return (pico + 500) // 1000


class Traffic:
    """Sends the workload from several threads and keeps what the clients saw."""

    def __init__(self, gateway: str):
        self.gateway = gateway
        self.lock = threading.Lock()
        self.sent = 0
        self.status = Counter()  # status code -> requests
        self.tokens = defaultdict(Counter)  # (team, provider, model) -> input/output/cached/reasoning
        self.cost_nanos = 0
        self.estimated_ok = 0
        self.cut = 0
        self.unpriced_ok = 0
        self.prices = load_prices()
        # The response cache: requests by X-Cache-Status; per distinct request (path and body),
        # the costs its misses were charged and the hits it got; what the hits saved.
        self.cache_status = Counter()
        self.miss_costs = defaultdict(set)
        self.hits = Counter()
        self.saved_nanos = 0
        self.saved_tokens = 0

    def one(self, key: str, path: str, body: dict, headers: dict, kind: str) -> None:
        req = urllib.request.Request(
            self.gateway + path, data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json", "authorization": f"Bearer tg-e2e-{key}", **headers})
        cache = None
        try:
            with _HTTP.open(req, timeout=30) as resp:
                status = resp.status
                cache = resp.headers.get("x-cache-status")
                try:
                    data = resp.read()
                except (http.client.IncompleteRead, ConnectionError):
                    assert kind == "cut", f"{key} {path} {body['model']}: body cut"
                    with self.lock:
                        self.cut += 1  # the text seen so far is counted, estimated
                    return self.count(status)
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self.count(status)
        with self.lock:
            if status != 200:
                return
            assert kind not in ("cut", "error"), f"{key} {path} {body['model']}: {status}"
            model = body["model"]
            if kind == "estimated":
                self.estimated_ok += 1
                return
            u = usage_of(kind, data)
            if cache is not None:
                assert key == "cache-app", f"{key}: X-Cache-Status {cache} without the cache"
                self.cache_status[cache] += 1
                variant = (path, json.dumps(body, sort_keys=True))
                price = cost_nanos(self.prices[model], u)
                if cache == "Hit":
                    # Nothing spent: no tokens, no cost; saved what the answer cost the first time.
                    self.hits[variant] += 1
                    self.saved_nanos += price
                    self.saved_tokens += u["input"] + u["output"]
                    return
                if cache in ("Miss", "Refresh"):  # forwarded and stored: what a hit saves
                    self.miss_costs[variant].add(price)
            provider = next(p for prefix, p in PROVIDER_OF.items() if model.startswith(prefix))
            t = self.tokens[(TEAM_OF[key], provider, model)]
            for k in ("input", "output", "cached", "reasoning"):
                t[k] += u[k]
            if model in self.prices:
                self.cost_nanos += cost_nanos(self.prices[model], u)
            else:
                self.unpriced_ok += 1

    def count(self, status: int) -> None:
        with self.lock:
            self.sent += 1
            self.status[str(status)] += 1

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds

        def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                self.one(*WORKLOAD[i % len(WORKLOAD)])
                i += 1
                time.sleep(0.01)

        threads = [threading.Thread(target=worker, args=(n * 3,)) for n in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def mcp_traffic(gateway: str, rounds: int) -> int:
    """tools/list and three tool calls a round (add, broken, the forbidden secret) from team
    batch through /mcp/e2e-tools; returns the number of tool calls, each a ledger row."""
    calls = 0
    for i in range(rounds):
        for method, tool in (("tools/list", None), ("tools/call", "add"), ("tools/call", "broken"),
                             ("tools/call", "secret")):
            msg = {"jsonrpc": "2.0", "id": i * 10 + calls % 10, "method": method}
            if tool:
                msg["params"] = {"name": tool, "arguments": {}}
            req = urllib.request.Request(
                gateway + "/mcp/e2e-tools", data=json.dumps(msg).encode(), method="POST",
                headers={"content-type": "application/json", "accept": "application/json, text/event-stream",
                         "authorization": "Bearer tg-e2e-batch-job"})
            with _HTTP.open(req, timeout=30) as resp:
                assert resp.status == 200
                resp.read()
            calls += tool is not None
        time.sleep(0.2)
    return calls


# --------------------------------------------------------------------------- Prometheus

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(gateway_hostport: str, token_file: pathlib.Path) -> dict:
    """The shipped prometheus.yml with the gateway's address, 1 s intervals, the shipped
    rules by absolute path, and the bearer token (commented out in the shipped file)."""
    shipped = DEPLOY / "prometheus" / "prometheus.yml"
    cfg = yaml.safe_load(shipped.read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str((shipped.parent / f).resolve()) for f in cfg["rule_files"]]
    assert cfg["rule_files"] == [str(RULES_FILE)]
    for job in cfg["scrape_configs"]:
        job.update(scrape_interval="1s", scrape_timeout="1s")
        job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        job["static_configs"] = [{"targets": [gateway_hostport]}]
    return cfg


class Prometheus:
    def __init__(self, url: str, popen: subprocess.Popen, log: pathlib.Path):
        self.url, self.popen, self.log = url, popen, log

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with _HTTP.open(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def query(self, expr: str, at: float | None = None) -> dict:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def vector(self, expr: str) -> list[dict]:
        r = self.query(expr)
        assert r["status"] == "success", f"{expr}: {r.get('error')}"
        return r["data"]["result"]

    def scalar(self, expr: str) -> float:
        v = self.vector(expr)
        assert len(v) == 1, f"{expr}: {v}"
        return float(v[0]["value"][1])

    def wait_for(self, what: str, check, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            # ValueError: a Prometheus still starting answers 503 "Service Unavailable", not JSON.
            except (AssertionError, OSError, KeyError, ValueError) as e:
                last = e
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what} (last: {last})\nprometheus log:\n"
                    + "\n".join(self.log.read_text(errors="replace").splitlines()[-20:]))


# --------------------------------------------------------------------------- the stack

class Stack:
    def __init__(self):
        self.procs: list = []
        self.prom: Prometheus | None = None
        self.gateway: Proc | None = None
        self.traffic: Traffic | None = None
        self.billing = None
        self.mcp = None
        self.mcp_calls = 0

    def stop(self) -> None:
        if self.billing is not None:
            self.billing.shutdown()
        if self.mcp is not None:
            self.mcp.shutdown()
        for p in reversed(self.procs):
            if isinstance(p, Proc):
                p.stop()
            elif p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def start_prometheus(s: Stack, workdir: pathlib.Path) -> None:
    """Prometheus scraping s.gateway (both jobs, with the bearer token) into s.prom; returns
    once both jobs have been scraped."""
    token = workdir / "metrics-token"
    token.write_text(METRICS_TOKEN + "\n")
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(prometheus_config(s.gateway.url.removeprefix("http://"), token)))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as f:
        popen = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
             "--log.level=warn"], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    s.procs.append(popen)
    s.prom = Prometheus(f"http://127.0.0.1:{port}", popen, log)
    s.prom.wait_for("both scrape jobs up", lambda: len(s.prom.vector('up == 1')) == 2)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """A fresh gateway (the same config) that serves no request, and its own Prometheus."""
    binary = pathlib.Path(os.environ.get("TOLLGATE_BIN") or ROOT / "target" / "debug" / "tollgate")
    workdir = tmp_path_factory.mktemp("quiet")
    s = Stack()
    try:
        sim = start("sim", [str(binary), "sim", "--listen", "127.0.0.1:0"], cwd=workdir)
        s.procs.append(sim)
        (workdir / "tollgate.toml").write_text(gateway_config(sim.url, workdir))
        s.gateway = start("gateway", [str(binary), "serve", "--config", str(workdir / "tollgate.toml"),
                                      "--listen", "127.0.0.1:0"], cwd=workdir)
        s.procs.append(s.gateway)
        start_prometheus(s, workdir)
        yield s
    finally:
        s.stop()


def test_nothing_pending_or_firing_on_a_quiet_fresh_gateway(quiet):
    """Every rule evaluated at least 5 times (1 s interval) over a new gateway's metrics, many
    of them exported at 0 from the start: no alert is pending or firing. (Every overflow
    counter at 0 fired TollgateMetricsOverflow for 15 minutes before its `> 0`.)"""
    p = quiet.prom
    p.wait_for("5 scrapes of the gateway",
               lambda: p.scalar('count_over_time(up{job="tollgate"}[1m])') >= 5)
    start = time.time()

    def evaluated_since_start() -> bool:
        groups = p.api("rules")["data"]["groups"]
        return all(g["lastEvaluation"] and _rfc3339_seconds(g["lastEvaluation"]) > start + 2
                   for g in groups)

    p.wait_for("every rule group evaluated after the scrapes", evaluated_since_start)
    alerts = p.api("alerts")["data"]["alerts"]
    assert alerts == [], [(a["labels"]["alertname"], a["state"], a["labels"]) for a in alerts]


def _rfc3339_seconds(text: str) -> float:
    """Unix seconds of Prometheus' RFC 3339 timestamps (nanosecond fractions, Z or offset)."""
    from datetime import datetime
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    assert m, text
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float(m.group(2) or 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary = pathlib.Path(os.environ.get("TOLLGATE_BIN") or ROOT / "target" / "debug" / "tollgate")
    if not binary.is_file():
        pytest.fail(f"tollgate binary not found at {binary}: build it or set TOLLGATE_BIN", pytrace=False)
    workdir = tmp_path_factory.mktemp("monitoring")
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    s = Stack()
    try:
        sim = start("sim", [str(binary), "sim", "--listen", "127.0.0.1:0", "--delay-ms", "15",
                            "--tokens-per-second", "2000"], cwd=workdir)
        s.procs.append(sim)
        billing_url, billing_srv = billing_mock()
        s.billing = billing_srv
        mcp_url, s.mcp = mcp_mock()
        (workdir / "tollgate.toml").write_text(gateway_config(sim.url, workdir, billing_url, mcp_url))
        s.gateway = start("gateway", [str(binary), "serve", "--config", str(workdir / "tollgate.toml"),
                                      "--listen", "127.0.0.1:0"], cwd=workdir)
        s.procs.append(s.gateway)

        start_prometheus(s, workdir)

        s.traffic = Traffic(s.gateway.url)
        mcp = threading.Thread(target=lambda: setattr(s, "mcp_calls", mcp_traffic(s.gateway.url, 20)))
        mcp.start()
        s.traffic.run(TRAFFIC_SECONDS)
        mcp.join()
        # Until Prometheus has scraped the last request and evaluated the rules on it.
        s.prom.wait_for("the last request in Prometheus", lambda: s.prom.scalar(
            'sum(llm_gateway_requests_total{job="tollgate"})') == s.traffic.sent)
        time.sleep(2.5)
        yield s
    finally:
        s.stop()


# --------------------------------------------------------------------------- tests

def test_dashboard_variables_have_values(stack):
    p = stack.prom
    for board, q in variable_queries():
        selector, label = parse_label_values(q)
        r = p.api(f"label/{label}/values", **{"match[]": fill(selector)})
        assert r["status"] == "success" and r["data"], f"{board}: {q} -> {r}"
        if label == "team":
            assert {"search", "support", "research", "batch"} <= set(r["data"])


def test_every_panel_query_returns_data(stack):
    """All variables at All: every query runs, and every one not over a pending family
    returns at least one finite value. Pending ones are listed, not failed."""
    failures, waiting = [], []
    for q in queries():
        r = stack.prom.query(fill(q.expr))
        if r["status"] != "success":
            failures.append(f"{q.name}: {r.get('errorType')}: {r.get('error')}\n    {fill(q.expr)}")
            continue
        values = [float(x["value"][1]) for x in r["data"]["result"]]
        has_data = any(math.isfinite(v) for v in values)
        if pending(q.expr):
            if has_data:
                warnings.warn(f"{q.name} returns data: remove {pending(q.expr)} from PENDING_FAMILIES")
            waiting.append(q.name)
        elif not has_data:
            failures.append(f"{q.name}: no data ({r['data']['result']})\n    {fill(q.expr)}")
    print(f"\n{len(queries()) - len(waiting)} panel queries returned data; waiting on "
          f"PENDING_FAMILIES: {len(waiting)}:\n  " + "\n  ".join(waiting))
    assert not failures, "\n".join(failures)


def test_every_panel_query_runs_with_single_values(stack):
    """The same queries with one team, provider and model selected (may be empty, must run)."""
    for values in ({"team": "search", "provider": "openai", "model": "gpt-4o-mini"},
                   {"team": "(support|research)", "provider": "(anthropic|openai)", "model": ".*"}):
        for q in queries():
            r = stack.prom.query(fill(q.expr, values))
            assert r["status"] == "success", f"{q.name} with {values}: {r.get('error')}"


def test_every_rule_expression_runs_and_evaluates(stack):
    p = stack.prom
    for rule in rules():
        r = p.query(rule["expr"])
        assert r["status"] == "success", f"{rule.get('alert') or rule['record']}: {r.get('error')}"
    loaded = [x for g in p.api("rules")["data"]["groups"] for x in g["rules"]]
    assert len(loaded) == len(rules()), "Prometheus did not load every shipped rule"
    for x in loaded:
        assert x["health"] == "ok" and not x.get("lastError"), f"{x['name']}: {x.get('lastError')}"


def test_recording_rules_record(stack):
    """Every recording rule over merged families records series (those looking back a day or
    more, by offset, have nothing to look at in a short run)."""
    missing = []
    for rule in rules():
        if "record" not in rule or "offset" in rule["expr"] or pending(rule["expr"]):
            continue
        if not stack.prom.vector(rule["record"]):
            missing.append(rule["record"])
    assert not missing, missing


def test_alerts_fire_on_live_traffic(stack):
    alerts = stack.prom.api("alerts")["data"]["alerts"]
    state = {(a["labels"]["alertname"], a["labels"].get("provider"), a["labels"].get("model")): a["state"]
             for a in alerts}
    # No price for llama-3.1-8b: fires at once (no `for`).
    assert state.get(("TollgateUnpricedModelSeen", "local-vllm", "llama-3.1-8b")) == "firing", alerts
    # A third of anthropic's and a seventh of openai's requests fail upstream: pending (for: 5m).
    assert state.get(("TollgateUpstreamErrorRatioHigh", "anthropic", None)) == "pending", alerts
    assert state.get(("TollgateUpstreamErrorRatioHigh", "openai", None)) == "pending", alerts
    # The bad virtual key (401, provider "none") is not an upstream error.
    assert ("TollgateUpstreamErrorRatioHigh", "none", None) not in state
    assert ("TollgateUpstreamErrorRatioHigh", "local-vllm", None) not in state
    # Every call of the MCP tool `broken` answers isError: pending (for: 10m); `add` is fine
    # and `secret`, forbidden to the caller, is not the tool's failure.
    mcp = {a["labels"]["tool"]: a["state"] for a in alerts
           if a["labels"]["alertname"] == "TollgateMcpToolErrorRatioHigh"}
    assert mcp == {"broken": "pending"}, alerts
    for name in ("TollgateGatewayDown", "TollgateMetricsAbsent", "TollgateLedgerDroppingRows",
                 "TollgateMetricsOverflow"):
        assert not [a for a in alerts if a["labels"]["alertname"] == name], name


def test_known_values(stack):
    """Tokens, cost and requests in Prometheus equal what the clients were told."""
    p, t = stack.prom, stack.traffic
    teams = "(" + "|".join(EXACT_TEAMS) + ")"
    by_pm = defaultdict(int)
    for (team, provider, model), c in t.tokens.items():
        by_pm[(provider, model)] += c["input"] + c["output"]
    # The "Cumulative token usage" panel, with the three teams selected.
    panel = next(q for q in queries() if q.panel == "Cumulative token usage")
    got = {(x["metric"]["provider"], x["metric"]["model"]): float(x["value"][1])
           for x in p.vector(fill(panel.expr, {"team": teams}))}
    assert got == {k: float(v) for k, v in by_pm.items()}
    assert len(got) >= 6
    # The "Spend since gateway start" stat, the same teams.
    panel = next(q for q in queries() if q.panel == "Spend since gateway start")
    assert p.scalar(fill(panel.expr, {"team": teams})) == pytest.approx(t.cost_nanos / 1e9, abs=1e-9)
    assert t.cost_nanos > 0
    sel = f'{{team=~"{teams}"}}'
    for fam, k in (("prompt_tokens", "input"), ("completion_tokens", "output"),
                   ("cached_prompt_tokens", "cached"), ("reasoning_tokens", "reasoning")):
        want = sum(c[k] for c in t.tokens.values())
        assert p.scalar(f"sum(llm_gateway_{fam}_total{sel})") == want, fam
        assert want > 0, fam
    got = {x["metric"]["status_code"]: int(float(x["value"][1]))
           for x in p.vector("sum by (status_code) (llm_gateway_requests_total)")}
    assert got == dict(t.status)
    assert {"200", "401", "429", "500", "529"} <= set(got)
    errors = {x["metric"]["error_type"] for x in p.vector("sum by (error_type) (llm_gateway_errors_total)")}
    assert {"upstream_server_error", "overloaded", "rate_limited", "stream_interrupted", "invalid_key"} <= errors
    assert p.scalar("sum(llm_gateway_estimated_usage_requests_total)") == t.estimated_ok + t.cut
    assert t.estimated_ok > 0 and t.cut > 0
    assert p.scalar("sum(llm_gateway_unpriced_requests_total)") == t.unpriced_ok > 0
    assert p.scalar('sum(llm_gateway_total_tokens_total{team="batch"})') > 0
    if not any_pending("llm_gateway_ledger"):
        # The ledger's restart-proof gauges agree with the counters (no restart happened).
        p.wait_for("ledger gauges to catch up", lambda: p.scalar(
            f"sum(llm_gateway_ledger_cost_usd{sel})") == pytest.approx(t.cost_nanos / 1e9, abs=1e-9))
        # Refused ones too, but those without a valid key are per-minute counts, not rows.
        # MCP tool calls are ledger rows too (the server as provider, the tool as model).
        assert p.scalar("sum(llm_gateway_ledger_requests)") == t.sent - t.status["401"] + stack.mcp_calls
        p.wait_for("unauthenticated requests stored", lambda: p.scalar(
            "sum(llm_gateway_ledger_unauthenticated_requests_total)") == t.status["401"])
        assert p.scalar("sum(llm_gateway_ledger_dropped_rows_total)") == 0


def test_cache_known_values(stack):
    """The response cache's families equal what cache-app's responses said (X-Cache-Status and
    their usage): hits, misses and bypasses; the USD saved is each distinct request's miss cost
    times its hits, to the nano-dollar; the tokens saved; one lookup timed per hit or miss."""
    p, t = stack.prom, stack.traffic
    c = t.cache_status
    print(f"\ncache: {dict(c)}, saved {t.saved_nanos} nano-USD, {t.saved_tokens} tokens")
    assert c["Hit"] > 0 and c["Miss"] > 0 and c["Bypass"] > 0 and c["Refresh"] > 0, c
    assert set(c) <= {"Hit", "Miss", "Bypass", "Refresh"}, c
    got = {x["metric"]["cache_status"]: int(float(x["value"][1]))
           for x in p.vector('sum by (cache_status) (llm_gateway_requests_total{cache_status!=""})')}
    assert got == {"hit": c["Hit"], "miss": c["Miss"], "bypass": c["Bypass"] + c["Refresh"]}
    # Only cache-app's requests carry cache_status.
    assert {x["metric"]["key"] for x in p.vector(
        'sum by (key) (llm_gateway_requests_total{cache_status!=""})')} == {"cache-app"}
    # Every miss (or refresh) of a request was charged the same, and each of its hits saved
    # exactly that.
    assert set(t.hits) <= set(t.miss_costs), "a hit without a miss"
    for variant, costs in t.miss_costs.items():
        assert len(costs) == 1, (variant, costs)
    want = sum(next(iter(t.miss_costs[v])) * n for v, n in t.hits.items())
    assert want == t.saved_nanos > 0
    assert len(t.hits) == 2, "the plain and the streamed request both hit"
    saved = 'llm_gateway_cache_saved_cost_usd_total{team="cache", provider="openai", model="gpt-4o-mini"}'
    assert p.scalar(f"sum({saved})") == pytest.approx(want / 1e9, abs=1e-9)
    assert p.scalar("sum(llm_gateway_cache_saved_cost_usd_total)") == pytest.approx(want / 1e9, abs=1e-9)
    assert p.scalar("sum(llm_gateway_cache_saved_tokens_total)") == t.saved_tokens > 0
    # x-tollgate-cache: skip is a client bypass; no-cache (Refresh) reads nothing, so no bypass
    # counted, but is forwarded and stored.
    assert p.scalar('sum(llm_gateway_cache_bypass_total{reason="client"})') == c["Bypass"]
    assert p.scalar('sum(llm_gateway_cache_bypass_total{reason!="client"})') == 0
    # Every hit and miss was a lookup (a request collapsed onto another's miss is timed as a
    # miss and served as a hit); a refresh and a bypass are not.
    assert p.scalar("sum(llm_gateway_cache_fetch_duration_seconds_count)") == c["Hit"] + c["Miss"]
    # Two entries (the plain and the streamed answer), nothing evicted.
    assert p.scalar('sum(llm_gateway_cache_entries{job="tollgate"})') == 2
    assert p.scalar('sum(llm_gateway_cache_bytes{job="tollgate"})') > 0
    assert p.scalar("sum(llm_gateway_cache_evictions_total)") == 0


def doc_queries() -> list[str]:
    """Every query of the ```promql blocks of docs/metrics.md (blank lines separate queries;
    comment lines dropped)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    out = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        for chunk in re.split(r"\n\s*\n", block):
            expr = "\n".join(l for l in chunk.splitlines() if not l.lstrip().startswith("#")).strip()
            if expr:
                out.append(expr)
    return out


def test_the_bill_is_scraped(stack):
    """The gateway fetched the mock bill at start; Prometheus has it, exactly, beside the
    fetch time and no fetch errors."""
    stack.prom.wait_for("billed gauge scraped",
                        lambda: stack.prom.vector('llm_gateway_billed_cost_usd{source="openai-org"}'))
    assert stack.prom.scalar('sum(llm_gateway_billed_cost_usd{provider="openai",model="gpt-4o-mini",source="openai-org"})') == 1.25
    assert stack.prom.scalar('sum(llm_gateway_billed_tokens{provider="openai",token_type="output"})') == 100
    assert stack.prom.scalar('time() - max(llm_gateway_billing_last_success_timestamp_seconds)') < 3600
    assert stack.prom.scalar('sum(llm_gateway_billing_fetch_errors_total{source="openai-org"})') == 0


def test_a_bill_the_gateway_did_not_meter_makes_the_capture_alert_pending(stack):
    """Yesterday's bill holds 2.00 USD of gpt-4o that no request through the gateway made: the
    last complete day's capture ratio is 0, and TollgateBillingCaptureLow (for: 1h) is pending
    on the live Prometheus, for that model only."""
    p = stack.prom
    p.wait_for("capture ratio scraped", lambda: p.vector(
        'llm_gateway_billing_capture_ratio{provider="openai",model="gpt-4o"}'))
    assert p.scalar('sum(llm_gateway_billing_capture_ratio{provider="openai",model="gpt-4o"})') == 0

    def capture_alerts():
        return [a for a in p.api("alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "TollgateBillingCaptureLow"]
    p.wait_for("TollgateBillingCaptureLow pending", capture_alerts)
    alerts = capture_alerts()
    assert [(a["labels"]["provider"], a["labels"]["model"], a["state"]) for a in alerts] == [
        ("openai", "gpt-4o", "pending")], alerts


def test_docs_queries_run_and_return_data(stack):
    """docs/metrics.md's examples, the peer gateways' equivalents included, all work: each
    runs, and each returns data unless it is over a pending family or is an alert condition
    (a comparison with a threshold, absent()) that is rightly empty."""
    qs = doc_queries()
    assert len(qs) > 60
    failures = []
    for expr in qs:
        r = stack.prom.query(expr)
        if r["status"] != "success":
            failures.append(f"{r.get('error')}\n    {expr}")
            continue
        condition = re.search(r"(\s[<>]=?|==)\s*\d+\s*$", expr) or expr.startswith("absent(")
        has_data = any(math.isfinite(float(x["value"][1])) for x in r["data"]["result"])
        if not (has_data or pending(expr) or condition):
            failures.append(f"no data\n    {expr}")
    assert not failures, "\n".join(failures)


def test_gateway_down_alert_goes_pending_when_the_gateway_stops(stack):
    """Last: stops the gateway, then up == 0 and TollgateGatewayDown is pending."""
    stack.gateway.stop()
    p = stack.prom
    p.wait_for("up == 0", lambda: p.vector('up{job="tollgate"} == 0'))
    p.wait_for("TollgateGatewayDown pending", lambda: [
        a for a in p.api("alerts")["data"]["alerts"]
        if a["labels"]["alertname"] == "TollgateGatewayDown" and a["labels"]["job"] == "tollgate"])
