//! The OTLP exporter task: takes spans off the bounded queue, groups them into batches, sends
//! each batch with retries, counts the outcome, and on shutdown sends what it still holds within
//! the shutdown timeout.
//!
//! Up to `max_in_flight` batches are being sent (or waiting to be retried) at once, each on a
//! task of its own with a clone of the client (one connection: gRPC multiplexes the calls,
//! OTLP/HTTP pools). While every slot is taken and the next batch is full, the queue is not
//! read, so new spans wait there and are dropped by `SpanSender::send` once it is full: the
//! capture path never waits for the collector (back-pressure becomes counted loss). Several in
//! flight keep a collector that takes milliseconds per call fed; one in flight would cap the
//! export at batch size / call latency. The queue, the transports and the retry decision live
//! in `mod.rs`, `client.rs`/`otlp_http.rs` and `retry.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
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
    /// Batches being sent at once, at least 1.
    pub max_in_flight: usize,
}

/// Tracks shutdown: until every sender is gone there is no deadline; from then on, everything
/// must finish within `grace`. The deadline is published to the batches in flight.
struct Shutdown {
    senders_gone: Option<oneshot::Receiver<()>>,
    grace: Duration,
    deadline: watch::Sender<Option<Instant>>,
}

impl Shutdown {
    /// Waits for the senders to go away (forever if they never do) and sets the deadline.
    async fn begun(&mut self) {
        match self.senders_gone.as_mut() {
            Some(rx) => {
                // Resolves (with an error: nothing is ever sent) when the sender side drops.
                let _ = rx.await;
                self.senders_gone = None;
                self.deadline
                    .send_replace(Some(Instant::now() + self.grace));
            }
            None => std::future::pending().await,
        }
    }

    /// The queue is closed (every sender is gone): the deadline starts now if it has not.
    fn begin_now(&mut self) {
        if self.senders_gone.take().is_some() {
            self.deadline
                .send_replace(Some(Instant::now() + self.grace));
        }
    }
}

/// A batch's view of the shutdown deadline.
struct Deadline(watch::Receiver<Option<Instant>>);

impl Deadline {
    /// Runs `fut` for at most `limit`, also cut short by the shutdown deadline if shutdown
    /// begins meanwhile. `None` when time ran out.
    async fn bounded<F: Future>(&mut self, fut: F, limit: Duration) -> Option<F::Output> {
        let limit_at = Instant::now() + limit;
        tokio::pin!(fut);
        loop {
            let deadline = *self.0.borrow_and_update();
            let until = deadline.map_or(limit_at, |d| d.min(limit_at));
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = sleep_until(until) => return None,
                // An error: the exporter is gone, and the deadline can no longer change.
                changed = self.0.changed() => if changed.is_err() {
                    return tokio::time::timeout_at(until, fut).await.ok();
                },
            }
        }
    }

    /// Time left before the deadline, or `None` without one.
    fn remaining(&self) -> Option<Duration> {
        self.0
            .borrow()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// How a batch ended, for the exporter to count and log.
enum Outcome {
    Accepted { spans: u64, accepted: Accepted },
    GaveUp,
}

/// What one batch needs to be sent on its own task.
struct BatchSend {
    client: Client,
    telemetry: Arc<Telemetry>,
    settings: Arc<Settings>,
    deadline: Deadline,
}

pub(crate) struct Exporter {
    rx: mpsc::Receiver<Span>,
    client: Client,
    telemetry: Arc<Telemetry>,
    settings: Arc<Settings>,
    shutdown: Shutdown,
    in_flight: JoinSet<Outcome>,
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
            deadline: watch::channel(None).0,
        };
        Self {
            rx,
            client,
            telemetry,
            settings: Arc::new(settings),
            shutdown,
            in_flight: JoinSet::new(),
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
                done = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.settle(done);
                    continue;
                }
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
        // Every sender is gone and the queue is empty: send the remainder, wait for the rest.
        self.shutdown.begin_now();
        self.flush(&mut batch).await;
        while let Some(done) = self.in_flight.join_next().await {
            self.settle(Some(done));
        }
        tracing::debug!("span exporter stopped");
    }

    /// Starts sending `batch` (and empties it) once a slot is free; meanwhile the queue waits.
    async fn flush(&mut self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        while self.in_flight.len() >= self.settings.max_in_flight.max(1) {
            tokio::select! {
                done = self.in_flight.join_next() => self.settle(done),
                _ = self.shutdown.begun() => {}
            }
        }
        let next = Vec::with_capacity(self.settings.batch_size);
        let spans = std::mem::replace(batch, next);
        let send = BatchSend {
            client: self.client.clone(),
            telemetry: self.telemetry.clone(),
            settings: self.settings.clone(),
            deadline: Deadline(self.shutdown.deadline.subscribe()),
        };
        self.in_flight.spawn(send.run(spans));
    }

    /// Counts a finished batch. A batch task that panicked lost its spans: counted as given up.
    fn settle(&mut self, done: Option<Result<Outcome, tokio::task::JoinError>>) {
        match done {
            Some(Ok(Outcome::Accepted { spans, accepted })) => self.accepted(spans, accepted),
            Some(Ok(Outcome::GaveUp)) | None => {}
            Some(Err(e)) => {
                self.telemetry.incr(Counter::ExportFailures);
                tracing::error!(error = %e, "a span export task failed; its batch is lost");
            }
        }
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
}

impl BatchSend {
    /// Sends `batch` (retrying as allowed) and says how it ended; a batch given up is counted
    /// here.
    async fn run(mut self, batch: Vec<Span>) -> Outcome {
        let n = batch.len() as u64;
        let first_try = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let budget = match self.deadline.remaining() {
                Some(left) if left.is_zero() => {
                    return self.give_up(n, "the shutdown timeout expired", None);
                }
                Some(left) => left.min(self.settings.call_timeout),
                None => self.settings.call_timeout,
            };
            let call = self.client.export(&batch, budget);
            let result = match self.deadline.bounded(call, budget).await {
                Some(result) => result,
                None => Err(super::client::Failure::timed_out(budget)),
            };
            let failure = match result {
                Ok(accepted) => {
                    self.telemetry.health().export_succeeded();
                    return Outcome::Accepted { spans: n, accepted };
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
                return self.give_up(n, &failure.message, Some(failure.code));
            };
            if self.deadline.remaining().is_some_and(|left| left < delay) {
                return self.give_up(
                    n,
                    &format!(
                        "{} (no time left to retry before the shutdown timeout)",
                        failure.message
                    ),
                    Some(failure.code),
                );
            }
            self.telemetry.incr(Counter::ExportRetries);
            tracing::debug!(code = ?failure.code, error = %failure.message, attempt, ?delay, "export failed; retrying");
            // Shutdown beginning during the wait can make the deadline come first.
            if self
                .deadline
                .bounded(tokio::time::sleep(delay), delay)
                .await
                .is_none()
                && self.deadline.remaining().is_some_and(|left| left.is_zero())
            {
                return self.give_up(
                    n,
                    &format!(
                        "{} (shutdown timeout expired while waiting to retry)",
                        failure.message
                    ),
                    Some(failure.code),
                );
            }
        }
    }

    fn give_up(&self, n: u64, reason: &str, code: Option<tonic::Code>) -> Outcome {
        self.telemetry.incr(Counter::ExportFailures);
        self.telemetry.add(Counter::SpansRejected, n);
        tracing::warn!(
            spans = n,
            ?code,
            error = reason,
            "dropping a batch of spans the collector did not take"
        );
        Outcome::GaveUp
    }
}
