//! The `LiteLLMUser` custom resource: what tenants write (`spec`) and what the operator reports (`status`).
//!
//! Doc comments on fields are the text `kubectl explain litellmuser.spec` shows, so they are written for the
//! people who write manifests. Validation lives in the schema (via `schemars` attributes and CEL rules) so
//! that the API server refuses bad input before it ever reaches LiteLLM.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, ResourceExt};

use super::{DURATION_AT_MOST_TEN_YEARS, DURATION_TOO_LONG, bounded_name, conditions_schema, free_form_object};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL: every key of a map (model names, aliases) is at most 256 characters. Structural schemas cannot bound keys
/// (no `propertyNames`), so a rule does.
const KEYS_AT_MOST_256: &str = "self.all(k, size(k) <= 256)";
const MODEL_NAME_TOO_LONG: &str = "model names (keys) must be at most 256 characters";

/// CEL, on the spec: every key of `metadata` is at most 253 characters. CEL cannot see the keys of a free-form
/// object from a rule on the object itself (it has no CEL type), but it can through the spec as `dyn`, because
/// `metadata` declares a schema for its values (see [`bounded_metadata`]).
const METADATA_KEYS_AT_MOST_253: &str = "!('metadata' in dyn(self)) || dyn(self).metadata.all(k, size(k) <= 253)";
const METADATA_KEY_TOO_LONG: &str = "metadata keys must be at most 253 characters";

/// `spec.metadata`: free-form, with at most 64 keys, and each value a string of at most 4096 characters or a list
/// or object of at most 100 entries. What is nested deeper is bounded only by the API server's limit on an
/// object's size: neither a schema nor CEL can reach into free-form values.
fn bounded_metadata(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = free_form_object(generator);
    schema.insert("maxProperties".into(), 64.into());
    schema.insert(
        "additionalProperties".into(),
        serde_json::json!({
            "x-kubernetes-preserve-unknown-fields": true,
            "nullable": true,
            "maxLength": 4096,
            "maxItems": 100,
            "maxProperties": 100
        }),
    );
    schema
}

/// A user of a LiteLLM proxy, kept in sync with the proxy's internal user table by litellm-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "litellm-operator.io",
    version = "v1alpha1",
    kind = "LiteLLMUser",
    plural = "litellmusers",
    shortname = "llmuser",
    category = "litellm",
    namespaced,
    status = "LiteLLMUserStatus",
    doc = "A LiteLLM proxy user and its API key, managed by litellm-operator.",
    printcolumn = r#"{"name":"User ID","type":"string","jsonPath":".status.userId"}"#,
    printcolumn = r#"{"name":"Proxy","type":"string","jsonPath":".status.proxy"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.userRole"}"#,
    printcolumn = r#"{"name":"Spend","type":"number","jsonPath":".status.spend"}"#,
    printcolumn = r#"{"name":"Max Budget","type":"number","jsonPath":".spec.maxBudget"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.userId) == has(oldSelf.userId)").message("userId cannot be added or removed after creation; create a new LiteLLMUser instead").reason(kube::core::Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(METADATA_KEYS_AT_MOST_253).message(METADATA_KEY_TOO_LONG).field_path(".metadata"))]
#[serde(rename_all = "camelCase")]
pub struct LiteLLMUserSpec {
    /// The LiteLLM user id. Immutable. When omitted, the operator uses `<namespace>.<name>` and records it in
    /// `status.userId`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("userId is immutable").reason(kube::core::Reason::FieldValueInvalid))]
    #[schemars(length(min = 1, max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,

    /// A human-readable name shown in the LiteLLM admin UI. At most 256 characters.
    #[schemars(length(max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_alias: Option<String>,

    /// The user's e-mail address. LiteLLM refuses an address that another user already has.
    #[schemars(length(min = 3, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,

    /// The user's role on the proxy: `proxy_admin`, `proxy_admin_viewer`, `internal_user` or
    /// `internal_user_viewer`. When omitted, LiteLLM applies its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_role: Option<UserRole>,

    /// Ids of LiteLLM teams the user is a member of. The teams must already exist on the proxy. When omitted,
    /// team membership is left as it is; an empty list removes the user from every team. At most 100 teams, each
    /// id at most 253 characters.
    #[schemars(length(max = 100), inner(length(max = 253)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,

    /// The most the user may spend, in USD, per budget period (see `budgetDuration`); requests beyond it are
    /// refused by the proxy.
    #[schemars(range(min = 0.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,

    /// A budget in USD past which LiteLLM sends alerts without refusing requests. Applied when the user is
    /// created; LiteLLM does not store it on the user, so later changes are not sent.
    #[schemars(range(min = 0.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_budget: Option<f64>,

    /// How often spend is reset to zero: a positive number and a unit, `s` (seconds), `m` (minutes), `h`
    /// (hours), `d` (days), `w` (weeks) or `mo` (months), for example `30d` or `1mo`.
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w|mo)$"))]
    #[x_kube(validation = Rule::new(DURATION_AT_MOST_TEN_YEARS).message(DURATION_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,

    /// Names of the models the user may call. An empty list means every model; `["no-default-models"]` means
    /// only models granted through teams. At most 1000 models, each name at most 256 characters.
    #[schemars(length(max = 1000), inner(length(max = 256)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,

    /// Tokens per minute the user may use, across all models.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<i64>,

    /// Requests per minute the user may make, across all models.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<i64>,

    /// How many requests of the user may run at the same time.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<i64>,

    /// Budgets per model, keyed by model name: at most 100 models, each name at most 256 characters.
    #[schemars(extend("maxProperties" = 100))]
    #[x_kube(validation = Rule::new(KEYS_AT_MOST_256).message(MODEL_NAME_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_max_budget: Option<BTreeMap<String, ModelBudget>>,

    /// Requests per minute per model, keyed by model name: at most 100 models, each name at most 256 characters.
    #[schemars(extend("maxProperties" = 100))]
    #[x_kube(validation = Rule::new(KEYS_AT_MOST_256).message(MODEL_NAME_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_rpm_limit: Option<BTreeMap<String, NonNegativeInt>>,

    /// Tokens per minute per model, keyed by model name: at most 100 models, each name at most 256 characters.
    #[schemars(extend("maxProperties" = 100))]
    #[x_kube(validation = Rule::new(KEYS_AT_MOST_256).message(MODEL_NAME_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_tpm_limit: Option<BTreeMap<String, NonNegativeInt>>,

    /// Model aliases for the user's API key: requests for the key (alias) are served by the value (model).
    /// Applied to the key the operator creates. At most 100 aliases; aliases and model names at most 256 characters
    /// each.
    #[schemars(extend("maxProperties" = 100, "additionalProperties" = { "type": "string", "maxLength": 256 }))]
    #[x_kube(validation = Rule::new(KEYS_AT_MOST_256).message("aliases (keys) must be at most 256 characters"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<BTreeMap<String, String>>,

    /// Free-form metadata stored on the LiteLLM user. The operator adds one key of its own,
    /// `litellm-operator`, to mark users it manages. At most 64 keys, each at most 253 characters; each value a
    /// string of at most 4096 characters, a number, a boolean, or a list or object of at most 100 entries.
    #[schemars(schema_with = "bounded_metadata")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,

    /// Cache-control values the user may send, for example `no-cache` or `no-store`. At most 32 values, each at
    /// most 64 characters.
    #[schemars(length(max = 32), inner(length(max = 64)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_cache_controls: Option<Vec<String>>,

    /// The user's id in the single sign-on provider. LiteLLM requires it to be unique. At most 256 characters.
    #[schemars(length(min = 1, max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso_user_id: Option<String>,

    /// Access to objects other than models: vector stores and MCP servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_permission: Option<ObjectPermission>,

    /// Ask LiteLLM to send an invitation e-mail when it creates the user (needs e-mail set up on the proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_invite_email: Option<bool>,

    /// The user's API key, which the operator creates and writes into a Secret.
    #[serde(default)]
    pub key: KeySpec,

    /// What happens to the LiteLLM user when this resource is deleted: `Delete` (the default) deletes the user
    /// and all its keys; `Retain` leaves them on the proxy.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The LiteLLMProxy (cluster-scoped) this user lives on. When omitted, the proxy marked as the default, or
    /// the operator's own. Changing it moves the user: it is removed from the old proxy as `deletionPolicy`
    /// says and created on the new one, with a new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_ref: Option<ProxyRef>,

    /// Take over a LiteLLM user with this id that already exists and is not managed by another LiteLLMUser.
    /// Without it, such a user is left untouched and the resource reports `Ready=False` with reason
    /// `UserExists`. An adopted user keeps the keys it already has (see `key.unmanagedKeys`), and is changed on
    /// the proxy only where it differs from this spec.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
}

/// A reference to a LiteLLMProxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ProxyRef {
    /// Name of the LiteLLMProxy.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A role LiteLLM accepts for a user.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    ProxyAdmin,
    ProxyAdminViewer,
    InternalUser,
    InternalUserViewer,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::ProxyAdmin => "proxy_admin",
            UserRole::ProxyAdminViewer => "proxy_admin_viewer",
            UserRole::InternalUser => "internal_user",
            UserRole::InternalUserViewer => "internal_user_viewer",
        }
    }
}

/// A budget for one model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelBudget {
    /// The most the user may spend on this model, in USD, per `timePeriod`.
    #[schemars(range(min = 0.0))]
    pub budget_limit: f64,
    /// How often this model's spend is reset, for example `1d` or `30d`.
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w|mo)$"))]
    #[x_kube(validation = Rule::new(DURATION_AT_MOST_TEN_YEARS).message(DURATION_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_period: Option<String>,
}

/// A non-negative integer (a wrapper so maps of limits get a `minimum` in the schema).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct NonNegativeInt(#[schemars(range(min = 0))] pub i64);

/// Access to vector stores and MCP servers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPermission {
    /// Ids of vector stores the user may use. At most 100, each at most 253 characters.
    #[schemars(length(max = 100), inner(length(max = 253)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_stores: Option<Vec<String>>,
    /// Ids of MCP servers the user may use. At most 100, each at most 253 characters.
    #[schemars(length(max = 100), inner(length(max = 253)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<String>>,
    /// MCP access groups the user belongs to. At most 100, each at most 253 characters.
    #[schemars(length(max = 100), inner(length(max = 253)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_access_groups: Option<Vec<String>>,
}

/// How the user's API key is delivered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// Create an API key for the user and keep it in a Secret. Default `true`. When `false`, the operator
    /// neither creates nor deletes keys of this user.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the Secret that receives the key, in the resource's namespace. Default `<name>-litellm-key`.
    /// The Secret holds `LITELLM_API_KEY` (the key) and `LITELLM_USER_ID`, ready for `envFrom`. Deleting the
    /// Secret makes the operator issue a new key and revoke the old one.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the key is replaced by a new one. Whatever triggers it (the schedule, or a new value of the
    /// annotation `litellm-operator.io/rotate`), the new key goes into the Secret first and the old key keeps
    /// working for `gracePeriod`, so that pods picking up the new Secret never hold a dead key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,
    /// How long each key is valid on the proxy, for example `90d`: LiteLLM refuses the key afterwards. The
    /// operator rotates the key before it expires (at the latest `gracePeriod` plus a tenth of the duration
    /// before). When omitted, keys do not expire.
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w)$"))]
    #[x_kube(validation = Rule::new(DURATION_AT_MOST_TEN_YEARS).message(DURATION_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// What happens to keys of this LiteLLM user that the operator did not issue, such as keys made in the
    /// LiteLLM UI or that existed before the user was adopted: `Keep` leaves them working, `Revoke` revokes
    /// them. Keys the operator issued itself (its key, and old keys whose grace period ended) are managed
    /// either way. Default: `Keep` when `adopt` is true, so that adopting a user does not break the clients
    /// that use its existing keys; `Revoke` otherwise, so that the key in the Secret is the user's only key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_keys: Option<UnmanagedKeys>,
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec { enabled: true, secret_name: None, rotation: None, duration: None, unmanaged_keys: None }
    }
}

/// What happens to keys of a LiteLLM user that the operator did not issue.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UnmanagedKeys {
    /// Leave them working.
    Keep,
    /// Revoke them.
    Revoke,
}

impl LiteLLMUserSpec {
    /// `key.unmanagedKeys` with its default: an adopted user keeps the keys it came with.
    pub fn unmanaged_keys(&self) -> UnmanagedKeys {
        self.key.unmanaged_keys.unwrap_or(if self.adopt { UnmanagedKeys::Keep } else { UnmanagedKeys::Revoke })
    }
}

/// Scheduled and on-demand key rotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// Rotate the key this long after it was issued, for example `30d`. When omitted, keys are rotated only on
    /// demand (annotation `litellm-operator.io/rotate`) or before they expire (`key.duration`).
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w)$"))]
    #[x_kube(validation = Rule::new(DURATION_AT_MOST_TEN_YEARS).message(DURATION_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// How long the old key keeps working after a rotation, for example `10m`; `0s` revokes it at once.
    /// Default `5m`, enough for kubelet to refresh a mounted Secret and for a reloader to restart pods.
    #[schemars(length(max = 12), regex(pattern = r"^[0-9]{1,9}(s|m|h|d|w)$"))]
    #[x_kube(validation = Rule::new(DURATION_AT_MOST_TEN_YEARS).message(DURATION_TOO_LONG))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
}

fn default_true() -> bool {
    true
}

/// What happens to the LiteLLM user when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the LiteLLM user and its keys.
    #[default]
    Delete,
    /// Keep the LiteLLM user and its keys on the proxy.
    Retain,
}

/// What the operator observed, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiteLLMUserStatus {
    /// The LiteLLM user id this resource manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The proxy the user lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Name of the Secret holding the user's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_name: Option<String>,
    /// LiteLLM's id of the key in the Secret (the SHA-256 hash of the key, not the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// The hash of a key the operator has issued and is still delivering into the Secret. Only keys the
    /// operator recorded here or in `keyHash` are ever trusted from the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_key_hash: Option<String>,
    /// The Secret's `resourceVersion` when the operator last confirmed it holds the key; a Secret still at
    /// this version needs no reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_version: Option<String>,
    /// When the key in the Secret was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_issued_at: Option<String>,
    /// When the key will next be rotated (RFC 3339), by `key.rotation.every` or before `key.duration` ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<String>,
    /// Keys replaced by a rotation that still work until their grace period ends; the operator revokes
    /// each at `revokeAt`, also across restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_keys: Vec<RetiringKey>,
    /// The value of the `litellm-operator.io/rotate` annotation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_request: Option<String>,
    /// What the user has spent in the current budget period, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<f64>,
    /// The budget LiteLLM enforces for the user, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
    /// When LiteLLM next resets the user's spend (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_reset_at: Option<String>,
    /// Usage over the last days, from LiteLLM's daily activity records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageSummary>,
    /// When the operator last changed something to bring the proxy, the key or this status in line with the
    /// spec (RFC 3339). Periodic checks that find everything in order do not move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// The `metadata.generation` the operator last acted on, whatever the outcome: with a `Stalled` condition
    /// it is the generation that was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `metadata.generation` last brought onto the proxy in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_generation: Option<i64>,
    /// LiteLLM fields the operator has set from the spec; a field that leaves the spec is cleared on the proxy
    /// where LiteLLM allows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<String>,
    /// Fields the spec no longer sets that keep a value on the proxy, because LiteLLM cannot clear them (see the
    /// `FieldsNotCleared` condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncleared_fields: Vec<String>,
    /// `Ready`, `Reconciling` and `Stalled`, as GitOps tools (kstatus, Argo CD, Flux) read them.
    #[schemars(schema_with = "conditions_schema")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A key that a rotation replaced, kept working until its grace period ends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiringKey {
    /// LiteLLM's id of the key (its SHA-256 hash).
    pub hash: String,
    /// When the operator revokes it (RFC 3339).
    pub revoke_at: String,
}

/// Spend, tokens and requests over a recent window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// Length of the window in days, ending today (UTC).
    pub window_days: i64,
    /// Spend in USD over the window.
    pub spend: f64,
    /// Prompt and completion tokens over the window.
    pub total_tokens: i64,
    /// API requests over the window.
    pub requests: i64,
    /// When LiteLLM's daily activity was last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    /// The user's spend when usage was last read: usage is read again only once spend has moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_at_read: Option<f64>,
}

impl LiteLLMUser {
    /// The LiteLLM user id: `spec.userId`, or `<namespace>.<name>`. Namespaces cannot contain dots, so the
    /// derived id is unique per resource and survives re-creation of the resource.
    pub fn litellm_user_id(&self) -> String {
        match &self.spec.user_id {
            Some(id) => id.clone(),
            None => derive_user_id(self.metadata.namespace.as_deref().unwrap_or_default(), &self.name_any()),
        }
    }

    /// Name of the Secret for the key: `spec.key.secretName`, or `<name>-litellm-key` shortened to fit the
    /// 253 characters of a Kubernetes name.
    pub fn key_secret_name(&self) -> String {
        match &self.spec.key.secret_name {
            Some(name) => name.clone(),
            None => bounded_name(&self.name_any(), "-litellm-key", 253),
        }
    }

    /// `<namespace>/<name>`: how the operator names the resource in claims, owner marks and its own memories.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or_default(), self.name_any())
    }

    /// The resource's name as a label value (at most 63 characters), for labelling what belongs to it.
    pub fn label_value(&self) -> String {
        bounded_name(&self.name_any(), "", 63)
    }
}

/// A spec value the operator cannot use, with the field it is in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct InvalidField {
    /// The field's path under `spec`, as `kubectl explain` names it.
    pub field: String,
    pub problem: String,
}

impl LiteLLMUserSpec {
    /// The first value the operator cannot compute with. The CRD refuses these at admission; this is the same
    /// rule for resources admitted before it (an older CRD) or written around it, so that no value reaches a
    /// computation that could overflow.
    pub fn invalid_field(&self) -> Option<InvalidField> {
        let rotation = self.key.rotation.as_ref();
        let model_periods = self.model_max_budget.iter().flatten().filter_map(|(model, budget)| {
            budget.time_period.as_deref().map(|period| (format!("modelMaxBudget[{model}].timePeriod"), period, false))
        });
        let durations = [
            ("key.duration".to_owned(), self.key.duration.as_deref(), false),
            ("key.rotation.every".to_owned(), rotation.and_then(|r| r.every.as_deref()), false),
            ("key.rotation.gracePeriod".to_owned(), rotation.and_then(|r| r.grace_period.as_deref()), true),
            ("budgetDuration".to_owned(), self.budget_duration.as_deref(), false),
        ]
        .into_iter()
        .filter_map(|(field, text, zero_allowed)| text.map(|text| (field, text, zero_allowed)))
        .chain(model_periods);
        for (field, text, zero_allowed) in durations {
            if let Err(err) = crate::duration::parse_spec(text, zero_allowed) {
                return Some(InvalidField { field, problem: err.to_string() });
            }
        }
        None
    }
}

/// The annotation whose every new value asks for a key rotation.
pub const ROTATE_ANNOTATION: &str = "litellm-operator.io/rotate";

/// The user id for a resource without `spec.userId`.
pub fn derive_user_id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_user_id_is_namespace_dot_name() {
        let mut user = LiteLLMUser::new("alice", LiteLLMUserSpec::default());
        user.metadata.namespace = Some("team-a".into());
        assert_eq!(user.litellm_user_id(), "team-a.alice");
        assert_eq!(user.key_secret_name(), "alice-litellm-key");
        user.spec.user_id = Some("alice@corp".into());
        user.spec.key.secret_name = Some("custom".into());
        assert_eq!(user.litellm_user_id(), "alice@corp");
        assert_eq!(user.key_secret_name(), "custom");
    }

    #[test]
    fn long_names_get_names_and_labels_that_fit() {
        let long = "a".repeat(253);
        let mut user = LiteLLMUser::new(&long, LiteLLMUserSpec::default());
        user.metadata.namespace = Some("ns".into());
        let secret = user.key_secret_name();
        assert!(secret.len() <= 253 && secret.ends_with("-litellm-key"), "{secret}");
        assert!(user.label_value().len() <= 63);
        let other = LiteLLMUser::new(&format!("{}b", "a".repeat(252)), LiteLLMUserSpec::default());
        assert_ne!(other.key_secret_name(), secret, "a cut name stays unique");
        assert_eq!(LiteLLMUser::new("short", LiteLLMUserSpec::default()).label_value(), "short");
    }

    /// Tenants write the spec and the operator caches it, so nothing in it may grow without bound.
    #[test]
    fn every_spec_field_is_bounded() {
        fn check(path: &str, schema: &serde_json::Value, unbounded: &mut Vec<String>) {
            let has = |key: &str| schema.get(key).is_some();
            let bounded = match schema.get("type").and_then(|t| t.as_str()) {
                Some("string") => has("maxLength") || has("enum"),
                Some("array") => has("maxItems"),
                Some("object") => has("properties") || has("maxProperties"),
                _ => true,
            };
            if !bounded {
                unbounded.push(path.to_owned());
            }
            for (key, inner) in schema.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
                check(&format!("{path}.{key}"), inner, unbounded);
            }
            for key in ["items", "additionalProperties"] {
                if let Some(inner) = schema.get(key).filter(|s| s.is_object()) {
                    check(&format!("{path}[]"), inner, unbounded);
                }
            }
        }
        let crd = serde_json::to_value(<LiteLLMUser as kube::CustomResourceExt>::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut unbounded = Vec::new();
        check("spec", spec, &mut unbounded);
        assert!(unbounded.is_empty(), "without a maximum: {unbounded:?}");
        assert_eq!(spec["properties"]["metadata"]["maxProperties"], 64);
    }

    #[test]
    fn key_is_on_by_default_and_policy_is_delete() {
        let spec: LiteLLMUserSpec = serde_json::from_str("{}").unwrap();
        assert!(spec.key.enabled);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        let spec: LiteLLMUserSpec = serde_json::from_str(r#"{"key":{"secretName":"x"}}"#).unwrap();
        assert!(spec.key.enabled, "naming the Secret keeps the key on");
    }

    #[test]
    fn adopted_users_keep_their_other_keys_unless_told_otherwise() {
        let created = LiteLLMUserSpec::default();
        assert_eq!(created.unmanaged_keys(), UnmanagedKeys::Revoke);
        let adopted = LiteLLMUserSpec { adopt: true, ..Default::default() };
        assert_eq!(adopted.unmanaged_keys(), UnmanagedKeys::Keep);
        let explicit: LiteLLMUserSpec =
            serde_json::from_str(r#"{"adopt":true,"key":{"unmanagedKeys":"Revoke"}}"#).unwrap();
        assert_eq!(explicit.unmanaged_keys(), UnmanagedKeys::Revoke);
    }
}
