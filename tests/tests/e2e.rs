//! End-to-end tests: one test binary (faster to link), one module per theme.

#[path = "e2e/acme.rs"]
mod acme;
#[path = "e2e/agent_restarts.rs"]
mod agent_restarts;
#[path = "e2e/audit_chain.rs"]
mod audit_chain;
#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/bench_mode.rs"]
mod bench_mode;
#[path = "e2e/browser_login.rs"]
mod browser_login;
#[path = "e2e/churn.rs"]
mod churn;
#[path = "e2e/cimd.rs"]
mod cimd;
#[path = "e2e/client_transports.rs"]
mod client_transports;
#[path = "e2e/cluster_audit_reset.rs"]
mod cluster_audit_reset;
#[path = "e2e/cluster_certificates.rs"]
mod cluster_certificates;
#[path = "e2e/cluster_database_loss.rs"]
mod cluster_database_loss;
#[path = "e2e/cluster_legacy_sse.rs"]
mod cluster_legacy_sse;
#[path = "e2e/cluster_metrics.rs"]
mod cluster_metrics;
#[path = "e2e/cluster_races.rs"]
mod cluster_races;
#[path = "e2e/cluster_revocation.rs"]
mod cluster_revocation;
#[path = "e2e/cluster_sign_in.rs"]
mod cluster_sign_in;
#[path = "e2e/config_file.rs"]
mod config_file;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/device_login.rs"]
mod device_login;
#[path = "e2e/embedded.rs"]
mod embedded;
#[path = "e2e/forwarding.rs"]
mod forwarding;
#[path = "e2e/gateway.rs"]
mod gateway;
#[path = "e2e/github.rs"]
mod github;
#[path = "e2e/grant_resources.rs"]
mod grant_resources;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/http2_first_errors.rs"]
mod http2_first_errors;
#[path = "e2e/idle_connections.rs"]
mod idle_connections;
#[path = "e2e/inspector.rs"]
mod inspector;
#[path = "e2e/isolation.rs"]
mod isolation;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/mcp_sqlite.rs"]
mod mcp_sqlite;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/network_change.rs"]
mod network_change;
#[path = "e2e/nodes.rs"]
mod nodes;
#[path = "e2e/npm_clients.rs"]
mod npm_clients;
#[path = "e2e/oauth.rs"]
mod oauth;
#[path = "e2e/oidc.rs"]
mod oidc;
#[path = "e2e/owner_policy.rs"]
mod owner_policy;
#[path = "e2e/private_state.rs"]
mod private_state;
#[path = "e2e/python_client.rs"]
mod python_client;
#[path = "e2e/relay_restarts.rs"]
mod relay_restarts;
#[path = "e2e/reload.rs"]
mod reload;
#[path = "e2e/route_cap.rs"]
mod route_cap;
#[path = "e2e/route_requests.rs"]
mod route_requests;
#[path = "e2e/scope_step_up.rs"]
mod scope_step_up;
#[path = "e2e/secrets.rs"]
mod secrets;
#[path = "e2e/session_affinity.rs"]
mod session_affinity;
#[path = "e2e/session_end.rs"]
mod session_end;
#[path = "e2e/sharing.rs"]
mod sharing;
#[path = "e2e/sharing_v2.rs"]
mod sharing_v2;
#[path = "e2e/sign_in_throttling.rs"]
mod sign_in_throttling;
#[path = "e2e/sqlite_bounds.rs"]
mod sqlite_bounds;
#[path = "e2e/stdio.rs"]
mod stdio;
#[path = "e2e/tool_pinning.rs"]
mod tool_pinning;
#[path = "e2e/transports.rs"]
mod transports;
