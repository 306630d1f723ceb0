//! One exchange as the inspector shows it: a row of the live list, and its
//! detail (bodies, SQL, the rules that decided, timings).

use serde::Serialize;

use super::approval::Verdict;
use super::tap::{KeptBody, MessageInfo};

/// A row of the live list (`GET /api/exchanges`, `GET /api/events`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: u64,
    /// When the exchange arrived (RFC 3339, milliseconds).
    pub time: String,
    /// Who asked, as the relay verified (an email).
    pub caller: String,
    /// The credential they used (a token's name or an OAuth client id).
    pub client: String,
    pub route: String,
    /// The HTTP method.
    pub http_method: String,
    /// The JSON-RPC method (the first message's), if any.
    pub method: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// `tools/call read_query`, `batch of 3`, `GET`.
    pub what: String,
    /// `allow` or `deny`, as the laptop decided; `pending` while it waits
    /// for the owner's approval (`--approve`).
    pub decision: &'static str,
    /// The owner's approval or denial (or the timeout's), if it waited.
    pub approval: Option<Verdict>,
    /// The policies that decided at the laptop.
    pub rules: Vec<String>,
    /// The answer's HTTP status (none if the stream was cut first).
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Which policies decided, and where.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    pub allowed: bool,
    pub rules: Vec<String>,
}

/// How long the parts took, in milliseconds from the exchange's arrival.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// Reading the body and deciding it at the laptop.
    pub gate_ms: f64,
    /// Until the answer's head (the local server's, or the agent's refusal).
    pub first_byte_ms: Option<f64>,
    /// Until the answer's end.
    pub total_ms: f64,
}

/// The detail of one exchange (`GET /api/exchanges/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub row: Row,
    /// The relay's id for the request (also in its logs and audit).
    pub request_id: String,
    pub session: Option<String>,
    pub path: String,
    /// The request body as the gate read it (none for a GET, DELETE or
    /// plain HTTP request, whose body is streamed unread).
    pub request: Option<KeptBody>,
    pub response: KeptBody,
    /// The JSON-RPC messages, with their SQL and its facts.
    pub messages: Vec<MessageInfo>,
    /// How many messages the request had (more than `messages` lists when
    /// they did not fit in the body limit).
    pub messages_total: usize,
    /// What the owner's policy decided here, on the laptop.
    pub laptop: Decided,
    /// What the relay decided: the policies that allowed it, as the relay
    /// told them ([`protocol::RELAY_RULES_HEADER`]; the relay forwards only
    /// what it allowed, and audits its rules itself). `None` from a relay
    /// that does not tell them.
    pub relay: Option<Decided>,
    pub timings: Timings,
}
