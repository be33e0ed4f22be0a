//! Process wiring: connects to Kubernetes and LiteLLM, checks the CRD is installed, serves health and metrics,
//! optionally waits for leadership, and runs one controller per watched namespace (or one for the whole
//! cluster) until SIGTERM or SIGINT.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller, reflector, watcher},
};
use kube_lease_manager::LeaseManagerBuilder;
use tower_http::compression::CompressionLayer;
use tracing::{error, info, warn};

use crate::{
    crd::{CachedUser, LiteLLMProxy, LiteLLMUser, ProxyPolicy},
    litellm::LiteLlmClient,
    metrics::{Metrics, Scrape},
    proxies::{self, FLAGS_PROXY, Proxy, Registry, controller::ProxyContext},
    reconcile::{self, Context, Settings, claim::Claims, events::Events, keys, secret_index::SecretIndex},
};

/// Where client-side `kubectl apply` keeps the last manifest it applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Only one replica reconciles when leader election is on: the holder of this Lease.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's name in the Lease, usually the pod name.
    pub identity: String,
    pub lease_duration: Duration,
}

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    pub settings: Settings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    pub leader_election: Option<LeaderElection>,
    /// Reconciles running at once; bounds memory and the load on the proxy.
    pub concurrency: u16,
    /// Metric series per LiteLLMUser (spend and budget).
    pub user_metrics: bool,
    /// Namespace of the claims on user ids (the operator's own namespace, where tenants cannot write).
    pub claim_namespace: String,
    /// What resources may ask of the proxy.
    pub policy: ProxyPolicy,
    /// Label selector for the LiteLLMProxy resources to serve; all when `None`.
    pub proxy_selector: Option<String>,
}

/// The namespaces to watch, from a comma-separated list: empty entries dropped, each once, and none at all
/// meaning every namespace.
pub fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let mut names: Vec<String> = namespaces.iter().map(|ns| ns.trim().to_owned()).filter(|ns| !ns.is_empty()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() { vec![None] } else { names.into_iter().map(Some).collect() }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "the LiteLLMUser CRD is not installed or not readable ({0}); install it with `litellm-operator crd | kubectl apply -f -`"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("cannot serve metrics and health on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("leader election failed: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that another replica takes over")]
    LostLeadership,
}

/// What `/readyz` reports: ready once the caches are synced (or this replica is a standby) and the proxy
/// answers.
#[derive(Default)]
struct Health {
    synced: AtomicBool,
    standby: AtomicBool,
    proxy_reachable: AtomicBool,
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn serve_http(listen: SocketAddr, state: HttpState) -> Result<(), StartError> {
    let app = http_routes(state);
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| StartError::Listen { addr: listen, source })?;
    info!(%listen, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            error!(error = %err, "health and metrics server stopped");
        }
    });
    Ok(())
}

fn http_routes(state: HttpState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { metrics_response(&s) }).layer(CompressionLayer::new()),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|State(s): State<HttpState>| async move { readiness(&s.health) }))
        .with_state(state)
}

/// `/metrics`, streamed (and gzipped when asked): with per-user series the text grows with the number of users
/// (20 MiB at 100,000), and a chunk at a time it never has to be held whole.
fn metrics_response(state: &HttpState) -> impl IntoResponse + use<> {
    let chunks = stream::iter(Scrape::new(state.metrics.clone()).map(Ok::<_, std::convert::Infallible>));
    (
        [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        axum::body::Body::from_stream(chunks),
    )
}

fn readiness(health: &Health) -> (StatusCode, &'static str) {
    let caches = health.synced.load(Ordering::Relaxed) || health.standby.load(Ordering::Relaxed);
    match (caches, health.proxy_reachable.load(Ordering::Relaxed)) {
        (true, true) => (StatusCode::OK, "ok"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet"),
        (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "LiteLLM proxy not reachable"),
    }
}

/// Runs the controllers until a shutdown signal; in-flight reconciles finish first.
pub async fn run(litellm: Option<LiteLlmClient>, config: OperatorConfig) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::new(config.user_metrics));
    let client = crate::kube_requests::counted_client(metrics.clone()).await.map_err(StartError::Kube)?;
    let litellm = litellm.map(|litellm| litellm.with_metrics(metrics.clone()));
    let health = Arc::new(Health::default());
    serve_http(config.listen, HttpState { metrics: metrics.clone(), health: health.clone() }).await?;
    match &litellm {
        Some(litellm) => drop(tokio::spawn(watch_proxy(litellm.clone(), health.clone()))),
        // Proxies given as LiteLLMProxy resources report their own reachability in their status.
        None => health.proxy_reachable.store(true, Ordering::Relaxed),
    }

    let probe: Api<LiteLLMUser> = match watch_scopes(&config.namespaces).first() {
        Some(Some(ns)) => Api::namespaced(client.clone(), ns),
        _ => Api::all(client.clone()),
    };
    probe.list(&ListParams::default().limit(1)).await.map_err(StartError::CrdMissing)?;

    let lease = match &config.leader_election {
        Some(election) => {
            health.standby.store(true, Ordering::Relaxed);
            let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
                .with_namespace(&election.lease_namespace)
                .with_identity(&election.identity)
                .with_duration(election.lease_duration.as_secs().max(2))
                .with_grace((election.lease_duration.as_secs() / 3).max(1))
                .with_field_manager(format!("{}-lease", reconcile::FIELD_MANAGER))
                .build()
                .await?;
            let (mut leader, task) = manager.watch().await;
            info!(lease = election.lease_name, identity = election.identity, "waiting to become the leader");
            while !*leader.borrow_and_update() {
                tokio::select! {
                    changed = leader.changed() => if changed.is_err() { return Err(StartError::LostLeadership) },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
            health.standby.store(false, Ordering::Relaxed);
            info!("became the leader");
            Some((leader, task))
        }
        None => None,
    };

    let controllers = run_controllers(client, litellm, &config, metrics, health);
    match lease {
        None => controllers.await,
        Some((mut leader, task)) => {
            let lost = async {
                while leader.changed().await.is_ok() {
                    if !*leader.borrow_and_update() {
                        break;
                    }
                }
            };
            tokio::select! {
                () = controllers => {
                    // Graceful shutdown: hand the lease over now instead of letting it expire.
                    drop(leader);
                    match task.await {
                        Ok(Ok(_)) => info!("released the leader lease"),
                        Ok(Err(err)) => warn!(error = %err, "could not release the leader lease"),
                        Err(err) => warn!(error = %err, "lease task failed"),
                    }
                }
                () = lost => return Err(StartError::LostLeadership),
            }
        }
    }
    info!("stopped");
    Ok(())
}

async fn run_controllers(
    client: Client,
    litellm: Option<LiteLlmClient>,
    config: &OperatorConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let instance = std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok());
    let events = Events::new(client.clone(), reconcile::FIELD_MANAGER, instance);
    let resync = config.settings.resync;
    let (caches_synced, synced) = tokio::sync::watch::channel(false);
    let flags_proxy = litellm.map(|litellm| {
        let claims = Claims::new(client.clone(), &config.claim_namespace, litellm.base_url().as_str());
        Proxy::start(FLAGS_PROXY, litellm, claims, config.policy.clone(), String::new(), resync, synced.clone())
    });
    let registry = Arc::new(Registry::new(flags_proxy));

    let scopes = watch_scopes(&config.namespaces);
    info!(scopes = ?scopes, "starting controllers");
    // Only the operator's own Secrets, and only their metadata: enough to know a Secret is where the
    // operator left it without reading it, and small enough to cache for every user.
    let secrets_config = watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY));
    let mut secret_indexes = Vec::new();
    let mut watches = Vec::new();
    for scope in scopes {
        let (users, secrets): (Api<CachedUser>, Api<PartialObjectMeta<Secret>>) = match &scope {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let index = Arc::new(SecretIndex::default());
        let indexed = index.clone();
        let secrets = watcher(secrets, secrets_config.clone().any_semantic())
            .default_backoff()
            .map_ok(move |event| {
                indexed.apply(&event);
                event
            })
            .touched_objects();
        secret_indexes.push(index);
        watches.push((users, secrets));
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        registry.clone(),
        events,
        config.settings.clone(),
        metrics.clone(),
        secret_indexes,
    ));
    let mut stores = Vec::new();
    let controllers: Vec<_> = watches
        .into_iter()
        .map(|(users, secrets)| {
            // The cache keeps every LiteLLMUser, in a compact form. Managed fields, and the copy of the whole
            // manifest that a client-side `kubectl apply` keeps in an annotation, are most of an object's size
            // and never read.
            let (reader, writer) = reflector::store();
            let users = watcher(users, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(|user| {
                    user.managed_fields_mut().clear();
                    user.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
                })
                .reflect(writer)
                .applied_objects();
            let controller = Controller::for_stream(users, reader)
                .owns_stream(secrets)
                .with_config(controller::Config::default().concurrency(config.concurrency))
                .shutdown_on_signal();
            stores.push(controller.store());
            controller.run(reconcile::reconcile_cached, reconcile::error_policy_cached, ctx.clone()).map(report).boxed()
        })
        .collect();
    ctx.quota.set_stores(stores.clone());
    let mut controllers = controllers;
    // LiteLLMProxy resources, when their CRD is installed (the proxy of the flags works without it).
    let proxies: Api<LiteLLMProxy> = Api::all(client.clone());
    match proxies.list(&ListParams::default().limit(1)).await {
        Ok(_) => {
            let proxy_ctx = Arc::new(ProxyContext {
                kube: client.clone(),
                registry,
                claim_namespace: config.claim_namespace.clone(),
                resync,
                caches_synced: synced,
                metrics,
            });
            let mut selected = watcher::Config::default().any_semantic();
            if let Some(selector) = &config.proxy_selector {
                selected = selected.labels(selector);
            }
            let proxy_controller = Controller::new(proxies, selected)
                .shutdown_on_signal()
                .run(proxies::controller::reconcile, proxies::controller::error_policy, proxy_ctx)
                .map(report)
                .boxed();
            controllers.push(proxy_controller);
        }
        Err(err) => warn!(error = %err, "LiteLLMProxy resources are not readable; serving the proxy of the flags only"),
    }
    tokio::spawn(async move {
        for store in stores {
            // kube-runtime's readiness signal wakes only the last task that polled it (the controller's own
            // runner also waits on it), so poll again every second rather than wait for a wake-up.
            loop {
                match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(err)) => {
                        warn!(error = %err, "a watch ended before its first list");
                        return;
                    }
                    Err(_) => continue,
                }
            }
        }
        health.synced.store(true, Ordering::Relaxed);
        caches_synced.send_replace(true);
        info!("caches synced");
    });
    stream::select_all(controllers).for_each(|()| async {}).await;
}

/// Logs what a controller reports about one reconcile.
fn report<K, E: std::error::Error>(result: Result<K, controller::Error<E, watcher::Error>>) {
    match result {
        Ok(_) => {}
        // A requeue of a resource deleted in the meantime: nothing to do.
        Err(controller::Error::ObjectNotFound(obj)) => tracing::debug!(object = %obj, "resource is gone"),
        Err(err) => warn!(error = %err, "controller error"),
    }
}

/// How often `/readyz`'s view of the proxy is renewed while it is reachable, and while it is not: a probe is
/// one more call on the proxy, so it is made only when no other call has succeeded in the meantime. An idle
/// operator probes once a minute, which at 10,000 users is a twentieth of the calls of a resync.
const PROXY_CHECK_REACHABLE: Duration = Duration::from_secs(60);
const PROXY_CHECK_UNREACHABLE: Duration = Duration::from_secs(5);

/// Keeps `proxy_reachable` current for `/readyz`.
async fn watch_proxy(litellm: LiteLlmClient, health: Arc<Health>) {
    loop {
        let reachable = litellm.answered_within(PROXY_CHECK_REACHABLE) || litellm.reachable().await;
        if health.proxy_reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                info!("LiteLLM proxy reachable");
            } else {
                warn!("LiteLLM proxy not reachable");
            }
        }
        tokio::time::sleep(if reachable { PROXY_CHECK_REACHABLE } else { PROXY_CHECK_UNREACHABLE }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_namespace_list_means_every_namespace() {
        assert_eq!(watch_scopes(&[]), vec![None]);
        assert_eq!(watch_scopes(&["".into()]), vec![None]);
        assert_eq!(watch_scopes(&[" ".into(), "".into()]), vec![None]);
        let scopes = watch_scopes(&["b".into(), "a".into(), "b".into(), " a ".into()]);
        assert_eq!(scopes, vec![Some("a".into()), Some("b".into())]);
    }

    async fn scrape(metrics: &Arc<Metrics>, accept_encoding: Option<&str>) -> (http::HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let health = Arc::new(Health {
            synced: AtomicBool::new(true),
            standby: AtomicBool::new(false),
            proxy_reachable: AtomicBool::new(true),
        });
        let routes = http_routes(HttpState { metrics: metrics.clone(), health });
        let mut request = http::Request::get("/metrics");
        if let Some(encoding) = accept_encoding {
            request = request.header("accept-encoding", encoding);
        }
        let request = request.body(axum::body::Body::empty()).unwrap_or_default();
        let response = routes.oneshot(request).await.unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default();
        (headers, body)
    }

    #[tokio::test]
    async fn metrics_are_gzipped_only_for_a_scraper_that_asks() {
        let metrics = Arc::new(Metrics::default());
        for i in 0..3000 {
            metrics.observe_resource("team-a", &format!("user-{i}"), "Synced", Some(1.0), Some(10.0));
        }
        let (headers, plain) = scrape(&metrics, None).await;
        assert!(headers.get("content-encoding").is_none());
        assert!(plain.ends_with(b"# EOF\n"));
        assert_eq!(String::from_utf8_lossy(&plain).matches("name=\"user-").count(), 6000);
        let (headers, gzipped) = scrape(&metrics, Some("gzip")).await;
        assert_eq!(headers.get("content-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
        assert!(gzipped.starts_with(&[0x1f, 0x8b]), "not gzip");
        assert!(gzipped.len() * 10 < plain.len(), "{} bytes gzipped of {}", gzipped.len(), plain.len());
    }
}
