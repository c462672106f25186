//! The console exporter, used when no collector endpoint is configured: one readable line per
//! span on stdout, written as each span arrives (no batching: someone running `curl` against a
//! traced service expects to see the span right away).
//!
//! Writing runs on its own OS thread because stdout writes block (a slow terminal, a paused
//! pager) and must not stall a tokio worker; a dedicated thread, unlike `spawn_blocking`, also
//! cannot hold up runtime shutdown if stdout never drains. A closed stdout (broken pipe) stops
//! printing; later spans are counted as rejected instead of panicking the agent. The queue and
//! the `SpanSender` side live in `mod.rs`.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::ExportError;
use crate::span::model::{hex, AttrValue, Span, SpanKind, StatusCode};
use crate::telemetry::{Counter, Telemetry};

/// Starts the writer thread and returns a task that completes when the thread has printed
/// everything, or `grace` after the last sender went away if stdout is stuck.
pub(crate) fn spawn(
    rx: mpsc::Receiver<Span>,
    senders_gone: oneshot::Receiver<()>,
    grace: Duration,
    telemetry: Arc<Telemetry>,
) -> Result<JoinHandle<()>, ExportError> {
    let stdout = io::stdout();
    spawn_with(rx, senders_gone, grace, telemetry, move |line| {
        // One lock per span so lines never interleave with other stdout writers.
        let mut out = stdout.lock();
        out.write_all(line)?;
        out.flush()
    })
}

/// [`spawn`] with any line writer, so tests need not print.
fn spawn_with(
    rx: mpsc::Receiver<Span>,
    senders_gone: oneshot::Receiver<()>,
    grace: Duration,
    telemetry: Arc<Telemetry>,
    write: impl FnMut(&[u8]) -> io::Result<()> + Send + 'static,
) -> Result<JoinHandle<()>, ExportError> {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("span-console".into())
        .spawn(move || {
            // Dropped when the thread ends, which resolves `done_rx`.
            let _done = done_tx;
            run(rx, &telemetry, write);
        })
        .map_err(|source| ExportError::Thread { source })?;
    Ok(tokio::spawn(async move {
        let mut done_rx = done_rx;
        tokio::select! {
            _ = &mut done_rx => return,
            _ = senders_gone => {}
        }
        if tokio::time::timeout(grace, done_rx).await.is_err() {
            tracing::warn!(?grace, "console export: stdout did not drain within the shutdown timeout; abandoning the rest");
        }
    }))
}

/// Prints spans until every sender is gone. `write` gets one complete line per call.
fn run(
    mut rx: mpsc::Receiver<Span>,
    telemetry: &Telemetry,
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) {
    let mut line = String::with_capacity(512);
    let mut printing = true;
    let mut warned = false;
    while let Some(span) = rx.blocking_recv() {
        if !printing {
            telemetry.incr(Counter::SpansRejected);
            continue;
        }
        line.clear();
        format_span(&span, &mut line);
        line.push('\n');
        match write(line.as_bytes()) {
            Ok(()) => telemetry.incr(Counter::SpansExported),
            Err(e) => {
                telemetry.incr(Counter::SpansRejected);
                if e.kind() == io::ErrorKind::BrokenPipe {
                    // Whoever read our stdout is gone; keep draining so senders never block,
                    // but stop trying to write.
                    printing = false;
                    tracing::warn!("console export: stdout is closed; spans are no longer printed");
                } else if !warned {
                    warned = true;
                    tracing::warn!(error = %e, "console export: writing to stdout failed; further errors are only counted");
                }
            }
        }
    }
}

/// Appends the one-line rendering of `span` (without the newline) to `out`:
/// `HH:MM:SS.mmmZ KIND name  duration STATUS trace=… span=… parent=… svc=… pid=… key=value…`.
/// Times are UTC, like the agent's own log timestamps.
pub(crate) fn format_span(span: &Span, out: &mut String) {
    push_time(out, span.start_unix_nano);
    out.push(' ');
    out.push_str(kind_name(span.kind));
    out.push(' ');
    push_escaped(out, &span.name);
    out.push_str("  ");
    push_duration(out, span.end_unix_nano.saturating_sub(span.start_unix_nano));
    out.push(' ');
    out.push_str(match span.status {
        StatusCode::Unset => "UNSET",
        StatusCode::Ok => "OK",
        StatusCode::Error => "ERROR",
    });
    if let Some(message) = &span.status_message {
        out.push('(');
        push_str_value(out, message);
        out.push(')');
    }
    out.push_str(" trace=");
    out.push_str(&hex(&span.context.trace_id));
    out.push_str(" span=");
    out.push_str(&hex(&span.context.span_id));
    out.push_str(" parent=");
    match &span.parent_span_id {
        Some(id) => out.push_str(&hex(id)),
        None => out.push('-'),
    }
    for (label, key) in [("svc", "service.name"), ("pid", "process.pid")] {
        out.push(' ');
        out.push_str(label);
        out.push('=');
        match span.resource.get(key) {
            Some(v) => push_value(out, v),
            None => out.push('-'),
        }
    }
    for attr in &span.attributes {
        out.push(' ');
        out.push_str(attr.key);
        out.push('=');
        push_value(out, &attr.value);
    }
}

fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
        SpanKind::Internal => "INTERNAL",
    }
}

fn push_time(out: &mut String, unix_nano: u64) {
    let secs = unix_nano / 1_000_000_000;
    let millis = (unix_nano % 1_000_000_000) / 1_000_000;
    let day = secs % 86_400;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}.{millis:03}Z",
        day / 3600,
        day / 60 % 60,
        day % 60
    );
}

fn push_duration(out: &mut String, nanos: u64) {
    let _ = match nanos {
        0..1_000 => write!(out, "{nanos}ns"),
        1_000..1_000_000 => write!(out, "{:.0}µs", nanos as f64 / 1e3),
        1_000_000..1_000_000_000 => write!(out, "{:.1}ms", nanos as f64 / 1e6),
        _ => write!(out, "{:.2}s", nanos as f64 / 1e9),
    };
}

fn push_value(out: &mut String, value: &AttrValue) {
    let _ = match value {
        AttrValue::Str(s) => {
            push_str_value(out, s);
            Ok(())
        }
        AttrValue::Int(i) => write!(out, "{i}"),
        AttrValue::Bool(b) => write!(out, "{b}"),
        AttrValue::Double(d) => write!(out, "{d}"),
    };
}

/// Strings that would make the line ambiguous (empty, spaces, quotes, `=`, control characters)
/// are written as quoted, escaped literals; others as they are.
fn push_str_value(out: &mut String, s: &str) {
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=' || c == '\\')
    {
        let _ = write!(out, "{s:?}");
    } else {
        out.push_str(s);
    }
}

/// Captured text can contain anything; a newline in a span name must not split the line.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::tests::{resource, sample_span};
    use crate::span::model::{Attribute, Resource};

    fn line(span: &Span) -> String {
        let mut s = String::new();
        format_span(span, &mut s);
        s
    }

    #[test]
    fn golden_line() {
        let res = resource("service_a");
        let mut span = sample_span(&res, 0x4b);
        span.context.span_id = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        span.start_unix_nano = 1_700_000_467_123_456_789; // 22:21:07.123 UTC
        span.end_unix_nano = span.start_unix_nano + 3_200_000;
        span.status = StatusCode::Unset;
        span.status_message = None;
        span.name = "GET /users/{id}".into();
        span.attributes = vec![
            Attribute::new("http.request.method", "GET"),
            Attribute::new("url.path", "/users/42"),
            Attribute::new("http.response.status_code", 200i64),
            Attribute::new("user_agent.original", "curl/8.5 (x86_64)"),
            Attribute::new("network.secure", false),
            Attribute {
                key: "ratio",
                value: AttrValue::Double(0.5),
            },
        ];
        assert_eq!(
            line(&span),
            "22:21:07.123Z SERVER GET /users/{id}  3.2ms UNSET \
             trace=4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b span=00f067aa0ba902b7 parent=aaaaaaaaaaaaaaaa \
             svc=service_a pid=123 http.request.method=GET url.path=/users/42 http.response.status_code=200 \
             user_agent.original=\"curl/8.5 (x86_64)\" network.secure=false ratio=0.5"
        );
    }

    #[test]
    fn root_error_span_without_resource_attributes() {
        let bare = Arc::new(Resource::default());
        let mut span = sample_span(&bare, 1);
        span.parent_span_id = None;
        span.kind = SpanKind::Client;
        span.name = "GET\n/evil".into();
        span.status_message = Some("connection reset".into());
        span.attributes.clear();
        span.start_unix_nano = 86_400_000_000_000;
        span.end_unix_nano = span.start_unix_nano + 1_500_000_000;
        assert_eq!(
            line(&span),
            "00:00:00.000Z CLIENT GET\\n/evil  1.50s ERROR(\"connection reset\") \
             trace=01010101010101010101010101010101 span=0202020202020202 parent=- svc=- pid=-"
        );
    }

    #[test]
    fn durations_are_humanised() {
        for (nanos, want) in [
            (0, "0ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (850_400, "850µs"),
            (3_249_000, "3.2ms"),
            (999_000_000, "999.0ms"),
            (1_000_000_000, "1.00s"),
            (61_234_000_000, "61.23s"),
        ] {
            let mut s = String::new();
            push_duration(&mut s, nanos);
            assert_eq!(s, want);
        }
    }

    #[tokio::test]
    async fn prints_each_span_as_it_arrives_and_finishes_after_the_senders() {
        let telemetry = Arc::new(Telemetry::new());
        let sink = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(8);
        let (gone_tx, gone_rx) = oneshot::channel();
        let writer_sink = sink.clone();
        let handle = spawn_with(
            rx,
            gone_rx,
            Duration::from_secs(5),
            telemetry.clone(),
            move |line| {
                writer_sink
                    .lock()
                    .map_err(|_| io::Error::other("poisoned"))?
                    .extend_from_slice(line);
                Ok(())
            },
        )
        .expect("spawn");
        let res = resource("svc");
        tx.try_send(sample_span(&res, 1)).expect("room");
        // No batching: the line shows up while the sender is still alive.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while sink.lock().expect("lock").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "line not printed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.try_send(sample_span(&res, 2)).expect("room");
        drop((tx, gone_tx));
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("finished")
            .expect("task ok");
        let text = String::from_utf8(sink.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines().all(|l| l.contains(" SERVER GET /users/")),
            "{text}"
        );
        assert_eq!(telemetry.get(Counter::SpansExported), 2);
    }

    #[tokio::test]
    async fn a_stuck_stdout_does_not_hold_shutdown_beyond_the_grace() {
        let (unblock_tx, unblock_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel(8);
        let (gone_tx, gone_rx) = oneshot::channel();
        let handle = spawn_with(
            rx,
            gone_rx,
            Duration::from_millis(50),
            Arc::new(Telemetry::new()),
            move |_| {
                // Blocks like a write to a pipe nobody reads, until the test ends.
                let _ = unblock_rx.recv();
                Ok(())
            },
        )
        .expect("spawn");
        tx.try_send(sample_span(&resource("svc"), 1)).expect("room");
        drop((tx, gone_tx));
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("bounded")
            .expect("task ok");
        drop(unblock_tx);
    }

    #[test]
    fn prints_counts_and_survives_a_closed_stdout() {
        let telemetry = Telemetry::new();
        let res = resource("svc");
        let (tx, rx) = mpsc::channel(8);
        for n in 0..4 {
            tx.try_send(sample_span(&res, n)).expect("room");
        }
        drop(tx);
        let mut written = Vec::new();
        let mut calls = 0;
        run(rx, &telemetry, |l| {
            calls += 1;
            if calls >= 3 {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            written.extend_from_slice(l);
            Ok(())
        });
        // Two lines printed; the third write failed and stopped printing; the fourth was not tried.
        assert_eq!(calls, 3);
        let text = String::from_utf8(written).expect("utf8");
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        assert_eq!(telemetry.get(Counter::SpansExported), 2);
        assert_eq!(telemetry.get(Counter::SpansRejected), 2);
    }
}
