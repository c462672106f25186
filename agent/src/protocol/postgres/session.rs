//! What the frontend asked for and the backend still owes, in order, and turning the
//! backend's answers into statement events.
//!
//! The backend answers frontend messages strictly in order ("Message Flow" in the protocol
//! chapter), so every message that gets an answer becomes an op in a FIFO: Parse
//! (ParseComplete), Bind (BindComplete), Describe (ParameterDescription and RowDescription or
//! NoData), Execute (DataRow..., then CommandComplete, EmptyQueryResponse or PortalSuspended),
//! Close (CloseComplete), Sync (ReadyForQuery), Query (per statement: results, then one
//! ReadyForQuery for all), FunctionCall (FunctionCallResponse, ReadyForQuery), and the
//! startup exchange. Each answer is checked against the op it must belong to; one that does
//! not fit means we lost track, and we stop reporting until we are sure again.
//!
//! Statements are reported lazily: a statement's `RequestStart` is emitted when the backend's
//! first answer to it arrives (its RowDescription, first DataRow, CommandComplete,
//! ErrorResponse, ...), carrying the time and thread of the frontend message that sent it.
//! This is what makes "one span per statement the server executed, never one for a statement
//! it did not" hold by construction:
//!
//! - simple Query with several statements: after an ErrorResponse the server skips the rest
//!   of the string, so those statements never get an answer and never get a span. A syntax
//!   error (SQLSTATE 42601) as the first answer means the server could not parse the string at
//!   all (it parses the whole string before running any of it): one span, with the whole text;
//! - extended protocol: after an ErrorResponse the server skips every message until Sync, so
//!   the Executes queued behind the failing one never get a span. When the failing message is
//!   the Parse/Bind/Describe of an Execute sent in the same batch, that Execute gets the span
//!   (with the error); a Parse that fails with no Execute of its own queued (a client
//!   preparing a statement) gets a span of its own, so a rejected statement is never silent.
//!   Bind/Describe/Close failures with no Execute queued are not reported.
//!
//! A statement with no answer at all when the connection closes is not reported: we cannot
//! tell whether the server ran it.
//!
//! Losing track (a capture gap outside a skippable body, garbage, an answer that does not fit,
//! more than [`MAX_OPS`] outstanding messages or [`MAX_QUEUED_TEXT`] bytes of statement text
//! in them) aborts the open statement and forgets the queue, keeping only how many ReadyForQuery answers are still owed. Nothing is reported
//! until the backend is between queries with nothing we saw outstanding: a ReadyForQuery
//! that pays the last one owed. Limit: with pipelining across a loss the count may be off;
//! after [`STUCK_READY`] ReadyForQuery messages one still owed is accepted, and an answer
//! arriving with nothing outstanding starts the wait again, so a wrong pairing needs a
//! client that pipelines through the loss and keeps the window open.

use std::sync::Arc;

use super::super::{L7Event, Outcome, PgOutcome, PgStatement, Request};
use super::queue::Costed;
use super::sql::next_statement;
use super::statements::{Bound, Statements};
use super::wire::text;

/// Bound on outstanding frontend messages (a pipeline this deep is unusual; the client
/// libraries sync every few messages).
pub(super) const MAX_OPS: usize = 2048;
/// Bound on the statement text (and statement names) held by outstanding Query and Parse
/// messages: each may hold `wire::MAX_TEXT` (64 KiB), so `MAX_OPS` alone would let a client
/// that pipelines queries the server does not answer (or whose answers are not captured)
/// make the agent hold 128 MiB per connection.
pub(super) const MAX_QUEUED_TEXT: usize = 1 << 20;
/// See the module documentation.
pub(super) const STUCK_READY: u32 = 4;
/// The tag reported when an Execute's row limit was reached (PortalSuspended): not a
/// CommandComplete tag, the portal may be executed again for more rows.
pub const SUSPENDED_TAG: &str = "SUSPENDED";
/// syntax_error: for a simple Query, the server could not parse the string.
const SYNTAX_ERROR: &[u8] = b"42601";

/// Where and when a frontend message's first byte was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Start {
    pub tid: u32,
    pub goroutine: u64,
    pub first_ns: u64,
}

#[derive(Debug)]
struct QueryOp {
    start: Start,
    text: String,
    /// Where the search for the next statement resumes in `text`.
    next: usize,
    started: u32,
    /// An ErrorResponse ended the query: later answers belong to no statement.
    failed: bool,
}

impl QueryOp {
    /// Text of the next statement the backend answers. `whole`: the whole string (it failed
    /// to parse). `None`: the backend answers more statements than we split out. The last
    /// statement takes the query's own string (for the usual single statement, the event
    /// string is the one the message was read into).
    fn next_text(&mut self, whole: bool) -> Option<String> {
        let found = next_statement(&self.text, self.next);
        let last = match &found {
            Some((_, after)) => next_statement(&self.text, *after).is_none(),
            None => true,
        };
        let range = match found {
            _ if self.started == 0 && whole && !last => None,
            Some((range, after)) if !last => {
                self.next = after;
                self.started += 1;
                return self.text.get(range).map(str::to_owned);
            }
            Some((range, _)) => Some(range),
            // An empty query string (EmptyQueryResponse), or one our splitter saw as empty.
            None if self.started == 0 => None,
            None => return None,
        };
        self.started += 1;
        self.next = 0;
        let mut text = std::mem::take(&mut self.text);
        match range {
            Some(range) => {
                text.truncate(range.end);
                text.drain(..range.start);
            }
            None => {
                text.truncate(text.trim_end().len());
                let lead = text.len() - text.trim_start().len();
                text.drain(..lead);
            }
        }
        Some(text)
    }
}

#[derive(Debug)]
enum Op {
    Startup,
    /// SSLRequest or GSSENCRequest: answered by a single byte.
    Encryption,
    Query(QueryOp),
    /// `bound`: the statement it creates (`None` when the message was unreadable).
    Parse {
        group: u64,
        start: Start,
        bound: Option<Bound>,
    },
    Bind {
        group: u64,
    },
    Describe {
        group: u64,
    },
    Close {
        group: u64,
    },
    /// `bound`: `None` when the portal was bound before the agent saw the connection.
    Execute {
        group: u64,
        start: Start,
        bound: Option<Bound>,
    },
    Sync,
    FunctionCall,
}

impl Op {
    /// Answered by ReadyForQuery.
    fn sync_like(&self) -> bool {
        matches!(
            self,
            Op::Startup | Op::Query(_) | Op::Sync | Op::FunctionCall
        )
    }

    fn group(&self) -> Option<u64> {
        match self {
            Op::Parse { group, .. }
            | Op::Bind { group }
            | Op::Describe { group }
            | Op::Close { group }
            | Op::Execute { group, .. } => Some(*group),
            _ => None,
        }
    }

    /// Bytes of text this op holds that nothing else does (an Execute's statement is shared
    /// with its Parse or the statement cache).
    fn text_bytes(&self) -> usize {
        match self {
            Op::Query(q) => q.text.len(),
            Op::Parse { bound: Some(b), .. } => {
                b.name.len() + b.text.as_ref().map_or(0, |t| t.len())
            }
            _ => 0,
        }
    }
}

/// A backend message that answers an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Response<'a> {
    ParseComplete,
    BindComplete,
    CloseComplete,
    ParameterDescription,
    RowDescription,
    NoData,
    DataRow,
    CommandComplete(&'a [u8]),
    EmptyQuery,
    PortalSuspended,
    Error {
        sqlstate: &'a [u8],
        severity: &'a [u8],
    },
    CopyIn,
    CopyOut,
    CopyBoth,
    FunctionResult,
    Ready,
}

/// When and where a frontend message that makes the session lose track reports the aborted
/// statement.
pub(super) type Emit<'a> = (u64, &'a mut Vec<L7Event>);

/// An answer that cannot belong to the op it would answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mismatch(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Aligned,
    /// Lost track: `syncs` ReadyForQuery still owed for messages we saw, `trailing` messages
    /// after the last of them, `seen` ReadyForQuery since.
    AwaitReady {
        syncs: u64,
        trailing: bool,
        seen: u32,
    },
}

#[derive(Debug)]
struct Open {
    seq: u64,
    rows: u64,
}

#[derive(Debug)]
pub(super) struct Session {
    /// Costed by `Op::text_bytes`.
    queue: Costed<Op>,
    align: Align,
    /// After an extended-protocol error the server skips frontend messages until Sync; set
    /// when no Sync was queued yet, so messages still to come are skipped too.
    discarding: bool,
    open: Option<Open>,
    next_seq: u64,
    user: Option<Arc<str>>,
    database: Option<Arc<str>>,
    statements: Statements,
}

impl Session {
    pub(super) fn new() -> Self {
        Self {
            queue: Costed::default(),
            align: Align::Aligned,
            discarding: false,
            open: None,
            next_seq: 0,
            user: None,
            database: None,
            statements: Statements::new(),
        }
    }

    // ---- frontend messages

    /// StartupMessage: `database` defaults to the user name (protocol chapter, StartupMessage).
    pub(super) fn startup(
        &mut self,
        user: Option<&[u8]>,
        database: Option<&[u8]>,
        io: Emit,
    ) -> bool {
        self.user = user.map(|u| Arc::from(text(u)));
        self.database = database.or(user).map(|d| Arc::from(text(d)));
        self.push(Op::Startup, io)
    }

    pub(super) fn encryption_request(&mut self, io: Emit) -> bool {
        self.push(Op::Encryption, io)
    }

    /// Returns false when the op did not fit and the session lost track (caller reports).
    pub(super) fn query(&mut self, text: String, start: Start, io: Emit) -> bool {
        let op = Op::Query(QueryOp {
            start,
            text,
            next: 0,
            started: 0,
            failed: false,
        });
        self.skipped() || self.push(op, io)
    }

    /// Parse of `(name, text)` (`None`: unreadable). The statement is recorded even when the
    /// server skips the message: what the cache holds must not depend on whether an error
    /// arrived before or after this message was read.
    pub(super) fn parse(
        &mut self,
        group: u64,
        start: Start,
        def: Option<(&[u8], &[u8])>,
        io: Emit,
    ) -> bool {
        let bound = def.map(|(name, text)| self.statements.parse(name, text));
        if self.skipped() {
            return true;
        }
        self.push(
            Op::Parse {
                group,
                start,
                bound,
            },
            io,
        )
    }

    /// Bind of `(portal, statement)` (`None`: unreadable); recorded like Parse.
    pub(super) fn bind(&mut self, group: u64, names: Option<(&[u8], &[u8])>, io: Emit) -> bool {
        if let Some((portal, statement)) = names {
            self.statements.bind(portal, statement);
        }
        self.skipped() || self.push(Op::Bind { group }, io)
    }

    pub(super) fn describe(&mut self, group: u64, io: Emit) -> bool {
        self.skipped() || self.push(Op::Describe { group }, io)
    }

    /// Close of `(kind, name)` (`None`: unreadable); recorded like Parse.
    pub(super) fn close(&mut self, group: u64, target: Option<(u8, &[u8])>, io: Emit) -> bool {
        if let Some((kind, name)) = target {
            self.statements.close(kind, name);
        }
        self.skipped() || self.push(Op::Close { group }, io)
    }

    /// Execute of `portal` (`None`: unreadable).
    pub(super) fn execute(
        &mut self,
        group: u64,
        start: Start,
        portal: Option<&[u8]>,
        io: Emit,
    ) -> bool {
        if self.skipped() {
            return true;
        }
        let bound = portal.and_then(|p| self.statements.portal(p));
        self.push(
            Op::Execute {
                group,
                start,
                bound,
            },
            io,
        )
    }

    pub(super) fn sync(&mut self, io: Emit) -> bool {
        self.discarding = false;
        self.push(Op::Sync, io)
    }

    pub(super) fn function_call(&mut self, io: Emit) -> bool {
        self.skipped() || self.push(Op::FunctionCall, io)
    }

    /// The Sync just queued was sent during COPY FROM STDIN (CopyData follows it): the server
    /// ignores Sync and Flush in copy-in mode ("COPY Operations"), so it gets no answer.
    pub(super) fn retract_sync(&mut self) {
        match &mut self.align {
            Align::Aligned => {
                if matches!(self.queue.back(), Some(Op::Sync)) {
                    self.queue.pop_back();
                }
            }
            Align::AwaitReady { syncs, .. } => *syncs = syncs.saturating_sub(1),
        }
    }

    /// The server skips this message (see `discarding`).
    fn skipped(&self) -> bool {
        self.discarding && self.align == Align::Aligned
    }

    /// Queue `op`. False when the queue was full (`MAX_OPS` messages or `MAX_QUEUED_TEXT`
    /// bytes of text): the session lost track.
    fn push(&mut self, op: Op, (now, out): Emit) -> bool {
        let cost = op.text_bytes();
        let full = self.queue.len() >= MAX_OPS || self.queue.total() + cost > MAX_QUEUED_TEXT;
        let fits = !(self.align == Align::Aligned && full);
        if !fits {
            self.lose(now, out);
        }
        match &mut self.align {
            Align::Aligned => self.queue.push_back(op, cost),
            Align::AwaitReady {
                syncs, trailing, ..
            } => {
                if op.sync_like() {
                    *syncs += 1;
                    *trailing = false;
                } else {
                    *trailing = true;
                }
            }
        }
        fits
    }

    // ---- backend messages

    pub(super) fn expects_encryption_reply(&self) -> bool {
        self.align == Align::Aligned && matches!(self.queue.front(), Some(Op::Encryption))
    }

    /// The single-byte answer to SSLRequest/GSSENCRequest arrived.
    pub(super) fn encryption_reply(&mut self) {
        if self.expects_encryption_reply() {
            self.queue.pop_front();
        }
    }

    /// A backend answer. `Err` when it cannot belong to the next op: the session has lost
    /// track (and aborted the open statement), the caller reports the error.
    pub(super) fn respond(
        &mut self,
        r: Response,
        now: u64,
        out: &mut Vec<L7Event>,
    ) -> Result<(), Mismatch> {
        if let Align::AwaitReady { .. } = self.align {
            if r == Response::Ready {
                self.await_ready();
            }
            return Ok(());
        }
        let Some(head) = self.queue.front() else {
            // Answers to messages sent before the agent saw the connection: wait until the
            // backend is between queries.
            if !matches!(r, Response::Ready | Response::Error { .. }) {
                self.lose(now, out);
            }
            return Ok(());
        };
        let fits = match (r, head) {
            (Response::Ready, op) => op.sync_like(),
            (Response::ParseComplete, Op::Parse { .. })
            | (Response::BindComplete, Op::Bind { .. })
            | (Response::CloseComplete, Op::Close { .. })
            | (Response::NoData | Response::RowDescription, Op::Describe { .. }) => {
                self.queue.pop_front();
                return Ok(());
            }
            (Response::ParameterDescription, Op::Describe { .. })
            | (Response::FunctionResult, Op::FunctionCall) => true,
            (Response::Error { sqlstate, severity }, _) => {
                self.error(sqlstate, severity, now, out);
                return Ok(());
            }
            (
                Response::RowDescription
                | Response::DataRow
                | Response::CommandComplete(_)
                | Response::EmptyQuery
                | Response::CopyIn
                | Response::CopyOut
                | Response::CopyBoth,
                Op::Query(_) | Op::Execute { .. },
            )
            | (Response::PortalSuspended, Op::Execute { .. }) => {
                self.statement_result(r, now, out);
                return Ok(());
            }
            _ => false,
        };
        if !fits {
            self.lose(now, out);
            return Err(Mismatch(match r {
                Response::Ready => "ReadyForQuery while a message awaits another answer",
                _ => "a backend message that answers no outstanding frontend message",
            }));
        }
        if r == Response::Ready {
            self.queue.pop_front();
            // A ReadyForQuery ends the query even if a statement got no final answer.
            self.abort_open(now, out);
        }
        Ok(())
    }

    /// A result of the head op's current statement (its first one starts the statement).
    fn statement_result(&mut self, r: Response, now: u64, out: &mut Vec<L7Event>) {
        if !self.begin(false, out) {
            return;
        }
        let outcome = match r {
            Response::DataRow => {
                if let Some(open) = &mut self.open {
                    open.rows += 1;
                }
                return;
            }
            Response::CommandComplete(tag) => PgOutcome::Complete {
                tag: text(tag),
                rows: self.open.as_ref().map_or(0, |o| o.rows),
            },
            Response::PortalSuspended => PgOutcome::Complete {
                tag: SUSPENDED_TAG.to_owned(),
                rows: self.open.as_ref().map_or(0, |o| o.rows),
            },
            Response::EmptyQuery => PgOutcome::Empty,
            _ => return, // RowDescription, CopyIn/Out/Both: the statement goes on
        };
        self.end_open(outcome, now, out);
        if matches!(self.queue.front(), Some(Op::Execute { .. })) {
            self.queue.pop_front();
        }
    }

    /// Start the head op's current statement unless it is open. False when its answers belong
    /// to no statement we report.
    fn begin(&mut self, whole: bool, out: &mut Vec<L7Event>) -> bool {
        if self.open.is_some() {
            return true;
        }
        let (start, text, prepared_name) = match self.queue.front_mut() {
            Some(Op::Execute { start, bound, .. }) => match bound {
                Some(b) => (
                    *start,
                    b.text.as_deref().map(str::to_owned),
                    Some(b.name.to_string()),
                ),
                None => (*start, None, None),
            },
            Some(Op::Query(q)) if !q.failed => match q.next_text(whole) {
                Some(text) => (q.start, Some(text), None),
                None => return false,
            },
            _ => return false,
        };
        self.emit_start(start, text, prepared_name, out);
        true
    }

    fn emit_start(
        &mut self,
        start: Start,
        text: Option<String>,
        prepared_name: Option<String>,
        out: &mut Vec<L7Event>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        out.push(L7Event::RequestStart {
            seq,
            tid: start.tid,
            goroutine: start.goroutine,
            start_ns: start.first_ns,
            request: Request::Postgres(PgStatement {
                text,
                prepared_name,
                database: self.database.as_deref().map(str::to_owned),
                user: self.user.as_deref().map(str::to_owned),
            }),
        });
        self.open = Some(Open { seq, rows: 0 });
    }

    fn end_open(&mut self, outcome: PgOutcome, now: u64, out: &mut Vec<L7Event>) {
        if let Some(open) = self.open.take() {
            out.push(L7Event::ExchangeEnd {
                seq: open.seq,
                end_ns: now,
                outcome: Outcome::Postgres(outcome),
            });
        }
    }

    /// ErrorResponse: see the module documentation for whom it is reported on.
    fn error(&mut self, sqlstate: &[u8], severity: &[u8], now: u64, out: &mut Vec<L7Event>) {
        let outcome = PgOutcome::Error {
            sqlstate: text(sqlstate),
            severity: text(severity),
        };
        match self.queue.front_mut() {
            Some(Op::Execute { .. }) => {
                if self.begin(false, out) {
                    self.end_open(outcome, now, out);
                }
                self.queue.pop_front();
                self.discard_until_sync();
            }
            Some(Op::Query(_)) => {
                if self.begin(sqlstate == SYNTAX_ERROR, out) {
                    self.end_open(outcome, now, out);
                }
                if let Some(Op::Query(q)) = self.queue.front_mut() {
                    q.failed = true;
                }
            }
            Some(op) if op.group().is_some() => {
                let group = op.group();
                let failed = self.queue.pop_front();
                let batch = self
                    .queue
                    .iter()
                    .position(|op| matches!(op, Op::Sync))
                    .unwrap_or(self.queue.len());
                let execute = self.queue.iter().take(batch).find_map(|op| match op {
                    Op::Execute {
                        group: g,
                        start,
                        bound,
                    } if Some(*g) == group => Some((*start, bound.clone())),
                    _ => None,
                });
                let blamed = execute.or(match failed {
                    Some(Op::Parse {
                        start,
                        bound: Some(b),
                        ..
                    }) => Some((start, Some(b))),
                    _ => None,
                });
                if let Some((start, bound)) = blamed {
                    let (text, name) = match bound {
                        Some(b) => (
                            b.text.as_deref().map(str::to_owned),
                            Some(b.name.to_string()),
                        ),
                        None => (None, None),
                    };
                    self.emit_start(start, text, name, out);
                    self.end_open(outcome, now, out);
                }
                self.discard_until_sync();
            }
            // Startup (authentication failed), Sync (commit failed), FunctionCall, or nothing
            // we saw: no statement to report it on.
            _ => {}
        }
    }

    /// The server skips every message until Sync after an extended-protocol error.
    fn discard_until_sync(&mut self) {
        while let Some(op) = self.queue.front() {
            if matches!(op, Op::Sync) {
                return;
            }
            self.queue.pop_front();
        }
        self.discarding = true;
    }

    fn await_ready(&mut self) {
        if let Align::AwaitReady {
            syncs,
            trailing,
            seen,
        } = &mut self.align
        {
            *syncs = syncs.saturating_sub(1);
            *seen = seen.saturating_add(1);
            if !*trailing && (*syncs == 0 || (*seen >= STUCK_READY && *syncs <= 1)) {
                self.align = Align::Aligned;
            }
        }
    }

    /// Stop reporting until realigned (see the module documentation).
    pub(super) fn lose(&mut self, now: u64, out: &mut Vec<L7Event>) {
        self.abort_open(now, out);
        self.forget_queue();
    }

    fn forget_queue(&mut self) {
        let (mut syncs, mut trailing) = match self.align {
            Align::AwaitReady {
                syncs, trailing, ..
            } => (syncs, trailing),
            Align::Aligned => (0, false),
        };
        for op in self.queue.drain() {
            if op.sync_like() {
                syncs += 1;
                trailing = false;
            } else {
                trailing = true;
            }
        }
        self.discarding = false;
        self.align = Align::AwaitReady {
            syncs,
            trailing,
            seen: 0,
        };
    }

    /// End the open statement, if any, as aborted.
    pub(super) fn abort_open(&mut self, now: u64, out: &mut Vec<L7Event>) {
        self.end_open(PgOutcome::Aborted, now, out);
    }

    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Text bytes held by the queued messages.
    #[cfg(test)]
    pub(super) fn queued_text(&self) -> usize {
        self.queue.total()
    }

    #[cfg(test)]
    pub(super) fn aligned(&self) -> bool {
        self.align == Align::Aligned
    }
}
