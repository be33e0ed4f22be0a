//! Claims: who may manage a LiteLLM user id. Two resources (say, in two namespaces) can name the same
//! `spec.userId` at the same moment, and LiteLLM cannot arbitrate: under a race both `/user/new` calls answer
//! 200, and each answer echoes the metadata its caller sent. The API server can: creating an object is atomic.
//! So before the operator touches a user on the proxy, it creates a claim for the user id, a `Lease` in the
//! operator's own namespace (where tenants cannot write) named after a hash of the id. Whoever created it
//! manages the user; everyone else is told who does. A claim whose holder no longer exists is taken over with
//! an update that carries the claim's `resourceVersion`, which again only one writer can win.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams, Preconditions},
};

use super::{Error, FIELD_MANAGER};
use crate::crd::LiteLLMUser;

/// Annotation on a claim: the LiteLLM user id it is for.
const USER_ID_ANNOTATION: &str = "litellm-operator.io/user-id";
/// Annotation on a claim: the uid of the LiteLLMUser holding it.
const HOLDER_UID_ANNOTATION: &str = "litellm-operator.io/holder-uid";
/// Label on every claim, for listing them.
const CLAIM_LABEL: &str = "litellm-operator.io/claim";

/// Where claims live and which proxy they are for.
#[derive(Clone)]
pub struct Claims {
    api: Api<Lease>,
    /// Claims are per proxy (named by its URL): the same user id on two proxies is two users.
    proxy: String,
}

/// A claim as read from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name` of the LiteLLMUser holding it.
    pub holder: String,
    pub holder_uid: String,
    pub resource_version: String,
}

/// What act learned from trying to claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    Won,
    /// Someone else created or took over the claim first.
    Lost,
}

impl Claims {
    pub fn new(client: kube::Client, namespace: &str, proxy: &str) -> Self {
        Claims { api: Api::namespaced(client, namespace), proxy: proxy.to_owned() }
    }

    /// The claim's name: a hash, since user ids may hold any character and be of any length.
    fn name(&self, user_id: &str) -> String {
        let digest = crate::text::sha256_hex(&format!("{}\n{user_id}", self.proxy));
        format!("litellm-user-{}", &digest[..40])
    }

    pub async fn read(&self, user_id: &str) -> Result<Option<Claim>, Error> {
        let lease = self.api.get_opt(&self.name(user_id)).await.map_err(super::kube_err("read a user id claim"))?;
        Ok(lease.map(|lease| Claim {
            holder: lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default(),
            holder_uid: lease.annotations().get(HOLDER_UID_ANNOTATION).cloned().unwrap_or_default(),
            resource_version: lease.resource_version().unwrap_or_default(),
        }))
    }

    /// Claims `user_id` for `user`: creates the claim, or, with `stale` set, replaces that stale claim.
    pub async fn acquire(&self, user: &LiteLLMUser, user_id: &str, stale: Option<&Claim>) -> Result<Claimed, Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name(user_id)),
                labels: Some(BTreeMap::from([(CLAIM_LABEL.to_owned(), "true".to_owned())])),
                annotations: Some(BTreeMap::from([
                    (USER_ID_ANNOTATION.to_owned(), user_id.to_owned()),
                    (HOLDER_UID_ANNOTATION.to_owned(), user.uid().unwrap_or_default()),
                ])),
                resource_version: stale.map(|claim| claim.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec { holder_identity: Some(holder(user)), ..LeaseSpec::default() }),
        };
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let written = match stale {
            None => self.api.create(&pp, &lease).await,
            Some(_) => self.api.replace(&self.name(user_id), &pp, &lease).await,
        };
        match written {
            Ok(_) => Ok(Claimed::Won),
            // 409: created by someone else first (AlreadyExists), or changed since we read it (Conflict).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Claimed::Lost),
            Err(err) => Err(super::kube_err("claim a user id")(err)),
        }
    }

    /// Gives up `user`'s claim on `user_id`, if it holds it.
    pub async fn release(&self, user: &LiteLLMUser, user_id: &str) -> Result<(), Error> {
        let Some(claim) = self.read(user_id).await? else { return Ok(()) };
        if claim.holder != holder(user) || Some(claim.holder_uid.as_str()) != user.uid().as_deref() {
            return Ok(());
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(claim.resource_version), uid: None }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name(user_id), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(super::kube_err("release a user id claim")(err)),
        }
    }
}

/// How a claim names its holder.
pub fn holder(user: &LiteLLMUser) -> String {
    user.namespaced_name()
}

impl Claim {
    /// Whether `user` holds this claim.
    pub fn held_by(&self, user: &LiteLLMUser) -> bool {
        self.holder == holder(user) && Some(self.holder_uid.as_str()) == user.uid().as_deref()
    }
}
