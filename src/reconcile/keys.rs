//! The user's API key. The operator makes the key itself and writes it into the Secret before LiteLLM hears of
//! it; the Secret is the source of truth and registering its value is idempotent, so a crash at any point
//! loses no key and leaves none that no Secret holds.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, ResourceExt, api::ObjectMeta};
use sha2::{Digest, Sha256};

use crate::crd::LiteLLMUser;

/// Secret data key holding the API key.
pub const API_KEY: &str = "LITELLM_API_KEY";
/// Secret data key holding the LiteLLM user id.
pub const USER_ID: &str = "LITELLM_USER_ID";
/// Label on every Secret the operator writes; the operator watches only Secrets with it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "litellm-operator";
/// Label naming the LiteLLMUser a Secret belongs to.
pub const INSTANCE_LABEL: &str = "litellm-operator.io/user";

/// A key in LiteLLM's format: `sk-` and 43 URL-safe characters carrying 256 bits from the OS CSPRNG.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("sk-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// LiteLLM's id for a key: the hex SHA-256 of the key.
pub fn key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key stored in a Secret, if it holds a usable one.
pub fn key_in(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(API_KEY)?;
    let key = std::str::from_utf8(&bytes.0).ok()?.trim();
    key.starts_with("sk-").then(|| key.to_owned())
}

/// The Secret for a user's key, owned by the LiteLLMUser so it goes when the resource goes.
pub fn key_secret(user: &LiteLLMUser, name: &str, user_id: &str, key: &str) -> Secret {
    let data = BTreeMap::from([
        (API_KEY.to_owned(), ByteString(key.as_bytes().to_vec())),
        (USER_ID.to_owned(), ByteString(user_id.as_bytes().to_vec())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: user.namespace(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (INSTANCE_LABEL.to_owned(), user.name_any()),
            ])),
            owner_references: user.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_litellm_shaped_and_unique() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(a.starts_with("sk-") && a.len() == 46, "{}", a.len());
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_matches_litellm() {
        // sha256("sk-wrong"), as LiteLLM printed it for that key in BEHAVIOUR.md row 22.
        assert_eq!(key_hash("sk-wrong"), "2ab06cfadcdcc1bb1a1ff9edefb028084a837b3ed7b95f97e602b960ee127471");
    }

    #[test]
    fn secret_is_owned_labelled_and_reads_back() {
        let mut user = LiteLLMUser::new("alice", Default::default());
        user.metadata.namespace = Some("team-a".into());
        user.metadata.uid = Some("uid-1".into());
        let secret = key_secret(&user, "alice-litellm-key", "team-a.alice", "sk-abc");
        assert_eq!(key_in(&secret).as_deref(), Some("sk-abc"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("LiteLLMUser", "uid-1", Some(true)));
        assert_eq!(secret.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
        let mut empty = secret.clone();
        empty.data = None;
        assert_eq!(key_in(&empty), None);
    }
}
