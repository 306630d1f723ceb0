//! Loading a policy: Cedar text validated against the schema, or flags
//! compiled to Cedar text and then loaded the same way.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Effect, PolicyId, PolicySet, Schema, ValidationMode, ValidationWarning, Validator,
};
use miette::Diagnostic;

use super::reads::Reads;

/// The Cedar schema every policy is validated against.
pub const SCHEMA_TEXT: &str = include_str!("schema.cedarschema");

/// Tools that `--read-only` lets through (their SQL, if any, must still only
/// read): the read tools of the reference `mcp-server-sqlite` and of the
/// built-in server.
pub const READ_TOOLS: [&str; 3] = ["read_query", "list_tables", "describe_table"];

/// Tools known to write (reference `mcp-server-sqlite` and built-in server).
/// `--read-only` forbids them by name even when their SQL would only read.
pub const WRITE_TOOLS: [&str; 3] = ["write_query", "create_table", "append_insight"];

/// SQL functions that read or write files or load code. `--read-only`
/// forbids them although the SQL that calls them counts as reading. Not
/// built into SQLite, but into servers built on its shell's extensions
/// (fileio: `readfile`, `writefile`, `fsdir`, `lsmode`; zipfile:
/// `zipfile`, `zipfile_cds`; sqlar: `sqlar_compress`, `sqlar_uncompress`;
/// the shell's `edit`), so they are refused for every server, not only the
/// built-in one (whose authorizer knows none of them).
pub const FILE_FUNCTIONS: [&str; 10] = [
    "load_extension",
    "writefile",
    "readfile",
    "edit",
    "fsdir",
    "lsmode",
    "zipfile",
    "zipfile_cds",
    "sqlar_compress",
    "sqlar_uncompress",
];

/// The schema, parsed once per process.
pub(crate) fn schema() -> Result<&'static Schema, PolicyError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Schema::from_cedarschema_str(SCHEMA_TEXT)
                .map(|(schema, _warnings)| schema)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PolicyError::Schema(e.clone()))
}

/// One thing wrong in a policy text, located in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when Cedar located the problem.
    pub line: Option<usize>,
    /// 1-based column (in characters), when Cedar located the problem.
    pub column: Option<usize>,
    /// The policy it is in, when known (its `@id`, or `source:line`).
    pub policy: Option<String>,
    /// Cedar's message.
    pub message: String,
    /// Cedar's suggestion ("did you mean `email`?"), if any.
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "{line}:{column}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// `source:line:col: message`, one problem a line.
struct Problems<'a>(&'a str, &'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.1 {
            write!(f, "\n  {}:{problem}", self.0)?;
        }
        Ok(())
    }
}

/// Why a policy was refused. Its `Display` names the source, and the line and
/// column of every problem, e.g.
///
/// ```text
/// policy owner.cedar does not match the Drawbridge policy schema:
///   owner.cedar:4:8: for policy `bob`, attribute `emial` on entity type `User` not found (did you mean `email`?)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not Cedar.
    #[error(
        "policy {source_name} is not valid Cedar:{}",
        Problems(source_name, problems)
    )]
    Syntax {
        /// The file name (or "flags").
        source_name: String,
        /// Every syntax error Cedar found.
        problems: Vec<Problem>,
    },
    /// The text is Cedar but does not fit the schema (unknown entity type,
    /// attribute or action, wrong types, optional attribute used unguarded).
    #[error(
        "policy {source_name} does not match the Drawbridge policy schema:{}",
        Problems(source_name, problems)
    )]
    Invalid {
        /// The file name (or "flags").
        source_name: String,
        /// Every validation error Cedar found.
        problems: Vec<Problem>,
    },
    /// Two policies of one text have the same `@id`.
    #[error("{source_name}:{line}: policy id \"{id}\" is used twice (first at line {first_line})")]
    DuplicateId {
        /// The file name.
        source_name: String,
        /// The repeated id.
        id: String,
        /// Line of the second use.
        line: usize,
        /// Line of the first use.
        first_line: usize,
    },
    /// The text holds a template (`?principal`, `?resource`): nothing here
    /// links templates, so it would silently never apply.
    #[error(
        "{source_name}:{line}: policy templates (?principal, ?resource) are not supported; \
         name the principal and resource"
    )]
    Template {
        /// The file name.
        source_name: String,
        /// Line of the template.
        line: usize,
    },
    /// A flag value is not usable (e.g. `--allow` that is neither an email
    /// nor `@domain`).
    #[error("invalid {flag} value {value:?}: {reason}")]
    Flag {
        /// The flag, e.g. "--allow".
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The built-in schema does not load: a bug in Drawbridge, not in the
    /// policy.
    #[error("the built-in policy schema does not load (a Drawbridge bug): {0}")]
    Schema(String),
}

/// A loaded, schema-validated policy: one Cedar policy set with a name.
///
/// Every policy in it has an id: its `@id("…")` annotation, or else
/// `source:line` (the line its text starts on). Decisions name these ids.
#[derive(Debug, Clone)]
pub struct Policy {
    source_name: String,
    text: String,
    pub(crate) set: PolicySet,
    ids: Vec<String>,
    /// Position of each id in the text, to report ids in that order.
    order: HashMap<String, usize>,
    pub(crate) has_permit: bool,
    /// What its policies can read of the context (see [`Reads`]).
    pub(crate) reads: Reads,
}

impl Policy {
    /// Parse `text` as Cedar and validate it against the schema
    /// ([`SCHEMA_TEXT`], strict mode). `source_name` (a file name, or
    /// "flags") names it in errors and in ids of un-annotated policies.
    ///
    /// Refused: syntax errors, anything the schema does not know (a typo in
    /// an attribute, entity type or action), unguarded use of an optional
    /// attribute, a policy that can never apply (e.g. `call_tool` on a
    /// `Route`: its resource is a `Tool`), bidirectional control characters,
    /// duplicate `@id`s, templates. An empty text is a valid
    /// policy that permits nothing.
    pub fn from_cedar_text(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let parsed = PolicySet::from_str(text).map_err(|errors| PolicyError::Syntax {
            source_name: source_name.to_owned(),
            problems: errors.iter().map(|e| problem(text, e, None)).collect(),
        })?;
        if let Some(template) = parsed.templates().next() {
            let line = line_of(text, &template.to_string(), 0);
            return Err(PolicyError::Template {
                source_name: source_name.to_owned(),
                line,
            });
        }

        // Give every policy its id, remembering where each starts.
        let mut renamed = Vec::new();
        let mut first_lines: HashMap<String, usize> = HashMap::new();
        let mut ids = Vec::new();
        let mut cursor = 0;
        let mut has_permit = false;
        let mut reads = Reads::NONE;
        for policy in parsed.policies() {
            reads = reads.union(Reads::of(policy));
            let own_text = policy.to_string();
            // Cedar keeps the policies in text order, and each one's text is
            // a slice of `text`: look for it after the previous one.
            let found = text[cursor..]
                .find(&own_text)
                .map(|at| cursor + at)
                .or_else(|| text.find(&own_text));
            if let Some(at) = found {
                cursor = at + own_text.len();
            }
            let start = found.unwrap_or(cursor);
            let line = line_col(text, start).0;
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{source_name}:{line}"),
            };
            if let Some(first_line) = first_lines.insert(id.clone(), line) {
                return Err(PolicyError::DuplicateId {
                    source_name: source_name.to_owned(),
                    id,
                    line,
                    first_line,
                });
            }
            has_permit |= policy.effect() == Effect::Permit;
            ids.push(id.clone());
            renamed.push(policy.new_id(PolicyId::new(id)));
        }
        let set = PolicySet::from_policies(renamed).map_err(|e| PolicyError::Invalid {
            source_name: source_name.to_owned(),
            problems: vec![problem(text, &e, None)],
        })?;

        let validator = Validator::new(schema.clone());
        let result = validator.validate(&set, ValidationMode::Strict);
        let mut problems: Vec<Problem> = result
            .validation_errors()
            .map(|e| problem(text, e, Some(e.policy_id().to_string())))
            .collect();
        // Warnings that mean a mistake or a trick are refused too: a policy
        // that can never apply (a wrong resource type for its action, a
        // condition that is always false) is a typo by another name, and
        // bidirectional control characters hide what the text says.
        problems.extend(
            result
                .validation_warnings()
                .filter(|w| {
                    matches!(
                        w,
                        ValidationWarning::ImpossiblePolicy(_)
                            | ValidationWarning::InvalidActionApplication(_)
                            | ValidationWarning::BidiCharsInString(_)
                            | ValidationWarning::BidiCharsInIdentifier(_)
                    )
                })
                .map(|w| problem(text, w, Some(w.policy_id().to_string()))),
        );
        if !problems.is_empty() {
            tidy(&mut problems);
            return Err(PolicyError::Invalid {
                source_name: source_name.to_owned(),
                problems,
            });
        }
        let order = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(Self {
            source_name: source_name.to_owned(),
            text: text.to_owned(),
            set,
            ids,
            order,
            has_permit,
            reads,
        })
    }

    /// Compile the simple flags to Cedar text and load it like a file (see
    /// [`crate::engine`] for exactly what each flag means):
    ///
    /// * the route's owner (whoever the relay knows as its owner:
    ///   `context.route.owner`) may do everything — the default with no flags;
    /// * each `allow` entry (`bob@example.com` or `@example.com`) may too;
    /// * `tools`, when given, are the only tools anybody may call (an empty
    ///   list: none);
    /// * `read_only` forbids, for everybody, every tool call that is not a
    ///   known read tool with read-only SQL (see [`READ_TOOLS`]).
    ///
    /// Emails and domains are compared lowercased. The generated text is
    /// [`Policy::cedar_text`]; its source name is "flags". Any resource and
    /// prompt (see [`Policy::from_owner_flags`]).
    pub fn from_flags(
        allow: &[String],
        tools: Option<&[String]>,
        read_only: bool,
    ) -> Result<Self, PolicyError> {
        Self::from_owner_flags(allow, tools, None, None, read_only)
    }

    /// [`Policy::from_flags`], and also:
    ///
    /// * `resources`, when given, are the only resources anybody may read:
    ///   URI patterns where `*` matches any run of characters (an empty
    ///   list: none);
    /// * `prompts`, when given, the only prompts anybody may get (name
    ///   patterns, the same way).
    pub fn from_owner_flags(
        allow: &[String],
        tools: Option<&[String]>,
        resources: Option<&[String]>,
        prompts: Option<&[String]>,
        read_only: bool,
    ) -> Result<Self, PolicyError> {
        let mut text = String::from(
            "// Compiled from flags by Drawbridge. To go further, edit a copy and pass it\n\
             // with --policy FILE.cedar (the schema: policy/src/engine/schema.cedarschema).\n\n",
        );
        text.push_str(
            "// The route's owner may do everything.\n\
             @id(\"owner\")\n\
             permit (principal, action, resource)\n\
             when { principal.email == context.route.owner };\n",
        );
        for entry in allow {
            let entry = entry.trim();
            if let Some(domain) = entry.strip_prefix('@') {
                let domain = domain_flag("--allow", entry, domain)?;
                text.push_str(&format!(
                    "\n// --allow {entry}: everybody whose email is at {domain}.\n\
                     @id({})\n\
                     permit (principal, action, resource)\n\
                     when {{ principal.domain == {} }};\n",
                    cedar_string(&format!("allow-@{domain}")),
                    cedar_string(&domain)
                ));
            } else {
                let email = email_flag("--allow", entry)?;
                text.push_str(&format!(
                    "\n// --allow {email}\n\
                     @id({})\n\
                     permit (principal == User::{}, action, resource);\n",
                    cedar_string(&format!("allow-{email}")),
                    cedar_string(&email)
                ));
            }
        }
        if let Some(tools) = tools {
            for tool in tools {
                if tool.is_empty() {
                    return Err(PolicyError::Flag {
                        flag: "--tools",
                        value: tool.clone(),
                        reason: "a tool name cannot be empty",
                    });
                }
            }
            if tools.is_empty() {
                // Cedar refuses an empty set literal; no tool means none.
                text.push_str(
                    "\n// --tools with no tool: no tool may be called, by anybody.\n\
                     @id(\"tools\")\n\
                     forbid (principal, action == Action::\"call_tool\", resource);\n",
                );
            } else {
                text.push_str(&format!(
                    "\n// --tools: no other tool may be called, by anybody.\n\
                     @id(\"tools\")\n\
                     forbid (principal, action == Action::\"call_tool\", resource)\n\
                     unless {{ {}.contains(resource.name) }};\n",
                    cedar_set(tools.iter().map(String::as_str))
                ));
            }
        }
        for (flag, kind, action, patterns) in [
            ("--resources", "resources", "read_resource", resources),
            ("--prompts", "prompts", "get_prompt", prompts),
        ] {
            let Some(patterns) = patterns else { continue };
            super::grant::check_patterns(flag, patterns)?;
            if patterns.is_empty() {
                text.push_str(&format!(
                    "\n// {flag} with nothing named: no {what}, by anybody.\n\
                     @id({id})\n\
                     forbid (principal, action == Action::{action}, resource);\n",
                    what = if kind == "resources" {
                        "resource may be read"
                    } else {
                        "prompt may be got"
                    },
                    id = cedar_string(kind),
                    action = cedar_string(action),
                ));
            } else {
                text.push_str(&format!(
                    "\n// {flag}: no other {what}, by anybody.\n\
                     @id({id})\n\
                     forbid (principal, action == Action::{action}, resource)\n\
                     unless {{ {matches} }};\n",
                    what = if kind == "resources" {
                        "resource may be read"
                    } else {
                        "prompt may be got"
                    },
                    id = cedar_string(kind),
                    action = cedar_string(action),
                    matches = super::grant::target_matches(patterns),
                ));
            }
        }
        if read_only {
            text.push_str(&format!(
                "\n// --read-only, for everybody:\n\
                 // SQL must parse and only read, whatever the tool is called. (SQL that\n\
                 // does not parse is refused before any policy: builtin/unparsed-sql.)\n\
                 @id(\"read-only-sql\")\n\
                 forbid (principal, action == Action::\"call_tool\", resource)\n\
                 when {{ context.has_sql && !(context.sql.parsed && context.sql.read_only) }};\n\
                 \n\
                 // read_query runs its `query`: without SQL that can be judged (none, or\n\
                 // not a string), it is refused.\n\
                 @id(\"read-only-no-sql\")\n\
                 forbid (principal, action == Action::\"call_tool\", resource == Tool::\"read_query\")\n\
                 when {{ !context.has_sql && !context.listing }};\n\
                 \n\
                 // Only tools known to read. A tool that writes without SQL, or ignores\n\
                 // the SQL it is given, cannot be recognised by its arguments, so every\n\
                 // other tool is refused. Known to write: {writes}.\n\
                 @id(\"read-only-tools\")\n\
                 forbid (principal, action == Action::\"call_tool\", resource)\n\
                 unless {{ {reads}.contains(resource.name) }};\n\
                 \n\
                 // Functions that load code or touch files, although their SQL reads.\n\
                 @id(\"read-only-functions\")\n\
                 forbid (principal, action == Action::\"call_tool\", resource)\n\
                 when {{ context.sql.functions.containsAny({functions}) }};\n",
                writes = WRITE_TOOLS.join(", "),
                reads = cedar_set(READ_TOOLS),
                functions = cedar_set(FILE_FUNCTIONS),
            ));
        }
        Self::from_cedar_text(&text, "flags")
    }

    /// The Cedar text this policy was loaded from (for flags: the generated
    /// text), to inspect or to save as a starting point for a file.
    pub fn cedar_text(&self) -> &str {
        &self.text
    }

    /// The name it was loaded under (a file name, or "flags").
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The ids of its policies, in the order of the text.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Sort ids into the order of the text (Cedar reports them unordered).
    pub(crate) fn sort_ids(&self, ids: &mut [String]) {
        ids.sort_by_key(|id| self.order.get(id).copied().unwrap_or(usize::MAX));
    }

    /// Whether any of its policies is a `permit` (a layer with none only
    /// forbids; see [`crate::Engine`]).
    pub fn has_permit(&self) -> bool {
        self.has_permit
    }
}

/// In text order, and once per place: Cedar repeats a problem for every
/// action a policy may apply to, with the same help.
fn tidy(problems: &mut Vec<Problem>) {
    problems.sort_by_key(|p| (p.line, p.column));
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| {
        let what = p.help.clone().unwrap_or_else(|| p.message.clone());
        seen.insert((p.line, p.column, p.policy.clone(), what))
    });
}

/// A Cedar problem located in `text`.
fn problem(text: &str, error: &dyn Diagnostic, policy: Option<String>) -> Problem {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = match offset {
        Some(offset) => {
            let (line, column) = line_col(text, offset);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Problem {
        line,
        column,
        policy,
        message: error.to_string(),
        help: error.help().map(|h| h.to_string()),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Line where `needle` first occurs in `text` at or after byte `from` (1 if
/// it does not).
fn line_of(text: &str, needle: &str, from: usize) -> usize {
    text.get(from..)
        .and_then(|rest| rest.find(needle))
        .map_or(1, |at| line_col(text, from + at).0)
}

/// A Cedar string literal: quotes, backslashes and control characters
/// escaped (Cedar accepts Rust's escapes).
pub(crate) fn cedar_string(value: &str) -> String {
    format!("\"{}\"", value.escape_default())
}

/// A Cedar set literal of strings.
pub(crate) fn cedar_set<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(cedar_string).collect();
    format!("[{}]", items.join(", "))
}

/// A usable email flag value, lowercased: `local@domain`, no whitespace or
/// control characters.
pub(crate) fn email_flag(flag: &'static str, value: &str) -> Result<String, PolicyError> {
    let value = value.trim();
    let bad = |reason| PolicyError::Flag {
        flag,
        value: value.to_owned(),
        reason,
    };
    let (local, domain) = value
        .rsplit_once('@')
        .ok_or_else(|| bad("expected an email (name@domain) or @domain"))?;
    if local.is_empty() || domain.is_empty() {
        return Err(bad("expected an email (name@domain) or @domain"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("an email cannot contain spaces or control characters"));
    }
    Ok(value.to_lowercase())
}

/// A usable `@domain` flag value, lowercased.
pub(crate) fn domain_flag(
    flag: &'static str,
    entry: &str,
    domain: &str,
) -> Result<String, PolicyError> {
    let bad = |reason| PolicyError::Flag {
        flag,
        value: entry.to_owned(),
        reason,
    };
    if domain.is_empty() || domain.contains('@') {
        return Err(bad("expected @domain, e.g. @example.com"));
    }
    if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a domain cannot contain spaces or control characters"));
    }
    Ok(domain.to_lowercase())
}
