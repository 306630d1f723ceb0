// Drive a Drawbridge route with the official TypeScript MCP SDK
// (@modelcontextprotocol/sdk from npm, pinned in package.json).
//
// Usage: NODE_EXTRA_CA_CERTS=CA node ts_client.mjs URL TOKEN [SESSIONS] [--terminate] [--via-mcp-remote] [--query=SQL]
//
// Opens SESSIONS (default 1) Streamable HTTP sessions one after another: each
// runs initialize, tools/list and a read_query tools/call against the built-in
// SQLite server, and with --terminate ends its session with DELETE. With
// --via-mcp-remote the SDK speaks stdio to `mcp-remote URL --header
// "Authorization: Bearer TOKEN"` (npm), which speaks HTTP to the relay. With
// --query=SQL the read_query runs SQL instead. Prints one JSON object on its
// last line: per session, whether it connected, the tools it saw, the rows it
// read (or the tool error's text), and the first error if any.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, token, count = "1", ...flags] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: ts_client.mjs URL TOKEN [SESSIONS] [--terminate]");
  process.exit(2);
}
const terminate = flags.includes("--terminate");
const viaMcpRemote = flags.includes("--via-mcp-remote");
const query =
  flags.find((f) => f.startsWith("--query="))?.slice("--query=".length) ??
  "SELECT COUNT(*) AS n FROM customers";
// mcp-remote keeps OAuth state under MCP_REMOTE_CONFIG_DIR: a fresh one per run.
const configDir = mkdtempSync(join(tmpdir(), "drawbridge-mcp-remote-"));

function makeTransport() {
  if (viaMcpRemote) {
    return new StdioClientTransport({
      command: join(import.meta.dirname, "node_modules/.bin/mcp-remote"),
      args: [url, "--transport", "http-only", "--header", `Authorization: Bearer ${token}`],
      env: { ...process.env, MCP_REMOTE_CONFIG_DIR: configDir },
      stderr: "inherit",
    });
  }
  return new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
}

async function session() {
  const out = { connected: false };
  const transport = makeTransport();
  const client = new Client({ name: "drawbridge-e2e-ts", version: "1.0.0" });
  try {
    await client.connect(transport);
    out.connected = true;
    out.session_id = transport.sessionId ?? null;
    out.protocol_version = transport.protocolVersion ?? null;
    const tools = await client.listTools();
    out.tools = tools.tools.map((t) => t.name).sort();
    const read = await client.callTool({
      name: "read_query",
      arguments: { query },
    });
    out.read_is_error = read.isError ?? false;
    out.rows = read.structuredContent?.rows ?? null;
    if (out.read_is_error) {
      out.read_error = read.content?.[0]?.text ?? null;
    }
    if (terminate && !viaMcpRemote) {
      await transport.terminateSession();
      out.terminated = transport.sessionId === undefined;
    }
  } catch (e) {
    out.error = String(e?.message ?? e);
  } finally {
    await client.close().catch(() => {});
  }
  return out;
}

const sessions = [];
for (let i = 0; i < Number(count); i++) {
  sessions.push(await session());
}
rmSync(configDir, { recursive: true, force: true });
console.log(JSON.stringify({ sessions }));
