//! Who produced a span: process metadata turned into an OpenTelemetry [`Resource`], cached
//! per pid.
//!
//! [`ResourceCache::get`] reads `/proc/{pid}` once per process (see [`process`] for what is
//! read and how `service.name` is chosen), builds the resource and shares it by `Arc` with
//! every span of that process. The cache is bounded and evicts the least recently used
//! process; the caller calls [`ResourceCache::forget`] when a process exits, because pids are
//! reused. This module does not watch processes exit (the event pipeline does). Which
//! container and pod a process is in comes from its cgroup path (see [`cgroup`]); the pod's
//! names, owners and labels come from the Kubernetes API through the node's pod watch (see
//! [`k8s`]) when the agent runs in Kubernetes. A resource built before the watch knew the
//! pod is rebuilt once it does (see [`ResourceCache::contains`]); no container runtime is
//! asked.
//!
//! Resource attributes, all keys from the OpenTelemetry semantic conventions:
//! - `service.name`: see [`process`]; `unknown_service` when the process is gone.
//! - `service.instance.id`: the target's own value from `OTEL_RESOURCE_ATTRIBUTES` if set
//!   (so our spans match those of an SDK in the same process), else `{host.name}-{pid}`:
//!   unique among the live processes of a node and stable for a process's life, which is
//!   what the convention asks. A pid reused much later gets the same id again; that is
//!   acceptable for an instance id, whose instances do not overlap in time.
//! - `service.namespace`, `service.version`, `deployment.environment.name`,
//!   `deployment.environment`: copied from the target's `OTEL_RESOURCE_ATTRIBUTES` if set.
//! - `process.pid` (int), `process.executable.name`, `process.executable.path`.
//! - `container.id` (the full 64-hex id), `container.runtime.name` (`containerd`, `cri-o`,
//!   `docker`, `podman`; left out when the path does not say) and `k8s.pod.uid`, when the
//!   process's cgroup names them (see [`cgroup`]). `container.runtime.name` is the current
//!   key; `container.runtime` is its deprecated predecessor and is not sent. The pod's QoS
//!   class is read too but has no semantic-convention attribute, so it is not sent.
//! - with the pod known to the watch (see [`k8s`]): `k8s.namespace.name`, `k8s.pod.name`,
//!   `k8s.node.name`, `k8s.container.name`, `container.image.name`, `container.image.tag`,
//!   the owner's `k8s.{deployment,replicaset,statefulset,daemonset,cronjob,job}.name`,
//!   `k8s.cluster.name` (configured), and `service.namespace`, `service.version`,
//!   `service.instance.id` and `service.name` from the pod (after the process's own
//!   `OTEL_*` values; see [`k8s::meta::PodMeta::service_name`] for the order).
//! - `host.name`.
//! - `telemetry.distro.name` = `ebpf-agent`, `telemetry.distro.version` = this crate's
//!   version. Not `telemetry.sdk.*`: those describe the OpenTelemetry SDK inside the
//!   application, and there is none; a distro is the convention for "the thing that produced
//!   this telemetry on the SDK's behalf".

pub mod cgroup;
pub mod k8s;
pub mod process;
mod service_name;
pub mod worker;

#[cfg(test)]
pub(crate) mod fake_proc;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::span::model::{Attribute, Resource};
use process::{read_process, EnrichError, ProcessInfo};

/// `service.name` for a process we know nothing about (OpenTelemetry resource semantic
/// conventions: `unknown_service`, optionally followed by `:` and the executable name).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// Resource attribute naming the language runtime (OpenTelemetry process conventions), set
/// when the agent can tell: `go` for Go programs.
pub const PROCESS_RUNTIME_NAME: &str = "process.runtime.name";
pub const GO_RUNTIME: &str = "go";
/// `telemetry.distro.name` of everything this agent produces.
pub const DISTRO_NAME: &str = "ebpf-agent";

/// Builds the resource for a process (see the module documentation for the attributes).
pub fn build_resource(info: &ProcessInfo, host_name: &str) -> Resource {
    build_resource_with(info, host_name, None).0
}

/// Like [`build_resource`], with the pod's metadata from `k8s` when the process is in a pod
/// the watch knows. The second value is true when the process is in a pod the watch does
/// not know (yet): worth rebuilding once it does.
pub fn build_resource_with(
    info: &ProcessInfo,
    host_name: &str,
    k8s: Option<&k8s::K8sView>,
) -> (Resource, bool) {
    let own = |key: &str| {
        info.resource_attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    };
    let pod_uid = info
        .container
        .as_ref()
        .and_then(|c| c.pod.as_ref())
        .map(|p| p.uid.as_str());
    let pod = match (k8s, pod_uid) {
        (Some(view), Some(uid)) => view.lookup(uid),
        _ => None,
    };
    let pending = k8s.is_some() && pod_uid.is_some() && pod.is_none();
    let container = pod
        .as_deref()
        .and_then(|p| info.container.as_ref().and_then(|c| p.container(&c.id)));
    // The process's own OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win (an SDK in it would
    // report those); then the pod's, in the semantic conventions' order (see k8s::meta).
    let service_name = match (&pod, info.service_name_source) {
        (Some(p), process::ServiceNameSource::Script | process::ServiceNameSource::Executable) => p
            .service_name(container)
            .unwrap_or_else(|| info.service_name.clone()),
        _ => info.service_name.clone(),
    };
    let instance = own("service.instance.id")
        .or_else(|| {
            pod.as_deref()
                .and_then(|p| p.service_instance_id(container))
        })
        .unwrap_or_else(|| format!("{host_name}-{}", info.pid));
    let mut attributes = vec![
        Attribute::new("service.name", service_name),
        Attribute::new("service.instance.id", instance),
    ];
    for (key, value) in &info.resource_attributes {
        if *key != "service.instance.id" {
            attributes.push(Attribute::new(key, value.as_str()));
        }
    }
    if let Some(p) = &pod {
        if own("service.namespace").is_none() {
            attributes.push(Attribute::new("service.namespace", p.service_namespace()));
        }
        if let (None, Some(v)) = (own("service.version"), p.service_version()) {
            attributes.push(Attribute::new("service.version", v));
        }
    }
    attributes.push(Attribute::new("process.pid", i64::from(info.pid)));
    attributes.push(Attribute::new(
        "process.executable.name",
        info.exe_name.as_str(),
    ));
    if info.go {
        attributes.push(Attribute::new(PROCESS_RUNTIME_NAME, GO_RUNTIME));
    }
    if let Some(path) = &info.exe_path {
        attributes.push(Attribute::new("process.executable.path", path.as_str()));
    }
    if let Some(c) = &info.container {
        attributes.push(Attribute::new("container.id", c.id.as_str()));
        if let Some(runtime) = c.runtime {
            attributes.push(Attribute::new("container.runtime.name", runtime.as_str()));
        }
        if let Some(pod) = &c.pod {
            attributes.push(Attribute::new("k8s.pod.uid", pod.uid.as_str()));
        }
    }
    if let Some(p) = &pod {
        attributes.extend(p.attributes(container, k8s.and_then(|v| v.cluster())));
    }
    attributes.extend(common_attributes(host_name));
    (Resource { attributes }, pending)
}

/// The resource of a process whose /proc entry is gone or unreadable.
pub fn unknown_resource(pid: u32, host_name: &str) -> Resource {
    let mut attributes = vec![
        Attribute::new("service.name", UNKNOWN_SERVICE),
        Attribute::new("process.pid", i64::from(pid)),
    ];
    attributes.extend(common_attributes(host_name));
    Resource { attributes }
}

/// The resource of a process that exited before its /proc entry could be read, named by the
/// `comm` the kernel recorded when it opened the connection (the executable's name, cut to 15
/// bytes): short-lived clients such as `curl` are usually gone by the time their span ends.
pub fn comm_resource(pid: u32, comm: &str, host_name: &str) -> Resource {
    if comm.is_empty() {
        return unknown_resource(pid, host_name);
    }
    let mut attributes = vec![
        Attribute::new("service.name", comm),
        Attribute::new("service.instance.id", format!("{host_name}-{pid}")),
        Attribute::new("process.pid", i64::from(pid)),
        Attribute::new("process.executable.name", comm),
    ];
    attributes.extend(common_attributes(host_name));
    Resource { attributes }
}

fn common_attributes(host_name: &str) -> [Attribute; 3] {
    [
        Attribute::new("host.name", host_name),
        Attribute::new("telemetry.distro.name", DISTRO_NAME),
        Attribute::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ]
}

/// The node's host name: the kernel's UTS nodename from `/proc/sys/kernel/hostname` (no
/// `unsafe` needed, unlike `uname(2)`), else `$HOSTNAME`, else `localhost`. In a container
/// this is the container's UTS namespace name; run the agent with the host's UTS namespace
/// (`hostNetwork` in Kubernetes) or pass the node name explicitly to get the node's.
pub fn host_name() -> String {
    host_name_from(Path::new("/proc"))
}

fn host_name_from(proc_root: &Path) -> String {
    let mut buf = String::new();
    let read = std::fs::File::open(proc_root.join("sys/kernel/hostname"))
        .and_then(|f| f.take(256).read_to_string(&mut buf));
    let name = match read {
        Ok(_) => buf.trim().to_owned(),
        Err(_) => String::new(),
    };
    if !name.is_empty() {
        return name;
    }
    std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

pub use crate::span::model::ProcessTraits;

/// A process's resource as read from procfs.
pub struct Loaded {
    pub resource: Arc<Resource>,
    pub traits: ProcessTraits,
    /// False for a process that was gone with no `comm` to name it by.
    pub cacheable: bool,
}

/// Reads process `pid` under `proc_root` and builds its resource; a process already gone is
/// named by `comm` when known.
pub fn load_resource(
    proc_root: &Path,
    host_name: &str,
    pid: u32,
    comm: &str,
    k8s: Option<&k8s::K8sView>,
) -> Loaded {
    let none = ProcessTraits::default();
    let (resource, traits, cacheable) = match read_process(proc_root, pid) {
        Ok(info) => {
            // Read before the lookup: a pod arriving in between moves it again.
            let generation = k8s.map(k8s::K8sView::generation);
            let (resource, pending) = build_resource_with(&info, host_name, k8s);
            let traits = ProcessTraits {
                threads_migrate: info.go,
                sdk_traces: info.sdk_traces,
                pod_pending_since: generation.filter(|_| pending),
            };
            (resource, traits, true)
        }
        Err(EnrichError::ProcessGone { .. }) if !comm.is_empty() => {
            (comm_resource(pid, comm, host_name), none, true)
        }
        Err(EnrichError::ProcessGone { .. }) => (unknown_resource(pid, host_name), none, false),
        Err(e) => {
            tracing::debug!(pid, error = %e, "process metadata unavailable");
            (unknown_resource(pid, host_name), none, true)
        }
    };
    Loaded {
        resource: Arc::new(resource),
        traits,
        cacheable,
    }
}

struct Entry {
    resource: Arc<Resource>,
    traits: ProcessTraits,
    last_used: u64,
}

/// Resources by pid, read from procfs on first use, bounded, least-recently-used eviction.
///
/// Hits are O(1). A miss reads procfs (a handful of syscalls) and, when the cache is full,
/// evicts by a linear scan for the oldest entry; the scan is cheap next to the procfs reads,
/// and misses happen once per process, so no ordered structure is kept on the hot path.
pub struct ResourceCache {
    proc_root: PathBuf,
    host_name: String,
    capacity: usize,
    entries: HashMap<u32, Entry>,
    clock: u64,
    k8s: Option<k8s::K8sView>,
}

impl ResourceCache {
    /// A cache over the real `/proc`. `capacity` is clamped to at least 1.
    pub fn new(host_name: String, capacity: usize) -> Self {
        Self::with_proc_root(host_name, capacity, PathBuf::from("/proc"))
    }

    /// A cache over another procfs tree (tests, or a host /proc mounted elsewhere).
    pub fn with_proc_root(host_name: String, capacity: usize, proc_root: PathBuf) -> Self {
        let capacity = capacity.max(1);
        Self {
            proc_root,
            host_name,
            capacity,
            entries: HashMap::with_capacity(capacity.min(4096)),
            clock: 0,
            k8s: None,
        }
    }

    /// Pod metadata from the Kubernetes watch for the resources built from now on (inline
    /// reads; the procfs worker gets its own handle, see [`worker::ProcWorker::spawn_with`]).
    pub fn set_k8s(&mut self, view: k8s::K8sView) {
        self.k8s = Some(view);
    }

    /// The resource of `pid`, read on first use. A process that is gone gets a minimal
    /// `unknown_service` resource, which is not cached (the pid may come back as another
    /// process); one we cannot read for another reason gets the same, cached, so we do not
    /// retry on every span.
    pub fn get(&mut self, pid: u32) -> Arc<Resource> {
        self.get_or_comm(pid, "")
    }

    /// Like [`ResourceCache::get`], but a process already gone is named by `comm` (what the
    /// kernel recorded for it) instead of `unknown_service`, and that answer is cached until
    /// [`ResourceCache::forget`].
    pub fn get_or_comm(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        self.lookup(pid, comm).0
    }

    /// `pid`'s traits (read with its resource, see [`Self::get_or_comm`]).
    pub fn traits(&mut self, pid: u32, comm: &str) -> ProcessTraits {
        self.lookup(pid, comm).1
    }

    fn lookup(&mut self, pid: u32, comm: &str) -> (Arc<Resource>, ProcessTraits) {
        self.clock += 1;
        if let Some(e) = self.entries.get_mut(&pid) {
            e.last_used = self.clock;
            return (Arc::clone(&e.resource), e.traits);
        }
        let Loaded {
            resource,
            traits,
            cacheable,
        } = load_resource(
            &self.proc_root,
            &self.host_name,
            pid,
            comm,
            self.k8s.as_ref(),
        );
        if cacheable {
            self.insert(pid, Arc::clone(&resource), traits);
        }
        (resource, traits)
    }

    /// Whether `pid`'s resource is cached but built while its pod was unknown, and a new pod
    /// has arrived since (see [`Self::contains`]).
    pub fn is_stale(&self, pid: u32) -> bool {
        self.entries.contains_key(&pid) && !self.contains(pid)
    }

    /// Whether `pid`'s resource is cached and current: false also for one built while its
    /// pod was unknown when a new pod has arrived since, so the pipeline has it read again
    /// (off this thread, see [`worker`]) while spans keep the cached one meanwhile. Reads
    /// only an atomic, never the pod store's lock.
    pub fn contains(&self, pid: u32) -> bool {
        self.entries
            .get(&pid)
            .is_some_and(|e| match (e.traits.pod_pending_since, &self.k8s) {
                (Some(g), Some(view)) => view.generation() == g,
                _ => true,
            })
    }

    /// Caches a resource read elsewhere (see [`worker`]).
    pub fn insert(&mut self, pid: u32, resource: Arc<Resource>, traits: ProcessTraits) {
        self.clock += 1;
        if !self.entries.contains_key(&pid) && self.entries.len() >= self.capacity {
            self.evict_lru();
        }
        self.entries.insert(
            pid,
            Entry {
                resource,
                traits,
                last_used: self.clock,
            },
        );
    }

    pub fn forget(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_lru(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(&pid, _)| pid)
        {
            self.entries.remove(&oldest);
        }
    }
}

/// The span stage reads resources and traits through this.
impl crate::span::builder::Resources for ResourceCache {
    fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        self.get_or_comm(pid, comm)
    }
    fn forget(&mut self, pid: u32) {
        crate::enrich::ResourceCache::forget(self, pid);
    }
    fn known(&self, pid: u32) -> bool {
        self.contains(pid)
    }
    fn stale(&self, pid: u32) -> bool {
        self.is_stale(pid)
    }
    fn provide(&mut self, pid: u32, resource: Arc<Resource>, traits: ProcessTraits) {
        self.insert(pid, resource, traits);
    }
    fn traits(&mut self, pid: u32, comm: &str) -> ProcessTraits {
        crate::enrich::ResourceCache::traits(self, pid, comm)
    }
}

#[cfg(test)]
mod tests {
    use super::fake_proc::FakeProc;
    use super::*;
    use crate::span::model::AttrValue;

    fn service(r: &Resource) -> &str {
        match r.get("service.name") {
            Some(AttrValue::Str(s)) => s,
            other => panic!("service.name {other:?}"),
        }
    }

    fn app(fake: &FakeProc, pid: u32, name: &str) {
        let env = format!("OTEL_SERVICE_NAME={name}");
        fake.add(pid, Some("/usr/bin/app"), &["app"], &[&env]);
    }

    #[test]
    fn builds_the_documented_attributes() {
        let fake = FakeProc::new();
        fake.add(
            42,
            Some("/usr/bin/python3.11"),
            &["python3", "/srv/api.py"],
            &[],
        );
        let mut cache = ResourceCache::with_proc_root("node-1".into(), 8, fake.root().to_owned());
        let r = cache.get(42);
        let s = |v: &str| Some(AttrValue::Str(v.to_owned()));
        assert_eq!(r.get("service.name"), s("api").as_ref());
        assert_eq!(r.get("service.instance.id"), s("node-1-42").as_ref());
        assert_eq!(r.get("process.pid"), Some(&AttrValue::Int(42)));
        assert_eq!(r.get("process.executable.name"), s("python3.11").as_ref());
        assert_eq!(
            r.get("process.executable.path"),
            s("/usr/bin/python3.11").as_ref()
        );
        assert_eq!(r.get("host.name"), s("node-1").as_ref());
        assert_eq!(r.get("telemetry.distro.name"), s("ebpf-agent").as_ref());
        assert_eq!(
            r.get("telemetry.distro.version"),
            s(env!("CARGO_PKG_VERSION")).as_ref()
        );
        assert!(r.get("telemetry.sdk.name").is_none());
        // Same Arc for every span of the process.
        assert!(Arc::ptr_eq(&r, &cache.get(42)));
    }

    #[test]
    fn target_resource_attributes_are_respected() {
        let fake = FakeProc::new();
        let env = "OTEL_RESOURCE_ATTRIBUTES=service.name=cart,service.instance.id=cart-7,service.version=2.0";
        fake.add(7, Some("/usr/bin/app"), &["app"], &[env]);
        let mut cache = ResourceCache::with_proc_root("h".into(), 8, fake.root().to_owned());
        let r = cache.get(7);
        assert_eq!(service(&r), "cart");
        assert_eq!(
            r.get("service.instance.id"),
            Some(&AttrValue::Str("cart-7".into()))
        );
        assert_eq!(
            r.get("service.version"),
            Some(&AttrValue::Str("2.0".into()))
        );
        assert_eq!(
            r.attributes
                .iter()
                .filter(|a| a.key == "service.instance.id")
                .count(),
            1
        );
    }

    #[test]
    fn gone_processes_get_a_minimal_uncached_resource() {
        let fake = FakeProc::new();
        let mut cache = ResourceCache::with_proc_root("h".into(), 8, fake.root().to_owned());
        let r = cache.get(5);
        assert_eq!(service(&r), UNKNOWN_SERVICE);
        assert_eq!(r.get("process.pid"), Some(&AttrValue::Int(5)));
        assert_eq!(r.get("host.name"), Some(&AttrValue::Str("h".into())));
        assert!(cache.is_empty());
        // The pid appears later (reused): it is read then.
        app(&fake, 5, "late");
        assert_eq!(service(&cache.get(5)), "late");
    }

    #[test]
    fn gone_process_is_named_by_its_comm_until_forgotten() {
        let fake = FakeProc::new();
        let mut cache = ResourceCache::with_proc_root("h".into(), 8, fake.root().to_owned());
        let r = cache.get_or_comm(9, "curl");
        assert_eq!(service(&r), "curl");
        assert_eq!(
            r.get("process.executable.name"),
            Some(&AttrValue::Str("curl".into()))
        );
        assert_eq!(r.get("process.pid"), Some(&AttrValue::Int(9)));
        assert_eq!(cache.len(), 1, "cached until the exit is processed");
        cache.forget(9);
        assert!(cache.is_empty());
        // No comm either: the convention's unknown_service.
        assert_eq!(service(&cache.get_or_comm(9, "")), UNKNOWN_SERVICE);
    }

    #[test]
    fn reads_once_then_forget_rereads() {
        let fake = FakeProc::new();
        app(&fake, 1, "first");
        let mut cache = ResourceCache::with_proc_root("h".into(), 8, fake.root().to_owned());
        assert_eq!(service(&cache.get(1)), "first");
        app(&fake, 1, "second"); // pid reused by another process
        assert_eq!(service(&cache.get(1)), "first", "cached");
        cache.forget(1);
        assert_eq!(service(&cache.get(1)), "second");
        fake.remove(1);
        assert_eq!(
            service(&cache.get(1)),
            "second",
            "still cached until forgotten"
        );
        cache.forget(1);
        assert_eq!(service(&cache.get(1)), UNKNOWN_SERVICE);
    }

    #[test]
    fn evicts_least_recently_used() {
        let fake = FakeProc::new();
        for pid in 1..=3 {
            app(&fake, pid, &format!("svc{pid}"));
        }
        let mut cache = ResourceCache::with_proc_root("h".into(), 2, fake.root().to_owned());
        cache.get(1);
        cache.get(2);
        cache.get(1); // 2 is now the least recently used
        cache.get(3);
        assert_eq!(cache.len(), 2);
        let mut cached: Vec<u32> = cache.entries.keys().copied().collect();
        cached.sort();
        assert_eq!(cached, [1, 3]);
        // Evicted entries are re-read, so they see the current /proc.
        app(&fake, 2, "svc2-new");
        assert_eq!(service(&cache.get(2)), "svc2-new");
        assert_eq!(cache.len(), 2);
        // Capacity 0 is clamped to 1.
        let mut tiny = ResourceCache::with_proc_root("h".into(), 0, fake.root().to_owned());
        tiny.get(1);
        tiny.get(2);
        assert_eq!(tiny.len(), 1);
    }

    #[test]
    fn host_name_sources() {
        let fake = FakeProc::new();
        std::fs::create_dir_all(fake.root().join("sys/kernel")).unwrap();
        std::fs::write(fake.root().join("sys/kernel/hostname"), "node-7\n").unwrap();
        assert_eq!(host_name_from(fake.root()), "node-7");
        let real = host_name();
        assert!(!real.is_empty() && !real.contains('\n'));
    }

    #[test]
    fn real_proc_for_this_process() {
        let mut cache = ResourceCache::new(host_name(), 4);
        let pid = std::process::id();
        let r = cache.get(pid);
        assert_eq!(r.get("process.pid"), Some(&AttrValue::Int(i64::from(pid))));
        assert_ne!(service(&r), UNKNOWN_SERVICE);
        assert!(r.get("process.executable.path").is_some());
    }
}
