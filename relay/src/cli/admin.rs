//! The `relay token …` and `relay route …` commands, as functions that return
//! what to print.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::table::{Column, Table};
use crate::error::RelayError;
use crate::store::token::TokenKind;
use crate::store::{now, Store, TokenRecord};

/// Parses `90d`, `12h`, `30m`… into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, RelayError> {
    humantime::parse_duration(s).map_err(|e| {
        RelayError::Config(format!("invalid duration {s:?}: {e} (try 90d, 12h or 30m)"))
    })
}

/// Creates a token; returns the secret (the only thing to print on stdout).
pub async fn create_token(
    store: &Store,
    kind: TokenKind,
    owner: &str,
    name: Option<&str>,
    expires: Option<Duration>,
) -> Result<(TokenRecord, String), RelayError> {
    let owner = owner.trim();
    if owner.is_empty() || owner.chars().any(char::is_whitespace) {
        return Err(RelayError::Config(format!(
            "--owner {owner:?} must be a non-empty identity without spaces, such as an email address"
        )));
    }
    let default_name = format!("{kind}-token");
    let name = name.unwrap_or(&default_name);
    let expires_at = expires.map(|d| now() + d.as_secs() as i64);
    let (record, secret) = store.create_token(kind, owner, name, expires_at).await?;
    Ok((record, secret.expose().to_owned()))
}

fn fmt_time(t: Option<i64>, now: i64) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let d = (t - now).unsigned_abs();
            let human = humantime::format_duration(Duration::from_secs(if d > 86_400 {
                d / 3600 * 3600
            } else {
                d
            }))
            .to_string();
            let human = human.split(' ').take(2).collect::<Vec<_>>().join(" ");
            if t > now {
                format!("in {human}")
            } else {
                format!("{human} ago")
            }
        }
    }
}

/// The token inventory as a table.
pub async fn list_tokens(store: &Store) -> Result<String, RelayError> {
    let now = now();
    let mut table = Table::new([
        Column::left("ID", 12),
        Column::left("KIND", 6),
        Column::left("STATUS", 8),
        Column::left("OWNER", 28),
        Column::left("NAME", 20),
        Column::left("CREATED", 18),
        Column::left("EXPIRES", 18),
        Column::left("LAST USED", 18),
    ]);
    for t in store.list_tokens().await? {
        let (kind, status) = (t.kind.as_str().to_owned(), t.status(now).to_string());
        table.row([
            t.id,
            kind,
            status,
            t.owner,
            t.name,
            fmt_time(Some(t.created_at), now),
            fmt_time(t.expires_at, now),
            fmt_time(t.last_used_at, now),
        ]);
    }
    Ok(table.to_string())
}

/// The token inventory as JSON lines.
pub async fn list_tokens_json(store: &Store) -> Result<String, RelayError> {
    let now = now();
    let mut out = String::new();
    for t in store.list_tokens().await? {
        let v = serde_json::json!({
            "id": t.id,
            "kind": t.kind.as_str(),
            "status": t.status(now),
            "owner": t.owner,
            "name": t.name,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "last_used_at": t.last_used_at,
            "revoked_at": t.revoked_at,
            "replaced_by": t.replaced_by,
        });
        let _ = writeln!(out, "{v}");
    }
    Ok(out)
}

/// Audit events as a table (or as JSON lines with `json`).
pub fn format_audit(events: &[crate::audit::AuditEvent], json: bool) -> String {
    format_events(events.iter().map(|e| (None, e)), false, json)
}

/// The cluster's audit events (each with the node's log id it came from),
/// as [`format_audit`] with a NODE column (a `node` member in JSON).
pub fn format_cluster_audit(events: &[(String, crate::audit::AuditEvent)], json: bool) -> String {
    format_events(
        events.iter().map(|(n, e)| (Some(n.as_str()), e)),
        true,
        json,
    )
}

fn format_events<'a>(
    events: impl Iterator<Item = (Option<&'a str>, &'a crate::audit::AuditEvent)>,
    with_node: bool,
    json: bool,
) -> String {
    let mut out = String::new();
    if json {
        for (node, e) in events {
            let Ok(line) = serde_json::to_string(e) else {
                continue;
            };
            match node {
                // `{"node":"…",` then the event's members.
                Some(node) => {
                    let node = serde_json::Value::from(node);
                    let rest = line.strip_prefix('{').unwrap_or(&line);
                    let sep = if rest == "}" { "" } else { "," };
                    let _ = writeln!(out, "{{\"node\":{node}{sep}{rest}");
                }
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        return out;
    }
    let mut columns = Vec::new();
    if with_node {
        columns.push(Column::left("NODE", 16));
    }
    columns.extend([
        Column::left("TIME", 24),
        Column::left("REQUEST", 16),
        Column::left("DECIDE", 6),
        Column::left("IDENTITY", 24),
        Column::left("ROUTE", 12),
        Column::left("METHOD / TARGET", 28),
        Column::left("SQL", 20),
        Column::right("STATUS", 6),
        Column::right("MS", 9),
    ]);
    let mut table = Table::new(columns);
    for (node, e) in events {
        let what = match (&e.method, &e.target) {
            (Some(m), Some(t)) => format!("{m} {t}"),
            (Some(m), None) => m.clone(),
            _ => e.http.clone(),
        };
        let sql = e
            .sql
            .as_ref()
            .map(|s| {
                if s.parsed {
                    format!("{} {}", s.kinds.join(","), s.tables.join(","))
                } else {
                    "unparsed".into()
                }
            })
            .unwrap_or_else(|| "-".into());
        let mut cells = Vec::with_capacity(10);
        if with_node {
            cells.push(node.unwrap_or("-").to_owned());
        }
        cells.extend([
            e.time.clone(),
            e.request_id.clone(),
            e.decision.clone(),
            e.identity.clone(),
            e.route.clone(),
            what,
            sql,
            e.status.to_string(),
            format!("{:.1}", e.latency_ms),
        ]);
        table.row(cells);
    }
    table.to_string()
}
