//! What the operator's watch cache keeps of each `LiteLLMUser`.
//!
//! The cache holds every resource for as long as the process runs, so its form decides the operator's memory
//! at scale. A parsed `LiteLLMUser` is about 1.5 KB of struct (every optional field of the spec and status has
//! its place) plus thirty-odd small allocations; the heap profile at 10,000 users put the cache at a third of
//! the operator's memory. Kept as the API server sent them, spec and status are one compact string each, and
//! a reconcile parses them again (microseconds, against the milliseconds of any call it makes).

use std::borrow::Cow;

use kube::{Resource, api::ObjectMeta, core::NamespaceResourceScope};
use serde::Deserialize;
use serde_json::Value;

use super::LiteLLMUser;

/// A `LiteLLMUser` as the watch cache keeps it: its metadata, and its spec and status as compact JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Sent")]
pub struct CachedUser {
    pub metadata: ObjectMeta,
    spec: Box<str>,
    status: Option<Box<str>>,
}

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
        let status = (!sent.status.is_null()).then(|| compact(sent.status));
        // The schema requires a spec; were it missing, it would read as the empty one.
        let spec = if sent.spec.is_null() { Value::Object(Default::default()) } else { sent.spec };
        CachedUser { metadata: sent.metadata, spec: compact(spec), status }
    }
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
    /// The resource, parsed.
    pub fn parse(&self) -> Result<LiteLLMUser, serde_json::Error> {
        let spec = serde_json::from_str(&self.spec)?;
        let status = self.status.as_deref().map(serde_json::from_str).transpose()?;
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

        let without_status: CachedUser = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "bob", "namespace": "team-a" }, "spec": {}, "status": null
        }))
        .unwrap();
        assert_eq!(without_status.parse().unwrap().status, None);
        assert_eq!(<CachedUser as Resource>::api_version(&()), LiteLLMUser::api_version(&()));
    }
}
