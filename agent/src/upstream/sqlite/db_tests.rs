//! Unit tests of the SQLite layer: what each call refuses, and why.

use super::*;

/// A temporary directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "drawbridge-sqlite-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample(tag: &str) -> (Dir, SqliteDb) {
    let dir = Dir::new(tag);
    let db = SqliteDb::open(&dir.0.join("demo.db"), false, Limits::default()).expect("open");
    (dir, db)
}

fn count(db: &SqliteDb, table: &str) -> i64 {
    let rows = db
        .read_query(
            None,
            &format!("SELECT count(*) AS n FROM {table}"),
            Run::Pooled,
        )
        .expect("count");
    rows.rows[0]["n"].as_i64().expect("n")
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, SqliteError>) -> String {
    match r {
        Err(SqliteError::Refused(msg)) => msg,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_created_with_the_sample_dataset() {
    let (dir, db) = sample("create");
    assert!(db.created_sample());
    let tables = db.list_tables(None, Run::Pooled).expect("list");
    assert_eq!(tables.tables, ["customers", "orders", "products"]);
    assert!(tables.views.is_empty());
    assert_eq!(count(&db, "customers"), 12);
    assert_eq!(count(&db, "products"), 10);
    assert_eq!(count(&db, "orders"), 25);
    // No leftover partial file next to it.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["demo.db"]);
    drop(db);
    // Opened again, it is kept as it is.
    let again = SqliteDb::open(&dir.0.join("demo.db"), false, Limits::default()).expect("open");
    assert!(!again.created_sample());
    assert_eq!(count(&again, "orders"), 25);
}

#[test]
fn read_query_returns_rows_as_objects() {
    let (_dir, db) = sample("rows");
    let rows = db
        .read_query(
            None,
            "SELECT c.id, c.name, o.id, o.quantity * p.price AS total, NULL AS empty, X'00FF' AS raw \
             FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id \
             WHERE o.id = 3",
            Run::Pooled,
        )
        .expect("query");
    assert_eq!(
        rows.columns,
        ["id", "name", "id_2", "total", "empty", "raw"]
    );
    assert_eq!(rows.row_count, 1);
    let r = &rows.rows[0];
    assert_eq!(r["id"], 2);
    assert_eq!(r["name"], "Alan Turing");
    assert_eq!(r["id_2"], 3);
    assert_eq!(r["total"], 279.99);
    assert_eq!(r["empty"], Value::Null);
    assert_eq!(r["raw"], "X'00FF'");
    // WITH … SELECT, VALUES and table-valued pragmas are reads too.
    assert_eq!(
        db.read_query(
            None,
            "WITH big AS (SELECT * FROM products WHERE price > 100) SELECT count(*) AS n FROM big",
            Run::Pooled,
        )
        .expect("with")
        .rows[0]["n"],
        5
    );
    assert_eq!(
        db.read_query(None, "VALUES (1), (2)", Run::Pooled)
            .expect("values")
            .row_count,
        2
    );
    assert_eq!(
        db.read_query(
            None,
            "SELECT name FROM pragma_table_info('orders')",
            Run::Pooled,
        )
        .expect("pragma function")
        .row_count,
        6
    );
    // A trailing semicolon and comment are fine.
    assert_eq!(
        db.read_query(None, "SELECT 1; -- done", Run::Pooled)
            .expect("tail")
            .row_count,
        1
    );
}

#[test]
fn read_query_refuses_anything_that_is_not_a_read() {
    let (_dir, db) = sample("readonly");
    let cases = [
        // Writes, however they are spelled.
        "DELETE FROM orders",
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "WITH x AS (SELECT 1) INSERT INTO orders SELECT * FROM orders",
        "  \n-- a comment first\n  update products set price = 0",
        "INSERT INTO customers (name, email, city, country, signed_up) VALUES ('x','x','x','x','x') RETURNING id",
        "REPLACE INTO products (id, name, category, price) VALUES (1, 'x', 'x', 0)",
        // More than one statement.
        "SELECT 1; DROP TABLE orders",
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM orders",
        // Schema changes and everything else that is not a query.
        "DROP TABLE orders",
        "CREATE TABLE t (a)",
        "CREATE TEMP TABLE t (a)",
        "CREATE VIEW v AS SELECT 1",
        "ALTER TABLE orders ADD COLUMN x",
        "ATTACH DATABASE ':memory:' AS other",
        "ATTACH DATABASE '/tmp/drawbridge-attack.db' AS other",
        "DETACH DATABASE main",
        "PRAGMA query_only = 0",
        "PRAGMA writable_schema = 1",
        "PRAGMA table_info(orders)",
        "VACUUM",
        "VACUUM INTO '/tmp/drawbridge-vacuum-copy.db'",
        "REINDEX",
        "ANALYZE",
        "BEGIN",
        "SAVEPOINT s",
        "",
        "-- only a comment",
    ];
    for sql in cases {
        let msg = refused(db.read_query(None, sql, Run::Pooled));
        assert!(
            msg.starts_with("read_query runs one read-only statement"),
            "{sql}: {msg}"
        );
    }
    assert!(!Path::new("/tmp/drawbridge-vacuum-copy.db").exists());
    assert_eq!(count(&db, "orders"), 25);
    assert_eq!(count(&db, "products"), 10);
    let msg = refused(db.read_query(None, "WITH x AS (SELECT 1) DELETE FROM orders", Run::Pooled));
    assert!(msg.contains("DELETE from orders"), "{msg}");
    let msg = refused(db.read_query(None, "ATTACH DATABASE ':memory:' AS other", Run::Pooled));
    assert!(msg.contains("ATTACH"), "{msg}");
}

#[test]
fn sql_errors_carry_sqlites_message() {
    let (_dir, db) = sample("errors");
    let err = db
        .read_query(None, "SELECT * FROM nowhere", Run::Pooled)
        .expect_err("no table");
    assert!(matches!(err, SqliteError::Sql(_)), "{err:?}");
    assert!(err.to_string().contains("no such table: nowhere"), "{err}");
    let err = db
        .read_query(None, "SELEKT 1", Run::Pooled)
        .expect_err("syntax");
    assert!(err.to_string().contains("syntax error"), "{err}");
    let err = db
        .write_query("INSERT INTO orders (id, customer_id, product_id, quantity, ordered_at, status) VALUES (1, 1, 1, 1, 'x', 'pending')")
        .expect_err("duplicate key");
    assert!(
        err.to_string().contains("UNIQUE constraint failed"),
        "{err}"
    );
}

#[test]
fn write_query_runs_data_writes_only() {
    let (_dir, db) = sample("write");
    let out = db
        .write_query("UPDATE products SET in_stock = in_stock + 1 WHERE category = 'office'")
        .expect("update");
    assert_eq!(out.affected_rows, 2);
    assert!(out.returning.is_none());
    let out = db
        .write_query("WITH old AS (SELECT id FROM orders WHERE status = 'returned') DELETE FROM orders WHERE id IN (SELECT id FROM old)")
        .expect("with delete");
    assert_eq!(out.affected_rows, 2);
    let out = db
        .write_query("INSERT INTO customers (name, email, city, country, signed_up) VALUES ('Linus', 'linus@example.com', 'Portland', 'USA', '2024-11-01') RETURNING id, name")
        .expect("insert returning");
    assert_eq!(out.affected_rows, 1);
    let returning = out.returning.expect("returning rows");
    assert_eq!(returning.rows[0]["id"], 13);
    assert_eq!(returning.rows[0]["name"], "Linus");
    assert_eq!(count(&db, "customers"), 13);

    let cases = [
        "SELECT * FROM orders",
        "DROP TABLE orders",
        "CREATE TABLE t (a)",
        "CREATE INDEX i ON orders(status)",
        "ALTER TABLE orders RENAME TO o",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA journal_mode = off",
        "PRAGMA foreign_keys = off",
        "VACUUM",
        "VACUUM INTO '/tmp/drawbridge-vacuum-copy2.db'",
        "REINDEX",
        "ANALYZE",
        "BEGIN",
        "COMMIT",
        "DELETE FROM orders; DROP TABLE customers",
        "CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM customers; END",
    ];
    for sql in cases {
        let msg = refused(db.write_query(sql));
        assert!(
            msg.starts_with("write_query runs one INSERT"),
            "{sql}: {msg}"
        );
    }
    // SQLite's own tables: refused by the authorizer or by SQLite itself.
    for sql in [
        "UPDATE sqlite_master SET sql = ''",
        "DELETE FROM sqlite_master",
        "INSERT INTO sqlite_master VALUES ('table', 'x', 'x', 0, 'CREATE TABLE x (a)')",
    ] {
        assert!(db.write_query(sql).is_err(), "{sql}");
    }
    assert!(!Path::new("/tmp/drawbridge-vacuum-copy2.db").exists());
    assert_eq!(count(&db, "orders"), 23);
    assert_eq!(
        db.list_tables(None, Run::Pooled).expect("list").tables,
        ["customers", "orders", "products"]
    );
}

#[test]
fn create_table_creates_tables_only() {
    let (_dir, db) = sample("create-table");
    assert_eq!(
        db.create_table(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)"
        )
        .expect("create"),
        "notes"
    );
    db.write_query("INSERT INTO notes (body) VALUES ('hello')")
        .expect("insert into the new table");
    assert_eq!(
        db.create_table("CREATE TABLE big_orders AS SELECT * FROM orders WHERE quantity > 1")
            .expect("create as select"),
        "big_orders"
    );
    assert_eq!(count(&db, "big_orders"), 7);
    let err = db
        .create_table("CREATE TABLE notes (a)")
        .expect_err("exists");
    assert!(err.to_string().contains("already exists"), "{err}");
    for sql in [
        "CREATE TEMP TABLE t (a)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE INDEX i ON orders(status)",
        "DROP TABLE orders",
        "INSERT INTO orders SELECT * FROM orders",
        "SELECT 1",
        "CREATE TABLE a (x); DROP TABLE orders",
        "ATTACH DATABASE ':memory:' AS other",
        "ANALYZE",
    ] {
        let msg = refused(db.create_table(sql));
        assert!(
            msg.starts_with("create_table runs one CREATE TABLE"),
            "{sql}: {msg}"
        );
    }
    let tables = db.list_tables(None, Run::Pooled).expect("list").tables;
    assert_eq!(
        tables,
        ["big_orders", "customers", "notes", "orders", "products"]
    );
}

#[test]
fn describe_table_cannot_be_injected() {
    let (_dir, db) = sample("describe");
    let d = db
        .describe_table(None, "orders", Run::Pooled)
        .expect("describe");
    assert_eq!(d.name, "orders");
    assert_eq!(d.kind, "table");
    assert_eq!(d.row_count, Some(25));
    let names: Vec<_> = d.columns.iter().map(|c| c["name"].clone()).collect();
    assert_eq!(
        names,
        [
            "id",
            "customer_id",
            "product_id",
            "quantity",
            "ordered_at",
            "status"
        ]
    );
    assert_eq!(d.columns[0]["pk"], 1);
    assert_eq!(d.foreign_keys.len(), 2);
    assert_eq!(d.indexes.len(), 1);
    assert!(d
        .sql
        .as_deref()
        .is_some_and(|s| s.starts_with("CREATE TABLE orders")));
    // Identifiers are case-insensitive in SQLite.
    assert_eq!(
        db.describe_table(None, "ORDERS", Run::Pooled)
            .expect("case")
            .name,
        "orders"
    );

    for attack in [
        "orders; DROP TABLE orders",
        "orders\"; DROP TABLE orders; --",
        "orders') UNION SELECT sql FROM sqlite_master --",
        "x' OR '1'='1",
        "\"orders\"",
        "",
    ] {
        match db.describe_table(None, attack, Run::Pooled) {
            Err(SqliteError::NoSuchTable(name)) => assert_eq!(name, attack),
            other => panic!("{attack:?}: {other:?}"),
        }
    }
    assert_eq!(count(&db, "orders"), 25);

    // A table whose name needs quoting is described through a quoted identifier.
    db.create_table("CREATE TABLE \"odd \"\"name\"\"; --\" (a INTEGER)")
        .expect("odd table");
    db.write_query("INSERT INTO \"odd \"\"name\"\"; --\" VALUES (1), (2)")
        .expect("insert");
    let d = db
        .describe_table(None, "odd \"name\"; --", Run::Pooled)
        .expect("odd");
    assert_eq!(d.row_count, Some(2));
    assert_eq!(d.columns.len(), 1);
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
}

#[test]
fn read_only_mode_opens_the_file_read_only() {
    let (dir, db) = sample("ro");
    drop(db);
    let path = dir.0.join("demo.db");
    let db = SqliteDb::open(&path, true, Limits::default()).expect("open read-only");
    assert!(db.is_read_only());
    assert_eq!(count(&db, "orders"), 25);
    assert!(db.describe_table(None, "customers", Run::Pooled).is_ok());
    assert_eq!(
        db.list_tables(None, Run::Pooled)
            .expect("list")
            .tables
            .len(),
        3
    );
    for err in [
        db.write_query("DELETE FROM orders").expect_err("write"),
        db.create_table("CREATE TABLE t (a)").expect_err("create"),
    ] {
        assert!(matches!(err, SqliteError::ReadOnly(_)), "{err:?}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    assert_eq!(count(&db, "orders"), 25);
    // A missing file is not created in read-only mode.
    let missing = dir.0.join("missing.db");
    let err = SqliteDb::open(&missing, true, Limits::default()).expect_err("missing");
    assert!(matches!(err, SqliteError::Missing(_)), "{err:?}");
    assert!(!missing.exists());
}

#[test]
fn the_reading_connection_cannot_write_even_without_the_authorizer() {
    // Defence in depth: the connection behind read_query is opened read-only
    // with query_only, whatever the authorizer would have said.
    let (_dir, db) = sample("reader");
    let conn = db.reader(None, Run::Pooled).expect("a reader");
    let err = conn
        .execute("DELETE FROM orders", [])
        .expect_err("read-only connection");
    assert!(
        err.to_string().contains("readonly")
            || err.to_string().contains("read-only")
            || err.to_string().contains("query_only"),
        "{err}"
    );
}

#[test]
fn results_and_time_are_bounded() {
    let dir = Dir::new("limits");
    let db = SqliteDb::open(
        &dir.0.join("demo.db"),
        false,
        Limits {
            max_rows: 5,
            timeout: Duration::from_millis(200),
            max_value_bytes: 10_000,
            max_answer_bytes: 2_000,
            readers: 2,
            max_calls_per_identity: 8,
            max_sessions_per_identity: 32,
        },
    )
    .expect("open");
    // Rows: five pass, a sixth is an error naming the flag.
    let rows = db
        .read_query(None, "SELECT * FROM orders LIMIT 5", Run::Pooled)
        .expect("rows");
    assert_eq!(rows.row_count, 5);
    let err = db
        .read_query(None, "SELECT * FROM orders", Run::Pooled)
        .expect_err("too many rows");
    assert!(matches!(err, SqliteError::TooManyRows(5)), "{err:?}");
    assert!(err.to_string().contains("--sqlite-max-rows"), "{err}");
    // The answer's size.
    let err = db
        .read_query(None, "SELECT printf('%.*c', 900, 'x') AS a, printf('%.*c', 900, 'y') AS b, printf('%.*c', 900, 'z') AS c", Run::Pooled)
        .expect_err("answer too large");
    assert!(matches!(err, SqliteError::AnswerTooLarge(2_000)), "{err:?}");
    assert!(
        err.to_string().contains("--sqlite-max-answer-bytes"),
        "{err}"
    );
    // A value's length, refused by SQLite before it allocates; in writes too.
    for sql in [
        "SELECT zeroblob(100000000)",
        "SELECT length(randomblob(20000))",
        "SELECT length(group_concat(name, printf('%.*c', 500, ' '))) FROM orders, customers",
    ] {
        let err = db.read_query(None, sql, Run::Pooled).expect_err(sql);
        assert!(
            matches!(err, SqliteError::ValueTooLarge(10_000)),
            "{sql}: {err:?}"
        );
        assert!(
            err.to_string().contains("--sqlite-max-value-bytes"),
            "{err}"
        );
    }
    let err = db
        .write_query("UPDATE orders SET status = printf('%.*c', 20000, 'x')")
        .expect_err("long value written");
    assert!(matches!(err, SqliteError::ValueTooLarge(_)), "{err:?}");
    // Time.
    let started = Instant::now();
    let err = db
        .read_query(None, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n", Run::Pooled)
        .expect_err("endless");
    assert!(matches!(err, SqliteError::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("--sqlite-timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The connection is usable afterwards.
    assert_eq!(count(&db, "orders"), 25);
}

#[test]
fn a_slow_read_does_not_hold_back_another_callers() {
    let dir = Dir::new("pool");
    let db = SqliteDb::open(
        &dir.0.join("demo.db"),
        false,
        Limits {
            timeout: Duration::from_secs(3),
            ..Limits::default()
        },
    )
    .expect("open");
    assert_eq!(db.readers(), 4);
    let endless =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";
    std::thread::scope(|s| {
        // Mallory runs three endless queries: she gets two connections (her
        // share of four), her third waits for one of them.
        let slow: Vec<_> = (0..3)
            .map(|_| s.spawn(|| db.read_query(Some("mallory"), endless, Run::Pooled)))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(
            db.list_tables(Some("owner"), Run::Pooled)
                .expect("list")
                .tables
                .len(),
            3
        );
        assert_eq!(count(&db, "orders"), 25);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        for t in slow {
            let err = t.join().expect("thread").expect_err("endless");
            assert!(
                matches!(err, SqliteError::Timeout(_) | SqliteError::Busy(_)),
                "{err:?}"
            );
        }
    });
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_at_open() {
    let dir = Dir::new("garbage");
    let path = dir.0.join("notes.txt");
    std::fs::write(
        &path,
        "this is not a database, it is a text file of some length",
    )
    .expect("write");
    let err = SqliteDb::open(&path, false, Limits::default()).expect_err("garbage");
    assert!(matches!(err, SqliteError::Open { .. }), "{err:?}");
}

#[test]
fn values_convert_to_json() {
    assert_eq!(to_json(ValueRef::Integer(-3)), -3);
    assert_eq!(to_json(ValueRef::Real(1.5)), 1.5);
    assert_eq!(to_json(ValueRef::Real(f64::INFINITY)), "inf");
    assert_eq!(to_json(ValueRef::Text(b"h\xffi")), "h\u{fffd}i");
    assert_eq!(to_json(ValueRef::Blob(&[1, 171])), "X'01AB'");
    assert_eq!(to_json(ValueRef::Null), Value::Null);
}

#[test]
fn a_write_waits_for_the_writing_connection_at_most_the_time_limit() {
    let dir = Dir::new("writer");
    let db = SqliteDb::open(
        &dir.0.join("demo.db"),
        false,
        Limits {
            timeout: Duration::from_secs(1),
            ..Limits::default()
        },
    )
    .expect("open");
    db.create_table("CREATE TABLE t (x INTEGER)")
        .expect("create");
    let endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) \
                   INSERT INTO t SELECT count(*) FROM n";
    // Three endless writes: one runs (and is stopped at the time limit),
    // the next runs after it, and the third cannot have waited for both.
    let errors: Vec<SqliteError> = std::thread::scope(|s| {
        let writes: Vec<_> = (0..3)
            .map(|_| s.spawn(|| db.write_query(endless)))
            .collect();
        writes
            .into_iter()
            .map(|t| t.join().expect("thread").expect_err("endless"))
            .collect()
    });
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, SqliteError::Timeout(_) | SqliteError::WriterBusy(_))),
        "{errors:?}"
    );
    let busy = errors
        .iter()
        .find(|e| matches!(e, SqliteError::WriterBusy(_)))
        .unwrap_or_else(|| panic!("no write gave up waiting: {errors:?}"));
    assert!(busy.to_string().contains("--sqlite-timeout"), "{busy}");
    assert_eq!(count(&db, "t"), 0, "nothing was written");
}

const ENDLESS: &str =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";

#[test]
fn a_read_now_answers_as_the_pool_does_or_gives_way() {
    let (_dir, db) = sample("now");
    let now = Run::Now(Duration::from_millis(20));
    // Small reads: the same answers as on the pool.
    let sql = "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status";
    let at_once = db.read_query(None, sql, now).expect("read now");
    let pooled = db.read_query(None, sql, Run::Pooled).expect("pooled");
    assert_eq!(at_once.rows, pooled.rows);
    assert_eq!(
        db.list_tables(None, now).expect("tables now").tables,
        db.list_tables(None, Run::Pooled).expect("tables").tables
    );
    assert_eq!(
        db.describe_table(None, "orders", now)
            .expect("describe now")
            .columns,
        db.describe_table(None, "orders", Run::Pooled)
            .expect("describe")
            .columns
    );
    // What the pool would refuse is refused at once, in the same words.
    let err = db
        .read_query(None, "DELETE FROM orders", now)
        .expect_err("a write");
    let pooled_err = db
        .read_query(None, "DELETE FROM orders", Run::Pooled)
        .expect_err("a write");
    assert!(matches!(err, SqliteError::Refused(_)), "{err:?}");
    assert_eq!(err.to_string(), pooled_err.to_string());
    let err = db.describe_table(None, "nope", now).expect_err("no table");
    assert!(matches!(err, SqliteError::NoSuchTable(_)), "{err:?}");
    // A read past its slice is interrupted and gives way (not a timeout:
    // nothing was answered), and the connection is usable afterwards.
    let err = db.read_query(None, ENDLESS, now).expect_err("endless");
    assert!(matches!(err, SqliteError::NotNow), "{err:?}");
    assert_eq!(count(&db, "orders"), 25);
}

#[test]
fn a_read_now_never_waits_for_a_connection_or_a_lock() {
    let dir = Dir::new("now-wait");
    let path = dir.0.join("plain.db");
    {
        // A rollback-journal database: a writer's exclusive lock keeps
        // readers out.
        let c = Connection::open(&path).expect("create");
        c.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .expect("fill");
    }
    let db = SqliteDb::open(
        &path,
        false,
        Limits {
            readers: 2,
            timeout: Duration::from_secs(3),
            ..Limits::default()
        },
    )
    .expect("open");
    let now = Run::Now(Duration::from_millis(20));
    std::thread::scope(|s| {
        // Mallory's endless read holds her share (one of two connections):
        // her next read does not wait for it, another caller's runs.
        let slow = s.spawn(|| db.read_query(Some("mallory"), ENDLESS, Run::Pooled));
        std::thread::sleep(Duration::from_millis(300));
        let err = db
            .read_query(Some("mallory"), "SELECT x FROM t", now)
            .expect_err("over her share");
        assert!(matches!(err, SqliteError::NotNow), "{err:?}");
        let rows = db
            .read_query(Some("owner"), "SELECT x FROM t", now)
            .expect("the owner's read");
        assert_eq!(rows.row_count, 1);
        let err = slow.join().expect("thread").expect_err("endless");
        assert!(matches!(err, SqliteError::Timeout(_)), "{err:?}");
    });
    // Another process holds the file's exclusive lock: the read gives way
    // at once instead of waiting (up to 5 s) for it.
    let other = Connection::open(&path).expect("other");
    other
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);")
        .expect("lock");
    let err = db
        .read_query(None, "SELECT x FROM t", now)
        .expect_err("locked");
    assert!(matches!(err, SqliteError::NotNow), "{err:?}");
    other.execute_batch("COMMIT").expect("commit");
    let rows = db
        .read_query(None, "SELECT x FROM t", now)
        .expect("unlocked");
    assert_eq!(rows.row_count, 2);
}
