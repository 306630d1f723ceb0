//! `agent login --relay URL`: the device authorization grant (RFC 8628).
//! The agent asks the relay for a code, shows it with the URL where its
//! person approves it (signed in to the relay in a browser), and polls the
//! token endpoint at the interval the relay set (5 s longer after each
//! `slow_down`) until it gets its agent credential, the person denies, or the
//! code expires.

use std::time::Duration;

use crate::account::relay_api::RelayApi;
use crate::error::AgentError;

use common::device_grant::{AGENT_CLIENT_ID as CLIENT_ID, GRANT_TYPE};

/// What the person must do.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// `XXXX-XXXX`.
    pub user_code: String,
    /// Where to enter it.
    pub verification_uri: String,
    /// The same with the code filled in.
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
}

/// The credential the relay issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub token_id: String,
    pub owner: String,
}

/// Runs the device grant; `show` is called once with what the person must do.
pub async fn login(api: &RelayApi, show: impl FnOnce(&Prompt)) -> Result<Issued, AgentError> {
    let start = api
        .post_form("/oauth/device_authorization", &[("client_id", CLIENT_ID)])
        .await?;
    if start.status != 200 {
        return Err(AgentError::Api(format!(
            "the relay refused to start a sign-in: {}",
            start.problem()
        )));
    }
    let text = |name: &str| {
        start.field(name).map(str::to_owned).ok_or_else(|| {
            AgentError::Api(format!("the relay's device authorization has no {name}"))
        })
    };
    let device_code = text("device_code")?;
    let number = |name: &str, default: u64| {
        start
            .body
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or(default)
    };
    let prompt = Prompt {
        user_code: text("user_code")?,
        verification_uri: text("verification_uri")?,
        verification_uri_complete: start.field("verification_uri_complete").map(str::to_owned),
        expires_in: Duration::from_secs(number("expires_in", 600)),
    };
    // RFC 8628 §3.5: 5 s when the relay says nothing.
    let mut interval = Duration::from_secs(number("interval", 5).max(1));
    show(&prompt);
    let deadline = tokio::time::Instant::now() + prompt.expires_in + interval;
    loop {
        tokio::time::sleep(interval).await;
        let answer = api
            .post_form(
                "/oauth/token",
                &[
                    ("grant_type", GRANT_TYPE),
                    ("device_code", &device_code),
                    ("client_id", CLIENT_ID),
                ],
            )
            .await?;
        if answer.status == 200 {
            let field = |name: &str| {
                answer.field(name).map(str::to_owned).ok_or_else(|| {
                    AgentError::Api(format!("the relay's token answer has no {name}"))
                })
            };
            return Ok(Issued {
                token: field("access_token")?,
                token_id: field("token_id")?,
                owner: field("owner")?,
            });
        }
        match answer.field("error") {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => {
                return Err(AgentError::Api(
                    "the sign-in was denied in the browser".into(),
                ))
            }
            Some("expired_token") => {
                return Err(AgentError::Api(
                    "the code expired before it was approved; run agent login again".into(),
                ))
            }
            _ => {
                return Err(AgentError::Api(format!(
                    "the relay refused the sign-in: {}",
                    answer.problem()
                )))
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AgentError::Api(
                "the code expired before it was approved; run agent login again".into(),
            ));
        }
    }
}
