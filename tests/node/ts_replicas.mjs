// Hold several TypeScript SDK sessions on a route served by replicas, then
// use them again after the test has stopped one replica.
//
// Usage: NODE_EXTRA_CA_CERTS=CA node ts_replicas.mjs URL TOKEN SESSIONS
//
// Phase 1: opens SESSIONS Streamable HTTP sessions at once and keeps them
// open; each runs initialize, tools/list and a read_query tools/call. Prints
// one JSON line {"phase":"connected","sessions":[...]} and waits for a line
// on stdin. Phase 2: each session calls read_query again; a session that
// fails (its replica is gone: the relay answers 404) is replaced by a new
// one (initialize again), which must work. Prints one JSON line
// {"phase":"after","sessions":[...]} and exits.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createInterface } from "node:readline";

const [url, token, count = "4"] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: ts_replicas.mjs URL TOKEN SESSIONS");
  process.exit(2);
}

const QUERY = { name: "read_query", arguments: { query: "SELECT COUNT(*) AS n FROM customers" } };

async function open() {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "drawbridge-e2e-replicas", version: "1.0.0" });
  const out = { connected: false };
  try {
    await client.connect(transport);
    out.connected = true;
    out.session_id = transport.sessionId ?? null;
    const tools = await client.listTools();
    out.tools = tools.tools.length;
    const read = await client.callTool(QUERY);
    out.rows = read.structuredContent?.rows ?? null;
  } catch (e) {
    out.error = String(e?.message ?? e);
    out.code = e?.code ?? null;
  }
  return { client, transport, out };
}

const held = await Promise.all(Array.from({ length: Number(count) }, open));
console.log(JSON.stringify({ phase: "connected", sessions: held.map((h) => h.out) }));

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));

const after = [];
for (const h of held) {
  const out = { session_id: h.out.session_id };
  try {
    const read = await h.client.callTool(QUERY);
    out.ok = true;
    out.rows = read.structuredContent?.rows ?? null;
  } catch (e) {
    out.ok = false;
    out.error = String(e?.message ?? e);
    out.code = e?.code ?? null;
    // The session is gone: start a new one, as a client does on 404.
    const fresh = await open();
    out.new_session = fresh.out;
    await fresh.client.close().catch(() => {});
  }
  after.push(out);
  await h.client.close().catch(() => {});
}
console.log(JSON.stringify({ phase: "after", sessions: after }));
lines.close();
process.exit(0);
