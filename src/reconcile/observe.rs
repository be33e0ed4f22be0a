//! Observe: one typed snapshot of the world for one resource — its claim on the user id, the proxy's user and
//! keys, the key Secret — read with as few calls as possible (the Secret from the watch cache when it is where
//! the operator last left it, the user from the directory snapshot on a resync). Only reads happen here;
//! nothing is decided.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, ResourceExt, core::PartialObjectMeta};

use super::{
    Context, Error, Proxy,
    claim::Claim,
    desired,
    keys::{self, controlled_by, released_for},
};
use crate::{
    crd::{LiteLLMUser, LiteLLMUserStatus, NamespaceLabels},
    litellm::{Generation, KeyRecord, UserRecord},
};

/// Everything `decide` needs to know about the world outside the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct World {
    pub claim: ClaimView,
    pub proxy: ProxyView,
    pub secret: SecretView,
    /// Whether the LiteLLMUser named in the proxy user's ownership mark exists (when another one is named).
    pub marked_owner_exists: bool,
    /// The Secret named in `status.keySecretName`, when the spec now names another one and this resource still
    /// controls the old one.
    pub previous_secret: Option<String>,
    /// The message of a 409 from `/user/new` in this reconcile: the id or the e-mail is taken.
    pub create_conflict: Option<String>,
    /// The namespace's labels, read when the policy selects namespaces by label.
    pub namespace_labels: Option<NamespaceLabels>,
    /// What the namespace's older resources on this proxy add up to, counted when the policy has a quota.
    pub namespace_usage: Option<crate::policy::NamespaceUsage>,
}

/// Who may manage the user id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimView {
    /// This resource (as its status records, or as the claim says).
    Ours,
    /// Nobody has claimed it.
    Free,
    /// The claim's holder no longer exists (or is a deleted resource of the same name).
    Stale(Claim),
    /// Another LiteLLMUser, which exists, holds it.
    Theirs { holder: String },
}

/// The proxy's user.
#[derive(Clone, Debug, PartialEq)]
pub enum ProxyView {
    /// Not read (another resource manages the user id, so there is nothing to look at).
    NotRead,
    /// Not read, because creating is the way to find out: a brand-new resource on a newer proxy, which answers
    /// 409 when the id is taken (saving a `/user/info` that would 404 and log a traceback on the proxy).
    Unseen,
    Absent,
    Present {
        record: Box<UserRecord>,
        keys: Vec<KeyRecord>,
        /// Seen in the directory snapshot rather than read: good only to confirm that nothing needs doing.
        from_snapshot: bool,
    },
}

/// The key Secret.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretView {
    /// Keys are off for this resource.
    NotWanted,
    Absent,
    /// A Secret of that name that the operator does not manage for this resource.
    Foreign,
    /// A Secret the operator released when a resource of this name was deleted with `Retain`.
    Released {
        key_hash: Option<String>,
        secret: Box<Secret>,
    },
    /// A Secret this resource controls. `secret` is `None` when it was known without reading it (still at the
    /// version the status records, so it holds the key the status records).
    Owned {
        key_hash: Option<String>,
        resource_version: String,
        secret: Option<Box<Secret>>,
    },
}

/// What earlier rounds of this reconcile learned, to look at the world differently this time.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// Read the user from the proxy, not from the snapshot.
    pub read_proxy: bool,
    /// `/user/new` answered 409 with this message.
    pub create_conflict: Option<String>,
    /// This reconcile won the claim.
    pub claimed: bool,
    /// Creating the claim failed because it exists: read it to learn whose it is.
    pub claim_taken: bool,
}

pub async fn world(
    ctx: &Context,
    proxy: &Proxy,
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    hints: &Hints,
) -> Result<World, Error> {
    let user_id = user.litellm_user_id();
    let namespace_labels = match proxy.policy.namespaces.as_ref().is_some_and(|n| n.selector.is_some()) {
        true => namespace_labels(ctx, user).await?,
        false => None,
    };
    let namespace_usage = match proxy.policy.namespace_quota {
        Some(_) => ctx.quota.usage(user).await,
        None => None,
    };
    let claim = claim(ctx, proxy, user, status, &user_id, hints).await?;
    let mut world = World {
        claim,
        proxy: ProxyView::NotRead,
        secret: SecretView::NotWanted,
        marked_owner_exists: false,
        previous_secret: None,
        create_conflict: hints.create_conflict.clone(),
        namespace_labels,
        namespace_usage,
    };
    // Until this resource holds the claim, there is nothing to look at: the next step is claiming.
    if world.claim != ClaimView::Ours {
        return Ok(world);
    }
    world.proxy = proxy_user(ctx, proxy, user, status, &user_id, hints).await?;
    if let ProxyView::Present { record, .. } = &world.proxy
        && let Some(owner) = desired::marked_owner(&record.metadata)
        && owner != super::claim::holder(user)
    {
        world.marked_owner_exists = resource(ctx, owner).await? != Found::Absent;
    }
    if user.spec.key.enabled {
        world.secret = secret(ctx, user, status).await?;
    }
    if let Some(previous) = status.key_secret_name.as_ref().filter(|name| **name != user.key_secret_name())
        && controls_secret(ctx, user, previous).await?
    {
        world.previous_secret = Some(previous.clone());
    }
    Ok(world)
}

async fn claim(
    ctx: &Context,
    proxy: &Proxy,
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    user_id: &str,
    hints: &Hints,
) -> Result<ClaimView, Error> {
    // The status is written only by the operator, and only after the claim was won.
    if hints.claimed || status.user_id.as_deref() == Some(user_id) {
        return Ok(ClaimView::Ours);
    }
    // A resource the operator has never reported on is almost always new, and so is its user id: try to
    // create the claim straight away (the create is the arbiter either way) and read it only when it exists.
    if status.conditions.is_empty() && status.user_id.is_none() && !hints.claim_taken {
        return Ok(ClaimView::Free);
    }
    let Some(claim) = proxy.claims.read(user_id).await? else { return Ok(ClaimView::Free) };
    if claim.held_by(user) {
        return Ok(ClaimView::Ours);
    }
    let alive = match resource(ctx, &claim.holder).await? {
        Found::Exists(uid) => uid.as_deref() == Some(claim.holder_uid.as_str()),
        Found::Unknown => true,
        Found::Absent => false,
    };
    Ok(if alive { ClaimView::Theirs { holder: claim.holder } } else { ClaimView::Stale(claim) })
}

async fn proxy_user(
    ctx: &Context,
    proxy: &Proxy,
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    user_id: &str,
    hints: &Hints,
) -> Result<ProxyView, Error> {
    let settled = status.synced_generation.is_some()
        && status.synced_generation == user.metadata.generation
        && status.user_id.as_deref() == Some(user_id)
        && super::conditions::is_true(&status.conditions, super::conditions::READY);
    if settled
        && !hints.read_proxy
        && let Some(entry) = proxy.directory.lookup(user_id, last_change(status), snapshot_max_age(ctx)).await
        && let Some(keys) = entry.keys.or_else(|| keys_as_status_says(user, status, entry.record.key_count))
    {
        return Ok(ProxyView::Present { record: Box::new(entry.record), keys, from_snapshot: true });
    }
    let brand_new = status.conditions.is_empty() && status.user_id.is_none();
    if brand_new && !hints.read_proxy && proxy.client.generation().await? == Generation::Newer {
        return Ok(ProxyView::Unseen);
    }
    Ok(match proxy.client.user_info(user_id).await? {
        Some((record, keys)) => ProxyView::Present { record: Box::new(record), keys, from_snapshot: false },
        None => ProxyView::Absent,
    })
}

/// When the operator last changed anything for the resource: a snapshot taken before then cannot vouch for it.
pub fn last_change(status: &LiteLLMUserStatus) -> Option<k8s_openapi::jiff::Timestamp> {
    status.last_sync_time.as_deref().and_then(|t| t.parse().ok())
}

/// How old a snapshot may be and still vouch for a user.
pub fn snapshot_max_age(ctx: &Context) -> std::time::Duration {
    ctx.settings.resync.saturating_mul(2)
}

/// The keys a settled resource's status accounts for, as the proxy would list them, when the proxy's count of
/// the user's keys matches: what a snapshot that read no keys (the first after start-up) stands in with until
/// the next one reads them. A key swapped, or edited, while the operator was down is seen one interval late;
/// one deleted or added changes the count, and the user is read.
pub fn keys_as_status_says(
    user: &LiteLLMUser,
    status: &LiteLLMUserStatus,
    key_count: Option<i64>,
) -> Option<Vec<KeyRecord>> {
    if !user.spec.key.enabled {
        // The operator neither creates nor deletes keys of such a user, and does not look at them.
        return Some(Vec::new());
    }
    if status.pending_key_hash.is_some() {
        return None;
    }
    let current = status.key_hash.as_ref()?;
    let hashes: Vec<&String> =
        std::iter::once(current).chain(status.retiring_keys.iter().map(|retiring| &retiring.hash)).collect();
    if key_count != Some(hashes.len() as i64) {
        return None;
    }
    let aliases: serde_json::Map<String, serde_json::Value> =
        user.spec.aliases.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let key = |hash: &String| KeyRecord {
        token: hash.clone(),
        user_id: status.user_id.clone(),
        aliases: aliases.clone(),
        ..KeyRecord::default()
    };
    Some(hashes.into_iter().map(key).collect())
}

async fn secret(ctx: &Context, user: &LiteLLMUser, status: &LiteLLMUserStatus) -> Result<SecretView, Error> {
    let name = user.key_secret_name();
    // Where the operator last left it, the Secret still holds the key the status records: no need to read it.
    if let Some(known) = ctx.known_secret(user, &name)
        && known.controlled_by(user)
        && !known.resource_version.is_empty()
        && Some(&*known.resource_version) == status.key_secret_version.as_deref()
        && status.key_secret_name.as_deref() == Some(name.as_str())
    {
        return Ok(SecretView::Owned {
            key_hash: status.key_hash.clone(),
            resource_version: known.resource_version.into_string(),
            secret: None,
        });
    }
    let secrets: Api<Secret> = ctx.api_in(user)?;
    let Some(secret) = secrets.get_opt(&name).await.map_err(super::kube_err("read the key Secret"))? else {
        return Ok(SecretView::Absent);
    };
    let key_hash = keys::hash_in(&secret);
    Ok(if controlled_by(&secret.metadata, user) {
        SecretView::Owned {
            key_hash,
            resource_version: secret.resource_version().unwrap_or_default(),
            secret: Some(Box::new(secret)),
        }
    } else if released_for(&secret.metadata, user) {
        SecretView::Released { key_hash, secret: Box::new(secret) }
    } else {
        SecretView::Foreign
    })
}

/// Whether the resource controls one of its Secrets: as the watch saw it, or read.
async fn controls_secret(ctx: &Context, user: &LiteLLMUser, name: &str) -> Result<bool, Error> {
    if let Some(known) = ctx.known_secret(user, name) {
        return Ok(known.controlled_by(user));
    }
    let secrets: Api<Secret> = ctx.api_in(user)?;
    let found: Option<PartialObjectMeta<Secret>> =
        secrets.get_metadata_opt(name).await.map_err(super::kube_err("read a key Secret's metadata"))?;
    Ok(found.is_some_and(|meta| controlled_by(&meta.metadata, user)))
}

/// The labels of the resource's namespace; `None` when the operator may not read namespaces.
async fn namespace_labels(ctx: &Context, user: &LiteLLMUser) -> Result<Option<NamespaceLabels>, Error> {
    let namespace = user.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<Namespace> = Api::all(ctx.kube.clone());
    match api.get_metadata_opt(&namespace).await {
        Ok(found) => Ok(found.map(|ns| ns.metadata.labels.unwrap_or_default())),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
        Err(err) => Err(super::kube_err("read the namespace's labels")(err)),
    }
}

/// What the API server says of the LiteLLMUser named `namespace/name`.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// It exists, with this uid.
    Exists(Option<String>),
    Absent,
    /// The operator may not look (it watches only some namespaces): taken to exist.
    Unknown,
}

async fn resource(ctx: &Context, reference: &str) -> Result<Found, Error> {
    let Some((namespace, name)) = reference.split_once('/') else { return Ok(Found::Absent) };
    let api: Api<LiteLLMUser> = Api::namespaced(ctx.kube.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(found)) => Ok(Found::Exists(found.uid())),
        Ok(None) => Ok(Found::Absent),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Found::Unknown),
        Err(err) => Err(super::kube_err("look up another LiteLLMUser")(err)),
    }
}
