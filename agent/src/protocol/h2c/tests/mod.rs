//! Tests of the h2c hand-over.

mod headers;
