//! Table tests of the sanitiser, the statement splitter and operation/collection extraction,
//! including hostile input, plus a seeded fuzz loop (no panic, bounded output, no leak).

use super::{
    next_statement, operation_and_collection, sanitize, split_statements, MAX_SANITIZED,
    TRUNCATED_MARKER,
};

#[test]
fn sanitize_table() {
    let cases: &[(&str, &str)] = &[
        ("SELECT 1", "SELECT ?"),
        (
            "select * from t where id = 42",
            "select * from t where id = ?",
        ),
        ("SELECT 'secret'", "SELECT ?"),
        ("SELECT 'it''s'", "SELECT ?"),
        ("SELECT E'a\\'b' , 1", "SELECT ? , ?"),
        ("SELECT e'\\\\' || 'x'", "SELECT ? || ?"),
        ("SELECT $$dollar 'quoted'$$", "SELECT ?"),
        ("SELECT $tag$ a $$ b $tag$ + 1", "SELECT ? + ?"),
        ("SELECT $1, $2::int", "SELECT $1, $2::int"),
        (
            "SELECT 1.5e3, .5, 1e-7, 0x1F, 1_000",
            "SELECT ?, ?, ?, ?, ?",
        ),
        (
            "SELECT B'0101', X'1F', N'nat', U&'d\\0061t'",
            "SELECT ?, ?, ?, ?",
        ),
        (
            "SELECT \"Quoted \"\"Id\"\"\", col1 FROM \"My Table\"",
            "SELECT \"Quoted \"\"Id\"\"\", col1 FROM \"My Table\"",
        ),
        ("SELECT TRUE, FALSE, NULL", "SELECT TRUE, FALSE, NULL"),
        ("SELECT a -- trailing secret\nFROM t", "SELECT a FROM t"),
        ("SELECT /* one /* nested */ two */ a", "SELECT a"),
        ("  SELECT\n\t a  ,\r\n b  ", "SELECT a , b"),
        ("WHERE id IN (1, 2, 3)", "WHERE id IN (?)"),
        ("WHERE id in ('a','b')", "WHERE id in (?)"),
        ("WHERE id NOT IN (1)", "WHERE id NOT IN (?)"),
        ("WHERE id IN ($1, $2)", "WHERE id IN ($1, $2)"),
        ("WHERE id IN (SELECT 1)", "WHERE id IN (SELECT ?)"),
        ("WHERE id IN ()", "WHERE id IN ()"),
        ("VALUES (1, 'a'), (2, 'b')", "VALUES (?, ?), (?, ?)"),
        ("SELECT interval '1 day'", "SELECT interval ?"),
        ("SELECT a$b, x1", "SELECT a$b, x1"),
        ("SELECT -5", "SELECT -?"),
        ("SELECT 'ünïcödé', ünï", "SELECT ?, ünï"),
        // Unterminated constructs swallow the rest: nothing after them can leak.
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT $q$ never closed", "SELECT ?"),
        ("SELECT E'\\' secret", "SELECT ?"),
        ("SELECT 1 /* unterminated secret", "SELECT ?"),
        ("", ""),
        ("-- only a comment", ""),
        (";", ";"),
    ];
    for (input, want) in cases {
        assert_eq!(sanitize(input), *want, "input {input:?}");
    }
}

#[test]
fn sanitize_is_bounded_and_cut_on_a_char_boundary() {
    let long = format!("SELECT {}", "é".repeat(3000));
    let out = sanitize(&long);
    assert!(out.len() <= MAX_SANITIZED, "{}", out.len());
    assert!(out.ends_with(TRUNCATED_MARKER));
    let exact = "x".repeat(MAX_SANITIZED);
    assert_eq!(sanitize(&exact), exact);
    let over = "x".repeat(MAX_SANITIZED + 1);
    assert!(sanitize(&over).ends_with(TRUNCATED_MARKER));
    // Many literals still collapse to something short.
    let many = format!(
        "SELECT * FROM t WHERE id IN ({})",
        vec!["42"; 5000].join(", ")
    );
    assert_eq!(sanitize(&many), "SELECT * FROM t WHERE id IN (?)");
}

#[test]
fn split_table() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT 1", &["SELECT 1"]),
        ("SELECT 1;", &["SELECT 1"]),
        ("SELECT 1; SELECT 2;SELECT 3", &["SELECT 1", "SELECT 2", "SELECT 3"]),
        ("  SELECT 1 ;\n\n  ", &["SELECT 1"]),
        ("SELECT ';'; SELECT 2", &["SELECT ';'", "SELECT 2"]),
        ("SELECT E'\\';'; SELECT 2", &["SELECT E'\\';'", "SELECT 2"]),
        ("SELECT $$;$$; SELECT $a$;$a$", &["SELECT $$;$$", "SELECT $a$;$a$"]),
        ("SELECT \";\"; SELECT 2", &["SELECT \";\"", "SELECT 2"]),
        ("SELECT 1 -- ;\n; SELECT 2", &["SELECT 1 -- ;", "SELECT 2"]),
        ("SELECT /* ; */ 1; SELECT 2", &["SELECT /* ; */ 1", "SELECT 2"]),
        ("SELECT 1;;; ;SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("SELECT 1; -- the end", &["SELECT 1"]),
        ("/* lead */ SELECT 1; /* only */ ;", &["/* lead */ SELECT 1"]),
        ("SELECT (1;2)", &["SELECT (1;2)"]),
        ("", &[]),
        (";", &[]),
        (" ; ;\n", &[]),
        ("-- nothing", &[]),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT 3",
            &[
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END",
                "SELECT 3",
            ],
        ),
        (
            "create or replace procedure p() begin atomic insert into t values (1); end; begin; commit",
            &[
                "create or replace procedure p() begin atomic insert into t values (1); end",
                "begin",
                "commit",
            ],
        ),
        ("BEGIN; SELECT 1; END", &["BEGIN", "SELECT 1", "END"]),
        ("SELECT 'unterminated; SELECT 2", &["SELECT 'unterminated; SELECT 2"]),
    ];
    for (input, want) in cases {
        assert_eq!(split_statements(input), *want, "input {input:?}");
    }
    // Resuming where the previous statement ended.
    let q = "SELECT 1; SELECT 2";
    let (r, next) = next_statement(q, 0).expect("first");
    assert_eq!((&q[r], next), ("SELECT 1", 9));
    let (r, next) = next_statement(q, next).expect("second");
    assert_eq!((&q[r], next), ("SELECT 2", q.len()));
    assert_eq!(next_statement(q, next), None);
    assert_eq!(next_statement(q, 1000), None);
    assert_eq!(next_statement("é;x", 1), None, "not a char boundary");
}

#[test]
fn operation_and_collection_table() {
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        (
            "SELECT * FROM users WHERE id = $1",
            Some("SELECT"),
            Some("users"),
        ),
        (
            "select a from public.users u where u.id = 1",
            Some("SELECT"),
            Some("public.users"),
        ),
        (
            "SELECT * FROM \"My Table\"",
            Some("SELECT"),
            Some("\"My Table\""),
        ),
        ("SELECT * FROM ONLY t*", Some("SELECT"), Some("t")),
        (
            "SELECT count(*) FROM t GROUP BY x",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT extract(epoch FROM ts) FROM t",
            Some("SELECT"),
            Some("t"),
        ),
        (
            "SELECT a FROM t WHERE a IS DISTINCT FROM b",
            Some("SELECT"),
            Some("t"),
        ),
        ("SELECT 1", Some("SELECT"), None),
        ("SELECT * FROM a, b", Some("SELECT"), None),
        ("SELECT * FROM a x, b y", Some("SELECT"), None),
        (
            "SELECT * FROM a JOIN b ON a.id = b.id",
            Some("SELECT"),
            None,
        ),
        (
            "SELECT * FROM a WHERE id IN (SELECT id FROM b)",
            Some("SELECT"),
            None,
        ),
        ("SELECT (SELECT max(x) FROM b) FROM a", Some("SELECT"), None),
        ("SELECT * FROM (SELECT 1) s", Some("SELECT"), None),
        ("SELECT * FROM generate_series(1, 3)", Some("SELECT"), None),
        (
            "SELECT 1 FROM a UNION SELECT 2 FROM b",
            Some("SELECT"),
            None,
        ),
        (
            "(SELECT 1 FROM a) UNION (SELECT 2 FROM a)",
            Some("SELECT"),
            None,
        ),
        (
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            Some("INSERT"),
            Some("t"),
        ),
        (
            "insert into s.t values (1) returning id",
            Some("INSERT"),
            Some("s.t"),
        ),
        ("INSERT INTO t SELECT * FROM u", Some("INSERT"), None),
        (
            "UPDATE t SET a = 1, b = 2 WHERE id = 3",
            Some("UPDATE"),
            Some("t"),
        ),
        ("UPDATE ONLY t AS x SET a = 1", Some("UPDATE"), Some("t")),
        (
            "UPDATE t SET a = u.a FROM u WHERE t.id = u.id",
            Some("UPDATE"),
            None,
        ),
        ("DELETE FROM t WHERE id = 1", Some("DELETE"), Some("t")),
        (
            "DELETE FROM t USING u WHERE t.id = u.id",
            Some("DELETE"),
            None,
        ),
        (
            "DELETE FROM t WHERE id IN (SELECT id FROM u)",
            Some("DELETE"),
            None,
        ),
        ("TRUNCATE TABLE t", Some("TRUNCATE"), Some("t")),
        ("TRUNCATE a, b", Some("TRUNCATE"), None),
        ("COPY t (a, b) FROM STDIN", Some("COPY"), Some("t")),
        ("COPY t TO STDOUT", Some("COPY"), Some("t")),
        ("COPY (SELECT 1) TO STDOUT", Some("COPY"), None),
        ("CREATE TABLE t (id int)", Some("CREATE TABLE"), Some("t")),
        (
            "CREATE TABLE IF NOT EXISTS s.t (id int)",
            Some("CREATE TABLE"),
            Some("s.t"),
        ),
        (
            "create temp table t (id int)",
            Some("CREATE TABLE"),
            Some("t"),
        ),
        ("CREATE UNIQUE INDEX i ON t (a)", Some("CREATE INDEX"), None),
        (
            "CREATE OR REPLACE FUNCTION f() ...",
            Some("CREATE FUNCTION"),
            None,
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT 1",
            Some("CREATE MATERIALIZED VIEW"),
            None,
        ),
        ("DROP TABLE IF EXISTS t", Some("DROP TABLE"), Some("t")),
        ("DROP TABLE a, b", Some("DROP TABLE"), None),
        (
            "ALTER TABLE ONLY t ADD COLUMN c int",
            Some("ALTER TABLE"),
            Some("t"),
        ),
        ("ALTER SYSTEM SET x = 1", Some("ALTER SYSTEM"), None),
        ("CREATE", Some("CREATE"), None),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Some("SELECT"), None),
        (
            "WITH RECURSIVE x(n) AS (SELECT 1) INSERT INTO t SELECT n FROM x",
            Some("INSERT"),
            None,
        ),
        ("WITH", Some("WITH"), None),
        ("BEGIN", Some("BEGIN"), None),
        ("  /* c */ -- x\n commit", Some("COMMIT"), None),
        ("VALUES (1)", Some("VALUES"), None),
        ("", None, None),
        ("   ", None, None),
        ("123", None, None),
        ("'str'", None, None),
        ("$1", None, None),
        ("éclair", None, None),
    ];
    for (input, op, coll) in cases {
        let got = operation_and_collection(input);
        assert_eq!(
            (got.0.as_deref(), got.1.as_deref()),
            (*op, *coll),
            "input {input:?}"
        );
    }
}

/// A literal that must never survive sanitising.
const NEEDLE: &str = "s3cr3t";

#[test]
fn fuzz_never_panics_bounded_and_no_literal_leaks() {
    let mut rng = fastrand::Rng::with_seed(0x5a17);
    let pieces = [
        "'",
        "''",
        "E'",
        "\\",
        "$$",
        "$a$",
        "$1",
        "\"",
        "--",
        "/*",
        "*/",
        "\n",
        ";",
        "(",
        ")",
        "IN",
        " ",
        ",",
        "SELECT",
        "FROM",
        "t",
        ".",
        "1",
        "1e",
        "0x",
        "é",
        "\u{0}",
        "BEGIN",
        "END",
        "CREATE FUNCTION",
        "U&",
        "B'",
        "WITH",
        "AS",
    ];
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..rng.usize(0..40) {
            s.push_str(pieces[rng.usize(..pieces.len())]);
        }
        let out = sanitize(&s);
        assert!(out.len() <= MAX_SANITIZED);
        let _ = operation_and_collection(&s);
        let parts = split_statements(&s);
        for p in &parts {
            assert!(!p.is_empty());
        }
        // Random bytes too, made valid UTF-8.
        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        let s = String::from_utf8_lossy(&bytes);
        assert!(sanitize(&s).len() <= MAX_SANITIZED);
        let _ = operation_and_collection(&s);
        let _ = split_statements(&s);
    }
    // A literal wrapped in any kind of quoting never reaches the output.
    for (open, close) in [
        ("'", "'"),
        ("E'", "'"),
        ("$$", "$$"),
        ("$x$", "$x$"),
        ("B'", "'"),
        ("U&'", "'"),
        ("'", ""),
        ("$$", ""),
    ] {
        for prefix in ["SELECT ", "SELECT a IN (", "x = ", "", "/* c */ "] {
            let sql = format!("{prefix}{open}{NEEDLE} it''s {close} + 1");
            let out = sanitize(&sql);
            assert!(!out.contains(NEEDLE), "{sql:?} -> {out:?}");
        }
    }
    let comment = format!("SELECT 1 /* {NEEDLE} */ -- {NEEDLE}\n");
    assert!(!sanitize(&comment).contains(NEEDLE));
}
