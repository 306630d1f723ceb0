//! An MCP client, the official Rust SDK (`rmcp`), that reaches a route
//! through the relay over Streamable HTTP: reqwest with rustls on the ring
//! provider, trusting the relay's CA, sending a client token.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};

/// A connected MCP client.
pub type McpClient = RunningService<RoleClient, ()>;

/// A reqwest client that trusts `ca` and sends `Authorization: Bearer token`.
pub fn http_client(ca: &Path, token: &str) -> reqwest::Client {
    let tls = tunnel::tls::client_config(Some(ca), &[b"h2", b"http/1.1"]).expect("tls config");
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    );
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .default_headers(headers)
        .build()
        .expect("reqwest client")
}

fn transport(url: &str, ca: &Path, token: &str) -> StreamableHttpClientTransport<reqwest::Client> {
    StreamableHttpClientTransport::with_client(
        http_client(ca, token),
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()),
    )
}

/// Connects with the `initialize` handshake (protocol revisions up to
/// 2025-11-25, with an `Mcp-Session-Id` session).
pub async fn connect(url: &str, ca: &Path, token: &str) -> McpClient {
    ().serve(transport(url, ca, token))
        .await
        .unwrap_or_else(|e| panic!("MCP initialize at {url}: {e}"))
}

/// Connects with another lifecycle (e.g. `server/discover`, 2026-07-28).
pub async fn connect_with(
    url: &str,
    ca: &Path,
    token: &str,
    lifecycle: ClientLifecycleMode,
) -> McpClient {
    ().serve_with_lifecycle(transport(url, ca, token), lifecycle)
        .await
        .unwrap_or_else(|e| panic!("MCP connect at {url}: {e}"))
}
