//! Act: carries out a plan in the crash-safe order, and is the only place that writes. The order is what
//! makes a crash at any line harmless:
//! - the claim comes before anything touches the proxy, so a resource that loses it never does;
//! - a new key is recorded as pending in status before it is registered, registered before it goes into the
//!   Secret (so the Secret never holds a key the proxy refuses), and becomes the status' key last; a key cut
//!   off anywhere in between is known for the operator's own and revoked on the next look;
//! - an old key is revoked only after its replacement is in the Secret.

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{
    Context, Error, FIELD_MANAGER, Proxy,
    claim::Claimed,
    decide::{self, Plan},
    desired,
    keys::{self, FreshKey},
    observe::{Hints, SecretView, World},
};
use crate::{
    crd::{LiteLLMUser, LiteLLMUserStatus, UsageSummary},
    litellm::{ApiError, Created, UserRecord},
};

/// How a plan ended.
pub enum Acted {
    /// Carried out; `plan.status` is the status to write.
    Done(Box<Plan>),
    /// Stopped early because what it learned changes the picture: look again with these hints.
    Again(Hints),
}

/// Carries out `plan`. `written` is the status as last written to the API server, updated when the plan
/// writes an intermediate status, so that a failure later on is reported on top of it.
pub async fn run(
    ctx: &Context,
    proxy: &Proxy,
    user: &LiteLLMUser,
    world: &World,
    mut plan: Plan,
    fresh: &FreshKey,
    written: &mut LiteLLMUserStatus,
) -> Result<Acted, Error> {
    let user_id = user.litellm_user_id();
    if let Some(stale) = &plan.claim {
        return Ok(match proxy.claims.acquire(user, &user_id, stale.as_ref()).await? {
            Claimed::Won => {
                info!(user_id, "claimed the LiteLLM user id");
                Acted::Again(Hints { claimed: true, ..Hints::default() })
            }
            Claimed::Lost => Acted::Again(Hints { claim_taken: true, ..Hints::default() }),
        });
    }

    let mut stored: Option<UserRecord> = None;
    if let Some(body) = &plan.create {
        let created = proxy.client.user_new(body).await;
        if matches!(created, Err(ApiError::Transport { .. })) {
            ctx.creation_unanswered(user);
        }
        match created? {
            Created::Created(answer) => {
                info!(user_id, "created LiteLLM user");
                // The answer echoes what was sent; it adds what the proxy computed (such as budget_reset_at).
                let me = super::claim::holder(user);
                stored = answer
                    .filter(|a| {
                        a.user_id.as_deref() == Some(user_id.as_str())
                            && desired::marked_owner(&a.metadata) == Some(&me)
                    })
                    .map(|a| *a);
            }
            Created::Conflict { message } => {
                if message.contains("email") {
                    log_email_holders(proxy, user, &user_id).await;
                }
                let learned =
                    Hints { claimed: true, read_proxy: true, create_conflict: Some(message), claim_taken: false };
                return Ok(Acted::Again(learned));
            }
        }
        if plan.look_after_create {
            publish(ctx, user, &plan);
            return Ok(Acted::Again(Hints { claimed: true, read_proxy: true, ..Hints::default() }));
        }
    }

    if let Some(update) = &plan.changes.update {
        if let Some(record) = proxy.client.user_update(update).await? {
            let still = desired::still_set(&user.spec, &record, &plan.changes.clearing);
            for field in still {
                if !plan.status.uncleared_fields.iter().any(|f| f == field) {
                    plan.status.uncleared_fields.push(field.to_owned());
                }
                if !plan.status.managed_fields.iter().any(|f| f == field) {
                    plan.status.managed_fields.push(field.to_owned());
                }
            }
            stored = Some(record);
        }
        info!(user_id, fields = ?plan.changes.changed, "updated LiteLLM user");
    }
    for team in &plan.changes.join_teams {
        proxy.client.team_member_add(team, &user_id).await?;
    }
    for team in &plan.changes.leave_teams {
        proxy.client.team_member_delete(team, &user_id).await?;
    }

    if let Some(issue) = &plan.key.issue {
        if let Some(pending) = &issue.pending_status {
            super::write_status(ctx, user, pending).await?;
            *written = pending.clone();
        }
        proxy.client.key_register(&user_id, fresh.expose(), &issue.register).await?;
        info!(user_id, key_hash = %decide::short(fresh.hash()), "registered key");
        let version = write_secret(ctx, user, &world.secret, Some(fresh)).await?;
        plan.status.key_secret_version = Some(version);
    } else if plan.key.take_back {
        let version = write_secret(ctx, user, &world.secret, None).await?;
        plan.status.key_secret_version = Some(version);
    } else if let Some(version) = &plan.key.secret_version {
        plan.status.key_secret_version = Some(version.clone());
    }
    if let Some((hash, fields)) = &plan.key.aliases {
        proxy.client.key_update(hash, fields).await?;
    }
    if !plan.key.revoke.is_empty() {
        proxy.client.key_delete(&plan.key.revoke).await?;
        info!(user_id, count = plan.key.revoke.len(), "revoked keys");
    }
    if let Some(previous) = &plan.delete_previous_secret {
        let secrets: Api<Secret> = ctx.api_in(user)?;
        match secrets.delete(previous, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(super::kube_err("delete the previous key Secret")(err)),
        }
    }

    if let Some(record) = &stored {
        decide::into_status(&mut plan.status, record);
    }
    if plan.read_usage {
        let key_hash = plan.status.key_hash.clone();
        match read_usage(ctx, proxy, &user_id, key_hash.as_deref(), plan.status.spend.unwrap_or_default()).await {
            Ok(usage) => plan.status.usage = Some(usage),
            Err(err) => tracing::warn!(error = %err, "could not read usage"),
        }
    }
    publish(ctx, user, &plan);
    Ok(Acted::Done(Box::new(plan)))
}

fn publish(ctx: &Context, user: &LiteLLMUser, plan: &Plan) {
    for note in &plan.events {
        ctx.events.publish(user, note);
    }
}

/// Writes the key Secret and returns its new `resourceVersion`. An existing Secret is patched with its
/// `resourceVersion` as a precondition, touching only the operator's own labels, annotation and data.
async fn write_secret(
    ctx: &Context,
    user: &LiteLLMUser,
    found: &SecretView,
    key: Option<&FreshKey>,
) -> Result<String, Error> {
    let secrets: Api<Secret> = ctx.api_in(user)?;
    let name = user.key_secret_name();
    let user_id = user.litellm_user_id();
    let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    let written = match found {
        SecretView::Owned { resource_version, .. } => {
            let mut patch = json!({
                "metadata": {
                    "resourceVersion": resource_version,
                    "labels": { keys::MANAGED_BY_LABEL: keys::MANAGED_BY, keys::INSTANCE_LABEL: user.label_value() },
                },
                "data": { keys::USER_ID: ByteString(user_id.as_bytes().to_vec()) },
            });
            if let Some(key) = key {
                patch["data"][keys::API_KEY] = json!(ByteString(key.expose().as_bytes().to_vec()));
                patch["metadata"]["annotations"] = json!({ keys::KEY_HASH_ANNOTATION: key.hash() });
            }
            let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
            secrets.patch(&name, &pp, &Patch::Merge(&patch)).await.map_err(super::kube_err("rewrite the key Secret"))?
        }
        SecretView::Released { secret, .. } => {
            let secret = keys::key_secret(user, &name, &user_id, key, Some(secret));
            secrets.replace(&name, &pp, &secret).await.map_err(super::kube_err("take back the key Secret"))?
        }
        SecretView::Absent | SecretView::NotWanted | SecretView::Foreign => {
            let secret = keys::key_secret(user, &name, &user_id, key, None);
            secrets.create(&pp, &secret).await.map_err(super::kube_err("create the key Secret"))?
        }
    };
    Ok(written.resource_version().unwrap_or_default())
}

async fn read_usage(
    ctx: &Context,
    proxy: &Proxy,
    user_id: &str,
    key_hash: Option<&str>,
    spend: f64,
) -> Result<UsageSummary, crate::litellm::ApiError> {
    use k8s_openapi::jiff::{Span, Timestamp, tz::TimeZone};
    let days = ctx.settings.usage_window_days.max(1);
    let now = Timestamp::now();
    let today = now.to_zoned(TimeZone::UTC).date();
    let start = today.checked_sub(Span::new().days(days - 1)).unwrap_or(today);
    let totals = proxy.client.daily_activity(user_id, key_hash, &start.to_string(), &today.to_string()).await?;
    Ok(UsageSummary {
        window_days: days,
        spend: totals.total_spend,
        total_tokens: totals.total_tokens.unwrap_or_default(),
        requests: totals.total_api_requests.unwrap_or_default(),
        read_at: Some(now.to_string()),
        spend_at_read: Some(spend),
    })
}

/// A creation refused because the e-mail address is taken names who holds it to the platform, in the operator's
/// log, and never to the tenant: its status and events say only that the proxy refused.
async fn log_email_holders(proxy: &Proxy, user: &LiteLLMUser, user_id: &str) {
    let Some(email) = user.spec.user_email.as_deref() else { return };
    match proxy.client.users_with_email(email).await {
        Ok(holders) => {
            for holder in holders.iter().filter(|holder| holder.user_id.as_deref() != Some(user_id)) {
                warn!(
                    user_id,
                    holder = holder.user_id.as_deref().unwrap_or("(none)"),
                    holder_resource = desired::marked_owner(&holder.metadata).unwrap_or("(not managed by an operator)"),
                    "spec.userEmail is already another user's on the proxy"
                );
            }
        }
        Err(err) => debug!(user_id, error = %err, "could not look up which user holds spec.userEmail"),
    }
}
