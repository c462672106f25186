//! A lock-free record of each RED series for the readers other than the Prometheus endpoint:
//! the OTLP metrics exporter and the console summary (`export::metrics`).
//!
//! Why a second record beside prometheus-client's histogram: that crate keeps bucket counts
//! and exemplars private to its text/protobuf encoders, so nothing else can read them. Both
//! records are fed by the same `Recorder::record` call with the same value, the same bucket
//! boundaries ([`BUCKETS`]) and the same label set, so they cannot disagree on what was
//! observed; a reader may only see one of them a few observations behind the other.
//!
//! Writers (the pipeline thread) only do relaxed atomic adds; an exemplar slot is a seqlock, so
//! a reader never sees the trace id of one span with the span id of another. Allocation
//! happens once per series, when the label set is first seen.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::{Metric, BUCKETS};
use crate::span::model::{AttrValue, SpanId, TraceId};

/// Bucket slots: one per boundary plus the `+Inf` bucket.
pub const SLOTS: usize = BUCKETS.len() + 1;

/// The bucket an observation of `v` seconds falls in: the first boundary `>= v`
/// (upper-inclusive, as both OpenMetrics `le` and OTLP `explicit_bounds` define it).
pub fn bucket_of(v: f64) -> usize {
    BUCKETS
        .iter()
        .position(|&b| v <= b)
        .unwrap_or(BUCKETS.len())
}

/// One label set of one metric.
pub struct Series {
    pub metric: Metric,
    /// The label set with OpenTelemetry attribute names and types (`http.response.status_code`
    /// is an int), in the metric's label order; absent attributes are left out.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// When the series was created: the start of its cumulative aggregation.
    pub start_unix_nano: u64,
    counts: [AtomicU64; SLOTS],
    sum_bits: AtomicU64,
    exemplars: [ExemplarSlot; SLOTS],
}

/// What a reader gets: a consistent-enough copy (`count` is the sum of `bucket_counts`, as
/// OTLP requires; `sum` may be a few observations ahead or behind).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub bucket_counts: [u64; SLOTS],
    pub count: u64,
    pub sum: f64,
    /// The latest exported span of each bucket that has one, in bucket order.
    pub exemplars: Vec<Exemplar>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub bucket: usize,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub value: f64,
    pub time_unix_nano: u64,
}

impl Series {
    pub fn new(
        metric: Metric,
        attributes: Vec<(&'static str, AttrValue)>,
        start_unix_nano: u64,
    ) -> Self {
        Self {
            metric,
            attributes,
            start_unix_nano,
            counts: Default::default(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            exemplars: Default::default(),
        }
    }

    /// Records `secs`; `exemplar` (trace id, span id, the span's end time) replaces the
    /// bucket's exemplar.
    pub fn observe(&self, secs: f64, exemplar: Option<(&TraceId, &SpanId, u64)>) {
        // A NaN or negative duration would be a clock defect; it is counted in the first
        // bucket rather than poisoning the sum.
        let secs = if secs.is_finite() && secs > 0.0 {
            secs
        } else {
            0.0
        };
        let b = bucket_of(secs);
        self.counts[b].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + secs).to_bits())
            });
        if let Some((t, s, at)) = exemplar {
            self.exemplars[b].write(t, s, secs, at);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut bucket_counts = [0u64; SLOTS];
        for (out, c) in bucket_counts.iter_mut().zip(&self.counts) {
            *out = c.load(Ordering::Relaxed);
        }
        Snapshot {
            bucket_counts,
            count: bucket_counts.iter().sum(),
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
            exemplars: self
                .exemplars
                .iter()
                .enumerate()
                .filter_map(|(bucket, slot)| slot.read(bucket))
                .collect(),
        }
    }
}

/// One bucket's exemplar behind a sequence number: odd while a writer is in it. Several
/// pipeline threads may write one series; a writer that finds the slot busy skips its update
/// (the next span of that bucket will do), so writers never wait.
#[derive(Default)]
struct ExemplarSlot {
    seq: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span: AtomicU64,
    value_bits: AtomicU64,
    time: AtomicU64,
}

impl ExemplarSlot {
    fn write(&self, t: &TraceId, s: &SpanId, value: f64, at: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (hi, lo) = t.split_at(8);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        self.trace_hi.store(word(hi), Ordering::Relaxed);
        self.trace_lo.store(word(lo), Ordering::Relaxed);
        self.span.store(u64::from_be_bytes(*s), Ordering::Relaxed);
        self.value_bits.store(value.to_bits(), Ordering::Relaxed);
        self.time.store(at, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The slot's exemplar, or `None` when it never had one or a writer kept it busy.
    fn read(&self, bucket: usize) -> Option<Exemplar> {
        for _ in 0..4 {
            let before = self.seq.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let hi = self.trace_hi.load(Ordering::Relaxed);
            let lo = self.trace_lo.load(Ordering::Relaxed);
            let span = self.span.load(Ordering::Relaxed);
            let value = f64::from_bits(self.value_bits.load(Ordering::Relaxed));
            let time = self.time.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&hi.to_be_bytes());
            trace_id[8..].copy_from_slice(&lo.to_be_bytes());
            return Some(Exemplar {
                bucket,
                trace_id,
                span_id: span.to_be_bytes(),
                value,
                time_unix_nano: time,
            });
        }
        None
    }
}

/// The value at quantile `q` (0..=1) estimated from bucket counts by linear interpolation
/// inside the bucket that holds it, as Prometheus' `histogram_quantile` does: the lower edge
/// of the first bucket is 0, and a quantile in the `+Inf` bucket is reported as the last
/// finite boundary (all that is known is "more than that"). `None` for an empty histogram.
pub fn quantile(bucket_counts: &[u64; SLOTS], q: f64) -> Option<f64> {
    let total: u64 = bucket_counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &c) in bucket_counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if (below + c) as f64 >= rank {
            if i == BUCKETS.len() {
                return Some(BUCKETS[BUCKETS.len() - 1]);
            }
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let upper = BUCKETS[i];
            let within = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += c;
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.005), 0);
        assert_eq!(bucket_of(0.0051), 1);
        assert_eq!(bucket_of(10.0), BUCKETS.len() - 1);
        assert_eq!(bucket_of(10.5), BUCKETS.len());
    }

    #[test]
    fn snapshot_counts_sum_and_exemplars() {
        let s = Series::new(Metric::HttpServer, vec![], 7);
        s.observe(0.003, Some((&[1; 16], &[2; 8], 100)));
        s.observe(0.004, None);
        s.observe(0.2, Some((&[3; 16], &[4; 8], 200)));
        s.observe(f64::NAN, None);
        s.observe(99.0, None);
        let snap = s.snapshot();
        assert_eq!(snap.count, 5);
        assert_eq!(snap.bucket_counts[0], 3);
        assert_eq!(snap.bucket_counts[bucket_of(0.2)], 1);
        assert_eq!(snap.bucket_counts[SLOTS - 1], 1);
        assert!((snap.sum - 99.207).abs() < 1e-9, "{}", snap.sum);
        assert_eq!(
            snap.exemplars,
            vec![
                Exemplar {
                    bucket: 0,
                    trace_id: [1; 16],
                    span_id: [2; 8],
                    value: 0.003,
                    time_unix_nano: 100
                },
                Exemplar {
                    bucket: bucket_of(0.2),
                    trace_id: [3; 16],
                    span_id: [4; 8],
                    value: 0.2,
                    time_unix_nano: 200
                },
            ]
        );
    }

    #[test]
    fn a_later_exemplar_replaces_the_bucket_s_one_whole() {
        let s = Series::new(Metric::HttpServer, vec![], 0);
        let mut t = [0u8; 16];
        t[0] = 0xab;
        t[15] = 0xcd;
        s.observe(0.001, Some((&[9; 16], &[9; 8], 1)));
        s.observe(0.002, Some((&t, &[1, 2, 3, 4, 5, 6, 7, 8], 2)));
        let e = &s.snapshot().exemplars[0];
        assert_eq!(
            (e.trace_id, e.span_id, e.time_unix_nano),
            (t, [1, 2, 3, 4, 5, 6, 7, 8], 2)
        );
    }

    #[test]
    fn concurrent_writers_never_tear_an_exemplar() {
        use std::sync::Arc;
        let s = Arc::new(Series::new(Metric::HttpServer, vec![], 0));
        let writers: Vec<_> = (1..=2u8)
            .map(|n| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        s.observe(0.001, Some((&[n; 16], &[n; 8], u64::from(n))));
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            if let Some(e) = s.snapshot().exemplars.first() {
                let n = e.span_id[0];
                assert_eq!(
                    (e.trace_id, e.span_id, e.time_unix_nano),
                    ([n; 16], [n; 8], u64::from(n))
                );
            }
        }
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(s.snapshot().count, 40_000);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut c = [0u64; SLOTS];
        assert_eq!(quantile(&c, 0.5), None);
        // 10 observations in (0.005, 0.01]: the median is halfway through it.
        c[1] = 10;
        let p50 = quantile(&c, 0.5).expect("p50");
        assert!((p50 - 0.0075).abs() < 1e-12, "{p50}");
        // One slow outlier above every boundary: p99 of 100 is still in the fast bucket,
        // p100 is reported as "at least 10 s".
        let mut c = [0u64; SLOTS];
        c[0] = 99;
        c[SLOTS - 1] = 1;
        assert!(quantile(&c, 0.99).expect("p99") <= 0.005);
        assert_eq!(quantile(&c, 1.0), Some(10.0));
    }
}
