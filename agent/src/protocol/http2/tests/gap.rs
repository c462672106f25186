//! Records lost to a full ring buffer (`Parser::gap`): HTTP/2 cannot resynchronise (the hole
//! may hold header blocks that changed HPACK's dynamic table, and frame boundaries are lost),
//! so every open stream ends aborted and the connection is given up. Checked on every
//! recording, losing each of its reads in turn.

use super::{check_invariants, fixtures, Replay};
use crate::protocol::{Direction, L7Event};

#[test]
fn every_lost_read_of_every_recording_aborts_the_open_streams_and_nothing_follows() {
    for f in fixtures() {
        for lost in 0..f.segs.len() {
            let mut clean = Replay::new(f.c2s, f.s2c, Direction::Egress);
            let mut r = Replay::new(f.c2s, f.s2c, Direction::Egress);
            for &(side, len) in &f.segs[..lost] {
                clean.deliver(side, len);
                r.deliver(side, len);
            }
            let (side, len) = f.segs[lost];
            let mut lens = [0, 0];
            lens[side] = len;
            assert!(!r.lost(lens), "{}: HTTP/2 cannot resynchronise", f.name);
            let before = clean.events.len();
            // What was reported before the hole is what a clean replay reports up to it...
            assert_eq!(r.events[..before], clean.events[..], "{}", f.name);
            // ...then every stream still open ends, aborted, at the hole...
            let open = clean.starts().len() - clean.ends().len();
            assert_eq!(r.events.len() - before, open, "{} read {lost}", f.name);
            for e in &r.events[before..] {
                let L7Event::ExchangeEnd { outcome, .. } = e else {
                    panic!("{}: {e:?} after the hole", f.name);
                };
                assert!(outcome.aborted(), "{}: {e:?}", f.name);
            }
            // ...and nothing is reported of what follows.
            let n = r.events.len();
            for &(side, len) in &f.segs[lost + 1..] {
                r.deliver(side, len);
            }
            r.close();
            assert_eq!(r.events.len(), n, "{}: events after the hole", f.name);
            check_invariants(&r.events, true);
        }
    }
}
