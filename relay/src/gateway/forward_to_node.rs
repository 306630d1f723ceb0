//! Forwarding between nodes, the fallback: a node with no session to a
//! route's agent (just restarted, or the agent holds fewer sessions than
//! there are nodes) sends the request once, as it came, to a live node that
//! has one. The request is signed with the cluster secret (method, path,
//! the forwarding node, the client's address and the time: see
//! [`ClusterSecret::sign`]); the receiving node checks the signature,
//! takes the client's address from it, and authenticates, decides, audits
//! and answers as for any request. A forwarded request is never forwarded
//! again, and the forwarding node does not audit it (the node that serves
//! it does, once).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls_pki_types::ServerName;

use crate::cluster::node::{Node, STALE_AFTER};
use crate::cluster::peer_pool::PeerPool;
use crate::cluster::secret::{ClusterSecret, SIGNATURE_HEADER};
use crate::http::body::RespBody;
use crate::http::response::error;
use crate::metrics::Forwarded;
use crate::state::SharedState;

/// The client's address on a forwarded request (covered by the signature).
pub const CLIENT_HEADER: &str = "drawbridge-forwarded-for";

/// Where a request comes from, as far as the cluster is concerned.
pub enum Inbound {
    /// From a client.
    Direct,
    /// Forwarded by another node, for the client at `client`.
    Forwarded { client: SocketAddr, by: String },
    /// It says it was forwarded, and it was not by a node of this cluster.
    Refused(String),
}

/// Whether `req` was forwarded by a node of the cluster (its signature
/// checked), or comes from a client.
pub fn inbound<B>(secret: &ClusterSecret, req: &Request<B>) -> Inbound {
    let headers = req.headers();
    let Some(signature) = headers.get(SIGNATURE_HEADER) else {
        if headers.contains_key(CLIENT_HEADER) {
            return Inbound::Refused(format!("{CLIENT_HEADER} without a signature"));
        }
        return Inbound::Direct;
    };
    let (Ok(signature), Some(Ok(client))) = (
        signature.to_str(),
        headers.get(CLIENT_HEADER).map(|c| c.to_str()),
    ) else {
        return Inbound::Refused("the forwarding headers are malformed".into());
    };
    let Ok(address) = client.parse::<SocketAddr>() else {
        return Inbound::Refused("the forwarded client address is malformed".into());
    };
    let target = path_and_query(req);
    match secret.verify(
        signature,
        req.method().as_str(),
        &target,
        client,
        store::now(),
    ) {
        Ok(f) => Inbound::Forwarded {
            client: address,
            by: f.node,
        },
        Err(e) => Inbound::Refused(e.to_string()),
    }
}

/// The refusal of a request whose forwarding signature does not hold.
pub fn refused(why: &str) -> Response<RespBody> {
    error(
        StatusCode::FORBIDDEN,
        "forwarding_refused",
        &format!(
            "this request claims to be forwarded by a node of the cluster, and it was not: {why}"
        ),
    )
}

/// A live node, other than this one, that holds a session to `route`'s
/// agent: its address for peers.
pub async fn holder(state: &SharedState, node: &Node, route: &str) -> Option<String> {
    if let Some(peer) = node.holders.get(route) {
        return Some(peer);
    }
    match state
        .store
        .agent_sessions(route, STALE_AFTER.as_millis() as i64)
        .await
    {
        Ok(sessions) => {
            let peer = sessions
                .into_iter()
                .find(|s| s.node.id != node.id)
                .map(|s| s.node.peer_address)?;
            node.holders.put(route, &peer);
            Some(peer)
        }
        Err(e) => {
            tracing::warn!(error = %e, route, "cannot read which node holds the route's agent");
            None
        }
    }
}

/// The address for peers of the live node `id` (`None`: no live node has
/// that id, or the table cannot be read).
pub async fn live_peer(state: &SharedState, id: &str) -> Option<String> {
    match state.store.live_nodes(STALE_AFTER.as_millis() as i64).await {
        Ok(nodes) => nodes
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| n.peer_address),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the live nodes");
            None
        }
    }
}

/// What the node a request is forwarded to holds.
#[derive(Debug, Clone, Copy)]
pub enum Holding {
    /// The route's agent.
    Agent,
    /// The stream of the legacy SSE session the message is for.
    LegacyStream,
}

/// Sends `req` (from `client`) to the node at `peer`, which holds what
/// `holding` says, and returns its answer; 502 naming it if it cannot be
/// reached.
pub async fn forward(
    state: &SharedState,
    node: &Node,
    peer: &str,
    req: Request<Incoming>,
    client: SocketAddr,
    holding: Holding,
) -> Response<RespBody> {
    let sent = send(state, node, peer, req, client).await;
    state.metrics.forwarded(match sent {
        Ok(_) => Forwarded::Sent,
        Err(_) => Forwarded::Unreachable,
    });
    match sent {
        Ok(resp) => resp,
        Err(e) => {
            let (log, message) = match holding {
                Holding::Agent => (
                    "cannot forward to the node that holds the route's agent",
                    format!("the route's agent is connected to the relay node {peer}, which cannot be reached: {e}"),
                ),
                Holding::LegacyStream => (
                    "cannot forward to the node that holds the legacy SSE stream",
                    format!("this legacy SSE session's stream is held by the relay node {peer}, which cannot be reached: {e}"),
                ),
            };
            tracing::warn!(peer, error = %e, "{log}");
            error(StatusCode::BAD_GATEWAY, "node_unreachable", &message)
        }
    }
}

async fn send(
    state: &SharedState,
    node: &Node,
    peer: &str,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Result<Response<RespBody>, String> {
    let (_, authority) = public_host(&state.public_url);
    let pool = node.peer_pool(state)?;
    let target = path_and_query(&req);
    let (mut parts, body) = req.into_parts();
    let signature = node.secret.sign(
        parts.method.as_str(),
        &target,
        &node.id,
        &client.to_string(),
        store::now(),
    );
    parts.uri = target
        .parse()
        .map_err(|e| format!("the request target: {e}"))?;
    parts.version = http::Version::HTTP_11;
    let headers = &mut parts.headers;
    for hop in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(hop);
    }
    let value = |v: String| HeaderValue::from_str(&v).map_err(|e| e.to_string());
    headers.insert(header::HOST, value(authority.to_owned())?);
    headers.insert(SIGNATURE_HEADER, value(signature)?);
    headers.insert(CLIENT_HEADER, value(client.to_string())?);
    let resp = match pool.send(peer, Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            // The next request reads the store again.
            node.holders.forget_peer(peer);
            return Err(e.to_string());
        }
    };
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        // It may no longer hold the agent: the next request reads the store.
        node.holders.forget_peer(peer);
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONNECTION);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(HeaderName::from_static("keep-alive"));
    Ok(Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as crate::http::body::BoxError)
            .boxed_unsync(),
    ))
}

/// The request's path and query, as signed.
fn path_and_query<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned())
}

/// The host of `https://host[:port]` (without brackets), and its authority.
fn public_host(public_url: &str) -> (&str, &str) {
    let authority = public_url
        .strip_prefix("https://")
        .unwrap_or(public_url)
        .trim_end_matches('/');
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    (host, authority)
}

impl Node {
    /// The TLS client configuration to reach peers: they present the
    /// relay's public certificate (the web PKI, or the state dir's CA of
    /// a self-signed one).
    fn peer_tls(&self, state: &SharedState) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = self.peer_tls.get() {
            return Ok(c.clone());
        }
        let ca = matches!(state.config.tls, crate::config::TlsSource::SelfSigned)
            .then(|| crate::tls::certs::ca_path(&state.config.state_dir));
        let config =
            tunnel::tls::client_config(ca.as_deref(), &[b"http/1.1"]).map_err(|e| e.to_string())?;
        Ok(self.peer_tls.get_or_init(|| Arc::new(config)).clone())
    }

    /// The kept connections to peers, for the relay's public host name.
    fn peer_pool(&self, state: &SharedState) -> Result<&PeerPool, String> {
        if let Some(pool) = self.peer_pool.get() {
            return Ok(pool);
        }
        let (host, _) = public_host(&state.public_url);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        let tls = self.peer_tls(state)?;
        Ok(self.peer_pool.get_or_init(|| PeerPool::new(tls, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::public_host;

    #[test]
    fn the_public_host_is_read_from_the_public_url() {
        assert_eq!(
            public_host("https://relay.example.com"),
            ("relay.example.com", "relay.example.com")
        );
        assert_eq!(
            public_host("https://127.0.0.1:8443"),
            ("127.0.0.1", "127.0.0.1:8443")
        );
        assert_eq!(public_host("https://[::1]:8443"), ("::1", "[::1]:8443"));
    }
}
