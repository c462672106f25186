//! The pod watch against a local fake API server that speaks the real list/watch wire
//! format (Kubernetes API concepts, "Efficient detection of changes"): the real kube-rs
//! client, configured from a kubeconfig (http, no auth), lists
//! `GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a` (a PodList with
//! `metadata.resourceVersion`), then watches from that version and gets newline-delimited
//! WatchEvents. Mid-stream the server sends an ERROR event carrying a 410 Gone Status and
//! drops the connection; the client must relist. The test drives the watch stream event by
//! event and checks the store after each.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::enrich::k8s::{watch, K8sView};
use agent::telemetry::{Counter, Telemetry};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use tokio::sync::mpsc;

const DEP: &str = include_str!("../src/enrich/k8s/testdata/deployment-pod.json");
const CRON: &str = include_str!("../src/enrich/k8s/testdata/cronjob-pod.json");
const STS: &str = include_str!("../src/enrich/k8s/testdata/statefulset-pod.json");
const DEP_UID: &str = "5f2c1a9e-3b7d-4c8e-9a1f-2d6e8b4c0a17";
const CRON_UID: &str = "11111111-2222-4333-8444-555555555555";
const STS_UID: &str = "99999999-8888-4777-a666-555555555555";

fn pod_list(rv: &str, pods: &[&str]) -> String {
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        pods.join(",")
    )
}

fn event(kind: &str, object: &str) -> String {
    format!(
        "{{\"type\":\"{kind}\",\"object\":{}}}\n",
        object.replace('\n', "")
    )
}

#[derive(Default)]
struct Server {
    /// Query strings of the requests, in order.
    requests: Vec<String>,
    lists: usize,
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(
    state: Arc<Mutex<Server>>,
    first_watch: Arc<Mutex<Option<mpsc::UnboundedReceiver<Option<String>>>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let q = req.uri().query().unwrap_or_default().to_owned();
    let path = req.uri().path().to_owned();
    let mut st = state.lock().unwrap();
    st.requests.push(format!("{path}?{q}"));
    assert_eq!(path, "/api/v1/pods");
    assert!(
        q.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "node selector missing: {q}"
    );
    let json = |s: String| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(s)).boxed())
            .unwrap()
    };
    if !q.contains("watch=true") && !q.contains("watch=1") {
        st.lists += 1;
        let body = if st.lists == 1 {
            pod_list("100", &[DEP])
        } else {
            pod_list("200", &[STS, CRON])
        };
        return Ok(json(body));
    }
    if let Some(rx) = first_watch.lock().unwrap().take() {
        assert!(q.contains("resourceVersion=100"), "{q}");
        // Lines the test sends; None ends the response (the connection drops).
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Some(Some(line)) => Some((Ok(Frame::data(Bytes::from(line))), rx)),
                _ => None,
            }
        });
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap());
    }
    // Later watches: from the relist's version, quiet until the client gives up.
    assert!(q.contains("resourceVersion=200"), "{q}");
    let stream = futures_util::stream::unfold((), |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        None::<(Result<Frame<Bytes>, Infallible>, ())>
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_follows_the_watch_and_recovers_from_410() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(Server::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    let first_watch = Arc::new(Mutex::new(Some(rx)));
    {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let (state, first_watch) = (state.clone(), first_watch.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(state.clone(), first_watch.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
    }

    let dir = std::env::temp_dir().join(format!("agent-k8s-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let view = K8sView::new(None, Some(telemetry.clone()));
    tokio::spawn(watch::run(
        client,
        "node-a".into(),
        view.clone(),
        telemetry.clone(),
    ));

    // The list.
    wait_until("initial list", || {
        view.read(|s| s.synced() && s.is_live(DEP_UID))
    })
    .await;
    let g = view.generation();
    // ADDED.
    let cron = CRON.replace(
        "\"resourceVersion\": \"99\"",
        "\"resourceVersion\": \"101\"",
    );
    tx.send(Some(event("ADDED", &cron))).unwrap();
    wait_until("ADDED", || view.read(|s| s.is_live(CRON_UID))).await;
    assert!(view.generation() > g, "a new pod moves the generation");
    // MODIFIED: a label change reaches the store.
    let modified = DEP
        .replace(
            "\"resourceVersion\": \"184467\"",
            "\"resourceVersion\": \"102\"",
        )
        .replace(
            "\"app.kubernetes.io/name\": \"checkout\"",
            "\"app.kubernetes.io/name\": \"checkout-v2\"",
        );
    tx.send(Some(event("MODIFIED", &modified))).unwrap();
    wait_until("MODIFIED", || {
        view.read(|s| {
            s.get(DEP_UID)
                .is_some_and(|p| p.service_name(None).as_deref() == Some("checkout-v2"))
        })
    })
    .await;
    // BOOKMARK: only a resourceVersion, no change.
    tx.send(Some(event(
        "BOOKMARK",
        r#"{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"103"}}"#,
    )))
    .unwrap();
    // DELETED: kept for the grace period, no longer live.
    tx.send(Some(event(
        "DELETED",
        &modified.replace("\"102\"", "\"104\""),
    )))
    .unwrap();
    wait_until("DELETED", || {
        view.read(|s| !s.is_live(DEP_UID) && s.get(DEP_UID).is_some())
    })
    .await;
    // 410 Gone mid-stream, then the connection drops: the client must relist.
    tx.send(Some(event(
        "ERROR",
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 100 (150)","reason":"Expired","code":410}"#,
    )))
    .unwrap();
    // The client may have dropped the stream on the 410 already (then the receiver is gone
    // and this send fails); either way the connection ends.
    let _ = tx.send(None);
    wait_until("relist after 410", || view.read(|s| s.is_live(STS_UID))).await;
    view.read(|s| {
        assert!(s.is_live(CRON_UID), "in the relist");
        assert!(!s.is_live(DEP_UID), "not in the relist");
    });
    assert!(telemetry.get(Counter::K8sWatchRestarts) >= 1, "410 counted");
    let st = state.lock().unwrap();
    assert_eq!(st.lists, 2, "listed again after 410: {:?}", st.requests);
    drop(st);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_counted_and_retried() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let view = K8sView::new(None, Some(telemetry.clone()));
    let task = tokio::spawn(watch::run(
        client,
        "node-a".into(),
        view.clone(),
        telemetry.clone(),
    ));
    wait_until("two restarts (the backoff retries)", || {
        telemetry.get(Counter::K8sWatchRestarts) >= 2
    })
    .await;
    assert!(!task.is_finished(), "the watch keeps trying");
    view.read(|s| assert!(s.is_empty() && !s.synced()));
    task.abort();
}
