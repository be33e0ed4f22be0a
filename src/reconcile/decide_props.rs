//! Properties of `decide` over arbitrary input: whatever a tenant writes in a spec or annotations, whatever an
//! earlier operator left in a status, and whatever a proxy answers, a decision is made without a panic, and a
//! plan that acts never acts on a spec the operator refuses.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::{crd::LiteLLMUserSpec, litellm::KeyRecord};

/// Durations as a tenant might write them: valid, at the bounds, past them, and nonsense.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}(s|m|h|d|w)",
        "[0-9]{1,25}(s|m|h|d|w|mo|ms)",
        Just("3650d".to_owned()),
        Just("999999999w".to_owned()),
        Just("9999999d".to_owned()),
        ".{0,12}",
    ]
}

/// Times as a status or a proxy might hold them: near now, at the ends of what RFC 3339 holds, and nonsense.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (-10i64..10).prop_map(|days| at_offset(days * 86_400)),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("-009999-01-01T00:00:00Z".to_owned()),
        Just("0001-01-01T00:00:00Z".to_owned()),
        ".{0,30}",
    ]
}

fn at_offset(secs: i64) -> String {
    Timestamp::from_second(1_800_000_000 + secs).map(|t| t.to_string()).unwrap_or_default()
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        (0u32..1000).prop_map(|n| json!(n)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9.-]{1,20}", ".{0,40}", Just("é".repeat(13))]
}

fn maybe<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::weighted(0.5, s)
}

prop_compose! {
    fn spec()(
        durations in proptest::collection::vec(maybe(duration_text()), 5),
        numbers in proptest::collection::vec(maybe(number()), 6),
        teams in maybe(proptest::collection::vec(text(), 0..4)),
        models in maybe(proptest::collection::vec(text(), 0..4)),
        user_id in maybe(text()),
        role in maybe(prop_oneof![Just("proxy_admin"), Just("internal_user"), Just("internal_user_viewer")]),
        aliases in maybe(proptest::collection::btree_map(text(), text(), 0..3)),
        model_budgets in maybe(proptest::collection::btree_map(text(), (number(), maybe(duration_text())), 0..3)),
        adopt in any::<bool>(),
        key_enabled in any::<bool>(),
        unmanaged in maybe(prop_oneof![Just("Keep"), Just("Revoke")]),
        secret_name in maybe(text()),
    ) -> Option<LiteLLMUserSpec> {
        let mut spec = json!({ "adopt": adopt, "key": { "enabled": key_enabled } });
        let mut set = |path: &[&str], value: Option<Value>| {
            if let Some(value) = value {
                let mut at = &mut spec;
                for part in &path[..path.len() - 1] {
                    at = &mut at[*part];
                }
                at[path[path.len() - 1]] = value;
            }
        };
        let d = |i: usize| durations[i].clone().map(Value::String);
        set(&["key", "duration"], d(0));
        set(&["key", "rotation", "every"], d(1));
        set(&["key", "rotation", "gracePeriod"], d(2));
        set(&["budgetDuration"], d(3));
        set(&["key", "unmanagedKeys"], unmanaged.map(|u| json!(u)));
        set(&["key", "secretName"], secret_name.map(Value::String));
        for (i, field) in ["maxBudget", "softBudget", "tpmLimit", "rpmLimit", "maxParallelRequests"].iter().enumerate() {
            set(&[field], numbers[i].clone());
        }
        set(&["teams"], teams.map(|t| json!(t)));
        set(&["models"], models.map(|m| json!(m)));
        set(&["userId"], user_id.map(Value::String));
        set(&["userRole"], role.map(|r| json!(r)));
        set(&["aliases"], aliases.map(|a| json!(a)));
        let budgets = model_budgets.map(|budgets| {
            let entries = budgets.into_iter().map(|(model, (limit, period))| {
                (model, json!({ "budgetLimit": limit, "timePeriod": period.unwrap_or_else(|| "1d".into()) }))
            });
            Value::Object(entries.collect())
        });
        set(&["modelMaxBudget"], budgets);
        // What does not deserialise never reaches a reconcile (the watch cannot parse it either).
        serde_json::from_value(spec).ok()
    }
}

prop_compose! {
    fn status()(
        hashes in proptest::collection::vec(maybe("[0-9a-f]{4}|h1|h2|.{0,14}"), 3),
        times in proptest::collection::vec(maybe(time_text()), 4),
        retiring in proptest::collection::vec(("h1|h2|[0-9a-f]{4}", time_text()), 0..3),
        generations in proptest::collection::vec(maybe(any::<i64>()), 2),
        spend in maybe(any::<f64>()),
        rotation_request in maybe(text()),
        usage_read in maybe(time_text()),
    ) -> LiteLLMUserStatus {
        LiteLLMUserStatus {
            user_id: Some("team-a.alice".into()),
            key_secret_name: Some("alice-litellm-key".into()),
            key_hash: hashes[0].clone(),
            pending_key_hash: hashes[1].clone(),
            key_secret_version: hashes[2].clone(),
            key_issued_at: times[0].clone(),
            next_rotation_at: times[1].clone(),
            budget_reset_at: times[2].clone(),
            last_sync_time: times[3].clone(),
            retiring_keys: retiring.into_iter().map(|(hash, revoke_at)| RetiringKey { hash, revoke_at }).collect(),
            observed_generation: generations[0],
            synced_generation: generations[1],
            spend,
            rotation_request,
            usage: usage_read.map(|read_at| UsageSummary { read_at: Some(read_at), spend_at_read: spend, ..UsageSummary::default() }),
            ..LiteLLMUserStatus::default()
        }
    }
}

prop_compose! {
    fn world()(
        proxy_kind in 0..5u8,
        spend in any::<f64>(),
        max_budget in maybe(any::<f64>()),
        reset in maybe(time_text()),
        keys in proptest::collection::vec(("h1|h2|[0-9a-f]{4}|", maybe(time_text()), maybe("team-a/alice|x/y")), 0..4),
        secret_kind in 0..5u8,
        secret_hash in maybe("h1|h2|.{0,14}"),
        claim_kind in 0..3u8,
        conflict in maybe(text()),
        owner in maybe("team-a/alice|team-b/bob|.{0,10}"),
        usage in maybe((0usize..20, any::<f64>())),
    ) -> World {
        let keys: Vec<KeyRecord> = keys
            .into_iter()
            .map(|(token, expires, owner)| KeyRecord { token, expires, owner, ..KeyRecord::default() })
            .collect();
        let mut record = UserRecord { spend, max_budget, budget_reset_at: reset, ..UserRecord::default() };
        if let Some(owner) = owner {
            record.metadata.insert(desired::OWNER_METADATA_KEY.to_owned(), json!({ "owner": owner }));
        }
        let proxy = match proxy_kind {
            0 => ProxyView::NotRead,
            1 => ProxyView::Unseen,
            2 => ProxyView::Absent,
            n => ProxyView::Present { record: Box::new(record), keys, from_snapshot: n == 4 },
        };
        let secret = match secret_kind {
            0 => SecretView::NotWanted,
            1 => SecretView::Absent,
            2 => SecretView::Foreign,
            3 => SecretView::Released { key_hash: secret_hash, secret: Box::default() },
            _ => SecretView::Owned { key_hash: secret_hash, resource_version: "9".into(), secret: None },
        };
        let claim = match claim_kind {
            0 => ClaimView::Ours,
            1 => ClaimView::Free,
            _ => ClaimView::Theirs { holder: "team-b/bob".into() },
        };
        World {
            claim,
            proxy,
            secret,
            marked_owner_exists: false,
            previous_secret: None,
            create_conflict: conflict,
            namespace_labels: None,
            namespace_usage: usage.map(|(older_users, older_budget)| crate::policy::NamespaceUsage { older_users, older_budget }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decide_never_panics(
        spec in spec(),
        status in status(),
        world in world(),
        now_offset in prop_oneof![-1_000_000i64..1_000_000, Just(250_000_000_000i64 - 1_800_000_000)],
        rotate in maybe(text()),
        generation in maybe(any::<i64>()),
        quota in maybe((maybe(any::<i32>()), maybe(any::<f64>()))),
    ) {
        let Some(spec) = spec else { return Ok(()) };
        let mut user = LiteLLMUser::new("alice", spec);
        user.metadata = ObjectMeta {
            name: Some("alice".into()),
            namespace: Some("team-a".into()),
            uid: Some("uid-1".into()),
            generation,
            annotations: rotate.map(|r| BTreeMap::from([(ROTATE_ANNOTATION.to_owned(), r)])),
            ..ObjectMeta::default()
        };
        let Ok(now) = Timestamp::from_second(1_800_000_000i64.saturating_add(now_offset)) else { return Ok(()) };
        let settings = Settings::default();
        let policy = ProxyPolicy {
            namespace_quota: quota.map(|(max_users, max_budget)| crate::crd::NamespaceQuota { max_users, max_budget }),
            ..ProxyPolicy::default()
        };
        let facts = Facts {
            user: &user,
            status: &status,
            world: &world,
            now,
            settings: &settings,
            fresh_key: "f00d",
            proxy: "p",
            policy: &policy,
        };
        if let Decision::Act(mut plan) = decide(&facts) {
            if user.spec.invalid_field().is_some() {
                prop_assert_eq!(plan.outcome.reason(), Reason::InvalidSpec);
                prop_assert!(!plan.writes() && plan.claim.is_none());
            }
            finish_conditions(&facts, &mut plan);
        }
        let since = Some(std::time::Duration::from_secs(301));
        let _ = settled(&user, &status, Some("9"), since, now, &settings);
        let _ = only_resync_due(&user, &status, Some("9"), since, now, &settings);
    }
}
