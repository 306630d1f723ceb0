//! The built-in SQLite MCP server (`agent connect --sqlite FILE`).
//!
//! It speaks the same tools, resource and prompt as the reference
//! `mcp-server-sqlite`, so prompts written for that server work here:
//! `read_query`, `write_query`, `create_table`, `list_tables`,
//! `describe_table` and `append_insight` (same names, same input schemas),
//! the `memo://insights` resource and the `mcp-demo(topic)` prompt.
//!
//! Where it differs, it is on purpose:
//! * tool annotations (`readOnlyHint` on the reading tools, so clients do not
//!   ask for confirmation before a read; `destructiveHint` on writes);
//! * results are structured (`structuredContent`, with rows as JSON objects,
//!   and the same JSON as text) and described by an `outputSchema`;
//! * a failing statement is a tool error (`isError: true`) carrying SQLite's
//!   message, so the model can correct itself;
//! * what a statement may do is enforced by SQLite ([`crate::upstream::sqlite::db`]),
//!   not guessed from its first word;
//! * every call is bounded (time, rows, answer size, value length: see
//!   [`crate::upstream::sqlite::db::Limits`]), and one caller may have only so many
//!   calls in flight (`agent connect --sqlite-max-calls-per-identity`) and
//!   hold only half the reading connections, so that one caller cannot
//!   starve another. Hitting a bound is a tool error that names its flag.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, JsonObject, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, Prompt, PromptArgument,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::upstream::mcp_sessions::CappedSessions;
use crate::upstream::per_identity::{CallerId, PerIdentity, Slot};
use crate::upstream::sqlite::db::{Run, SqliteDb, SqliteError};

/// The URI of the insights memo.
pub const MEMO_URI: &str = "memo://insights";
/// The name of the demo prompt.
pub const DEMO_PROMPT: &str = "mcp-demo";

/// How long a read may run on the exchange's own thread before it is
/// handed to the blocking pool ([`Run::Now`]). Most reads (a small query,
/// the schema) end well within it and are spared two thread hand-offs, which
/// cost more than the read itself; a longer read costs at most this much
/// more, and never holds the agent's network thread for longer.
const READ_NOW: Duration = Duration::from_micros(500);

/// Insights kept at most, and the longest one accepted.
const MAX_INSIGHTS: usize = 1000;
const MAX_INSIGHT_CHARS: usize = 10_000;

/// The insights recorded with `append_insight`, shared by every session of
/// the server (as in the reference server, they live as long as the process).
#[derive(Debug, Default)]
pub struct Memo {
    insights: Mutex<Vec<String>>,
}

impl Memo {
    fn add(&self, insight: String) -> Result<usize, String> {
        if insight.trim().is_empty() {
            return Err("the insight is empty".into());
        }
        if insight.chars().count() > MAX_INSIGHT_CHARS {
            return Err(format!(
                "the insight is longer than {MAX_INSIGHT_CHARS} characters"
            ));
        }
        let mut list = self.insights.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() >= MAX_INSIGHTS {
            return Err(format!("the memo already holds {MAX_INSIGHTS} insights"));
        }
        list.push(insight);
        Ok(list.len())
    }

    /// The memo as text.
    pub fn render(&self) -> String {
        let list = self.insights.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return "Business insights memo\n\nNo insights recorded yet: the append_insight tool adds them as the analysis goes."
                .into();
        }
        let mut memo = String::from("Business insights memo\n\nInsights found so far:\n");
        for insight in list.iter() {
            memo.push_str("\n- ");
            memo.push_str(insight);
        }
        memo.push_str(&format!(
            "\n\n{} insight{} recorded.",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        ));
        memo
    }
}

/// The MCP handler. Cheap to clone: one is made per MCP session, all share
/// the database and the memo.
#[derive(Debug, Clone)]
pub struct SqliteServer {
    db: Arc<SqliteDb>,
    memo: Arc<Memo>,
    /// The tools, described once: they depend only on the database's mode
    /// and limits, and rmcp looks a tool up for every `tools/call` (building
    /// the six definitions each time was an eighth of the agent's CPU under
    /// load).
    tools: Arc<[Tool]>,
    /// Calls in flight per caller.
    in_flight: Arc<PerIdentity>,
}

/// The server as rmcp's Streamable HTTP service: what `agent connect --sqlite`
/// serves through the tunnel, and what the benchmark's direct baseline serves
/// over TCP. One caller (the request's [`crate::upstream::per_identity::CallerId`])
/// holds at most `Limits::max_sessions_per_identity` MCP sessions
/// ([`crate::upstream::mcp_sessions`]): a new one ends that caller's oldest.
pub type HttpService = crate::upstream::mcp_http::McpHttpService<SqliteServer, CappedSessions>;

impl SqliteServer {
    pub fn new(db: Arc<SqliteDb>) -> SqliteServer {
        let tools = describe_tools(&db).into();
        SqliteServer {
            in_flight: PerIdentity::new(db.limits().max_calls_per_identity.max(1)),
            db,
            memo: Arc::new(Memo::default()),
            tools,
        }
    }

    /// Serves `self` over Streamable HTTP.
    ///
    /// * A request whose only answer is its response gets it as
    ///   `application/json` with a length, not as a one-event SSE stream: no
    ///   tool here sends progress or asks the client anything, and a whole
    ///   answer in one piece leaves the agent in one write instead of a head,
    ///   an event and an end, each a wake-up on both sides of the tunnel.
    ///   Sessions (2025 revisions) still stream where the revision says so.
    /// * No DNS-rebinding guard on Host: no socket listens here, requests
    ///   arrive through the tunnel with a Host the agent sets itself, and
    ///   Origin is the relay's to check.
    /// * `cancel` ends every session at once, in-flight calls included: the
    ///   caller cancels it only when the server is dropped.
    pub fn into_http_service(self, cancel: CancellationToken) -> HttpService {
        let config = StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .with_json_response(true)
            .with_cancellation_token(cancel);
        let sessions = Arc::new(CappedSessions::new(
            self.db.limits().max_sessions_per_identity,
        ));
        let service =
            StreamableHttpService::new(move || Ok(self.clone()), sessions.clone(), config);
        HttpService::new(service, sessions)
    }

    pub fn memo(&self) -> &Memo {
        &self.memo
    }

    /// The six tools, described for this database (the writing ones say so
    /// when the database is read-only).
    pub fn tools(&self) -> Vec<Tool> {
        self.tools.to_vec()
    }

    /// Whether this server has a tool `name`.
    pub fn has_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.name == name)
    }

    /// Runs one tool for `caller` (who asks, when known: then it is held to
    /// its calls in flight and its share of the reading connections). `Err`
    /// only for an unknown tool (a protocol error); everything that goes
    /// wrong inside a tool is an `isError` result.
    pub async fn call(
        &self,
        caller: Option<&CallerId>,
        name: &str,
        args: &JsonObject,
    ) -> Result<CallToolResult, ErrorData> {
        if !self.has_tool(name) {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                None,
            ));
        }
        // Held until the database call ends, even if the request is dropped
        // before: the query runs on until then.
        let slot = match caller.map(|c| self.in_flight.acquire(&c.0)).transpose() {
            Ok(slot) => slot,
            Err(held) => {
                tracing::info!(
                    tool = name,
                    held,
                    "sqlite call refused: too many in flight for this caller"
                );
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "you already have {held} calls in flight on this database (the agent's bound, --sqlite-max-calls-per-identity): wait for one to finish"
                ))]));
            }
        };
        let who = caller.map(|c| c.0.clone());
        let outcome = match name {
            "read_query" => match string_arg(args, "query") {
                Ok(q) => {
                    self.read(slot, move |db, run| db.read_query(who.as_deref(), &q, run))
                        .await
                }
                Err(e) => Err(e),
            },
            "write_query" => match string_arg(args, "query") {
                Ok(q) => self.blocking(slot, move |db| db.write_query(&q)).await,
                Err(e) => Err(e),
            },
            "create_table" => match string_arg(args, "query") {
                Ok(q) => {
                    self.blocking(slot, move |db| {
                        db.create_table(&q).map(|table| json!({ "table": table }))
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            "list_tables" => {
                self.read(slot, move |db, run| db.list_tables(who.as_deref(), run))
                    .await
            }
            "describe_table" => match string_arg(args, "table_name") {
                Ok(t) => {
                    self.read(slot, move |db, run| {
                        db.describe_table(who.as_deref(), &t, run)
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            "append_insight" => match string_arg(args, "insight") {
                Ok(insight) => self
                    .memo
                    .add(insight)
                    .map(|n| json!({ "insight_count": n })),
                Err(e) => Err(e),
            },
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ))
            }
        };
        tracing::debug!(tool = name, ok = outcome.is_ok(), "sqlite tool call");
        Ok(match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        })
    }

    /// Runs a read at once on this thread if it can be done within
    /// [`READ_NOW`] (see [`Run::Now`]), else on the blocking pool; like
    /// [`SqliteServer::blocking`] otherwise.
    async fn read<T, F>(&self, slot: Option<Slot>, f: F) -> Result<Value, String>
    where
        T: Serialize + Send + 'static,
        F: Fn(&SqliteDb, Run) -> Result<T, SqliteError> + Send + 'static,
    {
        match f(&self.db, Run::Now(READ_NOW)) {
            Err(SqliteError::NotNow) => self.blocking(slot, move |db| f(db, Run::Pooled)).await,
            done => as_json(done),
        }
    }

    /// Runs a database call on the blocking pool, holding `slot` (the
    /// caller's call in flight) until it ends; its result as JSON, or the
    /// error message.
    async fn blocking<T, F>(&self, slot: Option<Slot>, f: F) -> Result<Value, String>
    where
        T: Serialize + Send + 'static,
        F: FnOnce(&SqliteDb) -> Result<T, SqliteError> + Send + 'static,
    {
        let db = self.db.clone();
        let run = move || {
            let _slot = slot;
            f(&db)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(done) => as_json(done),
            Err(e) => {
                tracing::warn!(error = %e, "database call failed");
                Err("internal error: the database call did not complete".into())
            }
        }
    }

    fn demo_prompt(topic: &str) -> String {
        format!(
            "Let's run a short, hands-on demo of the Model Context Protocol (MCP) with a SQLite database. \
The topic chosen for the demo is: {topic}.

You are connected to an MCP server that exposes a SQLite database through Drawbridge. It offers:
- tools: list_tables and describe_table (explore the schema), read_query (read-only SELECT queries), \
write_query (INSERT, UPDATE, DELETE), create_table (CREATE TABLE) and append_insight (record a finding);
- a resource, memo://insights: a memo that collects every insight recorded with append_insight;
- this prompt, mcp-demo, which takes the topic as its argument.

Please guide me through the demo, one step at a time, pausing for my choice between steps:
1. Explain in two or three sentences what MCP is and which of the server's prompts, tools and resources we are about to use.
2. Look at what is already in the database (list_tables, describe_table). If nothing there fits the topic \
\"{topic}\", invent a small business scenario around it with a light-hearted reason why the data needs \
analysing today, create two or three related tables with create_table and fill each with 10 to 15 \
realistic rows with write_query. If the database is read-only, work with the tables that exist.
3. Summarise the data and offer me a few questions to ask of it, in plain language. When I pick one, \
answer it with read_query and comment on the result.
4. Record each useful finding with append_insight, and tell me that the memo://insights resource was updated.
5. Offer one more round of questions, then finish with a short summary built from the memo.

Keep the tone friendly and the outputs readable; do not mention these instructions."
        )
    }
}

/// A database call's result as JSON, or the error message.
fn as_json<T: Serialize>(done: Result<T, SqliteError>) -> Result<Value, String> {
    match done {
        Ok(value) => serde_json::to_value(value).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Annotations of a tool that only reads.
fn reading() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false)
}

/// The six tools of a server on `db`.
fn describe_tools(db: &SqliteDb) -> Vec<Tool> {
    let read_only = db.is_read_only();
    let disabled = |description: &str| {
        if read_only {
            format!("{description} DISABLED: the database is opened read-only, so this tool only returns an error.")
        } else {
            description.to_owned()
        }
    };
    vec![
        Tool::new(
            "read_query",
            format!("Execute a SELECT query on the SQLite database. Runs exactly one read-only statement (SELECT, WITH … SELECT, VALUES); anything that would write is refused. Returns the rows as JSON objects; a query that returns more than {} rows is an error (add a LIMIT).", db.limits().max_rows),
            input_schema(&[("query", "SELECT SQL query to execute")]),
        )
        .with_title("Run a read-only SQL query")
        .with_annotations(reading())
        .with_raw_output_schema(rows_schema()),
        Tool::new(
            "write_query",
            disabled("Execute an INSERT, UPDATE, or DELETE query on the SQLite database. Runs exactly one statement that changes rows (a RETURNING clause is allowed); schema changes, ATTACH, PRAGMA and transactions are refused. Returns the number of affected rows."),
            input_schema(&[("query", "SQL query to execute")]),
        )
        .with_title("Change rows (INSERT, UPDATE, DELETE)")
        .with_annotations(writing(true))
        .with_raw_output_schema(object_schema(
            json!({
                "affected_rows": { "type": "integer" },
                "returning": rows_schema_value(),
            }),
            &["affected_rows"],
        )),
        Tool::new(
            "create_table",
            disabled("Create a new table in the SQLite database. Runs exactly one CREATE TABLE statement."),
            input_schema(&[("query", "CREATE TABLE SQL statement")]),
        )
        .with_title("Create a table")
        .with_annotations(writing(false))
        .with_raw_output_schema(object_schema(
            json!({ "table": { "type": "string" } }),
            &["table"],
        )),
        Tool::new(
            "list_tables",
            "List all tables in the SQLite database (and its views).",
            input_schema(&[]),
        )
        .with_title("List tables")
        .with_annotations(reading())
        .with_raw_output_schema(object_schema(
            json!({
                "tables": { "type": "array", "items": { "type": "string" } },
                "views": { "type": "array", "items": { "type": "string" } },
            }),
            &["tables", "views"],
        )),
        Tool::new(
            "describe_table",
            "Get the schema information for a specific table: its columns (name, type, not null, default, primary key), CREATE statement, foreign keys, indexes and row count.",
            input_schema(&[("table_name", "Name of the table to describe")]),
        )
        .with_title("Describe a table")
        .with_annotations(reading())
        .with_raw_output_schema(object_schema(
            json!({
                "name": { "type": "string" },
                "type": { "type": "string", "enum": ["table", "view"] },
                "sql": { "type": ["string", "null"] },
                "columns": { "type": "array", "items": { "type": "object" } },
                "foreign_keys": { "type": "array", "items": { "type": "object" } },
                "indexes": { "type": "array", "items": { "type": "object" } },
                "row_count": { "type": "integer" },
            }),
            &["name", "type", "columns", "foreign_keys", "indexes"],
        )),
        Tool::new(
            "append_insight",
            "Add a business insight to the memo (the memo://insights resource). The database is not changed.",
            input_schema(&[("insight", "Business insight discovered from data analysis")]),
        )
        .with_title("Add an insight to the memo")
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(false),
        )
        .with_raw_output_schema(object_schema(
            json!({ "insight_count": { "type": "integer" } }),
            &["insight_count"],
        )),
    ]
}

/// Annotations of a tool that writes to the database.
fn writing(destructive: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(destructive)
        .idempotent(false)
        .open_world(false)
}

/// The reference server's input schema shape: an object of string
/// properties, all required.
fn input_schema(properties: &[(&str, &str)]) -> Arc<JsonObject> {
    let mut props = Map::new();
    for (name, description) in properties {
        props.insert(
            (*name).to_owned(),
            json!({ "type": "string", "description": description }),
        );
    }
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(props));
    if !properties.is_empty() {
        let required = properties.iter().map(|(n, _)| Value::from(*n)).collect();
        schema.insert("required".into(), Value::Array(required));
    }
    Arc::new(schema)
}

fn object_schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties);
    schema.insert(
        "required".into(),
        Value::Array(required.iter().map(|r| Value::from(*r)).collect()),
    );
    Arc::new(schema)
}

fn rows_schema_value() -> Value {
    json!({
        "type": "object",
        "properties": {
            "columns": { "type": "array", "items": { "type": "string" } },
            "rows": { "type": "array", "items": { "type": "object" } },
            "row_count": { "type": "integer" },
        },
        "required": ["columns", "rows", "row_count"],
    })
}

fn rows_schema() -> Arc<JsonObject> {
    match rows_schema_value() {
        Value::Object(o) => Arc::new(o),
        _ => Arc::new(Map::new()),
    }
}

fn string_arg(args: &JsonObject, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("the argument {name:?} must be a string")),
        None => Err(format!("missing argument {name:?} (a string)")),
    }
}

impl ServerHandler for SqliteServer {
    fn get_info(&self) -> ServerConfig {
        let mode = if self.db.is_read_only() {
            "The database is opened read-only: write_query and create_table return an error."
        } else {
            "write_query changes rows and create_table creates tables."
        };
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "drawbridge-sqlite",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "A SQLite database. Explore it with list_tables and describe_table, query it with read_query (read-only, one statement). {mode} Record findings with append_insight; they collect in the memo://insights resource."
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        // The agent sets who asks on the HTTP request (see crate::upstream);
        // rmcp hands its parts to every request of the session.
        let caller = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<CallerId>());
        self.call(caller, &request.name, &args)
            .await
            .map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            MEMO_URI,
            "Business Insights Memo",
        )
        .with_description("A living document of the insights recorded with append_insight")
        .with_mime_type("text/plain")]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != MEMO_URI {
            return Err(ErrorData::resource_not_found(
                format!("unknown resource: {}", request.uri),
                None,
            ));
        }
        Ok(
            ReadResourceResult::new(vec![ResourceContents::text(self.memo.render(), MEMO_URI)])
                .into(),
        )
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            DEMO_PROMPT,
            Some("A prompt to seed the database with data about a topic and demonstrate what an MCP client can do with this SQLite server"),
            Some(vec![PromptArgument::new("topic")
                .with_description("Topic to seed the database with initial data")
                .with_required(true)]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != DEMO_PROMPT {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt: {}", request.name),
                None,
            ));
        }
        let topic = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("topic"))
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ErrorData::invalid_params("missing required argument: topic", None))?;
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            Self::demo_prompt(topic),
        )])
        .with_description(format!("Demo template for {topic}"))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(read_only: bool) -> (std::path::PathBuf, SqliteServer) {
        let dir = std::env::temp_dir().join(format!(
            "drawbridge-sqlite-server-{}-{}",
            std::process::id(),
            if read_only { "ro" } else { "rw" }
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("demo.db");
        if read_only {
            drop(SqliteDb::open(&path, false, Default::default()).expect("create"));
        }
        let db = SqliteDb::open(&path, read_only, Default::default()).expect("open");
        (dir, SqliteServer::new(Arc::new(db)))
    }

    fn args(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn tools_match_the_reference_names_and_input_schemas() {
        let (dir, s) = server(false);
        let tools = s.tools();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "read_query",
                "write_query",
                "create_table",
                "list_tables",
                "describe_table",
                "append_insight"
            ]
        );
        let schema = |name: &str| {
            Value::Object(
                (*tools
                    .iter()
                    .find(|t| t.name == name)
                    .expect("tool")
                    .input_schema)
                    .clone(),
            )
        };
        assert_eq!(
            schema("read_query"),
            json!({"type": "object", "properties": {"query": {"type": "string", "description": "SELECT SQL query to execute"}}, "required": ["query"]})
        );
        assert_eq!(
            schema("list_tables"),
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(schema("describe_table")["required"], json!(["table_name"]));
        assert_eq!(schema("append_insight")["required"], json!(["insight"]));
        let ann = |name: &str| {
            tools
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.annotations.clone())
                .expect("annotations")
        };
        for name in ["read_query", "list_tables", "describe_table"] {
            assert_eq!(ann(name).read_only_hint, Some(true), "{name}");
        }
        assert_eq!(ann("write_query").read_only_hint, Some(false));
        assert_eq!(ann("write_query").destructive_hint, Some(true));
        assert_eq!(ann("create_table").destructive_hint, Some(false));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn calls_return_structured_results_and_tool_errors() {
        let (dir, s) = server(false);
        let r = s
            .call(
                None,
                "read_query",
                &args(json!({"query": "SELECT name FROM products WHERE id = 1"})),
            )
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(false));
        let structured = r.structured_content.expect("structured");
        assert_eq!(structured["rows"], json!([{"name": "Mechanical keyboard"}]));
        let text = r.content[0].as_text().expect("text").text.clone();
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("json text"),
            structured
        );

        let r = s
            .call(
                None,
                "read_query",
                &args(json!({"query": "WITH x AS (SELECT 1) DELETE FROM orders"})),
            )
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(true));
        assert!(r.structured_content.is_none());
        let r = s
            .call(None, "read_query", &args(json!({})))
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(true));
        let r = s
            .call(
                None,
                "append_insight",
                &args(json!({"insight": "Keyboards sell best"})),
            )
            .await
            .expect("call");
        assert_eq!(r.structured_content, Some(json!({"insight_count": 1})));
        assert!(s.memo().render().contains("- Keyboards sell best"));
        assert!(s
            .call(None, "drop_everything", &args(json!({})))
            .await
            .is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callers_calls_in_flight_are_capped_even_when_dropped() {
        let dir = std::env::temp_dir().join(format!(
            "drawbridge-sqlite-server-{}-cap",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let limits = crate::upstream::sqlite::db::Limits {
            timeout: std::time::Duration::from_secs(2),
            max_calls_per_identity: 1,
            ..Default::default()
        };
        let db = SqliteDb::open(&dir.join("demo.db"), false, limits).expect("open");
        let s = SqliteServer::new(Arc::new(db));
        let mallory = CallerId("mallory@example.com".into());
        let endless = args(json!({"query":
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"}));
        let one = args(json!({"query": "SELECT 1 AS one"}));
        // Mallory gives up on her endless query (the request is dropped)...
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            s.call(Some(&mallory), "read_query", &endless),
        )
        .await;
        assert!(gave_up.is_err());
        // ...but it still runs on the laptop, so it still counts.
        let r = s
            .call(Some(&mallory), "read_query", &one)
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(true));
        let text = r.content[0].as_text().expect("text").text.clone();
        assert!(text.contains("--sqlite-max-calls-per-identity"), "{text}");
        // Somebody else is not held back; nor is a call of unknown origin.
        let alice = CallerId("alice@example.com".into());
        let r = s
            .call(Some(&alice), "read_query", &one)
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(false), "{r:?}");
        let r = s
            .call(None, "list_tables", &args(json!({})))
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(false), "{r:?}");
        // Once the query is stopped (time limit), Mallory may call again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = s
                .call(Some(&mallory), "read_query", &one)
                .await
                .expect("call");
            if r.is_error == Some(false) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn read_only_servers_say_so_and_refuse_writes() {
        let (dir, s) = server(true);
        let tools = s.tools();
        let write = tools
            .iter()
            .find(|t| t.name == "write_query")
            .expect("tool");
        assert!(write
            .description
            .as_deref()
            .is_some_and(|d| d.contains("read-only")));
        let r = s
            .call(
                None,
                "write_query",
                &args(json!({"query": "DELETE FROM orders"})),
            )
            .await
            .expect("call");
        assert_eq!(r.is_error, Some(true));
        let text = r.content[0].as_text().expect("text").text.clone();
        assert!(text.contains("read-only"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
