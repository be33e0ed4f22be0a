//! Decide: pure functions from (spec, status, observation) to a plan — who owns the user, what to create or
//! update, what to do with keys (keep, promote a pending key, issue, rotate, revoke after a grace period), and
//! the status the resource has once the plan is carried out. No I/O and no clock: everything comes in as
//! arguments, so each rule is a table-driven unit test.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{
    Settings, claim,
    conditions::{self, EventReason, Extras, Outcome, Reason},
    desired::{self, Changes},
    observe::{ClaimView, ProxyView, SecretView, World},
};
use crate::{
    crd::{LiteLLMUser, LiteLLMUserStatus, ProxyPolicy, ROTATE_ANNOTATION, RetiringKey, UnmanagedKeys, UsageSummary},
    litellm::{KeyRecord, UserRecord},
    policy,
};

/// How long an old key keeps working after a rotation when the spec does not say.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(300);

/// Everything a decision depends on.
pub struct Facts<'a> {
    pub user: &'a LiteLLMUser,
    pub status: &'a LiteLLMUserStatus,
    pub world: &'a World,
    pub now: Timestamp,
    pub settings: &'a Settings,
    /// The hash of the key act will issue, if the plan issues one.
    pub fresh_key: &'a str,
    /// The proxy's name and the platform's policy for it.
    pub proxy: &'a str,
    pub policy: &'a ProxyPolicy,
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    /// The directory snapshot shows something to do: read the proxy's user itself before acting on it.
    LookCloser,
    Act(Box<Plan>),
}

/// What to do, in the order act does it, and the status once done.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Claim the user id (replacing this stale claim). A plan that claims does nothing else: the next round
    /// looks again as the claim's holder.
    pub claim: Option<Option<claim::Claim>>,
    /// `POST /user/new` with this body.
    pub create: Option<Value>,
    /// After creating, read the user back before going on: LiteLLM silently skips teams it cannot join.
    pub look_after_create: bool,
    /// `/user/update` and team membership changes.
    pub changes: Changes,
    pub key: KeyPlan,
    /// A Secret the spec no longer names, which this resource controls.
    pub delete_previous_secret: Option<String>,
    /// Refresh usage from `/user/daily/activity`.
    pub read_usage: bool,
    /// The status once the plan is carried out.
    pub status: LiteLLMUserStatus,
    pub outcome: Outcome,
    /// Normal events worth a person's attention (transitions only).
    pub events: Vec<Note>,
    pub requeue: Duration,
}

impl Plan {
    /// Whether carrying it out writes anything outside the resource's status.
    pub fn writes(&self) -> bool {
        self.claim.is_some()
            || self.create.is_some()
            || self.changes.update.is_some()
            || !self.changes.join_teams.is_empty()
            || !self.changes.leave_teams.is_empty()
            || self.key.issue.is_some()
            || self.key.take_back
            || self.key.aliases.is_some()
            || !self.key.revoke.is_empty()
            || self.delete_previous_secret.is_some()
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct KeyPlan {
    pub issue: Option<Issue>,
    /// Take back a Secret released by an earlier resource of this name, keeping its key.
    pub take_back: bool,
    /// Record the Secret's current version in status (it was read and holds the right key).
    pub secret_version: Option<String>,
    /// `/key/update` of the key with this hash: new aliases.
    pub aliases: Option<(String, Value)>,
    /// Key hashes of this user to revoke now.
    pub revoke: Vec<String>,
    /// Why the key that should be replaced is not replaced yet, and until when.
    pub deferred: Option<String>,
}

/// Issuing the fresh key: record it, register it, then put it into the Secret.
#[derive(Debug, PartialEq)]
pub struct Issue {
    /// The status to write before the key is registered, recording it as pending (and the key it replaces as
    /// retiring), so that after a crash the operator knows the key for its own. `None` for a brand-new user,
    /// whose only keys can be the operator's.
    pub pending_status: Option<LiteLLMUserStatus>,
    /// Fields sent with `/key/generate` besides the user id and the key.
    pub register: Value,
}

/// An Event to record about the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: EventReason,
    pub text: String,
}

impl Note {
    fn normal(reason: EventReason, text: String) -> Self {
        Note { warning: false, reason, text }
    }

    fn warning(reason: EventReason, text: String) -> Self {
        Note { warning: true, reason, text }
    }

    /// The Warning that reports an outcome other than in sync.
    pub fn outcome(outcome: &Outcome) -> Self {
        Note { warning: true, reason: EventReason::Outcome(outcome.reason()), text: outcome.message().into() }
    }
}

pub fn decide(f: &Facts) -> Decision {
    let user = f.user;
    let user_id = user.litellm_user_id();
    let mut status = f.status.clone();
    status.observed_generation = user.metadata.generation;

    // Nothing is sent to the proxy for a resource that asks for more than the platform allows, or for what the
    // operator cannot compute with, and it does not even claim the user id. A resource that already manages a
    // user keeps it (status.userId), untouched.
    if let Some(invalid) = user.spec.invalid_field() {
        return Decision::Act(Box::new(stalled(f, status, Reason::InvalidSpec, invalid.to_string())));
    }
    let namespace = user.namespace().unwrap_or_default();
    let labels = f.world.namespace_labels.as_ref();
    if let Err(violation) = policy::check(f.policy, f.proxy, &namespace, labels, &user.spec, &user_id) {
        return Decision::Act(Box::new(stalled(f, status, Reason::PolicyViolation, violation.message)));
    }
    if let Some(usage) = &f.world.namespace_usage
        && let Err(violation) = policy::check_quota(f.policy, f.proxy, &namespace, &user.spec, usage)
    {
        return Decision::Act(Box::new(stalled(f, status, Reason::PolicyViolation, violation.message)));
    }

    match &f.world.claim {
        ClaimView::Ours => {}
        ClaimView::Free => return Decision::Act(Box::new(claim_plan(f, status, None))),
        ClaimView::Stale(stale) => return Decision::Act(Box::new(claim_plan(f, status, Some(stale.clone())))),
        ClaimView::Theirs { holder } => {
            let message = format!(
                "LiteLLM user {user_id} is managed by LiteLLMUser {holder}; two resources cannot manage one user"
            );
            return Decision::Act(Box::new(stalled(f, status, Reason::OwnedByAnotherResource, message)));
        }
    }

    let marker = desired::owner_marker(&user.namespaced_name());
    let mut plan = Plan::default();
    let (record, proxy_keys, creating, from_snapshot) = match &f.world.proxy {
        ProxyView::NotRead => return Decision::LookCloser,
        ProxyView::Absent | ProxyView::Unseen => {
            if let Some(message) = &f.world.create_conflict {
                let message = format!("LiteLLM refused to create user {user_id}: {message}");
                return Decision::Act(Box::new(stalled(f, status, Reason::LiteLLMRejected, message)));
            }
            let body = desired::create_body(&user.spec, &user_id, &marker);
            let record: UserRecord = serde_json::from_value(body.clone()).unwrap_or_default();
            plan.look_after_create = user.spec.teams.as_ref().is_some_and(|teams| !teams.is_empty());
            plan.create = Some(body);
            let note = match user.spec.key.enabled {
                true => format!("Created LiteLLM user {user_id} with a key in Secret {}", user.key_secret_name()),
                false => format!("Created LiteLLM user {user_id}"),
            };
            plan.events.push(Note::normal(EventReason::Created, note));
            (record, Vec::new(), true, false)
        }
        ProxyView::Present { record, keys, from_snapshot } => {
            match ownership(f, record) {
                Ownership::Ours => {}
                Ownership::Adopt => plan
                    .events
                    .push(Note::normal(EventReason::Adopted, format!("Adopted existing LiteLLM user {user_id}"))),
                Ownership::Stalled(reason, message) => {
                    return Decision::Act(Box::new(stalled(f, status, reason, message)));
                }
            }
            if let Err(violation) = policy::check_on_proxy(f.policy, f.proxy, &namespace, &user.spec, record) {
                return Decision::Act(Box::new(stalled(f, status, Reason::PolicyViolation, violation.message)));
            }
            ((**record).clone(), keys.clone(), false, *from_snapshot)
        }
    };
    if plan.look_after_create {
        // Creating is all this round does; the next one reads the user back and carries on.
        status.last_sync_time = Some(f.now.to_string());
        plan.status = status;
        plan.outcome = Outcome::Progressing { reason: Reason::Synced, message: "Creating the LiteLLM user".into() };
        return Decision::Act(Box::new(plan));
    }

    if !creating {
        let spec_changed = f.status.synced_generation != user.metadata.generation;
        plan.changes = desired::changes(
            &user.spec,
            &user_id,
            &marker,
            &record,
            &f.status.managed_fields,
            &f.status.uncleared_fields,
            spec_changed,
        );
        if let Some(_update) = &plan.changes.update {
            plan.events
                .push(Note::normal(EventReason::Updated, format!("Updated {}", plan.changes.changed.join(", "))));
        }
        if !plan.changes.join_teams.is_empty() || !plan.changes.leave_teams.is_empty() {
            let teams = user.spec.teams.clone().unwrap_or_default().join(", ");
            plan.events.push(Note::normal(EventReason::TeamsChanged, format!("Teams are now {teams}")));
        }
    }

    let mut outcome = Outcome::Ready;
    match keys(f, &mut status, &proxy_keys, creating, &marker) {
        Ok((key_plan, notes)) => {
            if let Some(message) = &key_plan.deferred {
                outcome = Outcome::Progressing { reason: Reason::KeyReplacementDeferred, message: message.clone() };
            }
            plan.key = key_plan;
            plan.events.extend(notes);
        }
        Err(message) => outcome = Outcome::stalled(Reason::SecretConflict, message),
    }
    plan.delete_previous_secret = f.world.previous_secret.clone().filter(|_| outcome == Outcome::Ready);

    if from_snapshot && plan.writes() {
        return Decision::LookCloser;
    }

    status.user_id = Some(user_id);
    status.proxy = Some(f.proxy.to_owned());
    into_status(&mut status, &record);
    if outcome == Outcome::Ready {
        status.managed_fields = desired::managed_fields(&user.spec);
        status.managed_fields.extend(plan.changes.uncleared.iter().map(|f| f.to_string()));
        status.managed_fields.sort();
        status.managed_fields.dedup();
        status.uncleared_fields = plan.changes.uncleared.iter().map(|f| f.to_string()).collect();
        status.synced_generation = user.metadata.generation;
    }
    if creating {
        let usage = UsageSummary {
            window_days: f.settings.usage_window_days,
            read_at: Some(f.now.to_string()),
            spend_at_read: Some(0.0),
            ..UsageSummary::default()
        };
        status.usage = Some(usage);
    } else {
        plan.read_usage = usage_due(f, &record);
    }
    if plan.writes() {
        status.last_sync_time = Some(f.now.to_string());
    }
    plan.events.extend(budget_notes(f, &record));
    plan.requeue = requeue(f, &status, &outcome);
    plan.outcome = outcome;
    plan.status = status;
    finish_conditions(f, &mut plan);
    Decision::Act(Box::new(plan))
}

/// The conditions for a plan's outcome, from its status (once act knows how the proxy stored the user).
pub fn finish_conditions(f: &Facts, plan: &mut Plan) {
    let uncleared: Vec<&str> = plan.status.uncleared_fields.iter().map(String::as_str).collect();
    let record = UserRecord {
        spend: plan.status.spend.unwrap_or_default(),
        max_budget: plan.status.max_budget,
        budget_reset_at: plan.status.budget_reset_at.clone(),
        ..UserRecord::default()
    };
    let extras = Extras { uncleared: &uncleared, budget: budget(&record), soft_budget: soft_budget(f, &record) };
    plan.status.conditions =
        conditions::conditions(&f.status.conditions, &plan.outcome, &extras, f.user.metadata.generation, f.now);
}

enum Ownership {
    Ours,
    Adopt,
    Stalled(Reason, String),
}

fn ownership(f: &Facts, record: &UserRecord) -> Ownership {
    let user_id = f.user.litellm_user_id();
    let me = claim::holder(f.user);
    match desired::marked_owner(&record.metadata) {
        Some(owner) if owner == me => Ownership::Ours,
        // Unmarked but recorded in status: an adopted user, which is marked only along with a change, or one
        // whose metadata someone replaced on the proxy.
        None if f.status.user_id.as_deref() == Some(user_id.as_str()) => Ownership::Ours,
        Some(owner) if f.world.marked_owner_exists => Ownership::Stalled(
            Reason::OwnedByAnotherResource,
            format!("LiteLLM user {user_id} is managed by LiteLLMUser {owner}; two resources cannot manage one user"),
        ),
        _ if !f.user.spec.adopt => Ownership::Stalled(
            Reason::UserExists,
            format!(
                "LiteLLM user {user_id} already exists and is not managed by this operator; set spec.adopt: true \
                 to take it over"
            ),
        ),
        _ => Ownership::Adopt,
    }
}

fn claim_plan(f: &Facts, status: LiteLLMUserStatus, stale: Option<claim::Claim>) -> Plan {
    let outcome = Outcome::Progressing { reason: Reason::Synced, message: "Claiming the LiteLLM user id".into() };
    Plan { claim: Some(stale), status, outcome, requeue: f.settings.resync, ..Plan::default() }
}

/// A plan that only reports why nothing can be done. The resource's claim on a user it does not manage is not
/// recorded, so deleting it never touches that user.
fn stalled(f: &Facts, mut status: LiteLLMUserStatus, reason: Reason, message: String) -> Plan {
    let outcome = Outcome::stalled(reason, message);
    status.conditions =
        conditions::conditions(&f.status.conditions, &outcome, &Extras::default(), f.user.metadata.generation, f.now);
    Plan { status, outcome, requeue: f.settings.resync, ..Plan::default() }
}

/// The key steps, and the key fields of `status` once they are done. `Err` when the Secret's name is taken.
fn keys(
    f: &Facts,
    status: &mut LiteLLMUserStatus,
    proxy_keys: &[KeyRecord],
    creating: bool,
    marker: &Value,
) -> Result<(KeyPlan, Vec<Note>), String> {
    let user = f.user;
    let mut plan = KeyPlan::default();
    let mut notes = Vec::new();
    if !user.spec.key.enabled {
        // Keys off: the operator neither creates nor deletes keys of this user.
        status.key_secret_name = None;
        status.key_hash = None;
        status.pending_key_hash = None;
        status.key_secret_version = None;
        status.key_issued_at = None;
        status.next_rotation_at = None;
        status.retiring_keys.clear();
        return Ok((plan, notes));
    }
    let name = user.key_secret_name();
    let live: BTreeSet<&str> =
        proxy_keys.iter().filter(|k| !k.token.is_empty() && !expired(k, f.now)).map(|k| k.token.as_str()).collect();
    let is_live = |hash: &str| live.contains(hash);
    let previous = f.status;
    let current = previous.key_hash.as_deref().filter(|_| previous.key_secret_name.as_deref() == Some(name.as_str()));
    let pending = previous.pending_key_hash.as_deref();
    let requested =
        user.annotations().get(ROTATE_ANNOTATION).filter(|v| previous.rotation_request.as_ref() != Some(*v));

    enum Found<'a> {
        Keep(&'a str),
        Promote(&'a str),
        TakeBack(&'a str),
        Replace(&'static str),
    }
    let found = match &f.world.secret {
        SecretView::Foreign => {
            return Err(format!(
                "Secret {name} exists and is not managed by this LiteLLMUser; delete it or set spec.key.secretName"
            ));
        }
        SecretView::NotWanted | SecretView::Absent => Found::Replace("the Secret was missing"),
        SecretView::Released { key_hash: Some(hash), .. } if current.is_none() && is_live(hash) => {
            Found::TakeBack(hash)
        }
        SecretView::Released { .. } => Found::Replace("the released Secret held no key of this user"),
        SecretView::Owned { key_hash: Some(hash), .. } if Some(hash.as_str()) == current && is_live(hash) => {
            Found::Keep(hash)
        }
        SecretView::Owned { key_hash: Some(hash), .. } if Some(hash.as_str()) == pending && is_live(hash) => {
            Found::Promote(hash)
        }
        SecretView::Owned { key_hash: Some(hash), .. } if Some(hash.as_str()) == current => {
            Found::Replace("its key was revoked or expired on the proxy")
        }
        SecretView::Owned { .. } => Found::Replace("the Secret did not hold a key the operator issued"),
    };
    // The Secret's version is recorded only when it holds the key kept: a Secret whose key is being replaced
    // is written anew, or (while the replacement waits) must be looked at again.
    if let (Found::Keep(_) | Found::Promote(_), SecretView::Owned { resource_version, secret: Some(_), .. }) =
        (&found, &f.world.secret)
    {
        plan.secret_version = Some(resource_version.clone());
    }

    let grace = grace_period(user);
    let mut retiring = previous.retiring_keys.clone();
    let mut revoke_now: Vec<String> = Vec::new();
    // A rotation asked for sooner than the policy's least interval after the key was issued waits until then.
    let mut request_waits_until = None;
    let mut reissue_waits_until = None;
    let kept = match found {
        Found::Keep(hash) | Found::Promote(hash) | Found::TakeBack(hash) => {
            let issued = match found {
                Found::Keep(_) => previous.key_issued_at.as_deref().and_then(|t| t.parse().ok()).unwrap_or(f.now),
                _ => f.now,
            };
            if matches!(found, Found::TakeBack(_)) {
                plan.take_back = true;
                notes.push(Note::normal(
                    EventReason::KeyTakenBack,
                    format!("Took back Secret {name} and its key ({})", short(hash)),
                ));
            }
            let due_by_schedule = next_rotation(f, issued).is_some_and(|at| at <= f.now);
            let request_allowed_at = requested.and_then(|_| later(issued, f.policy.keys.min_rotation_interval()));
            let on_request = requested.is_some() && request_allowed_at.is_none_or(|at| at <= f.now);
            if !on_request && requested.is_some() {
                request_waits_until = request_allowed_at;
            }
            if on_request || due_by_schedule {
                let revoke_at = later(f.now, grace).unwrap_or(f.now);
                retiring.push(RetiringKey { hash: hash.to_owned(), revoke_at: revoke_at.to_string() });
                let why = if on_request { "on request" } else { "on schedule" };
                notes.push(Note::normal(
                    EventReason::KeyRotated,
                    format!(
                        "Rotated the key in Secret {name} {why}: new key {}, the old key ({}) works until {revoke_at}",
                        short(f.fresh_key),
                        short(hash)
                    ),
                ));
                None
            } else {
                status.key_issued_at = Some(issued.to_string());
                Some(hash.to_owned())
            }
        }
        Found::Replace(why) => {
            // A key replaced sooner than the policy's least rotation interval after the last one was issued
            // waits until then, as a rotation request does: otherwise deleting the Secret, or the key, in a
            // loop would have the operator mint keys without end. The current key keeps working meanwhile.
            let last_issued = previous.key_issued_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
            let allowed_at = last_issued.and_then(|at| later(at, f.policy.keys.min_rotation_interval()));
            match (current.filter(|_| !creating), allowed_at.filter(|at| *at > f.now)) {
                (Some(hash), Some(at)) => {
                    reissue_waits_until = Some(at);
                    plan.deferred = Some(format!(
                        "A new key goes into Secret {name} at {at} ({why}): keys are replaced at most once per \
                         policy.keys.minRotationInterval"
                    ));
                    Some(hash.to_owned())
                }
                _ => {
                    if !creating {
                        notes.push(Note::normal(
                            EventReason::KeyIssued,
                            format!("Issued a new key ({}) into Secret {name}: {why}", short(f.fresh_key)),
                        ));
                    }
                    None
                }
            }
        }
    };

    let current_hash = match kept {
        Some(hash) => {
            if let Some((hash, aliases)) = alias_change(f, proxy_keys, &hash) {
                plan.aliases = Some((hash, aliases));
            }
            hash
        }
        None => {
            let mut register = json!({ "metadata": { desired::OWNER_METADATA_KEY: marker } });
            if let Some(aliases) = &user.spec.aliases {
                register["aliases"] = json!(aliases);
            }
            if let Some(duration) = &user.spec.key.duration {
                register["duration"] = json!(duration);
            }
            let pending_status = (!creating).then(|| {
                let mut pending = previous.clone();
                pending.pending_key_hash = Some(f.fresh_key.to_owned());
                pending.retiring_keys = retiring.clone();
                pending.observed_generation = user.metadata.generation;
                pending
            });
            plan.issue = Some(Issue { pending_status, register });
            status.key_issued_at = Some(f.now.to_string());
            status.rotation_request = user.annotations().get(ROTATE_ANNOTATION).cloned();
            f.fresh_key.to_owned()
        }
    };

    // Retiring keys stay until their time; a key that is current again, or gone from the proxy, needs nothing.
    let mut still_retiring = Vec::new();
    for key in retiring {
        let due = key.revoke_at.parse::<Timestamp>().map_or(true, |at| at <= f.now);
        if key.hash == current_hash || !is_live(&key.hash) {
            continue;
        }
        if due { revoke_now.push(key.hash) } else { still_retiring.push(key) }
    }
    // At most `keys.maxLiveKeys` working keys: the oldest old keys go before their grace period ends.
    let most_retiring = f.policy.keys.max_live_keys().saturating_sub(1);
    while still_retiring.len() > most_retiring {
        let oldest = still_retiring
            .iter()
            .enumerate()
            .min_by_key(|(_, key)| key.revoke_at.parse::<Timestamp>().ok())
            .map_or(0, |(at, _)| at);
        revoke_now.push(still_retiring.remove(oldest).hash);
    }
    // Every other key of the user goes: a pending key whose delivery was cut off, the key of a Secret that was
    // deleted or overwritten, and (unless the spec keeps them) strays issued elsewhere. Only this user's keys
    // are ever revoked.
    let issued_here = issued_by_this_resource(f, proxy_keys);
    for token in &live {
        let wanted = *token == current_hash || still_retiring.iter().any(|k| k.hash == *token);
        let may_go = user.spec.unmanaged_keys() == UnmanagedKeys::Revoke || issued_here.contains(token);
        if !wanted && may_go && !revoke_now.iter().any(|h| h == token) {
            revoke_now.push((*token).to_owned());
        }
    }
    if !revoke_now.is_empty() {
        let hashes: Vec<&str> = revoke_now.iter().map(|h| short(h)).collect();
        notes.push(Note::normal(EventReason::KeyRevoked, format!("Revoked keys {}", hashes.join(", "))));
    }
    plan.revoke = revoke_now;

    status.key_secret_name = Some(name);
    status.key_hash = Some(current_hash);
    status.pending_key_hash = None;
    status.retiring_keys = still_retiring;
    let issued = status.key_issued_at.as_deref().and_then(|t| t.parse().ok()).unwrap_or(f.now);
    let next = [next_rotation(f, issued), request_waits_until, reissue_waits_until].into_iter().flatten().min();
    status.next_rotation_at = next.map(|at| at.to_string());
    Ok((plan, notes))
}

/// The hashes of the keys this resource issued: those carrying its mark in their metadata, and those its
/// status records (a key registered by an older operator, or whose mark someone removed, is still known).
fn issued_by_this_resource<'a>(f: &'a Facts, proxy_keys: &'a [KeyRecord]) -> BTreeSet<&'a str> {
    let me = claim::holder(f.user);
    let marked = proxy_keys.iter().filter(|k| k.owner.as_deref() == Some(me.as_str())).map(|k| k.token.as_str());
    let status = f.status;
    let recorded = [status.key_hash.as_deref(), status.pending_key_hash.as_deref()].into_iter().flatten();
    marked.chain(recorded).chain(status.retiring_keys.iter().map(|k| k.hash.as_str())).collect()
}

/// The aliases the key should have, when they differ from what the proxy has.
fn alias_change(f: &Facts, proxy_keys: &[KeyRecord], hash: &str) -> Option<(String, Value)> {
    let managed = f.status.managed_fields.iter().any(|field| field == "aliases");
    let desired = match &f.user.spec.aliases {
        Some(aliases) => json!(aliases),
        None if managed => json!({}),
        None => return None,
    };
    let actual = proxy_keys.iter().find(|k| k.token == hash).map(|k| Value::Object(k.aliases.clone()))?;
    (actual != desired).then(|| (hash.to_owned(), json!({ "aliases": desired })))
}

/// When the key issued at `issued` is due for rotation: `rotation.every` after issue, or early enough before
/// `key.duration` ends that the old key outlives its grace period.
fn next_rotation(f: &Facts, issued: Timestamp) -> Option<Timestamp> {
    let key = &f.user.spec.key;
    let every = key.rotation.as_ref().and_then(|r| r.every.as_deref()).and_then(spec_duration);
    let before_expiry = key.duration.as_deref().and_then(spec_duration).map(|lifetime| {
        let margin = grace_period(f.user).saturating_add(lifetime / 10);
        lifetime.saturating_sub(margin).max(lifetime / 2)
    });
    [every, before_expiry].into_iter().flatten().min().and_then(|after| later(issued, after))
}

/// How long an old key keeps working after a rotation.
fn grace_period(user: &LiteLLMUser) -> Duration {
    let grace = user.spec.key.rotation.as_ref().and_then(|r| r.grace_period.as_deref());
    grace.and_then(spec_duration).unwrap_or(DEFAULT_GRACE_PERIOD)
}

/// A duration of the spec. [`LiteLLMUserSpec::invalid_field`](crate::crd::LiteLLMUserSpec::invalid_field) has
/// refused the spec before any decision when one does not parse or is too long; this never sees such a value.
fn spec_duration(text: &str) -> Option<Duration> {
    crate::duration::parse_spec(text, true).ok()
}

/// `after` past `at`, or `None` past the last representable moment (which no valid spec reaches).
fn later(at: Timestamp, after: Duration) -> Option<Timestamp> {
    at.checked_add(SignedDuration::try_from(after).ok()?).ok()
}

fn expired(key: &KeyRecord, now: Timestamp) -> bool {
    key.expires.as_deref().and_then(crate::litellm::parse_time).is_some_and(|at| at <= now)
}

/// The user's budget fields as the proxy reports them.
pub fn into_status(status: &mut LiteLLMUserStatus, record: &UserRecord) {
    status.spend = Some(record.spend);
    status.max_budget = record.max_budget;
    status.budget_reset_at = record.budget_reset_at.clone();
}

fn budget(record: &UserRecord) -> Option<(bool, String)> {
    let budget = record.max_budget?;
    let exceeded = record.spend >= budget;
    let reset = record.budget_reset_at.as_deref().map(|at| format!("; the budget resets at {at}")).unwrap_or_default();
    let message = match exceeded {
        true => format!("Spent {:.4} of {budget} USD: the proxy refuses the user's requests{reset}", record.spend),
        false => format!("Spent {:.4} of {budget} USD{reset}", record.spend),
    };
    Some((exceeded, message))
}

fn soft_budget(f: &Facts, record: &UserRecord) -> Option<(bool, String)> {
    let soft = f.user.spec.soft_budget?;
    Some((record.spend >= soft, format!("Spent {:.4} of a soft budget of {soft} USD", record.spend)))
}

/// A Warning when spend crosses a budget: once per budget period, since spend starts again from zero.
fn budget_notes(f: &Facts, record: &UserRecord) -> Vec<Note> {
    let was = |type_| conditions::is_true(&f.status.conditions, type_);
    let mut notes = Vec::new();
    if let Some((true, message)) = budget(record)
        && !was(conditions::BUDGET_EXCEEDED)
    {
        notes.push(Note::warning(EventReason::BudgetExceeded, message));
    }
    if let Some((true, message)) = soft_budget(f, record)
        && !was(conditions::SOFT_BUDGET_EXCEEDED)
    {
        notes.push(Note::warning(EventReason::SoftBudgetExceeded, message));
    }
    notes
}

/// Usage is read again once spend has moved since the last read, at most once per interval (spread by a
/// per-resource offset so that users created together are not read together).
fn usage_due(f: &Facts, record: &UserRecord) -> bool {
    let Some(usage) = &f.status.usage else { return true };
    if usage.spend_at_read.is_some_and(|spend| (spend - record.spend).abs() < 1e-9) {
        return false;
    }
    let Some(read) = usage.read_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok()) else { return true };
    let spread = spread(f.user, f.settings.usage_refresh / 5);
    let interval =
        SignedDuration::try_from(f.settings.usage_refresh.saturating_add(spread)).unwrap_or(SignedDuration::MAX);
    f.now.duration_since(read) >= interval
}

/// A stable offset in `[0, range)` for this resource.
fn spread(user: &LiteLLMUser, range: Duration) -> Duration {
    let seed = crate::text::sha256_hex(&user.uid().unwrap_or_default());
    let fraction = u64::from_str_radix(&seed[..8], 16).unwrap_or_default() as f64 / u32::MAX as f64;
    range.mul_f64(fraction.clamp(0.0, 1.0))
}

fn requeue(f: &Facts, status: &LiteLLMUserStatus, outcome: &Outcome) -> Duration {
    let wait = f.settings.resync;
    let waits_for_a_key = matches!(outcome, Outcome::Progressing { reason: Reason::KeyReplacementDeferred, .. });
    match next_key_deadline(status) {
        Some(at) if *outcome == Outcome::Ready || waits_for_a_key => {
            let until = Duration::try_from(at.duration_since(f.now)).unwrap_or_default();
            wait.min(until.max(Duration::from_secs(1)))
        }
        _ => wait,
    }
}

/// The next moment a key needs the operator: a retiring key's revocation, or the next rotation.
fn next_key_deadline(status: &LiteLLMUserStatus) -> Option<Timestamp> {
    let times = status.retiring_keys.iter().map(|k| k.revoke_at.as_str()).chain(status.next_rotation_at.as_deref());
    times.filter_map(|t| t.parse::<Timestamp>().ok()).min()
}

/// The first characters of a key hash, enough for a person to tell keys apart.
pub fn short(hash: &str) -> &str {
    hash.char_indices().nth(12).map_or(hash, |(end, _)| &hash[..end])
}

/// When a resource whose spec has not changed since it was last found in sync needs no look at all: within
/// the resync period, with its Secret where the operator left it, and no rotation or revocation due. Such
/// reconciles are mostly the echoes of the operator's own writes. Returns how long to wait, or `None` when
/// the world must be looked at.
pub fn settled(
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    secret_version: Option<&str>,
    since_last_look: Option<Duration>,
    now: Timestamp,
    settings: &Settings,
) -> Option<Duration> {
    let since = since_last_look?;
    if !as_left(user, status, secret_version) || since >= resync_window(settings) {
        return None;
    }
    let wait = settings.resync - since;
    match next_key_deadline(status) {
        Some(at) => {
            Duration::try_from(at.duration_since(now)).ok().filter(|d| !d.is_zero()).map(|until| wait.min(until))
        }
        None => Some(wait),
    }
}

/// Whether the only reason to look at the world is that the resync period has passed: the resource is as the
/// operator left it, and no rotation or revocation is due. Such a look only confirms that nothing changed on
/// the proxy, which the directory's next snapshot can do without a call of its own.
pub fn only_resync_due(
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    secret_version: Option<&str>,
    since_last_look: Option<Duration>,
    now: Timestamp,
    settings: &Settings,
) -> bool {
    since_last_look.is_some_and(|since| since >= resync_window(settings))
        && as_left(user, status, secret_version)
        && next_key_deadline(status).is_none_or(|at| at > now)
}

/// A resync comes a second early rather than a moment late.
fn resync_window(settings: &Settings) -> Duration {
    settings.resync.saturating_sub(Duration::from_secs(1))
}

/// Whether the resource is as the operator left it in sync: the same spec, Ready, no key pending, no rotation
/// asked for, and its Secret (if any) at the version the status records.
fn as_left(user: &LiteLLMUser, status: &LiteLLMUserStatus, secret_version: Option<&str>) -> bool {
    let in_sync = status.synced_generation.is_some()
        && status.synced_generation == user.metadata.generation
        && status.observed_generation == user.metadata.generation
        && conditions::is_true(&status.conditions, conditions::READY)
        && status.pending_key_hash.is_none()
        && user.annotations().get(ROTATE_ANNOTATION) == status.rotation_request.as_ref();
    let secret_in_place = match user.spec.key.enabled {
        true => secret_version.is_some() && secret_version == status.key_secret_version.as_deref(),
        false => status.key_hash.is_none(),
    };
    in_sync && secret_in_place
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_props.rs"]
mod props;
