use super::*;
use crate::config::Config;
use crate::enrich::k8s::meta::Owners;
use crate::protocol::ProtocolId;

fn cfg(yaml: &str) -> Result<Selector, String> {
    let c = Config::from_yaml(yaml, "t.yaml").map_err(|e| e.to_string())?;
    Selector::compile(&c.selection, Some("observability")).map_err(|e| e.to_string())
}

fn pod(ns: &str, labels: &[(&str, &str)], deployment: Option<&str>) -> PodMeta {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    PodMeta {
        uid: "u".into(),
        namespace: ns.into(),
        name: "p".into(),
        selector_labels: l,
        owners: Owners {
            deployment: deployment.map(str::to_owned),
            replicaset: deployment.map(|d| format!("{d}-7d9f")),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn globs() {
    let g = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
    assert!(g("shop-*", "shop-eu"));
    assert!(g("shop-*", "shop-"));
    assert!(!g("shop-*", "shop"));
    assert!(g("*", ""));
    assert!(g("a?c", "abc"));
    assert!(!g("a?c", "ac"));
    assert!(g("*-prod", "eu-shop-prod"));
    assert!(g("*a*b*", "xxaxxbxx"));
    assert!(!g("*a*b", "xxaxxbxx"));
    assert!(g("exact", "exact"));
    assert!(!g("exact", "exactly"));
}

#[test]
fn defaults_exclude_system_and_own_namespace_and_trace_the_rest() {
    let s = cfg("").unwrap();
    let none = ProtocolSet::NONE;
    assert_eq!(
        s.decide(Workload::Pod(&pod("kube-system", &[], None))),
        none
    );
    assert_eq!(
        s.decide(Workload::Pod(&pod("observability", &[], None))),
        none
    );
    assert_eq!(
        s.decide(Workload::Pod(&pod("shop", &[], None))),
        ProtocolSet::ALL
    );
    assert_eq!(s.decide(Workload::Host), ProtocolSet::ALL);
    assert_eq!(s.decide(Workload::UnknownPod), ProtocolSet::ALL);
    // Without $POD_NAMESPACE only kube-system is excluded.
    let s = Selector::compile(&SelectionConfig::default(), None).unwrap();
    assert_eq!(
        s.decide(Workload::Pod(&pod("observability", &[], None))),
        ProtocolSet::ALL
    );
}

#[test]
fn first_match_wins_and_rules_come_before_the_defaults() {
    let s = cfg(r#"
selection:
  rules:
    - namespaces: ["shop-*"]
      pod_labels: {tier: db}
      protocols: [postgres]
    - namespaces: ["shop-*"]
      protocols: [http, http2, postgres, amqp]
    - namespaces: [kube-system]
      owner: "core*"
      protocols: [all]
    - host: true
      protocols: [none]
"#)
    .unwrap();
    let db = pod("shop-eu", &[("tier", "db"), ("app", "pg")], None);
    assert_eq!(s.decide(Workload::Pod(&db)), ProtocolSet::POSTGRES);
    let web = pod("shop-eu", &[("tier", "web")], Some("front"));
    let d = s.decide(Workload::Pod(&web));
    assert!(d.allows(ProtocolId::Http1, false));
    assert!(d.allows(ProtocolId::Http2, false));
    assert!(
        !d.allows(ProtocolId::Http1, true),
        "no tls: TLS plaintext not traced"
    );
    let dns = pod("kube-system", &[], Some("coredns"));
    assert_eq!(s.decide(Workload::Pod(&dns)), ProtocolSet::ALL);
    let proxy = pod("kube-system", &[], Some("kube-proxy"));
    assert_eq!(
        s.decide(Workload::Pod(&proxy)),
        ProtocolSet::NONE,
        "built-in default"
    );
    assert_eq!(s.decide(Workload::Host), ProtocolSet::NONE);
    assert_eq!(
        s.decide(Workload::Pod(&pod("other", &[], None))),
        ProtocolSet::ALL
    );
}

#[test]
fn protocol_sets() {
    let all = ProtocolSet::ALL;
    for p in ProtocolId::ALL {
        assert!(all.allows(*p, true) && all.allows(*p, false));
        assert!(!ProtocolSet::NONE.allows(*p, false));
    }
    let grpc = ProtocolSet::from_name("grpc").unwrap();
    assert_eq!(grpc, ProtocolSet::from_name("http2").unwrap());
    assert!(grpc.allows(ProtocolId::Http2, false));
    assert!(!grpc.allows(ProtocolId::Http1, false));
    let s = ProtocolSet::HTTP1.union(ProtocolSet::TLS);
    assert!(s.allows(ProtocolId::Http1, true));
    assert_eq!(s.describe(), "http1,tls");
    assert_eq!(ProtocolSet::ALL.describe(), "all");
}

#[test]
fn errors_name_the_field() {
    let e = |y: &str| cfg(y).unwrap_err();
    let m = e(r#"
selection:
  rules:
    - {namespaces: [a], protocols: [all]}
    - {namespaces: [b], protocols: [all]}
    - {namespaces: [c], protocols: [htttp]}
"#);
    assert!(
        m.contains(r#"selection.rules[2].protocols[0]: unknown protocol "htttp"; expected one of all, none, http, grpc, http1, http2, postgres, amqp, tls"#),
        "{m}"
    );
    let m = e("selection: {rules: [{namespaces: ['Shop_*'], protocols: [all]}]}");
    assert!(
        m.contains("selection.rules[0].namespaces[0]") && m.contains("Shop_*"),
        "{m}"
    );
    let m = e("selection: {rules: [{namespaces: [''], protocols: [all]}]}");
    assert!(
        m.contains("selection.rules[0].namespaces[0]: empty pattern"),
        "{m}"
    );
    let m = e("selection: {rules: [{namespaces: [a], owner: 'a[b]', protocols: [all]}]}");
    assert!(m.contains("selection.rules[0].owner"), "{m}");
    let m = e("selection: {rules: [{namespaces: [a]}]}");
    assert!(m.contains("selection.rules[0].protocols: missing"), "{m}");
    let m = e("selection: {rules: [{protocols: [all]}]}");
    assert!(m.contains("selection.rules[0].namespaces: missing"), "{m}");
    let m = e("selection: {rules: [{host: true, namespaces: [a], protocols: [all]}]}");
    assert!(m.contains("selection.rules[0].host"), "{m}");
    let m = e("selection: {rules: [{namespaces: [a], protocols: [none, http]}]}");
    assert!(m.contains("selection.rules[0].protocols[0]"), "{m}");
    let m = e(
        "selection: {rules: [{namespaces: [a], pod_labels: {'bad key!': x}, protocols: [all]}]}",
    );
    assert!(m.contains("selection.rules[0].pod_labels"), "{m}");
    let m =
        e("selection: {rules: [{namespaces: [a], pod_labels: {app: 'x y'}, protocols: [all]}]}");
    assert!(m.contains("selection.rules[0].pod_labels.app"), "{m}");
    let m = e("selection: {rules: [{namespace: [a], protocols: [all]}]}");
    assert!(m.contains("namespace"), "unknown field refused: {m}");
    // The whole config's validation reports it too.
    let c = Config::from_yaml(
        "selection: {rules: [{namespaces: [a], protocols: [x]}]}",
        "t",
    )
    .unwrap();
    let m = c.validate().unwrap_err().to_string();
    assert!(m.contains("selection.rules[0].protocols[0]"), "{m}");
}

#[test]
fn labels_of_a_real_pod_object_match() {
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"shop",
      "uid":"5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17","labels":{"tier":"web","team":"a"},
      "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"web","uid":"x","controller":true}]}}"#;
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_str(json).unwrap();
    let m = PodMeta::from_pod(&p).unwrap();
    assert_eq!(m.selector_label("tier"), Some("web"));
    assert_eq!(m.selector_label("team"), Some("a"));
    assert_eq!(m.selector_label("nope"), None);
    assert_eq!(m.owner_name(), Some("web"));
    let s = cfg("selection: {rules: [{namespaces: [shop], pod_labels: {tier: web}, owner: 'we?', protocols: [none]}]}").unwrap();
    assert_eq!(s.decide(Workload::Pod(&m)), ProtocolSet::NONE);
}

#[test]
fn handle_swaps_rules_and_bumps_its_version() {
    let h = SelectionHandle::new(Selector::default());
    assert_eq!(h.version(), 0);
    let s = cfg("selection: {rules: [{host: true, protocols: [none]}]}").unwrap();
    h.replace(s.clone());
    assert_eq!(h.version(), 1);
    assert_eq!(*h.current(), s);
}

#[test]
fn the_commented_example_rules_in_the_documented_config_are_valid() {
    let text = include_str!("../../../deploy/agent.example.yaml");
    let start = text.find("  # rules:\n").expect("example rules");
    let rules: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with("  #"))
        .map(|l| format!("  {}\n", &l[4..]))
        .collect();
    let s = cfg(&format!("selection:\n{rules}")).unwrap();
    let shop = pod("shop-eu", &[], None);
    let web = ProtocolSet::HTTP1
        .union(ProtocolSet::HTTP2)
        .union(ProtocolSet::POSTGRES)
        .union(ProtocolSet::AMQP);
    assert_eq!(s.decide(Workload::Pod(&shop)), web);
    let ledger = pod("payments", &[("app.kubernetes.io/name", "ledger")], None);
    assert_eq!(
        s.decide(Workload::Pod(&ledger)),
        ProtocolSet::POSTGRES.union(ProtocolSet::TLS)
    );
    let nightly = pod("batch", &[], Some("nightly-report"));
    assert_eq!(s.decide(Workload::Pod(&nightly)), ProtocolSet::NONE);
    assert_eq!(s.decide(Workload::Host), ProtocolSet::NONE);
}
