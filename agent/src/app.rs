//! Wires the stages together and runs them until SIGTERM/SIGINT.
//!
//! Start-up order matters: the metrics/health endpoint first (probes get answers while the
//! agent starts; a port in use fails at once), the exporter (so spans have somewhere to go),
//! then the kernel programs, then procfs discovery of connections that predate us (after
//! attaching, so nothing opened in between is missed; a connection seen both ways is
//! harmless), then "agent ready". Shutdown drains the ring buffer, releases every held record,
//! closes the endpoint, drops the span sender and waits (bounded) for the exporter to flush.

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::conn::Limits;
use crate::ebpf::inject::InjectStatus;
use crate::ebpf::probes::{tracing_works, ProbeState};
use crate::ebpf::{loader, seed};
use crate::enrich::worker::ProcWorker;
use crate::enrich::{host_name, ResourceCache, DISTRO_NAME};
use crate::pipeline::Pipeline;
use crate::reload::{Outcome, Reloader};
use crate::selection::{SelectionHandle, Selector};
use crate::span::builder::{read_clock, SpanOptions};
use crate::span::model::Attribute;
use crate::telemetry::health::{Gauge, Phase};
use crate::telemetry::{Counter, Telemetry};
use agent_common::conn_flags;

/// Processes whose metadata is cached at once.
const RESOURCE_CACHE: usize = 4096;

/// Runs the agent with `cfg`, resolved from `args` (which say where the config file is, for
/// live reloads).
pub fn run(cfg: Config, args: crate::cli::RunArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cfg, args))
}

fn mono_now() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

async fn run_async(cfg: Config, args: crate::cli::RunArgs) -> anyhow::Result<()> {
    let telemetry = Arc::new(Telemetry::new());
    // First, so /healthz and /readyz answer during start-up and a port in use fails it early.
    let endpoint = crate::telemetry::http::start(&cfg.telemetry, telemetry.clone()).await?;
    let (sender, exporter) =
        crate::export::spawn(&cfg.export, telemetry.clone()).context("starting the exporter")?;

    let opts = cfg.load_options();
    let mut loaded =
        loader::load(&opts).context("loading the eBPF programs (the agent needs root)")?;
    for s in &loaded.statuses {
        match &s.state {
            ProbeState::Attached => {}
            ProbeState::Disabled => {
                telemetry.incr(Counter::ProbesSkipped);
                tracing::info!(
                    "probe {} ({}) not attached: disabled by probes.disabled",
                    s.spec.program,
                    s.target()
                );
            }
            ProbeState::Unsupported(why) => {
                telemetry.incr(Counter::ProbesSkipped);
                tracing::warn!(
                    "probe {} ({}) not attached: {why}",
                    s.spec.program,
                    s.target()
                );
            }
        }
    }
    match &loaded.injection {
        InjectStatus::Off => {}
        InjectStatus::Attached(cgroup) => tracing::info!(
            "traceparent injection on: sockops attached to cgroup {}, sk_msg to INJECT_SOCKS",
            cgroup.display()
        ),
        InjectStatus::Failed(why) => {
            telemetry.incr(Counter::ProbesSkipped);
            tracing::warn!("traceparent injection (propagation.inject_http1) not attached: {why}");
        }
    }
    if !tracing_works(&loaded.statuses) {
        anyhow::bail!("a required probe could not be attached (run `agent check` for details)");
    }

    let limits = Limits {
        max: cfg.connections.max as usize,
        idle_ns: cfg
            .connections
            .idle_timeout_secs
            .saturating_mul(1_000_000_000),
        max_buffer_bytes: cfg.connections.max_buffer_bytes,
    };
    let host = host_name();
    // Off outside Kubernetes; never fails the start (an unreachable API server only means
    // spans carry procfs metadata until the watch syncs).
    let k8s = crate::enrich::k8s::watch::start(&cfg.kubernetes, &host, telemetry.clone()).await;
    let own_namespace = crate::selection::own_namespace();
    // Validated with the rest of the config.
    let selector =
        Selector::compile(&cfg.selection, own_namespace.as_deref()).context("selection rules")?;
    let selection = SelectionHandle::new(selector);
    // The RED metrics exporter: a task of its own, so it never holds up span export.
    let metrics = crate::export::metrics::spawn(
        &cfg.metrics.export,
        cfg.metrics.endpoint_final,
        Duration::from_millis(cfg.metrics.export_interval_ms),
        agent_resource(&cfg, &host, k8s.is_some()),
        telemetry.clone(),
    )
    .context("starting the RED metrics exporter")?;
    let mut resources = ResourceCache::new(host.clone(), RESOURCE_CACHE);
    if let Some(view) = &k8s {
        resources.set_k8s(view.clone());
    }
    resources.set_selection(selection.clone());
    let mut pipeline = Pipeline::new(
        limits,
        SpanOptions {
            redact_query: cfg.redaction.url_query,
            sanitize_sql: cfg.redaction.sql_literals,
            // Validated with the rest of the config.
            sampler: cfg.sampling.sampler().unwrap_or_default(),
            keep_errors: cfg.sampling.keep_errors,
            defer_to_sdk: cfg.sdk.defer,
            derive_roots: opts.inject.as_ref().map(|i| i.secret),
        },
        resources,
        sender,
        telemetry.clone(),
    );

    pipeline.set_export_port(export_port(cfg.export.endpoint.as_deref()));
    match ProcWorker::spawn_selected(host, "/proc".into(), k8s.clone(), Some(selection.clone())) {
        Ok(w) => pipeline.set_worker(w),
        Err(e) => tracing::warn!("procfs reads stay on the event thread (no worker: {e})"),
    }

    // The kernel side of selection: cgroups whose workloads trace nothing are skipped by
    // the eBPF programs (see selection::cgroups).
    let cgroup_scans = match crate::selection::cgroups::find_v2_root() {
        Some(root) => {
            tracing::info!(
                "selection: cgroups of workloads that trace nothing are muted in the kernel (cgroup v2 at {})",
                root.display()
            );
            crate::selection::cgroups::spawn_scanner(root, selection.clone(), k8s.clone())
                .map_err(|e| tracing::warn!("selection: no cgroup scanner thread: {e}"))
                .ok()
        }
        None => {
            tracing::warn!(
                "selection: no cgroup v2 mount found: workloads that trace nothing are dropped in user space only"
            );
            None
        }
    };
    let mut cgroups_muted: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut cgroups_truncated_logged = false;

    let traced = |pid: u32| opts.traces(pid);
    let mut tls = match crate::tls::start(&mut loaded, &opts.disabled, traced, telemetry.clone()) {
        Ok(t) => {
            tracing::info!(
                "TLS plaintext capture on: {} libraries/executables with probes",
                t.attached_files()
            );
            Some(t)
        }
        Err(why) => {
            telemetry.incr(Counter::ProbesSkipped);
            tracing::warn!("TLS plaintext capture off: {why}");
            None
        }
    };
    let seeded = seed::discover(
        traced,
        (cfg.connections.max / 2) as usize,
        |pid, fd, info| {
            loaded
                .track_connection(pid, fd, info)
                .map_err(|e| e.to_string())
        },
    );
    pipeline.seed(&seeded, mono_now());
    let primed = seed::blocked_reads(&seeded, mono_now())
        .into_iter()
        .filter(|(pid_tgid, args)| loaded.prime_blocked_read(*pid_tgid, *args))
        .count();
    if primed > 0 {
        tracing::info!(
            "{primed} reads already blocked on pre-existing connections will be captured"
        );
    }

    let ring = loaded.take_events()?;
    // SAFETY: the RingBuf owns its map fd and keeps returning it until dropped, which happens
    // only when the AsyncFd is dropped at the end of this function.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {}", e.into_parts().1))?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut reloader = Reloader::new(args, cfg.clone());
    // The kernel wakes us only once a backlog builds (see agent-ebpf's output_flags); this
    // timer drains the trickle in between. Well inside the pipeline's ordering hold.
    let mut drain = tokio::time::interval(Duration::from_millis(2));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let log_every = cfg.telemetry.log_interval_secs;
    let mut ticks: u64 = 0;

    let attached = loaded
        .statuses
        .iter()
        .filter(|s| s.state == ProbeState::Attached)
        .count();
    let health = telemetry.health();
    health.set_gauge(Gauge::ProbesAttached, attached as i64);
    health.beat();
    health.set_phase(Phase::Running);
    tracing::info!(
        "agent ready: {attached} probes attached, {} pre-existing connections tracked, exporting to {}",
        seeded.len(),
        cfg.export
            .endpoint
            .as_deref()
            .unwrap_or("the terminal (stdout)")
    );

    loop {
        let due = pipeline.next_due();
        let wait = due.map(|d| Duration::from_nanos(d.saturating_sub(mono_now())));
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    pipeline.push(&item);
                }
                guard.clear_ready();
            }
            _ = drain.tick() => {
                let rb = ring.get_mut();
                while let Some(item) = rb.next() {
                    pipeline.push(&item);
                }
            }
            _ = sleep_opt(wait) => {}
            _ = housekeeping.tick() => {
                ticks += 1;
                health.beat();
                health.set_gauge(Gauge::ConnectionsTracked, pipeline.connections() as i64);
                if let Some(rx) = &cgroup_scans {
                    while let Ok(scan) = rx.try_recv() {
                        if scan.truncated && !cgroups_truncated_logged {
                            cgroups_truncated_logged = true;
                            tracing::warn!(
                                "selection: cgroup walk stopped at {} directories or {} muted cgroups; the rest is filtered in user space only (logged once)",
                                crate::selection::cgroups::MAX_DIRS,
                                crate::selection::cgroups::MAX_MUTED
                            );
                        }
                        let (mute, unmute) =
                            crate::selection::cgroups::diff(&cgroups_muted, &scan.muted);
                        for id in mute {
                            if loaded.set_cgroup_muted(id, true) {
                                cgroups_muted.insert(id);
                            }
                        }
                        for id in unmute {
                            loaded.set_cgroup_muted(id, false);
                            cgroups_muted.remove(&id);
                        }
                        tracing::info!(
                            "selection: {} cgroups muted in the kernel ({} cgroups looked at)",
                            cgroups_muted.len(),
                            scan.dirs
                        );
                    }
                }
                reload(&mut reloader, false, &selection, own_namespace.as_deref(), &telemetry);
                let k = loaded.kernel_counters();
                for (i, c) in KERNEL_COUNTERS.iter().enumerate() {
                    telemetry.set(*c, k[i]);
                }
                if matches!(loaded.injection, InjectStatus::Attached(_)) {
                    let k = loaded.inject_counters();
                    for (i, c) in INJECT_COUNTERS.iter().enumerate() {
                        telemetry.set(*c, k[i]);
                    }
                }
                if ticks.is_multiple_of(10) {
                    if let Some(t) = tls.as_mut() {
                        t.reap(&mut loaded);
                    }
                    pipeline.sweep(mono_now());
                }
                if log_every > 0 && ticks.is_multiple_of(log_every) {
                    tracing::info!(connections = pipeline.connections(), "counters: {}", telemetry.summary());
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                reload(&mut reloader, true, &selection, own_namespace.as_deref(), &telemetry);
            }
        }
        pipeline.process_due(mono_now());
        // New programs and library loads: looked at right away, because the process's TLS
        // traffic before its probes are attached is not seen.
        let (execs, exits) = pipeline.take_process_changes();
        if let Some(t) = tls.as_mut() {
            for pid in exits {
                t.process_exit(pid);
            }
            for pid in execs.into_iter().filter(|&p| traced(p)) {
                t.scan(pid, &mut loaded);
                // Go programs are not injected (goroutines move between threads; FIONREAD
                // concerns). A connect made before this look still gets a socket into the
                // sockhash, but the sk_msg program checks the deny list on every send.
                if matches!(loaded.injection, InjectStatus::Attached(_)) && t.is_go(pid) {
                    loaded.deny_injection(pid);
                }
            }
        }
        for (pid, fd) in pipeline.take_untracked() {
            loaded.untrack_connection(pid, fd);
        }
        for (pid, fd, flag) in pipeline.take_to_mute() {
            if loaded.set_connection_flag(pid, fd, flag) && flag == conn_flags::MUTED {
                telemetry.incr(Counter::ConnsMuted);
            }
        }
    }

    health.set_phase(Phase::Stopping);
    tracing::info!("shutting down: flushing spans");
    let rb = ring.get_mut();
    while let Some(item) = rb.next() {
        pipeline.push(&item);
    }
    pipeline.process_due(u64::MAX);
    // Before the fork in release_in_background, whose child would keep the port bound.
    if let Some(e) = endpoint {
        e.stop().await;
    }
    loaded.release_in_background();
    drop(pipeline); // drops the span sender: the exporter flushes and ends
    let grace = Duration::from_millis(cfg.export.shutdown_timeout_ms.saturating_add(1000));
    // The final metrics export runs beside the span flush (both within the shutdown timeout):
    // every span is recorded in the histograms by now.
    let metrics_done = async {
        if let Some(m) = metrics {
            m.shutdown(grace).await;
        }
    };
    let (spans_done, ()) = tokio::join!(tokio::time::timeout(grace, exporter), metrics_done);
    if spans_done.is_err() {
        tracing::warn!("exporter did not finish within {grace:?}; some spans may be lost");
    }
    tracing::info!("counters at exit: {}", telemetry.summary());
    Ok(())
}

/// Looks at the config file (see `crate::reload`) and puts a valid change to the live sections
/// in force; logs what was ignored or refused. Reading a small file: fine on the event loop.
fn reload(
    r: &mut Reloader,
    force: bool,
    selection: &SelectionHandle,
    own_namespace: Option<&str>,
    telemetry: &Telemetry,
) {
    match r.check(force, |k| std::env::var(k).ok()) {
        Outcome::Unchanged => {}
        Outcome::Applied { live, ignored } => {
            telemetry.incr(Counter::ConfigReloads);
            if !ignored.is_empty() {
                tracing::warn!(
                    "config reload: changes to {} need a restart and were not applied (live: {})",
                    ignored.join(", "),
                    crate::reload::LIVE_SECTIONS.join(", ")
                );
            }
            if live.contains(&"selection") {
                // Validated by the reload; compiling cannot fail on a validated config.
                match Selector::compile(&r.current().selection, own_namespace) {
                    Ok(s) => {
                        selection.replace(s);
                        tracing::info!(
                            "config reload: selection applied ({} rules)",
                            r.current().selection.rules.len()
                        );
                    }
                    Err(e) => tracing::error!("config reload: selection not applied: {e}"),
                }
            } else if ignored.is_empty() {
                tracing::info!("config reload: nothing changed");
            }
        }
        Outcome::Refused(e) => {
            telemetry.incr(Counter::ConfigReloadFailures);
            tracing::error!("config reload refused, the previous config stays in force: {e}");
        }
    }
}

/// The resource of what the agent reports about itself (the RED metrics): the agent as a
/// service on this host, and its node and cluster when the Kubernetes watch runs. Which
/// traced service a series describes is a per-series attribute, not the resource.
fn agent_resource(cfg: &Config, host: &str, in_k8s: bool) -> Vec<Attribute> {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let mut r = vec![
        Attribute::new("service.name", DISTRO_NAME.to_owned()),
        Attribute::new("service.version", version.clone()),
        Attribute::new("host.name", host.to_owned()),
        Attribute::new("telemetry.distro.name", DISTRO_NAME.to_owned()),
        Attribute::new("telemetry.distro.version", version),
    ];
    if in_k8s {
        let env = |k: &str| std::env::var(k).ok();
        r.push(Attribute::new(
            "k8s.node.name",
            crate::enrich::k8s::watch::node_name(&cfg.kubernetes, env, host),
        ));
        if let Some(c) = cfg.kubernetes.cluster_name.clone() {
            r.push(Attribute::new("k8s.cluster.name", c));
        }
    }
    r
}

/// Kernel counters in `agent_common::counter` index order.
/// The telemetry counter of each `agent_common::inject_counter` index.
const INJECT_COUNTERS: [Counter; agent_common::inject_counter::COUNT as usize] = [
    Counter::KernelInjectSocketsAdded,
    Counter::KernelInjectSocketsAddFailed,
    Counter::KernelInjectConnectNotEligible,
    Counter::KernelInjected,
    Counter::KernelInjectSkipNotHttp1,
    Counter::KernelInjectSkipIncomplete,
    Counter::KernelInjectSkipHasTraceparent,
    Counter::KernelInjectSkipContext,
    Counter::KernelInjectSkipHelper,
    Counter::KernelInjectSkipServerIdle,
    Counter::KernelInjectSkipServerConcurrent,
    Counter::KernelInjectedInRequest,
    Counter::KernelServerRequestOpen,
    Counter::KernelServerRequestUnknown,
    Counter::KernelServerThreadConcurrent,
];

const KERNEL_COUNTERS: [Counter; agent_common::counter::COUNT as usize] = [
    Counter::KernelRingbufFull,
    Counter::KernelTruncated,
    Counter::KernelMissingEntry,
    Counter::KernelSockReadFailed,
    Counter::KernelPayloadReadFailed,
    Counter::KernelConnInsertFailed,
    Counter::KernelTlsUnmapped,
    Counter::KernelGoTlsUntracked,
    Counter::KernelTlsFdFromThread,
    Counter::KernelCgroupConnsSkipped,
    Counter::KernelCgroupIoSkipped,
    Counter::KernelGoWriteViaTransport,
    Counter::KernelGoWriterStale,
    Counter::KernelGoCallerMissing,
    Counter::KernelOpenLost,
    Counter::KernelCloseLost,
    Counter::KernelGapUnmarked,
];

/// The port of an OTLP endpoint URL (scheme defaults: http 80, https 443).
fn export_port(endpoint: Option<&str>) -> Option<u16> {
    let uri: http::Uri = endpoint?.parse().ok()?;
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_port_from_endpoint() {
        assert_eq!(
            super::export_port(Some("http://127.0.0.1:4317")),
            Some(4317)
        );
        assert_eq!(
            super::export_port(Some("https://collector.example")),
            Some(443)
        );
        assert_eq!(
            super::export_port(Some("http://[::1]:4318/v1/traces")),
            Some(4318)
        );
        assert_eq!(super::export_port(None), None);
    }
}
