"""The simulator's minimal MCP server (`tollgate sim`, POST /mcp; the benchmark's MCP path) as
the official `mcp` SDK sees it: the SDK's Client lists and calls its one tool, `echo`, straight
to the simulator and through `tollgate serve` at /mcp/{name}, in both protocol eras
(mode="legacy": initialize; mode="auto": server/discover first, which the simulator does not
know, then the handshake), with the same results; the gateway meters the calls."""

from __future__ import annotations

import asyncio

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from sdk_helpers import Metrics, start, tollgate_bin

KEY = "tg-sim-mcp-agent"

CONFIG = """\
[[providers]]
name = "unused"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-unused"
models = ["gpt-4o-mini"]

[ledger]
enabled = false

[[keys]]
name = "agent"
key = "{key}"
team = "bench"

[[mcp_servers]]
name = "sim"
url = "{sim}/mcp"
"""


@pytest.fixture(scope="module")
def sim_mcp(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sim-mcp")
    sim = start("sim", [str(tollgate_bin()), "sim", "--listen", "127.0.0.1:0"], cwd=workdir)
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(key=KEY, sim=sim.url))
    gw = start("sim-mcp-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                                   "--listen", "127.0.0.1:0"], cwd=workdir)
    yield {"direct": f"{sim.url}/mcp", "gateway": f"{gw.url}/mcp/sim", "metrics": gw.url}
    gw.stop()
    sim.stop()


async def everything(url: str, mode: str, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http_client = create_mcp_http_client(headers=headers)
    async with http_client:
        async with Client(streamable_http_client(url, http_client=http_client), mode=mode) as c:
            tools = await c.list_tools()
            called = await c.call_tool("echo", {"text": "order 48213"})
            with pytest.raises(MCPError) as unknown:
                await c.call_tool("nope", {})
            return {
                "tools": [(t.name, t.input_schema) for t in tools.tools],
                "echo": [(x.type, x.text) for x in called.content],
                "is_error": called.is_error,
                "unknown": unknown.value.error.code,
            }


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_sdk_calls_echo_directly_and_through_the_gateway(sim_mcp, mode):
    metrics = Metrics(sim_mcp["metrics"])
    before = metrics.scrape()
    direct = asyncio.run(everything(sim_mcp["direct"], mode, None))
    assert direct["tools"] == [("echo", {"type": "object", "properties": {"text": {"type": "string"}},
                                          "required": ["text"]})]
    assert direct["echo"] == [("text", "order 48213")]
    assert direct["is_error"] is False
    assert direct["unknown"] == -32602
    through = asyncio.run(everything(sim_mcp["gateway"], mode, KEY))
    assert through == direct
    labels = {"server": "sim", "method": "tools/call", "tool": "echo", "outcome": "ok"}

    def calls(scrape):
        return (scrape.value("llm_gateway_mcp_requests_total", **labels)
                - before.value("llm_gateway_mcp_requests_total", **labels))

    after = metrics.wait_until(lambda s: calls(s) >= 1)
    assert calls(after) == 1
