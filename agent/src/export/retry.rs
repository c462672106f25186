//! Whether and when to retry a failed export: a pure decision from the failure's status code,
//! how many attempts were made, how long the batch has been retried and any delay the server
//! asked for. No clocks or randomness inside (jitter is an argument), so it is table-tested.
//!
//! Follows the OTLP spec's failure handling
//! (<https://opentelemetry.io/docs/specs/otlp/#failures>): which gRPC codes are retryable, and
//! RESOURCE_EXHAUSTED only when the server sent `google.rpc.RetryInfo`, whose delay is honoured.
//! OTLP/HTTP statuses are first mapped to gRPC codes by [`code_for_http_status`]. Sleeping and
//! counting retries is the exporter task's job (`batch.rs`).

use std::time::Duration;

use tonic::Code;

/// The decision for one failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Try again after this long.
    After(Duration),
    /// Drop the batch: the failure is permanent or the retry budget is spent.
    GiveUp,
}

/// Exponential backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay between two attempts (before jitter).
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// No attempt starts later than this after the first one.
    pub max_elapsed: Duration,
}

impl Backoff {
    /// The defaults of several OpenTelemetry SDK exporters (1 s initial, ×1.5, at most 5 s),
    /// bounded by the configured retry budget.
    pub fn with_max_elapsed(max_elapsed: Duration) -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            multiplier: 1.5,
            max_elapsed,
        }
    }
}

/// The OTLP spec's retryable gRPC codes. `has_retry_info`: the server attached a `RetryInfo`,
/// which is what makes RESOURCE_EXHAUSTED retryable (the server says it will recover).
pub fn is_retryable(code: Code, has_retry_info: bool) -> bool {
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => has_retry_info,
        _ => false,
    }
}

/// Decides what to do after attempt number `attempt` (1 = the first try) failed with `code`.
///
/// * `elapsed`: time since the first attempt of this batch started.
/// * `retry_info`: the delay from the server's `RetryInfo` (or HTTP `Retry-After`), if it sent
///   one; `Some(Duration::ZERO)` when it sent `RetryInfo` without a delay.
/// * `jitter`: a uniform random number in `[0, 1]`; the delay is spread over `[½d, d]` so many
///   agents restarting together do not retry in lockstep.
///
/// The delay is the larger of the jittered backoff and the server's delay (the server's is a
/// floor, as in the OpenTelemetry Go exporter). If waiting it would exceed `max_elapsed`, give up.
pub fn decide(
    code: Code,
    attempt: u32,
    elapsed: Duration,
    retry_info: Option<Duration>,
    policy: &Backoff,
    jitter: f64,
) -> Retry {
    if !is_retryable(code, retry_info.is_some()) {
        return Retry::GiveUp;
    }
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let base = policy.initial.as_secs_f64() * policy.multiplier.powi(exponent);
    let capped = base.min(policy.max.as_secs_f64());
    let jittered = Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)));
    let delay = jittered.max(retry_info.unwrap_or(Duration::ZERO));
    match elapsed.checked_add(delay) {
        Some(at) if at <= policy.max_elapsed => Retry::After(delay),
        _ => Retry::GiveUp,
    }
}

/// Maps an OTLP/HTTP response status to the gRPC code with the same meaning, per gRPC's
/// "HTTP to gRPC Status Code Mapping". The OTLP/HTTP retryable set (429, 502, 503, 504) becomes
/// exactly UNAVAILABLE, so one retry rule serves both transports.
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        200..=299 => Code::Ok,
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn decision_table() {
        let p = Backoff {
            initial: MS(1000),
            max: MS(5000),
            multiplier: 1.5,
            max_elapsed: MS(30_000),
        };
        #[rustfmt::skip]
        /// code, attempt, elapsed ms, RetryInfo delay ms, jitter, expected decision
        type Row = (Code, u32, u64, Option<u64>, f64, Retry);
        let table: &[Row] = &[
            // Retryable codes: jitter 1.0 gives the full backoff, 0.0 half of it.
            (Code::Unavailable, 1, 0, None, 1.0, Retry::After(MS(1000))),
            (Code::Unavailable, 1, 0, None, 0.0, Retry::After(MS(500))),
            (
                Code::Unavailable,
                2,
                1000,
                None,
                1.0,
                Retry::After(MS(1500)),
            ),
            (
                Code::Unavailable,
                3,
                2500,
                None,
                1.0,
                Retry::After(MS(2250)),
            ),
            (
                Code::Unavailable,
                9,
                10_000,
                None,
                1.0,
                Retry::After(MS(5000)),
            ), // capped
            (
                Code::Unavailable,
                u32::MAX,
                0,
                None,
                1.0,
                Retry::After(MS(5000)),
            ),
            (Code::Cancelled, 1, 0, None, 1.0, Retry::After(MS(1000))),
            (
                Code::DeadlineExceeded,
                1,
                0,
                None,
                1.0,
                Retry::After(MS(1000)),
            ),
            (Code::Aborted, 1, 0, None, 1.0, Retry::After(MS(1000))),
            (Code::OutOfRange, 1, 0, None, 1.0, Retry::After(MS(1000))),
            (Code::DataLoss, 1, 0, None, 1.0, Retry::After(MS(1000))),
            // RESOURCE_EXHAUSTED only with RetryInfo; the server's delay is a floor.
            (Code::ResourceExhausted, 1, 0, None, 1.0, Retry::GiveUp),
            (
                Code::ResourceExhausted,
                1,
                0,
                Some(3000),
                1.0,
                Retry::After(MS(3000)),
            ),
            (
                Code::ResourceExhausted,
                1,
                0,
                Some(0),
                1.0,
                Retry::After(MS(1000)),
            ),
            (
                Code::Unavailable,
                1,
                0,
                Some(7000),
                1.0,
                Retry::After(MS(7000)),
            ),
            (
                Code::Unavailable,
                1,
                0,
                Some(100),
                1.0,
                Retry::After(MS(1000)),
            ),
            // Budget: the next attempt must start within max_elapsed.
            (
                Code::Unavailable,
                4,
                26_625,
                None,
                1.0,
                Retry::After(MS(3375)),
            ),
            (Code::Unavailable, 4, 27_000, None, 1.0, Retry::GiveUp),
            (Code::Unavailable, 1, 0, Some(31_000), 1.0, Retry::GiveUp),
            (Code::Unavailable, 1, u64::MAX, None, 1.0, Retry::GiveUp),
            // Never retryable.
            (Code::Unknown, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::InvalidArgument, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::NotFound, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::AlreadyExists, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::PermissionDenied, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::FailedPrecondition, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::Unimplemented, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::Internal, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::Unauthenticated, 1, 0, None, 1.0, Retry::GiveUp),
            (Code::Internal, 1, 0, Some(10), 1.0, Retry::GiveUp),
        ];
        for &(code, attempt, elapsed, info, jitter, want) in table {
            let got = decide(code, attempt, MS(elapsed), info.map(MS), &p, jitter);
            assert_eq!(
                got, want,
                "{code:?} attempt {attempt} elapsed {elapsed}ms info {info:?} jitter {jitter}"
            );
        }
    }

    #[test]
    fn zero_budget_never_retries() {
        let p = Backoff::with_max_elapsed(Duration::ZERO);
        assert_eq!(
            decide(Code::Unavailable, 1, Duration::ZERO, None, &p, 0.0),
            Retry::GiveUp
        );
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        for (status, code) in [
            (200, Code::Ok),
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (413, Code::Unknown),
            (429, Code::Unavailable),
            (500, Code::Unknown),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
        ] {
            assert_eq!(code_for_http_status(status), code, "{status}");
        }
    }
}
