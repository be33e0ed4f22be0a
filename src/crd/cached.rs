//! What the operator's watch cache keeps of each `LiteLLMUser`.
//!
//! The cache holds every resource for as long as the process runs, so its form decides the operator's memory
//! at scale. A parsed `LiteLLMUser` is about 1.5 KB of struct (every optional field of the spec and status has
//! its place) plus thirty-odd small allocations; the heap profile at 10,000 users put the cache at a third of
//! the operator's memory. Kept as the API server sent them, spec and status are one compact string each, and
//! a reconcile parses them again (microseconds, against the milliseconds of any call it makes).
//!
//! The status is most of what is left (about 1.2 KB of JSON with its four conditions, against 0.1 KB of
//! spec), and most of it is the same from one resource to the next: field names, condition types, reasons
//! and messages. So it is kept LZ4-compressed against a dictionary of exactly those, which takes it to a
//! third (see the test).

use std::{borrow::Cow, sync::LazyLock};

use kube::{Resource, api::ObjectMeta, core::NamespaceResourceScope};
use serde::Deserialize;
use serde_json::Value;

use super::LiteLLMUser;

/// A `LiteLLMUser` as the watch cache keeps it: its metadata, and its spec and status as compact JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Sent")]
pub struct CachedUser {
    pub metadata: ObjectMeta,
    /// Without `metadata` when that was larger than [`MAX_SPEC_METADATA_BYTES`]: see [`CachedUser::oversized_metadata`].
    spec: Box<str>,
    /// The size of a `spec.metadata` too large to keep.
    oversized_metadata: Option<u32>,
    /// Compact JSON, compressed against [`STATUS_DICTIONARY`].
    status: Option<Box<[u8]>>,
}

/// What statuses have in common, for compressing them: a status as the operator writes it, keys in the order
/// the API server sends them (sorted).
static STATUS_DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "lastTransitionTime": "2026-01-01T00:00:00Z", "message": message, "observedGeneration": 1,
            "reason": reason, "status": status, "type": type_,
        })
    };
    let synced = "The LiteLLM user matches the spec";
    let sample = serde_json::json!({
        "budgetResetAt": "2026-01-01T00:00:00Z",
        "conditions": [
            condition("Ready", "True", "Synced", synced),
            condition("Reconciling", "False", "Synced", ""),
            condition("Stalled", "False", "Synced", ""),
            condition("BudgetExceeded", "False", "WithinBudget", "Spent 0.0000 of 10 USD; the budget resets at 2026-01-01T00:00:00Z"),
            condition("SoftBudgetExceeded", "False", "WithinBudget", "Spent 0.0000 of a soft budget of 5 USD"),
            condition("FieldsNotCleared", "True", "NotClearable", "LiteLLM cannot clear these fields"),
        ],
        "keyHash": "", "keyIssuedAt": "2026-01-01T00:00:00Z", "keySecretName": "-litellm-key",
        "keySecretVersion": "1", "lastSyncTime": "2026-01-01T00:00:00Z",
        "managedFields": ["budgetDuration", "maxBudget", "models", "userAlias", "userEmail", "userRole"],
        "maxBudget": 10.0, "nextRotationAt": "", "observedGeneration": 1, "pendingKeyHash": "", "proxy": "default",
        "retiringKeys": [{ "hash": "", "revokeAt": "" }], "rotationRequest": "", "spend": 0.0, "syncedGeneration": 1,
        "unclearedFields": [],
        "usage": { "readAt": "2026-01-01T00:00:00Z", "requests": 0, "spend": 0.0, "spendAtRead": 0.0,
                   "totalTokens": 0, "windowDays": 7 },
        "userId": "",
    });
    sample.to_string().into_bytes()
});

/// The largest `spec.metadata` the operator accepts, as compact JSON: a resource with a larger one is refused
/// (`InvalidSpec`), and its metadata is not kept.
pub const MAX_SPEC_METADATA_BYTES: usize = 16 * 1024;

/// A `LiteLLMUser` as the API server sends it, read without its types.
#[derive(Deserialize)]
struct Sent {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    status: Value,
}

impl From<Sent> for CachedUser {
    fn from(sent: Sent) -> Self {
        let compact = |value: Value| value.to_string().into_boxed_str();
        let status = (!sent.status.is_null()).then(|| compress(&compact(sent.status)));
        // The schema requires a spec; were it missing, it would read as the empty one.
        let mut spec = if sent.spec.is_null() { Value::Object(Default::default()) } else { sent.spec };
        // The CRD bounds every field but what is nested in a metadata value; a tenant's megabyte there is not
        // kept for as long as the process runs.
        let metadata_bytes = spec.get("metadata").map_or(0, |m| m.to_string().len());
        let oversized_metadata = (metadata_bytes > MAX_SPEC_METADATA_BYTES).then(|| {
            spec.as_object_mut().map(|s| s.remove("metadata"));
            u32::try_from(metadata_bytes).unwrap_or(u32::MAX)
        });
        CachedUser { metadata: sent.metadata, spec: compact(spec), status, oversized_metadata }
    }
}

fn compress(json: &str) -> Box<[u8]> {
    lz4_flex::block::compress_prepend_size_with_dict(json.as_bytes(), &STATUS_DICTIONARY).into_boxed_slice()
}

/// Why a cached resource cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("its status does not decompress: {0}")]
    Compression(#[from] lz4_flex::block::DecompressError),
    #[error("it is not a LiteLLMUser: {0}")]
    Json(#[from] serde_json::Error),
}

impl Resource for CachedUser {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        LiteLLMUser::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        LiteLLMUser::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        LiteLLMUser::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        LiteLLMUser::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedUser {
    /// The size of `spec.metadata` when it was too large to keep; the parsed resource then has none, and must
    /// not be acted on as if it had none.
    pub fn oversized_metadata(&self) -> Option<usize> {
        self.oversized_metadata.map(|bytes| bytes as usize)
    }

    /// The spec as compact JSON, for reading a few fields without parsing the whole resource.
    pub fn spec_json(&self) -> &str {
        &self.spec
    }

    /// The resource, parsed.
    pub fn parse(&self) -> Result<LiteLLMUser, Unreadable> {
        let spec = serde_json::from_str(&self.spec)?;
        let status = match &self.status {
            Some(compressed) => {
                let json = lz4_flex::block::decompress_size_prepended_with_dict(compressed, &STATUS_DICTIONARY)?;
                Some(serde_json::from_slice(&json)?)
            }
            None => None,
        };
        Ok(LiteLLMUser { metadata: self.metadata.clone(), spec, status })
    }

    /// The resource with only its metadata, for logging and backoff when the rest cannot be parsed.
    pub fn metadata_only(&self) -> LiteLLMUser {
        LiteLLMUser { metadata: self.metadata.clone(), spec: Default::default(), status: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_user_parses_back_into_the_resource_the_api_server_sent() {
        let sent = serde_json::json!({
            "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser",
            "metadata": { "name": "alice", "namespace": "team-a", "uid": "u1", "generation": 3 },
            "spec": { "userAlias": "Alice", "maxBudget": 2.5, "key": { "rotation": { "every": "720h" } } },
            "status": { "userId": "team-a.alice", "keyHash": "abc", "conditions": [] }
        });
        let cached: CachedUser = serde_json::from_value(sent.clone()).unwrap();
        let direct: LiteLLMUser = serde_json::from_value(sent).unwrap();
        assert_eq!(serde_json::to_value(cached.parse().unwrap()).unwrap(), serde_json::to_value(&direct).unwrap());

        // A status as the operator writes it, with a key, budget and usage: kept at a third of its size or less.
        let status = serde_json::json!({
            "userId": "team-a.alice", "proxy": "default", "keySecretName": "alice-litellm-key",
            "keyHash": "9f2b6c1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9", "keySecretVersion": "48213",
            "keyIssuedAt": "2026-12-02T07:40:43.512Z", "spend": 0.0, "maxBudget": 10.0,
            "budgetResetAt": "2027-01-01T00:00:00Z", "lastSyncTime": "2026-12-02T07:41:43.1Z",
            "observedGeneration": 1, "syncedGeneration": 1, "managedFields": ["budgetDuration", "maxBudget"],
            "usage": { "windowDays": 7, "spend": 0.0, "totalTokens": 0, "requests": 0,
                       "readAt": "2026-12-02T07:40:43.512Z", "spendAtRead": 0.0 },
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "Synced", "message": "The LiteLLM user matches the spec",
                  "observedGeneration": 1, "lastTransitionTime": "2026-12-02T07:40:43Z" },
                { "type": "Reconciling", "status": "False", "reason": "Synced", "message": "",
                  "observedGeneration": 1, "lastTransitionTime": "2026-12-02T07:40:43Z" },
                { "type": "Stalled", "status": "False", "reason": "Synced", "message": "",
                  "observedGeneration": 1, "lastTransitionTime": "2026-12-02T07:40:43Z" },
                { "type": "BudgetExceeded", "status": "False", "reason": "WithinBudget",
                  "message": "Spent 0.0000 of 10 USD; the budget resets at 2027-01-01T00:00:00Z",
                  "observedGeneration": 1, "lastTransitionTime": "2026-12-02T07:41:43Z" }
            ]
        });
        let json = status.to_string();
        let kept: CachedUser = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "alice", "namespace": "team-a" }, "spec": {}, "status": status
        }))
        .unwrap();
        let compressed = kept.status.as_ref().unwrap().len();
        assert!(compressed * 3 <= json.len(), "{compressed} bytes of {} compressed", json.len());
        assert_eq!(serde_json::to_value(kept.parse().unwrap().status).unwrap(), status);

        let without_status: CachedUser = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "bob", "namespace": "team-a" }, "spec": {}, "status": null
        }))
        .unwrap();
        assert_eq!(without_status.parse().unwrap().status, None);
        assert_eq!(<CachedUser as Resource>::api_version(&()), LiteLLMUser::api_version(&()));
    }

    #[test]
    fn an_oversized_metadata_is_not_kept() {
        let big = "x".repeat(MAX_SPEC_METADATA_BYTES);
        let sent = |metadata: serde_json::Value| {
            serde_json::json!({
                "metadata": { "name": "m", "namespace": "team-a" },
                "spec": { "maxBudget": 1, "deletionPolicy": "Retain", "metadata": metadata },
            })
        };
        let kept: CachedUser = serde_json::from_value(sent(serde_json::json!({ "o": { "deep": big } }))).unwrap();
        assert!(kept.oversized_metadata().is_some_and(|bytes| bytes > MAX_SPEC_METADATA_BYTES));
        assert!(kept.spec_json().len() < 100, "{}", kept.spec_json());
        let parsed = kept.parse().unwrap();
        assert_eq!((parsed.spec.metadata, parsed.spec.max_budget), (None, Some(1.0)));
        assert_eq!(parsed.spec.deletion_policy, crate::crd::DeletionPolicy::Retain, "the rest of the spec is kept");
        let small: CachedUser = serde_json::from_value(sent(serde_json::json!({ "team": "a" }))).unwrap();
        assert_eq!(small.oversized_metadata(), None);
        assert!(small.parse().unwrap().spec.metadata.is_some());
    }
}
