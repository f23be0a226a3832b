"""The MCP gateway as the official `mcp` SDK (2.x, from PyPI) sees it: a real MCPServer
(tests/sdk/mcp_server.py) on 127.0.0.1 over Streamable HTTP, and the SDK's own Client driving
it through `tollgate serve` at /mcp/{name}, in both protocol eras (mode="legacy": initialize,
Mcp-Session-Id, GET stream, DELETE; mode="auto": 2026-07-28 server/discover, stateless).
Results equal the direct connection's; forbidden tools are hidden and refused; limits trip
as JSON-RPC errors; metrics and ledger rows are as expected; hostile bodies, a client leaving
mid-stream and a server dying mid-stream leave the gateway up and counted."""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from sdk_helpers import PREFIX, Metrics, http, start, tollgate_bin

KEY = "tg-mcp-sdk-agent"
OTHER_KEY = "tg-mcp-sdk-other"
SERVER_SCRIPT = Path(__file__).with_name("mcp_server.py")
ALL_TOOLS = ["add", "echo", "failing", "flaky", "is_error", "secret", "slow"]

CONFIG = """\
[[providers]]
name = "unused"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-unused"
models = ["gpt-4o-mini"]

[ledger]
url = "sqlite://{ledger}"
flush_interval_ms = 20

[[keys]]
name = "agent"
key = "{key}"
team = "agents"

[[keys]]
name = "other"
key = "{other}"
team = "others"

[[mcp_servers]]
name = "test"
url = "http://127.0.0.1:{port}/mcp"
max_body_bytes = 65536

[[mcp_servers.access]]
team = "agents"
allowed_tools = ["add", "echo", "slow", "failing", "flaky", "is_error"]

[[mcp_servers.tools]]
name = "add"
cost_usd = "0.0015"

[[mcp_servers.tools]]
name = "echo"
limits = {{ requests_per_minute = 3 }}

[[mcp_servers]]
name = "doomed"
url = "http://127.0.0.1:{doomed_port}/mcp"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workdir: Path):
    import subprocess
    log = open(workdir / f"mcp-server-{port}.log", "wb")
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), str(port)], cwd=workdir,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((workdir / f"mcp-server-{port}.log").read_text())
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the MCP server did not start")


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp")
    port, doomed_port = free_port(), free_port()
    server = start_server(port, workdir)
    doomed = start_server(doomed_port, workdir)
    ledger = workdir / "ledger.db"
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(ledger=ledger, key=KEY, other=OTHER_KEY, port=port,
                                    doomed_port=doomed_port))
    gw = start("mcp-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                               "--listen", "127.0.0.1:0"], cwd=workdir)
    yield {"gateway": gw.url, "direct": f"http://127.0.0.1:{port}/mcp",
           "doomed": doomed, "doomed_port": doomed_port, "ledger": ledger}
    gw.stop()
    for p in (server, doomed):
        p.kill()
        p.wait(timeout=10)


def run(coro):
    return asyncio.run(coro)


async def session(url: str, mode: str, key: str | None, body):
    """Runs body(client) on an SDK Client for url; key: the virtual key (None: direct)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http_client = create_mcp_http_client(headers=headers)
    async with http_client:
        async with Client(streamable_http_client(url, http_client=http_client), mode=mode) as c:
            return await body(c)


def dump(result) -> dict:
    """A tool result without the per-connection _meta."""
    d = result.model_dump(exclude={"meta"})
    return d


async def everything(c):
    out = {"tools": sorted(t.name for t in (await c.list_tools()).tools)}
    out["add"] = dump(await c.call_tool("add", {"a": 2, "b": 3}))
    out["echo"] = dump(await c.call_tool("echo", {"text": "hi"}))
    out["flaky"] = dump(await c.call_tool("flaky", {}))
    out["is_error"] = dump(await c.call_tool("is_error", {}))
    try:
        await c.call_tool("failing", {})
        out["failing"] = "no error"
    except MCPError as e:
        out["failing"] = (e.code, e.message)
    progress = []
    out["slow"] = dump(await c.call_tool("slow", {"seconds": 0.4},
                                         progress_callback=lambda p, t, m: _note(progress, p)))
    out["progress"] = progress
    return out


async def _note(progress, p):
    progress.append(p)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_results_through_the_gateway_equal_the_direct_connection(mcp_stack, mode):
    metrics = Metrics(mcp_stack["gateway"])
    before = metrics.scrape()
    direct = run(session(mcp_stack["direct"], mode, None, everything))
    via = run(session(mcp_stack["gateway"] + "/mcp/test", mode, KEY, everything))
    assert direct["tools"] == ALL_TOOLS
    assert via["tools"] == [t for t in ALL_TOOLS if t != "secret"], "secret is hidden"
    for k in ("add", "echo", "flaky", "is_error", "failing", "slow", "progress"):
        assert via[k] == direct[k], k
    assert via["add"]["structured_content"] == {"result": 5}
    assert via["flaky"]["is_error"] and via["is_error"]["is_error"]
    assert via["failing"][0] == -32603
    assert via["progress"] == [0.5], "the progress notification passed on the stream"

    def counted(s):
        return s.value(PREFIX + "mcp_requests_total", server="test", method="tools/call",
                       team="agents", key="agent") - before.value(
            PREFIX + "mcp_requests_total", server="test", method="tools/call",
            team="agents", key="agent")
    after = metrics.wait_until(lambda s: counted(s) >= 6)
    d = lambda name, **l: after.value(PREFIX + name, **l) - before.value(PREFIX + name, **l)
    calls = lambda tool, outcome: d("mcp_requests_total", server="test", tool=tool,
                                    outcome=outcome, team="agents")
    assert calls("add", "ok") == 1
    assert calls("echo", "ok") == 1
    assert calls("flaky", "tool_error") == 1
    assert calls("is_error", "tool_error") == 1
    assert calls("failing", "rpc_error") == 1
    assert calls("slow", "ok") == 1
    assert d("mcp_errors_total", tool="failing", error_type="internal_error") == 1
    assert d("mcp_errors_total", tool="flaky", error_type="tool_error") == 1
    assert d("mcp_tool_cost_usd_total", tool="add", team="agents", key="agent") == pytest.approx(0.0015)
    assert d("mcp_request_duration_seconds_count", tool="slow") == 1
    assert d("mcp_request_duration_seconds_sum", tool="slow") >= 0.35
    assert d("mcp_response_body_bytes_count", tool="add") == 1
    if mode == "legacy":
        assert d("mcp_requests_total", method="initialize", outcome="ok") == 1
        assert d("mcp_requests_total", method="notifications/initialized", outcome="accepted") == 1
        # The SDK's GET stream and its DELETE at the end of the session.
        metrics.wait_until(lambda s: s.value(PREFIX + "mcp_requests_total", method="DELETE")
                           > before.value(PREFIX + "mcp_requests_total", method="DELETE"))
    else:
        assert d("mcp_requests_total", method="server/discover", outcome="ok") >= 1
        assert d("mcp_requests_total", method="initialize") == 0


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_forbidden_tool_is_refused_and_hidden(mcp_stack, mode):
    async def body(c):
        names = [t.name for t in (await c.list_tools()).tools]
        with pytest.raises(MCPError) as e:
            await c.call_tool("secret", {})
        return names, e.value
    names, err = run(session(mcp_stack["gateway"] + "/mcp/test", mode, KEY, body))
    assert "secret" not in names
    assert err.code == -32602 and "secret" in err.message
    # Another team has no list of its own: every tool, secret included.
    async def other(c):
        return [t.name for t in (await c.list_tools()).tools], await c.call_tool("secret", {})
    names, r = run(session(mcp_stack["gateway"] + "/mcp/test", mode, OTHER_KEY, other))
    assert "secret" in names and r.structured_content == {"result": "the secret"}


def test_a_tool_limit_trips_as_a_jsonrpc_error(mcp_stack):
    async def body(c):
        got = []
        for i in range(6):
            try:
                got.append((await c.call_tool("echo", {"text": str(i)})).structured_content)
            except MCPError as e:
                got.append((e.code, e.error.data))
        return got
    # 3 a minute, shared with the echo calls of the tests before: at most 3 of 6 pass.
    got = run(session(mcp_stack["gateway"] + "/mcp/test", "auto", KEY, body))
    refused = [g for g in got if isinstance(g, tuple)]
    assert len(refused) >= 3, got
    assert all(isinstance(g, tuple) for g in got[len(got) - len(refused):]), "refused once spent"
    assert [g for g in got if not isinstance(g, tuple)] == [{"result": str(i)} for i in range(len(got) - len(refused))]
    code, data = refused[0]
    assert code == -32000 and data["scope"] == "mcp_tool" and data["limit"] == "requests"
    s = Metrics(mcp_stack["gateway"]).scrape()
    assert s.value(PREFIX + "mcp_errors_total", tool="echo", error_type="rate_limited") >= len(refused)


def post(url: str, body: bytes, headers: dict | None = None):
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
         "Accept": "application/json, text/event-stream", **(headers or {})}
    return http("POST", url, body=body, headers=h)


def test_hostile_bodies_are_answered_and_counted(mcp_stack):
    url = mcp_stack["gateway"] + "/mcp/test"
    metrics = Metrics(mcp_stack["gateway"])
    before = metrics.scrape()
    r = post(url, b'{"jsonrpc":"2.0","id":1,"method":')
    assert r.status == 400 and json.loads(r.body)["error"]["code"] == -32700
    r = post(url, b'{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"}')
    assert r.status == 400 and json.loads(r.body)["error"]["code"] == -32600
    r = post(url, b"[]")
    assert r.status == 400
    r = post(url, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                              "params": {"name": "echo", "arguments": {"text": "x" * 70000}}}).encode())
    assert r.status == 413
    # A batch array (2025-03-26): forwarded whole; this server (2025-06-18+) refuses batches
    # with its own error, which passes verbatim.
    batch = json.dumps([{"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                        {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}]).encode()
    r = post(url, batch)
    assert r.status < 500, r
    after = metrics.wait_until(lambda s: s.value(PREFIX + "mcp_errors_total", error_type="body_too_large")
                               > before.value(PREFIX + "mcp_errors_total", error_type="body_too_large"))
    d = lambda t: (after.value(PREFIX + "mcp_errors_total", error_type=t)
                   - before.value(PREFIX + "mcp_errors_total", error_type=t))
    assert d("parse_error") == 1
    assert d("invalid_request") == 2
    assert d("body_too_large") == 1
    # Still serving.
    async def body(c):
        return (await c.call_tool("add", {"a": 1, "b": 1})).structured_content
    assert run(session(url, "auto", KEY, body)) == {"result": 2}


def test_a_client_leaving_mid_stream_is_counted(mcp_stack):
    host, port = mcp_stack["gateway"].removeprefix("http://").split(":")
    before = Metrics(mcp_stack["gateway"]).scrape()
    conn = httpclient.HTTPConnection(host, int(port), timeout=10)
    # A legacy session: initialize, then a slow call whose stream the client abandons.
    hdr = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream"}
    conn.request("POST", "/mcp/test", body=json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}}), headers=hdr)
    resp = conn.getresponse()
    sid = resp.getheader("mcp-session-id")
    resp.read()
    assert sid
    hdr.update({"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    conn.request("POST", "/mcp/test", body=json.dumps(
        {"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=hdr)
    r = conn.getresponse()
    r.read()
    assert r.status == 202
    conn.request("POST", "/mcp/test", body=json.dumps({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"seconds": 3}, "_meta": {"progressToken": 7}}}),
        headers=hdr)
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.fp.readline()  # the first line of the first event (progress, after 1.5 s)
    assert first
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    m = Metrics(mcp_stack["gateway"])
    s = m.wait_until(lambda s: s.value(PREFIX + "mcp_requests_total", tool="slow", outcome="client_gone")
                     > before.value(PREFIX + "mcp_requests_total", tool="slow", outcome="client_gone"),
                     timeout=10)
    assert s.value(PREFIX + "mcp_errors_total", tool="slow", error_type="client_gone") >= 1


def test_a_server_dying_mid_stream_is_counted_and_the_gateway_stays_up(mcp_stack):
    url = mcp_stack["gateway"] + "/mcp/doomed"
    before = Metrics(mcp_stack["gateway"]).scrape()
    outcome = {}
    streaming = threading.Event()

    async def on_progress(p, t, m):
        streaming.set()

    async def body(c):
        try:
            # With a progress callback: the answer is an event stream, progress first.
            await c.call_tool("slow", {"seconds": 4}, read_timeout_seconds=15,
                              progress_callback=on_progress)
            outcome["r"] = "completed"
        except Exception as e:  # the SDK's error for a broken stream
            outcome["r"] = type(e).__name__

    def call():
        try:
            run(session(url, "auto", KEY, body))
        except BaseException as e:  # the session itself may fail as the server goes
            outcome.setdefault("r", type(e).__name__)

    t = threading.Thread(target=call)
    t.start()
    # The stream is open once the progress event (at 2 s) came through: the server dies then.
    assert streaming.wait(30), outcome
    mcp_stack["doomed"].kill()
    t.join(30)
    assert outcome.get("r") != "completed"
    s = Metrics(mcp_stack["gateway"]).wait_until(
        lambda s: s.value(PREFIX + "mcp_requests_total", server="doomed", tool="slow", outcome="upstream_error")
        > before.value(PREFIX + "mcp_requests_total", server="doomed", tool="slow", outcome="upstream_error"),
        timeout=10)
    assert s.value(PREFIX + "mcp_errors_total", server="doomed", error_type="upstream_cut") >= 1, [(x.name, x.labels.get("tool"), x.labels.get("outcome"), x.labels.get("error_type")) for x in s.samples if "doomed" in str(x.labels) and "total" in x.name]
    # Dead now: the next call is a JSON-RPC error the SDK reads, counted as unreachable.
    r = post(url, json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/list",
                              "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                   "io.modelcontextprotocol/clientCapabilities": {}}}}).encode(),
             {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"})
    assert r.status == 502 and json.loads(r.body)["error"]["code"] == -32001
    assert json.loads(r.body)["id"] == 9
    # The other server is still served.
    async def ok(c):
        return (await c.call_tool("add", {"a": 2, "b": 2})).structured_content
    assert run(session(mcp_stack["gateway"] + "/mcp/test", "auto", KEY, ok)) == {"result": 4}


def test_each_tool_call_is_a_ledger_row(mcp_stack):
    s = Metrics(mcp_stack["gateway"]).wait_until(
        lambda s: s.value(PREFIX + "ledger_written_rows_total") > 0)
    deadline = time.monotonic() + 5
    while True:
        db = sqlite3.connect(mcp_stack["ledger"])
        rows = db.execute(
            "SELECT provider, model, team, key_name, mcp_outcome, cost_nanos, response_bytes, "
            "duration_us, status_code FROM tollgate_usage WHERE endpoint = 'mcp'").fetchall()
        db.close()
        if any(r[1] == "add" and r[4] == "ok" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by = {}
    for r in rows:
        by.setdefault((r[0], r[1], r[4]), []).append(r)
    adds = by[("test", "add", "ok")]
    assert all(r[2] == "agents" and r[3] == "agent" and r[5] == 1_500_000 and r[6] > 0
               for r in adds), adds
    assert ("test", "secret", "forbidden") in by
    assert ("test", "flaky", "tool_error") in by
    assert ("test", "failing", "rpc_error") in by
    assert ("test", "echo", "limited") in by
    assert all(r[5] == 0 for r in by[("test", "flaky", "tool_error")])
    slow = by[("test", "slow", "ok")]
    assert max(r[7] for r in slow) >= 350_000
    # Only tools/call rows: no row for tools/list, initialize, notifications.
    assert all(r[1] for r in rows)
