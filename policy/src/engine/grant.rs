//! Grants: what a route's owner shared with a peer (`agent share ROUTE
//! --with EMAIL|@DOMAIN [--tools a,b] [--read-only] [--expires 7d]`),
//! compiled to Cedar permits that are added to the owner's policy.
//!
//! A grant only ever permits: the owner's forbids (`--tools`, `--read-only`
//! of `agent connect`, a policy file's) still apply to the peer, and so does
//! the organisation's layer. Each grant becomes (at most) four permits:
//!
//! * `grant-<id>` — the session plumbing and the lists (not
//!   `other_method`);
//! * `grant-<id>-resources` — reading (and subscribing to) a resource whose
//!   URI matches one of the grant's patterns (`*` matches any run of
//!   characters: `memo://*`; `*` alone, any resource). None named: none;
//! * `grant-<id>-prompts` — getting a prompt whose name matches one of the
//!   grant's patterns (the same way). None named: none;
//! * `grant-<id>-tools` — calling a tool: one of the grant's tools (when it
//!   names any), and with `read_only` exactly what `--read-only` lets through
//!   (a known read tool ([`READ_TOOLS`]), SQL that parses and only reads, no
//!   file functions, `read_query` only with SQL).
//!
//! Both hold only for the grantee (`principal.email == …`, or
//! `principal.domain == …` for `@domain`) and, when the grant expires, while
//! `context.time` is before its expiry: an expired grant permits nothing even
//! in an engine compiled before it expired.

use super::load::{cedar_set, cedar_string, domain_flag, email_flag};
use super::{Policy, PolicyError, FILE_FUNCTIONS, READ_TOOLS};

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// One person, by email (lowercased).
    Email(String),
    /// Everybody whose email is at this domain, exactly (lowercased).
    Domain(String),
}

impl Grantee {
    /// `bob@example.com` or `@example.com` (as `agent share --with` takes it).
    pub fn parse(value: &str) -> Result<Grantee, PolicyError> {
        let value = value.trim();
        match value.strip_prefix('@') {
            Some(domain) => Ok(Grantee::Domain(domain_flag("--with", value, domain)?)),
            None => Ok(Grantee::Email(email_flag("--with", value)?)),
        }
    }

    /// Whether the grant is for this (verified) email.
    pub fn covers(&self, email: &str) -> bool {
        let email = email.to_lowercase();
        match self {
            Grantee::Email(e) => *e == email,
            Grantee::Domain(d) => email.rsplit_once('@').is_some_and(|(_, at)| at == d),
        }
    }

    fn condition(&self) -> String {
        match self {
            Grantee::Email(e) => format!("principal.email == {}", cedar_string(e)),
            Grantee::Domain(d) => format!("principal.domain == {}", cedar_string(d)),
        }
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::Email(e) => f.write_str(e),
            Grantee::Domain(d) => write!(f, "@{d}"),
        }
    }
}

/// One grant on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its id (lowercase hex): the permits are `grant-<id>`,
    /// `grant-<id>-resources`, `grant-<id>-prompts` and `grant-<id>-tools`.
    pub id: String,
    pub grantee: Grantee,
    /// The only tools the grantee may call; `None`: any tool.
    pub tools: Option<Vec<String>>,
    /// The resources the grantee may read: URI patterns where `*` matches
    /// any run of characters (`memo://*`; `*`: any). Empty: none.
    pub resources: Vec<String>,
    /// The prompts the grantee may get: name patterns, as for resources.
    /// Empty: none.
    pub prompts: Vec<String>,
    /// Only what `--read-only` lets through.
    pub read_only: bool,
    /// Unix seconds after which the grant permits nothing.
    pub expires_at: Option<i64>,
}

impl Grant {
    /// Checks what a person typed: a grantee, tool names, an id.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.id.is_empty() || !self.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PolicyError::Flag {
                flag: "grant id",
                value: self.id.clone(),
                reason: "a grant id is letters and digits",
            });
        }
        for tool in self.tools.iter().flatten() {
            if tool.is_empty() {
                return Err(PolicyError::Flag {
                    flag: "--tools",
                    value: tool.clone(),
                    reason: "a tool name cannot be empty",
                });
            }
        }
        check_patterns("--resources", &self.resources)?;
        check_patterns("--prompts", &self.prompts)?;
        Ok(())
    }

    /// The grant's permits, as Cedar text.
    pub fn cedar_text(&self) -> String {
        let mut who = vec![self.grantee.condition()];
        if let Some(t) = self.expires_at {
            who.push(format!("context.time < {t}"));
        }
        let who = who.join(" && ");
        let mut text = format!(
            "\n// agent share --with {grantee}{expiry}\n\
             @id({id})\n\
             permit (principal, action in [Action::\"session\", Action::\"list\"], resource)\n\
             when {{ {who} }};\n",
            grantee = self.grantee,
            expiry = self
                .expires_at
                .map(|t| format!(" (until {t}, Unix seconds)"))
                .unwrap_or_default(),
            id = cedar_string(&format!("grant-{}", self.id)),
        );
        for (kind, action, patterns) in [
            ("resources", "read_resource", &self.resources),
            ("prompts", "get_prompt", &self.prompts),
        ] {
            // None named: no permit.
            if patterns.is_empty() {
                continue;
            }
            text.push_str(&format!(
                "@id({id})\n\
                 permit (principal, action == Action::{action}, resource)\n\
                 when {{ {who} }}\n\
                 when {{ {matches} }};\n",
                id = cedar_string(&format!("grant-{}-{kind}", self.id)),
                action = cedar_string(action),
                matches = target_matches(patterns),
            ));
        }
        // No tool at all: no tool permit (Cedar refuses an empty set).
        if self.tools.as_deref() == Some(&[]) {
            return text;
        }
        text.push_str(&format!(
            "@id({})\n\
             permit (principal, action == Action::\"call_tool\", resource)\n\
             when {{ {who} }}",
            cedar_string(&format!("grant-{}-tools", self.id)),
        ));
        if let Some(tools) = self.tools.as_deref() {
            text.push_str(&format!(
                "\nwhen {{ {}.contains(resource.name) }}",
                cedar_set(tools.iter().map(String::as_str))
            ));
        }
        if self.read_only {
            text.push_str(&format!(
                "\nwhen {{ {reads}.contains(resource.name) }}\
                 \nunless {{ context.has_sql && !(context.sql.parsed && context.sql.read_only) }}\
                 \nunless {{ resource.name == \"read_query\" && !context.has_sql && !context.listing }}\
                 \nunless {{ context.sql.functions.containsAny({functions}) }}",
                reads = cedar_set(READ_TOOLS),
                functions = cedar_set(FILE_FUNCTIONS),
            ));
        }
        text.push_str(";\n");
        text
    }
}

/// Refuses patterns a person cannot have meant: empty ones, and control
/// characters.
pub(crate) fn check_patterns(flag: &'static str, patterns: &[String]) -> Result<(), PolicyError> {
    for pattern in patterns {
        if pattern.is_empty() {
            return Err(PolicyError::Flag {
                flag,
                value: pattern.clone(),
                reason: "a name or pattern cannot be empty (`*` means all)",
            });
        }
        if pattern.chars().any(char::is_control) {
            return Err(PolicyError::Flag {
                flag,
                value: pattern.clone(),
                reason: "a name or pattern cannot contain control characters",
            });
        }
    }
    Ok(())
}

/// A Cedar condition: `context.target` (the resource URI, or the prompt
/// name) matches one of `patterns`, where `*` matches any run of
/// characters. `patterns` is not empty.
pub(crate) fn target_matches(patterns: &[String]) -> String {
    let alternatives: Vec<String> = patterns
        .iter()
        .map(|p| format!("context.target like \"{}\"", p.escape_default()))
        .collect();
    format!("context has target && ({})", alternatives.join(" || "))
}

impl Policy {
    /// This policy with the permits of `grants` added (same source name,
    /// so the ids and lines of its own policies do not change). Without
    /// grants, a copy of it.
    pub fn with_grants(&self, grants: &[Grant]) -> Result<Policy, PolicyError> {
        if grants.is_empty() {
            return Ok(self.clone());
        }
        let mut text = self.cedar_text().to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("\n// Grants (agent share) on this route:\n");
        for grant in grants {
            grant.check()?;
            text.push_str(&grant.cedar_text());
        }
        Policy::from_cedar_text(&text, self.source_name())
    }
}
