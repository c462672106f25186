//! The backend (server to client) stream: message framing and handing each answer to the
//! session. Row data is never kept: DataRow, CopyData, RowDescription and the other bodies the
//! span does not need are skipped as they arrive. Of an ErrorResponse only the severity and
//! SQLSTATE are read; the message, detail and other fields can quote values.

use super::super::{L7Event, ParseError, SegmentCtx};
use super::detect::{scan_backend, Scan};
use super::session::{Response, Session};
use super::wire::{backend_fixed_body, backend_limit, cstr, Header, ERROR_HEAD, HEADER, TAG_HEAD};
use super::{Io, Stop};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Boundary,
    Skip {
        remaining: u64,
    },
    /// Lost sync: looking for a ReadyForQuery.
    Resync,
}

#[derive(Debug)]
pub(super) struct Backend {
    state: State,
    /// At a boundary we know: errors are reported.
    trusted: bool,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

fn error(what: &'static str, detail: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        protocol: crate::protocol::ProtocolId::Postgres,
        what,
        detail: detail.into(),
    }
}

/// Severity (`V`, the non-localised one, preferred over `S`) and SQLSTATE (`C`) of an
/// ErrorResponse body ("Error and Notice Message Fields"). Fields cut off by the head bound
/// are simply absent.
fn error_fields(mut body: &[u8]) -> (&[u8], &[u8]) {
    let (mut severity, mut localised, mut code): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    while let Some((&field, rest)) = body.split_first() {
        let Some((value, rest)) = cstr(rest) else {
            break;
        };
        // Both are short words; anything else is not what the server sends.
        let value = &value[..value.len().min(16)];
        match field {
            0 => break,
            b'V' => severity = value,
            b'S' => localised = value,
            b'C' => code = value,
            _ => {}
        }
        body = rest;
    }
    let severity = if severity.is_empty() {
        localised
    } else {
        severity
    };
    (code, severity)
}

impl Backend {
    pub(super) fn new() -> Self {
        Self {
            state: State::Boundary,
            trusted: true,
        }
    }

    pub(super) fn parse(&mut self, buf: &[u8], io: &mut Io) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            match self.state {
                State::Skip { remaining } => {
                    let n = remaining.min((buf.len() - pos) as u64);
                    pos += n as usize;
                    self.state = match remaining - n {
                        0 => State::Boundary,
                        remaining => State::Skip { remaining },
                    };
                }
                State::Resync => match scan_backend(buf, pos) {
                    Scan::Found(at) => {
                        pos = at;
                        self.state = State::Boundary;
                    }
                    Scan::Partial(at) => {
                        pos = at;
                        break;
                    }
                    Scan::Nothing => pos = buf.len(),
                },
                State::Boundary => match self.message(&buf[pos..], io) {
                    Step::NeedMore => break,
                    Step::Consumed(n) => pos += n,
                },
            }
            if io.stop.is_some() {
                return buf.len();
            }
        }
        pos
    }

    fn fail(&mut self, what: &'static str, detail: String, io: &mut Io) -> Step {
        if self.trusted {
            io.errors.push(error(what, detail));
        }
        io.session.lose(io.ctx.last_ns, io.out);
        self.state = State::Resync;
        self.trusted = false;
        Step::Consumed(1)
    }

    fn message(&mut self, bytes: &[u8], io: &mut Io) -> Step {
        if io.session.expects_encryption_reply() {
            // The single-byte answer to SSLRequest/GSSENCRequest.
            match bytes[0] {
                b'N' => {
                    io.session.encryption_reply();
                    return Step::Consumed(1);
                }
                b'S' | b'G' => {
                    // TLS or GSSAPI encryption follows: nothing more is readable.
                    io.stop = Some(Stop::Encrypted);
                    return Step::Consumed(bytes.len());
                }
                // A server that predates the request answers with an ErrorResponse.
                _ => io.session.encryption_reply(),
            }
        }
        let ty = bytes[0];
        let Some(limit) = backend_limit(ty) else {
            return self.fail(
                "backend message",
                format!("unknown message type 0x{ty:02x}"),
                io,
            );
        };
        let Some(h) = Header::read(bytes) else {
            return Step::NeedMore;
        };
        let bad_fixed = backend_fixed_body(ty).is_some_and(|n| u64::from(n) != h.body_len());
        if h.len < 4 || h.len > limit || bad_fixed {
            return self.fail(
                "backend message",
                format!("{:?} length {}", ty as char, h.len as i32),
                io,
            );
        }
        let body_len = h.body_len();
        let head = match ty {
            b'C' => body_len.min(TAG_HEAD as u64),
            b'E' => body_len.min(ERROR_HEAD as u64),
            b'Z' => body_len,
            _ => 0,
        } as usize;
        let Some(body) = bytes.get(HEADER..HEADER + head) else {
            return Step::NeedMore;
        };
        let response = match ty {
            b'1' => Response::ParseComplete,
            b'2' => Response::BindComplete,
            b'3' => Response::CloseComplete,
            b't' => Response::ParameterDescription,
            b'T' => Response::RowDescription,
            b'n' => Response::NoData,
            b'D' => Response::DataRow,
            b'C' => Response::CommandComplete(cstr(body).map_or(body, |(tag, _)| tag)),
            b'I' => Response::EmptyQuery,
            b's' => Response::PortalSuspended,
            b'E' => {
                let (sqlstate, severity) = error_fields(body);
                Response::Error { sqlstate, severity }
            }
            b'G' => Response::CopyIn,
            b'H' => Response::CopyOut,
            b'W' => Response::CopyBoth,
            b'V' => Response::FunctionResult,
            b'Z' => {
                if !matches!(body, [b'I' | b'T' | b'E']) {
                    return self.fail("backend message", "ReadyForQuery status".into(), io);
                }
                Response::Ready
            }
            // Authentication, ParameterStatus, BackendKeyData, NegotiateProtocolVersion,
            // NoticeResponse, NotificationResponse, CopyData, CopyDone: nothing to pair.
            _ => {
                return self.skip_body(body_len, 0);
            }
        };
        if let Err(mismatch) = io.session.respond(response, io.ctx.last_ns, io.out) {
            if self.trusted {
                io.errors.push(error("message order", mismatch.0));
            }
        }
        self.trusted = true;
        self.skip_body(body_len, head)
    }

    /// The message's header and `head` body bytes are handled: skip the rest of the body.
    fn skip_body(&mut self, body_len: u64, head: usize) -> Step {
        let rest = body_len - head as u64;
        if rest > 0 {
            self.state = State::Skip { remaining: rest };
        }
        Step::Consumed(HEADER + head)
    }

    /// `n` uncaptured bytes follow everything parsed so far; see `PgConn::skip`.
    pub(super) fn skip(
        &mut self,
        n: u64,
        unconsumed: usize,
        ctx: &SegmentCtx,
        session: &mut Session,
        out: &mut Vec<L7Event>,
    ) -> bool {
        if let State::Skip { remaining } = self.state {
            if unconsumed == 0 && n <= remaining {
                self.state = match remaining - n {
                    0 => State::Boundary,
                    remaining => State::Skip { remaining },
                };
                return true;
            }
        }
        session.lose(ctx.last_ns, out);
        self.lose_sync();
        false
    }

    /// Forget where messages start: resume at the next plausible one.
    pub(super) fn lose_sync(&mut self) {
        self.state = State::Resync;
        self.trusted = false;
    }
}
