//! The `LiteLLMProxy` custom resource: a LiteLLM proxy the platform team offers to tenants, how to reach it,
//! and the policy that bounds what a tenant's `LiteLLMUser` may ask of it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{UserRole, conditions_schema};

/// A LiteLLM proxy that `LiteLLMUser` resources can name in `spec.proxyRef`, with the policy for them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "litellm-operator.io",
    version = "v1alpha1",
    kind = "LiteLLMProxy",
    plural = "litellmproxies",
    shortname = "llmproxy",
    category = "litellm",
    status = "LiteLLMProxyStatus",
    doc = "A LiteLLM proxy offered to tenants' LiteLLMUsers, and the policy that bounds them; owned by the platform team.",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"Generation","type":"string","jsonPath":".status.generation"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","jsonPath":".status.users"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LiteLLMProxySpec {
    /// Base URL of the proxy, for example `https://litellm.litellm.svc:4000`. A plain `http://` URL to anything
    /// but a loopback address is refused unless `allowInsecureHttp` is set: the master key would travel in
    /// clear text.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub url: String,
    /// The Secret key holding the proxy's master key. Changing the Secret takes effect without a restart.
    pub master_key_secret_ref: SecretKeyRef,
    /// PEM certificates to trust for an `https://` URL, in addition to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of one request to the proxy, for example `10s`. Default `10s`.
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}(ms|s|m)$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long an idle connection to the proxy is kept for the next request, for example `3s`. Default `3s`:
    /// below the 5s after which the proxy's server (uvicorn) closes an idle connection. Set it below the proxy's
    /// keep-alive timeout (and below any load balancer's idle timeout on the way), or requests meet connections
    /// the proxy is closing.
    #[schemars(length(max = 8), regex(pattern = r"^[0-9]{1,5}(ms|s)$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Serve LiteLLMUsers that name no proxy. At most one proxy should be the default; if several are, the
    /// first by name is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Allow a plain `http://` URL to a non-loopback address (the master key then travels unencrypted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// What tenants' LiteLLMUsers may ask of this proxy. A resource that asks for more is refused with
    /// `Stalled`, reason `PolicyViolation`, and nothing is sent to the proxy for it.
    #[serde(default)]
    pub policy: ProxyPolicy,
}

/// A key of a Secret in a namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data. Default `masterkey`.
    #[serde(default = "default_master_key_key")]
    pub key: String,
}

fn default_master_key_key() -> String {
    "masterkey".to_owned()
}

/// What a tenant's LiteLLMUser may ask of a proxy. Every rule defaults to the safe choice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyPolicy {
    /// Which namespaces may use the proxy: those listed in `names` or matching `selector`. Default: every
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespacePolicy>,
    /// Roles a LiteLLMUser may have. Default `internal_user` and `internal_user_viewer`: an admin role gives
    /// its key full control of the proxy, so allow one only for namespaces you trust with that. A list
    /// without `internal_user` (the role the proxy gives a user created without one) makes `userRole` required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_roles: Option<Vec<UserRole>>,
    /// Which user ids a namespace may use, and adopt.
    #[serde(default)]
    pub user_ids: UserIdPolicy,
    /// The largest `maxBudget` (USD) a LiteLLMUser may ask for; when set, a LiteLLMUser must set one.
    #[schemars(range(min = 0.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
    /// The largest `tpmLimit`; when set, a LiteLLMUser must set one.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tpm_limit: Option<i64>,
    /// The largest `rpmLimit`; when set, a LiteLLMUser must set one.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rpm_limit: Option<i64>,
    /// The largest `maxParallelRequests`; when set, a LiteLLMUser must set one.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<i64>,
    /// Models a LiteLLMUser may name in `models`; when set, `models` must be a non-empty subset (an empty list
    /// would mean every model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// The budget period `maxBudget` is a ceiling for, for example `30d` or `1mo`: a LiteLLMUser's
    /// `budgetDuration` must be at least this long (or unset: a budget that never resets). Without it, a
    /// `maxBudget` ceiling is a ceiling on all the spend ever, and `budgetDuration` is refused: a budget that
    /// resets every second would make any ceiling meaningless.
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w|mo)$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Which LiteLLM teams a LiteLLMUser may join (`teams`). Default: only team ids under the namespace's own
    /// prefix, `<namespace>.`.
    #[serde(default)]
    pub teams: TeamPolicy,
    /// Vector stores, MCP servers and MCP access groups a LiteLLMUser may name in `objectPermission`.
    /// Default: none.
    #[serde(default)]
    pub object_permissions: ObjectPermissionPolicy,
    /// Whether a LiteLLMUser may ask LiteLLM to send an invitation e-mail (`sendInviteEmail`), which goes out
    /// as the platform's mail to any address the tenant names. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_invite_email: bool,
    /// E-mail domains a LiteLLMUser's `userEmail` may be in (`corp.example`, or `*.corp.example` for its
    /// subdomains). LiteLLM refuses an address another user already has, so an address outside the namespace's
    /// domains could be taken from its owner. Default: any domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email_domains: Option<Vec<String>>,
    /// Whether a LiteLLMUser may set `ssoUserId`, the id that single sign-on maps to the user. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_sso_user_id: bool,
    /// Bounds on key rotation: how often, how long an old key keeps working, how many keys live at once.
    #[serde(default)]
    pub keys: KeyPolicy,
    /// What one namespace's LiteLLMUsers on this proxy may add up to. Beyond it the newest resources (by
    /// creation time, then name) are refused, so the same ones are refused whatever order they are looked at
    /// in. Default: no limit (a Kubernetes ResourceQuota on `count/litellmusers.litellm-operator.io` also
    /// bounds the number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_quota: Option<NamespaceQuota>,
}

/// Limits on one namespace's LiteLLMUsers on a proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuota {
    /// How many LiteLLMUsers a namespace may have on this proxy.
    #[schemars(range(min = 0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<i32>,
    /// The most a namespace's LiteLLMUsers' `maxBudget`s may add up to, in USD; when set, each must set one.
    #[schemars(range(min = 0.0))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
}

/// Which teams a LiteLLMUser may join.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamPolicy {
    /// `NamespacePrefix` (the default): team ids starting with `<namespace>.`, and those in `allowed`. `Any`:
    /// any team id; a team's members may use its models and budget, and see its other members.
    #[serde(default)]
    pub scope: TeamScope,
    /// Team ids any namespace allowed on this proxy may join, besides its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TeamScope {
    #[default]
    NamespacePrefix,
    Any,
}

/// Objects other than models a LiteLLMUser may be granted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPermissionPolicy {
    /// Vector store ids a LiteLLMUser may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vector_stores: Vec<String>,
    /// MCP server ids a LiteLLMUser may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    /// MCP access groups a LiteLLMUser may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_access_groups: Vec<String>,
}

/// Bounds on key rotation, against a tenant making the operator mint and revoke keys without end.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// The shortest `key.rotation.every`, and the least time between two keys: a
    /// `litellm-operator.io/rotate` annotation, a deleted or overwritten Secret or a revoked key sooner than
    /// this after the key was issued gets its new key only then. `key.duration` must be at least twice this,
    /// since a key is rotated at half its lifetime at the earliest. Default `1h`.
    #[schemars(length(max = 12), regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h|d|w)$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rotation_interval: Option<String>,
    /// The longest `key.rotation.gracePeriod`. Default `1d`.
    #[schemars(length(max = 12), regex(pattern = r"^[0-9]{1,9}(s|m|h|d|w)$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grace_period: Option<String>,
    /// How many keys of one user may work at once: the current key and those still in their grace period. A
    /// rotation that would exceed it revokes the oldest old keys early. Default 3.
    #[schemars(range(min = 1, max = 100))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_live_keys: Option<i32>,
}

impl KeyPolicy {
    pub const DEFAULT_MIN_ROTATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
    pub const DEFAULT_MAX_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(86_400);
    pub const DEFAULT_MAX_LIVE_KEYS: i32 = 3;

    pub fn min_rotation_interval(&self) -> std::time::Duration {
        crate::duration::parse_or(self.min_rotation_interval.as_deref(), Self::DEFAULT_MIN_ROTATION_INTERVAL)
    }

    pub fn max_grace_period(&self) -> std::time::Duration {
        crate::duration::parse_or(self.max_grace_period.as_deref(), Self::DEFAULT_MAX_GRACE_PERIOD)
    }

    pub fn max_live_keys(&self) -> usize {
        usize::try_from(self.max_live_keys.unwrap_or(Self::DEFAULT_MAX_LIVE_KEYS)).unwrap_or(1).max(1)
    }
}

/// Namespaces allowed to use a proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePolicy {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// How user ids are scoped to namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserIdPolicy {
    /// `NamespacePrefix` (the default): a LiteLLMUser may only use user ids that start with its namespace and
    /// a dot, like the default id `<namespace>.<name>`, so no tenant can reach another's users. `Any`: any id.
    #[serde(default)]
    pub scope: UserIdScope,
    /// Namespaces whose LiteLLMUsers may adopt (`spec.adopt`) existing users of any id. Others may adopt only
    /// ids under their own prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adoption_namespaces: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UserIdScope {
    #[default]
    NamespacePrefix,
    Any,
}

/// What the operator found about the proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiteLLMProxyStatus {
    /// Whether the proxy answered its liveness probe.
    #[serde(default)]
    pub reachable: bool,
    /// Whether the proxy accepted the master key.
    #[serde(default)]
    pub master_key_accepted: bool,
    /// Which LiteLLM generation the proxy behaves like: `newer` (404 for an unknown user, 409 for a
    /// duplicate) or `older` (200 stubs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// LiteLLMUsers managed on this proxy.
    #[serde(default)]
    pub users: i64,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` when the proxy is reachable with the master key.
    #[schemars(schema_with = "conditions_schema")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Labels of a namespace, for matching `policy.namespaces.selector`.
pub type NamespaceLabels = BTreeMap<String, String>;
