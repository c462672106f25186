//! Kubernetes metadata for the processes of this node: a watch on the node's Pods keeps a
//! bounded [`PodStore`] (pod uid → [`PodMeta`]), and the resource builder looks a process's
//! pod up by the uid its cgroup path gave (see [`super::cgroup`]).
//!
//! Owns: the store, the watch task ([`watch`]), the mapping of a Pod to attributes
//! ([`meta`]). Does not own: which pod a process is in (the cgroup path says), building the
//! resource (see [`super::build_resource`]) or when it is rebuilt (see
//! [`super::ResourceCache`]).
//!
//! Data flow: the watch task (tokio) writes the store behind an `RwLock`; the procfs worker
//! thread reads it when it builds a resource. The ring-buffer thread never takes the lock: it
//! reads only [`K8sView::generation`], an atomic bumped whenever a pod uid the store did not
//! have arrives, to know that a resource built while its pod was unknown is worth rebuilding.
//! So spans carry what procfs gives until the watch has synced, then the pod's metadata.
//!
//! Bounds: only this node's pods are listed (`fieldSelector=spec.nodeName=<node>`), at most
//! [`MAX_PODS`]; a deleted pod is kept [`DELETED_GRACE`] so that spans of a pod that just
//! exited (and are still in the pipeline) get its attributes.

pub mod meta;
pub mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use meta::{ContainerMeta, PodMeta};

use crate::telemetry::{Counter, Telemetry};

/// Pods kept at once. A node runs at most 110 pods by kubelet default (a few hundred when
/// raised); this leaves room for deleted ones in their grace period.
pub const MAX_PODS: usize = 4096;
/// How long a deleted pod's metadata stays.
pub const DELETED_GRACE: Duration = Duration::from_secs(300);

struct Slot {
    meta: Arc<PodMeta>,
    /// When the pod was deleted (or vanished from a relist).
    deleted: Option<Instant>,
}

/// The node's pods by uid.
#[derive(Default)]
pub struct PodStore {
    pods: HashMap<String, Slot>,
    /// Whether the first list has completed.
    synced: bool,
    /// Bumped when a pod arrives or its namespace, labels or owner change (what the selection
    /// rules match on; see [`K8sView::revision`]).
    revision: u64,
}

impl PodStore {
    /// Adds or replaces a pod; true when its uid is new (or was deleted).
    pub fn upsert(&mut self, meta: PodMeta, now: Instant) -> bool {
        self.expire(now);
        if !self.pods.contains_key(&meta.uid) && self.pods.len() >= MAX_PODS {
            // Make room from the deleted ones, oldest first; a node with MAX_PODS live pods
            // is beyond what the kubelet runs, so the new pod is simply not kept.
            let oldest = self
                .pods
                .iter()
                .filter_map(|(k, s)| s.deleted.map(|d| (d, k.clone())))
                .min();
            match oldest {
                Some((_, k)) => {
                    self.pods.remove(&k);
                }
                None => return false,
            }
        }
        let uid = meta.uid.clone();
        let selection_changed = self.pods.get(&uid).is_none_or(|s| {
            s.deleted.is_some()
                || s.meta.namespace != meta.namespace
                || s.meta.selector_labels != meta.selector_labels
                || s.meta.owners != meta.owners
        });
        if selection_changed {
            self.revision += 1;
        }
        let old = self.pods.insert(
            uid,
            Slot {
                meta: Arc::new(meta),
                deleted: None,
            },
        );
        old.is_none_or(|s| s.deleted.is_some())
    }

    /// Marks a pod deleted; it stays for [`DELETED_GRACE`].
    pub fn delete(&mut self, uid: &str, now: Instant) {
        if let Some(s) = self.pods.get_mut(uid) {
            s.deleted.get_or_insert(now);
        }
        self.expire(now);
    }

    /// A relist replaced everything: pods not in `live` are treated as deleted. Returns
    /// whether any uid is new.
    pub fn replace(&mut self, live: Vec<PodMeta>, now: Instant) -> bool {
        let keep: std::collections::HashSet<String> = live.iter().map(|m| m.uid.clone()).collect();
        for (uid, s) in self.pods.iter_mut() {
            if !keep.contains(uid) {
                s.deleted.get_or_insert(now);
            }
        }
        let mut new = false;
        for m in live {
            new |= self.upsert(m, now);
        }
        self.synced = true;
        new
    }

    /// Drops pods deleted more than [`DELETED_GRACE`] ago.
    pub fn expire(&mut self, now: Instant) {
        self.pods.retain(|_, s| {
            s.deleted
                .is_none_or(|d| now.saturating_duration_since(d) < DELETED_GRACE)
        });
    }

    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods.get(uid).map(|s| Arc::clone(&s.meta))
    }

    /// Whether the pod is known and not deleted.
    pub fn is_live(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|s| s.deleted.is_none())
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Rough heap bytes of the store (keys, slots and metadata).
    pub fn heap_bytes(&self) -> usize {
        self.pods.capacity() * (std::mem::size_of::<(String, Slot)>() + 1)
            + self
                .pods
                .iter()
                .map(|(k, s)| {
                    k.capacity() + std::mem::size_of::<PodMeta>() + 16 + s.meta.heap_bytes()
                })
                .sum::<usize>()
    }
}

/// The shared handle on the store: the watch writes it, resource builders read it.
#[derive(Clone)]
pub struct K8sView {
    store: Arc<RwLock<PodStore>>,
    generation: Arc<AtomicU64>,
    revision: Arc<AtomicU64>,
    cluster: Option<Arc<str>>,
    telemetry: Option<Arc<Telemetry>>,
    missed_logged: Arc<AtomicBool>,
}

impl K8sView {
    pub fn new(cluster: Option<String>, telemetry: Option<Arc<Telemetry>>) -> Self {
        Self {
            store: Arc::default(),
            generation: Arc::new(AtomicU64::new(0)),
            revision: Arc::new(AtomicU64::new(0)),
            cluster: cluster.filter(|c| !c.is_empty()).map(Arc::from),
            telemetry,
            missed_logged: Arc::default(),
        }
    }

    /// Bumped whenever a pod uid the store did not have arrives (lock-free, for the
    /// ring-buffer thread).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Runs `f` on the store under the write lock, bumping the generation when it says a new
    /// uid arrived.
    pub fn update(&self, f: impl FnOnce(&mut PodStore) -> bool) {
        let (new, revision) = {
            let mut s = self.store.write().unwrap_or_else(|p| p.into_inner());
            let new = f(&mut s);
            (new, s.revision)
        };
        if new {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Moves when a pod arrives or a pod's namespace, labels or owner change (lock-free, for
    /// the ring-buffer thread): decisions of the selection rules made before are stale.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Reads the store.
    pub fn read<R>(&self, f: impl FnOnce(&PodStore) -> R) -> R {
        let s = self.store.read().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// The pod of uid `uid`; a miss is counted (and logged once).
    pub fn lookup(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let (found, synced) = self.read(|s| (s.get(uid), s.synced()));
        if found.is_none() {
            if let Some(t) = &self.telemetry {
                t.incr(Counter::K8sPodNotFound);
            }
            if !self.missed_logged.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    pod_uid = uid,
                    synced,
                    "a process's pod is not (yet) known to the pod watch: its spans carry only \
                     procfs metadata until it is (logged once; see agent_k8s_pod_lookups_missed_total)"
                );
            }
        }
        found
    }
}
