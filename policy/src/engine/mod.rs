//! The policy engine: one Cedar ([`cedar_policy`]) engine decides every MCP
//! message, at the relay and again at the agent. No I/O and no clock (the
//! caller passes the time); the only state is a bounded, process-wide cache of
//! the entities of recent callers (see *Cost*).
//!
//! * [`Policy`] — a policy loaded from Cedar text ([`Policy::from_cedar_text`])
//!   or compiled from the simple flags ([`Policy::from_flags`]), validated
//!   against the schema either way.
//! * [`Engine`] — the owner's policy, and optionally the organisation's,
//!   combined; [`Engine::decide`] gives a [`Decision`] for one message and
//!   [`Engine::visible_tools`] filters a `tools/list` answer.
//!
//! # What a policy sees
//!
//! The schema is [`SCHEMA_TEXT`] (`schema.cedarschema`, commented). In short:
//!
//! * **principal** `User::"<email>"` — the verified email, lowercased, with
//!   `email` and `domain` attributes; the identity provider's groups are its
//!   parents (`principal in Group::"ops"`).
//! * **action** — one per kind of MCP message ([`Action`]): `initialize`
//!   (also `server/discover`), `ping`, `notify` (any notification), `respond`
//!   (a client's response to a server request), `list_tools`,
//!   `list_resources`, `list_prompts`, `call_tool`, `read_resource` (also
//!   subscribe/unsubscribe), `get_prompt`, and `other_method` for any other
//!   request method. Two action groups: `Action::"session"` (initialize,
//!   ping, notify, respond) and `Action::"list"` (the three lists).
//! * **resource** — for `call_tool` the tool, `Tool::"<name>"`, a child of its
//!   route; for everything else the route, `Route::"<name>"`. So
//!   `resource in Route::"crm"` covers a route and its tools. A tool's id is
//!   its bare name: in an organisation's policy `Tool::"write_query"` means
//!   that tool on every route.
//! * **context** — `method`, `tool?`, `target?` (tool, prompt or resource
//!   URI), `arguments` (a set of `{name, value}` records, values as strings),
//!   `arguments_json` (lowercased, for `like`), `has_sql` and `sql` (the facts of
//!   [`crate::sql::classify`]: `parsed`, `read_only`, `kinds`, `tables`,
//!   `table_names`, `table_list`, `functions`), `listing`, `client` and
//!   `client_id`, `route` (with `name` and `owner`), `time` (Unix seconds) and
//!   `now` (a `datetime`).
//!
//! Arbitrary JSON arguments cannot be typed in a Cedar schema (records are
//! closed), hence the two forms: exact matches on a top-level argument with
//! `context.arguments.contains({name: "table_name", value: "users"})`, and
//! patterns over all of them with `context.arguments_json like "*secret*"`
//! (lowercased, so that `SECRETS` does not dodge a pattern).
//!
//! # Decisions
//!
//! * **Fail closed.** Cedar skips a policy whose evaluation errors, which for
//!   a `forbid` would mean allowing; here any evaluation error denies, and
//!   names the policy in [`Decision::errors`]. So does a request that cannot
//!   be built: a `tools/call` without a tool name, or a caller without an
//!   email (which would otherwise equal a route owner left empty).
//! * **SQL that does not parse is refused before any policy** (pseudo-policy
//!   [`UNPARSED_SQL`]), for every identity including the owner: a policy
//!   cannot judge what it cannot read, and a forbid on `sql.tables` would
//!   otherwise miss every table of SQL the parser rejects.
//! * **The SQL judged is the SQL sent.** If the message carries SQL (a string
//!   `arguments.query` of `tools/call`) and the caller passed no facts, the
//!   engine classifies it itself.
//! * **Default: only the owner.** [`Policy::from_flags`] with no flags
//!   permits the owner and nobody else; with no permit, Cedar denies.
//!
//! # Flags
//!
//! [`Policy::from_flags`] writes Cedar text (see [`Policy::cedar_text`]) with
//! one `@id` per rule, so a decision names the flag behind it:
//!
//! * `owner` — permits the owner everything.
//! * `allow-<email>` / `allow-@<domain>` — permits that identity, or everybody
//!   whose email's domain is exactly that domain (not its subdomains),
//!   everything.
//! * `tools` — forbids calling any tool not listed, to everybody, the owner
//!   included: the flags describe what the route offers, and the owner's own
//!   LLM goes through the same door.
//! * `read-only-*` — `--read-only`, for everybody:
//!   * `read-only-sql`: a call with SQL that does not only read is forbidden,
//!     whatever the tool is called (`WITH x AS (…) DELETE …` sent to
//!     `read_query` writes, and is refused);
//!   * `read-only-no-sql`: `read_query` without SQL (no `query`, or one that
//!     is not a string) is refused: there is nothing to judge;
//!   * `read-only-tools`: only the known read tools ([`READ_TOOLS`]) may be
//!     called at all. Tools known to write ([`WRITE_TOOLS`]) are refused even
//!     with read-only SQL, and so is every unknown tool: a tool that writes
//!     without SQL, or ignores the SQL it is handed, cannot be recognised by
//!     its arguments, and adding a harmless `query` argument must not make a
//!     call pass. To share other tools read-only, write a policy file.
//!   * `read-only-functions`: SQL calling [`FILE_FUNCTIONS`]
//!     (`load_extension`, `writefile`, …) is refused although SQLite counts it
//!     as reading.
//!
//! # Two layers: owner and organisation
//!
//! [`Engine::new`] takes the route owner's policy and, optionally, the
//! organisation's (`relay serve --policy`). Each is evaluated as its own Cedar
//! policy set, and **a message is allowed only if both layers allow it**:
//!
//! * the owner's layer allows as Cedar does: some permit matches and no
//!   forbid does;
//! * the organisation's layer allows likewise — except that a set with no
//!   `permit` at all is a pure guardrail and allows whatever it does not
//!   forbid.
//!
//! Consequences: an organisation's forbid always wins; an organisation's
//! permit never widens a route (the owner's consent is still needed — the
//! laptop's owner decides who reaches the laptop); an organisation that writes
//! permits (e.g. only `@corp.com`) restricts every route to them. One merged
//! set was rejected because a permit in either file would then grant alone.
//! Policy ids of the organisation's layer are reported prefixed with
//! [`ORG_PREFIX`] (`org/no-attach`).
//!
//! # Listing tools
//!
//! [`Engine::visible_tools`] keeps a tool if `call_tool` of it, with no
//! arguments, no SQL and `context.listing == true`, is allowed. So a tool is
//! visible when *some* call to it could be allowed, judged on who asks, which
//! tool, which route and when — not on a call's content, which a listing does
//! not have. Policies that judge content keep to that: forbids on content are
//! written `context.has_sql && …` (never true while listing) or
//! `!context.listing && …`, and permits that need content are written
//! `context.listing || …`. The flags and the examples in `deploy/policies/`
//! do.
//!
//! Resources and prompts are listed the same way:
//! [`Engine::resource_visible`] asks `read_resource` of the resource's URI
//! (or a template's `uriTemplate`), [`Engine::prompt_visible`] asks
//! `get_prompt` of the prompt's name, each with `context.target` set, no
//! arguments and `context.listing == true`.
//!
//! # Cost
//!
//! A decision builds one context, of only the attributes some policy of
//! the engine can read (see `reads.rs`: the rest cannot change the
//! decision, and Cedar evaluates every attribute it is given), takes the entities (action, user, client,
//! route, tool) from a cache keyed by everything they are built from — they
//! do not depend on the policies, the time or the message's content, and
//! building them costs Cedar a transitive closure — and evaluates each layer.
//! The `datetime` of `context.now` is built once per second and thread (Cedar
//! parses a name to build one). The `decision_cost` test (`--ignored`, run it
//! in release) prints the cost: about 20–25 µs for a `read_query` call with
//! SQL facts under `--allow`/`--read-only` flags and an organisation
//! guardrail, on a 2-core machine; the SQL's classification is extra.

mod grant;
mod load;
mod reads;
mod request;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use cedar_policy::{Authorizer, Entities, Response};

pub use grant::{Grant, Grantee};
pub use load::{
    Policy, PolicyError, Problem, FILE_FUNCTIONS, READ_TOOLS, SCHEMA_TEXT, WRITE_TOOLS,
};
pub use request::Action;

use crate::jsonrpc::{Message, PROMPTS_GET, RESOURCES_READ, TOOLS_CALL};
use crate::sql::{classify, SqlFacts};
use request::{Facts, Vocabulary};

/// Pseudo-policy id of the built-in refusal of SQL that does not parse.
pub const UNPARSED_SQL: &str = "builtin/unparsed-sql";
/// Pseudo-policy id of a denial because no policy of the owner's layer
/// permits the message.
pub const NO_PERMIT: &str = "default-deny";
/// Prefix of the organisation layer's policy ids in decisions.
pub const ORG_PREFIX: &str = "org/";
/// Pseudo-policy id of a denial because the organisation's layer has
/// permits and none permits the message.
pub const ORG_NO_PERMIT: &str = "org/default-deny";

/// Who asks, through which client, on which route, and when.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The verified email of the bearer token (compared lowercased).
    pub email: &'a str,
    /// The identity provider's groups (become `Group` parents).
    pub groups: &'a [String],
    /// The OAuth client id.
    pub client_id: &'a str,
    /// The OAuth client's name, if known.
    pub client_name: Option<&'a str>,
    /// The route's name.
    pub route: &'a str,
    /// The route owner's email.
    pub route_owner: &'a str,
    /// Now (the engine reads no clock).
    pub time: SystemTime,
}

/// One message to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub caller: Caller<'a>,
    /// The classified JSON-RPC message.
    pub message: &'a Message,
    /// Its SQL facts, when it carries SQL. `None` with a message that does
    /// carry SQL: the engine classifies it.
    pub sql: Option<&'a SqlFacts>,
}

/// The answer for one message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Whether the message may go on.
    pub allowed: bool,
    /// The ids of the policies that decided: when allowed, the permits that
    /// matched (both layers'); when denied, the forbids that matched, the
    /// policies that failed to evaluate, or a pseudo-id ([`NO_PERMIT`],
    /// [`ORG_NO_PERMIT`], [`UNPARSED_SQL`]). The organisation's are
    /// prefixed [`ORG_PREFIX`].
    pub policies: Vec<String>,
    /// Evaluation errors (each denies).
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(policies: Vec<String>, errors: Vec<String>) -> Self {
        Self {
            allowed: false,
            policies,
            errors,
        }
    }

    /// A sentence for a person (the JSON-RPC error message of a denial):
    /// `denied by policy read-only-sql`.
    pub fn message(&self) -> String {
        let verb = if self.allowed { "allowed" } else { "denied" };
        let mut message = match self.policies.as_slice() {
            [] => verb.to_owned(),
            [one] => format!("{verb} by policy {one}"),
            many => format!("{verb} by policies {}", many.join(", ")),
        };
        if !self.errors.is_empty() {
            message.push_str(&format!(" (evaluation failed: {})", self.errors.join("; ")));
        }
        message
    }
}

/// What one layer says.
enum Verdict {
    Allow(Vec<String>),
    Forbid(Vec<String>),
    NoPermit,
    Error(Vec<String>, Vec<String>),
}

/// The owner's policy and, optionally, the organisation's, combined as
/// described in the module docs (both must allow).
#[derive(Debug, Clone)]
pub struct Engine {
    owner: Policy,
    org: Option<Policy>,
    authorizer: Authorizer,
}

impl Engine {
    /// An engine for one owner's policy, under an optional organisation
    /// policy.
    pub fn new(owner: Policy, org: Option<Policy>) -> Self {
        Self {
            owner,
            org,
            authorizer: Authorizer::new(),
        }
    }

    /// The owner's layer.
    pub fn owner(&self) -> &Policy {
        &self.owner
    }

    /// The organisation's layer.
    pub fn org(&self) -> Option<&Policy> {
        self.org.as_ref()
    }

    /// Decide one message. Never panics; anything that cannot be evaluated
    /// denies (see the module docs).
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let message = request.message;
        let classified;
        let sql = match (request.sql, message.sql_argument()) {
            (Some(facts), _) => Some(facts),
            (None, Some(query)) => {
                classified = classify(query);
                Some(&classified)
            }
            (None, None) => None,
        };
        if sql.is_some_and(|facts| !facts.parsed) {
            return Decision::deny(vec![UNPARSED_SQL.to_owned()], Vec::new());
        }
        let action = Action::of(message);
        let facts = Facts {
            action,
            method: message.method.as_deref().unwrap_or_default(),
            target: message.target.as_deref(),
            arguments: message.arguments.as_ref(),
            sql,
            listing: false,
        };
        self.decide_facts(&request.caller, &facts)
    }

    /// Filter a `tools/list` answer: the tools this caller may see, in the
    /// given order. A tool is visible if `call_tool` of it is allowed with
    /// `context.listing` true, no arguments and no SQL (module docs).
    pub fn visible_tools(&self, caller: &Caller<'_>, tools: &[String]) -> Vec<String> {
        tools
            .iter()
            .filter(|tool| self.tool_visible(caller, tool))
            .cloned()
            .collect()
    }

    /// Whether one tool is visible to this caller (as in
    /// [`Engine::visible_tools`]): a denied call to a tool that is not
    /// visible can be answered as an unknown tool.
    pub fn tool_visible(&self, caller: &Caller<'_>, tool: &str) -> bool {
        let facts = Facts {
            action: Action::CallTool,
            method: TOOLS_CALL,
            target: Some(tool),
            arguments: None,
            sql: None,
            listing: true,
        };
        self.decide_facts(caller, &facts).allowed
    }

    /// Whether a resource (its URI, or a template's `uriTemplate`) is
    /// visible to this caller in `resources/list` and
    /// `resources/templates/list`: `read_resource` of it is allowed with
    /// `context.listing` true. A template is visible when the caller may
    /// read its template text, e.g. `memo://{name}` with `memo://*`.
    pub fn resource_visible(&self, caller: &Caller<'_>, uri: &str) -> bool {
        self.target_visible(caller, Action::ReadResource, RESOURCES_READ, uri)
    }

    /// Whether a prompt is visible to this caller in `prompts/list`:
    /// `get_prompt` of it is allowed with `context.listing` true and no
    /// arguments.
    pub fn prompt_visible(&self, caller: &Caller<'_>, name: &str) -> bool {
        self.target_visible(caller, Action::GetPrompt, PROMPTS_GET, name)
    }

    fn target_visible(
        &self,
        caller: &Caller<'_>,
        action: Action,
        method: &str,
        target: &str,
    ) -> bool {
        let facts = Facts {
            action,
            method,
            target: Some(target),
            arguments: None,
            sql: None,
            listing: true,
        };
        self.decide_facts(caller, &facts).allowed
    }

    fn decide_facts(&self, caller: &Caller<'_>, facts: &Facts<'_>) -> Decision {
        let reads = match &self.org {
            Some(org) => self.owner.reads.union(org.reads),
            None => self.owner.reads,
        };
        let built = Vocabulary::get().and_then(|v| request::build(v, caller, facts, None, reads));
        let (request, entities) = match built {
            Ok(built) => built,
            Err(error) => return Decision::deny(Vec::new(), vec![error]),
        };
        let owner = self.layer(&self.owner, false, &request, &entities);
        let org = self
            .org
            .as_ref()
            .map(|org| self.layer(org, !org.has_permit, &request, &entities));

        let mut decision = Decision {
            allowed: true,
            policies: Vec::new(),
            errors: Vec::new(),
        };
        let mut denied = Vec::new();
        for (verdict, prefix, no_permit) in
            [(Some(owner), "", NO_PERMIT)]
                .into_iter()
                .chain([(org, ORG_PREFIX, ORG_NO_PERMIT)])
        {
            let prefixed =
                |ids: Vec<String>| ids.into_iter().map(move |id| format!("{prefix}{id}"));
            match verdict {
                None => {}
                Some(Verdict::Allow(ids)) => decision.policies.extend(prefixed(ids)),
                Some(Verdict::Forbid(ids)) => denied.extend(prefixed(ids)),
                Some(Verdict::NoPermit) => denied.push(no_permit.to_owned()),
                Some(Verdict::Error(ids, errors)) => {
                    denied.extend(prefixed(ids));
                    decision.errors.extend(errors);
                }
            }
        }
        if !denied.is_empty() || !decision.errors.is_empty() {
            decision.allowed = false;
            decision.policies = denied;
        }
        decision
    }

    /// One layer's verdict. `guardrail`: a set without permits, which allows
    /// whatever it does not forbid.
    fn layer(
        &self,
        policy: &Policy,
        guardrail: bool,
        request: &cedar_policy::Request,
        entities: &Entities,
    ) -> Verdict {
        let response: Response = self
            .authorizer
            .is_authorized(request, &policy.set, entities);
        let diagnostics = response.diagnostics();
        let mut error_ids = Vec::new();
        let mut errors = Vec::new();
        for error in diagnostics.errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            error_ids.push(e.policy_id().to_string());
            errors.push(error.to_string());
        }
        if !errors.is_empty() {
            policy.sort_ids(&mut error_ids);
            return Verdict::Error(error_ids, errors);
        }
        let mut ids: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        policy.sort_ids(&mut ids);
        match response.decision() {
            cedar_policy::Decision::Allow => Verdict::Allow(ids),
            cedar_policy::Decision::Deny if !ids.is_empty() => Verdict::Forbid(ids),
            cedar_policy::Decision::Deny if guardrail => Verdict::Allow(Vec::new()),
            cedar_policy::Decision::Deny => Verdict::NoPermit,
        }
    }
}
