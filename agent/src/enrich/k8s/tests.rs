//! Pod objects → attributes, the service.name order, owner resolution, the store's life
//! cycle and the rebuild of a resource once its pod arrives. The fixtures in `testdata/` are
//! written by hand after the Kubernetes API reference's Pod (v1 core), not from our structs.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::meta::{split_image, strip_runtime_prefix};
use super::*;
use crate::enrich::fake_proc::FakeProc;
use crate::enrich::ResourceCache;
use crate::span::model::{AttrValue, Resource};

fn pod(name: &str) -> Pod {
    let text = match name {
        "deployment" => include_str!("testdata/deployment-pod.json"),
        "cronjob" => include_str!("testdata/cronjob-pod.json"),
        "statefulset" => include_str!("testdata/statefulset-pod.json"),
        "daemonset" => include_str!("testdata/daemonset-pending-pod.json"),
        _ => unreachable!(),
    };
    serde_json::from_str(text).expect("fixture parses as a Pod")
}

fn meta(name: &str) -> PodMeta {
    PodMeta::from_pod(&pod(name)).expect("has a uid")
}

const APP_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DEP_UID: &str = "5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17";

fn s(v: &str) -> Option<AttrValue> {
    Some(AttrValue::Str(v.to_owned()))
}

fn attr<'a>(r: &'a Resource, k: &str) -> Option<&'a AttrValue> {
    r.get(k)
}

#[test]
fn deployment_pod_maps_to_the_conventions_attributes() {
    let m = meta("deployment");
    assert_eq!(m.uid, DEP_UID);
    assert_eq!(
        (m.namespace.as_str(), m.name.as_str()),
        ("shop", "checkout-7d9f8b6c5d-x2k4p")
    );
    assert_eq!(m.node.as_deref(), Some("node-a"));
    assert_eq!(m.owners.replicaset.as_deref(), Some("checkout-7d9f8b6c5d"));
    assert_eq!(m.owners.deployment.as_deref(), Some("checkout"));
    // Only the kept labels: not `team`.
    assert!(m.labels.iter().all(|(k, _)| *k != "team"));
    let app = m.container(APP_ID).expect("runtime prefix stripped");
    assert_eq!(app.name, "app");
    assert_eq!(
        app.image_name.as_deref(),
        Some("registry.example.com:5000/shop/checkout")
    );
    assert_eq!(app.image_tag.as_deref(), Some("3.4.1"));
    let envoy = m
        .container("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210")
        .unwrap();
    assert_eq!(envoy.image_name.as_deref(), Some("envoyproxy/envoy"));
    assert_eq!(envoy.image_tag, None, "a digest is not a tag");
    let attrs = m.attributes(Some(app), Some("prod-eu"));
    let r = Resource { attributes: attrs };
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x2k4p"),
        ("k8s.node.name", "node-a"),
        ("k8s.cluster.name", "prod-eu"),
        ("k8s.container.name", "app"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.replicaset.name", "checkout-7d9f8b6c5d"),
        (
            "container.image.name",
            "registry.example.com:5000/shop/checkout",
        ),
        ("container.image.tag", "3.4.1"),
    ] {
        assert_eq!(attr(&r, k), s(v).as_ref(), "{k}");
    }
    assert_eq!(attr(&r, "k8s.statefulset.name"), None);
    // app.kubernetes.io/name, as the instance label is absent.
    assert_eq!(m.service_name(Some(app)).as_deref(), Some("checkout"));
    assert_eq!(m.service_version(), Some("3.4.1"));
    assert_eq!(m.service_namespace(), "shop");
    assert_eq!(
        m.service_instance_id(Some(app)).as_deref(),
        Some("shop.checkout-7d9f8b6c5d-x2k4p.app")
    );
}

#[test]
fn cronjob_statefulset_daemonset_owners() {
    let c = meta("cronjob");
    assert_eq!(c.owners.job.as_deref(), Some("nightly-report-29412345"));
    assert_eq!(c.owners.cronjob.as_deref(), Some("nightly-report"));
    let cont = c
        .container("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        .unwrap();
    // The spec's image (as written) rather than the status's resolved one.
    assert_eq!(cont.image_name.as_deref(), Some("busybox"));
    assert_eq!(cont.image_tag, None);
    assert_eq!(
        c.service_name(Some(cont)).as_deref(),
        Some("nightly-report")
    );

    let st = meta("statefulset");
    assert_eq!(st.owners.statefulset.as_deref(), Some("db"));
    // Init containers are known too.
    let init = st
        .container("cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc")
        .unwrap();
    assert_eq!(
        (init.name.as_str(), init.image_tag.as_deref()),
        ("init-perms", Some("1.36"))
    );
    // The annotation beats the instance label.
    assert_eq!(st.service_name(None).as_deref(), Some("orders-store"));
    assert_eq!(st.service_namespace(), "orders");

    let ds = meta("daemonset");
    assert_eq!(ds.owners.daemonset.as_deref(), Some("log-shipper"));
    assert!(
        ds.containers.is_empty(),
        "no containerID before the container starts"
    );
    assert_eq!(ds.service_name(None).as_deref(), Some("log-shipper"));
}

#[test]
fn service_name_follows_the_semantic_conventions_order() {
    let mut m = meta("statefulset");
    let c = ContainerMeta {
        name: "ctr".into(),
        ..Default::default()
    };
    let order = [
        "orders-store", // annotation
        "orders-db",    // app.kubernetes.io/instance
        "postgresql",   // app.kubernetes.io/name
        "db",           // statefulset
        "db-0",         // pod
        "ctr",          // container
    ];
    for want in order {
        assert_eq!(m.service_name(Some(&c)).as_deref(), Some(want));
        if !m.annotations.is_empty() {
            m.annotations.clear();
        } else if m
            .labels
            .iter()
            .any(|(k, _)| *k == "app.kubernetes.io/instance")
        {
            m.labels.retain(|(k, _)| *k != "app.kubernetes.io/instance");
        } else if !m.labels.is_empty() {
            m.labels.clear();
        } else if m.owners.statefulset.is_some() {
            m.owners.statefulset = None;
        } else {
            m.name.clear();
        }
    }
    // Owners among themselves: deployment, replicaset, statefulset, daemonset, cronjob, job.
    let mut o = meta("cronjob");
    o.owners.deployment = Some("d".into());
    o.owners.replicaset = Some("rs".into());
    o.owners.statefulset = Some("ss".into());
    o.owners.daemonset = Some("ds".into());
    for (want, clear) in [
        ("d", 0),
        ("rs", 1),
        ("ss", 2),
        ("ds", 3),
        ("nightly-report", 4),
        ("nightly-report-29412345", 5),
    ] {
        assert_eq!(o.service_name(None).as_deref(), Some(want));
        let w = &mut o.owners;
        *[
            &mut w.deployment,
            &mut w.replicaset,
            &mut w.statefulset,
            &mut w.daemonset,
            &mut w.cronjob,
            &mut w.job,
        ][clear] = None;
    }
}

#[test]
fn owner_heuristics_do_not_overreach() {
    let mut p = pod("deployment");
    // A bare ReplicaSet: no pod-template-hash label, no deployment.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("pod-template-hash");
    let m = PodMeta::from_pod(&p).unwrap();
    assert_eq!(m.owners.replicaset.as_deref(), Some("checkout-7d9f8b6c5d"));
    assert_eq!(m.owners.deployment, None);
    // A Job with a short numeric suffix is not a CronJob's.
    let mut j = pod("cronjob");
    j.metadata.owner_references.as_mut().unwrap()[0].name = "migrate-42".into();
    let m = PodMeta::from_pod(&j).unwrap();
    assert_eq!(
        (m.owners.job.as_deref(), m.owners.cronjob.as_deref()),
        (Some("migrate-42"), None)
    );
    // No uid: not an API object.
    let mut n = pod("cronjob");
    n.metadata.uid = None;
    assert!(PodMeta::from_pod(&n).is_none());
}

#[test]
fn image_and_id_parsing() {
    assert_eq!(strip_runtime_prefix("containerd://abc"), "abc");
    assert_eq!(strip_runtime_prefix("cri-o://abc"), "abc");
    assert_eq!(strip_runtime_prefix("docker://abc"), "abc");
    assert_eq!(strip_runtime_prefix("abc"), "abc");
    assert_eq!(split_image("nginx"), ("nginx".into(), None));
    assert_eq!(
        split_image("nginx:1.25"),
        ("nginx".into(), Some("1.25".into()))
    );
    assert_eq!(
        split_image("localhost:5000/a/b"),
        ("localhost:5000/a/b".into(), None)
    );
    assert_eq!(
        split_image("localhost:5000/a/b:v2@sha256:00"),
        ("localhost:5000/a/b".into(), Some("v2".into()))
    );
}

#[test]
fn store_follows_add_modify_delete_and_relist() {
    let view = K8sView::new(None, None);
    let t0 = Instant::now();
    let g0 = view.generation();
    view.update(|s| s.upsert(meta("deployment"), t0));
    assert_eq!(view.generation(), g0 + 1, "a new uid moves the generation");
    let mut changed = meta("deployment");
    changed.labels.clear();
    view.update(|s| s.upsert(changed, t0));
    assert_eq!(view.generation(), g0 + 1, "a modification does not");
    assert!(view.lookup(DEP_UID).unwrap().labels.is_empty());
    view.update(|s| {
        s.delete(DEP_UID, t0);
        false
    });
    // Deleted pods stay for the grace period, then go.
    view.read(|s| assert!(s.get(DEP_UID).is_some() && !s.is_live(DEP_UID)));
    view.update(|s| {
        s.expire(t0 + DELETED_GRACE + Duration::from_secs(1));
        false
    });
    assert!(view.lookup(DEP_UID).is_none());
    // A relist marks the missing as deleted and adds the new.
    view.update(|s| s.replace(vec![meta("cronjob")], t0));
    view.update(|s| s.replace(vec![meta("statefulset")], t0));
    view.read(|s| {
        assert!(s.synced());
        assert!(s.is_live("99999999-8888-4777-a666-555555555555"));
        assert!(!s.is_live("11111111-2222-4333-8444-555555555555"));
        assert_eq!(s.len(), 2);
    });
}

#[test]
fn store_is_bounded_and_reports_its_size() {
    let view = K8sView::new(None, None);
    let now = Instant::now();
    let base = meta("deployment");
    view.update(|s| {
        for i in 0..1000 {
            let mut m = base.clone();
            m.uid = format!("{:08x}-0000-4000-8000-000000000000", i);
            m.name = format!("checkout-7d9f8b6c5d-{i:05}");
            s.upsert(m, now);
        }
        true
    });
    let bytes = view.read(|s| {
        assert_eq!(s.len(), 1000);
        s.heap_bytes()
    });
    // About 1.5 KB a pod with two containers: well under a few MB per node.
    eprintln!("store of 1000 two-container pods: ~{} KiB", bytes / 1024);
    assert!(bytes < 4 * 1024 * 1024, "{bytes}");
    view.update(|s| {
        for i in 0..(MAX_PODS + 10) {
            let mut m = base.clone();
            m.uid = format!("x{i}");
            s.upsert(m, now);
        }
        false
    });
    view.read(|s| assert_eq!(s.len(), MAX_PODS));
}

fn fake_pod_process(fake: &FakeProc, pid: u32, env: &[&str]) {
    fake.add(pid, Some("/usr/bin/checkout"), &["checkout"], env);
    fake.set_cgroup(
        pid,
        &format!("0::/kubepods/besteffort/pod{DEP_UID}/{APP_ID}\n"),
    );
}

#[test]
fn resource_gets_pod_metadata_and_is_rebuilt_when_the_pod_arrives() {
    let fake = FakeProc::new();
    fake_pod_process(&fake, 10, &[]);
    fake_pod_process(&fake, 11, &["OTEL_SERVICE_NAME=from-env"]);
    let view = K8sView::new(Some("c1".into()), None);
    let mut cache = ResourceCache::with_proc_root("node-a".into(), 8, fake.root().to_owned());
    cache.set_k8s(view.clone());
    // Before the watch syncs: procfs metadata, and the entry is marked for a rebuild.
    let r = cache.get(10);
    assert_eq!(r.get("service.name"), s("checkout").as_ref());
    assert_eq!(r.get("k8s.pod.uid"), s(DEP_UID).as_ref());
    assert_eq!(r.get("k8s.pod.name"), None);
    assert!(cache.contains(10), "nothing new yet: no re-read");
    view.update(|st| st.upsert(meta("deployment"), Instant::now()));
    assert!(
        !cache.contains(10),
        "the pod arrived: the pipeline re-reads it"
    );
    // The pipeline's re-read (a miss path here: forget + get does the same read).
    cache.forget(10);
    let r = cache.get(10);
    assert!(cache.contains(10));
    for (k, v) in [
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("service.version", "3.4.1"),
        ("service.instance.id", "shop.checkout-7d9f8b6c5d-x2k4p.app"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x2k4p"),
        ("k8s.namespace.name", "shop"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.container.name", "app"),
        ("k8s.cluster.name", "c1"),
        ("k8s.pod.uid", DEP_UID),
        ("container.id", APP_ID),
        ("process.executable.name", "checkout"),
    ] {
        assert_eq!(r.get(k), s(v).as_ref(), "{k}");
    }
    // The process's own OTEL_SERVICE_NAME wins over the pod's names.
    let r = cache.get(11);
    assert_eq!(r.get("service.name"), s("from-env").as_ref());
    assert_eq!(
        r.get("k8s.pod.name"),
        s("checkout-7d9f8b6c5d-x2k4p").as_ref()
    );
}

#[test]
fn enabled_switch_and_node_name() {
    use crate::config::{K8sEnabled, KubernetesConfig};
    use watch::{decide, node_name, Decision};
    let none = |_: &str| None;
    let in_k8s = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_owned());
    let mut cfg = KubernetesConfig::default();
    assert!(matches!(decide(&cfg, none), Decision::Off(_)));
    assert_eq!(decide(&cfg, in_k8s), Decision::InCluster);
    cfg.kubeconfig = Some("/k".into());
    assert_eq!(decide(&cfg, none), Decision::Kubeconfig("/k".into()));
    cfg.enabled = K8sEnabled::False;
    assert!(matches!(decide(&cfg, in_k8s), Decision::Off(_)));
    cfg = KubernetesConfig {
        enabled: K8sEnabled::True,
        ..Default::default()
    };
    assert_eq!(decide(&cfg, none), Decision::InCluster);
    let env = |k: &str| (k == "NODE_NAME").then(|| "node-env".to_owned());
    assert_eq!(node_name(&cfg, env, "host"), "node-env");
    assert_eq!(node_name(&cfg, none, "host"), "host");
    cfg.node_name = Some("cfg".into());
    assert_eq!(node_name(&cfg, env, "host"), "cfg");
}

#[test]
fn traced_protocols_are_decided_per_process_and_redecided_on_changes() {
    use crate::config::Config;
    use crate::selection::{ProtocolSet, SelectionHandle, Selector};
    let rules =
        |y: &str| Selector::compile(&Config::from_yaml(y, "t").unwrap().selection, None).unwrap();
    let fake = FakeProc::new();
    fake_pod_process(&fake, 10, &[]);
    fake.add(20, Some("/usr/bin/hostd"), &["hostd"], &[]);
    let view = K8sView::new(None, None);
    let sel = SelectionHandle::new(rules(
        "selection: {rules: [{namespaces: [shop], protocols: [postgres]}, {host: true, protocols: [none]}]}",
    ));
    let mut cache = ResourceCache::with_proc_root("n".into(), 8, fake.root().to_owned());
    cache.set_k8s(view.clone());
    cache.set_selection(sel.clone());
    assert_eq!(
        cache.protocols(10),
        ProtocolSet::ALL,
        "not read yet: traced"
    );
    cache.get(10);
    cache.get(20);
    assert_eq!(
        cache.protocols(10),
        ProtocolSet::ALL,
        "pod not known to the watch yet"
    );
    assert_eq!(cache.protocols(20), ProtocolSet::NONE, "host rule");
    view.update(|st| st.upsert(meta("deployment"), Instant::now()));
    assert!(!cache.contains(10), "its pod arrived: decided again");
    assert!(
        cache.contains(20),
        "a host process does not care about pods"
    );
    cache.forget(10);
    cache.get(10);
    assert_eq!(cache.protocols(10), ProtocolSet::POSTGRES);
    // A label change of the pod (MODIFIED) makes the decision stale too; an unchanged
    // resend does not.
    view.update(|st| st.upsert(meta("deployment"), Instant::now()));
    assert!(cache.contains(10), "same pod again: nothing to redo");
    let mut relabelled = meta("deployment");
    relabelled
        .selector_labels
        .push(("zz-new".into(), "1".into()));
    view.update(|st| st.upsert(relabelled, Instant::now()));
    assert!(!cache.contains(10));
    cache.forget(10);
    cache.get(10);
    // New rules: every decision is stale.
    sel.replace(rules(
        "selection: {rules: [{namespaces: ['sh*'], protocols: [none]}]}",
    ));
    assert!(!cache.contains(10) && !cache.contains(20));
    cache.forget(10);
    cache.forget(20);
    cache.get(10);
    cache.get(20);
    assert_eq!(cache.protocols(10), ProtocolSet::NONE);
    assert_eq!(cache.protocols(20), ProtocolSet::ALL);
}
