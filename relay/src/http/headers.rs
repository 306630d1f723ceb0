//! Header rules at the relay's edge: hop-by-hop headers, credentials, and the
//! `X-Forwarded-*` family.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use protocol::Header;

pub use common::headers::HOP_BY_HOP;

/// Headers the laptop must never see: the caller's credentials, and its
/// cookies (the relay's own session cookie among them: the relay and every
/// route share one origin).
const CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Response headers the client never gets from the laptop: a local server
/// must not set cookies on the relay's origin (they would reach the relay's
/// sign-in pages and every other route).
const FROM_LAPTOP_DROPPED: &[&str] = &["set-cookie"];

/// Headers the relay sets itself; a client's values are dropped.
const RELAY_SET: &[&str] = &[
    "host",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    protocol::RELAY_RULES_HEADER,
];

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)
}

/// The request headers that cross the tunnel.
pub fn to_tunnel(headers: &HeaderMap, host: Option<&str>, peer: SocketAddr) -> Vec<Header> {
    let listed = connection_listed(headers);
    let mut out = Vec::with_capacity(headers.len() + 3);
    let mut forwarded_for: Option<String> = None;
    for (name, value) in headers {
        let n = name.as_str();
        if is_hop_by_hop(n, &listed) || CREDENTIALS.contains(&n) || RELAY_SET.contains(&n) {
            continue;
        }
        if n == "x-forwarded-for" {
            if let Ok(v) = value.to_str() {
                forwarded_for = Some(match forwarded_for {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.to_owned(),
                });
            }
            continue;
        }
        out.push(Header {
            name: n.to_owned(),
            value: value.as_bytes().to_vec(),
        });
    }
    let peer_ip = peer.ip().to_canonical().to_string();
    let xff = match forwarded_for {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip,
    };
    out.push(Header {
        name: "x-forwarded-for".into(),
        value: xff.into_bytes(),
    });
    out.push(Header {
        name: "x-forwarded-proto".into(),
        value: b"https".to_vec(),
    });
    if let Some(host) = host {
        out.push(Header {
            name: "x-forwarded-host".into(),
            value: host.as_bytes().to_vec(),
        });
    }
    out
}

/// The response headers the client gets from an agent's answer.
pub fn from_tunnel(headers: Vec<Header>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut parsed = Vec::with_capacity(headers.len());
    for h in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) else {
            tracing::debug!(header = %h.name, "dropping an invalid response header from the agent");
            continue;
        };
        parsed.push((name, value));
    }
    let mut tmp = HeaderMap::new();
    for (n, v) in &parsed {
        if n == http::header::CONNECTION {
            tmp.append(n.clone(), v.clone());
        }
    }
    let listed = connection_listed(&tmp);
    for (name, value) in parsed {
        if !is_hop_by_hop(name.as_str(), &listed) && !FROM_LAPTOP_DROPPED.contains(&name.as_str()) {
            map.append(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_never_cross() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert(
            "cookie",
            HeaderValue::from_static("drawbridge_session=s3cret"),
        );
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            protocol::RELAY_RULES_HEADER,
            HeaderValue::from_static("forged"),
        );
        let out = to_tunnel(
            &h,
            Some("relay.example"),
            "192.0.2.7:5000".parse().expect("addr"),
        );
        let get = |n: &str| {
            out.iter()
                .filter(|h| h.name == n)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
                .collect::<Vec<_>>()
        };
        assert!(get("authorization").is_empty());
        assert!(get("cookie").is_empty());
        assert!(get("x-private").is_empty());
        assert!(get("te").is_empty());
        assert!(get("connection").is_empty());
        // Only the relay says which of its policies allowed a request.
        assert!(get(protocol::RELAY_RULES_HEADER).is_empty());
        assert_eq!(get("x-forwarded-host"), vec!["relay.example"]);
        assert_eq!(get("x-forwarded-for"), vec!["10.0.0.1, 192.0.2.7"]);
        assert_eq!(get("x-forwarded-proto"), vec!["https"]);
        assert_eq!(get("content-type"), vec!["application/json"]);
    }

    #[test]
    fn hop_by_hop_response_headers_are_dropped() {
        let out = from_tunnel(vec![
            Header {
                name: "transfer-encoding".into(),
                value: b"chunked".to_vec(),
            },
            Header {
                name: "connection".into(),
                value: b"x-a".to_vec(),
            },
            Header {
                name: "x-a".into(),
                value: b"1".to_vec(),
            },
            Header {
                name: "set-cookie".into(),
                value: b"drawbridge_session=evil; Path=/".to_vec(),
            },
            Header {
                name: "bad name".into(),
                value: b"1".to_vec(),
            },
            Header {
                name: "content-type".into(),
                value: b"text/event-stream".to_vec(),
            },
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out["content-type"], "text/event-stream");
    }
}
