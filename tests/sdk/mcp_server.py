"""An MCP server for the gateway's SDK tests, on the official `mcp` SDK (2.x `MCPServer`), over
Streamable HTTP on 127.0.0.1: `python mcp_server.py PORT`. It speaks both protocol eras.

Tools: `add` (structured result), `echo`, `slow` (sleeps, reports progress), `failing` (a
JSON-RPC error), `flaky` (raises: an `isError` result), `is_error` (returns `isError` itself),
`secret` (the tests forbid it to their key).
"""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

server = MCPServer("tollgate-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echoes its text."""
    return text


@server.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Sleeps, reporting progress half way."""
    await asyncio.sleep(seconds / 2)
    await ctx.report_progress(0.5, 1.0)
    await asyncio.sleep(seconds / 2)
    return f"slept {seconds}"


@server.tool()
def failing() -> str:
    """Fails with a JSON-RPC error."""
    raise MCPError(-32603, "the backend of this tool is down")


@server.tool()
def flaky() -> str:
    """Raises: the SDK answers with an isError result."""
    raise ValueError("flaky tool failed")


@server.tool()
def is_error() -> CallToolResult:
    """Returns a tool error itself."""
    return CallToolResult(content=[TextContent(type="text", text="nothing found")], is_error=True)


@server.tool()
def secret() -> str:
    """A tool the tests' key may not call."""
    return "the secret"


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
