//! What the `oauth` fuzz target checks about the authorization server's
//! request parsers, in one place, so that the fuzz target (`fuzz/`) and the
//! corpus replay test (`relay/tests/fuzz_corpus.rs`) run exactly the same
//! checks.
//!
//! Not part of the API: hidden from the docs, no stability promise.

use http::{header, HeaderMap, HeaderValue};

use crate::identity::clients::{self, ClientMetadata};
use crate::oauth::authorize::{self, Refusal};
use crate::oauth::{pkce, resource, session, Params};
use crate::store::oauth::OAuthClient;

/// The relay the fuzzed requests are made to.
const PUBLIC_URL: &str = "https://relay.example";

/// The one registered client the fuzzed authorization requests may name.
const CLIENT_ID: &str = "dbc_fuzz";

/// Its redirect URIs: a web app, a loopback one (any port matches) and a
/// native app's private-use scheme.
const REDIRECT_URIS: [&str; 3] = [
    "https://client.example/callback",
    "http://127.0.0.1/callback",
    "cursor://anysphere.cursor-retrieval/oauth/callback",
];

/// One fuzz input, fed to every OAuth request parser. The input is read as
/// a form body / query string, as a registration body, as a cookie header,
/// and (split at its first newline) as a pair of redirect URIs or as a PKCE
/// verifier and challenge. Checked:
/// * nothing panics;
/// * a form's parameters are what was sent: `get` finds only non-empty
///   values of the name asked for, and `repeated` names a repeated one;
/// * an authorization request is never refused by redirecting to a URI that
///   is not registered (no open redirect), and an accepted one has a
///   registered redirect URI, an S256-shaped challenge, and names a route of
///   this relay by its canonical URL;
/// * accepted registration metadata holds 1 to 10 redirect URIs, each of
///   which may be registered (no `javascript:`, no plain http off loopback);
/// * redirect URIs match only exactly, or as an http loopback URI with
///   another port;
/// * a PKCE verifier verifies only against its own S256 challenge;
/// * a resource names a route only as that route's canonical URL.
pub fn oauth(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\n').unwrap_or((&text, ""));

    params(data);
    authorization_request(&text);
    registration(data);
    cookie(data);
    redirect_pair(first, second);
    pkce_pair(first, second);
    resource_url(&text);
}

fn params(data: &[u8]) {
    let p = Params::parse(data);
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    for (k, _) in &pairs {
        if let Some(v) = p.get(k) {
            assert!(!v.is_empty(), "empty value returned for {k:?}");
            assert!(
                pairs.iter().any(|(k2, v2)| k2 == k && v2 == v),
                "{k:?}={v:?} was not sent"
            );
        }
    }
    if let Some(r) = p.repeated() {
        assert!(
            pairs.iter().filter(|(k, _)| k == r).count() >= 2,
            "{r:?} is not repeated"
        );
    }
}

fn registered_client() -> OAuthClient {
    OAuthClient {
        client_id: CLIENT_ID.to_owned(),
        client_name: Some("fuzz".to_owned()),
        redirect_uris: REDIRECT_URIS.iter().map(|u| (*u).to_owned()).collect(),
        created_at: 0,
    }
}

fn is_registered(uri: &str) -> bool {
    REDIRECT_URIS
        .iter()
        .any(|r| clients::redirect_matches(r, uri))
}

fn authorization_request(query: &str) {
    let lookup = |id: &str| Ok((id == CLIENT_ID).then(registered_client));
    match authorize::check_query(PUBLIC_URL, query, lookup) {
        Ok(req) => {
            assert!(is_registered(&req.redirect_uri), "{req:?}");
            assert!(pkce::valid_challenge(&req.code_challenge), "{req:?}");
            assert_eq!(
                req.resource,
                format!("{PUBLIC_URL}/mcp/{}", req.route),
                "{req:?}"
            );
            assert!(protocol::validate_route_name(&req.route).is_ok(), "{req:?}");
        }
        Err(Refusal::Redirect { redirect_uri, .. }) => {
            assert!(
                is_registered(&redirect_uri),
                "open redirect to {redirect_uri:?} for {query:?}"
            );
        }
        Err(Refusal::Page { .. } | Refusal::Limited { .. }) => {}
    }
}

fn registration(body: &[u8]) {
    if let Ok(meta) = ClientMetadata::parse(body) {
        assert!(
            (1..=10).contains(&meta.redirect_uris.len()),
            "{meta:?} from {body:?}"
        );
        for u in &meta.redirect_uris {
            assert!(clients::check_redirect_uri(u).is_ok(), "{u:?}");
            let scheme = u.split(':').next().unwrap_or_default().to_ascii_lowercase();
            assert!(
                !matches!(scheme.as_str(), "javascript" | "data" | "file"),
                "{u:?} registered"
            );
        }
    }
}

fn cookie(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, value);
    if let Some(id) = session::cookie_id(&headers) {
        assert!(!id.contains(';'), "{id:?}");
    }
}

fn redirect_pair(registered: &str, presented: &str) {
    if clients::redirect_matches(registered, presented) && registered != presented {
        let (Ok(r), Ok(p)) = (url::Url::parse(registered), url::Url::parse(presented)) else {
            panic!("matched without parsing: {registered:?} {presented:?}");
        };
        assert_eq!(r.scheme(), "http", "{registered:?} {presented:?}");
        assert_eq!(r.host(), p.host(), "{registered:?} {presented:?}");
        assert_eq!(r.path(), p.path(), "{registered:?} {presented:?}");
    }
}

fn pkce_pair(verifier: &str, challenge: &str) {
    if pkce::verify(verifier, challenge) {
        assert_eq!(pkce::s256(verifier), challenge);
    }
    let own = pkce::s256(verifier);
    assert!(pkce::valid_challenge(&own), "{own:?}");
}

fn resource_url(resource: &str) {
    if let Some((route, url)) = resource::route_of(PUBLIC_URL, resource) {
        assert_eq!(url, format!("{PUBLIC_URL}/mcp/{route}"));
        assert!(
            resource == url || resource.strip_suffix('/') == Some(url.as_str()),
            "{resource:?} taken for {url:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_authorization_request_passes_the_checks() {
        let challenge = pkce::s256(&"v".repeat(43));
        let q = format!(
            "client_id={CLIENT_ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback\
             &response_type=code&code_challenge={challenge}&code_challenge_method=S256\
             &resource=https%3A%2F%2Frelay.example%2Fmcp%2Fdb&state=s"
        );
        let lookup = |id: &str| Ok((id == CLIENT_ID).then(registered_client));
        let req = authorize::check_query(PUBLIC_URL, &q, lookup).expect("accepted");
        assert_eq!(req.route, "db");
        oauth(q.as_bytes());
    }

    #[test]
    fn an_unregistered_redirect_uri_is_a_page_not_a_redirect() {
        let q = format!(
            "client_id={CLIENT_ID}&redirect_uri=https%3A%2F%2Fevil.example%2Fcallback&response_type=token"
        );
        let lookup = |id: &str| Ok((id == CLIENT_ID).then(registered_client));
        assert!(matches!(
            authorize::check_query(PUBLIC_URL, &q, lookup),
            Err(Refusal::Page { .. })
        ));
        oauth(q.as_bytes());
    }
}
