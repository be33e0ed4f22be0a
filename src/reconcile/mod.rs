//! The reconcile loop: keeps one LiteLLM user, its key and its Secret equal to a `LiteLLMUser`.
//!
//! Order of work for an existing resource: read the LiteLLM user, decide who owns it, create or converge it,
//! make sure its key is in the Secret and registered on the proxy, revoke keys no Secret holds, then write
//! status. Every step is idempotent, so the operator may die at any line and pick up where it left off.

pub mod conditions;
pub mod desired;
pub mod directory;
pub mod keys;
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
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{self, finalizer},
        reflector::ObjectRef,
    },
};
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use crate::{
    crd::{DeletionPolicy, LiteLLMUser, LiteLLMUserStatus, UsageSummary},
    litellm::{ApiError, Created, ErrorClass, KeyRecord, LiteLlmClient, UserRecord},
    metrics::Metrics,
};
use conditions::Outcome;

/// Finalizer that holds a deleted resource until its LiteLLM user is deleted.
pub const FINALIZER: &str = "litellm-operator.io/cleanup";
/// The one field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "litellm-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    LiteLlm(#[from] ApiError),
    #[error("Kubernetes API call failed while trying to {action}: {source}")]
    Kube { action: &'static str, source: kube::Error },
    #[error("the resource has no namespace")]
    MissingNamespace,
    #[error("cannot generate a key: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
}

fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// Tunables of the reconcile loop.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a resource is reconciled when nothing happens, to refresh spend and repair drift.
    pub resync: Duration,
    /// How often usage is read from `/user/daily/activity`.
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
    pub litellm: LiteLlmClient,
    pub recorder: Recorder,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per resource, for exponential backoff; cleared on success.
    failures: Mutex<HashMap<ObjectRef<LiteLLMUser>, u32>>,
    /// When usage was last read per resource, so resyncs do not read it every time.
    usage_read: Mutex<HashMap<ObjectRef<LiteLLMUser>, Instant>>,
    /// The last time each resource was found in sync: watch events caused by our own writes (and any other
    /// event that leaves the spec alone) need no work until the next resync.
    last_in_sync: Mutex<HashMap<ObjectRef<LiteLLMUser>, InSync>>,
    /// Snapshot of all LiteLLM users for cheap resyncs.
    directory: directory::Directory,
}

impl Context {
    pub fn new(
        kube: kube::Client,
        litellm: LiteLlmClient,
        recorder: Recorder,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            kube,
            litellm,
            recorder,
            settings,
            metrics,
            failures: Mutex::default(),
            usage_read: Mutex::default(),
            last_in_sync: Mutex::default(),
            directory: directory::Directory::default(),
        }
    }

    fn next_backoff(&self, user: &LiteLLMUser, retry_after: Option<Duration>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(ObjectRef::from_obj(user)).or_insert(0);
        *count = count.saturating_add(1);
        let exponential = Duration::from_millis(500).saturating_mul(1 << (*count - 1).min(16));
        exponential.min(self.settings.max_backoff).max(retry_after.unwrap_or_default())
    }

    fn forget_failures(&self, user: &LiteLLMUser) {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&ObjectRef::from_obj(user));
    }

    fn usage_due(&self, user: &LiteLLMUser) -> bool {
        let read = self.usage_read.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        read.get(&ObjectRef::from_obj(user)).is_none_or(|at| at.elapsed() >= self.settings.usage_refresh)
    }

    fn usage_read_now(&self, user: &LiteLLMUser) {
        self.usage_read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(ObjectRef::from_obj(user), Instant::now());
    }

    /// Publishes an event in the background: an event is one more API write, and nothing waits for it, so it
    /// stays off the path from a change to Ready.
    async fn event(&self, user: &LiteLLMUser, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
        let (recorder, reference) = (self.recorder.clone(), user.object_ref(&()));
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &reference).await {
                warn!(error = %err, "could not publish event");
            }
        });
    }
}

/// Entry point for the controller: runs the finalizer state machine around `apply` and `cleanup`.
#[instrument(skip_all, fields(namespace = user.namespace(), name = user.name_any()))]
pub async fn reconcile(user: Arc<LiteLLMUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<LiteLLMUser> = Api::namespaced(ctx.kube.clone(), &namespace);
    let adds_finalizer = user.meta().deletion_timestamp.is_none() && !user.finalizers().iter().any(|f| f == FINALIZER);
    let mut result = finalizer(&api, FINALIZER, user.clone(), |event| async {
        match event {
            finalizer::Event::Apply(user) => apply(&user, &ctx).await,
            finalizer::Event::Cleanup(user) => cleanup(&user, &ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)));
    if adds_finalizer && result.is_ok() {
        // The finalizer helper only adds the finalizer and waits for the watch to bring the object back. The
        // finalizer is in place now, so carry on with the object as it is: a new resource is ready one watch
        // round trip sooner, and the event that brings it back finds it in sync.
        let mut with_finalizer = (*user).clone();
        with_finalizer.finalizers_mut().push(FINALIZER.to_owned());
        result = apply(&with_finalizer, &ctx).await;
    }
    ctx.metrics.reconciled(result.is_ok(), started.elapsed());
    result
}

/// Called when `reconcile` fails (only for errors writing to Kubernetes, or cleanup failing).
pub fn error_policy(user: Arc<LiteLLMUser>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = user.namespace(), name = user.name_any(), error = %err, "reconcile failed");
    let retry_after = match err {
        Error::Finalizer(inner) => match inner.as_ref() {
            finalizer::Error::CleanupFailed(Error::LiteLlm(api))
            | finalizer::Error::ApplyFailed(Error::LiteLlm(api)) => api.retry_after(),
            _ => None,
        },
        _ => None,
    };
    Action::requeue(ctx.next_backoff(&user, retry_after))
}

/// What `sync` found and did.
struct Synced {
    outcome: Outcome,
    /// The LiteLLM user this resource manages; `None` when it turned out to belong to someone else.
    user_id: Option<String>,
    record: Option<UserRecord>,
    key: Option<(String, String)>,
    uncleared: Vec<&'static str>,
    /// The user was created by this reconcile, so it has no usage yet.
    created: bool,
}

async fn apply(user: &LiteLLMUser, ctx: &Context) -> Result<Action, Error> {
    let previous = user.status.clone().unwrap_or_default();
    if let Some(wait) = still_in_sync(user, ctx).await? {
        return Ok(Action::requeue(wait));
    }
    let (synced, action) = match sync(user, ctx, &previous).await {
        Ok(synced) => {
            ctx.forget_failures(user);
            let action = match synced.outcome {
                Outcome::Ready => Action::requeue(ctx.settings.resync),
                _ => Action::requeue(ctx.settings.resync.min(ctx.settings.max_backoff)),
            };
            (synced, action)
        }
        Err(err) => {
            let (outcome, delay) = classify(user, ctx, &err);
            let synced = Synced {
                outcome,
                user_id: previous.user_id.clone(),
                record: None,
                key: previous.key_secret_name.clone().zip(previous.key_hash.clone()),
                uncleared: vec![],
                created: false,
            };
            (synced, Action::requeue(delay))
        }
    };
    let previous_reason = conditions::reason_of(&previous.conditions, conditions::READY).map(str::to_owned);
    if synced.outcome != Outcome::Ready && previous_reason.as_deref() != Some(synced.outcome.reason()) {
        let message = match &synced.outcome {
            Outcome::Progressing { message, .. } | Outcome::Stalled { message, .. } => message.clone(),
            Outcome::Ready => String::new(),
        };
        ctx.event(user, EventType::Warning, synced.outcome.reason(), message).await;
    }
    let reason = synced.outcome.reason();
    let ready = synced.outcome == Outcome::Ready;
    let status = next_status(user, ctx, &previous, synced).await;
    if status != previous {
        let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
        let api: Api<LiteLLMUser> = Api::namespaced(ctx.kube.clone(), &namespace);
        let patch = json!({ "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser", "status": status });
        api.patch_status(&user.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(kube_err("write status"))?;
    }
    let in_sync = ready.then(|| InSync {
        generation: user.metadata.generation,
        at: Instant::now(),
        key: status.key_secret_name.clone().zip(status.key_hash.clone()),
    });
    let mut last = ctx.last_in_sync.lock().unwrap_or_else(|p| p.into_inner());
    match in_sync {
        Some(in_sync) => last.insert(ObjectRef::from_obj(user), in_sync),
        None => last.remove(&ObjectRef::from_obj(user)),
    };
    drop(last);
    ctx.metrics.observe_resource(
        &user.namespace().unwrap_or_default(),
        &user.name_any(),
        reason,
        status.spend,
        status.max_budget,
    );
    Ok(action)
}

/// Turns a failed sync into conditions and a retry delay: the proxy's own trouble is retried with backoff,
/// a refused request waits for a change instead of hammering the proxy.
fn classify(user: &LiteLLMUser, ctx: &Context, err: &Error) -> (Outcome, Duration) {
    let message = err.to_string();
    match err {
        Error::LiteLlm(api) => match api.class() {
            ErrorClass::Transient => {
                let delay = ctx.next_backoff(user, api.retry_after());
                (Outcome::Progressing { reason: "LiteLLMUnavailable", message }, delay)
            }
            ErrorClass::Unauthorized => {
                warn!(error = %api, "LiteLLM refused the master key; check the operator's --master-key settings");
                let delay = ctx.next_backoff(user, None);
                let message =
                    format!("LiteLLM refused the operator's master key ({message}); fix the operator's configuration");
                (Outcome::Stalled { reason: "MasterKeyRejected", message }, delay)
            }
            ErrorClass::Rejected => (Outcome::Stalled { reason: "LiteLLMRejected", message }, ctx.settings.resync),
        },
        _ => (Outcome::Progressing { reason: "KubernetesError", message }, ctx.next_backoff(user, None)),
    }
}

async fn next_status(
    user: &LiteLLMUser,
    ctx: &Context,
    previous: &LiteLLMUserStatus,
    synced: Synced,
) -> LiteLLMUserStatus {
    let now = Timestamp::now();
    let mut status = previous.clone();
    if synced.user_id.is_some() {
        status.user_id = synced.user_id.clone();
    }
    if let Some((secret, hash)) = synced.key {
        status.key_secret_name = Some(secret);
        status.key_hash = Some(hash);
    } else if synced.outcome == Outcome::Ready {
        status.key_secret_name = None;
        status.key_hash = None;
    }
    if let Some(record) = &synced.record {
        status.spend = Some(record.spend);
        status.max_budget = record.max_budget;
        status.budget_reset_at = record.budget_reset_at.clone();
        if synced.created {
            status.usage =
                Some(UsageSummary { window_days: ctx.settings.usage_window_days, ..UsageSummary::default() });
            ctx.usage_read_now(user);
        } else if let Some(user_id) = synced.user_id.as_deref().filter(|_| ctx.usage_due(user)) {
            match read_usage(ctx, user_id, now).await {
                Ok(usage) => {
                    status.usage = Some(usage);
                    ctx.usage_read_now(user);
                }
                Err(err) => warn!(error = %err, "could not read usage"),
            }
        }
    }
    if synced.outcome == Outcome::Ready {
        status.managed_fields = desired::managed_fields(&user.spec);
        status.managed_fields.extend(synced.uncleared.iter().map(|f| f.to_string()));
        status.managed_fields.sort();
        status.managed_fields.dedup();
        status.uncleared_fields = synced.uncleared.iter().map(|f| f.to_string()).collect();
        status.observed_generation = user.metadata.generation;
    }
    status.conditions =
        conditions::conditions(&previous.conditions, &synced.outcome, &synced.uncleared, user.metadata.generation, now);
    if status != *previous {
        status.last_sync_time = Some(now.to_string());
    }
    status
}

async fn read_usage(ctx: &Context, user_id: &str, now: Timestamp) -> Result<UsageSummary, ApiError> {
    let days = ctx.settings.usage_window_days.max(1);
    let today = now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let start = today.checked_sub(k8s_openapi::jiff::Span::new().days(days - 1)).unwrap_or(today);
    let totals = ctx.litellm.daily_activity(user_id, &start.to_string(), &today.to_string()).await?;
    Ok(UsageSummary {
        window_days: days,
        spend: totals.total_spend,
        total_tokens: totals.total_tokens.unwrap_or_default(),
        requests: totals.total_api_requests.unwrap_or_default(),
    })
}

/// Brings the proxy in line with the resource. Returns `Stalled` outcomes (not errors) for ownership problems,
/// which no retry can fix.
async fn sync(user: &LiteLLMUser, ctx: &Context, previous: &LiteLLMUserStatus) -> Result<Synced, Error> {
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let name = user.name_any();
    let user_id = user.litellm_user_id();
    let marker = desired::owner_marker(&namespace, &name);
    let me = format!("{namespace}/{name}");
    let stalled = |reason, message| Synced {
        outcome: Outcome::Stalled { reason, message },
        user_id: None,
        record: None,
        key: None,
        uncleared: vec![],
        created: false,
    };

    if let Some(record) = unchanged_since_last_sync(user, ctx, previous, &user_id, &marker).await? {
        let uncleared = previous.uncleared_fields.iter().filter_map(|f| desired::field_name(f)).collect();
        return Ok(Synced {
            outcome: Outcome::Ready,
            user_id: Some(user_id),
            record: Some(record),
            key: previous.key_secret_name.clone().zip(previous.key_hash.clone()),
            uncleared,
            created: false,
        });
    }

    let mut created = false;
    let (record, keys) = match ctx.litellm.user_info(&user_id).await? {
        None => {
            let body = desired::create_body(&user.spec, &user_id, &marker);
            let (answer, stored) = ctx.litellm.user_new(&body).await?;
            if answer == Created::Created {
                created = true;
                info!(user_id, "created LiteLLM user");
                // One event for the whole creation (the key is part of it): events are writes too.
                let note = match user.spec.key.enabled {
                    true => format!("Created LiteLLM user {user_id} with a key in Secret {}", user.key_secret_name()),
                    false => format!("Created LiteLLM user {user_id}"),
                };
                ctx.event(user, EventType::Normal, "Created", note).await;
            }
            let wants_teams = user.spec.teams.as_ref().is_some_and(|teams| !teams.is_empty());
            if answer == Created::Conflict || wants_teams {
                // A conflict is our own earlier attempt whose answer was lost, or someone else's user; and
                // /user/new silently skips teams it cannot join. Either way, look at what the proxy has.
                read_back(ctx, &user_id).await?
            } else {
                // The proxy's answer (or, if it lacks the user or our mark, what we sent) is the stored user:
                // saves a read.
                let sent = || serde_json::from_value(body).unwrap_or_default();
                let answered = stored.filter(|s| {
                    s.user_id.as_deref() == Some(user_id.as_str()) && desired::marked_owner(&s.metadata) == Some(&me)
                });
                (answered.unwrap_or_else(sent), Vec::new())
            }
        }
        Some(found) => found,
    };

    let claimed_before = previous.user_id.as_deref() == Some(user_id.as_str());
    match desired::marked_owner(&record.metadata) {
        Some(owner) if owner == me => {}
        // Someone replaced the user's metadata on the proxy; status shows the user is ours, so mark it again.
        None if claimed_before => info!(user_id, "LiteLLM user lost its ownership mark; restoring it"),
        Some(owner) if owner_exists(ctx, owner).await? => {
            return Ok(stalled(
                "OwnedByAnotherResource",
                format!(
                    "LiteLLM user {user_id} is managed by LiteLLMUser {owner}; two resources cannot manage one user"
                ),
            ));
        }
        _ if !user.spec.adopt => {
            return Ok(stalled(
                "UserExists",
                format!(
                    "LiteLLM user {user_id} already exists and is not managed by this operator; \
                     set spec.adopt: true to take it over"
                ),
            ));
        }
        _ => {
            info!(user_id, "adopting existing LiteLLM user");
            ctx.event(user, EventType::Normal, "Adopted", format!("Adopted existing LiteLLM user {user_id}")).await;
        }
    }

    let spec_changed = previous.observed_generation != user.metadata.generation;
    let changes = desired::changes(
        &user.spec,
        &user_id,
        &marker,
        &record,
        &previous.managed_fields,
        &previous.uncleared_fields,
        spec_changed,
    );
    let mut record = record;
    let mut uncleared = changes.uncleared.clone();
    if let Some(update) = &changes.update {
        if let Some(stored) = ctx.litellm.user_update(update).await? {
            uncleared.extend(desired::still_set(&user.spec, &stored, &changes.clearing));
            record = stored;
        }
        info!(user_id, fields = ?changes.changed, "updated LiteLLM user");
        ctx.event(user, EventType::Normal, "Updated", format!("Updated {}", changes.changed.join(", "))).await;
    }
    for team in &changes.join_teams {
        ctx.litellm.team_member_add(team, &user_id).await?;
    }
    for team in &changes.leave_teams {
        ctx.litellm.team_member_delete(team, &user_id).await?;
    }
    if !changes.join_teams.is_empty() || !changes.leave_teams.is_empty() {
        record.teams = user.spec.teams.clone().unwrap_or_default();
        ctx.event(user, EventType::Normal, "TeamsChanged", format!("Teams are now {}", record.teams.join(", "))).await;
    }

    let key = match user.spec.key.enabled {
        true => Some(sync_key(user, ctx, &user_id, &keys, &marker, previous, created).await?),
        false => None,
    };
    if let Some(Err(message)) = &key {
        return Ok(Synced {
            outcome: Outcome::Stalled { reason: "SecretConflict", message: message.clone() },
            user_id: Some(user_id),
            record: Some(record),
            key: None,
            uncleared,
            created,
        });
    }
    Ok(Synced {
        outcome: Outcome::Ready,
        user_id: Some(user_id),
        record: Some(record),
        key: key.and_then(Result::ok),
        uncleared,
        created,
    })
}

/// When a resource was last found in sync, for which spec, and with which key.
struct InSync {
    generation: Option<i64>,
    at: Instant,
    key: Option<(String, String)>,
}

/// A reconcile of a resource whose spec has not changed since it was last found in sync, within the resync
/// period, has nothing to do if the key Secret still holds the registered key. Such reconciles are mostly
/// the echoes of our own writes (status, Secret), often seen with a cached object older than those writes.
/// Returns how long to wait until the next resync, or `None` when real work is needed.
async fn still_in_sync(user: &LiteLLMUser, ctx: &Context) -> Result<Option<Duration>, Error> {
    let (since, key) = {
        let last = ctx.last_in_sync.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(&ObjectRef::from_obj(user)) {
            Some(in_sync) if in_sync.generation == user.metadata.generation => {
                (in_sync.at.elapsed(), in_sync.key.clone())
            }
            _ => return Ok(None),
        }
    };
    // The periodic resync itself must run: leave a margin for timer jitter.
    let window = ctx.settings.resync.saturating_sub(Duration::from_secs(1));
    if since >= window || !secret_holds_registered_key(user, ctx, key.as_ref()).await? {
        return Ok(None);
    }
    Ok(Some(ctx.settings.resync - since))
}

/// Whether the key Secret (when keys are on) is ours and holds the registered key: `expected` is the Secret's
/// name and the key's hash as last recorded.
async fn secret_holds_registered_key(
    user: &LiteLLMUser,
    ctx: &Context,
    expected: Option<&(String, String)>,
) -> Result<bool, Error> {
    let Some((expected_name, expected_hash)) = expected.filter(|_| user.spec.key.enabled) else {
        return Ok(!user.spec.key.enabled && expected.is_none());
    };
    let name = user.key_secret_name();
    if *expected_name != name {
        return Ok(false);
    }
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &namespace);
    let Some(secret) = secrets.get_opt(&name).await.map_err(kube_err("read the key Secret"))? else { return Ok(false) };
    let owned = secret.owner_references().iter().any(|o| Some(&o.uid) == user.metadata.uid.as_ref());
    Ok(owned && keys::key_in(&secret).map(|key| keys::key_hash(&key)).as_ref() == Some(expected_hash))
}

/// The cheap resync: when the resource was in sync and its spec has not changed since, one snapshot of all
/// users (paged `/user/list`) confirms the user still matches, with one key, and the Secret still holds it.
async fn unchanged_since_last_sync(
    user: &LiteLLMUser,
    ctx: &Context,
    previous: &LiteLLMUserStatus,
    user_id: &str,
    marker: &Value,
) -> Result<Option<UserRecord>, Error> {
    let was_ready = previous.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
    if !was_ready
        || previous.observed_generation != user.metadata.generation
        || previous.user_id.as_deref() != Some(user_id)
    {
        return Ok(None);
    }
    let Some(record) = ctx.directory.get(&ctx.litellm, user_id, ctx.settings.resync).await? else { return Ok(None) };
    let changes = desired::changes(
        &user.spec,
        user_id,
        marker,
        &record,
        &previous.managed_fields,
        &previous.uncleared_fields,
        false,
    );
    let in_sync = changes.update.is_none() && changes.join_teams.is_empty() && changes.leave_teams.is_empty();
    let keys_in_order = !user.spec.key.enabled || record.key_count == Some(1);
    let key = previous.key_secret_name.clone().zip(previous.key_hash.clone());
    if in_sync && keys_in_order && secret_holds_registered_key(user, ctx, key.as_ref()).await? {
        Ok(Some(record))
    } else {
        Ok(None)
    }
}

async fn read_back(ctx: &Context, user_id: &str) -> Result<(UserRecord, Vec<KeyRecord>), Error> {
    ctx.litellm.user_info(user_id).await?.ok_or_else(|| {
        Error::LiteLlm(ApiError::Status {
            endpoint: "/user/info",
            status: 503,
            message: format!("user {user_id} was created but cannot be read back yet"),
            retry_after: None,
        })
    })
}

/// Whether the LiteLLMUser named `namespace/name` exists.
async fn owner_exists(ctx: &Context, owner: &str) -> Result<bool, Error> {
    let Some((namespace, name)) = owner.split_once('/') else { return Ok(false) };
    let api: Api<LiteLLMUser> = Api::namespaced(ctx.kube.clone(), namespace);
    Ok(api.get_opt(name).await.map_err(kube_err("look up the owner of a LiteLLM user"))?.is_some())
}

/// Makes sure the Secret holds a key, that key is registered for the user, and no other key of the user is.
/// Returns the Secret's name and the key's hash, or a message when the Secret belongs to someone else.
async fn sync_key(
    user: &LiteLLMUser,
    ctx: &Context,
    user_id: &str,
    registered: &[KeyRecord],
    marker: &Value,
    previous: &LiteLLMUserStatus,
    just_created: bool,
) -> Result<Result<(String, String), String>, Error> {
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &namespace);
    let secret_name = user.key_secret_name();
    let owned_by_me = |secret: &Secret| {
        secret
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == user.metadata.uid.as_ref() && o.controller == Some(true))
    };

    let existing = secrets.get_opt(&secret_name).await.map_err(kube_err("read the key Secret"))?;
    let key = match &existing {
        Some(secret) if !owned_by_me(secret) => {
            return Ok(Err(format!(
                "Secret {secret_name} exists and is not owned by this LiteLLMUser; delete it or set spec.key.secretName"
            )));
        }
        Some(secret) => keys::key_in(secret),
        None => None,
    };
    // A key the proxy no longer has although status says it was registered was revoked there (say, because it
    // leaked): replace it rather than bring it back. A key never registered (we died between writing the
    // Secret and registering it) is registered as it is.
    let revoked = |key: &String| {
        let hash = keys::key_hash(key);
        previous.key_hash.as_ref() == Some(&hash) && !registered.iter().any(|k| k.token == hash)
    };
    let key = match key.filter(|key| !revoked(key)) {
        Some(key) => key,
        None => {
            // The Secret is written before LiteLLM learns the key: if we die in between, the next reconcile
            // registers the same key, and no key ever exists on the proxy that no Secret holds.
            let key = keys::generate_key().map_err(Error::Random)?;
            let secret = keys::key_secret(user, &secret_name, user_id, &key);
            let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            match existing {
                None => secrets.create(&pp, &secret).await.map_err(kube_err("create the key Secret"))?,
                Some(_) => {
                    secrets.replace(&secret_name, &pp, &secret).await.map_err(kube_err("rewrite the key Secret"))?
                }
            };
            key
        }
    };
    let hash = keys::key_hash(&key);

    if !registered.iter().any(|k| k.token == hash) {
        let mut extra = json!({ "metadata": { desired::OWNER_METADATA_KEY: marker } });
        if let Some(aliases) = &user.spec.aliases {
            extra["aliases"] = json!(aliases);
        }
        ctx.litellm.key_register(user_id, &key, &extra).await?;
        info!(user_id, key_hash = %hash, "registered key");
        if !just_created {
            let note = format!("Issued a key ({}) into Secret {secret_name}", short(&hash));
            ctx.event(user, EventType::Normal, "KeyIssued", note).await;
        }
    }
    let stale: Vec<String> =
        registered.iter().filter(|k| k.token != hash && !k.token.is_empty()).map(|k| k.token.clone()).collect();
    if !stale.is_empty() {
        ctx.litellm.key_delete(&stale).await?;
        info!(user_id, count = stale.len(), "revoked keys not held by the Secret");
        let hashes: Vec<&str> = stale.iter().map(|h| short(h)).collect();
        ctx.event(user, EventType::Normal, "KeyRevoked", format!("Revoked keys {}", hashes.join(", "))).await;
    }
    // A renamed Secret: the old one no longer holds a valid key.
    if let Some(old) = previous.key_secret_name.as_ref().filter(|old| **old != secret_name)
        && let Some(secret) = secrets.get_opt(old).await.map_err(kube_err("read the previous key Secret"))?
        && owned_by_me(&secret)
    {
        secrets.delete(old, &Default::default()).await.map_err(kube_err("delete the previous key Secret"))?;
    }
    Ok(Ok((secret_name, hash)))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Runs when the resource is deleted: deletes the LiteLLM user (and with it every key) unless the policy is
/// `Retain`, in which case the key Secret is released so it outlives the resource.
async fn cleanup(user: &LiteLLMUser, ctx: &Context) -> Result<Action, Error> {
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let me = format!("{namespace}/{}", user.name_any());
    let user_id = user.status.as_ref().and_then(|s| s.user_id.clone()).unwrap_or_else(|| user.litellm_user_id());
    ctx.metrics.forget_resource(&namespace, &user.name_any());
    ctx.last_in_sync.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from_obj(user));
    if user.spec.deletion_policy == DeletionPolicy::Retain {
        release_secret(user, ctx, &namespace).await?;
        info!(user_id, "resource deleted; LiteLLM user retained");
        return Ok(Action::await_change());
    }
    let claimed = user.status.as_ref().and_then(|s| s.user_id.as_deref()) == Some(user_id.as_str());
    match ctx.litellm.user_info(&user_id).await? {
        Some((record, _))
            if desired::marked_owner(&record.metadata) == Some(me.as_str())
                || (claimed && desired::marked_owner(&record.metadata).is_none()) =>
        {
            let existed = ctx.litellm.user_delete(&user_id).await?;
            info!(user_id, existed, "deleted LiteLLM user");
        }
        Some(_) => info!(user_id, "LiteLLM user is not managed by this resource; left untouched"),
        None => {}
    }
    Ok(Action::await_change())
}

/// Removes this resource's owner reference from its key Secret, so garbage collection keeps it.
async fn release_secret(user: &LiteLLMUser, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), namespace);
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
