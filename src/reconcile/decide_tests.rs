//! `decide`, table by table: each problem the operator must survive is a world and a status in, a plan out.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde_json::{Map, json};

use super::*;
use crate::{
    crd::{DeletionPolicy, KeySpec, LiteLLMUserSpec, RotationSpec, UnmanagedKeys},
    litellm::key_hash,
    reconcile::conditions::READY,
};

const NOW: i64 = 1_800_000_000;
const FRESH: &str = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed";

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn at(offset_secs: i64) -> String {
    Timestamp::from_second(NOW + offset_secs).unwrap().to_string()
}

fn alice(spec: LiteLLMUserSpec) -> LiteLLMUser {
    let mut user = LiteLLMUser::new("alice", spec);
    user.metadata = ObjectMeta {
        name: Some("alice".into()),
        namespace: Some("team-a".into()),
        uid: Some("uid-1".into()),
        generation: Some(2),
        ..ObjectMeta::default()
    };
    user
}

fn marked(owner: &str) -> UserRecord {
    UserRecord {
        user_id: Some("team-a.alice".into()),
        metadata: Map::from_iter([(desired::OWNER_METADATA_KEY.to_owned(), json!({ "owner": owner }))]),
        ..UserRecord::default()
    }
}

fn key(hash: &str) -> KeyRecord {
    KeyRecord { token: hash.into(), user_id: Some("team-a.alice".into()), ..KeyRecord::default() }
}

fn present(record: UserRecord, keys: &[&str]) -> ProxyView {
    ProxyView::Present { record: Box::new(record), keys: keys.iter().map(|h| key(h)).collect(), from_snapshot: false }
}

fn owned_secret(hash: Option<&str>) -> SecretView {
    SecretView::Owned { key_hash: hash.map(str::to_owned), resource_version: "9".into(), secret: None }
}

fn world(proxy: ProxyView, secret: SecretView) -> World {
    World {
        claim: ClaimView::Ours,
        proxy,
        secret,
        marked_owner_exists: false,
        previous_secret: None,
        create_conflict: None,
        namespace_labels: None,
        namespace_usage: None,
    }
}

/// The status of a resource that was in sync with `hash` as its key.
fn synced(hash: &str) -> LiteLLMUserStatus {
    let conditions = conditions::conditions(&[], &Outcome::Ready, &Extras::default(), Some(2), now());
    LiteLLMUserStatus {
        user_id: Some("team-a.alice".into()),
        proxy: Some("p".into()),
        key_secret_name: Some("alice-litellm-key".into()),
        key_hash: Some(hash.into()),
        key_secret_version: Some("9".into()),
        key_issued_at: Some(at(-3600)),
        observed_generation: Some(2),
        synced_generation: Some(2),
        spend: Some(0.0),
        usage: Some(UsageSummary { spend_at_read: Some(0.0), read_at: Some(at(-60)), ..UsageSummary::default() }),
        conditions,
        ..LiteLLMUserStatus::default()
    }
}

/// The default policy, but with rotation as often and grace periods as long as the tables need.
fn test_policy() -> ProxyPolicy {
    let keys = crate::crd::KeyPolicy {
        min_rotation_interval: Some("1s".into()),
        max_grace_period: Some("3650d".into()),
        max_live_keys: Some(10),
    };
    ProxyPolicy { keys, ..ProxyPolicy::default() }
}

fn plan_for(user: &LiteLLMUser, status: &LiteLLMUserStatus, world: &World) -> Plan {
    plan_under(&test_policy(), user, status, world)
}

fn plan_under(policy: &ProxyPolicy, user: &LiteLLMUser, status: &LiteLLMUserStatus, world: &World) -> Plan {
    let settings = Settings::default();
    let facts = Facts { user, status, world, now: now(), settings: &settings, fresh_key: FRESH, proxy: "p", policy };
    match decide(&facts) {
        Decision::Act(plan) => *plan,
        Decision::LookCloser => panic!("expected a plan, got LookCloser"),
    }
}

fn ready(plan: &Plan) -> bool {
    conditions::is_true(&plan.status.conditions, READY)
}

#[test]
fn a_key_nobody_issued_is_replaced_and_never_registered_or_revoked() {
    let a = key_hash("sk-a-real-key");
    let b = key_hash("sk-bobs-key-copied-in");
    let weak = key_hash("sk-1");
    let user = alice(LiteLLMUserSpec::default());
    for (case, in_secret) in
        [("another user's key", Some(b.as_str())), ("a guessable key", Some(&weak)), ("garbage", None)]
    {
        let plan =
            plan_for(&user, &synced(&a), &world(present(marked("team-a/alice"), &[&a]), owned_secret(in_secret)));
        assert!(plan.key.issue.is_some(), "{case}: a fresh key is issued");
        assert_eq!(plan.status.key_hash.as_deref(), Some(FRESH), "{case}: only the fresh key is reported");
        assert_eq!(plan.key.revoke, vec![a.clone()], "{case}: only this user's own keys are revoked");
        let pending = plan.key.issue.as_ref().and_then(|i| i.pending_status.as_ref()).expect("recorded first");
        assert_eq!(pending.pending_key_hash.as_deref(), Some(FRESH), "{case}");
        assert!(ready(&plan), "{case}");
    }
}

#[test]
fn a_key_revoked_on_the_proxy_is_replaced_and_the_admins_stray_key_revoked() {
    let a = key_hash("sk-ours");
    let admins = key_hash("sk-issued-in-the-ui");
    let user = alice(LiteLLMUserSpec::default());
    let plan =
        plan_for(&user, &synced(&a), &world(present(marked("team-a/alice"), &[&admins]), owned_secret(Some(&a))));
    assert!(plan.key.issue.is_some());
    assert_eq!(plan.key.revoke, vec![admins]);
    assert!(plan.events.iter().any(|n| n.reason == "KeyIssued" && n.text.contains("revoked")), "{:?}", plan.events);
}

#[test]
fn the_snapshot_only_confirms_and_never_acts() {
    let a = key_hash("sk-ours");
    let other = key_hash("sk-other");
    let user = alice(LiteLLMUserSpec::default());
    let settings = Settings::default();
    let status = synced(&a);
    let snapshot = |keys: &[&str]| ProxyView::Present {
        record: Box::new(marked("team-a/alice")),
        keys: keys.iter().map(|h| key(h)).collect(),
        from_snapshot: true,
    };
    let in_order = world(snapshot(&[&a]), owned_secret(Some(&a)));
    let policy = ProxyPolicy::default();
    let facts = Facts {
        user: &user,
        status: &status,
        world: &in_order,
        now: now(),
        settings: &settings,
        fresh_key: FRESH,
        proxy: "p",
        policy: &policy,
    };
    let Decision::Act(plan) = decide(&facts) else { panic!("a matching snapshot confirms") };
    assert!(!plan.writes() && plan.status == status, "nothing to do, nothing to write: {:?}", plan.status);
    let swapped = world(snapshot(&[&other]), owned_secret(Some(&a)));
    let facts = Facts { world: &swapped, ..facts };
    assert_eq!(decide(&facts), Decision::LookCloser, "a different key on the proxy is read, not acted on");
}

#[test]
fn after_a_restart_the_status_stands_in_for_unread_keys_only_when_the_count_matches() {
    use super::super::observe::keys_as_status_says;
    let a = key_hash("sk-ours");
    let old = key_hash("sk-ours-before-rotation");
    let spec = LiteLLMUserSpec {
        aliases: Some(BTreeMap::from([("gpt".into(), "gpt-4o".into())])),
        ..LiteLLMUserSpec::default()
    };
    let user = alice(spec);
    let mut status = synced(&a);
    status.retiring_keys = vec![RetiringKey { hash: old.clone(), revoke_at: at(600) }];
    let keys = keys_as_status_says(&user, &status, Some(2)).expect("two keys, as the status says");
    let snapshot = ProxyView::Present { record: Box::new(marked("team-a/alice")), keys, from_snapshot: true };
    let plan = plan_for(&user, &status, &world(snapshot, owned_secret(Some(&a))));
    assert!(!plan.writes() && plan.status == status, "in sync, nothing written: {:?}", plan);

    assert_eq!(keys_as_status_says(&user, &status, Some(1)), None, "a key gone: read the user");
    assert_eq!(keys_as_status_says(&user, &status, Some(3)), None, "a key more: read the user");
    assert_eq!(keys_as_status_says(&user, &status, None), None, "no count: read the user");
    let pending = LiteLLMUserStatus { pending_key_hash: Some(FRESH.into()), ..status.clone() };
    assert_eq!(keys_as_status_says(&user, &pending, Some(3)), None, "a key in delivery: read the user");
    let mut keyless = alice(LiteLLMUserSpec::default());
    keyless.spec.key.enabled = false;
    assert_eq!(keys_as_status_says(&keyless, &status, Some(5)), Some(Vec::new()), "keys off: not looked at");
}

#[test]
fn a_409_without_such_a_user_is_a_rejection() {
    let user = alice(LiteLLMUserSpec { user_email: Some("taken@example.com".into()), ..Default::default() });
    let mut w = world(ProxyView::Absent, SecretView::Absent);
    w.create_conflict = Some("{'error': 'User with email taken@example.com already exists'}".into());
    let plan = plan_for(&user, &LiteLLMUserStatus::default(), &w);
    assert_eq!(plan.outcome.reason(), Reason::LiteLLMRejected);
    assert!(plan.outcome.message().contains("already exists"), "{}", plan.outcome.message());
    assert!(!plan.writes());
    assert_eq!(plan.status.observed_generation, Some(2), "the refused generation is the observed one");
}

#[test]
fn every_outcome_records_the_generation_it_acted_on() {
    let user = alice(LiteLLMUserSpec::default());
    let old = LiteLLMUserStatus { observed_generation: Some(1), ..LiteLLMUserStatus::default() };
    let exists = plan_for(
        &user,
        &old,
        &world(present(UserRecord { user_id: Some("x".into()), ..Default::default() }, &[]), SecretView::Absent),
    );
    assert_eq!(exists.outcome.reason(), Reason::UserExists);
    assert_eq!(exists.status.observed_generation, Some(2));
    let mut theirs = world(ProxyView::NotRead, SecretView::NotWanted);
    theirs.claim = ClaimView::Theirs { holder: "team-b/bob".into() };
    let lost = plan_for(&user, &old, &theirs);
    assert_eq!(lost.outcome.reason(), Reason::OwnedByAnotherResource);
    assert_eq!(lost.status.observed_generation, Some(2));
    assert_eq!(lost.status.user_id, None, "the loser never records the user as its own");
    assert!(!lost.writes(), "nothing is sent to the proxy for a user id someone else holds");
}

#[test]
fn a_released_secret_is_taken_back_with_its_key() {
    let retained = key_hash("sk-retained");
    let user = alice(LiteLLMUserSpec { deletion_policy: DeletionPolicy::Retain, ..Default::default() });
    let released = SecretView::Released { key_hash: Some(retained.clone()), secret: Box::default() };
    let plan =
        plan_for(&user, &LiteLLMUserStatus::default(), &world(present(marked("team-a/alice"), &[&retained]), released));
    assert!(plan.key.take_back && plan.key.issue.is_none() && plan.key.revoke.is_empty(), "{:?}", plan.key);
    assert_eq!(plan.status.key_hash, Some(retained));
    assert!(ready(&plan));
}

#[test]
fn a_released_secret_with_a_key_of_nobody_gets_a_new_one() {
    let user = alice(LiteLLMUserSpec::default());
    let planted = SecretView::Released { key_hash: Some(key_hash("sk-planted")), secret: Box::default() };
    let plan = plan_for(&user, &LiteLLMUserStatus::default(), &world(present(marked("team-a/alice"), &[]), planted));
    assert!(!plan.key.take_back && plan.key.issue.is_some());
}

#[test]
fn a_secret_of_someone_else_is_a_conflict_and_keys_stay() {
    let a = key_hash("sk-ours");
    let user = alice(LiteLLMUserSpec::default());
    let plan = plan_for(&user, &synced(&a), &world(present(marked("team-a/alice"), &[&a]), SecretView::Foreign));
    assert_eq!(plan.outcome.reason(), Reason::SecretConflict);
    assert!(plan.key.issue.is_none() && plan.key.revoke.is_empty());
}

#[test]
fn a_user_marked_by_a_live_resource_is_not_touched() {
    let user = alice(LiteLLMUserSpec { adopt: true, ..Default::default() });
    let mut w = world(present(marked("team-b/bob"), &[]), SecretView::Absent);
    w.marked_owner_exists = true;
    let plan = plan_for(&user, &LiteLLMUserStatus::default(), &w);
    assert_eq!(plan.outcome.reason(), Reason::OwnedByAnotherResource);
    assert!(!plan.writes());
    w.marked_owner_exists = false;
    let adopted = plan_for(&user, &LiteLLMUserStatus::default(), &w);
    assert!(ready(&adopted) && adopted.events.iter().any(|n| n.reason == "Adopted"));
}

fn adopted(unmanaged_keys: Option<UnmanagedKeys>) -> LiteLLMUser {
    let key = KeySpec { unmanaged_keys, ..KeySpec::default() };
    alice(LiteLLMUserSpec { adopt: true, max_budget: Some(5.0), key, ..Default::default() })
}

fn unmarked_user() -> UserRecord {
    UserRecord { user_id: Some("team-a.alice".into()), max_budget: Some(5.0), ..UserRecord::default() }
}

fn sorted(mut hashes: Vec<String>) -> Vec<String> {
    hashes.sort();
    hashes
}

#[test]
fn adopting_keeps_the_users_keys_and_sends_no_update_when_the_spec_matches() {
    let theirs = [key_hash("sk-made-in-the-ui"), key_hash("sk-made-by-a-script")];
    let w = world(present(unmarked_user(), &[&theirs[0], &theirs[1]]), SecretView::Absent);
    let plan = plan_for(&adopted(None), &LiteLLMUserStatus::default(), &w);
    assert!(ready(&plan) && plan.events.iter().any(|n| n.reason == "Adopted"), "{:?}", plan.events);
    assert!(plan.key.issue.is_some(), "the operator's own key goes into the Secret");
    assert!(plan.key.revoke.is_empty(), "the keys it came with keep working: {:?}", plan.key.revoke);
    assert_eq!(plan.changes.update, None, "the ownership mark alone is no reason to update");
    assert_eq!(plan.status.user_id.as_deref(), Some("team-a.alice"), "status records the user as managed");

    // Once adopted, the unmarked user is recognised by status alone, and stays untouched.
    let mut status = synced(FRESH);
    status.managed_fields = vec!["maxBudget".into()];
    let w = world(present(unmarked_user(), &[&theirs[0], &theirs[1], FRESH]), owned_secret(Some(FRESH)));
    let plan = plan_for(&adopted(None), &status, &w);
    assert!(ready(&plan) && !plan.writes(), "{plan:?}");
}

#[test]
fn an_adopted_user_with_revoke_loses_the_keys_it_came_with() {
    let theirs = [key_hash("sk-made-in-the-ui"), key_hash("sk-made-by-a-script")];
    let w = world(present(unmarked_user(), &[&theirs[0], &theirs[1]]), SecretView::Absent);
    let plan = plan_for(&adopted(Some(UnmanagedKeys::Revoke)), &LiteLLMUserStatus::default(), &w);
    assert!(ready(&plan));
    assert_eq!(sorted(plan.key.revoke), sorted(theirs.to_vec()));
    // A user the operator created revokes them by default.
    let user = alice(LiteLLMUserSpec::default());
    let a = key_hash("sk-ours");
    let w = world(present(marked("team-a/alice"), &[&a, &theirs[0]]), owned_secret(Some(&a)));
    assert_eq!(plan_for(&user, &synced(&a), &w).key.revoke, vec![theirs[0].clone()]);
}

#[test]
fn keeping_unmanaged_keys_still_revokes_the_keys_this_resource_issued() {
    let current = key_hash("sk-current");
    let cut_off = key_hash("sk-pending-never-delivered");
    let stray_of_ours = key_hash("sk-issued-by-this-resource-and-forgotten");
    let of_another_resource = key_hash("sk-of-a-retained-resource");
    let theirs = key_hash("sk-made-in-the-ui");
    let mut status = synced(&current);
    status.pending_key_hash = Some(cut_off.clone());
    let keys = vec![
        key(&current),
        key(&cut_off),
        KeyRecord { owner: Some("team-a/alice".into()), ..key(&stray_of_ours) },
        KeyRecord { owner: Some("team-b/bob".into()), ..key(&of_another_resource) },
        key(&theirs),
    ];
    let proxy = ProxyView::Present { record: Box::new(unmarked_user()), keys, from_snapshot: false };
    let plan = plan_for(&adopted(Some(UnmanagedKeys::Keep)), &status, &world(proxy, owned_secret(Some(&current))));
    assert_eq!(plan.status.key_hash.as_deref(), Some(current.as_str()));
    assert_eq!(sorted(plan.key.revoke), sorted(vec![cut_off, stray_of_ours]));
}

#[test]
fn creation_creates_and_issues_in_one_go_without_a_pending_write() {
    let user = alice(LiteLLMUserSpec { max_budget: Some(5.0), ..Default::default() });
    let plan = plan_for(&user, &LiteLLMUserStatus::default(), &world(ProxyView::Absent, SecretView::Absent));
    assert_eq!(plan.create.as_ref().unwrap()["auto_create_key"], false);
    let issue = plan.key.issue.as_ref().unwrap();
    assert!(issue.pending_status.is_none(), "a brand-new user has no key but the operator's");
    assert_eq!(issue.register["metadata"][desired::OWNER_METADATA_KEY]["owner"], "team-a/alice");
    assert_eq!(plan.status.user_id.as_deref(), Some("team-a.alice"));
    assert_eq!(plan.status.synced_generation, Some(2));
    assert!(plan.events.iter().map(|n| n.reason).eq(["Created"]), "one event for a creation: {:?}", plan.events);
}

fn rotating(every: Option<&str>, grace: Option<&str>) -> LiteLLMUserSpec {
    LiteLLMUserSpec {
        key: KeySpec {
            rotation: Some(RotationSpec { every: every.map(Into::into), grace_period: grace.map(Into::into) }),
            ..KeySpec::default()
        },
        ..Default::default()
    }
}

#[test]
fn a_scheduled_rotation_keeps_the_old_key_for_the_grace_period() {
    let old = key_hash("sk-old");
    let user = alice(rotating(Some("1h"), Some("2m")));
    let plan =
        plan_for(&user, &synced(&old), &world(present(marked("team-a/alice"), &[&old]), owned_secret(Some(&old))));
    let issue = plan.key.issue.as_ref().expect("due: issued an hour ago");
    let pending = issue.pending_status.as_ref().unwrap();
    assert_eq!(pending.pending_key_hash.as_deref(), Some(FRESH));
    assert_eq!(pending.retiring_keys, vec![RetiringKey { hash: old.clone(), revoke_at: at(120) }], "recorded before");
    assert!(plan.key.revoke.is_empty(), "the old key keeps working");
    assert_eq!(plan.status.retiring_keys, pending.retiring_keys);
    assert_eq!(plan.status.key_hash.as_deref(), Some(FRESH));
    assert_eq!(plan.status.next_rotation_at, Some(at(3600)));
    assert!(plan.events.iter().any(|n| n.reason == "KeyRotated"));
    assert_eq!(plan.requeue, Duration::from_secs(120), "back when the old key is due");
}

#[test]
fn an_old_key_goes_when_its_grace_period_ends_also_after_a_restart() {
    let (old, new) = (key_hash("sk-old"), key_hash("sk-new"));
    let user = alice(rotating(None, Some("10m")));
    let mut status = synced(&new);
    status.key_issued_at = Some(at(-30));
    status.retiring_keys = vec![RetiringKey { hash: old.clone(), revoke_at: at(-1) }];
    let proxy = present(marked("team-a/alice"), &[&old, &new]);
    let plan = plan_for(&user, &status, &world(proxy.clone(), owned_secret(Some(&new))));
    assert_eq!(plan.key.revoke, vec![old.clone()]);
    assert!(plan.status.retiring_keys.is_empty() && plan.key.issue.is_none());
    status.retiring_keys[0].revoke_at = at(120);
    let early = plan_for(&user, &status, &world(proxy, owned_secret(Some(&new))));
    assert!(early.key.revoke.is_empty() && early.status.retiring_keys.len() == 1);
}

#[test]
fn a_zero_grace_period_revokes_at_once() {
    let old = key_hash("sk-old");
    let user = alice(rotating(Some("1m"), Some("0s")));
    let plan =
        plan_for(&user, &synced(&old), &world(present(marked("team-a/alice"), &[&old]), owned_secret(Some(&old))));
    assert!(plan.key.issue.is_some());
    assert_eq!(plan.key.revoke, vec![old]);
}

#[test]
fn the_rotate_annotation_rotates_once_per_value() {
    let old = key_hash("sk-old");
    let mut user = alice(LiteLLMUserSpec::default());
    user.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.to_owned(), "2026-12-01".to_owned())]));
    let proxy = present(marked("team-a/alice"), &[&old]);
    let plan = plan_for(&user, &synced(&old), &world(proxy.clone(), owned_secret(Some(&old))));
    assert!(plan.key.issue.is_some());
    assert_eq!(plan.status.rotation_request.as_deref(), Some("2026-12-01"));
    let mut after = synced(FRESH);
    after.rotation_request = Some("2026-12-01".into());
    let again = plan_for(&user, &after, &world(present(marked("team-a/alice"), &[FRESH]), owned_secret(Some(FRESH))));
    assert!(again.key.issue.is_none(), "the same value again is no new request");
}

#[test]
fn a_pending_key_in_the_secret_is_promoted_after_a_crash() {
    let (old, pending) = (key_hash("sk-old"), key_hash("sk-pending"));
    let user = alice(rotating(Some("30d"), None));
    let mut status = synced(&old);
    status.pending_key_hash = Some(pending.clone());
    status.retiring_keys = vec![RetiringKey { hash: old.clone(), revoke_at: at(240) }];
    let plan = plan_for(
        &user,
        &status,
        &world(present(marked("team-a/alice"), &[&old, &pending]), owned_secret(Some(&pending))),
    );
    assert!(plan.key.issue.is_none() && plan.key.revoke.is_empty(), "{:?}", plan.key);
    assert_eq!(plan.status.key_hash, Some(pending));
    assert_eq!(plan.status.pending_key_hash, None);
    assert_eq!(plan.status.retiring_keys.len(), 1, "the old key still gets its grace period");
}

#[test]
fn a_pending_key_that_never_reached_the_secret_is_revoked() {
    let (old, pending) = (key_hash("sk-old"), key_hash("sk-lost"));
    let user = alice(LiteLLMUserSpec::default());
    let mut status = synced(&old);
    status.pending_key_hash = Some(pending.clone());
    status.retiring_keys = vec![RetiringKey { hash: old.clone(), revoke_at: at(240) }];
    let plan =
        plan_for(&user, &status, &world(present(marked("team-a/alice"), &[&old, &pending]), owned_secret(Some(&old))));
    assert_eq!(plan.key.revoke, vec![pending]);
    assert_eq!(plan.status.key_hash, Some(old));
    assert!(plan.status.retiring_keys.is_empty(), "the current key is not retiring");
}

#[test]
fn a_key_duration_rotates_before_expiry_and_an_expired_key_is_replaced() {
    let old = key_hash("sk-old");
    let spec =
        LiteLLMUserSpec { key: KeySpec { duration: Some("10h".into()), ..KeySpec::default() }, ..Default::default() };
    let user = alice(spec);
    let mut status = synced(&old);
    status.key_issued_at = Some(at(0));
    let mut expiring = key(&old);
    expiring.expires = Some(at(36_000));
    let proxy = ProxyView::Present {
        record: Box::new(marked("team-a/alice")),
        keys: vec![expiring.clone()],
        from_snapshot: false,
    };
    let plan = plan_for(&user, &status, &world(proxy, owned_secret(Some(&old))));
    assert!(plan.key.issue.is_none());
    // 10 h less the default grace (5 min) and a tenth (1 h).
    assert_eq!(plan.status.next_rotation_at, Some(at(36_000 - 300 - 3600)));
    expiring.expires = Some(at(-1));
    let proxy =
        ProxyView::Present { record: Box::new(marked("team-a/alice")), keys: vec![expiring], from_snapshot: false };
    status.key_issued_at = Some(at(-36_001));
    let expired = plan_for(&user, &status, &world(proxy, owned_secret(Some(&old))));
    assert!(expired.key.issue.is_some(), "an expired key is no key");
    assert_eq!(expired.key.issue.unwrap().register["duration"], "10h");
}

#[test]
fn changed_aliases_reach_the_existing_key() {
    let a = key_hash("sk-ours");
    let spec = LiteLLMUserSpec {
        aliases: Some(BTreeMap::from([("fast".into(), "gpt-4o-mini".into())])),
        ..Default::default()
    };
    let plan =
        plan_for(&alice(spec), &synced(&a), &world(present(marked("team-a/alice"), &[&a]), owned_secret(Some(&a))));
    assert_eq!(plan.key.aliases, Some((a, json!({ "aliases": { "fast": "gpt-4o-mini" } }))));
    assert!(plan.key.issue.is_none());
}

#[test]
fn crossing_the_budget_warns_once_and_stays_ready() {
    let a = key_hash("sk-ours");
    let user = alice(LiteLLMUserSpec { max_budget: Some(10.0), soft_budget: Some(5.0), ..Default::default() });
    let record = UserRecord { spend: 10.5, max_budget: Some(10.0), ..marked("team-a/alice") };
    let plan = plan_for(&user, &synced(&a), &world(present(record.clone(), &[&a]), owned_secret(Some(&a))));
    assert!(ready(&plan), "the operator did its job");
    assert!(conditions::is_true(&plan.status.conditions, conditions::BUDGET_EXCEEDED));
    assert!(conditions::is_true(&plan.status.conditions, conditions::SOFT_BUDGET_EXCEEDED));
    let warnings: Vec<_> = plan.events.iter().filter(|n| n.warning).map(|n| n.reason).collect();
    assert_eq!(warnings, ["BudgetExceeded", "SoftBudgetExceeded"]);
    let again = plan_for(&user, &plan.status, &world(present(record, &[&a]), owned_secret(Some(&a))));
    assert!(again.events.iter().all(|n| !n.warning), "once per crossing: {:?}", again.events);
}

#[test]
fn usage_is_read_only_once_spend_moved_and_the_interval_passed() {
    let a = key_hash("sk-ours");
    let user = alice(LiteLLMUserSpec::default());
    let still = plan_for(&user, &synced(&a), &world(present(marked("team-a/alice"), &[&a]), owned_secret(Some(&a))));
    assert!(!still.read_usage, "spend did not move");
    let moved = UserRecord { spend: 1.0, ..marked("team-a/alice") };
    let recent = plan_for(&user, &synced(&a), &world(present(moved.clone(), &[&a]), owned_secret(Some(&a))));
    assert!(!recent.read_usage, "read a minute ago");
    let mut status = synced(&a);
    status.usage.as_mut().unwrap().read_at = Some(at(-2 * 3600));
    let due = plan_for(&user, &status, &world(present(moved, &[&a]), owned_secret(Some(&a))));
    assert!(due.read_usage);
}

#[test]
fn with_keys_off_no_key_is_touched() {
    let a = key_hash("sk-someone-elses");
    let spec = LiteLLMUserSpec { key: KeySpec { enabled: false, ..KeySpec::default() }, ..Default::default() };
    let plan = plan_for(
        &alice(spec),
        &LiteLLMUserStatus::default(),
        &world(present(marked("team-a/alice"), &[&a]), SecretView::NotWanted),
    );
    assert!(plan.key == KeyPlan::default());
    assert_eq!(plan.status.key_hash, None);
}

#[test]
fn settled_needs_the_secret_where_the_operator_left_it() {
    let a = key_hash("sk-ours");
    let user = alice(LiteLLMUserSpec::default());
    let status = synced(&a);
    let settings = Settings::default();
    let within = Some(Duration::from_secs(10));
    assert!(settled(&user, &status, Some("9"), within, now(), &settings).is_some());
    assert_eq!(settled(&user, &status, Some("10"), within, now(), &settings), None, "someone wrote the Secret");
    assert_eq!(settled(&user, &status, None, within, now(), &settings), None, "the Secret is gone");
    assert_eq!(settled(&user, &status, Some("9"), None, now(), &settings), None, "not seen since start");
    assert_eq!(settled(&user, &status, Some("9"), Some(settings.resync), now(), &settings), None, "resync due");
    let mut changed = user.clone();
    changed.metadata.generation = Some(3);
    assert_eq!(settled(&changed, &status, Some("9"), within, now(), &settings), None, "the spec changed");
}

#[test]
fn only_a_resync_that_merely_confirms_may_wait_for_the_directory() {
    let a = key_hash("sk-ours");
    let user = alice(LiteLLMUserSpec::default());
    let status = synced(&a);
    let settings = Settings::default();
    let due = Some(settings.resync);
    assert!(only_resync_due(&user, &status, Some("9"), due, now(), &settings));
    assert!(!only_resync_due(&user, &status, Some("9"), Some(Duration::from_secs(10)), now(), &settings), "not due");
    assert!(!only_resync_due(&user, &status, Some("9"), None, now(), &settings), "not seen since start");
    assert!(!only_resync_due(&user, &status, Some("10"), due, now(), &settings), "someone wrote the Secret");
    let mut changed = user.clone();
    changed.metadata.generation = Some(3);
    assert!(!only_resync_due(&changed, &status, Some("9"), due, now(), &settings), "the spec changed");
    let mut revoking = status.clone();
    revoking.retiring_keys = vec![RetiringKey { hash: key_hash("sk-old"), revoke_at: "2026-01-01T00:00:00Z".into() }];
    assert!(!only_resync_due(&user, &revoking, Some("9"), due, now(), &settings), "a revocation is due");
}

#[test]
fn durations_past_what_a_timestamp_holds_are_refused_not_computed() {
    // The manifests that crashed the operator: each is refused by name, and nothing is sent or claimed.
    let rotation = |every: &str, grace: Option<&str>| KeySpec {
        rotation: Some(RotationSpec { every: Some(every.into()), grace_period: grace.map(str::to_owned) }),
        ..KeySpec::default()
    };
    let cases = [
        ("key.rotation.every", KeySpec { ..rotation("999999999w", None) }),
        ("key.duration", KeySpec { duration: Some("9999999d".into()), ..KeySpec::default() }),
        ("key.rotation.gracePeriod", rotation("1d", Some("999999999w"))),
        ("key.rotation.every", rotation("0s", None)),
    ];
    for (field, key_spec) in cases {
        let user = alice(LiteLLMUserSpec { key: key_spec, ..Default::default() });
        for status in [LiteLLMUserStatus::default(), synced("h")] {
            let plan =
                plan_for(&user, &status, &world(present(marked("team-a/alice"), &["h"]), owned_secret(Some("h"))));
            assert_eq!(plan.outcome.reason(), Reason::InvalidSpec, "{field}");
            assert!(plan.outcome.message().starts_with(&format!("spec.{field}: ")), "{}", plan.outcome.message());
            assert!(!plan.writes() && plan.claim.is_none(), "{field}");
        }
    }
    // The longest allowed rotation still computes a next rotation, ten years on.
    let user = alice(LiteLLMUserSpec { key: rotation("3650d", Some("3650d")), ..Default::default() });
    let plan = plan_for(&user, &synced("h"), &world(present(marked("team-a/alice"), &["h"]), owned_secret(Some("h"))));
    assert!(ready(&plan));
    let next: Timestamp = plan.status.next_rotation_at.as_deref().and_then(|t| t.parse().ok()).expect("scheduled");
    assert_eq!(next.duration_since(now()).as_secs() / 86_400, 3649, "issued an hour ago, rotated 3650 days on");
}

#[test]
fn a_policy_violation_claims_nothing_and_sends_nothing() {
    let admin = alice(LiteLLMUserSpec { user_role: Some(crate::crd::UserRole::ProxyAdmin), ..Default::default() });
    let plan = plan_for(&admin, &LiteLLMUserStatus::default(), &world(ProxyView::NotRead, SecretView::Absent));
    assert_eq!(plan.outcome.reason(), Reason::PolicyViolation);
    assert!(plan.outcome.message().contains("proxy_admin") && plan.outcome.message().contains("policy.allowedRoles"));
    assert!(!plan.writes() && plan.claim.is_none());
    let foreign = alice(LiteLLMUserSpec { user_id: Some("team-b.bob".into()), ..Default::default() });
    let mut w = world(ProxyView::NotRead, SecretView::Absent);
    w.claim = ClaimView::Free;
    let plan = plan_for(&foreign, &LiteLLMUserStatus::default(), &w);
    assert_eq!(plan.outcome.reason(), Reason::PolicyViolation, "not even a claim for another namespace's id");
    assert!(plan.claim.is_none());
}

#[test]
fn a_brand_new_user_on_a_newer_proxy_is_created_without_looking_first() {
    let user = alice(LiteLLMUserSpec::default());
    let plan = plan_for(&user, &LiteLLMUserStatus::default(), &world(ProxyView::Unseen, SecretView::Absent));
    assert!(plan.create.is_some() && plan.key.issue.is_some(), "two calls: /user/new and /key/generate");
    let mut taken = world(ProxyView::Absent, SecretView::Absent);
    taken.create_conflict = Some("User with id team-a.alice already exists".into());
    assert_eq!(plan_for(&user, &LiteLLMUserStatus::default(), &taken).outcome.reason(), Reason::LiteLLMRejected);
}

#[test]
fn rotation_on_request_waits_for_the_least_interval_and_live_keys_are_bounded() {
    let current = key_hash("sk-current");
    let annotated = |value: &str| {
        let mut user = alice(LiteLLMUserSpec::default());
        user.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.to_owned(), value.to_owned())]));
        user
    };
    let default = ProxyPolicy::default();
    let proxy = |keys: &[&str]| world(present(marked("team-a/alice"), keys), owned_secret(Some(&current)));
    // Issued an hour ago: a request is honoured at once under the default 1h interval.
    let status = synced(&current);
    let plan = plan_under(&default, &annotated("a"), &status, &proxy(&[&current]));
    assert!(plan.key.issue.is_some(), "rotated on request");
    // Issued a minute ago: the request waits, and status says until when.
    let mut fresh = synced(&current);
    fresh.key_issued_at = Some(at(-60));
    let plan = plan_under(&default, &annotated("b"), &fresh, &proxy(&[&current]));
    assert!(plan.key.issue.is_none() && ready(&plan), "no rotation yet");
    assert_eq!(plan.status.next_rotation_at, Some(at(3540)), "one hour after issue");
    assert!(plan.requeue <= Duration::from_secs(3540));
    // Two old keys still in their grace period and a third rotation: the oldest goes early, three keys live.
    let (old1, old2) = (key_hash("sk-old1"), key_hash("sk-old2"));
    let mut busy = synced(&current);
    busy.retiring_keys = vec![
        RetiringKey { hash: old2.clone(), revoke_at: at(200) },
        RetiringKey { hash: old1.clone(), revoke_at: at(100) },
    ];
    let plan = plan_under(&default, &annotated("c"), &busy, &proxy(&[&current, &old1, &old2]));
    assert!(plan.key.issue.is_some());
    assert_eq!(plan.key.revoke, vec![old1], "the oldest old key goes early");
    let live: Vec<&str> = plan.status.retiring_keys.iter().map(|k| k.hash.as_str()).collect();
    assert_eq!(live, vec![old2.as_str(), current.as_str()], "with the fresh key, three keys work");
}

#[test]
fn what_the_proxy_keeps_where_the_spec_is_silent_must_be_within_the_policy() {
    let mut admin = UserRecord { user_role: Some("proxy_admin".into()), ..UserRecord::default() };
    admin.user_id = Some("team-a.alice".into());
    let adopting = alice(LiteLLMUserSpec { adopt: true, ..Default::default() });
    let plan = plan_for(&adopting, &LiteLLMUserStatus::default(), &world(present(admin, &[]), SecretView::Absent));
    assert_eq!(plan.outcome.reason(), Reason::PolicyViolation, "{:?}", plan.outcome);
    assert!(plan.outcome.message().contains("proxy_admin") && !plan.writes(), "no key for an admin");
    let in_their_team = UserRecord { teams: vec!["platform-billing".into()], ..marked("team-a/alice") };
    let plan = plan_for(
        &alice(LiteLLMUserSpec::default()),
        &synced("h"),
        &world(present(in_their_team, &["h"]), owned_secret(Some("h"))),
    );
    assert_eq!(plan.outcome.reason(), Reason::PolicyViolation);
    assert!(plan.outcome.message().contains("platform-billing") && plan.outcome.message().contains("policy.teams"));
    let leaving = alice(LiteLLMUserSpec { teams: Some(vec![]), ..Default::default() });
    let in_their_team = UserRecord { teams: vec!["platform-billing".into()], ..marked("team-a/alice") };
    let plan = plan_for(&leaving, &synced("h"), &world(present(in_their_team, &["h"]), owned_secret(Some("h"))));
    assert!(
        ready(&plan) && plan.changes.leave_teams == vec!["platform-billing".to_owned()],
        "a spec that leaves is fine"
    );
}

#[test]
fn a_key_lost_soon_after_its_issue_is_replaced_once_the_least_rotation_interval_has_passed() {
    let current = key_hash("sk-current");
    let user = alice(LiteLLMUserSpec::default());
    let policy = ProxyPolicy::default();
    let overwritten = SecretView::Owned {
        key_hash: Some(key_hash("sk-planted")),
        resource_version: "10".into(),
        secret: Some(Box::default()),
    };
    let issued_minutes_ago =
        |minutes: i64| LiteLLMUserStatus { key_issued_at: Some(at(-60 * minutes)), ..synced(&current) };
    let lost = [
        ("the Secret deleted", world(present(marked("team-a/alice"), &[&current]), SecretView::Absent), true),
        ("the Secret overwritten", world(present(marked("team-a/alice"), &[&current]), overwritten), true),
        ("the key revoked", world(present(marked("team-a/alice"), &[]), owned_secret(Some(&current))), false),
    ];
    for (what, w, still_live) in lost {
        let plan = plan_under(&policy, &user, &issued_minutes_ago(10), &w);
        assert_eq!(plan.key.issue, None, "{what}: no key minted within the interval");
        assert!(plan.key.revoke.is_empty(), "{what}: the current key is kept");
        assert_eq!(plan.key.secret_version, None, "{what}: the Secret is not recorded as holding it");
        assert_eq!(plan.key.secret_version, None, "{what}: the Secret is not recorded as holding it");
        assert_eq!(plan.outcome.reason(), Reason::KeyReplacementDeferred, "{what}");
        assert!(plan.outcome.message().contains(&at(50 * 60)), "{what}: {}", plan.outcome.message());
        assert_eq!(plan.status.key_hash.as_deref(), Some(current.as_str()), "{what}");
        assert_eq!(plan.status.next_rotation_at, Some(at(50 * 60)), "{what}: looked at again then");
        assert_eq!(plan.requeue, Duration::from_secs(50 * 60).min(Settings::default().resync), "{what}");

        let plan = plan_under(&policy, &user, &issued_minutes_ago(61), &w);
        assert!(plan.key.issue.is_some(), "{what}: a new key once the interval has passed");
        assert_eq!(plan.outcome, Outcome::Ready, "{what}");
        assert_eq!(plan.key.revoke, if still_live { vec![current.clone()] } else { vec![] }, "{what}");
    }
}
