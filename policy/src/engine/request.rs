//! Turning one MCP message into a Cedar request: principal, action, resource,
//! context and the few entities they refer to. Everything here follows
//! `schema.cedarschema`; a test checks every action's request against it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy as cedar;
use cedar_policy::{Context, Entities, Entity, EntityId, EntityTypeName, EntityUid};
use cedar_policy::{RestrictedExpression as Expr, Schema};
use serde_json::Value;

use crate::jsonrpc::{
    Message, MessageKind, PROMPTS_GET, RESOURCES_READ, RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE,
    TOOLS_CALL,
};
use crate::sql::SqlFacts;

use super::reads::Reads;
use super::Caller;

/// The Cedar action an MCP message is judged as (`Action::"<as_str>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `initialize`, and `server/discover` (2026-07-28), which plays its role.
    Initialize,
    /// `ping`.
    Ping,
    /// Any notification from the client.
    Notify,
    /// A response or error response from the client (to a server request:
    /// sampling, roots, elicitation).
    Respond,
    /// `tools/list`.
    ListTools,
    /// `resources/list` and `resources/templates/list`.
    ListResources,
    /// `prompts/list`.
    ListPrompts,
    /// `tools/call`; the resource is the tool.
    CallTool,
    /// `resources/read`, `resources/subscribe`, `resources/unsubscribe`.
    ReadResource,
    /// `prompts/get`.
    GetPrompt,
    /// Any other request method (`completion/complete`, `logging/setLevel`,
    /// `tasks/…`, methods of later revisions): `context.method` says which.
    OtherMethod,
}

impl Action {
    /// Every action, in schema order.
    pub const ALL: [Action; 11] = [
        Self::Initialize,
        Self::Ping,
        Self::Notify,
        Self::Respond,
        Self::ListTools,
        Self::ListResources,
        Self::ListPrompts,
        Self::CallTool,
        Self::ReadResource,
        Self::GetPrompt,
        Self::OtherMethod,
    ];

    /// The action's id in the schema and in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Ping => "ping",
            Self::Notify => "notify",
            Self::Respond => "respond",
            Self::ListTools => "list_tools",
            Self::ListResources => "list_resources",
            Self::ListPrompts => "list_prompts",
            Self::CallTool => "call_tool",
            Self::ReadResource => "read_resource",
            Self::GetPrompt => "get_prompt",
            Self::OtherMethod => "other_method",
        }
    }

    /// The action a message is judged as. Methods are case-sensitive, so
    /// `Tools/Call` is `other_method` (and the server will not know it).
    ///
    /// A notification is `notify` only when its method is a notification's
    /// (`notifications/…`). Any other method sent without an id is judged by
    /// its method, like a request: a server that runs a `tools/call` it got
    /// without an id must not be a way around the rules for `call_tool`
    /// (found by the `jsonrpc` fuzz target).
    pub fn of(message: &Message) -> Self {
        let method = message.method.as_deref().unwrap_or_default();
        match message.kind {
            MessageKind::Response | MessageKind::Error => Self::Respond,
            MessageKind::Notification if method.starts_with("notifications/") => Self::Notify,
            MessageKind::Request | MessageKind::Notification => match method {
                "initialize" | "server/discover" => Self::Initialize,
                "ping" => Self::Ping,
                "tools/list" => Self::ListTools,
                TOOLS_CALL => Self::CallTool,
                "resources/list" | "resources/templates/list" => Self::ListResources,
                RESOURCES_READ | RESOURCES_SUBSCRIBE | RESOURCES_UNSUBSCRIBE => Self::ReadResource,
                "prompts/list" => Self::ListPrompts,
                PROMPTS_GET => Self::GetPrompt,
                _ => Self::OtherMethod,
            },
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Entity type names and action ids, built once.
pub(crate) struct Vocabulary {
    user: EntityTypeName,
    group: EntityTypeName,
    client: EntityTypeName,
    route: EntityTypeName,
    tool: EntityTypeName,
    actions: Vec<EntityUid>,
    /// The action entities, with their groups as parents (from the schema):
    /// `action in Action::"session"` needs the request's action among the
    /// entities.
    action_entities: Vec<Entity>,
}

impl Vocabulary {
    /// The vocabulary, or why it could not be built (a bug: every decision
    /// then fails closed).
    pub(crate) fn get() -> Result<&'static Vocabulary, String> {
        static VOCABULARY: OnceLock<Result<Vocabulary, String>> = OnceLock::new();
        VOCABULARY
            .get_or_init(|| {
                let name = |n: &str| EntityTypeName::from_str(n).map_err(|e| e.to_string());
                let action_type = name("Action")?;
                let declared = super::load::schema()
                    .map_err(|e| e.to_string())?
                    .action_entities()
                    .map_err(|e| e.to_string())?;
                let actions: Vec<EntityUid> = Action::ALL
                    .iter()
                    .map(|a| uid(&action_type, a.as_str()))
                    .collect();
                let action_entities = actions
                    .iter()
                    .map(|a| {
                        declared
                            .get(a)
                            .cloned()
                            .ok_or_else(|| format!("{a} is not in the schema"))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Vocabulary {
                    user: name("User")?,
                    group: name("Group")?,
                    client: name("Client")?,
                    route: name("Route")?,
                    tool: name("Tool")?,
                    actions,
                    action_entities,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn action(&self, action: Action) -> Result<EntityUid, String> {
        self.actions
            .get(action.index())
            .cloned()
            .ok_or_else(|| format!("no action {}", action.as_str()))
    }

    fn action_entity(&self, action: Action) -> Result<Entity, String> {
        self.action_entities
            .get(action.index())
            .cloned()
            .ok_or_else(|| format!("no action {}", action.as_str()))
    }
}

fn uid(entity_type: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(entity_type.clone(), EntityId::new(id))
}

/// What is asked, apart from who asks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub action: Action,
    /// `context.method`.
    pub method: &'a str,
    /// The tool, prompt or resource URI.
    pub target: Option<&'a str>,
    /// `params.arguments` (an object), if any.
    pub arguments: Option<&'a Value>,
    pub sql: Option<&'a SqlFacts>,
    pub listing: bool,
}

/// The email as the policy sees it: lowercased (ids, `principal.email` and
/// flags all use this form, so matching is case-insensitive).
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Build the Cedar request and its entities. `schema` validates them (tests
/// only: a request that does not fit the schema makes a policy error at
/// evaluation, which fails closed anyway). Without a schema the entities come
/// from [`ENTITY_CACHE`] when they can. `reads`: the context's attributes
/// to build (all of them with a schema, which requires them); the engine
/// leaves out those none of its policies can read.
pub(crate) fn build(
    vocabulary: &Vocabulary,
    caller: &Caller<'_>,
    facts: &Facts<'_>,
    schema: Option<&Schema>,
    reads: Reads,
) -> Result<(cedar::Request, Arc<Entities>), String> {
    let email = normalize_email(caller.email);
    if email.is_empty() {
        // An empty email would equal an empty route owner.
        return Err("no identity: the caller has no email".to_owned());
    }
    let tool = match facts.action {
        Action::CallTool => Some(
            facts
                .target
                .ok_or("tools/call without a tool name cannot be decided")?,
        ),
        _ => None,
    };
    let user = uid(&vocabulary.user, &email);
    let client = uid(&vocabulary.client, caller.client_id);
    let route = uid(&vocabulary.route, caller.route);
    let action = vocabulary.action(facts.action)?;
    let resource = match tool {
        Some(name) => uid(&vocabulary.tool, name),
        None => route.clone(),
    };
    let entities = match schema {
        Some(schema) => Arc::new(entities(
            vocabulary,
            caller,
            &email,
            facts.action,
            tool,
            Some(schema),
        )?),
        None => cached_entities(vocabulary, caller, &email, facts.action, tool)?,
    };
    let reads = if schema.is_some() { Reads::ALL } else { reads };
    let context = context(caller, facts, client, route, reads)?;
    let request = cedar::Request::new(user, action, resource, context, schema)
        .map_err(|e| format!("request does not fit the schema: {e}"))?;
    Ok((request, entities))
}

/// Most entity sets [`ENTITY_CACHE`] keeps (about 1 MiB); it is emptied
/// when full.
const ENTITY_CACHE_ENTRIES: usize = 512;

/// The entities of recent requests, shared by every engine. They depend only
/// on who asks, through which client, on which route, and on the action and
/// tool — not on any policy, the time or the message's content — and
/// building them (Cedar computes a transitive closure every time) is about a
/// fifth of a decision's cost. Keyed by every one of those inputs.
static ENTITY_CACHE: Mutex<Option<HashMap<String, Arc<Entities>>>> = Mutex::new(None);

fn cached_entities(
    vocabulary: &Vocabulary,
    caller: &Caller<'_>,
    email: &str,
    action: Action,
    tool: Option<&str>,
) -> Result<Arc<Entities>, String> {
    // Length-prefixed parts: no two different inputs give the same key.
    let mut key = String::with_capacity(128);
    let groups = caller.groups.iter().map(String::as_str);
    for part in [
        email,
        caller.client_id,
        caller.client_name.unwrap_or("\0none"),
        caller.route,
        caller.route_owner,
        action.as_str(),
        tool.unwrap_or("\0none"),
    ]
    .into_iter()
    .chain(groups)
    {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    // A poisoned lock only costs the cache.
    if let Some(hit) = ENTITY_CACHE
        .lock()
        .ok()
        .and_then(|cache| cache.as_ref()?.get(&key).cloned())
    {
        return Ok(hit);
    }
    let built = Arc::new(entities(vocabulary, caller, email, action, tool, None)?);
    if let Ok(mut cache) = ENTITY_CACHE.lock() {
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() >= ENTITY_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, Arc::clone(&built));
    }
    Ok(built)
}

/// The action (with its groups), the user (with theirs), the client, the
/// route and, for `call_tool`, the tool.
fn entities(
    vocabulary: &Vocabulary,
    caller: &Caller<'_>,
    email: &str,
    action: Action,
    tool: Option<&str>,
    schema: Option<&Schema>,
) -> Result<Entities, String> {
    let domain = email
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_owned())
        .unwrap_or_default();
    let groups: HashSet<EntityUid> = caller
        .groups
        .iter()
        .map(|g| uid(&vocabulary.group, g))
        .collect();
    let route = uid(&vocabulary.route, caller.route);
    let action_entity = vocabulary.action_entity(action)?;
    let mut entities = Vec::with_capacity(5);
    entities.push(action_entity);
    entities.push(entity(
        uid(&vocabulary.user, email),
        [
            ("email", Expr::new_string(email.to_owned())),
            ("domain", Expr::new_string(domain)),
        ],
        groups,
    )?);
    entities.push(entity(
        uid(&vocabulary.client, caller.client_id),
        [
            ("id", Expr::new_string(caller.client_id.to_owned())),
            (
                "name",
                Expr::new_string(caller.client_name.unwrap_or_default().to_owned()),
            ),
        ],
        HashSet::new(),
    )?);
    entities.push(entity(
        route.clone(),
        [
            ("name", Expr::new_string(caller.route.to_owned())),
            (
                "owner",
                Expr::new_string(normalize_email(caller.route_owner)),
            ),
        ],
        HashSet::new(),
    )?);
    if let Some(name) = tool {
        entities.push(entity(
            uid(&vocabulary.tool, name),
            [
                ("name", Expr::new_string(name.to_owned())),
                ("route", Expr::new_entity_uid(route.clone())),
            ],
            HashSet::from([route]),
        )?);
    }
    Entities::from_entities(entities, schema)
        .map_err(|e| format!("entities do not fit the schema: {e}"))
}

fn entity<const N: usize>(
    uid: EntityUid,
    attrs: [(&str, Expr); N],
    parents: HashSet<EntityUid>,
) -> Result<Entity, String> {
    Entity::new(
        uid,
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        parents,
    )
    .map_err(|e| e.to_string())
}

fn strings<I, S>(values: I) -> Expr
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Expr::new_set(values.into_iter().map(|v| Expr::new_string(v.into())))
}

fn record<const N: usize>(pairs: [(&str, Expr); N]) -> Result<Expr, String> {
    Expr::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v))).map_err(|e| e.to_string())
}

fn context(
    caller: &Caller<'_>,
    facts: &Facts<'_>,
    client: EntityUid,
    route: EntityUid,
    reads: Reads,
) -> Result<Context, String> {
    // Arguments that are not an object refuse the message whether or not a
    // policy reads them.
    if facts.arguments.is_some_and(|a| !a.is_object()) {
        return Err("arguments must be an object".to_owned());
    }
    let time = unix_seconds(caller.time);
    let mut pairs: Vec<(String, Expr)> = Vec::with_capacity(16);
    let mut put = |key: Reads, name: &str, value: &dyn Fn() -> Result<Expr, String>| {
        if reads.has(key) {
            pairs.push((name.to_owned(), value()?));
        }
        Ok::<(), String>(())
    };

    put(Reads::METHOD, "method", &|| {
        Ok(Expr::new_string(facts.method.to_owned()))
    })?;
    if let Some(target) = facts.target {
        if facts.action == Action::CallTool {
            put(Reads::TOOL, "tool", &|| {
                Ok(Expr::new_string(target.to_owned()))
            })?;
        }
        put(Reads::TARGET, "target", &|| {
            Ok(Expr::new_string(target.to_owned()))
        })?;
    }
    put(Reads::ARGUMENTS, "arguments", &|| {
        arguments(facts.arguments)
    })?;
    put(Reads::ARGUMENTS_JSON, "arguments_json", &|| {
        Ok(Expr::new_string(arguments_json(facts.arguments)))
    })?;
    put(Reads::HAS_SQL, "has_sql", &|| {
        Ok(Expr::new_bool(facts.sql.is_some()))
    })?;
    put(Reads::SQL, "sql", &|| sql(facts.sql))?;
    put(Reads::LISTING, "listing", &|| {
        Ok(Expr::new_bool(facts.listing))
    })?;
    put(Reads::CLIENT, "client", &|| {
        Ok(Expr::new_entity_uid(client.clone()))
    })?;
    put(Reads::CLIENT_ID, "client_id", &|| {
        Ok(Expr::new_string(caller.client_id.to_owned()))
    })?;
    put(Reads::ROUTE, "route", &|| {
        Ok(Expr::new_entity_uid(route.clone()))
    })?;
    put(Reads::TIME, "time", &|| Ok(Expr::new_long(time)))?;
    put(Reads::NOW, "now", &|| Ok(now_expression(time)))?;
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// The arguments as a set of `{name, value}` records.
fn arguments(arguments: Option<&Value>) -> Result<Expr, String> {
    let Some(arguments) = arguments else {
        return Ok(Expr::new_set([]));
    };
    let Value::Object(map) = arguments else {
        return Err("arguments must be an object".to_owned());
    };
    let mut set = Vec::with_capacity(map.len());
    for (name, value) in map {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        set.push(record([
            ("name", Expr::new_string(name.clone())),
            ("value", Expr::new_string(value)),
        ])?);
    }
    Ok(Expr::new_set(set))
}

/// The arguments as compact, lowercased JSON (`{}` without arguments).
fn arguments_json(arguments: Option<&Value>) -> String {
    arguments.map_or_else(|| "{}".to_owned(), |a| a.to_string().to_lowercase())
}

/// The `Sql` record; all false/empty without SQL.
fn sql(facts: Option<&SqlFacts>) -> Result<Expr, String> {
    let Some(facts) = facts else {
        return record([
            ("parsed", Expr::new_bool(false)),
            ("read_only", Expr::new_bool(false)),
            ("kinds", Expr::new_set([])),
            ("tables", Expr::new_set([])),
            ("table_names", Expr::new_set([])),
            ("table_list", Expr::new_string(String::new())),
            ("functions", Expr::new_set([])),
        ]);
    };
    let names: Vec<&str> = facts
        .tables
        .iter()
        .map(|t| t.rsplit_once('.').map_or(t.as_str(), |(_, name)| name))
        .collect();
    let mut list = String::from(",");
    for table in facts.tables.iter().map(String::as_str).chain(
        names
            .iter()
            .copied()
            .filter(|n| !facts.tables.iter().any(|t| t == n)),
    ) {
        list.push_str(table);
        list.push(',');
    }
    record([
        ("parsed", Expr::new_bool(facts.parsed)),
        ("read_only", Expr::new_bool(facts.read_only)),
        ("kinds", strings(facts.kind_names())),
        ("tables", strings(facts.tables.iter().map(String::as_str))),
        ("table_names", strings(names)),
        ("table_list", Expr::new_string(list)),
        (
            "functions",
            strings(facts.functions.iter().map(String::as_str)),
        ),
    ])
}

/// `datetime("…")` of `unix`. Building one parses the extension's name with
/// Cedar's parser (a quarter of a decision's cost), so the expression of the
/// current second is kept, per thread.
fn now_expression(unix: i64) -> Expr {
    thread_local! {
        static NOW: RefCell<Option<(i64, Expr)>> = const { RefCell::new(None) };
    }
    NOW.with(|cell| {
        let mut cached = cell.borrow_mut();
        match cached.as_ref() {
            Some((second, expr)) if *second == unix => expr.clone(),
            _ => {
                let expr = Expr::new_datetime(rfc3339(unix));
                *cached = Some((unix, expr.clone()));
                expr
            }
        }
    })
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` for Cedar's `datetime`, clamped to years
/// 1970–9999 (the range Cedar parses that matters here).
pub(crate) fn rfc3339(unix: i64) -> String {
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let unix = unix.clamp(0, MAX);
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}
