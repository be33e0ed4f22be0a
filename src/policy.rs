//! The platform's policy for a proxy, checked before anything is sent to it: a pure function from (policy,
//! namespace, spec) to a verdict, so every rule is a unit test. Tenants write LiteLLMUsers; nothing they write
//! may get them more than the policy allows, and a request for more is refused, never silently clamped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use std::time::Duration;

use serde_json::Value;

use crate::{
    crd::{LiteLLMUserSpec, NamespaceLabels, ProxyPolicy, TeamScope, UserIdScope, UserRole},
    duration,
    litellm::UserRecord,
};

/// A rule a resource breaks, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule, as named in the policy (`allowedRoles`, `maxBudget`, …).
    pub rule: &'static str,
    pub message: String,
}

/// Roles allowed when the policy names none: not the admin roles, whose keys control the whole proxy.
pub const DEFAULT_ROLES: [UserRole; 2] = [UserRole::InternalUser, UserRole::InternalUserViewer];

/// The role LiteLLM gives a user created without one.
const PROXY_DEFAULT_ROLE: UserRole = UserRole::InternalUser;

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
    match spec.user_role {
        Some(role) if !roles.contains(&role) => {
            return violation("allowedRoles", format!("role {} is not allowed", role.as_str()));
        }
        // LiteLLM gives a user created without a role its default one; were that refused only once the user
        // exists, the proxy would hold a user the policy never allowed.
        None if !roles.contains(&PROXY_DEFAULT_ROLE) => {
            let allowed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            let message = format!(
                "userRole must be set: without it the proxy gives the user the role {}, and the policy allows only {}",
                PROXY_DEFAULT_ROLE.as_str(),
                allowed.join(", ")
            );
            return violation("allowedRoles", message);
        }
        _ => {}
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
        // An alias is a model by another name: older proxies do not check its target against `models`.
        if let Some((alias, target)) = spec.aliases.iter().flatten().find(|(_, target)| !allowed.contains(target)) {
            return violation("allowedModels", format!("alias {alias} names model {target}, which is not allowed"));
        }
    }
    if let Some(period) = &spec.budget_duration {
        budget_period(policy, period).or_else(|message| violation("budgetDuration", message))?;
    }
    if let Some(team) = spec.teams.iter().flatten().find(|team| !team_allowed(policy, namespace, team)) {
        return violation("teams", format!("team {team} is not allowed: {}", team_rule(policy, namespace)));
    }
    if let Some(permission) = &spec.object_permission {
        let asked = [
            ("vector store", &permission.vector_stores, &policy.object_permissions.vector_stores),
            ("MCP server", &permission.mcp_servers, &policy.object_permissions.mcp_servers),
            ("MCP access group", &permission.mcp_access_groups, &policy.object_permissions.mcp_access_groups),
        ];
        for (what, asked, allowed) in asked {
            if let Some(other) = asked.iter().flatten().find(|id| !allowed.contains(id)) {
                return violation("objectPermissions", format!("{what} {other} is not allowed"));
            }
        }
    }
    if spec.send_invite_email == Some(true) && !policy.allow_invite_email {
        return violation("allowInviteEmail", "sendInviteEmail is not allowed".into());
    }
    if spec.sso_user_id.is_some() && !policy.allow_sso_user_id {
        return violation("allowSsoUserId", "ssoUserId is not allowed".into());
    }
    if let (Some(domains), Some(email)) = (&policy.user_email_domains, &spec.user_email)
        && !email_allowed(domains, email)
    {
        let domains = if domains.is_empty() { "none".to_owned() } else { domains.join(", ") };
        return violation("userEmailDomains", format!("userEmail must be in one of these domains: {domains}"));
    }
    keys(policy, spec).or_else(|(rule, message)| violation(rule, message))
}

/// What the LiteLLMUsers of one namespace on one proxy created before this one add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NamespaceUsage {
    /// Older resources (by creation time, then name), not being deleted.
    pub older_users: usize,
    /// The sum of their `maxBudget`s (a resource without one is refused by a budget quota, and counts nothing).
    pub older_budget: f64,
}

/// The namespace quota: the newest resources beyond it are refused, so which ones does not depend on the order
/// in which reconciles run.
pub fn check_quota(
    policy: &ProxyPolicy,
    proxy: &str,
    namespace: &str,
    spec: &LiteLLMUserSpec,
    usage: &NamespaceUsage,
) -> Result<(), Violation> {
    let Some(quota) = &policy.namespace_quota else { return Ok(()) };
    let violation = |rule, message: String| {
        Err(Violation { rule, message: format!("{message} (proxy {proxy}, policy.namespaceQuota.{rule})") })
    };
    if let Some(most) = quota.max_users
        && usage.older_users >= usize::try_from(most).unwrap_or(0)
    {
        let message = format!(
            "namespace {namespace} may have {most} LiteLLMUsers on this proxy and has {} older ones; this one is refused",
            usage.older_users
        );
        return violation("maxUsers", message);
    }
    if let Some(most) = quota.max_budget {
        let Some(asked) = spec.max_budget else {
            return violation(
                "maxBudget",
                format!("maxBudget must be set: namespace {namespace}'s budgets add up to at most {most}"),
            );
        };
        if usage.older_budget + asked > most {
            let message = format!(
                "maxBudget {asked} and the {} of older LiteLLMUsers in namespace {namespace} add up to more than {most}",
                usage.older_budget
            );
            return violation("maxBudget", message);
        }
    }
    Ok(())
}

/// What a LiteLLMUser leaves unset stays on the proxy as it is: a user adopted, or changed on the proxy by
/// someone else, keeps its role, teams, object permissions and budget period unless the spec names them. Those
/// values must be within the policy too, or the tenant's key would carry them.
pub fn check_on_proxy(
    policy: &ProxyPolicy,
    proxy: &str,
    namespace: &str,
    spec: &LiteLLMUserSpec,
    record: &UserRecord,
) -> Result<(), Violation> {
    let violation =
        |rule, message: String| Err(Violation { rule, message: format!("{message} (proxy {proxy}, policy.{rule})") });
    if spec.user_role.is_none()
        && let Some(role) = record.user_role.as_deref()
    {
        let roles = policy.allowed_roles.as_deref().unwrap_or(&DEFAULT_ROLES);
        if !roles.iter().any(|allowed| allowed.as_str() == role) {
            let message = format!("the user has role {role} on the proxy, which is not allowed; set spec.userRole");
            return violation("allowedRoles", message);
        }
    }
    if spec.teams.is_none()
        && let Some(team) = record.teams.iter().find(|team| !team_allowed(policy, namespace, team))
    {
        let message = format!("the user is a member of team {team} on the proxy, which is not allowed; set spec.teams");
        return violation("teams", message);
    }
    if spec.object_permission.is_none() {
        let allowed = &policy.object_permissions;
        for (field, allowed) in [
            ("vector_stores", &allowed.vector_stores),
            ("mcp_servers", &allowed.mcp_servers),
            ("mcp_access_groups", &allowed.mcp_access_groups),
        ] {
            let granted = record.object_permission.get(field).and_then(Value::as_array).into_iter().flatten();
            if let Some(other) = granted.filter_map(Value::as_str).find(|id| !allowed.iter().any(|a| a == id)) {
                let message = format!("the user may use {other} ({field}) on the proxy, which is not allowed");
                return violation("objectPermissions", message);
            }
        }
    }
    if spec.budget_duration.is_none()
        && let Some(period) = record.budget_duration.as_deref()
        && let Err(message) = budget_period(policy, period)
    {
        return violation("budgetDuration", format!("on the proxy, {message}; set spec.budgetDuration"));
    }
    Ok(())
}

/// Whether a budget period of `period` keeps `maxBudget` the ceiling the platform meant.
fn budget_period(policy: &ProxyPolicy, period: &str) -> Result<(), String> {
    if policy.max_budget.is_none() {
        return Ok(());
    }
    let Some(ceiling_period) = &policy.budget_duration else {
        return Err(format!(
            "budgetDuration {period} would reset spend, and the maxBudget ceiling is on all spend; leave it unset"
        ));
    };
    match (duration::parse(period), duration::parse(ceiling_period)) {
        (Ok(asked), Ok(least)) if asked >= least => Ok(()),
        _ => Err(format!(
            "budgetDuration {period} is shorter than {ceiling_period}, the period of the maxBudget ceiling"
        )),
    }
}

/// Whether a LiteLLMUser in `namespace` may join `team`.
fn team_allowed(policy: &ProxyPolicy, namespace: &str, team: &str) -> bool {
    policy.teams.scope == TeamScope::Any
        || policy.teams.allowed.iter().any(|allowed| allowed == team)
        || team.strip_prefix(namespace).is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
}

fn team_rule(policy: &ProxyPolicy, namespace: &str) -> String {
    match policy.teams.allowed.as_slice() {
        [] => format!("team ids must start with {namespace}."),
        allowed => format!("team ids must start with {namespace}. or be one of {}", allowed.join(", ")),
    }
}

/// Whether `email` is in one of `domains` (`corp.example`, or `*.corp.example` for its subdomains).
fn email_allowed(domains: &[String], email: &str) -> bool {
    let Some((_, domain)) = email.rsplit_once('@') else { return false };
    let domain = domain.to_ascii_lowercase();
    domains.iter().map(|d| d.to_ascii_lowercase()).any(|allowed| match allowed.strip_prefix("*.") {
        Some(parent) => domain.strip_suffix(parent).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => domain == allowed,
    })
}

/// The bounds on key rotation: how often, and how long an old key keeps working.
fn keys(policy: &ProxyPolicy, spec: &LiteLLMUserSpec) -> Result<(), (&'static str, String)> {
    let bounds = &policy.keys;
    let min = bounds.min_rotation_interval();
    let parsed = |text: Option<&str>| text.and_then(|t| duration::parse(t).ok().map(|d| (t.to_owned(), d)));
    let rotation = spec.key.rotation.as_ref();
    if let Some((every, interval)) = parsed(rotation.and_then(|r| r.every.as_deref()))
        && interval < min
    {
        let message = format!("key.rotation.every {every} is shorter than the least rotation interval, {}", shown(min));
        return Err(("keys.minRotationInterval", message));
    }
    if let Some((text, lifetime)) = parsed(spec.key.duration.as_deref())
        && lifetime < min.saturating_mul(2)
    {
        let message = format!(
            "key.duration {text} is shorter than twice the least rotation interval, {}: a key is rotated at half its \
             lifetime at the earliest",
            shown(min)
        );
        return Err(("keys.minRotationInterval", message));
    }
    let most = bounds.max_grace_period();
    if let Some((text, grace)) = parsed(rotation.and_then(|r| r.grace_period.as_deref()))
        && grace > most
    {
        let message = format!("key.rotation.gracePeriod {text} is longer than the longest allowed, {}", shown(most));
        return Err(("keys.maxGracePeriod", message));
    }
    Ok(())
}

/// A duration as a person reads it: the largest whole unit.
fn shown(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => "0s".to_owned(),
        _ if secs.is_multiple_of(86_400) => format!("{}d", secs / 86_400),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
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
    fn a_policy_without_the_proxys_default_role_asks_for_a_role() {
        let viewers = ProxyPolicy { allowed_roles: Some(vec![UserRole::InternalUserViewer]), ..ProxyPolicy::default() };
        assert_eq!(verdict(&viewers, "team-a", serde_json::json!({}), "team-a.a"), Err("allowedRoles"));
        let explicit = serde_json::json!({"userRole": "internal_user_viewer"});
        assert_eq!(verdict(&viewers, "team-a", explicit, "team-a.a"), Ok(()));
        assert_eq!(verdict(&ProxyPolicy::default(), "team-a", serde_json::json!({}), "team-a.a"), Ok(()));
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
            (
                serde_json::json!({"maxBudget": 1, "tpmLimit": 1, "models": ["gpt-4o-mini"], "aliases": {"cheap": "gpt-4o"}}),
                "allowedModels",
            ),
        ];
        for (spec_json, rule) in cases {
            assert_eq!(verdict(&capped, "team-a", spec_json.clone(), "team-a.a"), Err(rule), "{spec_json}");
        }
    }

    #[test]
    fn grants_are_refused_unless_the_policy_names_them() {
        let default = ProxyPolicy::default();
        let cases = [
            ("its own team", serde_json::json!({"teams": ["team-a.dev"]}), Ok(())),
            ("the platform's team", serde_json::json!({"teams": ["platform"]}), Err("teams")),
            ("a look-alike team", serde_json::json!({"teams": ["team-ab.dev"]}), Err("teams")),
            ("the bare prefix", serde_json::json!({"teams": ["team-a."]}), Err("teams")),
            (
                "a vector store",
                serde_json::json!({"objectPermission": {"vectorStores": ["hr"]}}),
                Err("objectPermissions"),
            ),
            (
                "an MCP server",
                serde_json::json!({"objectPermission": {"mcpServers": ["github"]}}),
                Err("objectPermissions"),
            ),
            ("no objects", serde_json::json!({"objectPermission": {"vectorStores": []}}), Ok(())),
            ("an invitation", serde_json::json!({"sendInviteEmail": true}), Err("allowInviteEmail")),
            ("no invitation", serde_json::json!({"sendInviteEmail": false}), Ok(())),
            ("an SSO id", serde_json::json!({"ssoUserId": "00u1"}), Err("allowSsoUserId")),
            ("any e-mail by default", serde_json::json!({"userEmail": "x@anywhere.example"}), Ok(())),
            (
                "rotation every second",
                serde_json::json!({"key": {"rotation": {"every": "1s"}}}),
                Err("keys.minRotationInterval"),
            ),
            ("rotation hourly", serde_json::json!({"key": {"rotation": {"every": "1h"}}}), Ok(())),
            ("keys of a minute", serde_json::json!({"key": {"duration": "1m"}}), Err("keys.minRotationInterval")),
            (
                "a week of grace",
                serde_json::json!({"key": {"rotation": {"gracePeriod": "7d"}}}),
                Err("keys.maxGracePeriod"),
            ),
            ("budget period without a ceiling", serde_json::json!({"budgetDuration": "1s"}), Ok(())),
        ];
        for (what, spec_json, expected) in cases {
            assert_eq!(verdict(&default, "team-a", spec_json, "team-a.a"), expected, "{what}");
        }
        let open = ProxyPolicy {
            teams: crate::crd::TeamPolicy { scope: TeamScope::NamespacePrefix, allowed: vec!["platform".into()] },
            object_permissions: crate::crd::ObjectPermissionPolicy {
                vector_stores: vec!["hr".into()],
                ..Default::default()
            },
            allow_invite_email: true,
            user_email_domains: Some(vec!["corp.example".into(), "*.team-a.example".into()]),
            ..ProxyPolicy::default()
        };
        let cases = [
            ("a listed team", serde_json::json!({"teams": ["platform"]}), Ok(())),
            ("a listed store", serde_json::json!({"objectPermission": {"vectorStores": ["hr"]}}), Ok(())),
            ("an invitation", serde_json::json!({"sendInviteEmail": true}), Ok(())),
            ("the domain", serde_json::json!({"userEmail": "a@Corp.Example"}), Ok(())),
            ("a subdomain", serde_json::json!({"userEmail": "a@x.team-a.example"}), Ok(())),
            ("the parent of a wildcard", serde_json::json!({"userEmail": "a@team-a.example"}), Err("userEmailDomains")),
            ("a look-alike", serde_json::json!({"userEmail": "a@evilcorp.example"}), Err("userEmailDomains")),
            ("another domain", serde_json::json!({"userEmail": "ceo@other.example"}), Err("userEmailDomains")),
        ];
        for (what, spec_json, expected) in cases {
            assert_eq!(verdict(&open, "team-a", spec_json, "team-a.a"), expected, "{what}");
        }
    }

    #[test]
    fn a_budget_ceiling_holds_for_the_period_the_platform_names() {
        let total = ProxyPolicy { max_budget: Some(10.0), ..ProxyPolicy::default() };
        let monthly = ProxyPolicy { budget_duration: Some("30d".into()), ..total.clone() };
        let spec = |period: Option<&str>| match period {
            Some(period) => serde_json::json!({"maxBudget": 10, "budgetDuration": period}),
            None => serde_json::json!({"maxBudget": 10}),
        };
        assert_eq!(verdict(&total, "team-a", spec(None), "team-a.a"), Ok(()), "a budget that never resets");
        assert_eq!(verdict(&total, "team-a", spec(Some("30d")), "team-a.a"), Err("budgetDuration"));
        assert_eq!(verdict(&monthly, "team-a", spec(Some("1s")), "team-a.a"), Err("budgetDuration"));
        assert_eq!(verdict(&monthly, "team-a", spec(Some("29d")), "team-a.a"), Err("budgetDuration"));
        assert_eq!(verdict(&monthly, "team-a", spec(Some("1mo")), "team-a.a"), Ok(()));
        assert_eq!(verdict(&monthly, "team-a", spec(Some("90d")), "team-a.a"), Ok(()));
        assert_eq!(verdict(&monthly, "team-a", spec(None), "team-a.a"), Ok(()));
        let record = UserRecord { budget_duration: Some("1s".into()), ..UserRecord::default() };
        let silent = LiteLLMUserSpec { max_budget: Some(10.0), ..LiteLLMUserSpec::default() };
        let on_proxy = check_on_proxy(&monthly, "prod", "team-a", &silent, &record).map_err(|v| v.rule);
        assert_eq!(on_proxy, Err("budgetDuration"), "a short period kept on the proxy counts too");
    }

    #[test]
    fn what_the_proxy_keeps_is_checked_where_the_spec_is_silent() {
        let policy = ProxyPolicy::default();
        let check = |spec: serde_json::Value, record: UserRecord| {
            check_on_proxy(&policy, "prod", "team-a", &self::spec(spec), &record).map_err(|v| v.rule)
        };
        let role = |role: &str| UserRecord { user_role: Some(role.into()), ..UserRecord::default() };
        assert_eq!(check(serde_json::json!({}), role("internal_user")), Ok(()));
        for admin in ["proxy_admin", "org_admin", "team"] {
            assert_eq!(check(serde_json::json!({}), role(admin)), Err("allowedRoles"), "{admin}");
        }
        assert_eq!(
            check(serde_json::json!({"userRole": "internal_user"}), role("proxy_admin")),
            Ok(()),
            "changed by the spec"
        );
        let teams = UserRecord { teams: vec!["platform".into()], ..UserRecord::default() };
        assert_eq!(check(serde_json::json!({}), teams.clone()), Err("teams"));
        assert_eq!(check(serde_json::json!({"teams": []}), teams), Ok(()), "left by the spec");
        let mut objects = UserRecord::default();
        objects.object_permission.insert("mcp_servers".into(), serde_json::json!(["github"]));
        assert_eq!(check(serde_json::json!({}), objects), Err("objectPermissions"));
    }

    #[test]
    fn the_newest_resources_beyond_a_namespace_quota_are_refused() {
        let quota = crate::crd::NamespaceQuota { max_users: Some(2), max_budget: Some(10.0) };
        let policy = ProxyPolicy { namespace_quota: Some(quota), ..ProxyPolicy::default() };
        let check = |older_users, older_budget, json| {
            let usage = NamespaceUsage { older_users, older_budget };
            check_quota(&policy, "prod", "team-a", &spec(json), &usage).map_err(|v| v.rule)
        };
        assert_eq!(check(0, 0.0, serde_json::json!({"maxBudget": 4})), Ok(()));
        assert_eq!(check(1, 4.0, serde_json::json!({"maxBudget": 6})), Ok(()), "exactly the budget");
        assert_eq!(check(1, 4.0, serde_json::json!({"maxBudget": 6.5})), Err("maxBudget"));
        assert_eq!(check(2, 4.0, serde_json::json!({"maxBudget": 1})), Err("maxUsers"), "the third");
        assert_eq!(check(0, 0.0, serde_json::json!({})), Err("maxBudget"), "an unlimited budget");
        let open = ProxyPolicy::default();
        let usage = NamespaceUsage { older_users: 10_000, older_budget: 1e9 };
        assert_eq!(check_quota(&open, "prod", "team-a", &spec(serde_json::json!({})), &usage), Ok(()), "no quota");
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
