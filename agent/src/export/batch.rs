//! The OTLP exporter task: takes spans off the bounded queue, groups them into batches, sends
//! each batch with retries, counts the outcome, and on shutdown sends what it still holds within
//! the shutdown timeout.
//!
//! Batches are sent one at a time. While one is in flight or waiting to be retried the queue is
//! not read, so new spans wait there and are dropped by `SpanSender::send` once it is full: the
//! capture path never waits for the collector (back-pressure becomes counted loss). The queue,
//! the transports and the retry decision live in `mod.rs`, `client.rs`/`otlp_http.rs` and `retry.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use super::client::{Accepted, Client};
use super::retry::{decide, Backoff, Retry};
use crate::span::model::Span;
use crate::telemetry::{Counter, Telemetry};

/// How many distinct partial-success messages are logged before further ones are suppressed
/// (a collector could put a span id in every message).
const MAX_LOGGED_MESSAGES: usize = 32;

pub(crate) struct Settings {
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub call_timeout: Duration,
    pub backoff: Backoff,
    pub shutdown_timeout: Duration,
}

/// Tracks shutdown: until every sender is gone there is no deadline; from then on, everything
/// must finish within `grace`.
struct Shutdown {
    senders_gone: Option<oneshot::Receiver<()>>,
    grace: Duration,
    deadline: Option<Instant>,
}

impl Shutdown {
    /// Waits for the senders to go away (forever if they never do) and sets the deadline.
    async fn begun(&mut self) {
        match self.senders_gone.as_mut() {
            Some(rx) => {
                // Resolves (with an error: nothing is ever sent) when the sender side drops.
                let _ = rx.await;
                self.senders_gone = None;
                self.deadline = Some(Instant::now() + self.grace);
            }
            None => std::future::pending().await,
        }
    }

    /// Runs `fut` for at most `limit`, also cut short by the shutdown deadline if shutdown
    /// begins meanwhile. `None` when time ran out.
    async fn bounded<F: Future>(&mut self, fut: F, limit: Duration) -> Option<F::Output> {
        let limit_at = Instant::now() + limit;
        tokio::pin!(fut);
        loop {
            let until = self.deadline.map_or(limit_at, |d| d.min(limit_at));
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = sleep_until(until) => return None,
                _ = self.begun() => {}
            }
        }
    }

    /// Time left before the deadline, or `None` without one.
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

pub(crate) struct Exporter {
    rx: mpsc::Receiver<Span>,
    client: Client,
    telemetry: Arc<Telemetry>,
    settings: Settings,
    shutdown: Shutdown,
    logged_messages: HashSet<String>,
    suppression_logged: bool,
}

impl Exporter {
    pub(crate) fn new(
        rx: mpsc::Receiver<Span>,
        senders_gone: oneshot::Receiver<()>,
        client: Client,
        telemetry: Arc<Telemetry>,
        settings: Settings,
    ) -> Self {
        let shutdown = Shutdown {
            senders_gone: Some(senders_gone),
            grace: settings.shutdown_timeout,
            deadline: None,
        };
        Self {
            rx,
            client,
            telemetry,
            settings,
            shutdown,
            logged_messages: HashSet::new(),
            suppression_logged: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut batch: Vec<Span> = Vec::with_capacity(self.settings.batch_size);
        // When the current batch must go out even if not full.
        let mut flush_at: Option<Instant> = None;
        loop {
            let span = tokio::select! {
                // Spans first: once senders are gone the queue still drains before `None`.
                biased;
                span = self.rx.recv() => span,
                _ = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    self.flush(&mut batch).await;
                    continue;
                }
                _ = self.shutdown.begun() => continue,
            };
            let Some(span) = span else { break };
            if batch.is_empty() {
                flush_at = Some(Instant::now() + self.settings.batch_timeout);
            }
            batch.push(span);
            if batch.len() >= self.settings.batch_size {
                flush_at = None;
                self.flush(&mut batch).await;
            }
        }
        // Every sender is gone and the queue is empty: send the remainder.
        self.flush(&mut batch).await;
        tracing::debug!("span exporter stopped");
    }

    /// Sends `batch` (retrying as allowed), counts the outcome and empties it.
    async fn flush(&mut self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let first_try = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let budget = match self.shutdown.remaining() {
                Some(left) if left.is_zero() => {
                    self.give_up(n, "the shutdown timeout expired", None);
                    break;
                }
                Some(left) => left.min(self.settings.call_timeout),
                None => self.settings.call_timeout,
            };
            let call = self.client.export(batch, budget);
            let result = match self.shutdown.bounded(call, budget).await {
                Some(result) => result,
                None => Err(super::client::Failure::timed_out(budget)),
            };
            let failure = match result {
                Ok(accepted) => {
                    self.telemetry.health().export_succeeded();
                    self.accepted(n, accepted);
                    break;
                }
                Err(failure) => failure,
            };
            // For /readyz: how long the collector has been failing, and why.
            let why = format!("{:?}: {}", failure.code, failure.message);
            self.telemetry.health().export_failed(&why);
            let decision = decide(
                failure.code,
                attempt,
                first_try.elapsed(),
                failure.retry_after,
                &self.settings.backoff,
                fastrand::f64(),
            );
            let Retry::After(delay) = decision else {
                self.give_up(n, &failure.message, Some(failure.code));
                break;
            };
            if self.shutdown.remaining().is_some_and(|left| left < delay) {
                self.give_up(
                    n,
                    &format!(
                        "{} (no time left to retry before the shutdown timeout)",
                        failure.message
                    ),
                    Some(failure.code),
                );
                break;
            }
            self.telemetry.incr(Counter::ExportRetries);
            tracing::debug!(code = ?failure.code, error = %failure.message, attempt, ?delay, "export failed; retrying");
            // Shutdown beginning during the wait can make the deadline come first.
            if self
                .shutdown
                .bounded(tokio::time::sleep(delay), delay)
                .await
                .is_none()
                && self.shutdown.remaining().is_some_and(|left| left.is_zero())
            {
                self.give_up(
                    n,
                    &format!(
                        "{} (shutdown timeout expired while waiting to retry)",
                        failure.message
                    ),
                    Some(failure.code),
                );
                break;
            }
        }
        batch.clear();
    }

    fn accepted(&mut self, n: u64, accepted: Accepted) {
        let rejected = accepted.rejected.min(n);
        self.telemetry.add(Counter::SpansExported, n - rejected);
        self.telemetry.add(Counter::SpansRejected, rejected);
        // OTLP spec: a partial success with rejected == 0 and a message is a warning.
        if (rejected > 0 || !accepted.message.is_empty()) && self.should_log(&accepted.message) {
            tracing::warn!(rejected, message = %accepted.message, "collector reported partial success");
        }
    }

    /// Logs each distinct message once, up to a bound.
    fn should_log(&mut self, message: &str) -> bool {
        if self.logged_messages.contains(message) {
            return false;
        }
        if self.logged_messages.len() >= MAX_LOGGED_MESSAGES {
            if !self.suppression_logged {
                self.suppression_logged = true;
                tracing::warn!(
                    "too many distinct partial-success messages; no longer logging new ones"
                );
            }
            return false;
        }
        self.logged_messages.insert(message.to_owned());
        true
    }

    fn give_up(&self, n: u64, reason: &str, code: Option<tonic::Code>) {
        self.telemetry.incr(Counter::ExportFailures);
        self.telemetry.add(Counter::SpansRejected, n);
        tracing::warn!(
            spans = n,
            ?code,
            error = reason,
            "dropping a batch of spans the collector did not take"
        );
    }
}
