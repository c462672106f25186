use super::*;
use crate::protocol::HttpEnd;
use crate::protocol::ProtocolId;
use agent_common::{EventHeader, EventKind, EVENT_VERSION};

fn addr(port: u16) -> SockAddr {
    SockAddr::v4([127, 0, 0, 1], port)
}

fn meta(id: u64, pid: u32, role: Role, l: u16, r: u16) -> ConnMeta {
    ConnMeta {
        conn_id: id,
        pid,
        fd: id as u32,
        role,
        local: addr(l),
        remote: addr(r),
        comm: [0; 16],
        tls: false,
        gaps: 0,
    }
}

fn table(max: usize) -> ConnTable {
    ConnTable::new(
        Limits {
            max,
            idle_ns: 1_000,
            max_buffer_bytes: 8192,
        },
        Arc::new(Telemetry::new()),
    )
}

fn data(id: u64, dir: Direction, ts: u64, len: u32, orig: u32) -> DataEvent {
    DataEvent {
        header: EventHeader {
            kind: EventKind::Data as u8,
            version: EVENT_VERSION,
            direction: dir as u8,
            _pad0: 0,
            pid: 1,
            tid: 1,
            _pad1: 0,
            ts_ns: ts,
            conn_id: id,
        },
        fd: 3,
        syscall: 1,
        flags: 0,
        _pad: [0; 2],
        len,
        orig_len: orig,
        enter_ts_ns: ts,
        goroutine: 0,
    }
}

#[test]
fn finds_the_other_end_of_a_local_connection() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 10, Role::Client, 50000, 8080), 0, &mut out);
    t.open(meta(2, 20, Role::Server, 8080, 50000), 0, &mut out);
    t.open(meta(3, 20, Role::Server, 8080, 50001), 0, &mut out);
    assert_eq!(t.peer_of(t.meta(2).unwrap()).unwrap().conn_id, 1);
    assert_eq!(t.peer_of(t.meta(1).unwrap()).unwrap().conn_id, 2);
    assert!(t.peer_of(t.meta(3).unwrap()).is_none());
    t.close(1, 5, &mut out);
    assert!(t.peer_of(t.meta(2).unwrap()).is_none());
    assert_eq!(t.telemetry.get(Counter::ConnsClosed), 1);
}

#[test]
fn full_table_evicts_least_recently_active() {
    let mut t = table(8);
    let mut out = Vec::new();
    for i in 0..8u64 {
        t.open(
            meta(i, 1, Role::Client, 40000 + i as u16, 80),
            i * 10,
            &mut out,
        );
    }
    t.open(meta(100, 1, Role::Client, 41000, 80), 1000, &mut out);
    assert_eq!(t.len(), 8);
    assert!(t.meta(0).is_none(), "oldest evicted");
    assert!(t.meta(7).is_some() && t.meta(100).is_some());
    assert_eq!(t.telemetry.get(Counter::ConnsEvicted), 1);
}

#[test]
fn idle_sweep_and_process_exit() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 80), 0, &mut out);
    t.open(meta(2, 7, Role::Client, 40002, 80), 0, &mut out);
    t.open(meta(3, 8, Role::Client, 40003, 80), 5_000, &mut out);
    let fds = t.process_exit(7, 10, &mut out);
    assert_eq!(fds.len(), 2);
    assert_eq!(t.len(), 1);
    t.sweep_idle(5_500, &mut out);
    assert_eq!(t.len(), 1, "not idle yet");
    t.sweep_idle(7_000, &mut out);
    assert!(t.is_empty());
}

#[test]
fn unknown_protocol_is_ignored_and_data_for_unknown_conn_counted() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 443), 0, &mut out);
    // An SSH banner is no protocol we parse.
    let ssh = *b"SSH-2.0-";
    t.data(&data(1, Direction::Egress, 1, 8, 8), &ssh, &mut out);
    t.data(&data(1, Direction::Egress, 2, 8, 8), &ssh, &mut out);
    assert!(out.is_empty());
    assert_eq!(t.telemetry.get(Counter::ProtocolUnknown), 1);
    // ...and the kernel is asked, once, to stop copying its payload.
    assert_eq!(t.take_to_mute(), vec![(7, 1, conn_flags::MUTED)]);
    assert!(t.take_to_mute().is_empty());
    t.data(&data(99, Direction::Egress, 3, 8, 8), &ssh, &mut out);
    assert_eq!(t.telemetry.get(Counter::DataForUnknownConn), 1);
}

fn tls_data(id: u64, dir: Direction, ts: u64, payload: &[u8]) -> DataEvent {
    let mut d = data(id, dir, ts, payload.len() as u32, payload.len() as u32);
    d.syscall = if dir == Direction::Ingress {
        Syscall::TlsRead as u8
    } else {
        Syscall::TlsWrite as u8
    };
    d
}

#[test]
fn tls_connection_waits_for_plaintext_and_parses_it() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 443), 0, &mut out);
    // The ClientHello: ciphertext from now on, but NOT muted (the plaintext probes need it).
    let hello = [0x16u8, 3, 1, 0, 0x40, 1, 0, 0, 0x3c, 3, 3];
    t.data(&data(1, Direction::Egress, 1, 11, 11), &hello, &mut out);
    assert_eq!(t.take_to_mute(), vec![(7, 1, conn_flags::RAW_OFF)]);
    assert_eq!(t.telemetry.get(Counter::TlsHandshakesSeen), 1);
    // More ciphertext (server hello) is dropped without a look.
    t.data(
        &data(1, Direction::Ingress, 2, 8, 8),
        &[0x17, 3, 3, 0, 3, 1, 2, 3],
        &mut out,
    );
    assert_eq!(t.telemetry.get(Counter::ProtocolUnknown), 0);
    // Plaintext from SSL_write / SSL_read.
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    t.data(&tls_data(1, Direction::Egress, 3, req), req, &mut out);
    assert!(t.meta(1).unwrap().tls, "the spans say https");
    // Ciphertext a syscall captured before the kernel knew is dropped, not parsed.
    t.data(
        &data(1, Direction::Ingress, 4, 8, 8),
        &[0x17, 3, 3, 0, 3, 9, 9, 9],
        &mut out,
    );
    let resp = b"HTTP/1.1 204 No Content\r\n\r\n";
    t.data(&tls_data(1, Direction::Ingress, 5, resp), resp, &mut out);
    assert_eq!(t.telemetry.get(Counter::ConnsTls), 1);
    assert_eq!(
        t.telemetry
            .protocol_get(ProtocolId::Http1, ProtocolCounter::ParseErrors),
        0
    );
    assert_eq!(
        t.telemetry
            .protocol_get(ProtocolId::Http1, ProtocolCounter::Requests),
        1,
        "the request is counted under its protocol"
    );
    assert!(
        out.iter()
            .any(|(m, e)| m.tls && matches!(e, L7Event::ExchangeEnd { .. })),
        "{out:?}"
    );
}

#[test]
fn plaintext_after_postgres_ssl_request_starts_over() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 5432), 0, &mut out);
    // SSLRequest, answered 'S': the PostgreSQL parser stops at the encryption.
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    t.data(&data(1, Direction::Egress, 1, 8, 8), &ssl_request, &mut out);
    t.data(&data(1, Direction::Ingress, 2, 1, 1), b"S", &mut out);
    // The StartupMessage arrives as plaintext: detected afresh as PostgreSQL.
    let mut startup = Vec::new();
    let params = b"user\0u\0database\0d\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&0x0003_0000u32.to_be_bytes());
    startup.extend_from_slice(params);
    t.data(
        &tls_data(1, Direction::Egress, 3, &startup),
        &startup,
        &mut out,
    );
    assert!(t.meta(1).unwrap().tls);
    assert!(matches!(
        t.conns.get(&1).unwrap().state,
        ParseState::Active(ref p) if matches!(**p, ConnParser::Postgres(_))
    ));
}

fn aborted_seqs(out: &[(ConnMeta, L7Event)]) -> Vec<u64> {
    out.iter()
        .filter_map(|(_, e)| match e {
            L7Event::ExchangeEnd {
                seq,
                outcome:
                    crate::protocol::Outcome::Http1(HttpEnd {
                        outcome: crate::protocol::HttpOutcome::Aborted,
                        ..
                    }),
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn started(out: &[(ConnMeta, L7Event)]) -> usize {
    out.iter()
        .filter(|(_, e)| matches!(e, L7Event::RequestStart { .. }))
        .count()
}

#[test]
fn switching_to_tls_plaintext_ends_the_raw_parsers_exchanges() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 8080), 0, &mut out);
    // Two pipelined cleartext requests, unanswered...
    let reqs = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = reqs.len() as u32;
    t.data(&data(1, Direction::Egress, 1, n, n), reqs, &mut out);
    assert_eq!(started(&out), 2);
    // ...then the TLS library's plaintext: the old parser is closed, its exchanges end.
    let req = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    t.data(&tls_data(1, Direction::Egress, 5, req), req, &mut out);
    assert_eq!(aborted_seqs(&out), vec![0, 1], "{out:?}");
    let ends_tls: Vec<bool> = out
        .iter()
        .filter(|(_, e)| matches!(e, L7Event::ExchangeEnd { .. }))
        .map(|(m, _)| m.tls)
        .collect();
    assert_eq!(
        ends_tls,
        vec![false, false],
        "they were cleartext exchanges"
    );
    assert_eq!(started(&out), 3, "the plaintext is parsed afresh");
}

#[test]
fn ignoring_a_connection_ends_its_open_exchanges() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 8080), 0, &mut out);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = req.len() as u32;
    t.data(&data(1, Direction::Egress, 1, n, n), req, &mut out);
    t.ignore(1, 9, &mut out);
    assert_eq!(aborted_seqs(&out), vec![0]);
    assert_eq!(t.take_to_mute(), vec![(7, 1, conn_flags::MUTED)]);
    // Nothing more is parsed.
    t.data(&data(1, Direction::Egress, 10, n, n), req, &mut out);
    assert_eq!(started(&out), 1);
}

#[test]
fn a_buffer_past_its_bound_resets_the_connection_and_ends_its_exchanges() {
    let mut t = table(16); // max_buffer_bytes 8192
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 8080), 0, &mut out);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = req.len() as u32;
    t.data(&data(1, Direction::Egress, 1, n, n), req, &mut out);
    // A response head that never ends, in 1000-byte reads.
    let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    head.resize(1000, b'a');
    t.data(&data(1, Direction::Ingress, 2, 1000, 1000), &head, &mut out);
    let more = vec![b'a'; 1000];
    for ts in 3..11 {
        t.data(
            &data(1, Direction::Ingress, ts, 1000, 1000),
            &more,
            &mut out,
        );
    }
    assert_eq!(t.telemetry.get(Counter::StreamBufferOverflow), 1);
    assert_eq!(aborted_seqs(&out), vec![0]);
    // Detection starts over: the next request on the connection is parsed again.
    assert!(matches!(
        t.conns.get(&1).unwrap().state,
        ParseState::Detecting
    ));
    t.data(&data(1, Direction::Egress, 20, n, n), req, &mut out);
    assert_eq!(started(&out), 2);
}

#[test]
fn a_gap_inside_a_head_is_counted_and_never_parsed_across() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 8080), 0, &mut out);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let n = req.len() as u32;
    t.data(&data(1, Direction::Egress, 1, n, n), req, &mut out);
    // The response head is cut by the capture limit (16 of 40 bytes captured): the parser
    // cannot account for the missing bytes inside a head.
    let head = b"HTTP/1.1 200 OK\r\nConten";
    t.data(
        &data(1, Direction::Ingress, 2, 16, 40),
        &head[..16],
        &mut out,
    );
    assert_eq!(t.telemetry.get(Counter::StreamGaps), 1);
    // What follows the gap is not taken as the rest of that head: no response is invented.
    let rest = b"t-Length: 0\r\n\r\n";
    let r = rest.len() as u32;
    t.data(&data(1, Direction::Ingress, 3, r, r), rest, &mut out);
    let completed = out
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                L7Event::ExchangeEnd {
                    outcome: crate::protocol::Outcome::Http1(HttpEnd {
                        outcome: crate::protocol::HttpOutcome::Response { .. },
                        ..
                    }),
                    ..
                }
            )
        })
        .count();
    assert_eq!(completed, 0, "{out:?}");
}

#[test]
fn detection_work_is_bounded_when_a_peer_trickles_undecidable_bytes() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 5432), 0, &mut out);
    // PostgreSQL Sync messages keep every detector undecided; one byte per read.
    let syncs: Vec<u8> = b"S\0\0\0\x04".iter().copied().cycle().take(4000).collect();
    let mut fed = 0;
    for (i, b) in syncs.iter().enumerate() {
        if !matches!(t.conns.get(&1).unwrap().state, ParseState::Detecting) {
            break;
        }
        t.data(&data(1, Direction::Egress, i as u64, 1, 1), &[*b], &mut out);
        fed += 1;
    }
    // Given up within the budget (the sum of 1..=n stays under DETECT_BUDGET), not after
    // MAX_DETECT_BYTES reads of quadratic work.
    assert!(matches!(
        t.conns.get(&1).unwrap().state,
        ParseState::Ignored
    ));
    assert!(fed * (fed + 1) / 2 <= DETECT_BUDGET + fed, "{fed} reads");
    assert!(fed < 400, "{fed} reads");
    assert_eq!(t.telemetry.get(Counter::ParseLimitsHit), 1);
    assert_eq!(t.take_to_mute(), vec![(7, 1, conn_flags::MUTED)]);
}

#[test]
fn a_startup_message_sent_a_byte_per_read_is_still_detected() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 5432), 0, &mut out);
    let params = b"user\0someone\0database\0somedb\0application_name\0psql\0\0";
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&0x0003_0000u32.to_be_bytes());
    startup.extend_from_slice(params);
    for (i, b) in startup.iter().enumerate() {
        t.data(&data(1, Direction::Egress, i as u64, 1, 1), &[*b], &mut out);
    }
    assert!(matches!(
        t.conns.get(&1).unwrap().state,
        ParseState::Active(ref p) if matches!(**p, ConnParser::Postgres(_))
    ));
    assert_eq!(t.telemetry.get(Counter::ParseLimitsHit), 0);
}

#[test]
fn selection_ignores_untraced_protocols_before_parsing_and_mutes_them() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 1, Role::Client, 40000, 80), 0, &mut out);
    t.open(meta(2, 1, Role::Client, 40001, 5432), 0, &mut out);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let only_pg = |_: u32| crate::selection::ProtocolSet::POSTGRES;
    let d = data(1, Direction::Egress, 1, req.len() as u32, req.len() as u32);
    t.data_selected(&d, req, &mut { only_pg }, 0, &mut out);
    assert!(out.is_empty(), "no request parsed: {out:?}");
    assert_eq!(t.telemetry.get(Counter::ConnsDeselected), 1);
    assert_eq!(t.take_to_mute(), vec![(1, 1, conn_flags::MUTED)]);
    assert!(!t.wants_payload(&d), "its bytes are dropped on arrival");
    // The same process's traced protocols still parse.
    let mut startup = vec![0u8, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0u\0database\0db\0\0");
    let n = startup.len() as u32;
    startup[..4].copy_from_slice(&n.to_be_bytes());
    let d = data(2, Direction::Egress, 2, n, n);
    t.data_selected(&d, &startup, &mut { only_pg }, 0, &mut out);
    assert_eq!(t.telemetry.get(Counter::ConnsDeselected), 1);
    assert!(t.take_to_mute().is_empty());
}

#[test]
fn a_changed_decision_ignores_an_active_connection_at_the_next_record() {
    use crate::selection::ProtocolSet;
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 1, Role::Client, 40000, 80), 0, &mut out);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut asked = 0;
    let mut all = |_: u32| {
        asked += 1;
        ProtocolSet::ALL
    };
    let n = req.len() as u32;
    t.data_selected(
        &data(1, Direction::Egress, 1, n, n),
        req,
        &mut all,
        0,
        &mut out,
    );
    let m = resp.len() as u32;
    t.data_selected(
        &data(1, Direction::Ingress, 2, m, m),
        resp,
        &mut all,
        0,
        &mut out,
    );
    assert_eq!(asked, 1, "asked once per epoch");
    assert_eq!(out.len(), 2, "request and its end: {out:?}");
    out.clear();
    // The rules changed (epoch 1): this process now traces nothing.
    let mut none = |_: u32| ProtocolSet::NONE;
    t.data_selected(
        &data(1, Direction::Egress, 3, n, n),
        req,
        &mut none,
        1,
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.telemetry.get(Counter::ConnsDeselected), 1);
    assert_eq!(t.take_to_mute(), vec![(1, 1, conn_flags::MUTED)]);
    // A connection whose process traces nothing is ignored before detection.
    t.open(meta(2, 1, Role::Client, 40001, 80), 4, &mut out);
    t.data_selected(
        &data(2, Direction::Egress, 5, n, n),
        req,
        &mut none,
        1,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(t.telemetry.get(Counter::ConnsDeselected), 2);
}

/// A gap on an HTTP/2 connection: the parser cannot resynchronise, so the connection is
/// given up and the kernel asked to stop copying it; a gap on an ignored one is only counted.
#[test]
fn a_gap_gives_up_an_http2_connection_and_mutes_it() {
    let mut t = table(16);
    let mut out = Vec::new();
    t.open(meta(1, 7, Role::Client, 40001, 8080), 0, &mut out);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
    let n = hello.len() as u32;
    t.data(&data(1, Direction::Egress, 1, n, n), &hello, &mut out);
    assert!(t.take_to_mute().is_empty());
    let mut d = data(1, Direction::Ingress, 2, 9, 9);
    d.flags = data_flags::GAP_BEFORE;
    t.data(&d, &[0, 0, 0, 4, 1, 0, 0, 0, 0], &mut out);
    assert_eq!(t.take_to_mute(), vec![(7, 1, conn_flags::MUTED)]);
    let tel = &t.telemetry;
    assert_eq!(
        tel.protocol_get(ProtocolId::Http2, ProtocolCounter::RingGaps),
        1
    );
    assert_eq!(
        tel.protocol_get(ProtocolId::Http2, ProtocolCounter::RingGapsAbandoned),
        1
    );
    assert_eq!(t.meta(1).map(|m| m.gaps), Some(1));
    // Ignored now: a later gap is only counted.
    t.data(&d, &[], &mut out);
    assert_eq!(t.telemetry.get(Counter::RingGapsUnparsed), 1);
    assert!(out.is_empty(), "{out:?}");
}
