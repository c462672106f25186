//! PostgreSQL SQL text: sanitising (for `db.query.text`), the operation and collection names
//! (`db.operation.name`, `db.collection.name`) and splitting a simple-query string into its
//! statements (what the parser needs for simple queries). Pure functions over `&str`; they
//! never panic, whatever the input. A leaf: the span stage and the parser both use it.
//!
//! Owns a small PostgreSQL lexer following the "Lexical Structure" chapter of the PostgreSQL
//! documentation (SQL Syntax §4.1): standard strings (`'...'`, `''` escapes), escape strings
//! (`E'...'`, backslash escapes), bit/hex/national/Unicode strings (`B'..'`, `X'..'`, `N'..'`,
//! `U&'..'`), dollar quoting (`$tag$...$tag$`), quoted identifiers (`"..."`, `""` escapes),
//! positional parameters (`$1`), numeric constants (including PostgreSQL 16's `0x1F`, `0o17`,
//! `0b101` and `1_000`) and nested `/* */` comments. It does not own a SQL grammar: statement
//! splitting and collection extraction are deliberately shallow heuristics that answer `None`
//! (or keep text together) whenever a statement is not simple.
//!
//! Known limit: strings are lexed as with `standard_conforming_strings = on` (the default
//! since PostgreSQL 9.1). With it off, a backslash-escaped quote in a plain `'...'` string
//! ends the literal early for this lexer.

use std::ops::Range;

/// Upper bound of [`sanitize`]'s output in bytes, marker included.
pub const MAX_SANITIZED: usize = 2048;
/// Appended when [`sanitize`] had to cut its output.
pub const TRUNCATED_MARKER: &str = "…";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Space,
    Comment,
    /// Any literal a value can hide in: strings of every kind, dollar-quoted text, numbers.
    Literal,
    /// `$1`.
    Param,
    Ident,
    QuotedIdent,
    Semicolon,
    /// A single punctuation or operator character.
    Punct(u8),
}

/// Tokens of `s` from byte `pos`. Token boundaries always fall on ASCII bytes, so every range
/// is a valid `str` slice.
struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str, pos: usize) -> Self {
        Self {
            b: s.as_bytes(),
            pos,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// End of a quoted run starting after the opening quote at `i`: `q` doubled is an escaped
    /// quote; `backslash` makes `\` escape the next byte. Unterminated: the end of input.
    fn quoted(&self, mut i: usize, q: u8, backslash: bool) -> usize {
        while i < self.b.len() {
            let c = self.b[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == q {
                if self.at(i + 1) == q {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.b.len()
    }

    /// `$tag$` at `i`: the tag's end (after the second `$`), if it is one.
    fn dollar_tag(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        if self.at(j) != b'$' {
            if !is_ident_start(self.at(j)) {
                return None;
            }
            while j < self.b.len() && (is_ident_start(self.b[j]) || self.b[j].is_ascii_digit()) {
                j += 1;
            }
            if self.at(j) != b'$' {
                return None;
            }
        }
        Some(j + 1)
    }

    fn number(&self, mut i: usize) -> usize {
        let radix = self.at(i) == b'0' && matches!(self.at(i + 1) | 0x20, b'x' | b'o' | b'b');
        if radix {
            i += 2;
        }
        let digits = |mut i: usize| {
            while i < self.b.len() && (self.b[i].is_ascii_digit() || self.b[i] == b'_') {
                i += 1;
            }
            i
        };
        if radix {
            while i < self.b.len() && (self.b[i].is_ascii_alphanumeric() || self.b[i] == b'_') {
                i += 1;
            }
        } else {
            i = digits(i);
            // `1..2` is not a number followed by `.2`, but nor is it SQL; keep it simple.
            if self.at(i) == b'.' && self.at(i + 1) != b'.' {
                i = digits(i + 1);
            }
            if matches!(self.at(i), b'e' | b'E') {
                let sign = usize::from(matches!(self.at(i + 1), b'+' | b'-'));
                if self.at(i + 1 + sign).is_ascii_digit() {
                    i = digits(i + 1 + sign);
                }
            }
        }
        // Trailing junk (`123abc`) is an error for the server; keep it inside the literal.
        while i < self.b.len() && is_ident_char(self.b[i]) {
            i += 1;
        }
        i
    }

    fn comment_end(&self, mut i: usize) -> usize {
        let mut depth = 0usize;
        while i < self.b.len() {
            if self.b[i] == b'/' && self.at(i + 1) == b'*' {
                depth += 1;
                i += 2;
            } else if self.b[i] == b'*' && self.at(i + 1) == b'/' {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        self.b.len()
    }
}

impl Iterator for Lexer<'_> {
    type Item = (Tok, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let c = *self.b.get(start)?;
        let next = self.at(start + 1);
        let (tok, end) = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                let mut i = start + 1;
                while i < self.b.len()
                    && matches!(self.b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
                {
                    i += 1;
                }
                (Tok::Space, i)
            }
            b'-' if next == b'-' => {
                let end = self.b[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.b.len(), |p| start + p);
                (Tok::Comment, end)
            }
            b'/' if next == b'*' => (Tok::Comment, self.comment_end(start)),
            b'\'' => (Tok::Literal, self.quoted(start + 1, b'\'', false)),
            b'E' | b'e' if next == b'\'' => (Tok::Literal, self.quoted(start + 2, b'\'', true)),
            b'B' | b'b' | b'X' | b'x' | b'N' | b'n' if next == b'\'' => {
                (Tok::Literal, self.quoted(start + 2, b'\'', false))
            }
            b'U' | b'u' if next == b'&' && self.at(start + 2) == b'\'' => {
                (Tok::Literal, self.quoted(start + 3, b'\'', false))
            }
            b'U' | b'u' if next == b'&' && self.at(start + 2) == b'"' => {
                (Tok::QuotedIdent, self.quoted(start + 3, b'"', false))
            }
            b'"' => (Tok::QuotedIdent, self.quoted(start + 1, b'"', false)),
            b'$' if next.is_ascii_digit() => {
                let mut i = start + 1;
                while i < self.b.len() && self.b[i].is_ascii_digit() {
                    i += 1;
                }
                (Tok::Param, i)
            }
            b'$' => match self.dollar_tag(start) {
                Some(body) => {
                    let tag = &self.b[start..body];
                    let end = self.b[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(self.b.len(), |p| body + p + tag.len());
                    (Tok::Literal, end)
                }
                None => (Tok::Punct(b'$'), start + 1),
            },
            b'0'..=b'9' => (Tok::Literal, self.number(start)),
            b'.' if next.is_ascii_digit() => (Tok::Literal, self.number(start)),
            b';' => (Tok::Semicolon, start + 1),
            c if is_ident_start(c) => {
                let mut i = start + 1;
                while i < self.b.len() && is_ident_char(self.b[i]) {
                    i += 1;
                }
                (Tok::Ident, i)
            }
            c => (Tok::Punct(c), start + 1),
        };
        self.pos = end.max(start + 1).min(self.b.len());
        Some((tok, start..self.pos))
    }
}

/// `sql` with every literal replaced by `?`, comments removed, whitespace runs collapsed to
/// one space, and `IN (?, ?, ...)` collapsed to `IN (?)`. Identifiers, keywords, operators and
/// `$n` parameters are kept. At most [`MAX_SANITIZED`] bytes: a longer result is cut at a
/// character boundary and ends with [`TRUNCATED_MARKER`].
pub fn sanitize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_SANITIZED));
    // Where `IN (` ended in `out`, while everything after it is placeholders and commas.
    let mut in_list: Option<usize> = None;
    let mut after_in = false;
    let mut pending_space = false;
    for (tok, r) in Lexer::new(sql, 0) {
        let text = match tok {
            Tok::Space | Tok::Comment => {
                pending_space = !out.is_empty();
                continue;
            }
            Tok::Literal => "?",
            _ => &sql[r],
        };
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push_str(text);
        match (tok, in_list) {
            (Tok::Punct(b'('), _) if after_in => in_list = Some(out.len()),
            (Tok::Literal | Tok::Punct(b','), Some(_)) => {}
            (Tok::Punct(b')'), Some(open)) => {
                if out[open..].contains('?') {
                    out.truncate(open);
                    out.push_str("?)");
                }
                in_list = None;
            }
            _ => in_list = None,
        }
        after_in = tok == Tok::Ident && text.eq_ignore_ascii_case("in");
        // Keep going through an IN list that may still collapse (up to a hard bound).
        if out.len() > MAX_SANITIZED && (in_list.is_none() || out.len() > 16 * MAX_SANITIZED) {
            break;
        }
    }
    if out.len() > MAX_SANITIZED {
        let mut cut = MAX_SANITIZED - TRUNCATED_MARKER.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(TRUNCATED_MARKER);
    }
    out
}

/// The next statement of a simple-query string at or after byte `from`: its range (trimmed of
/// surrounding whitespace, without the `;`) and where the search for the one after it
/// resumes. Statements holding only whitespace and comments are skipped, as the server skips
/// them. Semicolons inside parentheses, quotes, dollar quotes, comments and `BEGIN ATOMIC ...
/// END` bodies of `CREATE FUNCTION`/`CREATE PROCEDURE` do not split (the same rules psql
/// applies before it sends a statement).
pub fn next_statement(sql: &str, from: usize) -> Option<(Range<usize>, usize)> {
    let mut from = from.min(sql.len());
    while from < sql.len() {
        if !sql.is_char_boundary(from) {
            return None;
        }
        let mut range: Option<Range<usize>> = None;
        let mut content = false;
        let mut head = Head::default();
        let (mut parens, mut begins) = (0usize, 0usize);
        let mut resume = sql.len();
        for (tok, r) in Lexer::new(sql, from) {
            match tok {
                Tok::Semicolon if parens == 0 && begins == 0 => {
                    resume = r.end;
                    break;
                }
                Tok::Punct(b'(') => parens += 1,
                Tok::Punct(b')') => parens = parens.saturating_sub(1),
                Tok::Ident if parens == 0 => {
                    let word = &sql[r.clone()];
                    if head.routine(word) {
                        // CASE also ends with END; it matters only inside BEGIN.
                        let case = word.eq_ignore_ascii_case("case") && begins > 0;
                        if word.eq_ignore_ascii_case("begin") || case {
                            begins += 1;
                        } else if word.eq_ignore_ascii_case("end") {
                            begins = begins.saturating_sub(1);
                        }
                    }
                }
                _ => {}
            }
            if tok != Tok::Space {
                content |= tok != Tok::Comment;
                range = Some(range.map_or(r.clone(), |s| s.start..r.end));
            }
        }
        match range {
            Some(range) if content => return Some((range, resume)),
            _ => from = resume,
        }
    }
    None
}

/// Whether a statement starts `CREATE [OR REPLACE] FUNCTION|PROCEDURE`: only then can
/// `BEGIN ... END` hold semicolons (SQL-standard function bodies).
#[derive(Default)]
struct Head {
    words: u8,
    create: bool,
    or_replace: u8,
    routine: bool,
}

impl Head {
    fn routine(&mut self, word: &str) -> bool {
        let is = |w: &str| word.eq_ignore_ascii_case(w);
        match self.words {
            0 => self.create = is("create"),
            _ if !self.create || self.routine => {}
            1 | 3 if (is("function") || is("procedure")) && self.or_replace == self.words - 1 => {
                self.routine = true
            }
            1 if is("or") => self.or_replace = 1,
            2 if self.or_replace == 1 && is("replace") => self.or_replace = 2,
            _ => self.create = false,
        }
        self.words = self.words.saturating_add(1);
        self.routine
    }
}

/// The non-empty statements of a simple-query string (see [`next_statement`]). An empty
/// result means the server will answer EmptyQueryResponse.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((range, next)) = next_statement(sql, from) {
        out.push(&sql[range]);
        from = next;
    }
    out
}

/// Significant tokens (no whitespace or comments) with their text and parenthesis depth.
fn significant(sql: &str) -> impl Iterator<Item = (Tok, &str, usize)> + '_ {
    let mut depth = 0usize;
    Lexer::new(sql, 0).filter_map(move |(tok, r)| {
        let d = depth;
        match tok {
            Tok::Space | Tok::Comment => return None,
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            _ => {}
        }
        Some((
            tok,
            &sql[r],
            if tok == Tok::Punct(b')') { depth } else { d },
        ))
    })
}

fn kw(t: Option<&(Tok, &str, usize)>, word: &str) -> bool {
    matches!(t, Some((Tok::Ident, w, _)) if w.eq_ignore_ascii_case(word))
}

/// Longest operation name kept; anything longer is not a command keyword.
const MAX_KEYWORD: usize = 32;

/// `db.operation.name` and `db.collection.name` of one statement, when simply derivable.
///
/// The operation follows PostgreSQL's command tags (what CommandComplete reports): the first
/// keyword upper-cased (`SELECT`, `INSERT`, ...), except that `CREATE`, `ALTER` and `DROP`
/// take their object type (`CREATE TABLE`, `DROP INDEX`, `CREATE MATERIALIZED VIEW`; modifiers
/// such as `OR REPLACE`, `TEMP` or `UNIQUE` are skipped) and `WITH ...` takes the verb of its
/// main statement (`WITH x AS (...) SELECT` is a `SELECT`, as its tag is).
///
/// The collection is the single table a statement names, as written (schema-qualified and
/// quoted identifiers kept): `SELECT ... FROM t`, `INSERT INTO t`, `UPDATE t`, `DELETE FROM t`,
/// `TRUNCATE t`, `COPY t`, `CREATE/ALTER/DROP TABLE t`. Following the OpenTelemetry database
/// conventions it is `None` whenever the statement involves more than one table or it is not
/// obvious: joins, lists, subqueries, set operations, `USING`/`FROM` in DELETE/UPDATE, CTEs.
pub fn operation_and_collection(sql: &str) -> (Option<String>, Option<String>) {
    let toks: Vec<(Tok, &str, usize)> = significant(sql).take(4096).collect();
    // A parenthesised query `(SELECT ...) UNION ...`: operation only.
    let lead = toks
        .iter()
        .position(|t| t.0 != Tok::Punct(b'('))
        .unwrap_or(0);
    let Some(&(Tok::Ident, first, _)) = toks.get(lead) else {
        return (None, None);
    };
    if first.len() > MAX_KEYWORD || !first.bytes().all(|b| b.is_ascii_alphabetic()) {
        return (None, None);
    }
    let verb = first.to_ascii_uppercase();
    let rest = &toks[lead + 1..];
    if lead > 0 {
        return (Some(verb), None);
    }
    match verb.as_str() {
        "CREATE" | "ALTER" | "DROP" => ddl(&verb, rest),
        "WITH" => (Some(main_verb(rest).unwrap_or(verb)), None),
        _ => {
            let collection = collection(&verb, rest);
            (Some(verb), collection)
        }
    }
}

fn ddl(verb: &str, rest: &[(Tok, &str, usize)]) -> (Option<String>, Option<String>) {
    const MODIFIERS: [&str; 10] = [
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "UNIQUE",
        "TRUSTED",
        "PROCEDURAL",
    ];
    // Object types named by two words.
    const FIRST_OF_TWO: [&str; 5] = ["MATERIALIZED", "FOREIGN", "EVENT", "TEXT", "ACCESS"];
    let mut i = 0;
    if verb == "CREATE" {
        while rest
            .get(i)
            .is_some_and(|t| MODIFIERS.iter().any(|m| kw(Some(t), m)))
        {
            i += 1;
        }
    }
    let word = |i: usize| match rest.get(i) {
        Some(&(Tok::Ident, w, _))
            if w.len() <= MAX_KEYWORD && w.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            Some(w.to_ascii_uppercase())
        }
        _ => None,
    };
    let Some(object) = word(i) else {
        return (Some(verb.to_owned()), None);
    };
    let mut op = format!("{verb} {object}");
    if FIRST_OF_TWO.contains(&object.as_str()) {
        if let Some(second) = word(i + 1) {
            op = format!("{op} {second}");
        }
        return (Some(op), None);
    }
    if object != "TABLE" {
        return (Some(op), None);
    }
    let mut j = i + 1;
    let skip: &[&[&str]] = match verb {
        "CREATE" => &[&["IF", "NOT", "EXISTS"]],
        "DROP" => &[&["IF", "EXISTS"]],
        _ => &[&["IF", "EXISTS"], &["ONLY"]],
    };
    for words in skip {
        if words
            .iter()
            .enumerate()
            .all(|(k, w)| kw(rest.get(j + k), w))
        {
            j += words.len();
        }
    }
    let table = table_name(rest, j).and_then(|(name, after)| {
        // DROP TABLE a, b names two tables.
        let many = rest[after..]
            .iter()
            .any(|t| t.0 == Tok::Punct(b',') && t.2 == 0)
            && verb == "DROP";
        (!many).then_some(name)
    });
    (Some(op), table)
}

/// The verb after the CTE list of `WITH [RECURSIVE] name [(cols)] AS [NOT MATERIALIZED] (...)`.
fn main_verb(rest: &[(Tok, &str, usize)]) -> Option<String> {
    // The main statement is the first keyword at depth 0 after a closing parenthesis that is
    // not followed by a comma.
    let mut prev_close = false;
    for t in rest {
        if t.2 == 0 {
            if prev_close && t.0 == Tok::Ident {
                let w = t.1.to_ascii_uppercase();
                if matches!(
                    w.as_str(),
                    "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "VALUES" | "TABLE"
                ) {
                    return Some(w);
                }
            }
            prev_close = t.0 == Tok::Punct(b')');
        }
    }
    None
}

/// A table reference at `i`: `name`, `schema.name` or `db.schema.name`, plain or quoted.
/// Returns the name as written and the index after it.
fn table_name(toks: &[(Tok, &str, usize)], i: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut j = i;
    loop {
        match toks.get(j) {
            Some(&(Tok::Ident | Tok::QuotedIdent, w, _)) => name.push_str(w),
            _ => return None,
        }
        j += 1;
        if toks.get(j).map(|t| t.0) == Some(Tok::Punct(b'.')) && j - i < 5 {
            name.push('.');
            j += 1;
        } else {
            break;
        }
    }
    if toks.get(j).map(|t| t.0) == Some(Tok::Punct(b'*')) {
        j += 1; // `FROM t*`: t and its descendants
    }
    Some((name, j))
}

/// Another table is involved somewhere after index `from`: a subquery, a join, a set
/// operation, or (for DELETE/UPDATE/INSERT) a top-level USING or FROM.
fn involves_more(toks: &[(Tok, &str, usize)], from: usize, extra: &[&str]) -> bool {
    const ALWAYS: [&str; 5] = ["JOIN", "UNION", "INTERSECT", "EXCEPT", "LATERAL"];
    let rest = toks.get(from..).unwrap_or_default();
    rest.iter().enumerate().any(|(k, t)| {
        // `IS [NOT] DISTINCT FROM` compares values; it brings in no table.
        let distinct_from = k > 0 && kw(rest.get(k - 1), "DISTINCT");
        let subquery = t.0 == Tok::Punct(b'(')
            && ["SELECT", "WITH", "VALUES", "TABLE"]
                .iter()
                .any(|w| kw(rest.get(k + 1), w));
        subquery
            || ALWAYS.iter().any(|w| kw(Some(t), w))
            || (t.2 == 0 && !distinct_from && extra.iter().any(|w| kw(Some(t), w)))
    })
}

fn collection(verb: &str, rest: &[(Tok, &str, usize)]) -> Option<String> {
    let skip = |i: usize, w: &str| if kw(rest.get(i), w) { i + 1 } else { i };
    let (start, extra): (usize, &[&str]) = match verb {
        "SELECT" => {
            let from = rest.iter().position(|t| t.2 == 0 && kw(Some(t), "FROM"))?;
            // Anything before FROM that brings in a table (a subquery in the select list).
            if involves_more(&rest[..from], 0, &[]) {
                return None;
            }
            (skip(from + 1, "ONLY"), &[])
        }
        "INSERT" if kw(rest.first(), "INTO") => (1, &["FROM"]),
        "UPDATE" => (skip(0, "ONLY"), &["FROM"]),
        "DELETE" if kw(rest.first(), "FROM") => (skip(1, "ONLY"), &["USING"]),
        "TRUNCATE" => (skip(skip(0, "TABLE"), "ONLY"), &[]),
        "COPY" => (0, &[]),
        _ => return None,
    };
    let (name, after) = table_name(rest, start)?;
    // `FROM generate_series(...)`: a function, not a table. (INSERT and COPY follow the name
    // with their column list.)
    let call = rest.get(after).map(|t| t.0) == Some(Tok::Punct(b'('));
    if call && !matches!(verb, "INSERT" | "COPY") {
        return None;
    }
    if involves_more(rest, after, extra) {
        return None;
    }
    // A list of tables (`FROM a, b`, `TRUNCATE a, b`): a top-level comma right after the
    // reference and its alias. INSERT's column list and UPDATE's SET list are past a keyword
    // or inside parentheses, so only the first few tokens matter.
    let mut k = after;
    if kw(rest.get(k), "AS") {
        k += 1;
    }
    if matches!(rest.get(k), Some(&(Tok::Ident, w, 0)) if !is_clause(w)) {
        k += 1;
    }
    if rest.get(k).map(|t| (t.0, t.2)) == Some((Tok::Punct(b','), 0)) {
        return None;
    }
    Some(name)
}

/// Keywords that can follow a table reference without being its alias.
fn is_clause(w: &str) -> bool {
    const CLAUSES: [&str; 21] = [
        "WHERE",
        "GROUP",
        "HAVING",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "FETCH",
        "FOR",
        "WINDOW",
        "SET",
        "VALUES",
        "DEFAULT",
        "OVERRIDING",
        "SELECT",
        "RETURNING",
        "ON",
        "USING",
        "FROM",
        "TO",
        "WITH",
        "TABLESAMPLE",
    ];
    CLAUSES.iter().any(|c| w.eq_ignore_ascii_case(c))
}

#[cfg(test)]
mod tests;
