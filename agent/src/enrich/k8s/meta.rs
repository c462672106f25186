//! What the agent keeps of a Pod object: [`PodMeta`], built from the API's `Pod` by
//! [`PodMeta::from_pod`], and the resource attributes it yields ([`PodMeta::attributes`]).
//!
//! Pure: no API calls, no store. Only the labels and annotations that feed resource
//! attributes are kept (memory is bounded per pod, and labels can carry anything).
//!
//! Owner resolution is by name, without reading the owners (the choice many agents and the
//! Collector's k8sattributes processor make; it needs no extra API calls, caches or RBAC):
//! - a ReplicaSet owner of a pod that carries the `pod-template-hash` label is a Deployment's:
//!   the Deployment controller names the ReplicaSet `<deployment>-<pod-template-hash>`, so the
//!   deployment name is the ReplicaSet name minus `-<hash>`. A bare ReplicaSet (no label, or a
//!   name that does not end in the hash) has no deployment.
//! - a Job owner whose name is `<name>-<digits>` with at least 8 digits is taken as created by
//!   the CronJob `<name>`: the CronJob controller names its Jobs `<cronjob>-<scheduled time in
//!   minutes since the epoch>` (8 digits since 1973). A Job someone named `backup-20260101`
//!   is misread as CronJob `backup`; reading the Job's ownerReferences (RBAC allows `get` on
//!   jobs) would settle it, at an API call per Job.
//! - StatefulSet, DaemonSet and Job owners are taken as they are.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::enrich::process::MAX_VALUE_LEN;
use crate::span::model::Attribute;

/// The annotation the semantic conventions give for a pod's `service.name` (and siblings).
pub const ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";
/// Labels kept (well-known labels, see kubernetes.io "Well-Known Labels").
const KEPT_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
    "pod-template-hash",
];
/// `resource.opentelemetry.io/<key>` annotations kept (attribute keys are `&'static str`).
const KEPT_ANNOTATIONS: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
];
/// Containers kept per pod (a pod has a handful; this bounds a hostile one).
const MAX_CONTAINERS: usize = 64;
/// Labels kept per pod for `selection.rules[].pod_labels` (bounds memory; a pod with more
/// keeps the first ones in key order).
pub const MAX_SELECTOR_LABELS: usize = 64;

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub image_name: Option<String>,
    pub image_tag: Option<String>,
}

/// The workload that owns a pod, resolved as the module documentation says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    pub replicaset: Option<String>,
    pub deployment: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

/// What the agent keeps of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    /// Only [`KEPT_LABELS`].
    pub labels: Vec<(&'static str, String)>,
    /// Only `resource.opentelemetry.io/` + [`KEPT_ANNOTATIONS`], keyed by the part after the
    /// prefix.
    pub annotations: Vec<(&'static str, String)>,
    pub owners: Owners,
    /// Every label (at most [`MAX_SELECTOR_LABELS`], values bounded), sorted by key, for the
    /// selection rules' `pod_labels` (which may name any label, and change on reload).
    pub selector_labels: Vec<(String, String)>,
    /// By container id (64 hex digits, the runtime prefix `containerd://` etc. removed), from
    /// `status.containerStatuses` (and init and ephemeral containers').
    pub containers: HashMap<String, ContainerMeta>,
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_VALUE_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>`.
pub fn strip_runtime_prefix(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// `registry:5000/team/app:1.2@sha256:…` → (`registry:5000/team/app`, `1.2`). The digest is
/// dropped; a reference without a tag has none (the runtime's implied `latest` is not
/// claimed).
pub fn split_image(image: &str) -> (String, Option<String>) {
    let image = image.split_once('@').map_or(image, |(n, _)| n);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (bounded(&image[..at]), Some(bounded(&image[at + 1..])))
        }
        None => (bounded(image), None),
    }
}

fn resolve_owners(pod: &Pod, labels: &[(&'static str, String)]) -> Owners {
    let mut o = Owners::default();
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    // The controller reference decides; a pod has at most one.
    let Some(owner) = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
    else {
        return o;
    };
    let name = bounded(&owner.name);
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = labels
                .iter()
                .find(|(k, _)| *k == "pod-template-hash")
                .map(|(_, v)| v.as_str());
            if let Some(hash) = hash {
                if let Some(dep) = name
                    .strip_suffix(hash)
                    .and_then(|n| n.strip_suffix('-'))
                    .filter(|n| !n.is_empty())
                {
                    o.deployment = Some(dep.to_owned());
                }
            }
            o.replicaset = Some(name);
        }
        "StatefulSet" => o.statefulset = Some(name),
        "DaemonSet" => o.daemonset = Some(name),
        "Job" => {
            if let Some((cron, digits)) = name.rsplit_once('-') {
                if digits.len() >= 8
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !cron.is_empty()
                {
                    o.cronjob = Some(cron.to_owned());
                }
            }
            o.job = Some(name);
        }
        _ => {}
    }
    o
}

impl PodMeta {
    /// `None` for a pod without a uid (not a real API object).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let m = &pod.metadata;
        let uid = m.uid.as_deref().filter(|u| !u.is_empty())?;
        let labels: Vec<(&'static str, String)> = KEPT_LABELS
            .iter()
            .filter_map(|&k| {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .map(|v| (k, bounded(v)))
            })
            .collect();
        let annotations = KEPT_ANNOTATIONS
            .iter()
            .filter_map(|&k| {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get(&format!("{ANNOTATION_PREFIX}{k}")))
                    .filter(|v| !v.is_empty())
                    .map(|v| (k, bounded(v)))
            })
            .collect();
        let owners = resolve_owners(pod, &labels);
        // BTreeMap iterates in key order: the kept ones are deterministic.
        let selector_labels = m
            .labels
            .iter()
            .flatten()
            .take(MAX_SELECTOR_LABELS)
            .map(|(k, v)| (bounded(k), bounded(v)))
            .collect();
        // The spec's image is what the user wrote (`nginx:1.25`); the status's may be resolved
        // to a digest (`docker.io/library/nginx@sha256:…`), which has no tag.
        let spec_image = |name: &str| -> Option<String> {
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .and_then(|c| c.image.clone())
        };
        let mut containers = HashMap::new();
        if let Some(status) = &pod.status {
            let all = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .chain(status.ephemeral_container_statuses.iter().flatten());
            for cs in all.take(MAX_CONTAINERS) {
                let Some(id) = cs.container_id.as_deref() else {
                    continue; // not started yet
                };
                let id = strip_runtime_prefix(id);
                if id.is_empty() {
                    continue;
                }
                let image = spec_image(&cs.name).unwrap_or_else(|| cs.image.clone());
                let (image_name, image_tag) = if image.is_empty() {
                    (None, None)
                } else {
                    let (n, t) = split_image(&image);
                    (Some(n), t)
                };
                containers.insert(
                    bounded(id),
                    ContainerMeta {
                        name: bounded(&cs.name),
                        image_name,
                        image_tag,
                    },
                );
            }
        }
        Some(Self {
            uid: bounded(uid),
            namespace: bounded(m.namespace.as_deref().unwrap_or("default")),
            name: bounded(m.name.as_deref().unwrap_or_default()),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .map(bounded),
            labels,
            annotations,
            owners,
            selector_labels,
            containers,
        })
    }

    /// The value of label `key` (any label, see [`Self::selector_labels`]).
    pub fn selector_label(&self, key: &str) -> Option<&str> {
        self.selector_labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.selector_labels[i].1.as_str())
    }

    /// The name of the workload that owns the pod: its Deployment, StatefulSet, DaemonSet,
    /// CronJob or Job, else a bare ReplicaSet.
    pub fn owner_name(&self) -> Option<&str> {
        let o = &self.owners;
        o.deployment
            .as_deref()
            .or(o.statefulset.as_deref())
            .or(o.daemonset.as_deref())
            .or(o.cronjob.as_deref())
            .or(o.job.as_deref())
            .or(o.replicaset.as_deref())
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of annotation `resource.opentelemetry.io/<key>`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The container of id `container_id` (bare 64 hex).
    pub fn container(&self, container_id: &str) -> Option<&ContainerMeta> {
        self.containers.get(container_id)
    }

    /// `service.name` for container `container` of this pod, in the order of the semantic
    /// conventions (docs/non-normative/k8s-attributes.md, "How service.name should be
    /// calculated"): the annotation, `app.kubernetes.io/instance`, `app.kubernetes.io/name`,
    /// the deployment, replicaset, statefulset, daemonset, cronjob, job, the pod, the container.
    /// The pod always has a name, so the container's is the last resort of a nameless object.
    pub fn service_name(&self, container: Option<&ContainerMeta>) -> Option<String> {
        let o = &self.owners;
        self.annotation("service.name")
            .or_else(|| self.label("app.kubernetes.io/instance"))
            .or_else(|| self.label("app.kubernetes.io/name"))
            .or(o.deployment.as_deref())
            .or(o.replicaset.as_deref())
            .or(o.statefulset.as_deref())
            .or(o.daemonset.as_deref())
            .or(o.cronjob.as_deref())
            .or(o.job.as_deref())
            .or(Some(self.name.as_str()).filter(|n| !n.is_empty()))
            .or(container.map(|c| c.name.as_str()).filter(|n| !n.is_empty()))
            .map(str::to_owned)
    }

    /// `service.namespace`: the annotation, else the pod's namespace.
    pub fn service_namespace(&self) -> &str {
        self.annotation("service.namespace")
            .unwrap_or(self.namespace.as_str())
    }

    /// `service.version`: the annotation, else `app.kubernetes.io/version`. (The conventions'
    /// last rule, the image tag and digest, is left out: a tag is not a version of the code.)
    pub fn service_version(&self) -> Option<&str> {
        self.annotation("service.version")
            .or_else(|| self.label("app.kubernetes.io/version"))
    }

    /// `service.instance.id`: the annotation, else `<namespace>.<pod>.<container>` (the
    /// conventions' rule); `None` when the container is not known.
    pub fn service_instance_id(&self, container: Option<&ContainerMeta>) -> Option<String> {
        self.annotation("service.instance.id")
            .map(str::to_owned)
            .or_else(|| container.map(|c| format!("{}.{}.{}", self.namespace, self.name, c.name)))
    }

    /// The `k8s.*` and `container.image.*` attributes of this pod's container `container`
    /// (not `k8s.pod.uid`, which the cgroup path gave already, nor `service.*`).
    pub fn attributes(
        &self,
        container: Option<&ContainerMeta>,
        cluster: Option<&str>,
    ) -> Vec<Attribute> {
        let mut a = vec![
            Attribute::new("k8s.namespace.name", self.namespace.as_str()),
            Attribute::new("k8s.pod.name", self.name.as_str()),
        ];
        if let Some(n) = &self.node {
            a.push(Attribute::new("k8s.node.name", n.as_str()));
        }
        if let Some(c) = cluster {
            a.push(Attribute::new("k8s.cluster.name", c));
        }
        if let Some(c) = container {
            a.push(Attribute::new("k8s.container.name", c.name.as_str()));
            if let Some(n) = &c.image_name {
                a.push(Attribute::new("container.image.name", n.as_str()));
            }
            if let Some(t) = &c.image_tag {
                a.push(Attribute::new("container.image.tag", t.as_str()));
            }
        }
        let o = &self.owners;
        for (key, v) in [
            ("k8s.deployment.name", &o.deployment),
            ("k8s.replicaset.name", &o.replicaset),
            ("k8s.statefulset.name", &o.statefulset),
            ("k8s.daemonset.name", &o.daemonset),
            ("k8s.cronjob.name", &o.cronjob),
            ("k8s.job.name", &o.job),
        ] {
            if let Some(v) = v {
                a.push(Attribute::new(key, v.as_str()));
            }
        }
        a
    }

    /// Rough heap bytes held (for the store's accounting and the report in the tests).
    pub fn heap_bytes(&self) -> usize {
        let s = |x: &String| x.capacity();
        let so = |x: &Option<String>| x.as_ref().map_or(0, String::capacity);
        let o = &self.owners;
        s(&self.uid)
            + s(&self.namespace)
            + s(&self.name)
            + so(&self.node)
            + self
                .labels
                .iter()
                .map(|(_, v)| v.capacity() + 24)
                .sum::<usize>()
            + self
                .annotations
                .iter()
                .map(|(_, v)| v.capacity() + 24)
                .sum::<usize>()
            + self
                .selector_labels
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity() + 48)
                .sum::<usize>()
            + [
                &o.replicaset,
                &o.deployment,
                &o.statefulset,
                &o.daemonset,
                &o.job,
                &o.cronjob,
            ]
            .iter()
            .map(|x| so(x))
            .sum::<usize>()
            + self
                .containers
                .iter()
                .map(|(k, c)| k.capacity() + s(&c.name) + so(&c.image_name) + so(&c.image_tag) + 96)
                .sum::<usize>()
    }
}
