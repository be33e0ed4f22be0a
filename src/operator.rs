//! Process wiring: connects to Kubernetes and LiteLLM, checks the CRD is installed, and runs one controller
//! per watched namespace (or one for the whole cluster) until SIGTERM or SIGINT.

use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{Controller, events::Recorder, events::Reporter, watcher},
};
use tracing::{info, warn};

use crate::{
    crd::LiteLLMUser,
    litellm::LiteLlmClient,
    reconcile::{self, Context, Settings, keys},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "the LiteLLMUser CRD is not installed or not readable ({0}); install it with `litellm-operator crd | kubectl apply -f -`"
    )]
    CrdMissing(#[source] kube::Error),
}

/// Runs the controllers until a shutdown signal; in-flight reconciles finish first.
pub async fn run(litellm: LiteLlmClient, namespaces: Vec<String>, settings: Settings) -> Result<(), StartError> {
    let client = Client::try_default().await.map_err(StartError::Kube)?;
    let probe: Api<LiteLLMUser> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe.list(&ListParams::default().limit(1)).await.map_err(StartError::CrdMissing)?;

    let reporter = Reporter {
        controller: reconcile::FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client.clone(), litellm, recorder, settings));

    let scopes: Vec<Option<String>> =
        if namespaces.is_empty() { vec![None] } else { namespaces.into_iter().map(Some).collect() };
    info!(scopes = ?scopes, "starting controllers");
    let secrets_config = watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY));
    let controllers = scopes.into_iter().map(|scope| {
        let (users, secrets): (Api<LiteLLMUser>, Api<Secret>) = match &scope {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        Controller::new(users, watcher::Config::default().any_semantic())
            .owns(secrets, secrets_config.clone().any_semantic())
            .shutdown_on_signal()
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .boxed()
    });
    stream::select_all(controllers)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(error = %err, "controller error");
            }
        })
        .await;
    info!("stopped");
    Ok(())
}
