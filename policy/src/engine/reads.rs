//! Which attributes of the context a policy can read. A decision builds only
//! those (Cedar evaluates every attribute of a context when it is built:
//! the arguments' set of records, their JSON, the SQL record, `now`), so a
//! policy that reads only `context.route` pays for `context.route` alone.
//! An attribute no policy of the decision reads cannot change it; anything
//! the analysis cannot place (the context as a whole, an attribute it does
//! not know, a policy without a JSON form) keeps every attribute.

use serde_json::Value;

/// A set of context attributes (one bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reads(u16);

impl Reads {
    pub(crate) const METHOD: Self = Self(1 << 0);
    pub(crate) const TOOL: Self = Self(1 << 1);
    pub(crate) const TARGET: Self = Self(1 << 2);
    pub(crate) const ARGUMENTS: Self = Self(1 << 3);
    pub(crate) const ARGUMENTS_JSON: Self = Self(1 << 4);
    pub(crate) const HAS_SQL: Self = Self(1 << 5);
    pub(crate) const SQL: Self = Self(1 << 6);
    pub(crate) const LISTING: Self = Self(1 << 7);
    pub(crate) const CLIENT: Self = Self(1 << 8);
    pub(crate) const CLIENT_ID: Self = Self(1 << 9);
    pub(crate) const ROUTE: Self = Self(1 << 10);
    pub(crate) const TIME: Self = Self(1 << 11);
    pub(crate) const NOW: Self = Self(1 << 12);
    /// Nothing.
    pub(crate) const NONE: Self = Self(0);
    /// Every attribute.
    pub(crate) const ALL: Self = Self((1 << 13) - 1);

    /// The attribute called `name` in the schema, if it is one.
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "method" => Self::METHOD,
            "tool" => Self::TOOL,
            "target" => Self::TARGET,
            "arguments" => Self::ARGUMENTS,
            "arguments_json" => Self::ARGUMENTS_JSON,
            "has_sql" => Self::HAS_SQL,
            "sql" => Self::SQL,
            "listing" => Self::LISTING,
            "client" => Self::CLIENT,
            "client_id" => Self::CLIENT_ID,
            "route" => Self::ROUTE,
            "time" => Self::TIME,
            "now" => Self::NOW,
            _ => return None,
        })
    }

    /// Whether every attribute of `other` is in `self`.
    pub(crate) fn has(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets.
    #[must_use]
    pub(crate) fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// What `policy` can read of the context, from its JSON form: each
    /// `context.<attr>`, `context["<attr>"]` and `context has <attr>` adds
    /// that attribute; `context` used any other way, or no JSON form, means
    /// every attribute.
    pub(crate) fn of(policy: &cedar_policy::Policy) -> Self {
        let mut reads = Self::NONE;
        match policy.to_json() {
            Ok(json) => walk(&json, &mut reads),
            Err(_) => reads = Self::ALL,
        }
        reads
    }
}

fn is_context(value: &Value) -> bool {
    matches!(value, Value::Object(map)
        if map.len() == 1 && map.get("Var").and_then(Value::as_str) == Some("context"))
}

fn walk(value: &Value, reads: &mut Reads) {
    match value {
        Value::Object(map) => {
            if is_context(value) {
                *reads = Reads::ALL;
                return;
            }
            if map.len() == 1 {
                if let Some(access) = map.get(".").or_else(|| map.get("has")) {
                    if access.get("left").is_some_and(is_context) {
                        // `has` with several attributes (`context has
                        // sql.parsed`) names the context's first.
                        let attr = match access.get("attr") {
                            Some(Value::String(attr)) => Some(attr.as_str()),
                            Some(Value::Array(path)) => path.first().and_then(Value::as_str),
                            _ => None,
                        };
                        *reads = reads.union(attr.and_then(Reads::named).unwrap_or(Reads::ALL));
                        return;
                    }
                }
            }
            map.values().for_each(|v| walk(v, reads));
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, reads)),
        _ => {}
    }
}
