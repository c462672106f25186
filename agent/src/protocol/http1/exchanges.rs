//! Requests waiting for their response, matched first-in first-out: HTTP/1.1 has no request
//! ids, so the n-th response answers the n-th request (RFC 9112 §9.3.2).
//!
//! Besides live exchanges (a `RequestStart` was emitted) the queue holds *ghosts*: requests
//! that certainly exist but whose head we lost (a capture gap) or could not use. Their
//! responses still arrive and must be skipped, or every later response would be paired with
//! the wrong request. `lost` counts responses owed to requests that already left the queue
//! (overflow); they precede everything in the queue.
//!
//! Limit: when response bytes are lost (uncaptured or garbled) while several pipelined
//! requests wait, how many responses the loss swallowed is unknowable. We abort the oldest
//! exchange (its response certainly was hit) and pair on; without pipelining, the usual case,
//! at most one exchange waits and this is exact.

use std::collections::VecDeque;

use super::super::h2c::{H2cOffer, UpgradedExchange};
use super::super::{HttpOutcome, HttpRequest, L7Event, Outcome, Request};
use crate::protocol::HttpEnd;

/// Bound on requests awaiting a response. Pipelining this deep is unheard of for HTTP/1; a
/// longer queue means the response direction is not being seen.
pub(super) const MAX_PENDING: usize = 64;

/// What framing of the response depends on in the request (RFC 9112 §6.3 items 1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqKind {
    Normal,
    Head,
    Connect,
}

impl ReqKind {
    pub(super) fn of(method: &str) -> Self {
        // Methods are case-sensitive (RFC 9110 §9.1).
        match method {
            "HEAD" => ReqKind::Head,
            "CONNECT" => ReqKind::Connect,
            _ => ReqKind::Normal,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    /// `None` for a ghost.
    seq: Option<u64>,
    kind: ReqKind,
    request_body_size: u64,
    /// The request offered to switch to HTTP/2 (`Upgrade: h2c`).
    h2c: Option<H2cOffer>,
}

/// Whom a response answers, decided when its head is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The queue entry with this id (it was the front then).
    Entry(u64),
    /// A request that already left the queue (see `lost`).
    Lost,
    /// No request is waiting (we joined mid-connection, or after a resync).
    Nobody,
}

/// Where and when a request's first byte was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Start {
    pub tid: u32,
    pub goroutine: u64,
    pub first_ns: u64,
}

#[derive(Debug, Default)]
pub(super) struct Exchanges {
    queue: VecDeque<Pending>,
    next_seq: u64,
    next_id: u64,
    lost: u64,
    /// Entry whose response body is being read (overflow must not count it as lost).
    responding: Option<u64>,
}

impl Exchanges {
    /// A request head was parsed: emit `RequestStart` and queue the exchange. Returns its id.
    pub(super) fn open(
        &mut self,
        kind: ReqKind,
        start: Start,
        request: HttpRequest,
        h2c: Option<H2cOffer>,
        now_ns: u64,
        out: &mut Vec<L7Event>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.push(Some(seq), kind, now_ns, out);
        if let Some(p) = self.queue.back_mut() {
            p.h2c = h2c;
        }
        out.push(L7Event::RequestStart {
            seq,
            tid: start.tid,
            goroutine: start.goroutine,
            start_ns: start.first_ns,
            request: Request::Http1(request),
        });
        id
    }

    /// A request we cannot report exists: its response must be skipped.
    pub(super) fn ghost(&mut self, now_ns: u64, out: &mut Vec<L7Event>) {
        self.push(None, ReqKind::Normal, now_ns, out);
    }

    fn push(
        &mut self,
        seq: Option<u64>,
        kind: ReqKind,
        now_ns: u64,
        out: &mut Vec<L7Event>,
    ) -> u64 {
        if self.queue.len() >= MAX_PENDING {
            if let Some(oldest) = self.queue.pop_front() {
                emit_end(&oldest, HttpOutcome::Aborted, now_ns, out);
                if self.responding == Some(oldest.id) {
                    // Its response is the one being read: it just completes unreported.
                    self.responding = None;
                } else {
                    self.lost = self.lost.saturating_add(1);
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Pending {
            id,
            seq,
            kind,
            request_body_size: 0,
            h2c: None,
        });
        id
    }

    /// Request body bytes for the exchange `id` (normally the newest).
    pub(super) fn add_request_body(&mut self, id: u64, n: u64) {
        if let Some(p) = self.queue.iter_mut().rev().find(|p| p.id == id) {
            p.request_body_size = p.request_body_size.saturating_add(n);
        }
    }

    /// Whom the next response answers, and the kind of that request.
    pub(super) fn next_owner(&self) -> (Owner, ReqKind) {
        if self.lost > 0 {
            return (Owner::Lost, ReqKind::Normal);
        }
        match self.queue.front() {
            Some(p) => (Owner::Entry(p.id), p.kind),
            None => (Owner::Nobody, ReqKind::Normal),
        }
    }

    /// The response of `owner` has a body still to come.
    pub(super) fn responding(&mut self, owner: Owner) {
        self.responding = match owner {
            Owner::Entry(id) => Some(id),
            _ => None,
        };
    }

    /// `owner`'s exchange is over with `outcome` (a complete final response, or aborted).
    pub(super) fn finish(
        &mut self,
        owner: Owner,
        outcome: HttpOutcome,
        end_ns: u64,
        out: &mut Vec<L7Event>,
    ) {
        self.responding = None;
        match owner {
            Owner::Entry(id) => {
                // Not the front any more: overflow already aborted it.
                if self.queue.front().is_some_and(|p| p.id == id) {
                    if let Some(p) = self.queue.pop_front() {
                        emit_end(&p, outcome, end_ns, out);
                    }
                }
            }
            Owner::Lost => self.lost = self.lost.saturating_sub(1),
            Owner::Nobody => {}
        }
    }

    /// How many seqs were handed out (the requests are numbered `0..seqs()`).
    pub(super) fn seqs(&self) -> u64 {
        self.next_seq
    }

    /// The newest request offered `Upgrade: h2c` and is unanswered: the client's HTTP/2
    /// preface may follow it (once the client has read the 101).
    pub(super) fn awaiting_h2c(&self) -> bool {
        self.lost == 0 && self.queue.back().is_some_and(|p| p.h2c.is_some())
    }

    /// The `Upgrade: h2c` offer of `owner`'s request, if it made one.
    pub(super) fn h2c_offer(&self, owner: Owner) -> Option<&H2cOffer> {
        match owner {
            Owner::Entry(id) => self
                .queue
                .front()
                .filter(|p| p.id == id)
                .and_then(|p| p.h2c.as_ref()),
            _ => None,
        }
    }

    /// The server switched to HTTP/2 answering `owner`: its exchange leaves the queue without
    /// an end (stream 1 of the HTTP/2 connection will end it). `None` when it was a ghost or
    /// not a queued request.
    pub(super) fn take_upgraded(&mut self, owner: Owner) -> Option<UpgradedExchange> {
        self.responding = None;
        match owner {
            Owner::Entry(id) if self.queue.front().is_some_and(|p| p.id == id) => {
                let p = self.queue.pop_front()?;
                Some(UpgradedExchange {
                    seq: p.seq?,
                    request_body_size: p.request_body_size,
                })
            }
            Owner::Lost => {
                self.lost = self.lost.saturating_sub(1);
                None
            }
            _ => None,
        }
    }

    /// The next response is lost (garbled or uncaptured): give up on the oldest exchange.
    pub(super) fn abort_next(&mut self, end_ns: u64, out: &mut Vec<L7Event>) {
        let (owner, _) = self.next_owner();
        self.finish(owner, HttpOutcome::Aborted, end_ns, out);
    }

    /// End every open exchange as aborted.
    pub(super) fn abort_all(&mut self, end_ns: u64, out: &mut Vec<L7Event>) {
        for p in self.queue.drain(..) {
            emit_end(&p, HttpOutcome::Aborted, end_ns, out);
        }
        self.lost = 0;
        self.responding = None;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

fn emit_end(p: &Pending, outcome: HttpOutcome, end_ns: u64, out: &mut Vec<L7Event>) {
    if let Some(seq) = p.seq {
        out.push(L7Event::ExchangeEnd {
            seq,
            end_ns,
            outcome: Outcome::Http1(HttpEnd {
                outcome,
                request_body_size: p.request_body_size,
            }),
        });
    }
}
