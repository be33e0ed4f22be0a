//! Pure functions from a `LiteLLMUserSpec` to LiteLLM requests: the body of `/user/new`, and the changes that
//! bring an existing LiteLLM user in line with the spec. No I/O here, so every rule is unit-tested.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::{crd::LiteLLMUserSpec, litellm::UserRecord};

/// The key in LiteLLM user metadata that marks users this operator manages; its value names the resource.
pub const OWNER_METADATA_KEY: &str = "litellm-operator";

/// LiteLLM stores per-model limits inside the user's metadata under these keys.
const MODEL_RPM_KEY: &str = "model_rpm_limit";
const MODEL_TPM_KEY: &str = "model_tpm_limit";

/// The resource a LiteLLM user belongs to (`<namespace>/<name>`), as written into its metadata.
pub fn owner_marker(namespaced_name: &str) -> Value {
    json!({ "owner": namespaced_name })
}

/// Who manages a LiteLLM user, according to its metadata.
pub fn marked_owner(metadata: &Map<String, Value>) -> Option<&str> {
    metadata.get(OWNER_METADATA_KEY)?.get("owner")?.as_str()
}

/// One user-table field the spec can set.
struct Field {
    /// Name in the spec (camelCase), used in status and conditions.
    spec: &'static str,
    /// Name in LiteLLM's API.
    api: &'static str,
    desired: Option<Value>,
    actual: Value,
    /// What `/user/update` needs to clear the field, if it can.
    clear: Option<Value>,
}

fn fields(spec: &LiteLLMUserSpec, actual: &UserRecord) -> Vec<Field> {
    vec![
        Field {
            spec: "userAlias",
            api: "user_alias",
            desired: spec.user_alias.as_ref().map(to),
            actual: json!(actual.user_alias),
            clear: None,
        },
        Field {
            spec: "userEmail",
            api: "user_email",
            desired: spec.user_email.as_ref().map(to),
            actual: json!(actual.user_email),
            clear: None,
        },
        Field {
            spec: "userRole",
            api: "user_role",
            desired: spec.user_role.map(|r| json!(r.as_str())),
            actual: json!(actual.user_role),
            clear: None,
        },
        Field {
            spec: "maxBudget",
            api: "max_budget",
            desired: spec.max_budget.map(|v| json!(v)),
            actual: json!(actual.max_budget),
            clear: Some(Value::Null),
        },
        Field {
            spec: "budgetDuration",
            api: "budget_duration",
            desired: spec.budget_duration.as_ref().map(to),
            actual: json!(actual.budget_duration),
            clear: Some(Value::Null),
        },
        Field {
            spec: "models",
            api: "models",
            desired: spec.models.as_ref().map(to),
            actual: json!(actual.models),
            clear: None,
        },
        Field {
            spec: "tpmLimit",
            api: "tpm_limit",
            desired: spec.tpm_limit.map(|v| json!(v)),
            actual: json!(actual.tpm_limit),
            clear: Some(Value::Null),
        },
        Field {
            spec: "rpmLimit",
            api: "rpm_limit",
            desired: spec.rpm_limit.map(|v| json!(v)),
            actual: json!(actual.rpm_limit),
            clear: Some(Value::Null),
        },
        Field {
            spec: "maxParallelRequests",
            api: "max_parallel_requests",
            desired: spec.max_parallel_requests.map(|v| json!(v)),
            actual: json!(actual.max_parallel_requests),
            clear: None,
        },
        Field {
            spec: "modelMaxBudget",
            api: "model_max_budget",
            desired: spec.model_max_budget.as_ref().map(|budgets| {
                Value::Object(
                    budgets
                        .iter()
                        .map(|(model, b)| {
                            (model.clone(), json!({ "budget_limit": b.budget_limit, "time_period": b.time_period }))
                        })
                        .collect(),
                )
            }),
            actual: Value::Object(actual.model_max_budget.clone()),
            clear: Some(json!({})),
        },
        Field {
            spec: "allowedCacheControls",
            api: "allowed_cache_controls",
            desired: spec.allowed_cache_controls.as_ref().map(to),
            actual: json!(actual.allowed_cache_controls),
            clear: None,
        },
        Field {
            spec: "ssoUserId",
            api: "sso_user_id",
            desired: spec.sso_user_id.as_ref().map(to),
            actual: json!(actual.sso_user_id),
            clear: None,
        },
    ]
}

/// Spec values are strings and lists of strings, whose serialization cannot fail.
fn to<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The metadata the LiteLLM user should have: the spec's (or, when the spec leaves metadata alone, what the
/// proxy has), the per-model limits LiteLLM keeps in metadata, and the ownership marker.
fn desired_metadata(
    spec: &LiteLLMUserSpec,
    marker: &Value,
    actual: Option<&Map<String, Value>>,
    previously: &[String],
) -> Map<String, Value> {
    let was = |field: &str| previously.iter().any(|f| f == field);
    let mut metadata: Map<String, Value> = match (&spec.metadata, actual) {
        (Some(m), _) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        (None, Some(actual)) if !was("metadata") => actual.clone(),
        _ => Map::new(),
    };
    for (spec_name, key, limits) in [
        ("modelRpmLimit", MODEL_RPM_KEY, &spec.model_rpm_limit),
        ("modelTpmLimit", MODEL_TPM_KEY, &spec.model_tpm_limit),
    ] {
        match limits {
            Some(limits) => {
                metadata.insert(
                    key.to_owned(),
                    Value::Object(limits.iter().map(|(m, l)| (m.clone(), json!(l.0))).collect()),
                );
            }
            None if was(spec_name) => {
                metadata.remove(key);
            }
            None => {}
        }
    }
    metadata.insert(OWNER_METADATA_KEY.to_owned(), marker.clone());
    metadata
}

/// Metadata without the ownership mark.
fn unmarked(metadata: &Map<String, Value>) -> Map<String, Value> {
    metadata.iter().filter(|(k, _)| *k != OWNER_METADATA_KEY).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn object_permission(spec: &LiteLLMUserSpec) -> Option<Value> {
    let p = spec.object_permission.as_ref()?;
    let mut out = Map::new();
    for (key, list) in [
        ("vector_stores", &p.vector_stores),
        ("mcp_servers", &p.mcp_servers),
        ("mcp_access_groups", &p.mcp_access_groups),
    ] {
        if let Some(list) = list {
            out.insert(key.to_owned(), json!(list));
        }
    }
    Some(Value::Object(out))
}

/// The body of `POST /user/new`. The operator registers keys itself, so LiteLLM must not mint one.
pub fn create_body(spec: &LiteLLMUserSpec, user_id: &str, marker: &Value) -> Value {
    let mut body = Map::new();
    body.insert("user_id".into(), json!(user_id));
    body.insert("auto_create_key".into(), json!(false));
    for field in fields(spec, &UserRecord::default()) {
        if let Some(value) = field.desired {
            body.insert(field.api.into(), value);
        }
    }
    body.insert("metadata".into(), Value::Object(desired_metadata(spec, marker, None, &[])));
    if let Some(teams) = &spec.teams {
        body.insert("teams".into(), json!(teams));
    }
    if let Some(soft_budget) = spec.soft_budget {
        body.insert("soft_budget".into(), json!(soft_budget));
    }
    if let Some(send) = spec.send_invite_email {
        body.insert("send_invite_email".into(), json!(send));
    }
    if let Some(permission) = object_permission(spec) {
        body.insert("object_permission".into(), permission);
    }
    Value::Object(body)
}

/// Spec fields that are set (and so managed by the operator), as recorded in `status.managedFields`.
pub fn managed_fields(spec: &LiteLLMUserSpec) -> Vec<String> {
    let mut managed: Vec<String> = fields(spec, &UserRecord::default())
        .into_iter()
        .filter(|f| f.desired.is_some())
        .map(|f| f.spec.to_owned())
        .collect();
    for (name, set) in [
        ("metadata", spec.metadata.is_some()),
        ("modelRpmLimit", spec.model_rpm_limit.is_some()),
        ("modelTpmLimit", spec.model_tpm_limit.is_some()),
    ] {
        if set {
            managed.push(name.to_owned());
        }
    }
    managed.sort();
    managed
}

/// What it takes to bring an existing LiteLLM user in line with the spec.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Body for `/user/update`, with only the fields that differ; `None` when nothing differs.
    pub update: Option<Value>,
    /// Spec names of the fields in `update`, for events and logs.
    pub changed: Vec<&'static str>,
    /// Fields the spec no longer sets (or sets empty) that LiteLLM cannot clear through its API.
    pub uncleared: Vec<&'static str>,
    /// Fields `update` tries to clear; older proxies ignore some of these (see `still_set`).
    pub clearing: Vec<&'static str>,
    pub join_teams: Vec<String>,
    pub leave_teams: Vec<String>,
}

/// Compares the spec with the user as LiteLLM stores it. `previously` is `status.managedFields`: a field that
/// was managed and is no longer in the spec is cleared where LiteLLM allows it. `spec_changed` resends the
/// fields LiteLLM does not report back (object permissions), since their drift cannot be seen. `failed_clears`
/// (`status.unclearedFields`) are clears the proxy ignored before; they are reported, not sent again.
pub fn changes(
    spec: &LiteLLMUserSpec,
    user_id: &str,
    marker: &Value,
    actual: &UserRecord,
    previously: &[String],
    failed_clears: &[String],
    spec_changed: bool,
) -> Changes {
    let mut body = Map::new();
    let mut out = Changes::default();
    for field in fields(spec, actual) {
        let was_managed = previously.iter().any(|f| f == field.spec);
        match field.desired {
            Some(desired) if is_empty(&desired) && !is_empty(&field.actual) && field.clear.is_none() => {
                out.uncleared.push(field.spec);
            }
            Some(desired) if !same(&desired, &field.actual) => {
                body.insert(field.api.into(), desired);
                out.changed.push(field.spec);
            }
            Some(_) => {}
            None if was_managed && !is_empty(&field.actual) => match field.clear {
                // This proxy ignored the clear before (older proxies ignore null for some fields): say so
                // instead of sending it again on every resync.
                Some(_) if failed_clears.iter().any(|f| f == field.spec) => out.uncleared.push(field.spec),
                Some(clear) => {
                    body.insert(field.api.into(), clear);
                    out.changed.push(field.spec);
                    out.clearing.push(field.spec);
                }
                None => out.uncleared.push(field.spec),
            },
            None => {}
        }
    }
    // The ownership mark never makes an update on its own: adopting a user that already matches the spec
    // leaves it untouched (the claim and status.userId say whose it is). It rides along with any other change.
    let metadata = desired_metadata(spec, marker, Some(&actual.metadata), previously);
    if !same(&Value::Object(unmarked(&metadata)), &Value::Object(unmarked(&actual.metadata))) {
        body.insert("metadata".into(), Value::Object(metadata.clone()));
        out.changed.push("metadata");
    }
    if spec_changed && let Some(permission) = object_permission(spec) {
        body.insert("object_permission".into(), permission);
        out.changed.push("objectPermission");
    }
    if !body.is_empty() {
        if actual.metadata.get(OWNER_METADATA_KEY).is_none_or(|mark| !same(mark, marker)) {
            body.insert("metadata".into(), Value::Object(metadata));
        }
        body.insert("user_id".into(), json!(user_id));
        out.update = Some(Value::Object(body));
    }
    if let Some(teams) = &spec.teams {
        let desired: BTreeSet<&String> = teams.iter().collect();
        let current: BTreeSet<&String> = actual.teams.iter().collect();
        out.join_teams = desired.difference(&current).map(|t| (*t).clone()).collect();
        out.leave_teams = current.difference(&desired).map(|t| (*t).clone()).collect();
    }
    out
}

/// Of the fields an update tried to clear, those the proxy still has: older proxies ignore an explicit
/// `null` for `budget_duration`, `tpm_limit` and `rpm_limit`.
pub fn still_set(spec: &LiteLLMUserSpec, stored: &UserRecord, clearing: &[&'static str]) -> Vec<&'static str> {
    fields(spec, stored)
        .into_iter()
        .filter(|f| clearing.contains(&f.spec) && !is_empty(&f.actual))
        .map(|f| f.spec)
        .collect()
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Equality as LiteLLM means it: numbers by value (`10` equals `10.0`), lists as sets, `null` equal to empty.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().all(|v| y.iter().any(|w| same(v, w))),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (x, y) if is_empty(x) && is_empty(y) => true,
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::{ModelBudget, NonNegativeInt, ObjectPermission, UserRole};

    fn marker() -> Value {
        owner_marker("team-a/alice")
    }

    fn full_spec() -> LiteLLMUserSpec {
        LiteLLMUserSpec {
            user_alias: Some("Alice".into()),
            user_email: Some("alice@example.com".into()),
            user_role: Some(UserRole::InternalUser),
            teams: Some(vec!["t1".into()]),
            max_budget: Some(10.0),
            soft_budget: Some(8.0),
            budget_duration: Some("30d".into()),
            models: Some(vec!["gpt-4o".into()]),
            tpm_limit: Some(1000),
            rpm_limit: Some(10),
            max_parallel_requests: Some(2),
            model_max_budget: Some(BTreeMap::from([(
                "gpt-4o".into(),
                ModelBudget { budget_limit: 1.5, time_period: Some("1d".into()) },
            )])),
            model_rpm_limit: Some(BTreeMap::from([("gpt-4o".into(), NonNegativeInt(5))])),
            model_tpm_limit: None,
            metadata: Some(BTreeMap::from([("cost-center".into(), json!("42"))])),
            allowed_cache_controls: Some(vec!["no-cache".into()]),
            sso_user_id: Some("sso-1".into()),
            object_permission: Some(ObjectPermission { vector_stores: Some(vec!["vs1".into()]), ..Default::default() }),
            send_invite_email: Some(false),
            ..Default::default()
        }
    }

    /// The user as LiteLLM stores it right after `create_body(spec)`.
    fn stored(spec: &LiteLLMUserSpec) -> UserRecord {
        let body = create_body(spec, "alice", &marker());
        let mut record: UserRecord = serde_json::from_value(body).unwrap();
        record.teams = spec.teams.clone().unwrap_or_default();
        record
    }

    #[test]
    fn create_body_maps_every_field_and_never_asks_for_a_key() {
        let body = create_body(&full_spec(), "alice", &marker());
        assert_eq!(body["user_id"], "alice");
        assert_eq!(body["auto_create_key"], false);
        assert_eq!(body["user_role"], "internal_user");
        assert_eq!(body["max_budget"], 10.0);
        assert_eq!(body["budget_duration"], "30d");
        assert_eq!(body["model_max_budget"]["gpt-4o"]["budget_limit"], 1.5);
        assert_eq!(body["metadata"]["cost-center"], "42");
        assert_eq!(body["metadata"]["model_rpm_limit"]["gpt-4o"], 5);
        assert_eq!(body["metadata"][OWNER_METADATA_KEY]["owner"], "team-a/alice");
        assert_eq!(body["teams"], json!(["t1"]));
        assert_eq!(body["soft_budget"], 8.0);
        assert_eq!(body["object_permission"], json!({"vector_stores": ["vs1"]}));
        assert!(body.get("blocked").is_none() && body.get("key").is_none());
    }

    #[test]
    fn an_unset_spec_creates_a_marked_user_only() {
        let body = create_body(&LiteLLMUserSpec::default(), "x", &marker());
        let keys: BTreeSet<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["auto_create_key", "metadata", "user_id"]));
    }

    #[test]
    fn nothing_changes_when_the_proxy_matches() {
        let spec = full_spec();
        let managed = managed_fields(&spec);
        let changes = changes(&spec, "alice", &marker(), &stored(&spec), &managed, &[], false);
        assert_eq!(changes, Changes::default());
    }

    #[test]
    fn only_differing_fields_are_sent() {
        let spec = full_spec();
        let mut actual = stored(&spec);
        actual.max_budget = Some(99.0);
        actual.models = vec!["other".into()];
        actual.spend = 3.0; // report-only, never a drift
        let c = changes(&spec, "alice", &marker(), &actual, &managed_fields(&spec), &[], false);
        assert_eq!(c.update, Some(json!({"user_id": "alice", "max_budget": 10.0, "models": ["gpt-4o"]})));
        assert_eq!(c.changed, vec!["maxBudget", "models"]);
    }

    #[test]
    fn numbers_and_lists_compare_by_meaning() {
        let spec = LiteLLMUserSpec {
            max_budget: Some(10.0),
            models: Some(vec!["a".into(), "b".into()]),
            tpm_limit: Some(5),
            ..Default::default()
        };
        let mut actual = stored(&spec);
        actual.models = vec!["b".into(), "a".into()];
        let c = changes(&spec, "u", &marker(), &actual, &managed_fields(&spec), &[], false);
        assert_eq!(c.update, None);
    }

    #[test]
    fn removed_fields_are_cleared_where_litellm_can() {
        let before = full_spec();
        let actual = stored(&before);
        let after = LiteLLMUserSpec { teams: before.teams.clone(), ..Default::default() };
        let c = changes(&after, "alice", &marker(), &actual, &managed_fields(&before), &[], false);
        let update = c.update.unwrap();
        assert_eq!(update["max_budget"], Value::Null);
        assert_eq!(update["budget_duration"], Value::Null);
        assert_eq!(update["tpm_limit"], Value::Null);
        assert_eq!(update["rpm_limit"], Value::Null);
        assert_eq!(update["model_max_budget"], json!({}));
        // metadata loses the spec's keys and the model limits, keeps the marker
        assert_eq!(update["metadata"], json!({ OWNER_METADATA_KEY: { "owner": "team-a/alice" } }));
        assert_eq!(c.clearing, vec!["maxBudget", "budgetDuration", "tpmLimit", "rpmLimit", "modelMaxBudget"]);
        for field in
            ["userAlias", "userEmail", "userRole", "models", "maxParallelRequests", "allowedCacheControls", "ssoUserId"]
        {
            assert!(c.uncleared.contains(&field), "{field} should be reported as not clearable");
            assert!(update.get(field).is_none());
        }
    }

    #[test]
    fn an_explicitly_empty_list_that_cannot_be_cleared_is_reported_not_sent() {
        let spec = LiteLLMUserSpec { models: Some(vec![]), ..Default::default() };
        let actual = UserRecord {
            models: vec!["gpt".into()],
            metadata: desired_metadata(&spec, &marker(), None, &[]),
            ..Default::default()
        };
        let c = changes(&spec, "u", &marker(), &actual, &[], &[], false);
        assert_eq!(c.update, None);
        assert_eq!(c.uncleared, vec!["models"]);
    }

    #[test]
    fn adopting_a_user_that_matches_the_spec_sends_nothing() {
        let actual = UserRecord {
            max_budget: Some(5.0),
            metadata: Map::from_iter([("team".to_owned(), json!("x"))]),
            ..Default::default()
        };
        let spec = LiteLLMUserSpec { max_budget: Some(5.0), ..Default::default() };
        assert_eq!(changes(&spec, "u", &marker(), &actual, &[], &[], false), Changes::default());
        let with_metadata = LiteLLMUserSpec { metadata: Some(BTreeMap::from([("team".into(), json!("x"))])), ..spec };
        assert_eq!(changes(&with_metadata, "u", &marker(), &actual, &[], &[], false), Changes::default());
    }

    #[test]
    fn adoption_keeps_existing_metadata_and_adds_the_marker_with_the_first_change() {
        let actual = UserRecord { metadata: Map::from_iter([("team".to_owned(), json!("x"))]), ..Default::default() };
        let spec = LiteLLMUserSpec { max_budget: Some(5.0), ..Default::default() };
        let c = changes(&spec, "u", &marker(), &actual, &[], &[], false);
        let update = c.update.unwrap();
        assert_eq!(update["metadata"], json!({"team": "x", OWNER_METADATA_KEY: {"owner": "team-a/alice"}}));
        assert_eq!(update["max_budget"], 5.0);
        assert_eq!(c.changed, vec!["maxBudget"], "the mark is no change of the spec's");
    }

    #[test]
    fn a_user_marked_by_someone_else_is_marked_anew_only_along_with_a_change() {
        let mut actual = stored(&LiteLLMUserSpec::default());
        actual.metadata.insert(OWNER_METADATA_KEY.to_owned(), owner_marker("team-b/gone"));
        let unchanged = changes(&LiteLLMUserSpec::default(), "u", &marker(), &actual, &[], &[], false);
        assert_eq!(unchanged.update, None);
        let spec = LiteLLMUserSpec { tpm_limit: Some(7), ..Default::default() };
        let update = changes(&spec, "u", &marker(), &actual, &[], &[], false).update.unwrap();
        assert_eq!(update["metadata"][OWNER_METADATA_KEY]["owner"], "team-a/alice");
    }

    #[test]
    fn a_keys_mark_is_read_under_the_operators_metadata_key() {
        let key: crate::litellm::KeyRecord =
            serde_json::from_value(json!({ "token": "h", "metadata": { OWNER_METADATA_KEY: marker() } })).unwrap();
        assert_eq!(key.owner.as_deref(), Some("team-a/alice"));
    }

    #[test]
    fn team_membership_is_diffed_only_when_the_spec_lists_teams() {
        let actual = UserRecord { teams: vec!["a".into(), "b".into()], ..Default::default() };
        let unset = changes(&LiteLLMUserSpec::default(), "u", &marker(), &actual, &[], &[], false);
        assert!(unset.join_teams.is_empty() && unset.leave_teams.is_empty());
        let spec = LiteLLMUserSpec { teams: Some(vec!["b".into(), "c".into()]), ..Default::default() };
        let c = changes(&spec, "u", &marker(), &actual, &[], &[], false);
        assert_eq!(c.join_teams, vec!["c"]);
        assert_eq!(c.leave_teams, vec!["a"]);
    }

    #[test]
    fn object_permissions_are_resent_only_when_the_spec_changed() {
        let spec = full_spec();
        let actual = stored(&spec);
        let c = changes(&spec, "alice", &marker(), &actual, &managed_fields(&spec), &[], true);
        assert_eq!(c.update.unwrap()["object_permission"], json!({"vector_stores": ["vs1"]}));
    }

    #[test]
    fn a_clear_the_proxy_ignored_is_reported_not_resent() {
        let actual = UserRecord { tpm_limit: Some(100), ..Default::default() };
        let spec = LiteLLMUserSpec::default();
        let previously = ["tpmLimit".to_owned()];
        let c = changes(&spec, "u", &marker(), &actual, &previously, &previously, false);
        assert_eq!(c.uncleared, vec!["tpmLimit"]);
        assert!(c.update.as_ref().is_none_or(|u| u.get("tpm_limit").is_none()), "{:?}", c.update);
    }

    #[test]
    fn clears_an_older_proxy_ignored_are_reported() {
        let stored = UserRecord { tpm_limit: Some(100), max_budget: None, ..Default::default() };
        let spec = LiteLLMUserSpec::default();
        assert_eq!(still_set(&spec, &stored, &["maxBudget", "tpmLimit"]), vec!["tpmLimit"]);
        assert!(still_set(&spec, &stored, &[]).is_empty());
    }

    #[test]
    fn owner_marker_round_trips() {
        let metadata = desired_metadata(&LiteLLMUserSpec::default(), &marker(), None, &[]);
        assert_eq!(marked_owner(&metadata), Some("team-a/alice"));
        assert_eq!(marked_owner(&Map::new()), None);
    }
}
