//! Configuration: serde data read from YAML, layered as defaults < file < standard `OTEL_*`
//! environment variables < command-line flags, then validated with messages that name the field
//! and the bad value. Every field's doc comment is its reference documentation (README and
//! deploy/agent.example.yaml repeat them).
//!
//! This module decides what the settings are; the stages that use them live elsewhere.

use serde::Deserialize;
use std::path::Path;

use crate::cli::RunArgs;
use crate::ebpf::inject::InjectOptions;
use crate::ebpf::loader::LoadOptions;
use crate::export::{ExportConfig, Signal};
use crate::span::sampler::{Sampler, SamplerError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("invalid config: {0}")]
    Export(#[from] crate::export::ConfigFieldError),
    #[error("environment: {0}")]
    Env(String),
}

/// The agent's whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What the kernel captures per syscall and how it hands it over.
    pub capture: CaptureConfig,
    /// Which processes are traced.
    pub processes: ProcessConfig,
    /// Which probes are attached.
    pub probes: ProbesConfig,
    /// Connection tracking in user space.
    pub connections: ConnectionsConfig,
    /// What is redacted before spans leave the agent.
    pub redaction: RedactionConfig,
    /// Head sampling, with the OpenTelemetry SDK's samplers.
    pub sampling: SamplingConfig,
    /// Processes that carry an OpenTelemetry SDK of their own.
    pub sdk: SdkConfig,
    /// Where spans go (OTLP/gRPC, or the terminal when no endpoint is set).
    pub export: ExportConfig,
    /// The agent's own health reporting.
    pub telemetry: TelemetryConfig,
    /// OTLP export (or console summary) of the RED metrics.
    pub metrics: MetricsConfig,
    /// Pod metadata from the Kubernetes API (`k8s.*` resource attributes).
    pub kubernetes: KubernetesConfig,
    /// Which workloads (namespaces, pod labels, owners) and protocols are traced; applied
    /// live when the config file changes.
    pub selection: crate::selection::SelectionConfig,
    /// Trace context the agent writes into requests itself (cross-node traces).
    pub propagation: PropagationConfig,
}

/// Writing W3C `traceparent` into outgoing requests that carry none (sk_msg + sockops).
///
/// Off by default, for two reasons an operator must accept knowingly: on kernels >= 6.12 a
/// socket put into a sockhash reports FIONREAD differently (kernel commit 929e30f93125;
/// nginx and epoll clients misbehaved under another eBPF agent for it), and the peer then
/// receives bytes the application never wrote (70 per injected request).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationConfig {
    /// Insert `traceparent` into plaintext HTTP/1.x requests, so a server traced by another
    /// node's agent joins the trace; the client span is the header's parent. A pure client
    /// (never accepted a connection: curl, load generators, jobs) starts a new root trace per
    /// request; a thread-per-request server passes on the trace of the request its thread
    /// serves (agent-ebpf's `serverctx`; event-loop threads are never injected). Only where
    /// safe: the whole head in one write, no traceparent already, not TLS, not a Go program.
    /// Default false (see above).
    pub inject_http1: bool,
    /// The cgroup v2 directory the sockops program is attached to: only sockets created by
    /// processes below it can be injected. Unset: the cgroup v2 root (found in
    /// /proc/self/mountinfo).
    pub cgroup: Option<std::path::PathBuf>,
}

/// Whether the pod watch runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum K8sEnabled {
    /// Inside Kubernetes (`KUBERNETES_SERVICE_HOST` set) or with `kubeconfig` given.
    #[default]
    Auto,
    /// Always: in-cluster settings unless `kubeconfig` is given.
    True,
    /// Never.
    False,
}

// YAML writes `enabled: true` / `false` as booleans, `auto` as a string: accept both.
fn de_enabled<'de, D: serde::Deserializer<'de>>(d: D) -> Result<K8sEnabled, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Word(K8sEnabled),
    }
    Ok(
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("kubernetes.enabled: expected auto, true or false")
        })? {
            Raw::Bool(true) => K8sEnabled::True,
            Raw::Bool(false) => K8sEnabled::False,
            Raw::Word(w) => w,
        },
    )
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// `auto` (default): watch this node's pods when running in Kubernetes
    /// (`KUBERNETES_SERVICE_HOST` set) or when `kubeconfig` is set; `true`: always try;
    /// `false`: never. When on, spans get `k8s.namespace.name`, `k8s.pod.name`,
    /// `k8s.container.name`, the owner workload's name and a `service.name` from the pod.
    #[serde(deserialize_with = "de_enabled")]
    pub enabled: K8sEnabled,
    /// The node whose pods are watched; unset: `$NODE_NAME`, else the host name.
    pub node_name: Option<String>,
    /// `k8s.cluster.name` on every resource; unset: not sent (the API does not know it).
    pub cluster_name: Option<String>,
    /// A kubeconfig file to reach the API server with instead of the in-cluster service
    /// account (tests, or an agent run outside the cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Payload bytes copied per syscall, 1..=16384. Heads larger than this in one syscall are
    /// cut (the loss is counted); bodies only need their length, which is always reported.
    pub bytes_per_syscall: u32,
    /// Kernel→user ring buffer size in bytes: a power of two, at least 65536. Larger absorbs
    /// longer bursts before events are lost (counted).
    pub ring_buffer_bytes: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            bytes_per_syscall: agent_common::MAX_PAYLOAD as u32,
            ring_buffer_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Trace only these process ids. Empty: trace every process on the node (except the agent).
    pub pids: Vec<u32>,
    /// Never trace these process ids.
    pub exclude_pids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// Probe groups not to attach: connect, accept, close, process_exit, read, write, recvfrom,
    /// sendto, readv, writev, recvmsg, sendmsg, sendfile. Disabling connect, accept, close, read
    /// or write leaves tracing unable to work (`agent check` says so).
    pub disabled: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Connections tracked at once (kernel and user space), 64..=4194304. Beyond it the least
    /// recently active are evicted (counted).
    pub max: u32,
    /// Seconds without traffic after which a connection's state is dropped (counted).
    pub idle_timeout_secs: u64,
    /// Unparsed bytes kept per connection direction before it is reset (counted), 4096..=16777216.
    pub max_buffer_bytes: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max: 65536,
            idle_timeout_secs: 300,
            max_buffer_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Replace every query-string value with `REDACTED` in url.query and url.full (keys are
    /// kept). Authorization, Cookie and Set-Cookie are never captured into spans at all.
    pub url_query: bool,
    /// Replace every SQL literal (strings, numbers) with `?` in db.query.text. Row contents
    /// and database error messages are never captured into spans at all.
    pub sql_literals: bool,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            url_query: true,
            sql_literals: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SdkConfig {
    /// A process whose OpenTelemetry SDK exports traces (`OTEL_TRACES_EXPORTER`, or an OTLP
    /// endpoint, in its environment) reports its own spans: make none for what it reports
    /// (its server and consumer side, its calls that carry its `traceparent`, its database
    /// calls), but follow its context so neighbouring services join its traces. false: keep
    /// both.
    pub defer: bool,
}

impl Default for SdkConfig {
    fn default() -> Self {
        Self { defer: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// One of always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio (`OTEL_TRACES_SAMPLER` overrides it).
    /// Parent-based samplers follow an incoming `traceparent`'s sampled flag.
    pub sampler: String,
    /// The fraction of traces the traceidratio samplers keep, 0.0..=1.0 (default 1.0;
    /// `OTEL_TRACES_SAMPLER_ARG` overrides it).
    pub ratio: Option<f64>,
    /// Export spans that ended in error even when their trace was sampled out, marked
    /// `ebpf_agent.sampling.kept_error=true`.
    pub keep_errors: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            sampler: "parentbased_always_on".into(),
            ratio: None,
            keep_errors: false,
        }
    }
}

impl SamplingConfig {
    /// The configured sampler.
    pub fn sampler(&self) -> Result<Sampler, SamplerError> {
        Sampler::parse(&self.sampler, self.ratio.map(|r| r.to_string()).as_deref())
    }

    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (empty counts as unset).
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(name) = get("OTEL_TRACES_SAMPLER") {
            Sampler::parse(&name, None)
                .map_err(|e| ConfigError::Env(format!("OTEL_TRACES_SAMPLER: {e}")))?;
            self.sampler = name;
        }
        if let Some(arg) = get("OTEL_TRACES_SAMPLER_ARG") {
            let r = arg.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r));
            self.ratio = Some(r.ok_or_else(|| {
                ConfigError::Env(format!(
                    "OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0.0 to 1.0, got {arg:?}"
                ))
            })?);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Milliseconds between two exports of the RED metrics to the OTLP endpoint (or, without
    /// one, two summaries on stdout); one more is sent at shutdown. 0: no export (the
    /// Prometheus endpoint still serves them). `OTEL_METRIC_EXPORT_INTERVAL` overrides it.
    pub export_interval_ms: u64,
    /// Where the metrics go: the `export` section, with the `OTEL_EXPORTER_OTLP_METRICS_*`
    /// variables (then the generic `OTEL_EXPORTER_OTLP_*` ones) and `--otlp-endpoint` over it.
    /// Derived when the config is layered, not read from the file.
    #[serde(skip)]
    pub export: ExportConfig,
    /// Whether `export.endpoint` is already the OTLP/HTTP metrics URL (it came from the
    /// environment); otherwise the traces URL is turned into the metrics one.
    #[serde(skip)]
    pub endpoint_final: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        // The OpenTelemetry SDK's default for OTEL_METRIC_EXPORT_INTERVAL.
        Self {
            export_interval_ms: 60_000,
            export: ExportConfig::default(),
            endpoint_final: false,
        }
    }
}

impl MetricsConfig {
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, SDK environment variable spec).
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        const VAR: &str = "OTEL_METRIC_EXPORT_INTERVAL";
        if let Some(v) = env(VAR).filter(|v| !v.trim().is_empty()) {
            self.export_interval_ms = v.trim().parse().map_err(|_| {
                ConfigError::Env(format!(
                    "{VAR}: expected milliseconds as a whole number, got {v:?}"
                ))
            })?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Seconds between log lines with the agent's own counters (0: never).
    pub log_interval_secs: u64,
    /// `IP:port` of the HTTP endpoint serving `/metrics` (Prometheus or OpenMetrics text),
    /// `/healthz` and `/readyz`. Loopback by default; a non-loopback address (e.g.
    /// `0.0.0.0:9464`, for a Kubernetes probe) must be set here and is logged with a warning.
    /// `""` or null: no endpoint, and the agent opens no listening socket.
    pub listen: Option<String>,
    /// Seconds every OTLP export call may keep failing before `/readyz` answers 503 (0: export
    /// failures never make the agent unready). Console export never fails.
    pub unready_after_export_failing_secs: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_interval_secs: 30,
            listen: Some("127.0.0.1:9464".into()),
            unready_after_export_failing_secs: 30,
        }
    }
}

impl TelemetryConfig {
    /// The endpoint's address, `None` when it is turned off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        match self.listen.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                format!(
                    "telemetry.listen: expected IP:port (e.g. 127.0.0.1:9464) or \"\" for no \
                     endpoint, got {s:?}"
                )
            }),
        }
    }
}

impl Config {
    /// Parses YAML text (the file's content).
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Defaults < file < environment < flags, validated.
    pub fn resolve(
        args: &RunArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let cfg = match &args.config {
            Some(p) => Self::from_yaml(&read(p)?, &p.display().to_string())?,
            None => Self::default(),
        };
        Self::layer(cfg, args, env)
    }

    /// [`Self::resolve`] with the file's content already read (`text`, from `args.config`):
    /// what a live reload does.
    pub fn resolve_text(
        text: &str,
        args: &RunArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = args
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Self::layer(Self::from_yaml(text, &path)?, args, env)
    }

    /// The file's config, then the environment, then flags, validated.
    fn layer(
        mut cfg: Self,
        args: &RunArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env_err = |e: crate::export::ExportError| ConfigError::Env(e.to_string());
        // The metrics exporter starts from the same section, with its own variables over it.
        cfg.metrics.export = cfg.export.clone();
        cfg.export.apply_env(&env).map_err(env_err)?;
        cfg.metrics.endpoint_final = cfg
            .metrics
            .export
            .apply_signal_env(Signal::Metrics, &env)
            .map_err(env_err)?;
        cfg.sampling.apply_env(&env)?;
        cfg.metrics.apply_env(&env)?;
        if let Some(e) = &args.otlp_endpoint {
            cfg.export.endpoint = Some(e.clone());
            cfg.metrics.export.endpoint = Some(e.clone());
            cfg.metrics.endpoint_final = false;
        }
        if let Some(b) = args.capture_bytes {
            cfg.capture.bytes_per_syscall = b;
        }
        cfg.processes.pids.extend(&args.pids);
        cfg.processes.exclude_pids.extend(&args.exclude_pids);
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = self.sampling.sampler() {
            return bad(format!("sampling: {e}"));
        }
        let c = &self.capture;
        if !(1..=agent_common::MAX_PAYLOAD as u32).contains(&c.bytes_per_syscall) {
            return bad(format!(
                "capture.bytes_per_syscall: must be 1..={}, got {}",
                agent_common::MAX_PAYLOAD,
                c.bytes_per_syscall
            ));
        }
        if !c.ring_buffer_bytes.is_power_of_two() || c.ring_buffer_bytes < 65536 {
            return bad(format!(
                "capture.ring_buffer_bytes: must be a power of two >= 65536, got {}",
                c.ring_buffer_bytes
            ));
        }
        let n = &self.connections;
        if !(64..=4 << 20).contains(&n.max) {
            return bad(format!(
                "connections.max: must be 64..=4194304, got {}",
                n.max
            ));
        }
        if n.idle_timeout_secs == 0 {
            return bad("connections.idle_timeout_secs: must be > 0, got 0".into());
        }
        if !(4096..=16 << 20).contains(&n.max_buffer_bytes) {
            return bad(format!(
                "connections.max_buffer_bytes: must be 4096..=16777216, got {}",
                n.max_buffer_bytes
            ));
        }
        let switches = crate::ebpf::probes::switches();
        if let Some(d) = self
            .probes
            .disabled
            .iter()
            .find(|d| !switches.contains(&d.as_str()))
        {
            return bad(format!(
                "probes.disabled: unknown probe group {d:?} (known: {})",
                switches.join(", ")
            ));
        }
        if let Some(p) = self
            .processes
            .pids
            .iter()
            .find(|p| self.processes.exclude_pids.contains(p))
        {
            return bad(format!(
                "processes: pid {p} is both in pids and exclude_pids"
            ));
        }
        if let Some(c) = self
            .propagation
            .cgroup
            .as_ref()
            .filter(|c| !c.is_absolute())
        {
            return bad(format!(
                "propagation.cgroup: must be an absolute path to a cgroup v2 directory, got {}",
                c.display()
            ));
        }
        self.telemetry.listen_addr().map_err(ConfigError::Invalid)?;
        self.selection
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.telemetry.unready_after_export_failing_secs > 86_400 {
            return bad(format!(
                "telemetry.unready_after_export_failing_secs: must be 0..=86400, got {}",
                self.telemetry.unready_after_export_failing_secs
            ));
        }
        let m = self.metrics.export_interval_ms;
        if m != 0 && !(100..=86_400_000).contains(&m) {
            return bad(format!(
                "metrics.export_interval_ms: must be 0 (off) or 100..=86400000, got {m}"
            ));
        }
        self.export.validate().map_err(ConfigError::Export)?;
        // Same fields, same names: the metrics' values differ only by their variables.
        self.metrics.export.validate().map_err(ConfigError::Export)
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            capture_bytes: self.capture.bytes_per_syscall,
            ring_buffer_bytes: self.capture.ring_buffer_bytes,
            max_connections: self.connections.max,
            trace_all: self.processes.pids.is_empty(),
            include_pids: self.processes.pids.clone(),
            exclude_pids: self.processes.exclude_pids.clone(),
            disabled: self.probes.disabled.clone(),
            inject: self.propagation.inject_http1.then(|| InjectOptions {
                cgroup: self.propagation.cgroup.clone(),
                // Validated with the rest of the config.
                root_threshold: self.sampling.sampler().map_or(0, |s| s.root_threshold()),
                parent_based: self.sampling.sampler().is_ok_and(|s| s.parent_based()),
                secret: fastrand::u64(..),
            }),
        }
    }
}

fn read(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn kubernetes_section() {
        use super::K8sEnabled;
        let k = |y: &str| Config::from_yaml(y, "t").map(|c| c.kubernetes);
        assert_eq!(k("kubernetes: {}").unwrap().enabled, K8sEnabled::Auto);
        assert_eq!(
            k("kubernetes: {enabled: true}").unwrap().enabled,
            K8sEnabled::True
        );
        assert_eq!(
            k("kubernetes: {enabled: false}").unwrap().enabled,
            K8sEnabled::False
        );
        assert_eq!(
            k("kubernetes: {enabled: auto}").unwrap().enabled,
            K8sEnabled::Auto
        );
        let c = k("kubernetes: {node_name: n1, cluster_name: c1, kubeconfig: /k}").unwrap();
        assert_eq!(
            (c.node_name.as_deref(), c.cluster_name.as_deref()),
            (Some("n1"), Some("c1"))
        );
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        let e = k("kubernetes: {enabled: maybe}").unwrap_err().to_string();
        assert!(e.contains("kubernetes.enabled"), "{e}");
        assert!(
            k("kubernetes: {nodename: x}").is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn metrics_interval_from_file_then_the_sdk_environment_variable() {
        let args = RunArgs::default();
        assert_eq!(
            Config::resolve(&args, no_env)
                .expect("defaults")
                .metrics
                .export_interval_ms,
            60_000
        );
        let env = |v: &'static str| {
            move |k: &str| (k == "OTEL_METRIC_EXPORT_INTERVAL").then(|| v.to_owned())
        };
        let c = Config::resolve(&args, env("1500")).expect("env");
        assert_eq!(c.metrics.export_interval_ms, 1500);
        let e = Config::resolve(&args, env("1.5s")).unwrap_err().to_string();
        assert!(
            e.contains("OTEL_METRIC_EXPORT_INTERVAL") && e.contains("1.5s"),
            "{e}"
        );
        let e = Config::resolve(&args, env("5")).unwrap_err().to_string();
        assert!(
            e.contains("metrics.export_interval_ms") && e.contains('5'),
            "{e}"
        );
        let off = Config::from_yaml("metrics: {export_interval_ms: 0}", "t").expect("yaml");
        off.validate().expect("0 turns export off");
        assert!(Config::from_yaml("metrics: {interval: 1}", "t").is_err());
    }

    #[test]
    fn propagation_is_off_by_default_and_takes_the_samplers_threshold() {
        let c = Config::from_yaml("{}", "t").unwrap();
        assert!(!c.propagation.inject_http1);
        assert_eq!(c.load_options().inject, None);
        let c = Config::from_yaml(
            "propagation: {inject_http1: true, cgroup: /sys/fs/cgroup/unified/x}\n\
             sampling: {sampler: parentbased_traceidratio, ratio: 0.5}",
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        let inject = c.load_options().inject.expect("on");
        assert_eq!(
            inject,
            InjectOptions {
                cgroup: Some("/sys/fs/cgroup/unified/x".into()),
                root_threshold: 1 << 55,
                parent_based: true,
                secret: inject.secret,
            }
        );
        assert_ne!(
            inject.secret,
            c.load_options().inject.expect("on").secret,
            "a new key per run"
        );
        let bad = Config::from_yaml("propagation: {inject_http1: true, cgroup: rel/x}", "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("propagation.cgroup") && bad.contains("rel/x"),
            "{bad}"
        );
        assert!(Config::from_yaml("propagation: {inject: true}", "t").is_err());
    }

    #[test]
    fn documented_example_parses_and_validates() {
        let text = include_str!("../../deploy/agent.example.yaml");
        let cfg = Config::from_yaml(text, "agent.example.yaml").expect("example parses");
        cfg.validate().expect("example validates");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let e = Config::from_yaml("capture:\n  bytes_per_sycall: 10\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes_per_sycall"), "{e}");
    }

    #[test]
    fn bad_values_name_field_and_value() {
        let mut c = Config::default();
        c.capture.bytes_per_syscall = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("capture.bytes_per_syscall: must be 1..=16384, got 0"));
        let mut c = Config::default();
        c.capture.ring_buffer_bytes = 100_000;
        assert!(c.validate().unwrap_err().to_string().contains("got 100000"));
        let mut c = Config::default();
        c.probes.disabled = vec!["reed".into()];
        assert!(c.validate().unwrap_err().to_string().contains("\"reed\""));
        let mut c = Config::default();
        c.processes.pids = vec![5];
        c.processes.exclude_pids = vec![5];
        assert!(c.validate().unwrap_err().to_string().contains("pid 5"));
    }

    #[test]
    fn flags_override_file_and_env() {
        let dir = std::env::temp_dir().join(format!("agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "capture:\n  bytes_per_syscall: 100\nexport:\n  endpoint: http://file:4317\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://env:4317".to_owned());
        let c = Config::resolve(&args, env).unwrap();
        assert_eq!(c.capture.bytes_per_syscall, 100);
        assert_eq!(c.export.endpoint.as_deref(), Some("http://env:4317"));
        let args = RunArgs {
            config: Some(f),
            otlp_endpoint: Some("http://flag:4317".into()),
            capture_bytes: Some(200),
            pids: vec![9],
            ..Default::default()
        };
        let c = Config::resolve(&args, env).unwrap();
        assert_eq!(c.export.endpoint.as_deref(), Some("http://flag:4317"));
        assert_eq!(c.capture.bytes_per_syscall, 200);
        assert!(!c.load_options().trace_all);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn metrics_export_takes_its_own_variables_over_the_export_section() {
        let yaml = "export:\n  endpoint: http://file:4318/v1/traces\n  protocol: http/protobuf\n  \
                    headers:\n    x-tenant: file\n";
        let resolve = |pairs: &'static [(&'static str, &'static str)]| {
            Config::layer(
                Config::from_yaml(yaml, "c.yaml").unwrap(),
                &RunArgs::default(),
                move |k: &str| {
                    pairs
                        .iter()
                        .find(|(n, _)| *n == k)
                        .map(|(_, v)| (*v).to_owned())
                },
            )
        };
        // Nothing set: the metrics go where the spans go (the URL is derived later).
        let c = resolve(&[]).unwrap();
        assert_eq!(c.metrics.export.endpoint, c.export.endpoint);
        assert!(!c.metrics.endpoint_final);
        assert_eq!(c.metrics.export.headers["x-tenant"], "file");
        // The metrics' own variables move only the metrics; the traces' only the traces.
        let c = resolve(&[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=metrics"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1234"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
        ])
        .unwrap();
        assert_eq!(
            c.export.endpoint.as_deref(),
            Some("http://file:4318/v1/traces")
        );
        assert_eq!(c.export.headers["x-tenant"], "file");
        assert_eq!(c.export.timeout_ms, 1234);
        assert_eq!(c.export.compression, crate::export::Compression::None);
        assert_eq!(
            c.metrics.export.endpoint.as_deref(),
            Some("http://m:4318/custom")
        );
        assert!(
            c.metrics.endpoint_final,
            "a signal-specific URL is used as is"
        );
        assert_eq!(c.metrics.export.headers["x-tenant"], "metrics");
        assert_eq!(c.metrics.export.timeout_ms, 10_000);
        assert_eq!(
            c.metrics.export.compression,
            crate::export::Compression::Gzip
        );
        // The generic base URL gets each signal's path.
        let c = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318")]).unwrap();
        assert_eq!(
            c.export.endpoint.as_deref(),
            Some("http://g:4318/v1/traces")
        );
        assert_eq!(
            c.metrics.export.endpoint.as_deref(),
            Some("http://g:4318/v1/metrics")
        );
        // A bad metrics variable is an error naming it.
        let e = resolve(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "carrier-pigeon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), "{e}");
    }

    #[test]
    fn sampling_from_file_then_the_sdk_environment_variables() {
        use crate::span::sampler::Root;
        let c = Config::from_yaml(
            "sampling:\n  sampler: traceidratio\n  ratio: 0.5\n  keep_errors: true\n",
            "s.yaml",
        )
        .unwrap();
        assert_eq!(c.sampling.sampler(), Ok(Sampler::TraceIdRatio(0.5)));
        assert!(c.sampling.keep_errors);
        assert_eq!(Config::default().sampling.sampler(), Ok(Sampler::default()));

        let env = |k: &str| match k {
            "OTEL_TRACES_SAMPLER" => Some("parentbased_traceidratio".to_owned()),
            "OTEL_TRACES_SAMPLER_ARG" => Some("0.1".to_owned()),
            _ => None,
        };
        let c = Config::resolve(&RunArgs::default(), env).unwrap();
        assert_eq!(
            c.sampling.sampler(),
            Ok(Sampler::ParentBased(Root::TraceIdRatio(0.1)))
        );

        let bad_env = |k: &str| (k == "OTEL_TRACES_SAMPLER").then(|| "xray".to_owned());
        let e = Config::resolve(&RunArgs::default(), bad_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OTEL_TRACES_SAMPLER") && e.contains("xray"),
            "{e}"
        );
        let bad_arg = |k: &str| (k == "OTEL_TRACES_SAMPLER_ARG").then(|| "2".to_owned());
        let e = Config::resolve(&RunArgs::default(), bad_arg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OTEL_TRACES_SAMPLER_ARG") && e.contains("\"2\""),
            "{e}"
        );
        let c = Config::from_yaml("sampling:\n  sampler: sometimes\n", "s.yaml").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sampling") && e.contains("sometimes"), "{e}");
        let c =
            Config::from_yaml("sampling:\n  sampler: traceidratio\n  ratio: 1.5\n", "s").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("1.5"));
    }

    #[test]
    fn telemetry_listen_defaults_to_loopback_and_can_be_turned_off() {
        use std::net::SocketAddr;
        let addr = |yaml: &str| {
            Config::from_yaml(yaml, "t.yaml")
                .unwrap()
                .telemetry
                .listen_addr()
        };
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(Config::default().telemetry.listen_addr(), Ok(Some(local)));
        assert_eq!(
            addr("telemetry:\n  log_interval_secs: 5\n"),
            Ok(Some(local))
        );
        assert_eq!(addr("telemetry:\n  listen: \"\"\n"), Ok(None));
        assert_eq!(addr("telemetry:\n  listen: null\n"), Ok(None));
        assert_eq!(
            addr("telemetry:\n  listen: \"[::1]:9000\"\n"),
            Ok(Some("[::1]:9000".parse().unwrap()))
        );
        let c = Config::from_yaml("telemetry:\n  listen: localhost:9464\n", "t.yaml").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("telemetry.listen") && e.contains("\"localhost:9464\""),
            "{e}"
        );
        let mut c = Config::default();
        c.telemetry.unready_after_export_failing_secs = 100_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("unready_after_export_failing_secs") && e.contains("100000"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let args = RunArgs {
            config: Some("/nonexistent/agent.yaml".into()),
            ..Default::default()
        };
        let e = Config::resolve(&args, no_env).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/agent.yaml"), "{e}");
    }
}
