//! The `LiteLLMProxy` controller: turns each proxy resource into a ready [`Proxy`] in the [`Registry`] (or
//! the reason it cannot be one), and reports in its status whether the proxy is reachable, whether it accepts
//! the master key, which generation it behaves like and how many users the operator manages on it. It looks
//! again every half minute, which is also how a changed master key Secret takes effect without a restart.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};
use url::Url;

use super::{Proxy, Registry};
use crate::{
    crd::{LiteLLMProxy, LiteLLMProxyStatus},
    litellm::{ClientConfig, LiteLlmClient, MasterKey},
    metrics::Metrics,
    reconcile::{FIELD_MANAGER, claim::Claims, conditions},
    text::sha256_hex,
};

/// How often a proxy is looked at again: its reachability, and its master key Secret.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

pub struct ProxyContext {
    pub kube: kube::Client,
    pub registry: Arc<Registry>,
    pub claim_namespace: String,
    /// How often each proxy's directory snapshot is refreshed.
    pub resync: Duration,
    /// Turns true once the watch caches have synced: directory intervals count from then.
    pub caches_synced: tokio::sync::watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed while trying to {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error(transparent)]
    Panicked(#[from] crate::panics::Panicked),
}

/// Why a proxy resource cannot be used, as its `Ready` condition says.
struct Broken {
    reason: &'static str,
    message: String,
}

/// The controller's entry point. A panic fails this proxy's reconcile only, and is counted.
pub async fn reconcile(proxy: Arc<LiteLLMProxy>, ctx: Arc<ProxyContext>) -> Result<Action, Error> {
    let metrics = ctx.metrics.clone();
    crate::panics::contain(look(proxy, ctx)).await.unwrap_or_else(|panicked| {
        metrics.reconcile_panicked("litellmproxy");
        Err(panicked.into())
    })
}

async fn look(proxy: Arc<LiteLLMProxy>, ctx: Arc<ProxyContext>) -> Result<Action, Error> {
    let name = proxy.name_any();
    if proxy.metadata.deletion_timestamp.is_some() {
        ctx.registry.remove(&name);
        return Ok(Action::await_change());
    }
    let mut status = LiteLLMProxyStatus { observed_generation: proxy.metadata.generation, ..Default::default() };
    let outcome = match handle(&proxy, &ctx).await? {
        Ok(handle) => {
            // One admin call says both whether the proxy answers and whether it takes the master key.
            let probe = handle.client.user_list(1, 1).await;
            status.reachable = probe.as_ref().map_or_else(|err| err.status().is_some(), |_| true);
            status.master_key_accepted = probe.is_ok();
            status.users = handle.directory.managed_count() as i64;
            match probe {
                Ok(_) => {
                    status.generation = handle.client.generation().await.ok().map(|g| g.as_str().to_owned());
                    Ok(())
                }
                Err(err) if matches!(err.status(), Some(401 | 403)) => Err(Broken {
                    reason: "MasterKeyRejected",
                    message: "the proxy refused the master key; fix the Secret masterKeySecretRef names".into(),
                }),
                Err(err) => Err(Broken { reason: "Unreachable", message: err.to_string() }),
            }
        }
        Err(broken) => {
            warn!(proxy = name, reason = broken.reason, "{}", broken.message);
            ctx.registry.set_broken(&name, broken.message.clone(), proxy.spec.default);
            Err(broken)
        }
    };
    let (state, reason, message) = match &outcome {
        Ok(()) => ("True", "Ready", "The proxy answers and accepts the master key".to_owned()),
        Err(broken) => ("False", broken.reason, broken.message.clone()),
    };
    let previous = proxy.status.clone().unwrap_or_default().conditions;
    let generation = proxy.metadata.generation;
    let ready =
        conditions::condition(&previous, conditions::READY, state, reason, &message, generation, Timestamp::now());
    status.conditions = vec![ready];
    if proxy.status.as_ref() != Some(&status) {
        let api: Api<LiteLLMProxy> = Api::all(ctx.kube.clone());
        let patch = json!({ "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMProxy", "status": status });
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::Kube { action: "write a proxy's status", source })?;
    }
    Ok(Action::requeue(LOOK_AGAIN))
}

pub fn error_policy(_: Arc<LiteLLMProxy>, err: &Error, _: Arc<ProxyContext>) -> Action {
    warn!(error = %err, "proxy reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// The proxy's handle: the current one if nothing it was built from changed, else a new one.
async fn handle(proxy: &LiteLLMProxy, ctx: &ProxyContext) -> Result<Result<Arc<Proxy>, Broken>, Error> {
    let name = proxy.name_any();
    let spec = &proxy.spec;
    let url = match checked_url(&spec.url, spec.allow_insecure_http) {
        Ok(url) => url,
        Err(broken) => return Ok(Err(broken)),
    };
    let master_key = match master_key(ctx, proxy).await? {
        Ok(key) => key,
        Err(broken) => return Ok(Err(broken)),
    };
    let timeout = crate::duration::parse_or(spec.timeout.as_deref(), Duration::from_secs(10));
    let idle_timeout = crate::duration::parse_or(spec.idle_timeout.as_deref(), crate::litellm::DEFAULT_IDLE_TIMEOUT);
    let policy = serde_json::to_string(&spec.policy).unwrap_or_default();
    let fingerprint = sha256_hex(&format!(
        "{url}\n{}\n{}\n{timeout:?}\n{idle_timeout:?}\n{policy}",
        sha256_hex(&master_key),
        spec.ca_bundle.as_deref().unwrap_or_default()
    ));
    if let Some(current) = ctx.registry.current(&name, &fingerprint) {
        ctx.registry.set_default(&name, spec.default);
        return Ok(Ok(current));
    }
    let config = ClientConfig {
        base_url: url.clone(),
        master_key: MasterKey::new(master_key),
        ca_pem: spec.ca_bundle.as_ref().map(|pem| pem.as_bytes().to_vec()),
        timeout,
        idle_timeout,
    };
    let client = match LiteLlmClient::new(config) {
        Ok(client) => client.with_metrics(ctx.metrics.clone()),
        Err(err) => return Ok(Err(Broken { reason: "InvalidCaBundle", message: err.to_string() })),
    };
    let claims = Claims::new(ctx.kube.clone(), &ctx.claim_namespace, url.as_str());
    let handle = Proxy::start(
        &name,
        client,
        claims,
        spec.policy.clone(),
        fingerprint.clone(),
        ctx.resync,
        ctx.caches_synced.clone(),
    );
    info!(proxy = name, url = %url, "proxy configured");
    ctx.registry.set_ready(handle, spec.default);
    Ok(ctx
        .registry
        .current(&name, &fingerprint)
        .ok_or(Broken { reason: "Replaced", message: "the proxy changed while it was being configured".into() }))
}

/// The URL, unless it would send the master key unencrypted over a network.
fn checked_url(text: &str, allow_insecure_http: bool) -> Result<Url, Broken> {
    let url = Url::parse(text).map_err(|err| Broken { reason: "InvalidUrl", message: format!("{text}: {err}") })?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback && !allow_insecure_http {
        return Err(Broken {
            reason: "InsecureUrl",
            message: format!(
                "{text} is plain http to a non-loopback address: the master key would travel unencrypted. Use \
                 https (with caBundle), or set allowInsecureHttp: true to accept that"
            ),
        });
    }
    Ok(url)
}

async fn master_key(ctx: &ProxyContext, proxy: &LiteLLMProxy) -> Result<Result<String, Broken>, Error> {
    let reference = &proxy.spec.master_key_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &reference.namespace);
    let missing = |what: String| Ok(Err(Broken { reason: "MasterKeySecretMissing", message: what }));
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return missing(format!("Secret {}/{} does not exist", reference.namespace, reference.name)),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return missing(format!("the operator may not read Secret {}/{}", reference.namespace, reference.name));
        }
        Err(source) => return Err(Error::Kube { action: "read a master key Secret", source }),
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned());
    match value.filter(|v| !v.is_empty()) {
        Some(key) => Ok(Ok(key)),
        None => missing(format!("Secret {}/{} has no key {}", reference.namespace, reference.name, reference.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback_or_when_allowed() {
        assert!(checked_url("https://litellm.example:4000", false).is_ok());
        assert!(checked_url("http://127.0.0.1:4000", false).is_ok());
        assert!(checked_url("http://localhost:4000", false).is_ok());
        assert!(checked_url("http://[::1]:4000", false).is_ok());
        let refused = checked_url("http://litellm.litellm.svc:4000", false).err().unwrap();
        assert_eq!(refused.reason, "InsecureUrl");
        assert!(refused.message.contains("allowInsecureHttp"));
        assert!(checked_url("http://litellm.litellm.svc:4000", true).is_ok());
        assert_eq!(checked_url("not a url", false).err().unwrap().reason, "InvalidUrl");
    }
}
