"""Drive a Drawbridge route over the legacy HTTP+SSE transport (MCP 2024-11-05)
with the official Python MCP SDK's `mcp.client.sse.sse_client`.

Usage: mcp_legacy_sse_client.py URL TOKEN CA_FILE

Opens the SSE stream at URL, POSTs to the `endpoint` it announces, and does
initialize, tools/list and tools/call read_query. Prints one JSON object with
what the client saw, for the Rust end-to-end test to check.
"""

import asyncio
import json
import ssl
import sys
from urllib.parse import urlparse

import httpx2
from mcp import Client
from mcp.client.sse import sse_client


async def main(url: str, token: str, ca: str) -> None:
    tls = ssl.create_default_context(cafile=ca)
    endpoints: list[str] = []

    def factory(headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=tls)

    transport = sse_client(
        url,
        headers={"Authorization": f"Bearer {token}"},
        httpx_client_factory=factory,
        on_session_created=endpoints.append,
    )
    async with Client(transport, mode="legacy") as client:
        out: dict = {"protocol_version": client.protocol_version, "session_ids": endpoints}
        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        read = await client.call_tool("read_query", {"query": "SELECT COUNT(*) AS n FROM customers"})
        out["read"] = {"is_error": bool(read.is_error), "structured": read.structured_content}
        sneaky = await client.call_tool("read_query", {"query": "WITH x AS (SELECT 1) DELETE FROM customers"})
        out["sneaky_is_error"] = bool(sneaky.is_error)
    out["host"] = urlparse(url).netloc
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
