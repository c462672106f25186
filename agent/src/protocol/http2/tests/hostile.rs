//! Hostile header blocks: inputs that try to turn a few bytes into much work or memory. Each
//! test asserts the bound by what is kept, shared or reported, never by wall-clock time (the
//! `http2` benchmark prints the worst case's cost per input byte).

use std::sync::Arc;

use super::{Replay, REQ, RESP};
use crate::protocol::http2::hpack::{
    BlockStats, Decoder, MAX_FIELDS_PER_BLOCK, MAX_STORED_TABLE_SIZE,
};
use crate::protocol::http2::MAX_BLOCK;
use crate::protocol::{hostile, Direction, L7Event, ParseError, Request};

#[test]
fn references_to_a_large_entry_are_not_copied_and_are_cut() {
    let block = hostile::hpack_reference_flood(MAX_BLOCK, "x-big", 3000);
    let mut d = Decoder::new(true);
    let mut handed = 0u32;
    let mut ptrs = std::collections::HashSet::new();
    let stats = d
        .decode(&block, |f| {
            handed += 1;
            let v = f.value.expect("known");
            if v.len() == 3000 {
                ptrs.insert(v.as_ptr() as usize);
            }
        })
        .expect("a valid block");
    // Two static fields and one literal, then one-byte references to the end of the block.
    let refs = block.iter().rev().take_while(|&&b| b == 0xbe).count() as u32;
    assert!(refs > 250_000);
    assert_eq!(
        stats,
        BlockStats {
            fields: 3 + refs,
            cut: 3 + refs - MAX_FIELDS_PER_BLOCK,
        }
    );
    assert_eq!(handed, MAX_FIELDS_PER_BLOCK);
    // Every reference handed out the table's own bytes; the literal, the block's.
    let table = d
        .table()
        .get(0)
        .and_then(|e| e.value.clone())
        .expect("entry");
    let in_block = block.as_ptr_range();
    assert_eq!(
        ptrs.len(),
        2,
        "copies were made: {} distinct buffers",
        ptrs.len()
    );
    assert!(
        ptrs.contains(&(table.as_ptr() as usize)),
        "references were copied"
    );
    assert!(ptrs.iter().any(|&p| in_block.contains(&(p as *const u8))));
}

#[test]
fn literals_naming_a_large_entry_share_its_name() {
    let block = hostile::hpack_name_reference_flood(MAX_BLOCK, 3000);
    // Joined midway: a 64 KiB table holds some twenty such entries.
    let mut d = Decoder::new(false);
    let stats = d.decode(&block, |_| {}).expect("a valid block");
    assert!(stats.fields > 100_000, "{stats:?}");
    let t = d.table();
    assert!(t.len() > 1);
    let first = t.get(0).and_then(|e| e.name.clone()).expect("known name");
    assert_eq!(first.len(), 3000);
    for i in 1..t.len() {
        let name = t.get(i).and_then(|e| e.name.clone()).expect("known name");
        assert!(Arc::ptr_eq(&first, &name), "entry {i} copied its name");
    }
}

#[test]
fn the_stored_table_is_capped_whatever_the_peers_agreed() {
    // Joined midway (unsynced): a size update to 1 MiB is accepted...
    let block = hostile::hpack_table_fill(1 << 20, 4000);
    let mut d = Decoder::new(false);
    let stats = d.decode(&block, |_| {}).expect("a valid block");
    assert!(stats.fields >= 250, "{stats:?}");
    // ...but no more than the stored maximum is kept.
    assert_eq!(d.table().max_size(), 1 << 20);
    assert!(
        d.table().size() <= MAX_STORED_TABLE_SIZE,
        "{}",
        d.table().size()
    );
    assert!(d.table().capped());

    // Synced, with the receiver allowing 1 MiB: a reference to an entry the agent dropped
    // early is unknown, not an error (the encoder still has it).
    let mut d = Decoder::new(true);
    d.allow_table_size(1 << 20);
    d.decode(&block, |_| {}).expect("a valid block");
    let oldest = 61 + stats.fields as usize - 1;
    let mut got = Vec::new();
    d.decode(&hostile::hpack_index(oldest), |f| {
        got.push((f.name.is_some(), f.value.is_some()))
    })
    .expect("a reference past what is stored is not an error");
    assert_eq!(got, [(false, false)]);
    // Past what the encoder can have, it still is an error.
    assert!(d
        .decode(&hostile::hpack_index(oldest + 1_000_000), |_| {})
        .is_err());
}

#[test]
fn a_request_of_repeated_pseudo_headers_keeps_one_bounded_copy() {
    // A HEADERS + CONTINUATION request of MAX_BLOCK bytes: a 3000-byte :path, then
    // references to it until the block is full.
    let c2s = hostile::h2_request_with_block(&hostile::hpack_reference_flood(
        MAX_BLOCK - 64,
        ":path",
        3000,
    ));
    let c: &'static [u8] = Box::leak(c2s.into_boxed_slice());
    let mut r = Replay::new(c, b"", Direction::Egress);
    r.deliver(REQ, c.len());
    r.deliver(RESP, 0);
    let starts = r.starts();
    assert_eq!(starts.len(), 1, "{:?}", r.errors);
    let L7Event::RequestStart {
        request: Request::Http2(h),
        ..
    } = starts[0]
    else {
        panic!("not an HTTP/2 request: {:?}", starts[0]);
    };
    assert_eq!(h.path.as_deref().map(str::len), Some(3000));
    assert_eq!(h.method.as_deref(), Some("GET"));
    assert!(
        r.errors.iter().any(|e| matches!(
            e,
            ParseError::Limited {
                protocol: crate::protocol::ProtocolId::Http2,
                ..
            }
        )),
        "the cut is reported: {:?}",
        r.errors
    );
}
