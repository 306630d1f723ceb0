//! `agent share`: grants on the owner's routes, recorded at the relay
//! (`/api/…`, with the credential of `agent login`), where they become
//! policy for the route: the peer signs in as themselves and gets what the
//! grant names, until it expires or is revoked.

use std::time::Duration;

use serde::Deserialize;

use crate::account::relay_api::RelayApi;
use crate::error::AgentError;

/// A grant to make.
#[derive(Debug, Clone)]
pub struct Share<'a> {
    pub route: &'a str,
    /// `bob@example.com` or `@example.com`.
    pub with: &'a str,
    pub tools: Option<&'a [String]>,
    /// The resources they may read (URI patterns); empty: none.
    pub resources: &'a [String],
    /// The prompts they may get (name patterns); empty: none.
    pub prompts: &'a [String],
    pub read_only: bool,
    pub expires: Option<Duration>,
}

/// A grant as the relay shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct GrantView {
    pub id: String,
    pub route: String,
    pub route_url: String,
    pub with: String,
    pub tools: Option<Vec<String>>,
    /// Absent from an older relay's answer (which let a grantee read every
    /// resource and get every prompt).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
    pub read_only: bool,
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub expired: bool,
}

impl GrantView {
    /// `ID  ROUTE  WHO  TOOLS  RESOURCES  PROMPTS  READ-ONLY  EXPIRES`
    /// line of `--list`.
    pub fn line(&self) -> String {
        let tools = match &self.tools {
            None => "all tools".to_owned(),
            Some(t) if t.is_empty() => "no tools".to_owned(),
            Some(t) => t.join(","),
        };
        let named = |list: &Option<Vec<String>>, what: &str| match list {
            None => format!("all {what}"),
            Some(l) if l.is_empty() => format!("no {what}"),
            Some(l) if l.len() == 1 && l[0] == "*" => format!("all {what}"),
            Some(l) => format!("{what} {}", l.join(",")),
        };
        format!(
            "{}  {}  {}  {}  {}  {}  {}  {}",
            self.id,
            self.route,
            self.with,
            tools,
            named(&self.resources, "resources"),
            named(&self.prompts, "prompts"),
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            },
            self.expiry()
        )
    }

    /// When it expires, for a person.
    pub fn expiry(&self) -> String {
        match self.expires_at {
            None => "never expires".to_owned(),
            Some(t) => {
                let at = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
                let when = humantime::format_rfc3339_seconds(at);
                if self.expired {
                    format!("expired {when}")
                } else {
                    format!("expires {when}")
                }
            }
        }
    }
}

fn refused(what: &str, answer: &crate::account::relay_api::Answer) -> AgentError {
    AgentError::Api(format!("{what}: {}", answer.problem()))
}

/// Records a grant.
pub async fn create(
    api: &RelayApi,
    token: &str,
    share: &Share<'_>,
) -> Result<GrantView, AgentError> {
    protocol::validate_route_name(share.route).map_err(|e| AgentError::Config(e.to_string()))?;
    let mut body = serde_json::json!({
        "with": share.with,
        "tools": share.tools,
        "read_only": share.read_only,
        "expires_in": share.expires.map(|d| d.as_secs().max(1)),
    });
    // Only when named: a relay that predates them refuses unknown fields,
    // and still takes a share without them.
    for (key, list) in [("resources", share.resources), ("prompts", share.prompts)] {
        if !list.is_empty() {
            body[key] = serde_json::json!(list);
        }
    }
    let answer = api
        .call(
            reqwest::Method::POST,
            &format!("/api/routes/{}/grants", share.route),
            token,
            Some(&body),
        )
        .await?;
    if answer.status != 201 {
        return Err(refused("the relay refused to share the route", &answer));
    }
    serde_json::from_value(answer.body)
        .map_err(|e| AgentError::Api(format!("the relay's answer is not a grant: {e}")))
}

/// The owner's grants (of one route, or all).
pub async fn list(
    api: &RelayApi,
    token: &str,
    route: Option<&str>,
) -> Result<Vec<GrantView>, AgentError> {
    let path = match route {
        Some(r) => format!(
            "/api/grants?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("route", r)
                .finish()
        ),
        None => "/api/grants".to_owned(),
    };
    let answer = api.call(reqwest::Method::GET, &path, token, None).await?;
    if answer.status != 200 {
        return Err(refused("the relay refused to list the grants", &answer));
    }
    let grants = answer
        .body
        .get("grants")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    serde_json::from_value(grants)
        .map_err(|e| AgentError::Api(format!("the relay's answer is not a list of grants: {e}")))
}

/// Revokes a grant; returns its route.
pub async fn revoke(api: &RelayApi, token: &str, id: &str) -> Result<String, AgentError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AgentError::Config(format!(
            "{id:?} is not a grant id (see agent share --list)"
        )));
    }
    let answer = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/grants/{id}"),
            token,
            None,
        )
        .await?;
    if answer.status != 200 {
        return Err(refused("the relay refused to revoke the grant", &answer));
    }
    Ok(answer.field("route").unwrap_or_default().to_owned())
}
