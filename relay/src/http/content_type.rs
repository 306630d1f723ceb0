//! What a message's `Content-Type` says it carries.

use ::http::{header, HeaderMap};

/// Whether a response is a stream of server-sent events.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Whether a message's body is JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;

    fn with(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn media_types_are_read_with_their_parameters() {
        assert!(is_event_stream(&with("Text/Event-Stream; charset=utf-8")));
        assert!(!is_event_stream(&with("application/json")));
        assert!(is_json(&with("application/JSON; charset=utf-8")));
        assert!(!is_json(&with("application/jsonl")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
