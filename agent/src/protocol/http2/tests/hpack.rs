//! HPACK decoding: the RFC 7541 Appendix C examples, eviction, size updates, invalid input.

use crate::protocol::http2::hpack::{huffman, integer, Decoder, Field, HpackError};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn decode(d: &mut Decoder, block: &str) -> Result<Vec<(String, String)>, HpackError> {
    let mut out = Vec::new();
    d.decode(&hex(block), |f: Field| {
        let s = |v: Option<&[u8]>| String::from_utf8(v.expect("known").to_vec()).expect("utf8");
        out.push((s(f.name), s(f.value)));
    })?;
    Ok(out)
}

type Owned = (Option<Vec<u8>>, Option<Vec<u8>>);

fn owned(f: Field) -> Owned {
    (f.name.map(<[u8]>::to_vec), f.value.map(<[u8]>::to_vec))
}

fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn c1_integers() {
    // C.1.1 10 with a 5-bit prefix; C.1.2 1337 with 5 bits; C.1.3 42 with 8 bits.
    let mut at = 0;
    assert_eq!(integer(&[0x0a], &mut at, 5), Ok(10));
    at = 0;
    assert_eq!(integer(&[0x1f, 0x9a, 0x0a], &mut at, 5), Ok(1337));
    assert_eq!(at, 3);
    at = 0;
    assert_eq!(integer(&[0x2a], &mut at, 8), Ok(42));
    at = 0;
    assert_eq!(
        integer(&[0x1f, 0x9a], &mut at, 5),
        Err(HpackError::Truncated)
    );
    at = 0;
    let huge = [0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(integer(&huge, &mut at, 5), Err(HpackError::IntegerOverflow));
}

#[test]
fn c2_literals() {
    let mut d = Decoder::new(true);
    // C.2.1 literal with indexing.
    let got = decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(got, Ok(fields(&[("custom-key", "custom-header")])));
    assert_eq!(d.table().size(), 55);
    // C.2.2 without indexing; C.2.3 never indexed: the table is unchanged.
    let mut d = Decoder::new(true);
    let got = decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(got, Ok(fields(&[(":path", "/sample/path")])));
    let got = decode(&mut d, "1008 7061 7373 776f 7264 0673 6563 7265 74");
    assert_eq!(got, Ok(fields(&[("password", "secret")])));
    assert_eq!(d.table().len(), 0);
    // C.2.4 indexed.
    assert_eq!(decode(&mut d, "82"), Ok(fields(&[(":method", "GET")])));
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];

fn requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(true);
    for (block, (want, size)) in blocks.iter().zip([(REQ1, 57), (REQ2, 110), (REQ3, 164)]) {
        assert_eq!(decode(&mut d, block), Ok(fields(want)));
        assert_eq!(d.table().size(), size);
    }
}

#[test]
fn c3_requests() {
    requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_huffman() {
    requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn responses(blocks: [&str; 3]) {
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let r1 = [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", date1),
        ("location", loc),
    ];
    let r2 = [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", date1),
        ("location", loc),
    ];
    let r3 = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", loc),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];
    // The table is 256 bytes: the examples evict.
    let mut d = Decoder::with_table_size(256);
    let want: [&[(&str, &str)]; 3] = [&r1, &r2, &r3];
    for ((block, want), (size, len)) in blocks.iter().zip(want).zip([(222, 4), (222, 4), (215, 3)])
    {
        assert_eq!(decode(&mut d, block), Ok(fields(want)));
        assert_eq!((d.table().size(), d.table().len()), (size, len));
    }
}

#[test]
fn c5_responses() {
    responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ]);
}

#[test]
fn c6_responses_huffman() {
    responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn size_update_evicts_and_is_bounded() {
    let mut d = Decoder::new(true);
    decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    )
    .unwrap();
    assert_eq!(d.table().len(), 1);
    // Size update to 0 empties the table, then back to 4096.
    assert_eq!(
        decode(&mut d, "20 3fe1 1f 82"),
        Ok(fields(&[(":method", "GET")]))
    );
    assert_eq!((d.table().len(), d.table().max_size()), (0, 4096));
    // The evicted entry is gone: index 62 is now an error (synced).
    assert_eq!(decode(&mut d, "be"), Err(HpackError::BadIndex(62)));
    // Above the allowed size, after a field.
    let mut d = Decoder::new(true);
    assert_eq!(
        decode(&mut d, "3fe2 1f"),
        Err(HpackError::TableSizeTooLarge(4097))
    );
    assert_eq!(decode(&mut d, "82 20"), Err(HpackError::LateSizeUpdate));
    d.allow_table_size(8192);
    assert!(decode(&mut d, "3fe1 3f").is_ok());
    assert_eq!(d.table().max_size(), 8192);
}

#[test]
fn invalid_inputs_are_errors() {
    let mut d = Decoder::new(true);
    assert_eq!(decode(&mut d, "80"), Err(HpackError::BadIndex(0)));
    assert_eq!(decode(&mut d, "ff 00"), Err(HpackError::BadIndex(127)));
    assert_eq!(decode(&mut d, "40 05 61"), Err(HpackError::Truncated));
    assert_eq!(decode(&mut d, "0f"), Err(HpackError::Truncated));
    // Huffman: padding longer than 7 bits, padding not all ones, EOS inside.
    let mut out = Vec::new();
    assert_eq!(
        huffman::decode(&[0xff], &mut out),
        Err(huffman::HuffmanError::BadPadding)
    );
    out.clear();
    assert_eq!(
        huffman::decode(&[0x00], &mut out),
        Err(huffman::HuffmanError::BadPadding)
    );
    out.clear();
    assert_eq!(
        huffman::decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
        Err(huffman::HuffmanError::Eos)
    );
    // '0' is 00000 (5 bits) + 111 padding.
    out.clear();
    assert_eq!(huffman::decode(&[0x07], &mut out), Ok(()));
    assert_eq!(out, b"0");
    // A Huffman literal with bad padding inside a block.
    assert!(matches!(
        decode(&mut d, "0081 00"),
        Err(HpackError::Huffman(_))
    ));
}

#[test]
fn unsynced_references_are_unknown_and_insertions_count() {
    let mut d = Decoder::new(false);
    let mut got: Vec<Owned> = Vec::new();
    // Index 70 (never seen), then a literal with indexing whose name is index 80 (unknown).
    d.decode(&hex("c6 7f11 03 616263"), |f| got.push(owned(f)))
        .unwrap();
    assert_eq!(got[0], (None, None));
    assert_eq!(got[1], (None, Some(b"abc".to_vec())));
    // The inserted entry is index 62 now.
    got.clear();
    d.decode(&hex("be"), |f| got.push(owned(f))).unwrap();
    assert_eq!(got[0], (None, Some(b"abc".to_vec())));
}
