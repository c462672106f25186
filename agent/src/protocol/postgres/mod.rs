//! PostgreSQL frontend/backend protocol 3.0 (PostgreSQL documentation, chapter "Frontend/
//! Backend Protocol"): detection, message framing in both directions, and turning what the
//! server executed into one `RequestStart` / `ExchangeEnd` pair per statement.
//!
//! This module owns: recognising the protocol from a connection's first bytes (its startup or,
//! joining late, its messages); following the startup phase (user and database from the
//! StartupMessage; SSLRequest/GSSENCRequest answered `N` continue in plaintext, `S`/`G` mean
//! encryption follows and the connection is ignored from there on; CancelRequest connections
//! make no spans); the simple query protocol (one statement per `;`-separated statement the
//! server answers, see `sql::next_statement`); the extended protocol (Parse, Bind,
//! Describe, Execute, Close, Sync, Flush, pipelined any depth up to a bound); COPY in both
//! directions; FunctionCall; Terminate; and recovering from capture gaps and garbage without
//! ever pairing a result with the wrong statement. It copies out only statement texts, names,
//! command tags, SQLSTATEs and severities: row data, parameters, COPY data and error messages
//! are never kept.
//!
//! Choices (see `session` for the pairing rules):
//!
//! - a statement is reported when the server answers it (lazily), with the time and thread of
//!   the frontend message that sent it: exactly one span per statement the server executed;
//! - an Execute's span starts at the first message of its group: the Parse/Bind/Describe sent
//!   since the previous Execute or Sync (the Execute's own segment if there were none);
//! - PortalSuspended (an Execute's row limit reached) ends that Execute's span as
//!   `Complete { tag: "SUSPENDED" }` with the rows sent so far; executing the portal again is
//!   another span;
//! - FunctionCall is followed (its answer is paired) but makes no span: it names a function by
//!   OID with binary arguments, nothing a span could be named with (libpq uses it for large
//!   objects);
//! - an Execute of a statement Parse'd before the agent saw the connection (or evicted from
//!   the bounded cache, see `statements`) is reported with `text: None` and its name; of a
//!   portal bound before, with neither text nor name;
//! - timing: a statement ends with the read holding its final answer. ErrorResponse and
//!   CommandComplete are read up to `wire::ERROR_HEAD` / `wire::TAG_HEAD` bytes; a longer
//!   one (never seen in practice) ends when its head has arrived.
//!
//! Memory: every length is checked against the limits the server and libpq enforce
//! (`wire`). Only message heads are held (left unconsumed in the connection layer's buffer):
//! a Query or Parse text up to `wire::MAX_TEXT` (64 KiB; a longer one is kept truncated to
//! that and its tail skipped: the span keeps its statement rather than losing it), names up to
//! `wire::NAME_HEAD`, small fixed messages. Everything else (DataRow, CopyData, Bind
//! parameters, RowDescription, notices) is skipped as it arrives with only a count of bytes
//! left, so a capture gap inside it is absorbed. Outstanding messages are bounded
//! (`session::MAX_OPS`, and `session::MAX_QUEUED_TEXT` bytes of text in them), and so is the
//! statement cache (`statements`). Cuts are reported as `ParseError::Limited`.
//!
//! Work: every byte is examined a bounded number of times. A head that arrives over many
//! reads is searched from where the previous read stopped (`frontend::HeadScan`), as is a
//! resync candidate's name; resync checks Bind candidates within a budget of parameters per
//! byte (`detect::scan_frontend`); the statement cache evicts in O(log n).
//!
//! Module map: `detect` (signatures), `wire` (framing primitives), `frontend` / `backend` (the
//! per-direction state machines), `session` (the ops awaiting answers, statement events),
//! `statements` (the bounded prepared statement and portal cache).

mod backend;
mod detect;
mod frontend;
mod queue;
mod session;
pub mod sql;
mod statements;
#[cfg(test)]
mod tests;
mod wire;

use super::{
    Detection, Direction, L7Event, ParseError, Protocol, ProtocolId, ProtocolOutcome,
    ProtocolRequest, Role, SegmentCtx,
};
use backend::Backend;
use frontend::Frontend;
use session::Session;

pub use session::SUSPENDED_TAG;

/// Does this direction start like PostgreSQL, and which way do requests flow?
///
/// `Role::Client` sends requests (egress), `Role::Server` receives them (ingress); with
/// `Role::Unknown` frontend messages mean requests flow in `dir`, backend messages that they
/// flow the other way. Undecidable yet is `NeedMore`; anything else is `NoMatch`.
pub fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
    detect::detect(dir, role, bytes)
}

/// Why parsing stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SSL/GSSAPI encryption was accepted: the rest is ciphertext.
    Encrypted,
    /// A CancelRequest connection, or a protocol version we do not follow.
    Cancel,
}

/// What a parse step reports to: the read being parsed, the session, the caller's lists.
struct Io<'a> {
    ctx: &'a SegmentCtx,
    session: &'a mut Session,
    out: &'a mut Vec<L7Event>,
    errors: &'a mut Vec<ParseError>,
    stop: Option<Stop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Active,
    /// Encrypted or not ours to follow: every byte is consumed and ignored.
    Ignored,
    /// `close` was called.
    Closed,
}

/// PostgreSQL parser state of one connection.
#[derive(Debug)]
pub struct PgConn {
    request_dir: Direction,
    mode: Mode,
    frontend: Frontend,
    backend: Backend,
    /// Boxed: the statement cache makes it the largest part, and `ConnParser` holds the
    /// parser of every connection inline.
    session: Box<Session>,
}

impl PgConn {
    /// A parser for a connection whose requests (frontend messages) flow in `request_dir`.
    pub fn new(request_dir: Direction) -> Self {
        Self {
            request_dir,
            mode: Mode::Active,
            frontend: Frontend::new(),
            backend: Backend::new(),
            session: Box::new(Session::new()),
        }
    }

    fn is_frontend(&self, dir: Direction) -> Option<bool> {
        match dir {
            Direction::None => None,
            d => Some(d == self.request_dir),
        }
    }

    /// Consume what can be consumed of `buf` (all unconsumed bytes of `dir`); see
    /// [`crate::protocol::Parser::parse`]. Returns bytes consumed (`<= buf.len()`).
    pub fn parse(
        &mut self,
        dir: Direction,
        buf: &[u8],
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
        errors: &mut Vec<ParseError>,
    ) -> usize {
        if self.mode != Mode::Active {
            return buf.len();
        }
        let Some(frontend) = self.is_frontend(dir) else {
            return buf.len();
        };
        let mut io = Io {
            ctx,
            session: &mut self.session,
            out,
            errors,
            stop: None,
        };
        let consumed = if frontend {
            self.frontend.parse(buf, &mut io)
        } else {
            self.backend.parse(buf, &mut io)
        };
        if io.stop.is_some() {
            // Nothing was started during the startup phase, but be exact anyway.
            self.session.abort_open(ctx.last_ns, out);
            self.mode = Mode::Ignored;
            self.frontend.stop();
            return buf.len();
        }
        consumed.min(buf.len())
    }

    /// `n` bytes moved in `dir` without being captured; see
    /// [`crate::protocol::Parser::skip`]. True when they fell inside a body that is being
    /// skipped anyway (DataRow, CopyData, Bind parameters, a long query's tail).
    pub fn skip(
        &mut self,
        dir: Direction,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        out: &mut Vec<L7Event>,
    ) -> bool {
        if n == 0 {
            return true;
        }
        if self.mode != Mode::Active {
            return unconsumed == 0;
        }
        match self.is_frontend(dir) {
            None => true,
            Some(true) => self
                .frontend
                .skip(n, unconsumed, ctx, &mut self.session, out),
            Some(false) => self
                .backend
                .skip(n, unconsumed, ctx, &mut self.session, out),
        }
    }

    /// Records were lost before the next bytes; see [`crate::protocol::Parser::gap`]. The
    /// statement being answered is aborted and the session stops reporting until it is
    /// realigned on ReadyForQuery (as after any loss of track: what the hole held is
    /// unknown, so nothing queued before it is paired with an answer after it); both
    /// directions resume at the next plausible message.
    pub fn gap(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) -> bool {
        if self.mode == Mode::Active {
            self.session.lose(ts_ns, out);
            self.frontend.lose_sync();
            self.backend.lose_sync();
        }
        true
    }

    /// The connection closed at `ts_ns`: the statement being answered, if any, is aborted.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<L7Event>) {
        self.session.abort_open(ts_ns, out);
        self.mode = Mode::Closed;
    }

    #[cfg(test)]
    fn session(&self) -> &Session {
        &self.session
    }
}

impl Protocol for PgConn {
    const ID: ProtocolId = ProtocolId::Postgres;
    const NAME: &'static str = "postgres";
    const DISPLAY: &'static str = "PostgreSQL";
    /// The head of one Parse message at most.
    const MAX_UNCONSUMED: usize = wire::HEADER + wire::MAX_TEXT + wire::NAME_HEAD;
    const SERVER_SIDE_SPANS: bool = false;
    const MULTIPLEXED: bool = false;
    const CARRIES_CONTEXT: bool = false;
    type Request = PgStatement;
    type Outcome = PgOutcome;

    fn detect(dir: Direction, role: Role, bytes: &[u8]) -> Detection {
        detect(dir, role, bytes)
    }

    fn new(request_dir: Direction) -> Self {
        PgConn::new(request_dir)
    }
}

super::parser_by_inherent_methods!(PgConn);

/// One statement a PostgreSQL client had executed (frontend/backend protocol 3.0). A simple
/// query holding several statements yields one of these per statement.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PgStatement {
    /// The SQL as sent, unsanitised (the span layer sanitises). `None`: executed by name, the
    /// statement was prepared before the agent saw the connection, its text is unknown.
    pub text: Option<String>,
    /// Extended protocol: the prepared statement's name (`""` = unnamed). `None` for simple
    /// queries.
    pub prepared_name: Option<String>,
    /// `database` and `user` from the startup message, when the agent saw it.
    pub database: Option<String>,
    pub user: Option<String>,
}

/// How a PostgreSQL statement ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutcome {
    /// CommandComplete: its tag (`SELECT 5`, `INSERT 0 1`, `COPY 3`) and the DataRow count seen.
    Complete { tag: String, rows: u64 },
    /// EmptyQueryResponse.
    Empty,
    /// ErrorResponse: SQLSTATE (`C`) and severity (`V`, else `S`). Never the message: it can
    /// quote values from the statement.
    Error { sqlstate: String, severity: String },
    /// The connection closed, or the parser lost sync, before the result.
    Aborted,
}

/// A statement carries no trace context: the protocol has no headers.
impl ProtocolRequest for PgStatement {}

impl ProtocolOutcome for PgOutcome {
    fn aborted(&self) -> bool {
        *self == PgOutcome::Aborted
    }
}
