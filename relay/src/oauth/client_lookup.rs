//! The client a request names: a registered one, or one described by its
//! client ID metadata document ([`crate::identity::cimd`]).

use std::net::IpAddr;

use crate::identity::cimd::{is_url_client_id, LookupError};
use crate::state::SharedState;
use crate::store::oauth::OAuthClient;

/// The client `client_id` names: a registered client, or the one its
/// metadata document describes (stored, so revocation and the consent
/// records find it too).
pub async fn find_client(
    state: &SharedState,
    caller: IpAddr,
    client_id: &str,
) -> Result<Option<OAuthClient>, LookupError> {
    let cimd = &state.oauth.cimd;
    if !is_url_client_id(client_id) || !cimd.enabled() {
        return Ok(state
            .store
            .client(client_id)
            .await
            .map_err(crate::RelayError::from)?);
    }
    let client = cimd.client(client_id, caller).await.inspect_err(|e| {
        tracing::info!(client_id, %caller, error = %e, "client metadata document refused");
    })?;
    state
        .store
        .upsert_client(&client)
        .await
        .map_err(crate::RelayError::from)?;
    Ok(Some(client))
}
