//! The agent's own health: counters for everything it lost, dropped, truncated, skipped or
//! could not parse, the periodic log line that reports them, and (in `health`, `metrics` and
//! `http`) the liveness/readiness state and the endpoint serving them with the counters.
//!
//! Counters are plain relaxed atomics indexed by [`Counter`], so any stage can bump one without
//! locking and label cardinality is fixed at compile time. This module does not decide what is
//! worth counting; each stage does, at the place the condition happens.

pub mod health;
pub mod http;
pub mod metrics;
pub mod red;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::ProtocolId;

macro_rules! counters {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Everything the agent counts about itself.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            /// Stable metric-style name (`agent_*`), used in logs and the metrics endpoint.
            pub fn name(self) -> &'static str { match self { $(Counter::$variant => $name,)* } }
            /// One line saying what the counter means.
            pub fn help(self) -> &'static str { match self { $(Counter::$variant => $help,)* } }
        }
    };
}

counters! {
    // Kernel side (copied from the eBPF COUNTERS map).
    KernelRingbufFull => "agent_kernel_events_lost_ringbuf_full_total", "records the kernel could not write because the ring buffer was full";
    KernelTruncated => "agent_kernel_payloads_truncated_total", "syscall payloads cut to capture_bytes or MAX_IOV iovecs";
    KernelMissingEntry => "agent_kernel_syscall_exits_without_entry_total", "syscall exits whose saved arguments were missing";
    KernelSockReadFailed => "agent_kernel_socket_reads_failed_total", "sockets whose kernel struct could not be read at connect/accept";
    KernelPayloadReadFailed => "agent_kernel_payload_reads_failed_total", "payload copies from user memory that failed";
    KernelConnInsertFailed => "agent_kernel_conn_inserts_failed_total", "connections the kernel could not add to its table";
    KernelTlsUnmapped => "agent_kernel_tls_unmapped_total", "OpenSSL reads/writes on an SSL session whose socket was never seen (plaintext dropped)";
    KernelTlsFdFromThread => "agent_kernel_tls_fd_from_thread_total", "SSL sessions without socket syscalls (memory BIOs, e.g. Node.js) tied to the socket their thread last read TLS from";
    KernelGoTlsUntracked => "agent_kernel_go_tls_untracked_total", "Go crypto/tls calls on a connection that is not a tracked TCP socket (plaintext dropped)";
    KernelOpenLost => "agent_kernel_connection_opens_lost_total", "connection opens the ring buffer had no room for (also in agent_kernel_events_lost_ringbuf_full_total): the kernel stops tracking the connection, nothing of it is traced";
    KernelCloseLost => "agent_kernel_connection_closes_lost_total", "connection closes the ring buffer had no room for (also in agent_kernel_events_lost_ringbuf_full_total): user space ends the connection when its fd is reused, its process exits or it idles";
    KernelGapUnmarked => "agent_kernel_gaps_unmarked_total", "data records lost to a full ring buffer whose connection had already left the kernel's table (closed), so no gap could be marked on it";
    // Event reader.
    EventsRead => "agent_events_read_total", "ring-buffer records read";
    EventsMalformed => "agent_events_malformed_total", "ring-buffer records with a bad kind, version or length";
    BytesCaptured => "agent_payload_bytes_captured_total", "payload bytes received from the kernel";
    // Connections.
    ConnsOpened => "agent_connections_opened_total", "connections tracked";
    ConnsClosed => "agent_connections_closed_total", "connections closed by their process";
    ConnsEvicted => "agent_connections_evicted_total", "connections dropped for idleness or because the table was full";
    ConnsMuted => "agent_connections_muted_total", "connections whose payload the kernel stopped copying (nothing to parse)";
    TlsHandshakesSeen => "agent_tls_handshakes_seen_total", "connections whose bytes began with a TLS record (ciphertext is not copied)";
    ConnsTls => "agent_connections_tls_total", "connections parsed from TLS plaintext captured by the TLS library probes";
    TlsFilesAttached => "agent_tls_files_attached_total", "libraries/executables with a TLS library the uprobes were attached to";
    TlsFilesDetached => "agent_tls_files_detached_total", "TLS libraries/executables detached after their last process exited";
    ProcJobsRefused => "agent_procfs_jobs_refused_total", "process metadata read inline because the procfs worker's queue was full";
    ProcScansDropped => "agent_process_scans_dropped_total", "new processes not looked at for TLS libraries because too many started at once";
    TlsAttachFailed => "agent_tls_attach_failures_total", "TLS libraries/executables found but not traced (see the log and `agent check`)";
    ConnsSeeded => "agent_connections_discovered_procfs_total", "pre-existing connections found in procfs at start";
    DataForUnknownConn => "agent_data_events_unknown_connection_total", "data records for a connection user space never saw open";
    StreamBufferOverflow => "agent_stream_buffer_overflows_total", "per-direction buffers that exceeded their bound and were reset";
    StreamGaps => "agent_stream_gaps_total", "uncaptured byte ranges the parser could not skip";
    RingGapsUnparsed => "agent_ring_gaps_unparsed_total", "records lost to a full ring buffer on connections no parser was attached to (protocol not decided yet, ignored, or awaiting TLS plaintext): their undecided bytes were dropped";
    ConnsCloseLost => "agent_connections_close_lost_total", "connections ended because a new connection reused their process's fd: their close was lost (ring buffer full); exchanges in flight on them were aborted";
    // Protocols.
    ProtocolUnknown => "agent_connections_protocol_unknown_total", "connections whose traffic matched no supported protocol";
    ParseLimitsHit => "agent_parse_limits_hit_total", "times a parser (or protocol detection) reached a bound on work or memory (e.g. fields per HTTP/2 header block) and skipped the excess";
    // Spans and trace context.
    TraceparentInvalid => "agent_traceparent_invalid_total", "traceparent/tracestate headers that were malformed and ignored";
    ParentAmbiguousThread => "agent_parent_ambiguous_thread_total", "calls left without an in-process parent: their thread had several requests in flight (event loops, pipelining)";
    ParentAmbiguousProcess => "agent_parent_ambiguous_process_total", "calls of Go programs left without an in-process parent: several requests were in flight in the process (goroutines move between threads)";
    ParentAmbiguousGoroutine => "agent_parent_ambiguous_goroutine_total", "calls of Go programs left without an in-process parent: their goroutine had several requests in flight (HTTP/2 servers read every stream on one goroutine)";
    GoContextProbesSkipped => "agent_go_context_probes_skipped_total", "Go executables whose net/http Transport probes (goroutine-aware trace context) were not attached: see the log and `agent check`";
    SpansStitched => "agent_spans_stitched_same_node_total", "server spans parented to a client span seen on this node";
    SpansStitchRefused => "agent_spans_stitch_refused_total", "server spans left unparented because the oldest unanswered request on the client's end of the connection was another request (records of one end were lost)";
    SpansCreated => "agent_spans_created_total", "spans built";
    SpansLeftToSdk => "agent_spans_left_to_sdk_total", "exchanges of processes whose OpenTelemetry SDK reports them: no span of the agent's (their context is followed)";
    SpansSampledOut => "agent_spans_sampled_out_total", "spans built but not exported: the head sampler decided against their trace";
    SpansMismatched => "agent_spans_mismatched_total", "exchanges whose outcome was of another protocol than their request (a parser defect): no span";
    SpansDroppedStale => "agent_spans_dropped_stale_total", "exchanges dropped unfinished: their connection was gone, or they stayed open longer than an hour";
    // Export.
    SpansQueueDropped => "agent_spans_dropped_queue_full_total", "spans dropped because the export queue was full";
    SpansExported => "agent_spans_exported_total", "spans accepted by the collector or printed";
    SpansRejected => "agent_spans_rejected_total", "spans the collector rejected (partial success) or that failed after all retries";
    ExportRetries => "agent_export_retries_total", "export attempts retried";
    ExportFailures => "agent_export_failures_total", "export batches given up on";
    // Probes.
    ProbesSkipped => "agent_probes_skipped_total", "probes not attached (unsupported or disabled)";
    // RED metrics of the traced services (see `red`).
    RedMetricsOverflowed => "agent_red_metrics_overflowed_total", "span durations recorded in a RED metric's overflow series (otel_metric_overflow) because the metric had reached its label-set limit";
    // The metrics/health endpoint itself.
    TelemetryHttpErrors => "agent_telemetry_http_errors_total", "connections to the metrics/health endpoint that failed (malformed, slow or aborted requests, accept errors)";
    // Kubernetes metadata.
    K8sPodNotFound => "agent_k8s_pod_lookups_missed_total", "processes in a Kubernetes pod the pod watch did not (yet) know: their spans carry only what procfs gives";
    K8sWatchRestarts => "agent_k8s_watch_restarts_total", "times the pod watch failed (API server unreachable, 410 Gone, dropped stream) and was restarted with backoff";
    // Selection (which workloads and protocols are traced, see `selection`) and live config
    // reloads. The two Kernel* ones are copied from the eBPF COUNTERS map like those above.
    ConnsDeselected => "agent_connections_deselected_total", "connections whose protocol the selection rules do not trace for their process: ignored, and muted in the kernel";
    KernelCgroupConnsSkipped => "agent_kernel_cgroup_connections_skipped_total", "connections opened by processes in cgroups the selection rules trace nothing of: never tracked";
    KernelCgroupIoSkipped => "agent_kernel_cgroup_syscalls_skipped_total", "reads and writes on tracked connections of processes in muted cgroups: no payload copied";
    KernelGoWriteViaTransport => "agent_kernel_go_writes_via_transport_total", "writes by net/http writeLoop goroutines attributed to the goroutine that called roundTrip on the connection";
    KernelGoWriterStale => "agent_kernel_go_writer_entries_stale_total", "writeLoop goroutine entries dropped because the goroutine's g was seen on another connection (reused)";
    KernelGoCallerMissing => "agent_kernel_go_caller_missing_total", "writes by writeLoop goroutines whose connection's roundTrip caller was not seen (connection predates the agent, or evicted)";
    ConfigReloads => "agent_config_reloads_total", "config file changes (or SIGHUPs) read, validated and applied";
    ConfigReloadFailures => "agent_config_reload_failures_total", "config file changes refused (unreadable or invalid): the previous config stays in force";
    // OTLP export of the RED metrics (`export::metrics`).
    MetricsExports => "agent_metrics_exports_total", "RED metric exports the collector accepted (or summaries printed to the console)";
    MetricsExportRetries => "agent_metrics_export_retries_total", "RED metric export attempts retried";
    MetricsExportFailures => "agent_metrics_export_failures_total", "RED metric exports given up on (the next one carries the same cumulative totals)";
    MetricsPointsRejected => "agent_metrics_data_points_rejected_total", "RED metric data points the collector rejected (OTLP partial success)";
    // Traceparent injection (`propagation.inject_http1`). The Kernel* ones are copied from the
    // eBPF INJECT_COUNTERS map.
    KernelInjectSocketsAdded => "agent_kernel_inject_sockets_added_total", "client sockets put into the injection sockhash at connection establishment";
    KernelInjectSocketsAddFailed => "agent_kernel_inject_sockets_add_failed_total", "client sockets that could not be put into the injection sockhash (table full)";
    KernelInjectConnectNotEligible => "agent_kernel_inject_connects_not_eligible_total", "connects that may not be injected (Go programs, opt-outs, untraced; a serving process's thread serving no request): socket left out of the sockhash";
    KernelInjected => "agent_kernel_traceparent_injected_total", "HTTP/1 requests the kernel inserted a traceparent into";
    KernelInjectSkipNotHttp1 => "agent_kernel_inject_skipped_not_http1_total", "sends on injectable sockets that did not start an HTTP/1 request (bodies, TLS, other protocols)";
    KernelInjectSkipIncomplete => "agent_kernel_inject_skipped_head_incomplete_total", "HTTP/1 requests not injected: the head was split over writes or longer than the kernel scans";
    KernelInjectSkipHasTraceparent => "agent_kernel_inject_skipped_has_traceparent_total", "HTTP/1 requests not injected: they carry a traceparent already";
    KernelInjectSkipContext => "agent_kernel_inject_skipped_context_unknown_total", "HTTP/1 sends not injected: the trace they belong to is unknown (server process, untraced syscall)";
    KernelInjectSkipHelper => "agent_kernel_inject_skipped_helper_failed_total", "HTTP/1 requests not injected: a kernel helper (pull/push data) failed";
    KernelInjectSkipServerIdle => "agent_kernel_inject_skipped_server_idle_total", "HTTP/1 requests of serving processes not injected: the sending thread had no request open (none read whole, or answered)";
    KernelInjectSkipServerConcurrent => "agent_kernel_inject_skipped_server_concurrent_total", "HTTP/1 requests not injected: the sending thread has had several requests in flight at once (event loop)";
    KernelInjectedInRequest => "agent_kernel_traceparent_injected_in_request_total", "injected HTTP/1 requests that carry the trace of the request the sending thread serves";
    KernelServerRequestOpen => "agent_kernel_server_requests_open_total", "HTTP/1 requests a server thread read whole (head, nothing past the body): their calls may be injected";
    KernelServerRequestUnknown => "agent_kernel_server_requests_unknown_total", "HTTP/1 request starts whose extent the kernel could not read (split or long head, pipelined or chunked bytes after it): their calls are not injected";
    KernelServerThreadConcurrent => "agent_kernel_server_threads_concurrent_total", "server threads marked event loops: a request read while another was open";
    GoSpawnInherits => "agent_go_goroutines_inherited_total", "goroutines started while their parent handled exactly one request: their calls get it as parent";
    GoSpawnNoCause => "agent_go_goroutines_no_cause_total", "goroutines started while their parent handled no request or several: their calls get no parent from it";
    GoSpawnTableFull => "agent_go_goroutines_untracked_total", "goroutine starts not recorded: the table of started goroutines was full";
    InjectAdopted => "agent_inject_ids_adopted_total", "client spans that took the trace and span id the kernel injected";
    InjectCauseMismatch => "agent_inject_cause_mismatch_total", "injected client spans whose in-process cause was another trace: left without a parent";
    InjectUnclaimed => "agent_inject_reports_unclaimed_total", "kernel injection reports no client span took (its request was not parsed), or dropped when their table was full";
    InjectPipelinedNotInjected => "agent_inject_pipelined_not_injected_total", "pipelined HTTP/1 requests after the first of one write: not injected (own ids, as before)";
}

macro_rules! protocol_counters {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// What the agent counts per protocol: one series per protocol of each, labelled
        /// `protocol` with [`ProtocolId::name`], so a new protocol needs no counter of its own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum ProtocolCounter { $($variant,)* }

        impl ProtocolCounter {
            pub const ALL: &'static [ProtocolCounter] = &[$(ProtocolCounter::$variant,)*];
            pub fn name(self) -> &'static str { match self { $(ProtocolCounter::$variant => $name,)* } }
            pub fn help(self) -> &'static str { match self { $(ProtocolCounter::$variant => $help,)* } }
        }
    };
}

protocol_counters! {
    ParseErrors => "agent_parse_errors_total", "messages or frames that could not be parsed (the parser resynchronised), by protocol";
    Requests => "agent_requests_parsed_total", "requests parsed, by protocol";
    Aborted => "agent_exchanges_aborted_total", "exchanges that ended without their answer (connection closed, sync lost), by protocol";
    RingGaps => "agent_ring_gaps_total", "records lost to a full ring buffer on connections being parsed (a gap before a record): exchanges in flight were aborted and the parser resynchronised, by protocol";
    RingGapsAbandoned => "agent_ring_gaps_abandoned_total", "connections given up after a ring-buffer gap because the protocol cannot resynchronise (HTTP/2: HPACK state), by protocol";
}

/// The counters themselves. One instance per agent, shared by `Arc`.
pub struct Telemetry {
    values: Vec<AtomicU64>,
    /// [`ProtocolCounter`]s, `ProtocolId::ALL.len()` per counter.
    per_protocol: Vec<AtomicU64>,
    health: health::Health,
    red: red::RedMetrics,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            values: Counter::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            per_protocol: (0..ProtocolCounter::ALL.len() * ProtocolId::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            health: health::Health::default(),
            red: red::RedMetrics::default(),
        }
    }
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// For counters mirrored from the kernel, which keeps its own running totals.
    pub fn set(&self, c: Counter, v: u64) {
        self.values[c as usize].store(v, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    #[inline]
    pub fn protocol_incr(&self, p: ProtocolId, c: ProtocolCounter) {
        self.per_protocol[c as usize * ProtocolId::ALL.len() + p as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn protocol_get(&self, p: ProtocolId, c: ProtocolCounter) -> u64 {
        self.per_protocol[c as usize * ProtocolId::ALL.len() + p as usize].load(Ordering::Relaxed)
    }

    /// With RED metrics of another label-set limit (tests).
    pub fn with_red(red: red::RedMetrics) -> Self {
        Self {
            red,
            ..Self::default()
        }
    }

    /// The RED metrics of the traced services (see [`red`]).
    pub fn red(&self) -> &red::RedMetrics {
        &self.red
    }

    /// Liveness, readiness and gauges (see [`health`]).
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// `name=value` pairs of the non-zero counters, for the periodic log line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for &c in Counter::ALL {
            let v = self.get(c);
            if v != 0 {
                let _ = write!(
                    s,
                    "{}{}={}",
                    if s.is_empty() { "" } else { " " },
                    c.name(),
                    v
                );
            }
        }
        for &c in ProtocolCounter::ALL {
            for &p in ProtocolId::ALL {
                let v = self.protocol_get(p, c);
                if v != 0 {
                    let sep = if s.is_empty() { "" } else { " " };
                    let _ = write!(s, "{sep}{}{{protocol=\"{}\"}}={v}", c.name(), p.name());
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_summarises() {
        let t = Telemetry::new();
        assert_eq!(t.summary(), "");
        t.incr(Counter::SpansCreated);
        t.add(Counter::SpansQueueDropped, 3);
        assert_eq!(t.get(Counter::SpansQueueDropped), 3);
        assert_eq!(
            t.summary(),
            "agent_spans_created_total=1 agent_spans_dropped_queue_full_total=3"
        );
        t.protocol_incr(ProtocolId::Postgres, ProtocolCounter::ParseErrors);
        assert!(t
            .summary()
            .ends_with(" agent_parse_errors_total{protocol=\"postgres\"}=1"));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Counter::ALL
            .iter()
            .map(|c| c.name())
            .chain(ProtocolCounter::ALL.iter().map(|c| c.name()))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
