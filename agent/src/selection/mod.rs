//! Which processes, and which of their protocols, are traced: the `selection` rules of the
//! config, compiled into a [`Selector`] that decides a [`ProtocolSet`] per workload.
//!
//! Owns: the rule syntax and its validation ([`SelectionConfig`]), matching a workload (a pod's
//! namespace, labels and owner, or "not in a pod") against the rules, the built-in defaults,
//! and the live handle ([`SelectionHandle`]) that hot reload swaps rules through. Does not own:
//! which pod a process is in (`enrich`), enforcing the decision (`conn` drops deselected
//! connections in user space, [`cgroups`] feeds the kernel's cgroup filter), or when the
//! config file is re-read (`crate::reload`).
//!
//! Rules are tried in order, the first that matches decides; then the built-in defaults
//! (`kube-system` and the agent's own namespace, `$POD_NAMESPACE`, trace nothing); then
//! everything is traced.

pub mod cgroups;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::enrich::k8s::PodMeta;
pub use crate::protocol::ProtocolSet;

/// Namespaces that trace nothing unless a rule says otherwise.
pub const SYSTEM_NAMESPACES: &[&str] = &["kube-system"];

/// The `selection` section: which workloads and protocols are traced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionConfig {
    /// Rules tried in order; the first that matches a process decides what of it is traced.
    /// No match: the built-in defaults (nothing in `kube-system` or the agent's own namespace,
    /// `$POD_NAMESPACE`), then everything. Applied live when the config file changes.
    pub rules: Vec<RuleConfig>,
}

/// One selection rule. A rule matches pods (`namespaces`, optionally narrowed by `pod_labels`
/// and `owner`) or, with `host: true`, processes that are in no pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Namespace glob patterns (`*` any run of characters, `?` one), e.g. `shop-*`.
    pub namespaces: Vec<String>,
    /// Labels the pod must carry, each with exactly this value.
    pub pod_labels: BTreeMap<String, String>,
    /// Glob on the name of the pod's owning workload: its Deployment, StatefulSet, DaemonSet,
    /// Job or CronJob (a bare ReplicaSet's name when there is no Deployment).
    pub owner: Option<String>,
    /// Match processes that run in no Kubernetes pod (node daemons, the host) instead of pods.
    pub host: bool,
    /// What is traced: `all`, `none`, or any of `http` (HTTP/1.x), `http2` / `grpc`,
    /// `postgres`, `amqp`, `tls` (plaintext from TLS libraries; without it TLS connections
    /// are not traced).
    pub protocols: Vec<String>,
}

/// A rule's field failed validation: `field` is its full path (`selection.rules[2].protocols[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SelectionError {
    pub field: String,
    pub message: String,
}

/// A glob with `*` and `?` (no character classes: Kubernetes names cannot hold `[`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(Vec<u8>);

impl Glob {
    fn matches(&self, s: &str) -> bool {
        glob_match(&self.0, s.as_bytes())
    }
}

/// Iterative glob match with one backtrack point (linear in practice, no recursion).
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Checks a glob over DNS-1123 names (`allow_dot`: subdomains, e.g. owner names).
fn glob(field: &str, pattern: &str, max: usize, allow_dot: bool) -> Result<Glob, SelectionError> {
    let err = |message: String| SelectionError {
        field: field.to_owned(),
        message,
    };
    if pattern.is_empty() {
        return Err(err("empty pattern".into()));
    }
    if pattern.len() > max {
        return Err(err(format!(
            "pattern {pattern:?} is longer than a name can be ({max})"
        )));
    }
    if let Some(c) = pattern.chars().find(|&c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*' || c == '?')
            && !(allow_dot && c == '.')
    }) {
        return Err(err(format!(
            "bad pattern {pattern:?}: {c:?} cannot appear in a Kubernetes name (lowercase \
             letters, digits, '-'{}; globs use '*' and '?')",
            if allow_dot { ", '.'" } else { "" }
        )));
    }
    Ok(Glob(pattern.as_bytes().to_vec()))
}

/// Label keys `[prefix/]name` and values, per Kubernetes' label syntax (values may be empty).
fn label_ok(s: &str, max: usize) -> bool {
    s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn label_key_ok(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !name.is_empty()
                && label_ok(name, 63)
        }
        None => !k.is_empty() && label_ok(k, 63),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Pods {
        namespaces: Vec<Glob>,
        labels: Vec<(String, String)>,
        owner: Option<Glob>,
    },
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    protocols: ProtocolSet,
}

/// What a rule is matched against.
#[derive(Clone, Copy, Debug)]
pub enum Workload<'a> {
    /// A process in a pod the watch knows.
    Pod(&'a PodMeta),
    /// A process in a pod the watch does not know (yet): nothing to match on, so traced
    /// (spans carry procfs metadata); decided again when the pod arrives.
    UnknownPod,
    /// A process in no pod.
    Host,
}

/// Compiled, validated rules plus the built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    rules: Vec<Rule>,
}

impl Default for Selector {
    fn default() -> Self {
        Self::compile(&SelectionConfig::default(), None).expect("no rules are valid")
    }
}

impl SelectionConfig {
    /// Validates the rules (error messages name the field as `selection.rules[i]...`).
    pub fn validate(&self) -> Result<(), SelectionError> {
        Selector::compile(self, None).map(|_| ())
    }
}

impl Selector {
    /// Compiles `cfg`; `own_namespace` (the agent's, from `$POD_NAMESPACE`) traces nothing by
    /// default, like `kube-system`.
    pub fn compile(
        cfg: &SelectionConfig,
        own_namespace: Option<&str>,
    ) -> Result<Self, SelectionError> {
        let mut rules = Vec::with_capacity(cfg.rules.len() + 2);
        for (i, r) in cfg.rules.iter().enumerate() {
            let f = |rest: &str| format!("selection.rules[{i}]{rest}");
            let err = |field: String, message: String| SelectionError { field, message };
            if r.protocols.is_empty() {
                return Err(err(
                    f(".protocols"),
                    "missing: list what is traced (all, none, or protocols)".into(),
                ));
            }
            let mut set = ProtocolSet::NONE;
            for (j, p) in r.protocols.iter().enumerate() {
                let one = ProtocolSet::from_name(p).ok_or_else(|| {
                    err(
                        f(&format!(".protocols[{j}]")),
                        format!(
                            "unknown protocol {p:?}; expected one of {}",
                            ProtocolSet::names().join(", ")
                        ),
                    )
                })?;
                if (p == "none") != (r.protocols.len() == 1 && p == "none") {
                    return Err(err(
                        f(&format!(".protocols[{j}]")),
                        "none cannot be combined with other protocols".into(),
                    ));
                }
                set = set.union(one);
            }
            let target = if r.host {
                if !r.namespaces.is_empty() || !r.pod_labels.is_empty() || r.owner.is_some() {
                    return Err(err(
                        f(".host"),
                        "a host rule matches processes in no pod: it cannot also name \
                         namespaces, pod_labels or owner"
                            .into(),
                    ));
                }
                Target::Host
            } else {
                if r.namespaces.is_empty() {
                    return Err(err(
                        f(".namespaces"),
                        "missing: give namespace patterns (\"*\" for all), or host: true".into(),
                    ));
                }
                let namespaces = r
                    .namespaces
                    .iter()
                    .enumerate()
                    .map(|(j, n)| glob(&f(&format!(".namespaces[{j}]")), n, 63, false))
                    .collect::<Result<Vec<_>, _>>()?;
                for (k, v) in &r.pod_labels {
                    if !label_key_ok(k) {
                        return Err(err(
                            f(".pod_labels"),
                            format!("{k:?} is not a valid label key"),
                        ));
                    }
                    if !label_ok(v, 63) {
                        return Err(err(
                            f(&format!(".pod_labels.{k}")),
                            format!("{v:?} is not a valid label value"),
                        ));
                    }
                }
                let owner = r
                    .owner
                    .as_deref()
                    .map(|o| glob(&f(".owner"), o, 253, true))
                    .transpose()?;
                Target::Pods {
                    namespaces,
                    labels: r
                        .pod_labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    owner,
                }
            };
            rules.push(Rule {
                target,
                protocols: set,
            });
        }
        let defaults = SYSTEM_NAMESPACES
            .iter()
            .copied()
            .chain(own_namespace.filter(|n| !n.is_empty()));
        for ns in defaults {
            rules.push(Rule {
                target: Target::Pods {
                    namespaces: vec![Glob(ns.as_bytes().to_vec())],
                    labels: Vec::new(),
                    owner: None,
                },
                protocols: ProtocolSet::NONE,
            });
        }
        Ok(Self { rules })
    }

    /// The protocols traced for a process of `w`.
    pub fn decide(&self, w: Workload<'_>) -> ProtocolSet {
        let pod = match w {
            Workload::UnknownPod => return ProtocolSet::ALL,
            Workload::Pod(p) => Some(p),
            Workload::Host => None,
        };
        for r in &self.rules {
            let hit = match (&r.target, pod) {
                (Target::Host, None) => true,
                (
                    Target::Pods {
                        namespaces,
                        labels,
                        owner,
                    },
                    Some(p),
                ) => {
                    namespaces.iter().any(|g| g.matches(&p.namespace))
                        && labels
                            .iter()
                            .all(|(k, v)| p.selector_label(k) == Some(v.as_str()))
                        && owner
                            .as_ref()
                            .is_none_or(|g| p.owner_name().is_some_and(|o| g.matches(o)))
                }
                _ => false,
            };
            if hit {
                return r.protocols;
            }
        }
        ProtocolSet::ALL
    }
}

/// The rules in force, shared by the threads that decide (procfs worker, cgroup scanner) and
/// swapped by hot reload. Readers take a short read lock off the data path; the data path
/// itself only loads [`Self::version`], an atomic.
#[derive(Clone, Default)]
pub struct SelectionHandle {
    inner: Arc<(RwLock<Arc<Selector>>, AtomicU64)>,
}

impl SelectionHandle {
    pub fn new(selector: Selector) -> Self {
        Self {
            inner: Arc::new((RwLock::new(Arc::new(selector)), AtomicU64::new(0))),
        }
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<Selector> {
        Arc::clone(&self.inner.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bumped at every [`Self::replace`].
    pub fn version(&self) -> u64 {
        self.inner.1.load(Ordering::Acquire)
    }

    /// Puts `selector` in force; decisions made under the old rules become stale.
    pub fn replace(&self, selector: Selector) {
        *self.inner.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(selector);
        self.inner.1.fetch_add(1, Ordering::AcqRel);
    }
}

/// The agent's own namespace from the downward API (`POD_NAMESPACE`), if set.
pub fn own_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
