//! HTTP/2 streams as exchanges (RFC 9113 section 5.1, 8.1): which header fields are copied
//! out, the bounded set of open client-initiated streams, and the `RequestStart` /
//! `ExchangeEnd` events. Owns the guarantee that an end is only emitted for a started stream,
//! and at most once. Frame parsing and HPACK are elsewhere (`super`, `super::hpack`).

use std::collections::BTreeMap;

use super::hpack::Field;
use crate::protocol::h2c::UpgradedExchange;
use crate::protocol::H2End;
use crate::protocol::{H2Outcome, H2Request, L7Event, Outcome, Request, SegmentCtx};

/// Open streams tracked per connection; beyond this the oldest is aborted.
pub const MAX_STREAMS: usize = 1024;
/// Copied header values are cut at this length (they only feed span attributes).
const MAX_VALUE: usize = 8 * 1024;

/// What the agent keeps of a decoded header block.
#[derive(Debug, Default)]
pub struct Headers {
    pub request: H2Request,
    pub status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub content_length: Option<u64>,
    /// Any pseudo-header (`:...`) decoded.
    pub pseudo: bool,
    pub fields: u32,
}

impl Headers {
    /// Record one field. Only the listed names are copied, each at most once (the first
    /// occurrence: RFC 9113 section 8.3 allows one of each pseudo-header, and a repeated field
    /// must not cost a copy per repeat); Authorization, Cookie and all other values are
    /// dropped here.
    pub fn add(&mut self, f: Field<'_>) {
        self.fields += 1;
        let (Some(name), Some(value)) = (f.name, f.value) else {
            self.request.unknown_fields += 1;
            return;
        };
        let text = |slot: &mut Option<String>| {
            if slot.is_none() {
                let v = &value[..value.len().min(MAX_VALUE)];
                *slot = Some(String::from_utf8_lossy(v).into_owned());
            }
        };
        if name.first() == Some(&b':') {
            self.pseudo = true;
        }
        let r = &mut self.request;
        match name {
            b":method" => text(&mut r.method),
            b":path" => text(&mut r.path),
            b":authority" => text(&mut r.authority),
            b":scheme" => text(&mut r.scheme),
            b"user-agent" => text(&mut r.user_agent),
            b"content-type" => text(&mut r.content_type),
            b"traceparent" => text(&mut r.traceparent),
            b"tracestate" => match &mut r.tracestate {
                // RFC 9110 list semantics, joined up to the copy bound.
                Some(prev) if prev.len() < MAX_VALUE => {
                    let room = MAX_VALUE - prev.len();
                    prev.push(',');
                    prev.push_str(&String::from_utf8_lossy(&value[..value.len().min(room)]));
                }
                Some(_) => {}
                None => text(&mut r.tracestate),
            },
            b":status" if self.status.is_none() && value.len() == 3 => {
                self.status = small_number(value, 3)
            }
            b"content-length" if self.content_length.is_none() => {
                self.content_length = small_number(value.trim_ascii(), 20)
            }
            b"grpc-status" if self.grpc_status.is_none() => {
                self.grpc_status = small_number(value, 10)
            }
            _ => {}
        }
    }
}

/// A decimal number of at most `max_digits` digits (longer values are not looked at).
fn small_number<T: std::str::FromStr>(value: &[u8], max_digits: usize) -> Option<T> {
    if value.is_empty() || value.len() > max_digits || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[derive(Debug, Default)]
struct Stream {
    /// The exchange's `seq` in the events.
    seq: u64,
    request_body: u64,
    response_body: u64,
    /// A final (non-1xx) response head was seen.
    final_seen: bool,
    status: Option<u16>,
    grpc_status: Option<u32>,
    /// The final head's content-length, and when the response body reached it.
    content_length: Option<u64>,
    body_done_ns: Option<u64>,
}

impl Stream {
    /// The response is complete by its content-length even if END_STREAM never arrived: some
    /// servers (Node.js) send END_STREAM in a later empty DATA frame, and a client that
    /// stops reading once it has the body (curl) resets the stream or closes first.
    fn complete_by_length(&self) -> Option<u64> {
        let cl = self.content_length?;
        (self.final_seen && self.response_body >= cl).then_some(self.body_done_ns.unwrap_or(0))
    }
}

/// The open exchanges of one connection, keyed by stream id (ids only grow, so the smallest
/// is the oldest).
#[derive(Debug, Default)]
pub struct Streams {
    open: BTreeMap<u32, Stream>,
    /// Highest client stream id seen: a HEADERS on a lower id is not a new request.
    max_client_id: u32,
    /// Added to a stream's id to make its `seq` (0 but after some h2c upgrades, see
    /// [`Streams::upgraded`]).
    seq_offset: u64,
}

impl Streams {
    pub fn is_open(&self, id: u32) -> bool {
        self.open.contains_key(&id)
    }

    pub fn max_client_id(&self) -> u32 {
        self.max_client_id
    }

    pub fn saw_client_id(&mut self, id: u32) {
        self.max_client_id = self.max_client_id.max(id);
    }

    /// The connection was upgraded from HTTP/1.1 (RFC 7540 §3.2): stream 1 is the upgrade
    /// request, already started (as `exchange.seq`) by the HTTP/1 parser; its response ends it.
    ///
    /// Streams are numbered by id so both ends of a connection agree on a stream's `seq` (the
    /// span layer pairs a same-node client and server by it). The upgrade request keeps its
    /// HTTP/1 `seq`, usually 0 (clients upgrade on a connection's first request). When the
    /// HTTP/1 parser used seqs from 3 up (`http1_seqs`: it numbered `0..http1_seqs`), stream
    /// ids 3, 5, ... would reuse them (the upgrade's possibly still open), so every stream's
    /// `seq` moves above the 31-bit stream id space instead: seqs stay unique on the
    /// connection.
    pub fn upgraded(&mut self, exchange: Option<UpgradedExchange>, http1_seqs: u64) {
        self.saw_client_id(1);
        if http1_seqs > 3 {
            self.seq_offset = 1 << 32;
        }
        let Some(ex) = exchange else {
            return;
        };
        self.open.insert(
            1,
            Stream {
                seq: ex.seq,
                request_body: ex.request_body_size,
                ..Stream::default()
            },
        );
    }

    /// A request's header block is complete: `start` is the segment holding its first byte.
    pub fn start(
        &mut self,
        id: u32,
        mut h: Headers,
        start: SegmentCtx,
        now_ns: u64,
        out: &mut Vec<L7Event>,
    ) {
        self.saw_client_id(id);
        if self.open.len() >= MAX_STREAMS {
            if let Some(oldest) = self.open.keys().next().copied() {
                self.end(oldest, now_ns, H2Outcome::Aborted, out);
            }
        }
        h.request.stream_id = id;
        let seq = u64::from(id) + self.seq_offset;
        out.push(L7Event::RequestStart {
            seq,
            tid: start.tid,
            goroutine: start.goroutine,
            start_ns: start.first_ns,
            request: Request::Http2(h.request),
        });
        self.open.insert(
            id,
            Stream {
                seq,
                ..Stream::default()
            },
        );
    }

    pub fn count_data(&mut self, id: u32, from_client: bool, n: u64, now_ns: u64) {
        if let Some(s) = self.open.get_mut(&id) {
            if from_client {
                s.request_body = s.request_body.saturating_add(n);
            } else {
                s.response_body = s.response_body.saturating_add(n);
                if s.body_done_ns.is_none()
                    && s.final_seen
                    && s.content_length.is_some_and(|cl| s.response_body >= cl)
                {
                    s.body_done_ns = Some(now_ns);
                }
            }
        }
    }

    /// A response header block on an open stream (section 8.1): interim 1xx heads are
    /// skipped; the first final head gives the status, later ones are trailers. Returns
    /// whether the block is the final head or trailers (END_STREAM on it ends the stream).
    pub fn response_headers(&mut self, id: u32, h: &Headers) {
        let Some(s) = self.open.get_mut(&id) else {
            return;
        };
        if !s.final_seen {
            if matches!(h.status, Some(100..=199)) {
                return;
            }
            s.final_seen = true;
            s.status = h.status;
            s.content_length = h.content_length;
            if s.content_length == Some(0) {
                s.body_done_ns = Some(0);
            }
        }
        if h.grpc_status.is_some() {
            s.grpc_status = h.grpc_status;
        }
    }

    /// The server ended its side of the stream.
    pub fn response_end(&mut self, id: u32, end_ns: u64, out: &mut Vec<L7Event>) {
        let Some(s) = self.open.get(&id) else {
            return;
        };
        let outcome = H2Outcome::Response {
            status: s.status,
            grpc_status: s.grpc_status,
            response_body_size: s.response_body,
        };
        // The body was complete by its content-length before END_STREAM: the response ended
        // then (the peer's span, which may have stopped reading there, ends there too).
        let end_ns = match s.complete_by_length() {
            Some(done) if done > 0 => done.min(end_ns),
            _ => end_ns,
        };
        self.end(id, end_ns, outcome, out);
    }

    /// End `id` (if open) with `outcome`.
    pub fn end(&mut self, id: u32, end_ns: u64, outcome: H2Outcome, out: &mut Vec<L7Event>) {
        if let Some(s) = self.open.remove(&id) {
            let (end_ns, outcome) = match (&outcome, s.complete_by_length()) {
                (H2Outcome::Reset { .. } | H2Outcome::Aborted, Some(done_ns)) => (
                    if done_ns > 0 { done_ns } else { end_ns },
                    H2Outcome::Response {
                        status: s.status,
                        grpc_status: s.grpc_status,
                        response_body_size: s.response_body,
                    },
                ),
                _ => (end_ns, outcome),
            };
            out.push(L7Event::ExchangeEnd {
                seq: s.seq,
                end_ns,
                outcome: Outcome::Http2(H2End {
                    outcome,
                    request_body_size: s.request_body,
                }),
            });
        }
    }

    /// GOAWAY from the server (section 6.8): streams above `last` were not processed.
    pub fn goaway(&mut self, last: u32, error_code: u32, now_ns: u64, out: &mut Vec<L7Event>) {
        let ids: Vec<u32> = self
            .open
            .range(last.saturating_add(1)..)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.end(id, now_ns, H2Outcome::Reset { error_code }, out);
        }
    }

    pub fn abort_all(&mut self, now_ns: u64, out: &mut Vec<L7Event>) {
        let ids: Vec<u32> = self.open.keys().copied().collect();
        for id in ids {
            self.end(id, now_ns, H2Outcome::Aborted, out);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}
