//! What a SQL string really does, for the per-message policy.
//!
//! A tool *named* `read_query` proves nothing about the SQL it is handed, so the
//! relay parses that SQL itself (with [`sqlparser`], SQLite dialect) and hands the
//! policy a set of [`SqlFacts`]: whether it parsed at all, one [`StatementKind`]
//! per statement, whether the whole string only reads, which tables it touches and
//! which functions it calls. [`classify`] is pure and I/O-free.
//!
//! # Decisions (the policy relies on every one of them)
//!
//! * **Fail closed.** Anything that does not parse — including SQL that SQLite
//!   would accept but `sqlparser` does not (see *Limitations*) — gives
//!   `parsed: false`, `read_only: false` and an [`SqlError`]. So does input over
//!   [`MAX_SQL_BYTES`], input with more than [`MAX_OPERATOR_TOKENS`] operators
//!   (see *Stack safety*), and input with no statement at all (empty, only
//!   comments, only `;`): a tool handed no SQL has nothing legitimate to run.
//! * **`read_only` is true only if every statement only reads**, judged on the
//!   statement and on every statement nested inside it:
//!   * `SELECT`, `VALUES` and compound selects read.
//!   * `WITH … DELETE/INSERT/UPDATE` is parsed by `sqlparser` as a *query* whose
//!     body is the DML; the statement's kind is the DML's kind and it writes. Any
//!     DML found anywhere inside a query (a sub-query, a CTE body) also makes the
//!     whole string a write.
//!   * `SELECT writefile(…)` or `SELECT load_extension(…)` is read-only *at the
//!     SQL level*: SQLite only runs the function. The function names are in
//!     [`SqlFacts::functions`] for the policy to judge.
//!   * `PRAGMA name` (no value) reads only for pragmas in a fixed list of query
//!     pragmas (`table_info`, `user_version`, `journal_mode`, …); a pragma with a
//!     value (`PRAGMA x = y` or `PRAGMA x(y)`) writes, except the pure query
//!     pragmas that take an argument (`table_info`, `index_list`, …), which read
//!     whichever form is used (SQLite treats `PRAGMA table_info = t` as a query
//!     too). Unknown pragmas write (e.g. `PRAGMA optimize` may run `ANALYZE`).
//!   * `ATTACH` and `DETACH` never read-only (they open or close files).
//!   * `EXPLAIN stmt` and `EXPLAIN QUERY PLAN stmt` read (SQLite compiles but
//!     never runs `stmt`); the kind is [`StatementKind::Explain`] *carrying the
//!     explained statement's kind*, so `EXPLAIN DELETE …` says "explain delete".
//!     Tables and functions of the explained statement are still reported.
//!     `EXPLAIN ANALYZE` and `DESCRIBE` are not SQLite and count as writes.
//!   * `REPLACE INTO`, `INSERT OR REPLACE` ([`StatementKind::Replace`]: it may
//!     delete conflicting rows) and `INSERT … ON CONFLICT DO UPDATE`
//!     ([`StatementKind::Upsert`]: it may update rows) get kinds of their own, so
//!     a policy that allows `insert` does not silently allow deletes or updates.
//!   * `CREATE TEMP TABLE` writes (it creates a table, if only a temporary one).
//!   * Transaction statements (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`,
//!     `RELEASE`) count as writes: conservative, and a read-only tool has no need
//!     of them.
//!   * Several statements (`SELECT 1; DROP TABLE t`): each is judged, so one
//!     write makes the whole string a write.
//!   * Every statement kind not named above writes ([`StatementKind::Other`]).
//! * **Tables** are reported lowercased (ASCII only, as SQLite folds case),
//!   unquoted, `schema.table` kept qualified, sorted and deduplicated. They come
//!   from `FROM`/`JOIN`, sub-queries, CTE bodies, DML targets, `CREATE`/`ALTER`/
//!   `DROP TABLE`/`VIEW` targets, trigger tables and the argument of table
//!   pragmas (`PRAGMA table_info(t)`). A reference to a CTE is not a table —
//!   but only where that CTE is in scope, and never as a DML target (SQLite
//!   resolves `WITH t AS (…) DELETE FROM t` to the real table `t`). Table-valued
//!   functions (`json_each(…)`, `pragma_table_info(…)`) are functions, not tables.
//!   Use [`SqlFacts::touches_table`] to match a name with or without its schema.
//! * **Functions** are every function called anywhere, lowercased (ASCII).
//!
//! # Stack safety
//!
//! Parentheses may nest at most [`MAX_NESTING`] deep, checked on the tokens
//! before parsing: `sqlparser`'s own recursion limit (50) is kept, but some
//! inputs under it overflowed a 2 MiB stack in a debug build (found by
//! fuzzing). 10,000 nested parentheses give a clean `parsed: false`. It does *not* bound left-deep chains that it builds in a
//! loop (`1+1+1+…`, `a OR b OR …`, `… UNION SELECT …`), and dropping such a tree
//! recurses once per link. Each link costs at least one operator or keyword
//! token, so [`classify`] counts those tokens before parsing and refuses more
//! than [`MAX_OPERATOR_TOKENS`]; a tree that deep drops comfortably within a
//! 2 MiB thread stack even in a debug build.
//!
//! # Limitations (all fail closed)
//!
//! `sqlparser` 0.63 does not parse some valid SQLite: `REINDEX`, `WITH x AS
//! MATERIALIZED (…)`, `INDEXED BY`, postfix `ISNULL`. `PRAGMA` (any value form),
//! `DETACH` and `VACUUM [schema] [INTO file]` are parsed here, by a thin dialect
//! wrapper, because `sqlparser`'s own SQLite support rejects common forms such
//! as `PRAGMA table_info(t)` and `PRAGMA journal_mode = WAL`.

use std::any::TypeId;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Mutex;

use sqlparser::ast::{
    AlterTableOperation, Expr, ObjectName, ObjectType, OnConflictAction, OnInsert, Query,
    RenameTableNameKind, SetExpr, SqliteOnConflict, Statement, TableFactor, TableObject,
    TableWithJoins, Value, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, SQLiteDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Largest SQL string [`classify`] will parse (64 KiB). Larger input gets
/// `parsed: false`: no legitimate tool call needs more, and parsing cost grows
/// with size.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Most operator and keyword tokens [`classify`] accepts in one SQL string.
///
/// This bounds the depth of the left-deep trees `sqlparser` builds without
/// recursion (`1+1+…`), whose recursive drop could otherwise overflow the
/// stack (see the module docs). Literals, identifiers, commas, parentheses,
/// `NULL`/`TRUE`/`FALSE` and a sign directly after `(` or `,` do not count, so
/// bulk `INSERT … VALUES` stays well within it.
pub const MAX_OPERATOR_TOKENS: usize = 4096;

/// Deepest parenthesis nesting [`classify`] accepts.
///
/// `sqlparser`'s own recursion limit (50) is not enough on its own: in a
/// debug build some inputs 30 parentheses deep (found by the `sql` fuzz
/// target: `UPDATE((((UPDATE ((((…`) overflow a 2 MiB thread stack before
/// the limit trips. Real queries nest subqueries and function calls a few
/// levels deep; 16 leaves room for them and keeps every build's stack safe.
pub const MAX_NESTING: usize = 16;

/// Why a SQL string could not be classified. Any of these means the policy must
/// fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The input is larger than [`MAX_SQL_BYTES`].
    #[error("SQL too large: {len} bytes, at most {max} are accepted")]
    TooLarge {
        /// Size of the input in bytes.
        len: usize,
        /// The limit, [`MAX_SQL_BYTES`].
        max: usize,
    },
    /// The input has more than [`MAX_OPERATOR_TOKENS`] operators/keywords.
    #[error("SQL too complex: more than {max} operators and keywords")]
    TooComplex {
        /// The limit, [`MAX_OPERATOR_TOKENS`].
        max: usize,
    },
    /// Parentheses nest deeper than [`MAX_NESTING`].
    #[error("SQL nested too deep: more than {max} levels of parentheses")]
    TooDeep {
        /// The limit, [`MAX_NESTING`].
        max: usize,
    },
    /// The input holds no statement (empty, only whitespace, comments or `;`).
    #[error("no SQL statement")]
    Empty,
    /// The input could not be split into tokens (e.g. an unterminated string).
    #[error("SQL could not be tokenized: {0}")]
    Tokenize(String),
    /// The input is not SQL that `sqlparser` (SQLite dialect) understands,
    /// including input nested deeper than its recursion limit.
    #[error("SQL could not be parsed: {0}")]
    Parse(String),
}

/// What one SQL statement is. Names for audit and policy come from
/// [`StatementKind::as_str`] (and, for `EXPLAIN`, [`fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, compound selects, `WITH … SELECT`.
    Select,
    /// `INSERT` (including `INSERT OR IGNORE/ABORT/FAIL/ROLLBACK` and
    /// `ON CONFLICT DO NOTHING`).
    Insert,
    /// `REPLACE INTO` and `INSERT OR REPLACE`: may delete conflicting rows.
    Replace,
    /// `INSERT … ON CONFLICT … DO UPDATE`: may update existing rows.
    Upsert,
    /// `UPDATE` (any `OR` conflict clause).
    Update,
    /// `DELETE`.
    Delete,
    /// `CREATE [TEMP] TABLE` (also `AS SELECT`) and `CREATE VIRTUAL TABLE`.
    CreateTable,
    /// `CREATE [UNIQUE] INDEX`.
    CreateIndex,
    /// `CREATE [TEMP] VIEW`.
    CreateView,
    /// `CREATE [TEMP] TRIGGER`.
    CreateTrigger,
    /// `DROP TABLE/VIEW/INDEX/TRIGGER`.
    Drop,
    /// `ALTER TABLE`.
    AlterTable,
    /// `ATTACH [DATABASE] file AS name`.
    Attach,
    /// `DETACH [DATABASE] name`.
    Detach,
    /// `PRAGMA …`, reading or writing (see [`SqlFacts::read_only`]).
    Pragma,
    /// `VACUUM [schema] [INTO file]`.
    Vacuum,
    /// `BEGIN`, `COMMIT`/`END`, `ROLLBACK [TO]`, `SAVEPOINT`, `RELEASE`.
    Transaction,
    /// `EXPLAIN [QUERY PLAN] stmt`, carrying the kind of `stmt`.
    Explain(Box<StatementKind>),
    /// Anything else, named after the `sqlparser` statement in snake case
    /// (`analyze`, `describe`, `merge`, …). Never read-only.
    Other(String),
}

impl StatementKind {
    /// The kind's name for audit and policy: `"select"`, `"insert"`,
    /// `"create_table"`, `"explain"`, … ([`StatementKind::Other`] gives its own
    /// name). Use [`fmt::Display`] to also name what an `EXPLAIN` explains.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Replace => "replace",
            Self::Upsert => "upsert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::CreateTable => "create_table",
            Self::CreateIndex => "create_index",
            Self::CreateView => "create_view",
            Self::CreateTrigger => "create_trigger",
            Self::Drop => "drop",
            Self::AlterTable => "alter_table",
            Self::Attach => "attach",
            Self::Detach => "detach",
            Self::Pragma => "pragma",
            Self::Vacuum => "vacuum",
            Self::Transaction => "transaction",
            Self::Explain(_) => "explain",
            Self::Other(name) => name,
        }
    }
}

/// `as_str()`, except that `EXPLAIN` also names what it explains:
/// `"explain delete"`.
impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explain(inner) => write!(f, "explain {inner}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Serialized as its [`fmt::Display`] form, for audit lines.
impl serde::Serialize for StatementKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Everything the policy learns from one SQL string. Built by [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SqlFacts {
    /// Whether the string parsed. `false` means the policy must fail closed;
    /// the other fields are then empty/false.
    pub parsed: bool,
    /// Why it did not parse (`None` when `parsed`).
    #[serde(serialize_with = "serialize_error")]
    pub error: Option<SqlError>,
    /// One kind per statement, in order.
    pub statements: Vec<StatementKind>,
    /// True only if the string parsed and every statement only reads (see the
    /// module docs for what counts as reading).
    pub read_only: bool,
    /// Tables touched (lowercased, unquoted, `schema.table` kept, sorted,
    /// deduplicated; CTE names excluded).
    pub tables: Vec<String>,
    /// Functions called anywhere (lowercased, sorted, deduplicated).
    pub functions: Vec<String>,
}

fn serialize_error<S: serde::Serializer>(
    error: &Option<SqlError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match error {
        Some(e) => serializer.collect_str(e),
        None => serializer.serialize_none(),
    }
}

impl SqlFacts {
    fn failed(error: SqlError) -> Self {
        Self {
            parsed: false,
            error: Some(error),
            statements: Vec::new(),
            read_only: false,
            tables: Vec::new(),
            functions: Vec::new(),
        }
    }

    /// The statement kinds' names ([`StatementKind::as_str`]), in order, for a
    /// policy context or an audit line.
    pub fn kind_names(&self) -> Vec<&str> {
        self.statements.iter().map(StatementKind::as_str).collect()
    }

    /// Whether the SQL touches `table` (matched case-insensitively). A bare
    /// name also matches that table in any schema (`secret` matches
    /// `main.secret`), so a rule about `secret` cannot be dodged by qualifying
    /// the name; a qualified name matches only exactly.
    pub fn touches_table(&self, table: &str) -> bool {
        let wanted = table.to_ascii_lowercase();
        self.tables.iter().any(|t| {
            t == &wanted
                || (!wanted.contains('.')
                    && t.rsplit_once('.').is_some_and(|(_, name)| name == wanted))
        })
    }

    /// Whether the SQL calls `function` (matched case-insensitively).
    pub fn calls_function(&self, function: &str) -> bool {
        let wanted = function.to_ascii_lowercase();
        self.functions.iter().any(|f| f == &wanted)
    }
}

/// Classify one SQL string (possibly several `;`-separated statements).
///
/// Never panics and never fails: a string it cannot understand gives
/// `parsed: false` with the reason in [`SqlFacts::error`], and the policy must
/// then deny. See the module docs for every classification decision.
pub fn classify(sql: &str) -> SqlFacts {
    let kept = sql.len() <= SEEN_MAX_BYTES;
    if kept {
        // A poisoned lock only costs the cache.
        if let Some(hit) = SEEN
            .lock()
            .ok()
            .and_then(|seen| seen.as_ref()?.get(sql).cloned())
        {
            return hit;
        }
    }
    let facts = match parse(sql) {
        Ok(statements) => analyze(&statements),
        Err(error) => SqlFacts::failed(error),
    };
    if kept {
        if let Ok(mut seen) = SEEN.lock() {
            let seen = seen.get_or_insert_with(HashMap::new);
            if seen.len() >= SEEN_ENTRIES {
                seen.clear();
            }
            seen.insert(sql.into(), facts.clone());
        }
    }
    facts
}

/// Most statements [`SEEN`] keeps; it is emptied when full.
const SEEN_ENTRIES: usize = 1024;
/// Longer SQL strings are not kept (at most about 4 MiB in all).
const SEEN_MAX_BYTES: usize = 4096;

/// The facts of recently classified SQL strings. They depend on the text
/// alone, clients send the same statements again and again, and the relay
/// and the agent each classify every statement: parsing is most of a
/// decision's cost for a `tools/call` with SQL. Keyed by the exact text.
static SEEN: Mutex<Option<HashMap<Box<str>, SqlFacts>>> = Mutex::new(None);

fn parse(sql: &str) -> Result<Vec<Statement>, SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::TooLarge {
            len: sql.len(),
            max: MAX_SQL_BYTES,
        });
    }
    let dialect = DrawbridgeSqlite;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Tokenize(e.to_string()))?;
    check_tokens(&tokens)?;
    let statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| SqlError::Parse(e.to_string()))?;
    if statements.is_empty() {
        return Err(SqlError::Empty);
    }
    Ok(statements)
}

/// Refuse inputs with no statement-like token, too many operators, or
/// parentheses nested too deep.
fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), SqlError> {
    let mut operators = 0usize;
    let mut depth = 0usize;
    let mut meaningful = false;
    let mut prev: Option<&Token> = None;
    for t in tokens {
        let counts = match &t.token {
            Token::Whitespace(_) | Token::EOF => continue,
            Token::SemiColon
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::Number(..)
            | Token::Placeholder(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::NationalStringLiteral(_) => false,
            Token::Word(w) => !matches!(
                w.keyword,
                Keyword::NoKeyword | Keyword::NULL | Keyword::TRUE | Keyword::FALSE
            ),
            // A sign right after `(` or `,` is a literal's sign, not a chain link.
            Token::Minus | Token::Plus => !matches!(prev, Some(Token::LParen) | Some(Token::Comma)),
            _ => true,
        };
        if !matches!(t.token, Token::SemiColon) {
            meaningful = true;
        }
        match t.token {
            Token::LParen => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(SqlError::TooDeep { max: MAX_NESTING });
                }
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if counts {
            operators += 1;
            if operators > MAX_OPERATOR_TOKENS {
                return Err(SqlError::TooComplex {
                    max: MAX_OPERATOR_TOKENS,
                });
            }
        }
        prev = Some(&t.token);
    }
    if meaningful {
        Ok(())
    } else {
        Err(SqlError::Empty)
    }
}

fn analyze(statements: &[Statement]) -> SqlFacts {
    let mut collector = Collector::default();
    let mut kinds = Vec::with_capacity(statements.len());
    let mut every_statement_reads = true;
    for statement in statements {
        kinds.push(kind_of(statement));
        every_statement_reads &= reads_only_itself(statement);
        // The collector never breaks: the result is always Continue.
        let _ = statement.visit(&mut collector);
    }
    SqlFacts {
        parsed: true,
        error: None,
        statements: kinds,
        read_only: every_statement_reads && !collector.writes,
        tables: collector.tables.into_iter().collect(),
        functions: collector.functions.into_iter().collect(),
    }
}

/// The kind of a statement, looking through `WITH … <DML>` and `EXPLAIN`.
fn kind_of(statement: &Statement) -> StatementKind {
    match statement {
        Statement::Query(query) => query_kind(query),
        Statement::Insert(insert) => {
            let replaces = matches!(insert.or, Some(SqliteOnConflict::Replace))
                || matches!(&insert.insert_token.0.token, Token::Word(w) if w.keyword == Keyword::REPLACE);
            let upserts = matches!(
                &insert.on,
                Some(OnInsert::OnConflict(c)) if matches!(c.action, OnConflictAction::DoUpdate(_))
            ) || matches!(insert.on, Some(OnInsert::DuplicateKeyUpdate(_)));
            if replaces {
                StatementKind::Replace
            } else if upserts {
                StatementKind::Upsert
            } else {
                StatementKind::Insert
            }
        }
        Statement::Update(_) => StatementKind::Update,
        Statement::Delete(_) => StatementKind::Delete,
        Statement::CreateTable(_) | Statement::CreateVirtualTable { .. } => {
            StatementKind::CreateTable
        }
        Statement::CreateIndex(_) => StatementKind::CreateIndex,
        Statement::CreateView(_) => StatementKind::CreateView,
        Statement::CreateTrigger(_) => StatementKind::CreateTrigger,
        Statement::Drop { .. } | Statement::DropTrigger(_) => StatementKind::Drop,
        Statement::AlterTable(_) => StatementKind::AlterTable,
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => {
            StatementKind::Attach
        }
        Statement::DetachDuckDBDatabase { .. } => StatementKind::Detach,
        Statement::Pragma { .. } => StatementKind::Pragma,
        Statement::Vacuum(_) => StatementKind::Vacuum,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => StatementKind::Transaction,
        Statement::Explain {
            describe_alias: sqlparser::ast::DescribeAlias::Explain,
            statement,
            ..
        } => StatementKind::Explain(Box::new(kind_of(statement))),
        Statement::Explain { .. } | Statement::ExplainTable { .. } => {
            StatementKind::Other("describe".to_owned())
        }
        other => StatementKind::Other(variant_name(other)),
    }
}

fn query_kind(query: &Query) -> StatementKind {
    match query.body.as_ref() {
        SetExpr::Insert(statement) | SetExpr::Update(statement) | SetExpr::Delete(statement) => {
            kind_of(statement)
        }
        SetExpr::Merge(_) => StatementKind::Other("merge".to_owned()),
        SetExpr::Query(inner) => query_kind(inner),
        _ => StatementKind::Select,
    }
}

/// Whether this statement, *not counting statements nested in it*, only reads.
/// Nested statements (DML inside a query) are judged by the [`Collector`].
fn reads_only_itself(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_) => true,
        Statement::Explain {
            describe_alias: sqlparser::ast::DescribeAlias::Explain,
            analyze: false,
            ..
        } => true,
        Statement::Pragma { name, value, .. } => pragma_reads(name, value.is_some()),
        _ => false,
    }
}

/// Pragmas that only report something when given no value.
const QUERY_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "automatic_index",
    "busy_timeout",
    "cache_size",
    "cache_spill",
    "cell_size_check",
    "checkpoint_fullfsync",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "defer_foreign_keys",
    "encoding",
    "foreign_key_check",
    "foreign_keys",
    "freelist_count",
    "fullfsync",
    "function_list",
    "hard_heap_limit",
    "ignore_check_constraints",
    "integrity_check",
    "journal_mode",
    "journal_size_limit",
    "legacy_alter_table",
    "locking_mode",
    "max_page_count",
    "mmap_size",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "query_only",
    "quick_check",
    "read_uncommitted",
    "recursive_triggers",
    "reverse_unordered_selects",
    "schema_version",
    "secure_delete",
    "soft_heap_limit",
    "synchronous",
    "table_list",
    "temp_store",
    "threads",
    "trusted_schema",
    "user_version",
    "wal_autocheckpoint",
];

/// Pragmas whose argument is what to report on, never a new setting.
const ARGUMENT_QUERY_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// Pragmas whose argument names a table.
const TABLE_ARGUMENT_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_list",
    "table_info",
    "table_xinfo",
];

fn pragma_base_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default()
}

fn pragma_reads(name: &ObjectName, has_value: bool) -> bool {
    let base = pragma_base_name(name);
    if has_value {
        ARGUMENT_QUERY_PRAGMAS.contains(&base.as_str())
    } else {
        QUERY_PRAGMAS.contains(&base.as_str())
    }
}

/// Walks every statement, query, relation and expression of one top-level
/// statement, collecting tables and functions and noticing writes.
#[derive(Default)]
struct Collector {
    /// Set when any statement outside an `EXPLAIN` does not only read.
    writes: bool,
    /// How many `EXPLAIN`s enclose the current node.
    explain_depth: usize,
    /// CTE names in scope, one entry per enclosing query.
    cte_scopes: Vec<Vec<String>>,
    /// The next relation visited is a table-valued function's name.
    next_relation_is_function: bool,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
}

impl Collector {
    fn in_cte_scope(&self, name: &ObjectName) -> bool {
        let [part] = name.0.as_slice() else {
            return false;
        };
        let Some(ident) = part.as_ident() else {
            return false;
        };
        let wanted = ident.value.to_ascii_lowercase();
        self.cte_scopes.iter().flatten().any(|cte| cte == &wanted)
    }

    fn add_table(&mut self, name: &ObjectName) {
        let n = normalize(name);
        if !n.is_empty() {
            self.tables.insert(n);
        }
    }

    fn add_targets(&mut self, from: &[TableWithJoins]) {
        for twj in from {
            for factor in
                std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation))
            {
                if let TableFactor::Table { name, .. } = factor {
                    self.add_table(name);
                }
            }
        }
    }

    /// Tables a statement touches that the generic relation walk misses (or
    /// would wrongly hide behind a CTE of the same name).
    fn statement_tables(&mut self, statement: &Statement) {
        match statement {
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.add_table(name);
                }
            }
            Statement::Update(update) => self.add_targets(std::slice::from_ref(&update.table)),
            Statement::Delete(delete) => {
                for name in &delete.tables {
                    self.add_table(name);
                }
                match &delete.from {
                    sqlparser::ast::FromTable::WithFromKeyword(from)
                    | sqlparser::ast::FromTable::WithoutKeyword(from) => self.add_targets(from),
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View,
                names,
                ..
            } => {
                for name in names {
                    self.add_table(name);
                }
            }
            Statement::CreateTrigger(trigger) => self.add_table(&trigger.table_name),
            Statement::AlterTable(alter) => {
                for op in &alter.operations {
                    if let AlterTableOperation::RenameTable { table_name } = op {
                        match table_name {
                            RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => {
                                self.add_table(n)
                            }
                        }
                    }
                }
            }
            Statement::Pragma {
                name,
                value: Some(value),
                ..
            } => {
                let base = pragma_base_name(name);
                if TABLE_ARGUMENT_PRAGMAS.contains(&base.as_str()) {
                    if let Some(table) = pragma_value_text(value) {
                        let schema = (name.0.len() > 1)
                            .then(|| name.0.first().and_then(|p| p.as_ident()))
                            .flatten();
                        let full = match schema {
                            Some(s) => format!("{}.{}", s.value, table),
                            None => table.to_owned(),
                        };
                        self.tables.insert(full.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
}

fn pragma_value_text(value: &ValueWithSpan) -> Option<&str> {
    match &value.value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s),
        _ => None,
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if self.explain_depth == 0 && !reads_only_itself(statement) {
            self.writes = true;
        }
        if matches!(statement, Statement::Explain { .. }) {
            self.explain_depth += 1;
        }
        self.statement_tables(statement);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if matches!(statement, Statement::Explain { .. }) {
            self.explain_depth = self.explain_depth.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let names = query
            .with
            .as_ref()
            .map(|with| {
                with.cte_tables
                    .iter()
                    .map(|cte| cte.alias.name.value.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        self.cte_scopes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.cte_scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { args: Some(_), .. } => self.next_relation_is_function = true,
            TableFactor::Function { name, .. } => {
                self.functions.insert(normalize(name));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.next_relation_is_function) {
            self.functions.insert(normalize(relation));
        } else if !self.in_cte_scope(relation) {
            self.add_table(relation);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        // Function calls, including built-ins that sqlparser gives a syntax
        // node of their own.
        let special = match expr {
            Expr::Function(function) => {
                self.functions.insert(normalize(&function.name));
                None
            }
            Expr::Trim { .. } => Some("trim"),
            Expr::Substring {
                shorthand: true, ..
            } => Some("substr"),
            Expr::Substring { .. } => Some("substring"),
            Expr::Ceil { .. } => Some("ceil"),
            Expr::Floor { .. } => Some("floor"),
            Expr::Position { .. } => Some("position"),
            Expr::Overlay { .. } => Some("overlay"),
            Expr::Extract { .. } => Some("extract"),
            _ => None,
        };
        if let Some(name) = special {
            self.functions.insert(name.to_owned());
        }
        ControlFlow::Continue(())
    }
}

/// `schema.table` → lowercased (ASCII), unquoted parts joined by `.`.
fn normalize(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match part.as_ident() {
            Some(ident) => out.push_str(&ident.value),
            None => out.push_str(&part.to_string()),
        }
    }
    out.make_ascii_lowercase();
    out
}

/// `CreateVirtualTable { … }` → `create_virtual_table`, without formatting the
/// whole statement: the `Debug` output is cut at the first non-identifier
/// character.
fn variant_name(statement: &Statement) -> String {
    struct FirstWord {
        out: String,
        done: bool,
    }
    impl fmt::Write for FirstWord {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                if !c.is_ascii_alphanumeric() {
                    self.done = true;
                    return Err(fmt::Error);
                }
                if c.is_ascii_uppercase() && !self.out.is_empty() {
                    self.out.push('_');
                }
                self.out.push(c.to_ascii_lowercase());
                if self.out.len() > 64 {
                    self.done = true;
                    return Err(fmt::Error);
                }
            }
            Ok(())
        }
    }
    let mut w = FirstWord {
        out: String::new(),
        done: false,
    };
    // Stopping early is signalled by an error; either way `out` has the name.
    let _ = fmt::write(&mut w, format_args!("{statement:?}"));
    if w.out.is_empty() {
        "unknown".to_owned()
    } else {
        w.out
    }
}

/// `SQLiteDialect` plus SQLite's own forms of `PRAGMA`, `DETACH` and `VACUUM`.
///
/// It reports itself as `SQLiteDialect` (`dialect()`) so every SQLite-specific
/// branch inside `sqlparser` is still taken, and forwards every method that
/// `SQLiteDialect` overrides; a test checks both parse the same.
#[derive(Debug, Default, Clone, Copy)]
struct DrawbridgeSqlite;

const SQLITE: SQLiteDialect = SQLiteDialect {};

impl Dialect for DrawbridgeSqlite {
    fn dialect(&self) -> TypeId {
        TypeId::of::<SQLiteDialect>()
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        SQLITE.is_delimited_identifier_start(ch)
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        SQLITE.identifier_quote_style(identifier)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        SQLITE.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        SQLITE.is_identifier_part(ch)
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        SQLITE.supports_filter_during_aggregation()
    }
    fn supports_start_transaction_modifier(&self) -> bool {
        SQLITE.supports_start_transaction_modifier()
    }
    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        SQLITE.parse_infix(parser, expr, precedence)
    }
    fn supports_in_empty_list(&self) -> bool {
        SQLITE.supports_in_empty_list()
    }
    fn supports_limit_comma(&self) -> bool {
        SQLITE.supports_limit_comma()
    }
    fn supports_asc_desc_in_column_definition(&self) -> bool {
        SQLITE.supports_asc_desc_in_column_definition()
    }
    fn supports_dollar_placeholder(&self) -> bool {
        SQLITE.supports_dollar_placeholder()
    }
    fn supports_notnull_operator(&self) -> bool {
        SQLITE.supports_notnull_operator()
    }
    fn supports_comma_separated_trim(&self) -> bool {
        SQLITE.supports_comma_separated_trim()
    }
    fn supports_numeric_literal_underscores(&self) -> bool {
        SQLITE.supports_numeric_literal_underscores()
    }
    fn supports_string_literal_backslash_escape(&self) -> bool {
        // SQLite has no backslash escapes: `'a\'` is a complete string.
        false
    }
    fn supports_nested_comments(&self) -> bool {
        // SQLite does not nest `/* */` comments.
        false
    }

    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<Statement, ParserError>> {
        if parser.parse_keyword(Keyword::PRAGMA) {
            return Some(parse_pragma(parser));
        }
        if parser.parse_keyword(Keyword::DETACH) {
            return Some(parse_detach(parser));
        }
        if parser.parse_keyword(Keyword::VACUUM) {
            return Some(parse_vacuum(parser));
        }
        SQLITE.parse_statement(parser)
    }
}

/// `PRAGMA [schema.]name [= value | (value)]`, where SQLite's value may be a
/// signed number, a string or any word (`ON`, `WAL`, `DELETE`, a table name).
fn parse_pragma(parser: &mut Parser) -> Result<Statement, ParserError> {
    let name = parser.parse_object_name(false)?;
    let (value, is_eq) = if parser.consume_token(&Token::LParen) {
        let value = parse_pragma_value(parser)?;
        parser.expect_token(&Token::RParen)?;
        (Some(value), false)
    } else if parser.consume_token(&Token::Eq) {
        (Some(parse_pragma_value(parser)?), true)
    } else {
        (None, false)
    };
    Ok(Statement::Pragma { name, value, is_eq })
}

fn parse_pragma_value(parser: &mut Parser) -> Result<ValueWithSpan, ParserError> {
    let token = parser.next_token();
    let span = token.span;
    let value = match &token.token {
        Token::Word(w) => Value::SingleQuotedString(w.value.clone()),
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
            Value::SingleQuotedString(s.clone())
        }
        Token::Number(n, long) => Value::Number(n.clone(), *long),
        Token::Minus | Token::Plus => {
            let sign = if token.token == Token::Minus { "-" } else { "" };
            let number = parser.next_token();
            match &number.token {
                Token::Number(n, long) => Value::Number(format!("{sign}{n}"), *long),
                _ => return parser.expected("a number", number),
            }
        }
        _ => return parser.expected("a PRAGMA value", token),
    };
    Ok(value.with_span(span))
}

/// `DETACH [DATABASE] name`.
fn parse_detach(parser: &mut Parser) -> Result<Statement, ParserError> {
    let database = parser.parse_keyword(Keyword::DATABASE);
    let database_alias = parser.parse_identifier()?;
    Ok(Statement::DetachDuckDBDatabase {
        if_exists: false,
        database,
        database_alias,
    })
}

/// `VACUUM [schema] [INTO expr]`. Only the kind matters to the policy.
fn parse_vacuum(parser: &mut Parser) -> Result<Statement, ParserError> {
    let at_end = |p: &Parser| {
        matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon)
            || p.peek_keyword(Keyword::INTO)
    };
    if !at_end(parser) {
        parser.parse_identifier()?;
    }
    if parser.parse_keyword(Keyword::INTO) {
        parser.parse_expr()?;
    }
    Ok(Statement::Vacuum(sqlparser::ast::VacuumStatement {
        full: false,
        sort_only: false,
        delete_only: false,
        reindex: false,
        recluster: false,
        table_name: None,
        threshold: None,
        boost: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<String> {
        let facts = classify(sql);
        assert!(facts.parsed, "{sql:?} did not parse: {:?}", facts.error);
        facts.statements.iter().map(ToString::to_string).collect()
    }

    fn reads(sql: &str) -> bool {
        let facts = classify(sql);
        assert!(facts.parsed, "{sql:?} did not parse: {:?}", facts.error);
        facts.read_only
    }

    fn tables(sql: &str) -> Vec<String> {
        let facts = classify(sql);
        assert!(facts.parsed, "{sql:?} did not parse: {:?}", facts.error);
        facts.tables
    }

    fn functions(sql: &str) -> Vec<String> {
        let facts = classify(sql);
        assert!(facts.parsed, "{sql:?} did not parse: {:?}", facts.error);
        facts.functions
    }

    fn refused(sql: &str) -> SqlError {
        let facts = classify(sql);
        assert!(!facts.parsed, "{sql:?} should not parse: {facts:?}");
        assert!(!facts.read_only, "unparsed SQL must never be read-only");
        assert!(facts.statements.is_empty() && facts.tables.is_empty());
        facts.error.expect("an unparsed result carries its error")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Run `f` on a thread with the stack a tokio worker gets (2 MiB), so a
    /// stack overflow shows up here and not only in production.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("spawn test thread")
            .join()
            .expect("classify must not crash")
    }

    /// Facts kept by statement text are the facts of that exact text: a
    /// second look, texts that differ only slightly, a full cache and a text
    /// too long to keep all give what a first parse gives.
    #[test]
    fn kept_facts_are_those_of_the_exact_text() {
        let first = classify("SELECT * FROM orders");
        assert_eq!(classify("SELECT * FROM orders"), first);
        assert!(!reads("SELECT * FROM orders; DELETE FROM orders"));
        assert!(reads("SELECT * FROM orders "));
        assert_eq!(tables("SELECT * FROM Orders2"), strings(&["orders2"]));
        for i in 0..(SEEN_ENTRIES + 10) {
            let sql = format!("UPDATE t{i} SET a = 1");
            assert!(!reads(&sql));
            assert_eq!(tables(&sql), vec![format!("t{i}")]);
        }
        assert_eq!(classify("SELECT * FROM orders"), first);
        let long = format!("SELECT {} FROM big", "a, ".repeat(SEEN_MAX_BYTES / 3) + "a");
        assert!(long.len() > SEEN_MAX_BYTES);
        assert_eq!(tables(&long), strings(&["big"]));
        assert_eq!(tables(&long), strings(&["big"]));
    }

    #[test]
    fn plain_select_reads_one_table() {
        let facts = classify("SELECT id, name FROM users WHERE id = 1");
        assert!(facts.parsed);
        assert_eq!(facts.error, None);
        assert_eq!(facts.statements, vec![StatementKind::Select]);
        assert!(facts.read_only);
        assert_eq!(facts.tables, strings(&["users"]));
        assert!(facts.functions.is_empty());
        assert_eq!(facts.kind_names(), vec!["select"]);
    }

    #[test]
    fn casing_spacing_and_comments() {
        assert_eq!(kinds("sElEcT\t*\n\n  fRoM   T"), ["select"]);
        assert_eq!(tables("sElEcT * fRoM UsErS"), ["users"]);
        assert_eq!(kinds("/* harmless? */ DELETE FROM t"), ["delete"]);
        assert!(!reads("/* harmless? */ DELETE FROM t"));
        assert_eq!(kinds("-- note\nDeLeTe FROM t"), ["delete"]);
        assert!(!reads("-- note\nDeLeTe FROM t"));
        assert_eq!(kinds("SELECT/**/1/**/FROM/**/t"), ["select"]);
        // A comment really hides what follows, for SQLite too.
        assert!(reads("SELECT 1 -- ; DROP TABLE t"));
        assert_eq!(kinds("SELECT 1 /* ; DROP TABLE t */"), ["select"]);
        // SQLite does not nest comments: the second `*/` is outside.
        assert!(!classify("SELECT 1 /* a /* b */ */").parsed);
    }

    #[test]
    fn no_backslash_escapes_as_in_sqlite() {
        // For SQLite `'a\'` is a whole string, so the DELETE runs.
        let facts = classify(r"SELECT 'a\'; DELETE FROM t; --'");
        assert!(facts.parsed, "{:?}", facts.error);
        assert_eq!(facts.kind_names(), ["select", "delete"]);
        assert!(!facts.read_only);
        assert_eq!(facts.tables, ["t"]);
        // Doubled quotes are SQLite's escape.
        assert_eq!(kinds("SELECT 'it''s; DROP TABLE t'"), ["select"]);
        assert!(reads("SELECT 'it''s; DROP TABLE t'"));
    }

    #[test]
    fn dml_behind_with_is_a_write() {
        for (sql, kind) in [
            ("WITH x AS (SELECT 1) DELETE FROM t", "delete"),
            (
                "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
                "insert",
            ),
            ("WITH x AS (SELECT 1) UPDATE t SET a = 1", "update"),
            (
                "with recursive x(n) as (select 1) delete from t where a in (select n from x)",
                "delete",
            ),
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert_eq!(facts.kind_names(), [kind], "{sql}");
            assert!(!facts.read_only, "{sql} must not be read-only");
            assert_eq!(facts.tables, ["t"], "{sql}: CTE names are not tables");
        }
    }

    #[test]
    fn dml_target_shadowed_by_a_cte_is_the_real_table() {
        // SQLite deletes from the real `t` here, whatever the CTE says.
        assert_eq!(tables("WITH t AS (SELECT 1 AS a) DELETE FROM t"), ["t"]);
        assert_eq!(
            tables("WITH t AS (SELECT 5) INSERT INTO t SELECT * FROM t"),
            ["t"]
        );
        assert_eq!(tables("WITH t AS (SELECT 1) UPDATE t SET a = 2"), ["t"]);
    }

    #[test]
    fn dml_nested_anywhere_is_a_write() {
        // sqlparser accepts DML as a sub-query; SQLite would refuse it, but a
        // read-only answer would still be a lie.
        for sql in [
            "SELECT * FROM (DELETE FROM t RETURNING *)",
            "SELECT * FROM (WITH x AS (SELECT 1) DELETE FROM t RETURNING *)",
            "SELECT (WITH x AS (SELECT 1) DELETE FROM t)",
            "SELECT * FROM u WHERE a IN (WITH x AS (SELECT 1) UPDATE t SET a = 1 RETURNING a)",
            "SELECT 1 UNION SELECT * FROM (INSERT INTO t VALUES (1) RETURNING *)",
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert_eq!(facts.kind_names(), ["select"], "{sql}");
            assert!(!facts.read_only, "{sql} must not be read-only");
            assert!(
                facts.tables.contains(&"t".to_owned()),
                "{sql}: {:?}",
                facts.tables
            );
        }
        // Under EXPLAIN nothing runs.
        assert!(reads("EXPLAIN SELECT * FROM (DELETE FROM t RETURNING *)"));
    }

    #[test]
    fn writing_functions_are_read_only_sql_but_recorded() {
        let facts = classify("SELECT writefile('/tmp/x', 'y'), readfile('/etc/passwd')");
        assert!(facts.read_only);
        assert_eq!(facts.functions, ["readfile", "writefile"]);
        assert!(facts.calls_function("WriteFile"));
        let facts = classify("select LOAD_EXTENSION('/tmp/evil.so', 'init')");
        assert!(facts.read_only);
        assert_eq!(facts.functions, ["load_extension"]);
        assert_eq!(
            functions("SELECT \"load_extension\"('x')"),
            ["load_extension"]
        );
        assert_eq!(functions("SELECT sqlite_version()"), ["sqlite_version"]);
    }

    #[test]
    fn functions_are_found_everywhere() {
        let sql = "SELECT upper(name), count(*) OVER (PARTITION BY lower(a)) FROM t \
                   WHERE length(b) > abs(?1) AND c IN (SELECT max(x) FROM u GROUP BY hex(y)) \
                   ORDER BY random() LIMIT coalesce(:n, 10)";
        assert_eq!(
            functions(sql),
            ["abs", "coalesce", "count", "hex", "length", "lower", "max", "random", "upper"]
        );
        assert_eq!(
            functions("INSERT INTO t VALUES (datetime('now'), json_object('a', 1))"),
            ["datetime", "json_object"]
        );
        assert_eq!(
            functions("UPDATE t SET a = trim(b) WHERE iif(c, 1, 0)"),
            ["iif", "trim"]
        );
    }

    #[test]
    fn table_valued_functions_are_functions_not_tables() {
        let facts = classify("SELECT * FROM json_each('[1,2]') JOIN t ON 1");
        assert_eq!(facts.tables, ["t"]);
        assert_eq!(facts.functions, ["json_each"]);
        let facts = classify("SELECT name FROM pragma_table_info('users')");
        assert!(facts.read_only);
        assert!(facts.tables.is_empty());
        assert_eq!(facts.functions, ["pragma_table_info"]);
    }

    #[test]
    fn pragma_reads_and_writes() {
        for sql in [
            "PRAGMA table_info(t)",
            "PRAGMA table_info('t')",
            "PRAGMA table_info = t",
            "pragma TABLE_XINFO(\"t\")",
            "PRAGMA index_list(t)",
            "PRAGMA foreign_key_list(t)",
            "PRAGMA user_version",
            "PRAGMA journal_mode",
            "PRAGMA main.journal_mode",
            "PRAGMA integrity_check",
            "PRAGMA quick_check(10)",
            "PRAGMA database_list",
            "PRAGMA table_list",
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert_eq!(facts.kind_names(), ["pragma"], "{sql}");
            assert!(facts.read_only, "{sql} reads");
        }
        for sql in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA journal_mode(DELETE)",
            "PRAGMA main.journal_mode = 'wal'",
            "PRAGMA foreign_keys=ON",
            "PRAGMA foreign_keys = off",
            "PRAGMA user_version = 3",
            "PRAGMA cache_size = -2000",
            "PRAGMA cache_size = +2000",
            "PRAGMA writable_schema = 1",
            "PRAGMA query_only = 0",
            "PRAGMA trusted_schema(1)",
            "PRAGMA optimize",
            "PRAGMA shrink_memory",
            "PRAGMA incremental_vacuum",
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "PRAGMA no_such_pragma",
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert_eq!(facts.kind_names(), ["pragma"], "{sql}");
            assert!(!facts.read_only, "{sql} writes");
        }
    }

    #[test]
    fn pragma_table_argument_is_a_table() {
        assert_eq!(tables("PRAGMA table_info(Users)"), ["users"]);
        assert_eq!(tables("PRAGMA table_info('Users')"), ["users"]);
        assert_eq!(tables("PRAGMA main.table_info(users)"), ["main.users"]);
        assert!(tables("PRAGMA index_info(idx)").is_empty());
        assert!(tables("PRAGMA journal_mode = WAL").is_empty());
        assert!(!classify("PRAGMA table_info(").parsed);
        assert!(!classify("PRAGMA cache_size = -x").parsed);
    }

    #[test]
    fn attach_and_detach_are_never_read_only() {
        for (sql, kind) in [
            ("ATTACH DATABASE '/tmp/other.db' AS other", "attach"),
            ("ATTACH '/tmp/other.db' AS other", "attach"),
            ("attach ':memory:' as m", "attach"),
            ("DETACH DATABASE other", "detach"),
            ("DETACH other", "detach"),
        ] {
            assert_eq!(kinds(sql), [kind], "{sql}");
            assert!(!reads(sql), "{sql}");
            assert!(
                tables(sql).is_empty(),
                "{sql}: a schema name is not a table"
            );
        }
        assert!(!reads("SELECT 1; ATTACH 'x.db' AS x"));
    }

    #[test]
    fn explain_reads_but_names_what_it_explains() {
        let facts = classify("EXPLAIN DELETE FROM t");
        assert!(facts.parsed);
        assert!(facts.read_only);
        assert_eq!(
            facts.statements,
            [StatementKind::Explain(Box::new(StatementKind::Delete))]
        );
        assert_eq!(facts.kind_names(), ["explain"]);
        assert_eq!(facts.statements[0].to_string(), "explain delete");
        assert_eq!(facts.tables, ["t"]);
        assert_eq!(
            kinds("EXPLAIN QUERY PLAN SELECT * FROM t"),
            ["explain select"]
        );
        assert!(reads("EXPLAIN QUERY PLAN SELECT * FROM t"));
        assert_eq!(
            kinds("EXPLAIN WITH x AS (SELECT 1) DELETE FROM t"),
            ["explain delete"]
        );
        assert!(reads("EXPLAIN WITH x AS (SELECT 1) DELETE FROM t"));
        assert_eq!(kinds("EXPLAIN DROP TABLE t"), ["explain drop"]);
        // Not SQLite, and in other databases it runs the statement.
        let facts = classify("EXPLAIN ANALYZE SELECT 1");
        assert!(!facts.read_only, "{facts:?}");
        // An EXPLAIN next to a real write does not hide it.
        assert!(!reads("EXPLAIN SELECT 1; DELETE FROM t"));
    }

    #[test]
    fn several_statements_are_judged_one_by_one() {
        let facts = classify("SELECT 1; DROP TABLE t");
        assert_eq!(facts.kind_names(), ["select", "drop"]);
        assert!(!facts.read_only);
        assert_eq!(facts.tables, ["t"]);
        assert!(reads("SELECT 1; SELECT 2;"));
        assert_eq!(kinds("SELECT 1;;SELECT 2"), ["select", "select"]);
        assert!(!reads("SELECT * FROM a;\nINSERT INTO b VALUES (1)"));
    }

    #[test]
    fn replace_and_upsert_have_kinds_of_their_own() {
        assert_eq!(kinds("REPLACE INTO t VALUES (1)"), ["replace"]);
        assert_eq!(kinds("INSERT OR REPLACE INTO t VALUES (1)"), ["replace"]);
        assert_eq!(
            kinds("INSERT INTO t(a) VALUES (1) ON CONFLICT(a) DO UPDATE SET a = excluded.a"),
            ["upsert"]
        );
        assert_eq!(
            kinds("INSERT INTO t(a) VALUES (1) ON CONFLICT DO NOTHING"),
            ["insert"]
        );
        assert_eq!(kinds("INSERT OR IGNORE INTO t VALUES (1)"), ["insert"]);
        assert_eq!(kinds("INSERT INTO t DEFAULT VALUES"), ["insert"]);
        assert_eq!(kinds("UPDATE OR REPLACE t SET a = 1"), ["update"]);
        for sql in [
            "REPLACE INTO t VALUES (1)",
            "INSERT OR REPLACE INTO t VALUES (1)",
            "INSERT INTO t(a) VALUES (1) ON CONFLICT(a) DO UPDATE SET a = 2",
            "INSERT INTO t VALUES (1) RETURNING *",
        ] {
            assert!(!reads(sql), "{sql}");
            assert_eq!(tables(sql), ["t"], "{sql}");
        }
    }

    #[test]
    fn ddl_kinds_and_tables() {
        assert_eq!(kinds("CREATE TEMP TABLE x(a)"), ["create_table"]);
        assert!(!reads("CREATE TEMP TABLE x(a)"));
        assert_eq!(tables("CREATE TEMPORARY TABLE x(a)"), ["x"]);
        assert_eq!(tables("CREATE TABLE t2 AS SELECT * FROM t"), ["t", "t2"]);
        assert_eq!(
            kinds(
                "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 name TEXT NOT NULL DEFAULT (lower('x'))) WITHOUT ROWID"
            ),
            ["create_table"]
        );
        assert_eq!(
            kinds("CREATE VIRTUAL TABLE v USING fts5(a)"),
            ["create_table"]
        );
        assert_eq!(tables("CREATE VIRTUAL TABLE v USING fts5(a)"), ["v"]);
        assert_eq!(
            kinds("CREATE UNIQUE INDEX IF NOT EXISTS i ON t(a)"),
            ["create_index"]
        );
        assert_eq!(tables("CREATE INDEX i ON t(a)"), ["t"]);
        assert_eq!(kinds("CREATE VIEW v AS SELECT * FROM t"), ["create_view"]);
        assert_eq!(tables("CREATE VIEW v AS SELECT * FROM t"), ["t", "v"]);
        let trigger = "CREATE TRIGGER tr AFTER UPDATE ON t FOR EACH ROW WHEN new.a > 1 \
                       BEGIN UPDATE u SET b = 1; INSERT INTO v VALUES (new.a); END";
        assert_eq!(kinds(trigger), ["create_trigger"]);
        assert_eq!(tables(trigger), ["t", "u", "v"]);
        assert!(!reads(trigger));
        assert_eq!(kinds("DROP TABLE IF EXISTS main.t"), ["drop"]);
        assert_eq!(tables("DROP TABLE IF EXISTS main.t"), ["main.t"]);
        assert_eq!(tables("DROP TABLE a, B"), ["a", "b"]);
        assert_eq!(tables("DROP VIEW v"), ["v"]);
        assert_eq!(kinds("DROP INDEX i"), ["drop"]);
        assert!(tables("DROP INDEX i").is_empty());
        assert_eq!(kinds("DROP TRIGGER tr"), ["drop"]);
        assert_eq!(kinds("ALTER TABLE t RENAME TO u"), ["alter_table"]);
        assert_eq!(tables("ALTER TABLE t RENAME TO u"), ["t", "u"]);
        assert_eq!(tables("ALTER TABLE t ADD COLUMN c TEXT"), ["t"]);
        for sql in ["DROP TABLE t", "DROP INDEX i", "ALTER TABLE t ADD COLUMN c"] {
            assert!(!reads(sql), "{sql}");
        }
    }

    #[test]
    fn transactions_count_as_writes() {
        for sql in [
            "BEGIN",
            "BEGIN IMMEDIATE",
            "BEGIN EXCLUSIVE TRANSACTION",
            "COMMIT",
            "END",
            "ROLLBACK",
            "SAVEPOINT a",
            "RELEASE a",
            "RELEASE SAVEPOINT a",
            "ROLLBACK TO a",
        ] {
            assert_eq!(kinds(sql), ["transaction"], "{sql}");
            assert!(!reads(sql), "{sql}");
        }
        assert!(!reads("BEGIN; SELECT 1; COMMIT"));
    }

    #[test]
    fn maintenance_statements() {
        for sql in [
            "VACUUM",
            "VACUUM main",
            "VACUUM INTO '/tmp/copy.db'",
            "vacuum main into 'x'",
        ] {
            assert_eq!(kinds(sql), ["vacuum"], "{sql}");
            assert!(!reads(sql), "{sql}");
        }
        assert_eq!(kinds("ANALYZE"), ["analyze"]);
        assert!(!reads("ANALYZE t"));
        // Known sqlparser gap: fails closed.
        assert!(matches!(refused("REINDEX"), SqlError::Parse(_)));
    }

    #[test]
    fn tables_from_joins_subqueries_and_ctes() {
        assert_eq!(
            tables(
                "SELECT * FROM (SELECT * FROM a JOIN b ON a.id = b.id) \
                 WHERE x IN (SELECT y FROM c) AND EXISTS (SELECT 1 FROM d) \
                 AND (SELECT max(z) FROM e) > 1"
            ),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(
            tables("SELECT * FROM a LEFT OUTER JOIN b USING (id) NATURAL JOIN c, d"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            tables("SELECT 1 FROM a UNION SELECT 2 FROM b EXCEPT SELECT 3 FROM c"),
            ["a", "b", "c"]
        );
        assert_eq!(
            tables(
                "WITH x AS (SELECT * FROM src), y AS (SELECT * FROM x) SELECT * FROM y JOIN other"
            ),
            ["other", "src"]
        );
        assert_eq!(
            tables("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT x FROM c"),
            Vec::<String>::new()
        );
        // SQLite lets a CTE refer to a later one of the same WITH.
        assert!(tables("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a").is_empty());
        // A CTE hides a table only inside its own query.
        assert_eq!(
            tables("SELECT * FROM secret UNION SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret)"),
            ["secret"]
        );
        assert_eq!(
            tables("SELECT (WITH s AS (SELECT 1) SELECT * FROM s), * FROM s"),
            ["s"]
        );
        // A qualified name is never a CTE.
        assert_eq!(
            tables("WITH x AS (SELECT 1) SELECT * FROM main.x"),
            ["main.x"]
        );
        assert_eq!(
            tables("UPDATE t SET a = (SELECT b FROM u) FROM v WHERE t.id = v.id"),
            ["t", "u", "v"]
        );
        assert_eq!(
            tables("DELETE FROM t WHERE a IN (SELECT a FROM u)"),
            ["t", "u"]
        );
        assert_eq!(tables("INSERT INTO t SELECT * FROM u"), ["t", "u"]);
        assert_eq!(
            tables("SELECT name FROM sqlite_master WHERE type = 'table'"),
            ["sqlite_master"]
        );
        assert!(tables("SELECT 1").is_empty());
        assert!(tables("VALUES (1), (2)").is_empty());
    }

    #[test]
    fn quoted_and_qualified_identifiers() {
        assert_eq!(
            tables("SELECT \"My Table\".x FROM \"My Table\""),
            ["my table"]
        );
        assert_eq!(tables("SELECT * FROM [odd name]"), ["odd name"]);
        assert_eq!(tables("SELECT * FROM `Q`"), ["q"]);
        assert_eq!(tables("SELECT * FROM main.\"T\""), ["main.t"]);
        assert_eq!(
            tables("SELECT * FROM \"Main\".[T] JOIN temp.u"),
            ["main.t", "temp.u"]
        );
        // Deduplicated across spellings.
        assert_eq!(tables("SELECT * FROM t, T, \"t\", [t], `T`"), ["t"]);
        // ASCII-only folding, as in SQLite.
        assert_eq!(tables("SELECT * FROM \"Ünïcode\""), ["Ünïcode"]);
    }

    #[test]
    fn touches_table_sees_through_schemas() {
        let facts = classify("SELECT * FROM main.Secret JOIN other.t");
        assert!(facts.touches_table("secret"));
        assert!(facts.touches_table("MAIN.secret"));
        assert!(!facts.touches_table("temp.secret"));
        assert!(facts.touches_table("t"));
        assert!(!facts.touches_table("main"));
        assert!(!facts.touches_table("ecret"));
    }

    #[test]
    fn empty_input_fails_closed() {
        for sql in [
            "",
            "   ",
            "\n\t",
            ";",
            ";;",
            "-- only a comment",
            "/* nothing */",
            " ; -- x",
        ] {
            assert_eq!(refused(sql), SqlError::Empty, "{sql:?}");
        }
    }

    #[test]
    fn garbage_fails_closed() {
        for sql in [
            "hello world",
            "SELEC 1",
            "SELECT FROM WHERE",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT 1 /* unterminated",
            "DELETE",
            "SELECT * FROM t WHERE",
            "\u{0}\u{1}\u{2}",
            "SELECT 1; garbage",
            "}{",
            "SELECT (1",
        ] {
            let error = refused(sql);
            assert!(
                matches!(error, SqlError::Parse(_) | SqlError::Tokenize(_)),
                "{sql:?}: {error:?}"
            );
            assert!(!error.to_string().is_empty());
        }
        // A write hidden behind something that does not parse is refused whole.
        refused("DELETE FROM t; SELEC 1");
    }

    #[test]
    fn size_limit() {
        let at_limit = format!("SELECT 1{}", " ".repeat(MAX_SQL_BYTES - 8));
        assert_eq!(at_limit.len(), MAX_SQL_BYTES);
        assert!(classify(&at_limit).parsed);
        let over = format!("{at_limit} ");
        assert_eq!(
            refused(&over),
            SqlError::TooLarge {
                len: MAX_SQL_BYTES + 1,
                max: MAX_SQL_BYTES
            }
        );
        assert!(refused(&over).to_string().contains("too large"));
    }

    #[test]
    fn ten_thousand_nested_parentheses_fail_cleanly() {
        let too_deep = SqlError::TooDeep { max: MAX_NESTING };
        let error = on_small_stack(|| {
            let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
            refused(&sql)
        });
        assert_eq!(error, too_deep);
        let error = on_small_stack(|| {
            let sql = format!(
                "SELECT * FROM {}t{}",
                "(SELECT * FROM ".repeat(1_000),
                ")".repeat(1_000)
            );
            refused(&sql)
        });
        assert_eq!(error, too_deep);
        let error = on_small_stack(|| refused(&"(".repeat(60_000)));
        assert_eq!(error, too_deep);
    }

    /// Found by the `sql` fuzz target: 30 parentheses with statements inside
    /// overflowed a 2 MiB stack in a debug build, under sqlparser's own
    /// recursion limit. At the nesting limit, the worst shapes the fuzzer
    /// found parse or fail cleanly on that stack.
    #[test]
    fn nesting_is_bounded_below_what_the_stack_holds() {
        let fuzzed = "UPDATE((((UPDATE  (((((((((((  ((((((UPDATE  ((((((((UPDATE (h abq02_";
        assert_eq!(
            on_small_stack(move || refused(fuzzed)),
            SqlError::TooDeep { max: MAX_NESTING }
        );
        for shape in [
            "(",
            "(UPDATE ",
            "(SELECT * FROM ",
            "abs(",
            "(SELECT (",
            "EXISTS (SELECT ",
        ] {
            // Exactly MAX_NESTING parentheses deep, whatever the shape holds.
            let per = shape.matches('(').count();
            let repeats = MAX_NESTING / per;
            let sql = format!(
                "SELECT {}1{}",
                shape.repeat(repeats),
                ")".repeat(repeats * per)
            );
            // Surviving the 2 MiB stack is the point; at the limit the depth
            // check itself must not be what refuses it.
            let facts = on_small_stack(move || classify(&sql));
            assert!(
                !matches!(facts.error, Some(SqlError::TooDeep { .. })),
                "{shape}: {facts:?}"
            );
        }
        // Realistic nesting still parses.
        let facts = classify(
            "SELECT round(sum(coalesce(o.total, 0)), 2) FROM orders o \
             WHERE o.customer_id IN (SELECT id FROM customers WHERE city IN \
             (SELECT city FROM cities WHERE country = (SELECT 'NZ')))",
        );
        assert!(facts.parsed, "{:?}", facts.error);
    }

    #[test]
    fn long_operator_chains_are_bounded() {
        // Within the budget: parses, is walked and dropped on a 2 MiB stack.
        let facts = on_small_stack(|| {
            let sql = format!("SELECT {}1 FROM t", "1+".repeat(MAX_OPERATOR_TOKENS - 3));
            classify(&sql)
        });
        assert!(facts.parsed, "{:?}", facts.error);
        // Over it, in the shapes sqlparser builds left-deep without recursion.
        for shape in ["1+", "a OR ", "x IS NULL AND ", "1 UNION SELECT ", "a || "] {
            let sql = format!("SELECT {}1", shape.repeat(MAX_OPERATOR_TOKENS + 1));
            let error = on_small_stack(move || refused(&sql));
            assert_eq!(
                error,
                SqlError::TooComplex {
                    max: MAX_OPERATOR_TOKENS
                },
                "{shape}"
            );
        }
        // Even if the chain is followed by a syntax error (dropped inside sqlparser).
        let sql = format!("SELECT {}1 )", "1+".repeat(30_000));
        assert_eq!(
            on_small_stack(move || refused(&sql)),
            SqlError::TooComplex {
                max: MAX_OPERATOR_TOKENS
            }
        );
    }

    #[test]
    fn bulk_insert_is_not_complex() {
        let rows: Vec<String> = (0..1_800)
            .map(|i| format!("({i}, -{i}.5, NULL, 'n{i}', TRUE)"))
            .collect();
        let sql = format!(
            "INSERT INTO points (id, x, note, label, ok) VALUES {}",
            rows.join(",")
        );
        assert!(sql.len() <= MAX_SQL_BYTES, "{}", sql.len());
        let facts = classify(&sql);
        assert!(facts.parsed, "{:?}", facts.error);
        assert_eq!(facts.kind_names(), ["insert"]);
        assert_eq!(facts.tables, ["points"]);
        // More signed literals than the operator budget: signs do not count.
        let rows = vec!["(-1, -2, +3)"; MAX_OPERATOR_TOKENS / 2];
        let facts = classify(&format!("INSERT INTO t VALUES {}", rows.join(",")));
        assert!(facts.parsed, "{:?}", facts.error);
    }

    #[test]
    fn other_statements_are_named_and_never_read_only() {
        for (sql, name) in [
            ("DESCRIBE t", "describe"),
            ("SET x = 1", "set"),
            ("TRUNCATE TABLE t", "truncate"),
            (
                "MERGE INTO t USING u ON 1 WHEN MATCHED THEN DELETE",
                "merge",
            ),
            ("ANALYZE", "analyze"),
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert_eq!(facts.kind_names(), [name], "{sql}");
            assert!(!facts.read_only, "{sql}");
        }
        assert!(matches!(
            &classify("SET x = 1").statements[0],
            StatementKind::Other(n) if n == "set"
        ));
    }

    #[test]
    fn facts_serialize_for_audit() {
        let facts = classify("EXPLAIN DELETE FROM t; SELECT f(x) FROM u");
        let json = serde_json::to_value(&facts).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "parsed": true,
                "error": null,
                "statements": ["explain delete", "select"],
                "read_only": true,
                "tables": ["t", "u"],
                "functions": ["f"],
            })
        );
        let json = serde_json::to_value(classify("")).expect("serialize");
        assert_eq!(json["error"], "no SQL statement");
        assert_eq!(json["parsed"], false);
    }

    #[test]
    fn sqlite_syntax_sqlparser_handles() {
        for sql in [
            "SELECT * FROM t LIMIT 10 OFFSET 5",
            "SELECT * FROM t LIMIT 5, 10",
            "SELECT a ->> '$.x' FROM t",
            "SELECT CAST(a AS INTEGER), a COLLATE NOCASE FROM t",
            "SELECT * FROM t WHERE a GLOB 'x*' OR a REGEXP 'y' OR a MATCH 'z'",
            "SELECT ?1, :name, @x, $y, ?",
            "SELECT x'0102'",
            "SELECT * FROM t WHERE b NOTNULL",
            "SELECT 1 WHERE 1 IN ()",
            "SELECT a FROM t GROUP BY a HAVING count(*) > 1",
            "SELECT CASE WHEN a THEN b ELSE c END FROM t",
            "SELECT group_concat(a, ',') FROM t",
            "SELECT * FROM t ORDER BY a NULLS LAST",
        ] {
            let facts = classify(sql);
            assert!(facts.parsed, "{sql}: {:?}", facts.error);
            assert!(facts.read_only, "{sql}");
        }
    }

    #[test]
    fn wrapper_dialect_parses_like_sqlite_dialect() {
        // Everything the wrapper does not intercept must parse exactly as with
        // `SQLiteDialect`, so no SQLite-specific behaviour is lost.
        for sql in [
            "SELECT * FROM \"a\" JOIN [b] JOIN `c` WHERE x GLOB 'y' LIMIT 1, 2",
            "REPLACE INTO t VALUES (1)",
            "INSERT OR IGNORE INTO t DEFAULT VALUES",
            "UPDATE OR ROLLBACK t SET a = $x WHERE b NOTNULL",
            "BEGIN IMMEDIATE",
            "CREATE TABLE t (a INTEGER PRIMARY KEY ASC, b TEXT) WITHOUT ROWID",
            "CREATE VIRTUAL TABLE v USING fts5(a, b)",
            "SELECT count(*) FILTER (WHERE a > 1) FROM t WHERE a IN ()",
            "SELECT trim(a, 'x'), 1_000 FROM t",
            "ATTACH 'x.db' AS x",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "SELECT 'a\\'",
        ] {
            let ours = Parser::parse_sql(&DrawbridgeSqlite, sql).map(|s| format!("{s:?}"));
            let theirs = Parser::parse_sql(&SQLiteDialect {}, sql).map(|s| format!("{s:?}"));
            assert_eq!(ours.ok(), theirs.ok(), "{sql}");
        }
    }

    #[test]
    fn variant_names_are_snake_case() {
        let statements =
            Parser::parse_sql(&SQLiteDialect {}, "ANALYZE t; TRUNCATE TABLE t").expect("parses");
        let names: Vec<String> = statements.iter().map(variant_name).collect();
        assert_eq!(names, ["analyze", "truncate"]);
    }
}
