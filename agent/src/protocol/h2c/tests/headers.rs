//! The header checks: `Upgrade` lists, `HTTP2-Settings` decoding, the preface test.

use super::super::{decode_settings, lists_h2c, starts_like_preface};

#[test]
fn upgrade_lists() {
    for yes in [
        &b"h2c"[..],
        b"H2C",
        b" websocket, h2c ",
        b"h2c/1",
        b"foo,h2c",
    ] {
        assert!(lists_h2c(yes), "{:?}", String::from_utf8_lossy(yes));
    }
    for no in [
        &b""[..],
        b"h2",
        b"websocket",
        b"h2cx",
        b"xh2c",
        b"h2 c",
        b"TLS/1.2",
    ] {
        assert!(!lists_h2c(no), "{:?}", String::from_utf8_lossy(no));
    }
}

#[test]
fn http2_settings_values() {
    // curl 7.88: MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 32 MiB, ENABLE_PUSH 0.
    assert_eq!(
        decode_settings(b"AAMAAABkAAQCAAAAAAIAAAAA").unwrap(),
        [0, 3, 0, 0, 0, 100, 0, 4, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0]
    );
    // 6 bytes -> 8 characters, no padding needed; padding and spaces are tolerated.
    assert_eq!(
        decode_settings(b" AAUAAEAA== ").unwrap(),
        [0, 5, 0, 0, 64, 0]
    );
    // 12 bytes, '-' and '_' of the URL-safe alphabet.
    assert_eq!(
        decode_settings(b"AAEAAP__AAX___-_").unwrap(),
        [0, 1, 0, 0, 255, 255, 0, 5, 255, 255, 255, 191]
    );
    assert_eq!(decode_settings(b"").unwrap(), Vec::<u8>::new());
    // Not a whole number of settings, standard base64 characters, impossible lengths, huge.
    for bad in [
        &b"AAMAAA"[..],
        b"AAMAAABkAA",
        b"AAMA+ABk",
        b"AAMA/ABk",
        b"A",
        b"AAMAA",
    ] {
        assert!(
            decode_settings(bad).is_none(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(decode_settings(&[b'A'; 1024]).is_none());
}

#[test]
fn preface_prefixes() {
    let p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for n in 1..=p.len() {
        assert!(starts_like_preface(&p[..n]));
    }
    let mut more = p.to_vec();
    more.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert!(starts_like_preface(&more));
    assert!(!starts_like_preface(b""));
    assert!(!starts_like_preface(b"POST / HTTP/1.1\r\n"));
    assert!(!starts_like_preface(b"PRI * HTTP/1.1"));
}
