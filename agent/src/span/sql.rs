//! Placeholder until the SQL sanitiser lands (its branch replaces this file). Fails safe:
//! exports no SQL text at all.

pub fn sanitize(_sql: &str) -> String {
    "?".to_owned()
}

pub fn operation_and_collection(sql: &str) -> (Option<String>, Option<String>) {
    (
        sql.split_whitespace()
            .next()
            .map(|w| w.to_ascii_uppercase()),
        None,
    )
}
