//! Tests of the HTTP/2 parser: HPACK against RFC 7541 Appendix C, detection, the recorded
//! fixtures (`testdata/http2`, see `record.py` there) fed in every way, mid-connection joins
//! and seeded mutations.

mod hpack;
