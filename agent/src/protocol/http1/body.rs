//! Message bodies: counted, never kept (RFC 9112 §6.3 length rules, §7.1 chunked coding).
//!
//! A [`Body`] is fed whatever bytes follow the head and says how many of them belong to the
//! body and how many of those are payload (chunk framing excluded). It holds no buffer: the
//! chunked decoder is a byte-level state machine, so a chunk-size line, a CRLF or a trailer
//! split between two reads resumes where it stopped. Chunk data and Content-Length bodies are
//! skipped in O(1) whatever their size.

/// Longest chunk-size line we accept (size, extensions, CRLF). RFC 9112 sets no limit;
/// servers do, and a longer line means we are not looking at chunk framing.
const MAX_CHUNK_LINE: u32 = 4096;
/// Longest trailer section we accept, like a head (RFC 9112 §7.1.2).
const MAX_TRAILERS: u32 = 64 * 1024;

/// How a body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Body {
    /// Content-Length: this many bytes are still due.
    Length { remaining: u64 },
    /// Transfer-Encoding ending in chunked.
    Chunked(Chunked),
    /// Response without length: ends when the connection closes (RFC 9112 §6.3 item 8).
    UntilClose,
}

/// What one [`Body::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fed {
    /// Bytes of the input that belong to the body (framing included).
    pub consumed: usize,
    /// Payload bytes among them.
    pub payload: u64,
    /// The body's last byte was among them.
    pub done: bool,
}

/// The body framing is broken at input offset `at` (bytes before it were valid framing and
/// carried `payload` payload bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Broken {
    pub at: usize,
    pub payload: u64,
    pub detail: &'static str,
}

/// What an uncaptured gap of `n` bytes means for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gap {
    /// All `n` bytes were payload; the body may be complete now (`done`).
    Inside { done: bool },
    /// The body ended inside the gap after `payload` more payload bytes; the rest of the gap
    /// belonged to whatever followed.
    Overran { payload: u64 },
    /// The gap covers framing we cannot reconstruct.
    Lost,
}

impl Body {
    pub(super) fn chunked() -> Self {
        Body::Chunked(Chunked::default())
    }

    /// Consume the body bytes at the start of `buf`.
    pub(super) fn feed(&mut self, buf: &[u8]) -> Result<Fed, Broken> {
        match self {
            Body::Length { remaining } => {
                let take = (*remaining).min(buf.len() as u64);
                *remaining -= take;
                // `take` <= buf.len(), so the cast back is lossless.
                Ok(Fed {
                    consumed: take as usize,
                    payload: take,
                    done: *remaining == 0,
                })
            }
            Body::Chunked(c) => c.feed(buf),
            Body::UntilClose => Ok(Fed {
                consumed: buf.len(),
                payload: buf.len() as u64,
                done: false,
            }),
        }
    }

    /// `n` bytes of the body's direction moved without being captured.
    pub(super) fn gap(&mut self, n: u64) -> Gap {
        match self {
            Body::Length { remaining } if n <= *remaining => {
                *remaining -= n;
                Gap::Inside {
                    done: *remaining == 0,
                }
            }
            Body::Length { remaining } => {
                let payload = *remaining;
                *remaining = 0;
                Gap::Overran { payload }
            }
            Body::Chunked(c) => c.gap(n),
            Body::UntilClose => Gap::Inside { done: false },
        }
    }
}

/// Where the chunked decoder is (RFC 9112 §7.1:
/// `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`, `last-chunk = 1*"0" [ chunk-ext ] CRLF`,
/// then `trailer-section CRLF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading hex digits of a chunk size.
    #[default]
    Size,
    /// After the digits: optional whitespace (BWS) before `;` or the line end.
    SizeWs,
    /// Inside chunk extensions: skipped up to the line end.
    Ext,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Inside chunk data; `Chunked::size` bytes are still due.
    Data,
    /// Chunk data complete: expecting CRLF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Saw the CR of the final empty line.
    FinalLf,
    Done,
}

/// Streaming chunked decoder: no buffer, survives any split of its input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Chunked {
    state: State,
    /// Chunk size being read, then payload bytes still due in the current chunk.
    size: u64,
    /// Length of the current size line (bounded by `MAX_CHUNK_LINE`).
    line: u32,
    /// Length of the trailer section so far (bounded by `MAX_TRAILERS`).
    trailers: u32,
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Chunked {
    fn feed(&mut self, buf: &[u8]) -> Result<Fed, Broken> {
        let mut i = 0;
        let mut payload = 0u64;
        let broken = |at: usize, payload: u64, detail: &'static str| {
            Err(Broken {
                at,
                payload,
                detail,
            })
        };
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                // Skip chunk data wholesale: this is where big bodies go.
                let take = self.size.min((buf.len() - i) as u64);
                i += take as usize;
                payload += take;
                self.size -= take;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            match self.state {
                State::Size | State::SizeWs | State::Ext | State::SizeLf => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return broken(i, payload, "chunk-size line too long");
                    }
                }
                _ => {}
            }
            match self.state {
                State::Size => match (hex_value(b), self.line) {
                    (Some(d), _) => {
                        match self.size.checked_mul(16).and_then(|v| v.checked_add(d)) {
                            Some(v) => self.size = v,
                            None => return broken(i, payload, "chunk size overflows 64 bits"),
                        }
                    }
                    (None, 1) => return broken(i, payload, "chunk size is not hexadecimal"),
                    (None, _) => match b {
                        b' ' | b'\t' => self.state = State::SizeWs,
                        b';' => self.state = State::Ext,
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => self.end_size_line(),
                        _ => return broken(i, payload, "unexpected byte after chunk size"),
                    },
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Ext,
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return broken(i, payload, "unexpected byte after chunk size"),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(),
                    // quoted-string and token never contain other controls (RFC 9110 §5.6).
                    b'\t' => {}
                    0..=0x1f | 0x7f => {
                        return broken(i, payload, "control byte in chunk extension")
                    }
                    _ => {}
                },
                State::SizeLf => match b {
                    b'\n' => self.end_size_line(),
                    _ => return broken(i, payload, "CR without LF after chunk size"),
                },
                // A lone LF is tolerated as a line end, as RFC 9112 §2.2 allows for heads.
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => self.state = State::Size,
                    _ => return broken(i, payload, "chunk data not followed by CRLF"),
                },
                State::DataLf => match b {
                    b'\n' => self.state = State::Size,
                    _ => return broken(i, payload, "chunk data not followed by CRLF"),
                },
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    b'\n' => self.state = State::Done,
                    _ => {
                        self.state = State::Trailer;
                        self.count_trailer_byte().map_err(|d| Broken {
                            at: i,
                            payload,
                            detail: d,
                        })?;
                    }
                },
                State::Trailer => {
                    self.count_trailer_byte().map_err(|d| Broken {
                        at: i,
                        payload,
                        detail: d,
                    })?;
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::FinalLf => match b {
                    b'\n' => self.state = State::Done,
                    _ => return broken(i, payload, "CR without LF ending the trailer section"),
                },
                State::Data | State::Done => {}
            }
            i += 1;
        }
        Ok(Fed {
            consumed: i,
            payload,
            done: self.state == State::Done,
        })
    }

    fn end_size_line(&mut self) {
        self.line = 0;
        // last-chunk (size 0) is followed by the trailer section.
        self.state = if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        };
    }

    fn count_trailer_byte(&mut self) -> Result<(), &'static str> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err("trailer section too long");
        }
        Ok(())
    }

    fn gap(&mut self, n: u64) -> Gap {
        // Only chunk data can be accounted for: anything else hid framing we would need.
        if self.state == State::Data && n <= self.size {
            self.size -= n;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Gap::Inside { done: false };
        }
        Gap::Lost
    }
}
