//! The inspector page: one HTML document with its script and style served
//! from the same origin (the CSP allows nothing else). The script is a client
//! of the JSON API: it lists `/api/exchanges`, follows `/api/events`, and
//! shows `/api/exchanges/{id}` when a row is clicked. It writes text with
//! `textContent` only, never markup, so nothing a caller sends can run here.

pub const HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Drawbridge inspector</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>Drawbridge inspector</h1>
  <span id="status" class="status">connecting…</span>
</header>
<form id="filters" class="filters">
  <label>Caller <input name="caller" placeholder="email or client"></label>
  <label>Tool <input name="tool" placeholder="read_query"></label>
  <label>Decision <select name="decision">
    <option value="">any</option><option value="allow">allow</option><option value="deny">deny</option>
  </select></label>
  <span id="count" class="count"></span>
</form>
<main>
<table id="exchanges">
  <thead><tr>
    <th>Time</th><th>Caller</th><th>Route</th><th>Method</th><th>Tool</th>
    <th>Decision</th><th>Status</th><th>Latency</th><th>Bytes</th>
  </tr></thead>
  <tbody></tbody>
</table>
<section id="detail" hidden>
  <h2 id="detail-title"></h2>
  <dl id="detail-facts"></dl>
  <h3>SQL</h3>
  <div id="detail-sql"></div>
  <h3>Request</h3>
  <pre id="detail-request"></pre>
  <h3>Response</h3>
  <pre id="detail-response"></pre>
</section>
</main>
<noscript><p>This page needs JavaScript (served from this agent only). The same data: <code>GET /api/exchanges</code>.</p></noscript>
</body>
</html>
"#;

pub const STYLE: &str = r#"
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { display: flex; align-items: baseline; gap: 1em; padding: .6em 1em; background: #1d2330; color: #fff; }
h1 { font-size: 1.1em; margin: 0; }
.status { font-size: .85em; opacity: .8; }
.filters { display: flex; gap: 1em; align-items: center; padding: .6em 1em; background: #fff; border-bottom: 1px solid #dde1e7; }
.filters input, .filters select { font: inherit; padding: .15em .3em; }
.count { margin-left: auto; color: #5b6475; }
main { padding: .6em 1em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3em .4em; border-bottom: 1px solid #eceef2; white-space: nowrap; }
th { font-weight: 600; color: #5b6475; font-size: .85em; }
tbody tr { cursor: pointer; }
tbody tr:hover { background: #eef3ff; }
tbody tr.selected { background: #dce7ff; }
.allow { color: #17753a; font-weight: 600; }
.deny { color: #b3261e; font-weight: 600; }
.pending { color: #a15c00; font-weight: 600; }
button.approve, button.deny-button { font: inherit; font-size: .85em; margin-left: .3em; padding: .1em .6em; border-radius: 3px; border: 1px solid; cursor: pointer; }
button.approve { background: #17753a; color: #fff; border-color: #17753a; }
button.deny-button { background: #fff; color: #b3261e; border-color: #b3261e; }
.remember { font-size: .8em; color: #5b6475; margin-left: .4em; }
.rule { color: #5b6475; font-size: .85em; }
section#detail { margin-top: 1em; padding: .6em 1em; background: #fff; border: 1px solid #dde1e7; }
h2 { font-size: 1em; margin: .2em 0 .6em; }
h3 { font-size: .9em; margin: .8em 0 .3em; color: #5b6475; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; margin: 0; }
dt { color: #5b6475; }
dd { margin: 0; }
pre { background: #f3f4f7; padding: .5em; overflow: auto; max-height: 16em; margin: 0; white-space: pre-wrap; word-break: break-all; }
.sql { font-family: ui-monospace, monospace; background: #fff8e1; padding: .4em .5em; }
.facts { color: #5b6475; font-size: .85em; margin: .2em 0 .6em; }
"#;

pub const SCRIPT: &str = r##""use strict";
(function () {
  const tbody = document.querySelector("#exchanges tbody");
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  const count = document.getElementById("count");
  let selected = null;
  let csrf = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function filters() {
    const f = new FormData(form);
    const q = new URLSearchParams();
    for (const [k, v] of f.entries()) if (String(v).trim()) q.set(k, String(v).trim());
    return q;
  }
  function passes(row) {
    const f = filters();
    const c = (f.get("caller") || "").toLowerCase();
    if (c && !row.caller.toLowerCase().includes(c) && !row.client.toLowerCase().includes(c)) return false;
    if (f.get("tool") && row.tool !== f.get("tool")) return false;
    if (f.get("decision") && row.decision !== f.get("decision")) return false;
    return true;
  }
  function rowElement(r) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    tr.appendChild(el("td", r.time.slice(11, 23)));
    const who = el("td", r.caller);
    if (r.client) who.appendChild(el("span", " " + r.client, "rule"));
    tr.appendChild(who);
    tr.appendChild(el("td", r.route));
    tr.appendChild(el("td", r.method || r.http_method));
    tr.appendChild(el("td", r.tool || ""));
    const d = el("td");
    d.appendChild(el("span", r.decision, r.decision));
    if (r.decision === "pending") {
      const approve = el("button", "Approve", "approve");
      const deny = el("button", "Deny", "deny-button");
      const label = el("label", null, "remember");
      const remember = el("input");
      remember.type = "checkbox";
      label.appendChild(remember);
      label.appendChild(document.createTextNode(" caller, 10 min"));
      label.title = "also approve this caller's next calls for 10 minutes";
      approve.addEventListener("click", (ev) => { ev.stopPropagation(); decide(r.id, "approve", remember.checked); });
      deny.addEventListener("click", (ev) => { ev.stopPropagation(); decide(r.id, "deny", false); });
      label.addEventListener("click", (ev) => ev.stopPropagation());
      d.appendChild(document.createTextNode(" "));
      d.appendChild(approve);
      d.appendChild(deny);
      d.appendChild(label);
    } else if (r.rules.length) {
      d.appendChild(el("span", " " + r.rules.join(", "), "rule"));
    }
    if (r.approval) d.title = (r.approval.approved ? "approved" : "denied") + " by " + r.approval.by + " at " + r.approval.at;
    tr.appendChild(d);
    tr.appendChild(el("td", r.status === null ? "—" : r.status));
    tr.appendChild(el("td", r.latency_ms.toFixed(1) + " ms"));
    tr.appendChild(el("td", r.request_bytes + " / " + r.response_bytes));
    tr.addEventListener("click", () => show(r.id));
    if (selected === r.id) tr.className = "selected";
    return tr;
  }
  async function decide(id, verb, remember) {
    const resp = await fetch("/api/exchanges/" + id + "/" + verb + (remember ? "?remember=1" : ""), {
      method: "POST", credentials: "same-origin", headers: { "X-Inspector-Csrf": csrf || "" },
    });
    if (!resp.ok) status.textContent = verb + " failed (" + resp.status + ")";
  }
  function recount() { count.textContent = tbody.children.length + " shown"; }
  async function load() {
    const resp = await fetch("/api/exchanges?" + filters().toString(), { credentials: "same-origin" });
    if (!resp.ok) { status.textContent = "not signed in (" + resp.status + ")"; return; }
    const data = await resp.json();
    tbody.replaceChildren(...data.exchanges.map(rowElement));
    recount();
  }
  function fact(dl, k, v) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
  function bodyText(b) {
    if (!b) return "(not read: streamed to the local server)";
    let t = b.text;
    try { if (!b.truncated) t = JSON.stringify(JSON.parse(b.text), null, 2); } catch (e) { /* not JSON */ }
    return t + "\n\n" + b.size + " bytes" + (b.truncated ? " (truncated)" : "");
  }
  async function show(id) {
    selected = id;
    for (const tr of tbody.children) tr.className = Number(tr.dataset.id) === id ? "selected" : "";
    const resp = await fetch("/api/exchanges/" + id, { credentials: "same-origin" });
    if (!resp.ok) return;
    const d = await resp.json();
    document.getElementById("detail").hidden = false;
    document.getElementById("detail-title").textContent = "#" + d.id + " " + d.what + " — " + d.decision;
    const dl = document.getElementById("detail-facts");
    dl.replaceChildren();
    fact(dl, "Caller", d.caller + " (" + d.client + ")");
    fact(dl, "Route", d.route + " " + d.http_method + " " + d.path);
    fact(dl, "Request id", d.request_id);
    fact(dl, "Laptop decided", (d.laptop.allowed ? "allow" : "deny") + " by " + (d.laptop.rules.join(", ") || "—"));
    fact(dl, "Relay decided", d.relay ? ((d.relay.allowed ? "allow" : "deny") + " by " + d.relay.rules.join(", ")) : "allowed (its rules are in the relay's audit)");
    if (d.approval) fact(dl, "Owner", (d.approval.approved ? "approved" : "denied") + " by " + d.approval.by + " at " + d.approval.at + " after " + (d.approval.waited_ms / 1000).toFixed(1) + " s");
    fact(dl, "Status", d.status === null ? "—" : d.status);
    fact(dl, "Timings", "gate " + d.timings.gate_ms.toFixed(1) + " ms, first byte " +
      (d.timings.first_byte_ms === null ? "—" : d.timings.first_byte_ms.toFixed(1) + " ms") +
      ", total " + d.timings.total_ms.toFixed(1) + " ms");
    const sql = document.getElementById("detail-sql");
    sql.replaceChildren();
    for (const m of d.messages) {
      if (!m.sql) continue;
      sql.appendChild(el("div", m.sql, "sql"));
      const f = m.sql_facts;
      if (f) sql.appendChild(el("div", f.parsed
        ? "statements: " + f.statements.join(", ") + " · tables: " + (f.tables.join(", ") || "—") + " · " + (f.read_only ? "reads only" : "writes")
        : "does not parse: " + f.error, "facts"));
    }
    if (!sql.children.length) sql.appendChild(el("div", "(none)", "facts"));
    if (d.messages_total > d.messages.length) sql.appendChild(el("div", "(" + d.messages.length + " of " + d.messages_total + " messages kept)", "facts"));
    document.getElementById("detail-request").textContent = bodyText(d.request);
    document.getElementById("detail-response").textContent = bodyText(d.response);
  }
  function listen() {
    const es = new EventSource("/api/events");
    es.addEventListener("open", () => { status.textContent = "live"; });
    es.addEventListener("error", () => { status.textContent = "reconnecting…"; });
    es.addEventListener("lagged", () => { load(); });
    es.addEventListener("exchange", (ev) => {
      const r = JSON.parse(ev.data);
      const old = tbody.querySelector("tr[data-id=\"" + r.id + "\"]");
      if (old) {
        if (passes(r)) old.replaceWith(rowElement(r)); else old.remove();
        if (selected === r.id) show(r.id);
      } else if (passes(r)) {
        tbody.insertBefore(rowElement(r), tbody.firstChild);
      }
      recount();
    });
  }
  form.addEventListener("input", () => { load(); });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  fetch("/api/session", { credentials: "same-origin" })
    .then((r) => r.ok ? r.json() : {})
    .then((s) => { csrf = s.csrf || null; })
    .finally(() => load().then(listen));
})();
"##;
