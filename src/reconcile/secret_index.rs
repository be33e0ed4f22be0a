//! What the operator knows of its key Secrets without reading them: for each, the version the API server is at
//! and which resource controls it, kept from a metadata watch of the Secrets that carry the operator's label.
//!
//! That is all a reconcile asks of a Secret it has not written since: whether it is still at the version the
//! status records (then it still holds the key the status records) and still this resource's. A reflector
//! store would keep every Secret's whole metadata, about a kilobyte each; this keeps three short strings.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{api::ObjectMeta, core::PartialObjectMeta, runtime::watcher};
use tokio::{
    sync::watch,
    time::{Duration, Instant},
};

use crate::crd::LiteLLMUser;

/// A key Secret, as far as the operator needs to know it without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownSecret {
    pub resource_version: Box<str>,
    /// The uid of the object its controller owner reference names, if any.
    controller: Option<Box<str>>,
}

impl KnownSecret {
    pub fn of(meta: &ObjectMeta) -> Self {
        let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        KnownSecret {
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            controller: controller.map(|o| o.uid.as_str().into()),
        }
    }

    /// Whether `user` controls the Secret.
    pub fn controlled_by(&self, user: &LiteLLMUser) -> bool {
        self.controller.is_some() && self.controller.as_deref() == user.metadata.uid.as_deref()
    }
}

/// How long after start-up reconciles wait for the first listing of the Secrets. A watch that cannot list them
/// (say, for want of RBAC) holds nothing back after that: reconciles then read each Secret.
const FIRST_LISTING_WAIT: Duration = Duration::from_secs(30);

/// The operator's Secrets in one watched scope, by namespace and name.
pub struct SecretIndex {
    secrets: RwLock<HashMap<Box<str>, KnownSecret>>,
    /// What a relist has brought so far; it replaces `secrets` when the relist is complete, so that Secrets
    /// deleted while the watch was down do not linger.
    relisting: Mutex<Option<HashMap<Box<str>, KnownSecret>>>,
    /// Whether the first listing is complete.
    listed: watch::Sender<bool>,
    created: Instant,
}

impl Default for SecretIndex {
    fn default() -> Self {
        SecretIndex {
            secrets: RwLock::default(),
            relisting: Mutex::default(),
            listed: watch::Sender::new(false),
            created: Instant::now(),
        }
    }
}

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

fn key_of(meta: &ObjectMeta) -> Box<str> {
    key(meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

impl SecretIndex {
    /// The Secret `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<KnownSecret> {
        crate::sync::read(&self.secrets).get(&key(namespace, name)).cloned()
    }

    /// Waits until the watch has listed every Secret once (at most until [`FIRST_LISTING_WAIT`] after start-up):
    /// until then, a Secret missing from the index may only not have been listed yet, and each reconcile of a
    /// restart would read its Secret.
    pub async fn wait_listed(&self) {
        if *self.listed.borrow() {
            return;
        }
        let mut listed = self.listed.subscribe();
        let _ = tokio::time::timeout_at(self.created + FIRST_LISTING_WAIT, listed.wait_for(|done| *done)).await;
    }

    /// Takes in one event of the Secrets' metadata watch.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut relisting = crate::sync::lock(&self.relisting);
        match event {
            watcher::Event::Init => *relisting = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                relisting.get_or_insert_default().insert(key_of(&secret.metadata), KnownSecret::of(&secret.metadata));
            }
            watcher::Event::InitDone => {
                let mut listed = relisting.take().unwrap_or_default();
                listed.shrink_to_fit();
                *crate::sync::write(&self.secrets) = listed;
                self.listed.send_replace(true);
            }
            watcher::Event::Apply(secret) => {
                let mut secrets = crate::sync::write(&self.secrets);
                secrets.insert(key_of(&secret.metadata), KnownSecret::of(&secret.metadata));
            }
            watcher::Event::Delete(secret) => {
                let mut secrets = crate::sync::write(&self.secrets);
                secrets.remove(&key_of(&secret.metadata));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn secret(name: &str, version: &str, controller: Option<&str>) -> PartialObjectMeta<Secret> {
        let owner = |uid: &str| OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() };
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                resource_version: Some(version.into()),
                owner_references: controller.map(|uid| vec![owner(uid)]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn user(uid: &str) -> LiteLLMUser {
        let mut user = LiteLLMUser::new("alice", Default::default());
        user.metadata.uid = Some(uid.into());
        user
    }

    #[test]
    fn the_index_follows_the_watch_and_a_relist_drops_what_is_gone() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("a", "1", Some("uid-1"))));
        index.apply(&watcher::Event::Apply(secret("b", "2", None)));
        index.apply(&watcher::Event::Apply(secret("a", "3", Some("uid-1"))));
        let a = index.get("team-a", "a").unwrap();
        assert_eq!(&*a.resource_version, "3");
        assert!(a.controlled_by(&user("uid-1")));
        assert!(!a.controlled_by(&user("uid-2")));
        assert!(!index.get("team-a", "b").unwrap().controlled_by(&user("uid-1")), "no controller, nobody's");
        assert!(!index.get("team-a", "b").unwrap().controlled_by(&LiteLLMUser::new("x", Default::default())));
        assert_eq!(index.get("team-b", "a"), None);

        index.apply(&watcher::Event::Delete(secret("b", "2", None)));
        assert_eq!(index.get("team-a", "b"), None);

        index.apply(&watcher::Event::Apply(secret("c", "4", None)));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("a", "5", Some("uid-1"))));
        assert!(index.get("team-a", "c").is_some(), "a relist replaces the index only once it is complete");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("team-a", "c"), None, "gone while the watch was down");
        assert_eq!(&*index.get("team-a", "a").unwrap().resource_version, "5");
    }

    #[tokio::test(start_paused = true)]
    async fn reconciles_wait_for_the_first_listing_and_only_for_a_while() {
        let index = std::sync::Arc::new(SecretIndex::default());
        let waiting = tokio::spawn({
            let index = index.clone();
            async move { index.wait_listed().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "nothing listed yet");
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("a", "5", Some("uid-1"))));
        index.apply(&watcher::Event::InitDone);
        waiting.await.unwrap();

        let never_listed = SecretIndex::default();
        let started = Instant::now();
        never_listed.wait_listed().await;
        assert_eq!(started.elapsed(), FIRST_LISTING_WAIT, "a watch that cannot list holds nothing back for long");
        never_listed.wait_listed().await;
        assert_eq!(started.elapsed(), FIRST_LISTING_WAIT, "and nothing at all after that");
    }
}
