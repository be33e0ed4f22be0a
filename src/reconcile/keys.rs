//! The user's API key. The operator makes every key itself and records its hash in the resource's status
//! before the key leaves the process; a key found in a Secret is trusted only if its hash is one of those. So a
//! value someone else put into the Secret (garbage, a guessable key, another user's key) is never registered,
//! revoked or reported as the user's key: it is replaced.

use std::collections::BTreeMap;

use crate::{crd::LiteLLMUser, litellm::key_hash};
use base64::Engine;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, ResourceExt, api::ObjectMeta};

/// Secret data key holding the API key.
pub const API_KEY: &str = "LITELLM_API_KEY";
/// Secret data key holding the LiteLLM user id.
pub const USER_ID: &str = "LITELLM_USER_ID";
/// Label on every Secret the operator writes; the operator watches only Secrets with it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "litellm-operator";
/// Label naming the LiteLLMUser a Secret belongs to (its name, shortened to fit a label).
pub const INSTANCE_LABEL: &str = "litellm-operator.io/user";
/// Annotation with the hash of the key the operator wrote, for people and tools; the operator itself trusts
/// only the hashes in the resource's status.
pub const KEY_HASH_ANNOTATION: &str = "litellm-operator.io/key-hash";

/// A key the operator just made. Only its hash is ever shown; the value leaves the process only in the Secret
/// and in the one request that registers it.
pub struct FreshKey {
    value: String,
    hash: String,
}

impl FreshKey {
    /// A key in LiteLLM's format: `sk-` and 43 URL-safe characters carrying 256 bits from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let value = format!("sk-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        let hash = key_hash(&value);
        Ok(FreshKey { value, hash })
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The key itself, for the Secret and the registration request only.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for FreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FreshKey({})", &self.hash[..12])
    }
}

/// The hash of the key a Secret holds, if it holds anything that looks like a key. Whether the key is
/// trusted is for the caller to decide, against the hashes it recorded.
pub fn hash_in(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(API_KEY)?;
    let key = std::str::from_utf8(&bytes.0).ok()?.trim();
    key.starts_with("sk-").then(|| key_hash(key))
}

/// Whether `user` controls the object with this metadata.
pub fn controlled_by(meta: &ObjectMeta, user: &LiteLLMUser) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == user.metadata.uid.as_ref() && o.controller == Some(true))
}

/// Whether this is a key Secret the operator released for a resource of `user`'s name (deletion policy
/// `Retain`): labelled as ours, for this name, and controlled by nobody.
pub fn released_for(meta: &ObjectMeta, user: &LiteLLMUser) -> bool {
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
        && label(INSTANCE_LABEL) == Some(user.label_value().as_str())
        && !meta.owner_references.iter().flatten().any(|o| o.controller == Some(true))
}

/// The key Secret for `user` holding `key`: `base` (the Secret as it is now, if any) with the key, the user id,
/// our labels, annotation and owner reference set, and everything else other people put there kept. The
/// `resourceVersion` of `base` makes the write fail rather than overwrite a change made in the meantime.
pub fn key_secret(
    user: &LiteLLMUser,
    name: &str,
    user_id: &str,
    key: Option<&FreshKey>,
    base: Option<&Secret>,
) -> Secret {
    let mut secret = base.cloned().unwrap_or_default();
    let meta = &mut secret.metadata;
    meta.name = Some(name.to_owned());
    meta.namespace = user.namespace();
    meta.managed_fields = None;
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels.insert(INSTANCE_LABEL.to_owned(), user.label_value());
    let owner = user.controller_owner_ref(&());
    let owners = meta.owner_references.get_or_insert_with(Vec::new);
    owners.retain(|o| o.controller != Some(true) && Some(&o.uid) != user.metadata.uid.as_ref());
    owners.extend(owner);
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    data.insert(USER_ID.to_owned(), ByteString(user_id.as_bytes().to_vec()));
    if let Some(key) = key {
        data.insert(API_KEY.to_owned(), ByteString(key.expose().as_bytes().to_vec()));
        let annotations = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(KEY_HASH_ANNOTATION.to_owned(), key.hash().to_owned());
    }
    if secret.type_.is_none() {
        secret.type_ = Some("Opaque".to_owned());
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_litellm_shaped_and_unique() {
        let a = FreshKey::generate().unwrap();
        let b = FreshKey::generate().unwrap();
        assert!(a.expose().starts_with("sk-") && a.expose().len() == 46, "{}", a.expose().len());
        assert!(a.expose()[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), key_hash(a.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn hash_matches_litellm() {
        // sha256("sk-wrong"), as LiteLLM printed it for that key in BEHAVIOUR.md row 22.
        assert_eq!(key_hash("sk-wrong"), "2ab06cfadcdcc1bb1a1ff9edefb028084a837b3ed7b95f97e602b960ee127471");
    }

    fn alice() -> LiteLLMUser {
        let mut user = LiteLLMUser::new("alice", Default::default());
        user.metadata.namespace = Some("team-a".into());
        user.metadata.uid = Some("uid-1".into());
        user
    }

    #[test]
    fn secret_is_owned_labelled_and_reads_back() {
        let user = alice();
        let key = FreshKey::generate().unwrap();
        let secret = key_secret(&user, "alice-litellm-key", "team-a.alice", Some(&key), None);
        assert_eq!(hash_in(&secret).as_deref(), Some(key.hash()));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("LiteLLMUser", "uid-1", Some(true)));
        assert_eq!(secret.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(secret.metadata.annotations.as_ref().unwrap()[KEY_HASH_ANNOTATION], key.hash());
        assert!(controlled_by(&secret.metadata, &user));
        let mut empty = secret.clone();
        empty.data = None;
        assert_eq!(hash_in(&empty), None);
    }

    #[test]
    fn rewriting_keeps_what_others_added() {
        let user = alice();
        let mut base = key_secret(&user, "s", "u", Some(&FreshKey::generate().unwrap()), None);
        base.metadata.resource_version = Some("41".into());
        base.metadata.labels.as_mut().unwrap().insert("team".into(), "blue".into());
        base.metadata.annotations.as_mut().unwrap().insert("reloader".into(), "true".into());
        base.data.as_mut().unwrap().insert("EXTRA".into(), ByteString(b"x".to_vec()));
        let key = FreshKey::generate().unwrap();
        let rewritten = key_secret(&user, "s", "u", Some(&key), Some(&base));
        assert_eq!(rewritten.metadata.resource_version.as_deref(), Some("41"));
        assert_eq!(rewritten.metadata.labels.as_ref().unwrap()["team"], "blue");
        assert_eq!(rewritten.metadata.annotations.as_ref().unwrap()["reloader"], "true");
        assert_eq!(rewritten.data.as_ref().unwrap()["EXTRA"].0, b"x");
        assert_eq!(hash_in(&rewritten).as_deref(), Some(key.hash()));
        assert_eq!(rewritten.metadata.owner_references.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn a_released_secret_is_recognised_only_for_its_name() {
        let user = alice();
        let mut released = key_secret(&user, "s", "u", Some(&FreshKey::generate().unwrap()), None);
        released.metadata.owner_references = Some(vec![]);
        assert!(released_for(&released.metadata, &user));
        let bob = LiteLLMUser::new("bob", Default::default());
        assert!(!released_for(&released.metadata, &bob));
        let owned = key_secret(&user, "s", "u", None, None);
        assert!(!released_for(&owned.metadata, &user));
    }
}
