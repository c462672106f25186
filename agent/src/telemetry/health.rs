//! Liveness and readiness: the few facts `/healthz` and `/readyz` judge, written by the stages
//! that know them and read by the HTTP endpoint (`http.rs`) at request time.
//!
//! - The event loop beats a heartbeat on its one-second housekeeping tick ([`Health::beat`]);
//!   a loop that has not ticked for [`STALL_LIMIT`] is not alive.
//! - `app` marks the agent ready once its probes are attached, and stopping when shutdown begins.
//! - The OTLP exporter reports the outcome of every export call ([`Health::export_succeeded`],
//!   [`Health::export_failed`]); the console exporter reports nothing and so never fails.
//! - A few gauges only `app` knows ([`Gauge`]), sampled on the housekeeping tick.
//!
//! Everything is a relaxed atomic written at most once per tick or per export call, so nothing
//! here costs the capture path anything; the one lock (the last export error) is taken only by
//! the exporter after a failed call and by `/readyz`. The decisions are pure functions of the
//! state and a `now`, so they are tested without waiting.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the event loop may go without a tick before `/healthz` fails. The loop ticks every
/// second, so this is ten missed ticks: a loop stuck in one call, not one that is merely busy.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How long start-up (loading and attaching probes, scanning processes for TLS libraries,
/// discovering existing connections) may take before `/healthz` fails.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// The last export error is kept to this many bytes: enough for a reason, not for a page.
const MAX_ERROR_LEN: usize = 200;

macro_rules! gauges {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Values the agent reports as they are now (not running totals).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Gauge { $($variant,)* }

        impl Gauge {
            pub const ALL: &'static [Gauge] = &[$(Gauge::$variant,)*];
            /// Stable metric name (`agent_*`, no `_total`: these go up and down).
            pub fn name(self) -> &'static str { match self { $(Gauge::$variant => $name,)* } }
            /// One line saying what the gauge means.
            pub fn help(self) -> &'static str { match self { $(Gauge::$variant => $help,)* } }
        }
    };
}

gauges! {
    ConnectionsTracked => "agent_connections_tracked", "connections tracked in user space now (sampled every second)";
    ProbesAttached => "agent_probes_attached", "kernel probes attached at start (the TLS uprobes are counted by agent_tls_files_attached_total)";
}

/// Where the agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading and attaching probes; not ready yet.
    Starting = 0,
    /// Probes attached, the event loop running.
    Running = 1,
    /// Shutdown has begun: flushing spans, detaching probes.
    Stopping = 2,
}

/// The shared state. One per agent, inside [`Telemetry`](super::Telemetry).
pub struct Health {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds from `start` to the event loop's last tick, plus one (0: no tick yet).
    last_beat: AtomicU64,
    /// Milliseconds from `start` to the first of the export calls that have failed since the
    /// last one that succeeded, plus one (0: the last call succeeded, or there was none).
    failing_since: AtomicU64,
    last_error: Mutex<String>,
    gauges: Vec<AtomicI64>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            last_beat: AtomicU64::new(0),
            failing_since: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            gauges: Gauge::ALL.iter().map(|_| AtomicI64::new(0)).collect(),
        }
    }
}

/// A verdict for a probe endpoint: `Ok` with a one-word state, or `Err` with a short reason.
pub type Verdict = Result<&'static str, String>;

impl Health {
    /// Time since the agent started (the clock every other method is judged on).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn stamp(&self) -> u64 {
        (self.now().as_millis() as u64).saturating_add(1)
    }

    /// The event loop ticked.
    pub fn beat(&self) {
        self.last_beat.store(self.stamp(), Ordering::Relaxed);
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    pub fn set_gauge(&self, g: Gauge, v: i64) {
        self.gauges[g as usize].store(v, Ordering::Relaxed);
    }

    pub fn gauge(&self, g: Gauge) -> i64 {
        self.gauges[g as usize].load(Ordering::Relaxed)
    }

    /// An export call succeeded (the collector answered, even if it rejected some spans).
    pub fn export_succeeded(&self) {
        self.failing_since.store(0, Ordering::Relaxed);
    }

    /// An export call failed (it may still be retried); `reason` is kept for `/readyz`.
    pub fn export_failed(&self, reason: &str) {
        let _ = self.failing_since.compare_exchange(
            0,
            self.stamp(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let mut cut = reason.len().min(MAX_ERROR_LEN);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Ok(mut e) = self.last_error.lock() {
            e.clear();
            e.push_str(&reason[..cut]);
        }
    }

    /// For `/healthz`: alive while starting (within [`STARTUP_LIMIT`]) and while the event loop
    /// ticks (within [`STALL_LIMIT`]).
    pub fn liveness(&self) -> Verdict {
        self.liveness_at(self.now())
    }

    fn liveness_at(&self, now: Duration) -> Verdict {
        match self.phase() {
            Phase::Stopping => Ok("stopping"),
            Phase::Starting if now <= STARTUP_LIMIT => Ok("starting"),
            Phase::Starting => Err(format!(
                "start-up has taken {}s (limit {}s)",
                now.as_secs(),
                STARTUP_LIMIT.as_secs()
            )),
            Phase::Running => {
                let since = since(now, self.last_beat.load(Ordering::Relaxed));
                match since {
                    Some(d) if d > STALL_LIMIT => Err(format!(
                        "the event loop has not ticked for {:.1}s (limit {}s)",
                        d.as_secs_f64(),
                        STALL_LIMIT.as_secs()
                    )),
                    _ => Ok("ok"),
                }
            }
        }
    }

    /// For `/readyz`: alive, probes attached, and export not failing for longer than
    /// `export_grace` (`None`: export failures do not count).
    pub fn readiness(&self, export_grace: Option<Duration>) -> Verdict {
        self.readiness_at(self.now(), export_grace)
    }

    fn readiness_at(&self, now: Duration, export_grace: Option<Duration>) -> Verdict {
        match self.phase() {
            Phase::Starting => return Err("starting: probes are not attached yet".into()),
            Phase::Stopping => return Err("shutting down".into()),
            Phase::Running => {}
        }
        self.liveness_at(now)?;
        let failing = since(now, self.failing_since.load(Ordering::Relaxed));
        if let (Some(grace), Some(d)) = (export_grace, failing) {
            if d > grace {
                let last = self
                    .last_error
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default();
                return Err(format!(
                    "export failing for {}s (limit {}s): {last}",
                    d.as_secs(),
                    grace.as_secs()
                ));
            }
        }
        Ok("ready")
    }
}

/// Time from a stamp (see [`Health::stamp`]) to `now`; `None` for the "never" stamp 0.
fn since(now: Duration, stamp: u64) -> Option<Duration> {
    let at = Duration::from_millis(stamp.checked_sub(1)?);
    Some(now.saturating_sub(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn health() -> Health {
        Health::default()
    }

    fn set_beat(h: &Health, at: Duration) {
        h.last_beat
            .store(at.as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn set_failing(h: &Health, at: Duration, why: &str) {
        h.export_failed(why);
        h.failing_since
            .store(at.as_millis() as u64 + 1, Ordering::Relaxed);
    }

    #[test]
    fn starting_is_alive_but_not_ready_until_the_startup_limit() {
        let h = health();
        assert_eq!(h.liveness_at(S(5)), Ok("starting"));
        assert!(h.readiness_at(S(5), None).unwrap_err().contains("starting"));
        let e = h.liveness_at(STARTUP_LIMIT + S(1)).unwrap_err();
        assert!(e.contains("start-up has taken 121s"), "{e}");
    }

    #[test]
    fn a_loop_that_stops_ticking_is_not_alive_nor_ready() {
        let h = health();
        h.set_phase(Phase::Running);
        set_beat(&h, S(100));
        assert_eq!(h.liveness_at(S(105)), Ok("ok"));
        assert_eq!(h.readiness_at(S(105), Some(S(30))), Ok("ready"));
        assert_eq!(
            h.liveness_at(S(110)),
            Ok("ok"),
            "exactly the limit is still alive"
        );
        let e = h.liveness_at(S(111)).unwrap_err();
        assert!(e.contains("not ticked for 11.0s"), "{e}");
        assert_eq!(h.readiness_at(S(111), None).unwrap_err(), e);
        // A beat from the real clock brings it back.
        h.beat();
        assert_eq!(h.liveness(), Ok("ok"));
    }

    #[test]
    fn export_failing_longer_than_the_grace_is_not_ready() {
        let h = health();
        h.set_phase(Phase::Running);
        set_beat(&h, S(80));
        set_failing(&h, S(50), "Unavailable: connection refused");
        assert_eq!(h.readiness_at(S(60), Some(S(30))), Ok("ready"));
        let e = h.readiness_at(S(81), Some(S(30))).unwrap_err();
        assert_eq!(
            e,
            "export failing for 31s (limit 30s): Unavailable: connection refused"
        );
        // Later failures do not move the start of the failing period.
        h.export_failed("DeadlineExceeded: no answer within 10s");
        let e = h.readiness_at(S(81), Some(S(30))).unwrap_err();
        assert!(
            e.contains("for 31s") && e.ends_with("no answer within 10s"),
            "{e}"
        );
        // Without a grace, export does not decide readiness; liveness still does.
        assert_eq!(h.readiness_at(S(65), None), Ok("ready"));
        h.export_succeeded();
        assert_eq!(h.readiness_at(S(81), Some(S(30))), Ok("ready"));
    }

    #[test]
    fn stopping_is_alive_and_not_ready() {
        let h = health();
        h.set_phase(Phase::Stopping);
        assert_eq!(h.liveness_at(S(1000)), Ok("stopping"));
        assert_eq!(h.readiness_at(S(1), None).unwrap_err(), "shutting down");
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let h = health();
        h.export_failed(&"é".repeat(MAX_ERROR_LEN));
        let e = h.last_error.lock().unwrap().clone();
        assert!(
            e.len() <= MAX_ERROR_LEN && e.chars().all(|c| c == 'é'),
            "{e}"
        );
    }

    #[test]
    fn gauges_are_set_and_named() {
        let h = health();
        h.set_gauge(Gauge::ConnectionsTracked, 7);
        assert_eq!(h.gauge(Gauge::ConnectionsTracked), 7);
        assert_eq!(h.gauge(Gauge::ProbesAttached), 0);
        for g in Gauge::ALL {
            assert!(g.name().starts_with("agent_") && !g.name().ends_with("_total"));
        }
    }
}
