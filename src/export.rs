//! `litellm-operator export`: `LiteLLMUser` manifests for the users a proxy already has, to move an existing
//! proxy under the operator. Each manifest adopts its user, keeps the keys the user already has, and says
//! exactly what the proxy holds, so that applying it changes nothing on the proxy.
//!
//! The mapping from a proxy's user to a manifest ([`manifest`]) is pure and is the inverse of
//! `desired::create_body` and `desired::changes`: [`manifest`] checks its own result with `desired::changes`
//! and leaves out (and reports) anything that would not come back unchanged. Only [`read_users`] talks to the
//! proxy.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use serde_json::{Map, Value, json};
use url::Url;

use crate::{
    crd::{
        DeletionPolicy, LiteLLMUser, LiteLLMUserSpec, ModelBudget, NonNegativeInt, ProxyRef, UnmanagedKeys, UserRole,
    },
    litellm::{ApiError, LiteLlmClient, UserRecord},
    reconcile::desired,
    text::sha256_hex,
};

/// Users per page of `/user/list`: the most LiteLLM allows.
const PAGE_SIZE: i64 = 100;
/// A bound on pages, so that a proxy that keeps answering full pages cannot keep the export going forever.
const MAX_PAGES: i64 = 100_000;
/// Longest resource name made: a DNS label, so that the name also fits in labels and in the Secret's name.
const MAX_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot list the proxy's users: {0}")]
    List(#[source] ApiError),
    #[error("cannot render the manifests as YAML: {0}")]
    Yaml(String),
}

/// What to export, and how the manifests look.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace the resources go into.
    pub namespace: String,
    /// `spec.proxyRef.name`; `None` for the default proxy.
    pub proxy_ref: Option<String>,
    pub deletion_policy: DeletionPolicy,
    /// Only these user ids (and those under `user_id_prefixes`); every user when both are empty.
    pub user_ids: Vec<String>,
    pub user_id_prefixes: Vec<String>,
    /// Also users the operator already manages (marked in their metadata).
    pub include_managed: bool,
}

/// One exported user.
#[derive(Clone, Debug)]
pub struct Exported {
    pub user: LiteLLMUser,
    /// What the proxy has that the manifest does not say, and why: for the person reviewing the export.
    pub notes: Vec<String>,
}

/// The export of a proxy: the manifests, and what was left out.
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub users: Vec<Exported>,
    /// Ids of users left out because the operator already manages them.
    pub managed: Vec<String>,
}

/// Every user of the proxy, in user id order, page by page.
pub async fn read_users(client: &LiteLlmClient) -> Result<Vec<UserRecord>, ExportError> {
    let mut users = BTreeMap::new();
    for page in 1..=MAX_PAGES {
        let listed = client.user_list(page, PAGE_SIZE).await.map_err(ExportError::List)?;
        let last = listed.users.is_empty() || page >= listed.total_pages;
        // A user created while paging can push another onto the next page: count each id once.
        users.extend(listed.users.into_iter().filter_map(|user| Some((user.user_id.clone()?, user))));
        if last {
            break;
        }
    }
    Ok(users.into_values().collect())
}

/// The manifests for `records`, as `options` selects them.
pub fn export(records: &[UserRecord], options: &Options) -> Export {
    let mut out = Export::default();
    let mut chosen = Vec::new();
    for record in records {
        let Some(id) = record.user_id.as_deref() else { continue };
        if !selected(id, options) {
            continue;
        }
        if !options.include_managed && desired::marked_owner(&record.metadata).is_some() {
            out.managed.push(id.to_owned());
            continue;
        }
        chosen.push((id, record));
    }
    let ids: Vec<&str> = chosen.iter().map(|(id, _)| *id).collect();
    for ((_, record), name) in chosen.iter().zip(resource_names(&ids, &options.namespace)) {
        out.users.push(manifest(record, &name, options));
    }
    out
}

fn selected(id: &str, options: &Options) -> bool {
    (options.user_ids.is_empty() && options.user_id_prefixes.is_empty())
        || options.user_ids.iter().any(|wanted| wanted == id)
        || options.user_id_prefixes.iter().any(|prefix| id.starts_with(prefix.as_str()))
}

/// The manifest for one user of the proxy, named `name`.
pub fn manifest(record: &UserRecord, name: &str, options: &Options) -> Exported {
    let user_id = record.user_id.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut spec = spec_of(record, &mut notes);
    spec.user_id = Some(user_id.clone());
    spec.adopt = true;
    spec.key.unmanaged_keys = Some(UnmanagedKeys::Keep);
    spec.deletion_policy = options.deletion_policy;
    spec.proxy_ref = options.proxy_ref.clone().map(|name| ProxyRef { name });

    // The mapping is meant to be exact; whatever would still differ is left to the proxy, never changed.
    let marker = desired::owner_marker(&format!("{}/{name}", options.namespace));
    let changes = desired::changes(&spec, &user_id, &marker, record, &[], &[], true);
    for field in changes.changed {
        forget(&mut spec, field);
        notes.push(format!("{field} is left out: the proxy's value would not survive the round trip unchanged"));
    }
    if !changes.join_teams.is_empty() || !changes.leave_teams.is_empty() {
        spec.teams = None;
        notes.push("teams are left out: the proxy's membership would not survive the round trip".into());
    }
    let user = LiteLLMUser {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(options.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    Exported { user, notes }
}

/// The spec fields mapped back from the proxy's user, each checked against what the CRD accepts; a value the
/// API server would refuse is left out with a note.
fn spec_of(record: &UserRecord, notes: &mut Vec<String>) -> LiteLLMUserSpec {
    let mut refuse = |field: &str, why: String| notes.push(format!("{field} is left out: {why}"));
    let mut spec =
        LiteLLMUserSpec { user_alias: record.user_alias.clone().filter(|a| !a.is_empty()), ..Default::default() };
    spec.user_email = record.user_email.clone().filter(|e| !e.is_empty()).filter(|email| {
        let fits = (3..=320).contains(&email.len()) && valid_email(email);
        if !fits {
            refuse("userEmail", format!("{email:?} is not an address the CRD accepts"));
        }
        fits
    });
    spec.user_role = record.user_role.as_deref().filter(|r| !r.is_empty()).and_then(|role| {
        let parsed = serde_json::from_value::<UserRole>(json!(role)).ok();
        if parsed.is_none() {
            refuse("userRole", format!("{role:?} is not a role the CRD knows"));
        }
        parsed
    });
    spec.teams = Some(record.teams.clone()).filter(|t| !t.is_empty()).filter(|teams| {
        if teams.len() > 100 {
            refuse("teams", format!("{} teams, more than the 100 the CRD allows", teams.len()));
        }
        teams.len() <= 100
    });
    spec.max_budget = record.max_budget.filter(|b| non_negative(*b, "maxBudget", &mut refuse));
    spec.budget_duration = record.budget_duration.clone().filter(|d| !d.is_empty()).filter(|duration| {
        if !valid_period(duration) {
            refuse("budgetDuration", format!("{duration:?} is not a duration the CRD accepts (like 30d or 1mo)"));
        }
        valid_period(duration)
    });
    spec.models = Some(record.models.clone()).filter(|m| !m.is_empty()).filter(|models| {
        if models.len() > 1000 {
            refuse("models", format!("{} models, more than the 1000 the CRD allows", models.len()));
        }
        models.len() <= 1000
    });
    spec.tpm_limit = record.tpm_limit.filter(|v| non_negative(*v as f64, "tpmLimit", &mut refuse));
    spec.rpm_limit = record.rpm_limit.filter(|v| non_negative(*v as f64, "rpmLimit", &mut refuse));
    spec.max_parallel_requests =
        record.max_parallel_requests.filter(|v| non_negative(*v as f64, "maxParallelRequests", &mut refuse));
    spec.model_max_budget = model_budgets(&record.model_max_budget, &mut refuse);
    spec.allowed_cache_controls = Some(record.allowed_cache_controls.clone()).filter(|c| !c.is_empty());
    spec.sso_user_id = record.sso_user_id.clone().filter(|s| !s.is_empty());
    (spec.metadata, spec.model_rpm_limit, spec.model_tpm_limit) = metadata(&record.metadata, &mut refuse);
    if has_object_permissions(&record.object_permission) {
        refuse(
            "objectPermission",
            "the operator would send it again on every spec change, and LiteLLM does not report it back \
             faithfully; add it to the manifest if the operator should manage it"
                .into(),
        );
    }
    spec
}

fn non_negative(value: f64, field: &str, refuse: &mut impl FnMut(&str, String)) -> bool {
    let ok = value >= 0.0;
    if !ok {
        refuse(field, format!("{value} is negative"));
    }
    ok
}

/// `model_max_budget` as the spec writes it, when every entry is `{budget_limit, time_period}`.
fn model_budgets(
    budgets: &Map<String, Value>,
    refuse: &mut impl FnMut(&str, String),
) -> Option<BTreeMap<String, ModelBudget>> {
    if budgets.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for (model, budget) in budgets {
        let limit = budget.get("budget_limit").and_then(Value::as_f64).filter(|l| *l >= 0.0);
        let period = match budget.get("time_period") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(p)) if valid_period(p) => Some(Some(p.clone())),
            Some(_) => None,
        };
        let (Some(budget_limit), Some(time_period)) = (limit, period) else {
            refuse("modelMaxBudget", format!("the budget of {model:?} is not {{budget_limit, time_period}}"));
            return None;
        };
        out.insert(model.clone(), ModelBudget { budget_limit, time_period });
    }
    Some(out)
}

/// The user's metadata as the spec holds it: the per-model limits LiteLLM keeps there become
/// `modelRpmLimit`/`modelTpmLimit`, the ownership mark (of an operator that exported with
/// `--include-managed`) is left to the operator, and the rest becomes `metadata`.
type SpecMetadata = (
    Option<BTreeMap<String, Value>>,
    Option<BTreeMap<String, NonNegativeInt>>,
    Option<BTreeMap<String, NonNegativeInt>>,
);

fn metadata(metadata: &Map<String, Value>, refuse: &mut impl FnMut(&str, String)) -> SpecMetadata {
    let mut rest: BTreeMap<String, Value> = metadata
        .iter()
        .filter(|(k, _)| *k != desired::OWNER_METADATA_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut limits = |key: &str| -> Option<BTreeMap<String, NonNegativeInt>> {
        let value = rest.get(key)?;
        let parsed: Option<BTreeMap<String, NonNegativeInt>> = value.as_object().and_then(|limits| {
            limits.iter().map(|(m, l)| Some((m.clone(), NonNegativeInt(l.as_i64().filter(|l| *l >= 0)?)))).collect()
        });
        // Limits the spec cannot hold stay in `metadata` as they are.
        if parsed.is_some() {
            rest.remove(key);
        }
        parsed
    };
    let (rpm, tpm) = (limits("model_rpm_limit"), limits("model_tpm_limit"));
    if contains_null(&Value::Object(rest.clone().into_iter().collect())) {
        // Kubernetes drops nulls from a custom resource, so the spec could not say exactly what the proxy has;
        // without `metadata`, the operator leaves the proxy's as it is.
        refuse("metadata", "it holds null values, which Kubernetes does not keep; the proxy's metadata stays".into());
        return (None, rpm, tpm);
    }
    (Some(rest).filter(|r| !r.is_empty()), rpm, tpm)
}

fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(contains_null),
        Value::Object(map) => map.values().any(contains_null),
        _ => false,
    }
}

fn has_object_permissions(permission: &Map<String, Value>) -> bool {
    ["vector_stores", "mcp_servers", "mcp_access_groups"]
        .iter()
        .any(|key| permission.get(*key).and_then(Value::as_array).is_some_and(|list| !list.is_empty()))
}

/// Takes a field out of the spec, by its spec name (as `desired::changes` names it).
fn forget(spec: &mut LiteLLMUserSpec, field: &str) {
    match field {
        "userAlias" => spec.user_alias = None,
        "userEmail" => spec.user_email = None,
        "userRole" => spec.user_role = None,
        "maxBudget" => spec.max_budget = None,
        "budgetDuration" => spec.budget_duration = None,
        "models" => spec.models = None,
        "tpmLimit" => spec.tpm_limit = None,
        "rpmLimit" => spec.rpm_limit = None,
        "maxParallelRequests" => spec.max_parallel_requests = None,
        "modelMaxBudget" => spec.model_max_budget = None,
        "allowedCacheControls" => spec.allowed_cache_controls = None,
        "ssoUserId" => spec.sso_user_id = None,
        "metadata" => {
            spec.metadata = None;
            spec.model_rpm_limit = None;
            spec.model_tpm_limit = None;
        }
        "objectPermission" => spec.object_permission = None,
        _ => {}
    }
}

/// The schema's pattern for budget periods: `^[1-9][0-9]{0,8}(s|m|h|d|w|mo)$`.
fn valid_period(text: &str) -> bool {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    (1..=9).contains(&number.len()) && !number.starts_with('0') && ["s", "m", "h", "d", "w", "mo"].contains(&unit)
}

/// The schema's pattern for e-mail addresses: `^[^@\s]+@[^@\s]+$`.
fn valid_email(text: &str) -> bool {
    let mut parts = text.split('@');
    let valid = |part: Option<&str>| part.is_some_and(|p| !p.is_empty() && !p.contains(char::is_whitespace));
    valid(parts.next()) && valid(parts.next()) && parts.next().is_none()
}

/// A resource name for each user id, unique among them: the id itself (without the `<namespace>.` prefix the
/// operator's own ids have) when it is a valid name, or else a cleaned-up version with a short hash of the
/// id, which keeps names of ids that clean up alike apart.
pub fn resource_names(ids: &[&str], namespace: &str) -> Vec<String> {
    let prefix = format!("{namespace}.");
    let candidates: Vec<(String, bool)> = ids
        .iter()
        .map(|id| {
            let local = id.strip_prefix(prefix.as_str()).filter(|rest| !rest.is_empty()).unwrap_or(id);
            let clean = clean_name(local);
            let exact = clean == local && !clean.is_empty() && clean.len() <= MAX_NAME;
            (clean, exact)
        })
        .collect();
    // Only names taken as they are can collide: the others carry a hash of their id.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in candidates.iter().filter(|(_, exact)| *exact) {
        *seen.entry(name.as_str()).or_default() += 1;
    }
    ids.iter()
        .zip(&candidates)
        .map(|(id, (name, exact))| match *exact && seen.get(name.as_str()) == Some(&1) {
            true => name.clone(),
            false => hashed_name(name, id),
        })
        .collect()
}

/// Lower case, `[a-z0-9-]` in dot-separated parts that start and end with a letter or digit.
fn clean_name(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' { c } else { '-' })
        .collect();
    let parts: Vec<String> = mapped
        .split('.')
        .map(|part| {
            let mut collapsed = String::new();
            for c in part.chars() {
                if !(c == '-' && collapsed.ends_with('-')) {
                    collapsed.push(c);
                }
            }
            collapsed.trim_matches('-').to_owned()
        })
        .filter(|part| !part.is_empty())
        .collect();
    parts.join(".")
}

fn hashed_name(name: &str, id: &str) -> String {
    let tag = &sha256_hex(id)[..8];
    let room = MAX_NAME - tag.len() - 1;
    let head = name[..name.len().min(room)].trim_end_matches(['-', '.']);
    match head.is_empty() {
        true => format!("user-{tag}"),
        false => format!("{head}-{tag}"),
    }
}

/// The multi-document YAML `export` prints: a header saying where it comes from and what the platform must
/// allow, then one `LiteLLMUser` per user.
pub fn render(export: &Export, proxy: &Url, options: &Options) -> Result<String, ExportError> {
    let mut out = header(export, proxy, options);
    for exported in &export.users {
        let mut value = serde_json::to_value(&exported.user).map_err(|err| ExportError::Yaml(err.to_string()))?;
        if let Value::Object(object) = &mut value {
            object.remove("status");
        }
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value).map_err(|err| ExportError::Yaml(err.to_string()))?);
    }
    Ok(out)
}

fn header(export: &Export, proxy: &Url, options: &Options) -> String {
    let namespace = &options.namespace;
    let mut lines = vec![
        format!(
            "# LiteLLMUser manifests exported by `litellm-operator export` from the LiteLLM proxy at {}",
            shown(proxy)
        ),
        format!("# {} users, for namespace {namespace}.", export.users.len()),
    ];
    if !export.managed.is_empty() {
        lines.push(format!(
            "# {} users the operator already manages are left out (--include-managed adds them).",
            export.managed.len()
        ));
    }
    let policy = match options.deletion_policy {
        DeletionPolicy::Retain => "leaves its user and keys on the proxy (deletionPolicy: Retain)",
        DeletionPolicy::Delete => "deletes its user and all the user's keys (deletionPolicy: Delete)",
    };
    lines.push(
        "# Each resource adopts its user (adopt: true) without changing it, keeps the keys the user already".into(),
    );
    lines.push(
        "# has (key.unmanagedKeys: Keep) and adds a key of the operator's, in a Secret; deleting a resource".into(),
    );
    lines.push(format!("# {policy}."));
    let own = format!("{namespace}.");
    let foreign: Vec<&str> = export
        .users
        .iter()
        .filter_map(|e| e.user.spec.user_id.as_deref())
        .filter(|id| !id.starts_with(own.as_str()))
        .collect();
    let admins: BTreeSet<&str> = export
        .users
        .iter()
        .filter_map(|e| e.user.spec.user_role)
        .filter(|r| matches!(r, UserRole::ProxyAdmin | UserRole::ProxyAdminViewer))
        .map(|r| r.as_str())
        .collect();
    lines.push("# The platform's policy for the proxy must allow:".into());
    if !foreign.is_empty() {
        lines.push(format!(
            "#   - ids outside \"{own}\" ({} of them): userIds.scope: Any, and userIds.adoptionNamespaces listing \
             {namespace}",
            foreign.len()
        ));
    }
    if !admins.is_empty() {
        let roles: Vec<&str> = admins.into_iter().collect();
        lines.push(format!(
            "#   - the roles {}: policy.allowedRoles (and the chart's admissionPolicy)",
            roles.join(", ")
        ));
    }
    lines.push(
        "#   - the namespace (policy.namespaces), and every ceiling the policy sets (maxBudget, maxTpmLimit,".into(),
    );
    lines.push("#     maxRpmLimit, maxParallelRequests, allowedModels): a resource asking for more is refused".into());
    lines.push("#     (PolicyViolation) and its user left untouched.".into());
    lines.join("\n") + "\n"
}

/// The proxy's URL without any credentials it may carry.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            namespace: "team-a".into(),
            proxy_ref: None,
            deletion_policy: DeletionPolicy::Retain,
            user_ids: Vec::new(),
            user_id_prefixes: Vec::new(),
            include_managed: false,
        }
    }

    fn record(value: Value) -> UserRecord {
        serde_json::from_value(value).unwrap()
    }

    /// Representative users as `/user/list` describes them, on both generations.
    fn records() -> Vec<UserRecord> {
        vec![
            record(json!({
                "user_id": "team-a.carol", "user_alias": "Carol", "user_email": "carol@example.com",
                "user_role": "internal_user", "teams": ["t1", "t2"], "max_budget": 25, "spend": 3.5,
                "budget_duration": "30d", "budget_reset_at": "2026-12-01T00:00:00Z", "models": ["gpt-4o", "gpt-4o-mini"],
                "tpm_limit": 1000.0, "rpm_limit": 10, "max_parallel_requests": 2,
                "metadata": { "cost-center": "4711", "nested": { "a": [1, 2] }, "model_rpm_limit": { "gpt-4o": 5 },
                              "model_tpm_limit": { "gpt-4o": 500 } },
                "model_max_budget": { "gpt-4o": { "budget_limit": 1.5, "time_period": "1d" } },
                "allowed_cache_controls": ["no-cache"], "sso_user_id": "sso-carol", "key_count": 2,
            })),
            record(json!({ "user_id": "dave@example.com", "user_role": "internal_user_viewer", "metadata": {},
                           "models": [], "teams": null, "max_budget": null, "tpm_limit": null })),
            record(json!({ "user_id": "Erin", "user_alias": "", "metadata": { "model_rpm_limit": { "m": -1 } } })),
            record(json!({ "user_id": "frank", "user_role": "proxy_admin", "budget_duration": "1mo",
                           "metadata": { "origin": "script" }, "created_at": "…", "updated_at": "…" })),
        ]
    }

    #[test]
    fn applying_an_export_changes_nothing_on_the_proxy() {
        for record in records() {
            let id = record.user_id.clone().unwrap();
            let exported = export(std::slice::from_ref(&record), &options()).users.remove(0);
            let user = &exported.user;
            let marker = desired::owner_marker(&format!("team-a/{}", user.metadata.name.clone().unwrap()));
            // As the first reconcile of the adopted resource sees it: nothing managed yet, the spec new.
            let changes = desired::changes(&user.spec, &id, &marker, &record, &[], &[], true);
            assert_eq!(changes, desired::Changes::default(), "{id}: {:?}", user.spec);
            assert!(exported.notes.iter().all(|n| !n.contains("round trip")), "{id}: {:?}", exported.notes);
            // And the same once the resource is in sync and manages its fields.
            let managed = desired::managed_fields(&user.spec);
            let again = desired::changes(&user.spec, &id, &marker, &record, &managed, &[], false);
            assert_eq!(again, desired::Changes::default(), "{id}");
        }
    }

    #[test]
    fn every_field_comes_back_from_the_proxy() {
        let exported = export(&records()[..1], &options()).users.remove(0);
        let spec = &exported.user.spec;
        assert_eq!(exported.user.metadata.name.as_deref(), Some("carol"));
        assert_eq!(exported.user.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(spec.user_id.as_deref(), Some("team-a.carol"));
        assert!(spec.adopt);
        assert_eq!(spec.key.unmanaged_keys, Some(UnmanagedKeys::Keep));
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(spec.user_role, Some(UserRole::InternalUser));
        assert_eq!(spec.teams, Some(vec!["t1".into(), "t2".into()]));
        assert_eq!((spec.max_budget, spec.tpm_limit, spec.rpm_limit), (Some(25.0), Some(1000), Some(10)));
        assert_eq!(spec.model_rpm_limit, Some(BTreeMap::from([("gpt-4o".into(), NonNegativeInt(5))])));
        assert_eq!(spec.model_tpm_limit, Some(BTreeMap::from([("gpt-4o".into(), NonNegativeInt(500))])));
        let metadata = spec.metadata.as_ref().unwrap();
        assert_eq!(metadata.keys().collect::<Vec<_>>(), ["cost-center", "nested"], "limits have fields of their own");
        assert_eq!(spec.model_max_budget.as_ref().unwrap()["gpt-4o"].time_period.as_deref(), Some("1d"));
        assert_eq!(spec.sso_user_id.as_deref(), Some("sso-carol"));
        assert!(exported.notes.is_empty(), "{:?}", exported.notes);
    }

    #[test]
    fn what_the_spec_cannot_hold_is_reported_not_lost_silently() {
        let odd = record(json!({
            "user_id": "odd", "user_role": "customer", "budget_duration": "monthly", "user_email": "not an address",
            "metadata": { "x": null, "model_rpm_limit": { "m": 3 } },
            "object_permission": { "vector_stores": ["vs1"], "object_permission_id": "p1" },
            "model_max_budget": { "m": { "budget_limit": "lots" } },
        }));
        let exported = export(std::slice::from_ref(&odd), &options()).users.remove(0);
        let notes = exported.notes.join("\n");
        for field in ["userRole", "budgetDuration", "userEmail", "metadata", "objectPermission", "modelMaxBudget"] {
            assert!(notes.contains(field), "{field} not reported: {notes}");
        }
        let spec = &exported.user.spec;
        assert!(spec.user_role.is_none() && spec.budget_duration.is_none() && spec.metadata.is_none());
        assert_eq!(spec.model_rpm_limit.as_ref().map(|l| l["m"]), Some(NonNegativeInt(3)));
        let changes = desired::changes(spec, "odd", &json!({}), &odd, &[], &[], true);
        assert_eq!(changes.update, None, "what is left out is left alone on the proxy");
        // Limits the spec cannot hold stay in metadata, as they are.
        let erin = export(&records()[2..3], &options()).users.remove(0);
        assert_eq!(erin.user.spec.metadata.unwrap()["model_rpm_limit"], json!({ "m": -1 }));
    }

    #[test]
    fn managed_users_are_left_out_unless_asked_for_and_filters_select() {
        let mut managed = record(json!({ "user_id": "team-a.zed" }));
        managed.metadata.insert(desired::OWNER_METADATA_KEY.into(), desired::owner_marker("team-a/zed"));
        let mut all = records();
        all.push(managed);
        let out = export(&all, &options());
        assert_eq!(out.users.len(), 4);
        assert_eq!(out.managed, vec!["team-a.zed"]);
        let out = export(&all, &Options { include_managed: true, ..options() });
        assert_eq!(out.users.len(), 5);
        let zed = &out.users[4].user.spec;
        assert!(zed.metadata.is_none(), "the mark is the operator's, not the spec's");
        let filtered =
            Options { user_ids: vec!["frank".into()], user_id_prefixes: vec!["team-a.".into()], ..options() };
        let ids: Vec<_> =
            export(&all, &filtered).users.into_iter().map(|e| e.user.spec.user_id.unwrap_or_default()).collect();
        assert_eq!(ids, ["team-a.carol", "frank"]);
    }

    #[test]
    fn names_are_valid_and_unique() {
        let long = "a".repeat(100);
        let ids: [&str; 10] = [
            "team-a.alice",
            "alice",
            "Bob",
            "bob",
            "bob@example.com",
            "x..y",
            "-",
            "svc.bot",
            long.as_str(),
            "team-a.",
        ];
        let names = resource_names(&ids, "team-a");
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in &names {
            assert!(name.len() <= MAX_NAME && !name.is_empty(), "{name}");
            assert!(name.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            }));
        }
        assert_eq!(names[2..4].iter().filter(|n| *n == "bob").count(), 1, "the exact id keeps its name: {names:?}");
        assert_eq!(names[7], "svc.bot");
        assert!(names[0].starts_with("alice-") && names[1].starts_with("alice-"), "{names:?}");
        assert!(names[4].starts_with("bob-example.com-"), "{names:?}");
        assert_eq!(resource_names(&["team-a.carol"], "team-a"), ["carol"]);
    }

    #[test]
    fn the_yaml_says_where_it_comes_from_and_never_shows_credentials() {
        let out = export(&records(), &options());
        let url = Url::parse("https://admin:sk-master@litellm.example.com:4000/?token=sk-secret").unwrap();
        let yaml = render(&out, &url, &options()).unwrap();
        assert!(!yaml.contains("sk-master") && !yaml.contains("sk-secret") && !yaml.contains("admin:sk"), "{yaml}");
        assert!(yaml.starts_with("# LiteLLMUser manifests exported"), "{yaml}");
        assert!(yaml.contains("https://litellm.example.com:4000/"));
        assert!(yaml.contains("userIds.scope: Any, and userIds.adoptionNamespaces listing team-a"), "{yaml}");
        assert!(yaml.contains("the roles proxy_admin"), "{yaml}");
        assert!(!yaml.contains("status"));
        let documents: Vec<&str> = yaml.split("---\n").skip(1).collect();
        assert_eq!(documents.len(), 4);
        let parsed: Vec<LiteLLMUser> = documents.iter().map(|d| serde_saphyr::from_str(d).unwrap()).collect();
        let json = |user: &LiteLLMUser| serde_json::to_value(user).unwrap();
        let back: Vec<Value> = out.users.iter().map(|e| json(&e.user)).collect();
        assert_eq!(parsed.iter().map(json).collect::<Vec<_>>(), back, "the YAML reads back as the same resources");
        assert!(
            documents[0].contains("apiVersion: litellm-operator.io/v1alpha1")
                && documents[0].contains("kind: LiteLLMUser")
        );
    }
}
