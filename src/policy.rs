//! The platform's policy for a proxy, checked before anything is sent to it: a pure function from (policy,
//! namespace, spec) to a verdict, so every rule is a unit test. Tenants write LiteLLMUsers; nothing they write
//! may get them more than the policy allows, and a request for more is refused, never silently clamped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::{LiteLLMUserSpec, NamespaceLabels, ProxyPolicy, UserIdScope, UserRole};

/// A rule a resource breaks, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule, as named in the policy (`allowedRoles`, `maxBudget`, …).
    pub rule: &'static str,
    pub message: String,
}

/// Roles allowed when the policy names none: not the admin roles, whose keys control the whole proxy.
pub const DEFAULT_ROLES: [UserRole; 2] = [UserRole::InternalUser, UserRole::InternalUserViewer];

/// Whether a LiteLLMUser in `namespace` (with these labels, when known) may ask `spec` of the proxy `proxy`.
pub fn check(
    policy: &ProxyPolicy,
    proxy: &str,
    namespace: &str,
    labels: Option<&NamespaceLabels>,
    spec: &LiteLLMUserSpec,
    user_id: &str,
) -> Result<(), Violation> {
    let violation =
        |rule, message: String| Err(Violation { rule, message: format!("{message} (proxy {proxy}, policy.{rule})") });
    if let Some(allowed) = &policy.namespaces {
        let by_name = allowed.names.iter().any(|n| n == namespace);
        let by_label = allowed.selector.as_ref().is_some_and(|s| labels.is_some_and(|l| selects(s, l)));
        if !by_name && !by_label {
            return violation("namespaces", format!("namespace {namespace} may not use this proxy"));
        }
    }
    let roles = policy.allowed_roles.as_deref().unwrap_or(&DEFAULT_ROLES);
    if let Some(role) = spec.user_role
        && !roles.contains(&role)
    {
        return violation("allowedRoles", format!("role {} is not allowed", role.as_str()));
    }
    let prefix = format!("{namespace}.");
    let under_prefix = user_id.starts_with(&prefix);
    if policy.user_ids.scope == UserIdScope::NamespacePrefix && !under_prefix {
        return violation(
            "userIds",
            format!("user id {user_id} is outside this namespace's ids, which start with {prefix}"),
        );
    }
    if spec.adopt && !under_prefix && !policy.user_ids.adoption_namespaces.iter().any(|n| n == namespace) {
        return violation("userIds", format!("namespace {namespace} may adopt only user ids that start with {prefix}"));
    }
    for (rule, ceiling, asked, what) in [
        ("maxTpmLimit", policy.max_tpm_limit, spec.tpm_limit, "tpmLimit"),
        ("maxRpmLimit", policy.max_rpm_limit, spec.rpm_limit, "rpmLimit"),
        ("maxParallelRequests", policy.max_parallel_requests, spec.max_parallel_requests, "maxParallelRequests"),
    ] {
        if let Some(ceiling) = ceiling {
            match asked {
                Some(asked) if asked <= ceiling => {}
                Some(asked) => return violation(rule, format!("{what} {asked} is above the ceiling of {ceiling}")),
                None => return violation(rule, format!("{what} must be set, to at most {ceiling}")),
            }
        }
    }
    if let Some(ceiling) = policy.max_budget {
        match spec.max_budget {
            Some(asked) if asked <= ceiling => {}
            Some(asked) => {
                return violation("maxBudget", format!("maxBudget {asked} is above the ceiling of {ceiling}"));
            }
            None => return violation("maxBudget", format!("maxBudget must be set, to at most {ceiling}")),
        }
    }
    if let Some(allowed) = &policy.allowed_models {
        match spec.models.as_deref() {
            None | Some([]) => {
                return violation("allowedModels", format!("models must be set to some of {}", allowed.join(", ")));
            }
            Some(models) => {
                if let Some(other) = models.iter().find(|m| !allowed.contains(m)) {
                    return violation("allowedModels", format!("model {other} is not allowed"));
                }
            }
        }
    }
    Ok(())
}

/// Whether a label selector selects these labels (`matchLabels` and `matchExpressions` together).
pub fn selects(selector: &LabelSelector, labels: &NamespaceLabels) -> bool {
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;
    use crate::crd::{NamespacePolicy, UserIdPolicy};

    fn spec(json: serde_json::Value) -> LiteLLMUserSpec {
        serde_json::from_value(json).unwrap()
    }

    fn verdict(
        policy: &ProxyPolicy,
        namespace: &str,
        spec_json: serde_json::Value,
        user_id: &str,
    ) -> Result<(), &'static str> {
        let labels = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
        check(policy, "prod", namespace, Some(&labels), &spec(spec_json), user_id).map_err(|v| v.rule)
    }

    #[test]
    fn the_default_policy_refuses_what_a_hostile_tenant_tries() {
        let default = ProxyPolicy::default();
        let cases = [
            ("a plain user", serde_json::json!({}), "team-a.alice", Ok(())),
            ("a viewer", serde_json::json!({"userRole": "internal_user_viewer"}), "team-a.v", Ok(())),
            ("proxy admin", serde_json::json!({"userRole": "proxy_admin"}), "team-a.x", Err("allowedRoles")),
            ("admin viewer", serde_json::json!({"userRole": "proxy_admin_viewer"}), "team-a.x", Err("allowedRoles")),
            ("another namespace's id", serde_json::json!({"userId": "team-b.bob"}), "team-b.bob", Err("userIds")),
            ("a bare id", serde_json::json!({"userId": "bob@corp"}), "bob@corp", Err("userIds")),
            ("a prefix look-alike", serde_json::json!({"userId": "team-ab.x"}), "team-ab.x", Err("userIds")),
            ("adopting a foreign id", serde_json::json!({"userId": "legacy", "adopt": true}), "legacy", Err("userIds")),
            ("adopting its own", serde_json::json!({"userId": "team-a.old", "adopt": true}), "team-a.old", Ok(())),
        ];
        for (what, spec_json, user_id, expected) in cases {
            assert_eq!(verdict(&default, "team-a", spec_json, user_id), expected, "{what}");
        }
    }

    #[test]
    fn a_platform_can_allow_more_explicitly() {
        let open = ProxyPolicy {
            allowed_roles: Some(vec![UserRole::ProxyAdmin, UserRole::InternalUser]),
            user_ids: UserIdPolicy { scope: UserIdScope::Any, adoption_namespaces: vec!["platform".into()] },
            ..ProxyPolicy::default()
        };
        assert_eq!(verdict(&open, "platform", serde_json::json!({"userRole": "proxy_admin"}), "platform.x"), Ok(()));
        assert_eq!(verdict(&open, "team-a", serde_json::json!({"userId": "bob@corp"}), "bob@corp"), Ok(()));
        assert_eq!(verdict(&open, "platform", serde_json::json!({"adopt": true}), "legacy"), Ok(()));
        assert_eq!(verdict(&open, "team-a", serde_json::json!({"adopt": true}), "legacy"), Err("userIds"));
    }

    #[test]
    fn ceilings_refuse_more_and_refuse_unlimited() {
        let capped = ProxyPolicy {
            max_budget: Some(100.0),
            max_tpm_limit: Some(1000),
            allowed_models: Some(vec!["gpt-4o-mini".into()]),
            ..ProxyPolicy::default()
        };
        let ok = serde_json::json!({"maxBudget": 100, "tpmLimit": 1000, "models": ["gpt-4o-mini"]});
        assert_eq!(verdict(&capped, "team-a", ok, "team-a.a"), Ok(()));
        let cases = [
            (serde_json::json!({"maxBudget": 101, "tpmLimit": 1, "models": ["gpt-4o-mini"]}), "maxBudget"),
            (serde_json::json!({"tpmLimit": 1, "models": ["gpt-4o-mini"]}), "maxBudget"),
            (serde_json::json!({"maxBudget": 1, "tpmLimit": 1001, "models": ["gpt-4o-mini"]}), "maxTpmLimit"),
            (serde_json::json!({"maxBudget": 1, "models": ["gpt-4o-mini"]}), "maxTpmLimit"),
            (serde_json::json!({"maxBudget": 1, "tpmLimit": 1, "models": ["gpt-4o"]}), "allowedModels"),
            (serde_json::json!({"maxBudget": 1, "tpmLimit": 1, "models": []}), "allowedModels"),
            (serde_json::json!({"maxBudget": 1, "tpmLimit": 1}), "allowedModels"),
        ];
        for (spec_json, rule) in cases {
            assert_eq!(verdict(&capped, "team-a", spec_json.clone(), "team-a.a"), Err(rule), "{spec_json}");
        }
    }

    #[test]
    fn namespaces_by_name_or_by_label() {
        let policy = ProxyPolicy {
            namespaces: Some(NamespacePolicy {
                names: vec!["team-a".into()],
                selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "In".into(),
                        values: Some(vec!["gold".into()]),
                    }]),
                    ..LabelSelector::default()
                }),
            }),
            ..ProxyPolicy::default()
        };
        assert_eq!(verdict(&policy, "team-a", serde_json::json!({}), "team-a.x"), Ok(()));
        assert_eq!(verdict(&policy, "team-c", serde_json::json!({}), "team-c.x"), Ok(()), "by label");
        let unlabelled = check(&policy, "prod", "team-c", None, &LiteLLMUserSpec::default(), "team-c.x");
        assert_eq!(unlabelled.map_err(|v| v.rule), Err("namespaces"));
        let message = check(&policy, "prod", "team-d", Some(&BTreeMap::new()), &LiteLLMUserSpec::default(), "team-d.x")
            .unwrap_err()
            .message;
        assert!(message.contains("team-d") && message.contains("policy.namespaces"), "{message}");
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        let requirement = |operator: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selects(&requirement("In", &["1", "2"]), &labels));
        assert!(!selects(&requirement("NotIn", &["1"]), &labels));
        assert!(selects(&requirement("Exists", &[]), &labels));
        assert!(!selects(&requirement("DoesNotExist", &[]), &labels));
        let by_label = LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() };
        assert!(selects(&by_label, &labels) && !selects(&by_label, &BTreeMap::new()));
    }
}
