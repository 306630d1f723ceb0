//! The relay's Prometheus metrics: one registry, and cheap handles for the
//! places that count (the request path, the tunnel listener, the OAuth
//! endpoints, reloads). Served by [`crate::server::admin_http`] at `/metrics`.
//!
//! The hot path touches atomics: fixed label sets (transports, directions,
//! OAuth event kinds) are resolved once, here; the per-route families take
//! one uncontended read lock to find their series. Label values that come
//! from clients are bounded: a route is named only when the relay knows it
//! (see [`crate::gateway::trail`]), and a JSON-RPC method only when it is one MCP
//! defines, else `other`, so that no client can grow the series without end.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tunnel::Transport;

/// The label of requests to a route the relay does not know (unclaimed
/// names; the name itself is not recorded).
pub const UNKNOWN_ROUTE: &str = "_unknown";

/// MCP's JSON-RPC methods (2024-11-05 … 2025-11-25 and the stateless
/// revision): the values the `method` label may take besides the HTTP
/// methods and `other`.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/message",
];

/// What happened to one JSON-RPC message (or one request without any).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Decision {
    /// The policy allowed it and the agent answered.
    allow,
    /// Refused before reaching the agent (token, policy, limits, …).
    deny,
    /// Allowed, but the relay or the agent failed (5xx).
    error,
}

/// OAuth authorization-server events.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OAuthEvent {
    /// A client registered (RFC 7591).
    client_registered,
    /// A local account signed in.
    login_succeeded,
    /// A sign-in was refused (wrong email or password).
    login_failed,
    /// An authorization code was issued after consent.
    code_issued,
    /// An authorization code was exchanged for tokens.
    token_issued,
    /// A refresh token was exchanged (and rotated).
    token_refreshed,
    /// The token endpoint refused a request (bad code, reused refresh
    /// token, PKCE mismatch, …).
    token_refused,
    /// A token was revoked (RFC 7009).
    token_revoked,
}

const OAUTH_EVENTS: [OAuthEvent; 8] = [
    OAuthEvent::client_registered,
    OAuthEvent::login_succeeded,
    OAuthEvent::login_failed,
    OAuthEvent::code_issued,
    OAuthEvent::token_issued,
    OAuthEvent::token_refreshed,
    OAuthEvent::token_refused,
    OAuthEvent::token_revoked,
];

/// What a reload swapped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reloaded {
    policy,
    certificate,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    decision: Decision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: OAuthEvent,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    what: Reloaded,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    direction: &'static str,
    outcome: &'static str,
}

/// A request forwarded between the nodes of a cluster, as one node saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// Sent to the node that serves it, which answered.
    Sent,
    /// Not sent: the node that serves it cannot be reached (502).
    Unreachable,
    /// Received from a node of the cluster (its signature holds).
    Received,
    /// Claims to come from a node, and its signature does not hold (403).
    Refused,
}

impl Forwarded {
    const ALL: [Forwarded; 4] = [
        Forwarded::Sent,
        Forwarded::Unreachable,
        Forwarded::Received,
        Forwarded::Refused,
    ];

    fn labels(self) -> ForwardLabels {
        let (direction, outcome) = match self {
            Forwarded::Sent => ("sent", "answered"),
            Forwarded::Unreachable => ("sent", "unreachable"),
            Forwarded::Received => ("received", "accepted"),
            Forwarded::Refused => ("received", "refused"),
        };
        ForwardLabels { direction, outcome }
    }
}

/// What only a node of a cluster counts (a single relay exposes none of it).
struct ClusterMetrics {
    live_nodes: Gauge,
    forwarded: [Counter; Forwarded::ALL.len()],
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 250 µs … ~65 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
}

/// Every metric of a relay.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    agents_quic: Gauge,
    agents_tcp: Gauge,
    to_agent: Counter,
    from_agent: Counter,
    policy_evaluation: Histogram,
    oauth: [Counter; OAUTH_EVENTS.len()],
    reloads: Family<ReloadLabels, Counter>,
    certificate_expiry: Gauge,
    audit_shipped: Counter,
    audit_ship_lag: Gauge,
    cluster: Option<ClusterMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("drawbridge");

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Route requests: one per JSON-RPC message (or per request without one), \
             by route, method and decision",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a route request's arrival to its response head",
            Unit::Seconds,
            request_duration.clone(),
        );

        let agents = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "agents_connected",
            "Agent tunnels connected now, by transport",
            agents.clone(),
        );
        let agents_quic = agents.get_or_create_owned(&TransportLabels { transport: "quic" });
        let agents_tcp = agents.get_or_create_owned(&TransportLabels { transport: "tcp" });

        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "tunnel",
            "Body bytes carried through agent tunnels: to_agent (request bodies) and \
             from_agent (response bodies)",
            Unit::Bytes,
            bytes.clone(),
        );
        let to_agent = bytes.get_or_create_owned(&DirectionLabels {
            direction: "to_agent",
        });
        let from_agent = bytes.get_or_create_owned(&DirectionLabels {
            direction: "from_agent",
        });

        // 1 µs … ~16 ms.
        let policy_evaluation = Histogram::new(exponential_buckets(0.000_001, 2.0, 15));
        registry.register_with_unit(
            "policy_evaluation",
            "Time the policy took to decide one request's messages",
            Unit::Seconds,
            policy_evaluation.clone(),
        );

        let oauth_family = Family::<KindLabels, Counter>::default();
        registry.register(
            "oauth_events",
            "OAuth authorization-server events, by kind",
            oauth_family.clone(),
        );
        let oauth = OAUTH_EVENTS.map(|kind| oauth_family.get_or_create_owned(&KindLabels { kind }));

        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads (SIGHUP, `relay reload`) of the policy and the certificate, by result",
            reloads.clone(),
        );
        for what in [Reloaded::policy, Reloaded::certificate] {
            for result in ["ok", "rejected"] {
                reloads.get_or_create_owned(&ReloadLabels { what, result });
            }
        }

        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires (its notAfter), in Unix seconds",
            certificate_expiry.clone(),
        );

        let audit_shipped = Counter::default();
        registry.register(
            "audit_events_shipped",
            "Audit events this node stored in the cluster's table (nodes on PostgreSQL)",
            audit_shipped.clone(),
        );
        let audit_ship_lag = Gauge::default();
        registry.register(
            "audit_ship_lag_events",
            "Audit events on this node's disk not yet in the cluster's table",
            audit_ship_lag.clone(),
        );

        Metrics {
            registry,
            requests,
            request_duration,
            agents_quic,
            agents_tcp,
            to_agent,
            from_agent,
            policy_evaluation,
            oauth,
            reloads,
            certificate_expiry,
            audit_shipped,
            audit_ship_lag,
            cluster: None,
        }
    }

    /// This relay is the node `id` of a cluster, which agents dial at
    /// `address`: `drawbridge_node_info{node, address} 1` (so that the
    /// scrapes of several nodes can be told apart and joined), the live
    /// nodes it sees, and the requests forwarded between nodes.
    pub fn node(&mut self, id: &str, address: &str) {
        let info = Family::<NodeLabels, Gauge>::default();
        self.registry.register(
            "node_info",
            "This relay as a node of a cluster: its id (new at each start) and the address \
             agents dial for it; always 1",
            info.clone(),
        );
        info.get_or_create(&NodeLabels {
            node: id.to_owned(),
            address: address.to_owned(),
        })
        .set(1);
        let live_nodes = Gauge::default();
        self.registry.register(
            "cluster_live_nodes",
            "Live nodes of the cluster (this one included) at this node's latest heartbeat",
            live_nodes.clone(),
        );
        let family = Family::<ForwardLabels, Counter>::default();
        self.registry.register(
            "forwarded_requests",
            "Requests forwarded between nodes: sent (answered, or the serving node unreachable) \
             and received (accepted, or refused for a signature that does not hold)",
            family.clone(),
        );
        let forwarded = Forwarded::ALL.map(|f| family.get_or_create_owned(&f.labels()));
        self.cluster = Some(ClusterMetrics {
            live_nodes,
            forwarded,
        });
    }

    /// The live nodes this node saw at its latest heartbeat.
    pub fn live_nodes(&self, n: usize) {
        if let Some(c) = &self.cluster {
            c.live_nodes.set(n.min(i64::MAX as usize) as i64);
        }
    }

    /// One request forwarded between nodes.
    pub fn forwarded(&self, what: Forwarded) {
        if let Some(c) = &self.cluster {
            if let Some(i) = Forwarded::ALL.iter().position(|f| *f == what) {
                c.forwarded[i].inc();
            }
        }
    }

    /// `n` more audit events stored in the cluster's table.
    pub fn audit_shipped(&self, n: u64) {
        self.audit_shipped.inc_by(n);
    }

    /// Audit events on disk not yet in the cluster's table.
    pub fn audit_ship_lag(&self, events: u64) {
        self.audit_ship_lag.set(events.min(i64::MAX as u64) as i64);
    }

    /// One route request (or one of its JSON-RPC messages). `route` must be
    /// a route the relay knows, or [`UNKNOWN_ROUTE`]; `method` is bounded
    /// here.
    pub fn request(&self, route: &str, method: &str, decision: Decision) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method_label(method),
                decision,
            })
            .inc();
    }

    /// How long a route request took until its response head.
    pub fn request_duration(&self, route: &str, took: Duration) {
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a connected agent until the returned guard is dropped.
    pub fn agent_connected(&self, transport: Transport) -> ConnectedAgent {
        let gauge = match transport {
            Transport::Quic => self.agents_quic.clone(),
            Transport::Tcp => self.agents_tcp.clone(),
        };
        gauge.inc();
        ConnectedAgent { gauge }
    }

    /// The counter of body bytes sent to agents.
    pub fn bytes_to_agent(&self) -> &Counter {
        &self.to_agent
    }

    /// The counter of body bytes received from agents.
    pub fn bytes_from_agent(&self) -> &Counter {
        &self.from_agent
    }

    pub fn policy_evaluated(&self, took: Duration) {
        self.policy_evaluation.observe(took.as_secs_f64());
    }

    pub fn oauth(&self, event: OAuthEvent) {
        if let Some(i) = OAUTH_EVENTS.iter().position(|e| *e == event) {
            self.oauth[i].inc();
        }
    }

    pub fn reloaded(&self, what: Reloaded, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads
            .get_or_create(&ReloadLabels { what, result })
            .inc();
    }

    /// The served certificate's notAfter, in Unix seconds.
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Keeps an agent counted in `drawbridge_agents_connected`.
pub struct ConnectedAgent {
    gauge: Gauge,
}

impl Drop for ConnectedAgent {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The `method` label: an MCP method, an HTTP method (requests without a
/// JSON-RPC message), or `other`.
fn method_label(method: &str) -> &'static str {
    if let Some(m) = MCP_METHODS.iter().find(|m| **m == method) {
        return m;
    }
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "response" => "response",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_chosen_methods_do_not_make_new_series() {
        let m = Metrics::new();
        m.request("demo", "tools/call", Decision::allow);
        m.request("demo", "tools/call", Decision::allow);
        m.request("demo", "x-made-up/1", Decision::deny);
        m.request("demo", "x-made-up/2", Decision::deny);
        let text = m.encode();
        assert!(
            text.contains(
                r#"drawbridge_requests_total{route="demo",method="tools/call",decision="allow"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"drawbridge_requests_total{route="demo",method="other",decision="deny"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("made-up"), "{text}");
    }

    #[test]
    fn agents_are_counted_while_connected() {
        let m = Metrics::new();
        let a = m.agent_connected(Transport::Quic);
        let b = m.agent_connected(Transport::Quic);
        let c = m.agent_connected(Transport::Tcp);
        assert!(m
            .encode()
            .contains(r#"drawbridge_agents_connected{transport="quic"} 2"#));
        drop((a, b, c));
        let text = m.encode();
        assert!(text.contains(r#"drawbridge_agents_connected{transport="quic"} 0"#));
        assert!(text.contains(r#"drawbridge_agents_connected{transport="tcp"} 0"#));
    }

    #[test]
    fn fixed_series_are_exposed_before_anything_happens() {
        // (The per-route families appear with their first request.)
        let text = Metrics::new().encode();
        for name in [
            "drawbridge_agents_connected",
            "drawbridge_tunnel_bytes_total",
            "drawbridge_policy_evaluation_seconds",
            "drawbridge_oauth_events_total",
            "drawbridge_reloads_total",
            "drawbridge_certificate_expiry_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
                "{name}: {text}"
            );
        }
        assert!(text.contains(r#"drawbridge_oauth_events_total{kind="login_failed"} 0"#));
        assert!(text.ends_with("# EOF\n"));
        // A single relay is no node.
        assert!(!text.contains("node_info"), "{text}");
        assert!(!text.contains("forwarded"), "{text}");
    }

    #[test]
    fn a_node_names_itself_and_counts_forwarding() {
        let mut m = Metrics::new();
        m.node("0123456789abcdef", "127.0.0.1:4433");
        m.live_nodes(3);
        m.forwarded(Forwarded::Sent);
        m.forwarded(Forwarded::Sent);
        m.forwarded(Forwarded::Refused);
        let text = m.encode();
        for line in [
            r#"drawbridge_node_info{node="0123456789abcdef",address="127.0.0.1:4433"} 1"#,
            "drawbridge_cluster_live_nodes 3",
            r#"drawbridge_forwarded_requests_total{direction="sent",outcome="answered"} 2"#,
            r#"drawbridge_forwarded_requests_total{direction="sent",outcome="unreachable"} 0"#,
            r#"drawbridge_forwarded_requests_total{direction="received",outcome="accepted"} 0"#,
            r#"drawbridge_forwarded_requests_total{direction="received",outcome="refused"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
    }
}
