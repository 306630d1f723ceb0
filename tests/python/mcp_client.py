"""Drive a Drawbridge route with the official Python MCP client (PyPI `mcp` 2.x).

Usage: mcp_client.py URL TOKEN CA_FILE MODE [PROFILE]

MODE is passed to `mcp.Client` ("auto": server/discover first, falling back
to initialize; "legacy": initialize only; or a protocol version). PROFILE is
"builtin" (default: the built-in SQLite server) or "reference" (the
reference `mcp-server-sqlite` behind the stdio bridge). Prints one JSON
object with what the client saw, for the Rust end-to-end test to check.
"""

import asyncio
import json
import ssl
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def reference(client: Client, out: dict) -> None:
    """The reference mcp-server-sqlite: its six tools, a write and a read."""
    tools = await client.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["server_name"] = client.server_info.name if client.server_info else None
    created = await client.call_tool(
        "create_table", {"query": "CREATE TABLE IF NOT EXISTS py (n INTEGER)"}
    )
    out["created"] = text_of(created)
    wrote = await client.call_tool("write_query", {"query": "INSERT INTO py (n) VALUES (41), (1)"})
    out["wrote"] = text_of(wrote)
    read = await client.call_tool("read_query", {"query": "SELECT SUM(n) AS total FROM py"})
    out["read"] = text_of(read)


async def main(url: str, token: str, ca: str, mode: str, profile: str = "builtin") -> None:
    tls = ssl.create_default_context(cafile=ca)
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        verify=tls,
        timeout=httpx2.Timeout(30, read=300),
    )
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            out: dict = {"protocol_version": client.protocol_version}
            if profile == "reference":
                await reference(client, out)
                print(json.dumps(out), flush=True)
                return
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            out["read_only_hints"] = sorted(
                t.name for t in tools.tools if t.annotations and t.annotations.read_only_hint
            )
            read = await client.call_tool("read_query", {"query": "SELECT COUNT(*) AS n FROM customers"})
            out["read"] = {"is_error": bool(read.is_error), "structured": read.structured_content}
            sneaky = await client.call_tool(
                "read_query", {"query": "WITH x AS (SELECT 1) DELETE FROM customers"}
            )
            out["sneaky_is_error"] = bool(sneaky.is_error)
            memo = await client.read_resource("memo://insights")
            out["memo_contents"] = len(memo.contents)
            prompt = await client.get_prompt("mcp-demo", {"topic": "sales"})
            out["prompt_messages"] = len(prompt.messages)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
