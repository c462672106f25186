//! The Pod watch: decides whether to run ([`decide`]), connects (in-cluster service account,
//! or a kubeconfig file), and keeps [`super::PodStore`] in step with the API server's pods of
//! this node, as a tokio task.
//!
//! kube-rs's `watcher` lists then watches, relists when the server answers 410 Gone (the
//! resourceVersion is too old) or the stream ends, and `default_backoff` spaces retries after
//! errors (an unreachable API server). Each error is a restart here: counted
//! (`agent_k8s_watch_restarts_total`) and logged at most once a minute. The agent traces all
//! along; the store just stays as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};

use super::{K8sView, PodMeta};
use crate::config::{K8sEnabled, KubernetesConfig};
use crate::telemetry::{Counter, Telemetry};

/// Why the Kubernetes metadata is off, or where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Off(&'static str),
    /// In-cluster (service account and `KUBERNETES_SERVICE_HOST`).
    InCluster,
    /// A kubeconfig file.
    Kubeconfig(PathBuf),
}

/// Whether to watch pods: `enabled: false` never; `auto` only inside Kubernetes
/// (`KUBERNETES_SERVICE_HOST` set) or with a kubeconfig configured; `true` always (in-cluster
/// settings unless a kubeconfig is given).
pub fn decide(cfg: &KubernetesConfig, env: impl Fn(&str) -> Option<String>) -> Decision {
    if cfg.enabled == K8sEnabled::False {
        return Decision::Off("kubernetes.enabled is false");
    }
    if let Some(p) = &cfg.kubeconfig {
        return Decision::Kubeconfig(p.clone());
    }
    let in_cluster = env("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty());
    if in_cluster || cfg.enabled == K8sEnabled::True {
        Decision::InCluster
    } else {
        Decision::Off("not in Kubernetes (no KUBERNETES_SERVICE_HOST, no kubernetes.kubeconfig)")
    }
}

/// The node whose pods are watched: `kubernetes.node_name`, else `$NODE_NAME` (the DaemonSet
/// sets it from `spec.nodeName`), else the host name.
pub fn node_name(
    cfg: &KubernetesConfig,
    env: impl Fn(&str) -> Option<String>,
    host: &str,
) -> String {
    cfg.node_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| env("NODE_NAME").filter(|n| !n.is_empty()))
        .unwrap_or_else(|| host.to_owned())
}

/// Why the API client could not be configured (the metadata is then off, said once).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Off(&'static str),
    #[error("in-cluster configuration: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("{path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(transparent)]
    Client(#[from] kube::Error),
}

async fn client(decision: &Decision) -> Result<Client, ClientError> {
    let config = match decision {
        Decision::Off(why) => return Err(ClientError::Off(why)),
        Decision::InCluster => kube::Config::incluster()?,
        Decision::Kubeconfig(p) => {
            let bad = |source| ClientError::Kubeconfig {
                path: p.clone(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(p).map_err(bad)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(bad)?
        }
    };
    Ok(Client::try_from(config)?)
}

/// Starts the watch as a tokio task when the config and environment say so; the view is
/// returned either way when it runs, `None` (logged once) when it is off.
pub async fn start(
    cfg: &KubernetesConfig,
    host: &str,
    telemetry: Arc<Telemetry>,
) -> Option<K8sView> {
    let env = |k: &str| std::env::var(k).ok();
    let decision = decide(cfg, env);
    if let Decision::Off(why) = &decision {
        tracing::info!("Kubernetes metadata off: {why}");
        return None;
    }
    let node = node_name(cfg, env, host);
    let client = match client(&decision).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("Kubernetes metadata off: cannot configure the API client: {e}");
            return None;
        }
    };
    let view = K8sView::new(cfg.cluster_name.clone(), Some(telemetry.clone()));
    tracing::info!("Kubernetes metadata on: watching the pods of node {node:?}");
    tokio::spawn(run(client, node, view.clone(), telemetry));
    Some(view)
}

/// Follows the pods of `node` into `view` until the runtime ends.
pub async fn run(client: Client, node: String, view: K8sView, telemetry: Arc<Telemetry>) {
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
    let mut relist: Vec<PodMeta> = Vec::new();
    let mut last_log: Option<Instant> = None;
    while let Some(ev) = stream.next().await {
        let now = Instant::now();
        match ev {
            Ok(Event::Apply(pod)) => {
                if let Some(m) = PodMeta::from_pod(&pod) {
                    view.update(|s| s.upsert(m, now));
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    view.update(|s| {
                        s.delete(uid, now);
                        false
                    });
                }
            }
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(m) = PodMeta::from_pod(&pod) {
                    if relist.len() < super::MAX_PODS {
                        relist.push(m);
                    }
                }
            }
            Ok(Event::InitDone) => {
                let pods = std::mem::take(&mut relist);
                let n = pods.len();
                view.update(|s| s.replace(pods, now));
                tracing::debug!("pod watch (re)listed {n} pods of node {node:?}");
            }
            Err(e) => {
                telemetry.incr(Counter::K8sWatchRestarts);
                if last_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
                    last_log = Some(now);
                    tracing::warn!(
                        "pod watch failed, retrying with backoff (spans keep procfs metadata; \
                         see agent_k8s_watch_restarts_total): {e}"
                    );
                }
            }
        }
    }
}
