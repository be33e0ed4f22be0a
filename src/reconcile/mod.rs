//! The reconcile loop: keeps one LiteLLM user, its key and its Secret equal to a `LiteLLMUser`.
//!
//! Each reconcile is observe → decide → act, in rounds: [`observe`] reads the world for the resource,
//! [`decide`] turns (spec, status, world) into a [`decide::Plan`] without I/O, and [`act`] carries the plan out
//! in a crash-safe order. When acting teaches something that changes the picture (the claim on the user id was
//! won, `/user/new` answered 409), the next round looks again. Every step is idempotent, so the operator may
//! die at any line and pick up where it left off.

pub mod act;
pub mod claim;
pub mod conditions;
pub mod decide;
pub mod desired;
pub mod directory;
pub mod events;
pub mod keys;
pub mod observe;
pub mod quota;
pub mod secret_index;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{self, finalizer},
    },
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::{
    crd::{CachedUser, DeletionPolicy, LiteLLMUser, LiteLLMUserStatus},
    litellm::ApiError,
    metrics::Metrics,
    proxies::{Proxy, Registry},
};
use conditions::{Extras, Outcome, Reason, Retry};
use decide::{Decision, Facts, Note};
use keys::FreshKey;
use observe::Hints;
use secret_index::{KnownSecret, SecretIndex};

/// Finalizer that holds a deleted resource until its LiteLLM user is deleted.
pub const FINALIZER: &str = "litellm-operator.io/cleanup";
/// The one field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "litellm-operator";
/// Rounds of observe → decide → act in one reconcile: claim, create, read back, and one to spare.
const MAX_ROUNDS: usize = 5;
/// How long the operator trusts its memory of its own last writes over a watch cache that has not caught up
/// with them yet. The watch event of each write is on its way and triggers another look; this bound only
/// matters when that write was undone in the meantime.
const ECHO_WAIT: Duration = Duration::from_secs(10);
/// How long after a `/user/new` that got no answer the user may still appear on the proxy: a proxy goes on with
/// a request whose client has given up on it. A deletion in that time waits for it before it lets go.
const UNANSWERED_CREATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    LiteLlm(#[from] ApiError),
    #[error("Kubernetes API call failed while trying to {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error("the resource has no namespace")]
    MissingNamespace,
    #[error("the cached resource does not parse: {0}")]
    Unreadable(#[source] crate::crd::Unreadable),
    #[error("cannot generate a key: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
    #[error(transparent)]
    Proxy(#[from] crate::proxies::Unresolved),
    #[error(transparent)]
    Panicked(#[from] crate::panics::Panicked),
    #[error("its creation got no answer from the proxy and may still land there; looking again for {0:?} more")]
    CreationMayLand(Duration),
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Tunables of the reconcile loop.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a resource is reconciled when nothing happens, to refresh spend and repair drift.
    pub resync: Duration,
    /// Least time between two reads of a user's usage from `/user/daily/activity`.
    pub usage_refresh: Duration,
    /// Days of usage summarised in status.
    pub usage_window_days: i64,
    /// Longest wait between retries of a failing resource.
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            usage_refresh: Duration::from_secs(3600),
            usage_window_days: 7,
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub kube: kube::Client,
    /// The proxies, each with its client, claims, directory snapshot and policy.
    pub proxies: Arc<Registry>,
    pub events: events::Events,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Every key Secret's version and controller, from the watches (one per scope); lets a reconcile know a
    /// Secret without reading it.
    secret_indexes: Vec<Arc<SecretIndex>>,
    /// What each namespace's resources add up to, for the policy's namespace quota.
    pub quota: quota::Ledger,
    /// Consecutive failures per resource, for exponential backoff; cleared on success.
    failures: Mutex<HashMap<Box<str>, u32>>,
    /// When each resource was last found in sync, and what the operator last wrote for it: watch events caused
    /// by the operator's own writes (and any other event that leaves the spec alone) need no work until the next
    /// resync.
    last_in_sync: Mutex<HashMap<Box<str>, InSync>>,
    /// When each resource's last `/user/new` went unanswered (timed out, or the connection was lost).
    unanswered_creates: Mutex<HashMap<Box<str>, Instant>>,
}

/// A resource found in sync, as the operator left it.
#[derive(Clone, Copy, Debug)]
struct InSync {
    at: Instant,
    /// The generation it was in sync at.
    generation: Option<i64>,
    /// Fingerprint of the status as the API server stored it.
    status: u64,
    /// Fingerprint of the key Secret's resourceVersion, when this reconcile wrote the Secret.
    secret_written: Option<u64>,
}

/// What the operator's own memories of a resource are filed under: its namespace and name, in one string (an
/// `ObjectRef` would hold four).
fn resource_key(user: &LiteLLMUser) -> Box<str> {
    user.namespaced_name().into_boxed_str()
}

/// A compact fingerprint, so that the memory of 100,000 resources stays small.
fn fingerprint<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

impl Context {
    /// The API of `K` objects in the resource's namespace.
    pub(crate) fn api_in<K>(&self, user: &LiteLLMUser) -> Result<Api<K>, Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
        Ok(Api::namespaced(self.kube.clone(), &namespace))
    }

    pub fn new(
        kube: kube::Client,
        proxies: Arc<Registry>,
        events: events::Events,
        settings: Settings,
        metrics: Arc<Metrics>,
        secret_indexes: Vec<Arc<SecretIndex>>,
    ) -> Self {
        Context {
            kube,
            proxies,
            events,
            settings,
            metrics,
            secret_indexes,
            quota: quota::Ledger::default(),
            failures: Mutex::default(),
            last_in_sync: Mutex::default(),
            unanswered_creates: Mutex::default(),
        }
    }

    /// Remembers that a `/user/new` for the resource got no answer: the proxy may yet act on it.
    fn creation_unanswered(&self, user: &LiteLLMUser) {
        crate::sync::lock(&self.unanswered_creates).insert(resource_key(user), Instant::now());
    }

    /// How much longer a user not found on the proxy may still appear there, from an unanswered creation.
    fn creation_may_land(&self, user: &LiteLLMUser) -> Option<Duration> {
        let mut unanswered = crate::sync::lock(&self.unanswered_creates);
        let key = resource_key(user);
        let left = UNANSWERED_CREATE_WINDOW.saturating_sub(unanswered.get(&key)?.elapsed());
        if left.is_zero() {
            unanswered.remove(&key);
            return None;
        }
        Some(left)
    }

    /// Waits (a bounded time after start-up) until every Secret index has listed its Secrets once.
    async fn secrets_listed(&self) {
        for index in &self.secret_indexes {
            index.wait_listed().await;
        }
    }

    /// The Secret `name` in `user`'s namespace, as the watch last saw it.
    pub fn known_secret(&self, user: &LiteLLMUser, name: &str) -> Option<KnownSecret> {
        let namespace = user.namespace()?;
        self.secret_indexes.iter().find_map(|index| index.get(&namespace, name))
    }

    fn next_backoff(&self, user: &LiteLLMUser, at_least: Option<Duration>) -> Duration {
        let mut failures = crate::sync::lock(&self.failures);
        let count = failures.entry(resource_key(user)).or_insert(0);
        *count = count.saturating_add(1);
        let exponential = Duration::from_millis(500).saturating_mul(1 << (*count - 1).min(16));
        exponential.min(self.settings.max_backoff).max(at_least.unwrap_or_default())
    }

    fn forget_failures(&self, user: &LiteLLMUser) {
        crate::sync::lock(&self.failures).remove(&resource_key(user));
    }

    fn in_sync(&self, user: &LiteLLMUser) -> Option<InSync> {
        let last = crate::sync::lock(&self.last_in_sync);
        last.get(&resource_key(user)).copied()
    }

    /// Remembers (or forgets) that `user` is in sync with `status` as stored, and the Secret version this
    /// reconcile wrote, if any.
    fn remember_in_sync(&self, user: &LiteLLMUser, status: Option<&LiteLLMUserStatus>, secret_written: Option<&str>) {
        let mut last = crate::sync::lock(&self.last_in_sync);
        match status {
            Some(status) => last.insert(
                resource_key(user),
                InSync {
                    at: Instant::now(),
                    generation: user.metadata.generation,
                    status: fingerprint(status),
                    secret_written: secret_written.map(fingerprint),
                },
            ),
            None => last.remove(&resource_key(user)),
        };
    }

    /// Drops everything remembered about a resource that is gone.
    fn forget(&self, user: &LiteLLMUser) {
        self.forget_failures(user);
        crate::sync::lock(&self.unanswered_creates).remove(&resource_key(user));
        self.remember_in_sync(user, None, None);
        self.metrics.forget_resource(&user.namespace().unwrap_or_default(), &user.name_any());
    }
}

/// Entry point for the controller: runs the finalizer state machine around `apply` and `cleanup`.
#[instrument(skip_all, fields(namespace = user.namespace(), name = user.name_any()))]
pub async fn reconcile(user: Arc<LiteLLMUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<LiteLLMUser> = ctx.api_in(&user)?;
    let adds_finalizer = user.meta().deletion_timestamp.is_none() && !user.finalizers().iter().any(|f| f == FINALIZER);
    let mut result = finalizer(&api, FINALIZER, user.clone(), |event| async {
        match event {
            finalizer::Event::Apply(user) => apply(&user, &ctx, false).await,
            finalizer::Event::Cleanup(user) => cleanup(&user, &ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)));
    if adds_finalizer && result.is_ok() {
        // The finalizer helper only adds the finalizer and waits for the watch to bring the object back. The
        // finalizer is in place now, so carry on with the object as it is: a new resource is ready one watch
        // round trip sooner, and the event that brings it back finds it in sync. The patch that added the
        // finalizer succeeded, so the resource exists, and no earlier reconcile of it got past that step: the
        // cached status cannot be missing a write of the operator's, and there is no need to read it again.
        let mut with_finalizer = (*user).clone();
        with_finalizer.finalizers_mut().push(FINALIZER.to_owned());
        result = apply(&with_finalizer, &ctx, true).await;
    }
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    result
}

/// The controller's entry point: the watch cache keeps resources in a compact form (see [`CachedUser`]). A
/// panic fails this resource's reconcile only: it is counted, and retried with backoff by [`error_policy`].
pub async fn reconcile_cached(cached: Arc<CachedUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let user = cached.parse().map_err(Error::Unreadable)?;
    let metrics = ctx.metrics.clone();
    // Its metadata was not kept: acting on the rest would read as a spec without metadata. A deletion goes
    // ahead (it needs nothing of the metadata).
    if let Some(bytes) = cached.oversized_metadata()
        && user.metadata.deletion_timestamp.is_none()
    {
        let message = format!(
            "spec.metadata: {} KiB is more than the {} KiB the operator accepts; nothing was sent to the proxy",
            bytes.div_ceil(1024),
            crate::crd::MAX_SPEC_METADATA_BYTES / 1024
        );
        return refuse(&user, &ctx, message).await;
    }
    crate::panics::contain(reconcile(Arc::new(user), ctx)).await.unwrap_or_else(|panicked| {
        metrics.reconcile_panicked("litellmuser");
        Err(panicked.into())
    })
}

/// The controller's error policy, for the cache's form of a resource.
pub fn error_policy_cached(cached: Arc<CachedUser>, err: &Error, ctx: Arc<Context>) -> Action {
    let user = cached.parse().unwrap_or_else(|_| cached.metadata_only());
    error_policy(Arc::new(user), err, ctx)
}

/// Called when `reconcile` fails (only for errors writing to Kubernetes, or cleanup failing).
pub fn error_policy(user: Arc<LiteLLMUser>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = user.namespace(), name = user.name_any(), error = %err, "reconcile failed");
    // Waiting for an unanswered creation to land is not a failure: look again when the wait is over.
    if let Error::Finalizer(inner) = err
        && let finalizer::Error::CleanupFailed(Error::CreationMayLand(left)) = inner.as_ref()
    {
        return Action::requeue(*left);
    }
    let at_least = match err {
        Error::Finalizer(inner) => match inner.as_ref() {
            finalizer::Error::CleanupFailed(Error::LiteLlm(api))
            | finalizer::Error::ApplyFailed(Error::LiteLlm(api)) => api.retry_after(),
            _ => None,
        },
        _ => None,
    };
    Action::requeue(ctx.next_backoff(&user, at_least))
}

/// `current`: the resource is known to be as the API server has it (it was just patched), so it need not be
/// read again before anything is created for it.
async fn apply(user: &LiteLLMUser, ctx: &Context, current: bool) -> Result<Action, Error> {
    ctx.secrets_listed().await;
    let previous = user.status.clone().unwrap_or_default();
    let mut secret_version = ctx
        .known_secret(user, &user.key_secret_name())
        .filter(|known| known.controlled_by(user))
        .map(|known| known.resource_version.into_string());
    let in_sync = ctx.in_sync(user);
    let mut echo_wait = None;
    if let Some(seen) = in_sync.filter(|seen| seen.at.elapsed() < ECHO_WAIT) {
        let remaining = ECHO_WAIT - seen.at.elapsed();
        // The cache still shows the resource from before the operator's own last status write: the event of
        // that write is on its way, and brings the resource as the operator left it.
        if seen.generation == user.metadata.generation && fingerprint(&previous) != seen.status {
            return Ok(Action::requeue(remaining));
        }
        // Likewise the Secret the operator has just written, when the Secret cache does not have it yet.
        let recorded = previous.key_secret_version.as_deref();
        if secret_version.as_deref() != recorded
            && seen.secret_written.is_some_and(|v| Some(v) == recorded.map(fingerprint))
        {
            secret_version = recorded.map(str::to_owned);
            echo_wait = Some(remaining);
        }
    }
    let since = in_sync.map(|seen| seen.at.elapsed());
    if let Some(wait) =
        decide::settled(user, &previous, secret_version.as_deref(), since, Timestamp::now(), &ctx.settings)
    {
        debug!(?wait, secret_version, "as the operator left it: nothing to look at");
        return Ok(Action::requeue(echo_wait.map_or(wait, |echo| wait.min(echo))));
    }

    let fresh = FreshKey::generate().map_err(Error::Random)?;
    let mut written = previous.clone();
    let proxy = match ctx.proxies.resolve_spec(user.spec.proxy_ref.as_ref().map(|p| p.name.as_str())) {
        Ok(proxy) => proxy,
        Err(unresolved) => {
            // Back soon: the proxy may be being created, or its Secret fixed.
            let outcome = Outcome::stalled(Reason::ProxyUnavailable, unresolved.to_string());
            let status = failed_status(user, &written, &outcome);
            let requeue = Action::requeue(Duration::from_secs(15));
            return finish(user, ctx, &previous, &written, status, outcome, requeue).await;
        }
    };
    // A resync that would only confirm that nothing changed, while the directory's snapshot is too old to do
    // so and a newer one is being read: come back when it is, instead of reading the user on its own.
    if decide::only_resync_due(user, &previous, secret_version.as_deref(), since, Timestamp::now(), &ctx.settings)
        && let Some(wait) =
            proxy.directory.wait_for_refresh(observe::last_change(&previous), observe::snapshot_max_age(ctx))
    {
        return Ok(Action::requeue(wait));
    }
    if let Some(old) = previous.proxy.as_deref().filter(|old| *old != proxy.name) {
        move_off(user, ctx, old, &mut written).await?;
    }
    let (status, outcome, requeue) = match converge(user, ctx, &proxy, &fresh, &mut written, current).await {
        // The resource is gone or going; its deletion (if any) runs as a reconcile of its own.
        Ok(None) => return Ok(Action::await_change()),
        Ok(Some(plan)) => {
            let plan = *plan;
            debug!(reason = plan.outcome.reason().as_str(), requeue = ?plan.requeue, "reconciled");
            if plan.outcome == Outcome::Ready || matches!(plan.outcome, Outcome::Stalled { .. }) {
                ctx.forget_failures(user);
            }
            (plan.status, plan.outcome, Action::requeue(plan.requeue))
        }
        Err(err) => {
            let (outcome, retry) = Outcome::of_error(&err);
            if outcome.reason() == Reason::MasterKeyRejected {
                warn!(error = %err, "LiteLLM refused the master key; check the operator's master key settings");
            }
            let delay = match retry {
                Retry::Backoff { at_least } => ctx.next_backoff(user, at_least),
                Retry::AtResync => ctx.settings.resync,
            };
            // The condition and Event say the same to the resource's owner; this is for whoever runs the operator.
            warn!(
                namespace = user.namespace(),
                name = user.name_any(),
                reason = outcome.reason().as_str(),
                message = outcome.message(),
                retry_in = ?delay,
                "reconcile did not converge"
            );
            (failed_status(user, &written, &outcome), outcome, Action::requeue(delay))
        }
    };
    finish(user, ctx, &previous, &written, status, outcome, requeue).await
}

/// Reports a spec the operator refuses without looking any further, and waits for it to change.
async fn refuse(user: &LiteLLMUser, ctx: &Context, message: String) -> Result<Action, Error> {
    let previous = user.status.clone().unwrap_or_default();
    let outcome = Outcome::stalled(Reason::InvalidSpec, message);
    let status = failed_status(user, &previous, &outcome);
    finish(user, ctx, &previous, &previous, status, outcome, Action::await_change()).await
}

/// Reports a reconcile's outcome: a Warning for a new reason, the status if it changed, metrics.
async fn finish(
    user: &LiteLLMUser,
    ctx: &Context,
    previous: &LiteLLMUserStatus,
    written: &LiteLLMUserStatus,
    status: LiteLLMUserStatus,
    outcome: Outcome,
    requeue: Action,
) -> Result<Action, Error> {
    let was = conditions::find(&previous.conditions, conditions::READY).map(|c| c.reason.clone());
    if outcome != Outcome::Ready && was.as_deref() != Some(outcome.reason().as_str()) {
        ctx.events.publish(user, &Note::outcome(&outcome));
    }
    let stored = match status != *written {
        true => write_status(ctx, user, &status).await?,
        false => None,
    };
    let secret_written = (status.key_secret_version != previous.key_secret_version)
        .then_some(status.key_secret_version.as_deref())
        .flatten();
    let in_sync = (outcome == Outcome::Ready).then(|| stored.as_ref().unwrap_or(&status));
    ctx.remember_in_sync(user, in_sync, secret_written);
    ctx.metrics.observe_resource(
        &user.namespace().unwrap_or_default(),
        &user.name_any(),
        outcome.reason().as_str(),
        status.spend,
        status.max_budget,
    );
    Ok(requeue)
}

/// A `proxyRef` change: the user leaves the proxy it lives on as `deletionPolicy` says, and the resource starts
/// afresh on the new one (with a new key: a key belongs to one proxy).
async fn move_off(user: &LiteLLMUser, ctx: &Context, old: &str, written: &mut LiteLLMUserStatus) -> Result<(), Error> {
    let user_id = written.user_id.clone().unwrap_or_else(|| user.litellm_user_id());
    match ctx.proxies.resolve(Some(old)) {
        Ok(proxy) => leave(user, ctx, &proxy, &user_id, false).await?,
        Err(unresolved) => {
            warn!(proxy = old, "the user's previous proxy is gone ({unresolved}); nothing to remove there")
        }
    }
    info!(user_id, from = old, "moving to another proxy");
    let fresh = LiteLLMUserStatus {
        conditions: written.conditions.clone(),
        observed_generation: written.observed_generation,
        ..LiteLLMUserStatus::default()
    };
    write_status(ctx, user, &fresh).await?;
    *written = fresh;
    Ok(())
}

/// Rounds of observe → decide → act until a plan is carried out.
async fn converge(
    user: &LiteLLMUser,
    ctx: &Context,
    proxy: &Proxy,
    fresh: &FreshKey,
    written: &mut LiteLLMUserStatus,
    current: bool,
) -> Result<Option<Box<decide::Plan>>, Error> {
    let mut hints = Hints::default();
    let mut read_latest = current;
    for _ in 0..MAX_ROUNDS {
        let status = written.clone();
        let world = observe::world(ctx, proxy, user, &status, &hints).await?;
        let facts = Facts {
            user,
            status: &status,
            world: &world,
            now: Timestamp::now(),
            settings: &ctx.settings,
            fresh_key: fresh.hash(),
            proxy: &proxy.name,
            policy: &proxy.policy,
        };
        let plan = match decide::decide(&facts) {
            Decision::LookCloser => {
                hints.read_proxy = true;
                continue;
            }
            Decision::Act(plan) => plan,
        };
        // The cache may lag: it may not have the operator's own last status write yet (and status says which
        // keys are ours), or it may still show a resource that is gone. Before claiming, creating, issuing or
        // revoking on its word, read the resource itself, once per reconcile.
        let risky = plan.claim.is_some()
            || plan.create.is_some()
            || plan.key.issue.is_some()
            || !plan.key.revoke.is_empty()
            || plan.key.take_back;
        if risky && !read_latest {
            read_latest = true;
            let api: Api<LiteLLMUser> = ctx.api_in(user)?;
            let latest = api.get_opt(&user.name_any()).await.map_err(kube_err("read the resource"))?;
            // Gone, going, or not yet holding the finalizer that makes deleting it wait for a cleanup: creating
            // anything for it now could leave that behind.
            let Some(latest) = latest
                .filter(|l| l.meta().deletion_timestamp.is_none() && l.finalizers().iter().any(|f| f == FINALIZER))
            else {
                return Ok(None);
            };
            let latest = latest.status.unwrap_or_default();
            if latest != status {
                *written = latest;
                continue;
            }
        }
        match act::run(ctx, proxy, user, &world, *plan, fresh, written).await? {
            act::Acted::Again(learned) => {
                hints = Hints { claimed: hints.claimed || learned.claimed, ..learned };
            }
            act::Acted::Done(mut plan) => {
                decide::finish_conditions(&facts, &mut plan);
                return Ok(Some(plan));
            }
        }
    }
    // Each round settles one question; running out of them means the world keeps changing under us.
    let mut status = written.clone();
    let outcome = Outcome::Progressing {
        reason: Reason::Synced,
        message: "The proxy changed while the operator worked on it; trying again".into(),
    };
    status.conditions = conditions::conditions(
        &written.conditions,
        &outcome,
        &Extras::default(),
        user.metadata.generation,
        Timestamp::now(),
    );
    Ok(Some(Box::new(decide::Plan { status, outcome, requeue: Duration::from_secs(1), ..decide::Plan::default() })))
}

/// The status after a failed reconcile: as last written, with the failure in its conditions.
fn failed_status(user: &LiteLLMUser, written: &LiteLLMUserStatus, outcome: &Outcome) -> LiteLLMUserStatus {
    let mut status = written.clone();
    status.observed_generation = user.metadata.generation;
    let uncleared: Vec<&str> = status.uncleared_fields.iter().map(String::as_str).collect();
    let extras = Extras { uncleared: &uncleared, ..Extras::default() };
    status.conditions =
        conditions::conditions(&written.conditions, outcome, &extras, user.metadata.generation, Timestamp::now());
    status
}

/// Writes the resource's status with server-side apply, as the operator's one field manager. Returns the
/// status as the API server stored it.
async fn write_status(
    ctx: &Context,
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
) -> Result<Option<LiteLLMUserStatus>, Error> {
    let api: Api<LiteLLMUser> = ctx.api_in(user)?;
    let patch = json!({ "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser", "status": status });
    let stored = api
        .patch_status(&user.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(kube_err("write status"))?;
    Ok(stored.status)
}

/// Runs when the resource is deleted: deletes the LiteLLM user (and with it every key) unless the policy is
/// `Retain`, in which case the key Secret is released so it outlives the resource; then gives up the claim on
/// the user id. While the proxy cannot be reached, the resource says so and waits.
async fn cleanup(user: &LiteLLMUser, ctx: &Context) -> Result<Action, Error> {
    let status = user.status.clone().unwrap_or_default();
    let user_id = status.user_id.clone().unwrap_or_else(|| user.litellm_user_id());
    // Where the user lives, which is not where the spec points while it moves.
    let named = status.proxy.clone().or_else(|| user.spec.proxy_ref.as_ref().map(|p| p.name.clone()));
    let result = match ctx.proxies.resolve(named.as_deref()) {
        Ok(proxy) => leave(user, ctx, &proxy, &user_id, true).await,
        // A resource that never reached a proxy has nothing on one; otherwise wait for the proxy.
        Err(_) if status.proxy.is_none() && status.user_id.is_none() => Ok(()),
        Err(unresolved) => Err(Error::Proxy(unresolved)),
    };
    match result {
        Ok(()) => {
            // Only now: while the deletion is blocked, its retries back off, and its metrics stay.
            ctx.forget(user);
            Ok(Action::await_change())
        }
        Err(err) => {
            let previous = user.status.clone().unwrap_or_default();
            let message = format!(
                "Cannot delete LiteLLM user {user_id}: {err}. The resource is kept until it can; if the proxy is gone \
                 for good, set spec.deletionPolicy to Retain to let go of the user"
            );
            let outcome = Outcome::Progressing { reason: Reason::DeletionBlocked, message };
            let was = conditions::find(&previous.conditions, conditions::READY).map(|c| c.reason.clone());
            if was.as_deref() != Some(Reason::DeletionBlocked.as_str()) {
                ctx.events.publish(user, &Note::outcome(&outcome));
            }
            let status = failed_status(user, &previous, &outcome);
            if status != previous
                && let Err(status_err) = write_status(ctx, user, &status).await
            {
                warn!(error = %status_err, "could not report the blocked deletion");
            }
            Err(err)
        }
    }
}

/// Leaves a proxy: deletes the user there unless the policy is `Retain` (whose key Secret, when the resource
/// itself goes, is released to outlive it), then gives up the claim on the user id.
async fn leave(user: &LiteLLMUser, ctx: &Context, proxy: &Proxy, user_id: &str, deleting: bool) -> Result<(), Error> {
    let manages = user.status.as_ref().and_then(|s| s.user_id.as_deref()) == Some(user_id);
    if user.spec.deletion_policy == DeletionPolicy::Retain {
        if deleting {
            release_secret(user, ctx).await?;
        }
        info!(user_id, "LiteLLM user retained");
    } else if let Some((record, _)) = proxy.client.user_info(user_id).await? {
        // Ours by its mark (also when the resource was deleted before its status said so), or by status alone
        // when it was adopted and never changed (the mark comes with the first change) or someone wiped the
        // mark; a user marked by anyone else is never deleted.
        match desired::marked_owner(&record.metadata) {
            Some(owner) if owner == claim::holder(user) => delete_user(proxy, user_id).await?,
            None if manages => delete_user(proxy, user_id).await?,
            _ => info!(user_id, "LiteLLM user is not managed by this resource; left untouched"),
        }
    } else if deleting && let Some(left) = ctx.creation_may_land(user) {
        return Err(Error::CreationMayLand(left));
    }
    proxy.claims.release(user, user_id).await
}

async fn delete_user(proxy: &Proxy, user_id: &str) -> Result<(), Error> {
    let existed = proxy.client.user_delete(user_id).await?;
    info!(user_id, existed, proxy = proxy.name, "deleted LiteLLM user");
    Ok(())
}

/// Removes this resource's owner reference from its key Secret, so garbage collection keeps it. The Secret
/// keeps the operator's labels, so a new resource of the same name can take it back, key and all.
async fn release_secret(user: &LiteLLMUser, ctx: &Context) -> Result<(), Error> {
    let secrets: Api<Secret> = ctx.api_in(user)?;
    let name = user.status.as_ref().and_then(|s| s.key_secret_name.clone()).unwrap_or_else(|| user.key_secret_name());
    let Some(secret) = secrets.get_opt(&name).await.map_err(kube_err("read the key Secret"))? else { return Ok(()) };
    let uid = user.metadata.uid.clone().unwrap_or_default();
    if secret.owner_references().iter().any(|o| o.uid == uid) {
        let remaining: Vec<_> = secret.owner_references().iter().filter(|o| o.uid != uid).cloned().collect();
        let patch =
            json!({ "metadata": { "ownerReferences": remaining, "resourceVersion": secret.resource_version() } });
        secrets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("release the key Secret"))?;
    }
    Ok(())
}
