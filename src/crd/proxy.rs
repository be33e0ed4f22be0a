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
    /// its key full control of the proxy, so allow one only for namespaces you trust with that.
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
