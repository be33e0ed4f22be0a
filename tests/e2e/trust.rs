//! Keys nobody can plant or move, a status that never lies, rotation without downtime: each test is one way
//! other people touch the Secret, the proxy or the spec, checked on both sides (Kubernetes and the proxy's own
//! API).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use reqwest::Method;
use serde_json::json;

use crate::{
    KEY_CACHE_DEADLINE,
    support::{DEADLINE, Operator, OperatorOptions, Proxy, QUICK_REISSUE, Relay, TestNamespace, wait_for, wait_until},
};
use litellm_operator::litellm::key_hash;

/// Whether the resource's Ready condition is True right now, or why the API server could not say.
async fn is_ready(ns: &TestNamespace, name: &str) -> Result<bool, String> {
    let user = ns.users().get_opt(name).await.map_err(|err| format!("{}/{name}: {err}", ns.name))?;
    Ok(user
        .and_then(|u| u.status)
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
}

/// Writes `value` into the Secret's key, as a tenant with edit rights on Secrets can.
async fn overwrite_key(ns: &TestNamespace, secret: &str, value: &str) {
    let patch = json!({ "data": { "LITELLM_API_KEY": ByteString(value.as_bytes().to_vec()) } });
    ns.secrets().patch(secret, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("overwrite the Secret");
}

/// The proxy's keys of a user.
async fn keys_of(proxy: &Proxy, user_id: &str) -> Vec<String> {
    proxy.user(user_id).await.map(|(_, keys)| keys).unwrap_or_default()
}

/// The same, or why the proxy could not say.
async fn try_keys_of(proxy: &Proxy, user_id: &str) -> Result<Vec<String>, String> {
    Ok(proxy.try_user(user_id).await?.map(|(_, keys)| keys).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn keys_planted_in_a_secret_are_replaced_never_registered() {
    let ns = TestNamespace::new("plant").await;
    let _operator = Operator::start_with(&ns.name, OperatorOptions::from_env().with_policy(QUICK_REISSUE));
    let proxy = Proxy::from_env();
    ns.apply("alice", json!({})).await;
    ns.apply("bob", json!({})).await;
    ns.wait_condition("alice", "Ready", "True").await;
    ns.wait_condition("bob", "Ready", "True").await;
    let (alice_id, bob_id) = (ns.user_id("alice"), ns.user_id("bob"));
    let alice_key = ns.key("alice-litellm-key").await;
    let bob_key = ns.key("bob-litellm-key").await;

    for (what, planted) in [("bob's key", bob_key.clone()), ("a guessable key", "sk-1".to_owned())] {
        let before = ns.key("alice-litellm-key").await;
        overwrite_key(&ns, "alice-litellm-key", &planted).await;
        let replaced = wait_for(&format!("{what} in alice's Secret to be replaced"), DEADLINE, || async {
            let key = ns.key("alice-litellm-key").await;
            (key != planted && key != before).then_some(key)
        })
        .await;
        let works = proxy.wait_key_works("the replacement to work", &replaced).await;
        assert_eq!(works, alice_id, "{what}: alice's Secret holds a key of alice");
        let hash = key_hash(&replaced);
        wait_until(&format!("{what}: status to name the real key"), DEADLINE, || async {
            let user = ns.users().get("alice").await.map_err(|err| err.to_string())?;
            let named = user.status.and_then(|st| st.key_hash);
            if named.as_deref() == Some(hash.as_str()) {
                Ok(())
            } else {
                Err(format!("status names key hash {named:?}"))
            }
        })
        .await;
        ns.wait_condition("alice", "Ready", "True").await;
        assert_eq!(keys_of(&proxy, &alice_id).await, vec![key_hash(&replaced)], "{what}: alice has just that key");
        assert!(!keys_of(&proxy, &alice_id).await.contains(&key_hash(&planted)), "{what}: never registered for alice");
    }
    // Bob lost nothing: his key is still his, and works.
    assert_eq!(proxy.key_works(&bob_key).await.as_deref(), Some(bob_id.as_str()));
    assert_eq!(keys_of(&proxy, &bob_id).await, vec![key_hash(&bob_key)]);
    // sk-1 exists nowhere on the proxy.
    assert_eq!(proxy.key_works("sk-1").await, None);
    proxy.wait_key_refused("alice's original key to be revoked", KEY_CACHE_DEADLINE, &alice_key).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn a_key_swapped_on_the_proxy_is_noticed_by_the_resync() {
    let ns = TestNamespace::new("swap").await;
    let _operator = Operator::start_with(&ns.name, OperatorOptions::from_env().with_policy(QUICK_REISSUE));
    let proxy = Proxy::from_env();
    ns.apply("carl", json!({})).await;
    ns.wait_condition("carl", "Ready", "True").await;
    let user_id = ns.user_id("carl");
    let key = ns.key("carl-litellm-key").await;
    // An admin revokes the key in the LiteLLM UI and issues another one: the key count stays 1.
    let (status, body) = proxy.call(Method::POST, "/key/delete", Some(json!({ "keys": [key_hash(&key)] }))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = proxy.call(Method::POST, "/key/generate", Some(json!({ "user_id": user_id }))).await;
    assert_eq!(status, 200, "{body}");
    let admins = body["key"].as_str().expect("a key").to_owned();
    let replacement = wait_for("a new key in the Secret", DEADLINE, || async {
        let current = ns.key("carl-litellm-key").await;
        (current != key).then_some(current)
    })
    .await;
    proxy.wait_key_works("the replacement to work", &replacement).await;
    let keys = wait_until("the admin's key to be revoked", DEADLINE, || async {
        let keys = try_keys_of(&proxy, &user_id).await?;
        if keys.len() == 1 { Ok(keys) } else { Err(format!("key hashes {keys:?}")) }
    })
    .await;
    assert_eq!(keys, vec![key_hash(&replacement)], "only the Secret's key is registered");
    assert!(!keys.contains(&key_hash(&admins)));
    ns.wait_event("carl", "Normal", "KeyIssued").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn a_duplicate_email_is_a_rejection_not_an_outage() {
    let ns = TestNamespace::new("email").await;
    let _operator = Operator::start(&ns.name);
    let proxy = Proxy::from_env();
    let email = format!("taken@{}.example.com", ns.name);
    let (status, body) = proxy
        .call(
            Method::POST,
            "/user/new",
            Some(json!({ "user_id": format!("{}-owner", ns.name), "user_email": email, "auto_create_key": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    ns.apply("dora", json!({ "userEmail": email })).await;
    let dora = ns.wait_reason("dora", "LiteLLMRejected").await;
    let status = dora.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("already exists") || ready.message.contains("email"), "{}", ready.message);
    assert_eq!(ns.kstatus("dora"), "Failed");
    ns.wait_event("dora", "Warning", "LiteLLMRejected").await;
    assert!(proxy.user(&ns.user_id("dora")).await.is_none(), "nothing created");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn a_refused_spec_change_reads_failed_at_the_new_generation() {
    let ns = TestNamespace::new("refused").await;
    let _operator = Operator::start(&ns.name);
    ns.apply("eve", json!({ "maxBudget": 1 })).await;
    ns.wait_condition("eve", "Ready", "True").await;
    assert_eq!(ns.kstatus("eve"), "Current");
    let changed = ns.apply("eve", json!({ "maxBudget": 1, "teams": [format!("{}.no-such-team", ns.name)] })).await;
    let eve = ns.wait_reason("eve", "LiteLLMRejected").await;
    assert_eq!(eve.status.unwrap().observed_generation, changed.metadata.generation, "the refused generation");
    assert_eq!(ns.kstatus("eve"), "Failed", "kstatus (and Flux wait) see the failure, not InProgress");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn retain_then_recreate_takes_back_the_secret_and_its_key() {
    let ns = TestNamespace::new("takeback").await;
    let _operator = Operator::start(&ns.name);
    let proxy = Proxy::from_env();
    ns.apply("fred", json!({ "deletionPolicy": "Retain" })).await;
    ns.wait_condition("fred", "Ready", "True").await;
    let key = ns.key("fred-litellm-key").await;
    let user_id = ns.user_id("fred");
    ns.delete("fred").await;
    ns.wait_gone("fred").await;
    ns.apply("fred", json!({ "deletionPolicy": "Retain" })).await;
    let fred = ns.wait_condition("fred", "Ready", "True").await;
    assert_eq!(ns.key("fred-litellm-key").await, key, "the same key, no new one");
    assert_eq!(fred.status.unwrap().key_hash, Some(key_hash(&key)));
    assert_eq!(keys_of(&proxy, &user_id).await, vec![key_hash(&key)], "nothing issued, nothing revoked");
    assert_eq!(proxy.key_works(&key).await.as_deref(), Some(user_id.as_str()));
    let secret = ns.secrets().get("fred-litellm-key").await.unwrap();
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(owners.iter().any(|o| Some(&o.uid) == fred.metadata.uid.as_ref()), "owned again");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn the_longest_name_the_api_server_accepts_works() {
    let ns = TestNamespace::new("long").await;
    let _operator = Operator::start(&ns.name);
    let proxy = Proxy::from_env();
    let name = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(name.len(), 253);
    ns.apply(&name, json!({})).await;
    let user = ns.wait_condition(&name, "Ready", "True").await;
    let status = user.status.unwrap();
    let secret = status.key_secret_name.clone().expect("a Secret");
    assert!(secret.len() <= 253, "{secret}");
    let key = ns.key(&secret).await;
    assert_eq!(proxy.key_works(&key).await.as_deref(), Some(ns.user_id(&name).as_str()));
    ns.wait_event(&name, "Normal", "Created").await;
    ns.delete(&name).await;
    ns.wait_gone(&name).await;
    assert!(proxy.user(&ns.user_id(&name)).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn two_namespaces_racing_for_one_user_id_never_both_win() {
    let (a, b) = (TestNamespace::new("race-a").await, TestNamespace::new("race-b").await);
    let proxy = Proxy::from_env();
    let user_id = format!("{}-shared", a.name);
    // The platform lets these namespaces use any id; under the default policy ids are per namespace.
    let options = || OperatorOptions::from_env().with_policy("userIds: { scope: Any }\n");
    // Two operator processes, one per namespace, as two separately scaled replicas would race.
    let _one = Operator::start_with(&a.name, options());
    let _two = Operator::start_with(&b.name, options());
    let spec = json!({ "userId": user_id });
    tokio::join!(a.apply("mine", spec.clone()), b.apply("mine", spec.clone()));
    let both_ready = Arc::new(AtomicBool::new(false));
    let winner = wait_until("one of the two to win", DEADLINE, || async {
        let (in_a, in_b) = tokio::join!(is_ready(&a, "mine"), is_ready(&b, "mine"));
        // A failed read is not "not Ready": it would name a winner that is not one.
        let (in_a, in_b) = (in_a?, in_b?);
        if in_a && in_b {
            both_ready.store(true, Ordering::Relaxed);
        }
        match (in_a, in_b) {
            (true, false) => Ok((&a, &b)),
            (false, true) => Ok((&b, &a)),
            _ => Err(format!("Ready: {} {in_a}, {} {in_b}", a.name, b.name)),
        }
    })
    .await;
    let (won, lost) = winner;
    lost.wait_reason("mine", "OwnedByAnotherResource").await;
    // Watch a little longer for the loser ever becoming Ready too.
    for _ in 0..15 {
        let (in_a, in_b) = tokio::join!(is_ready(&a, "mine"), is_ready(&b, "mine"));
        // A sample that could not be read is skipped: it shows neither.
        assert!(!(in_a == Ok(true) && in_b == Ok(true)), "both resources Ready for one user id");
        tokio::time::sleep(Duration::from_millis(200)).await; // sampling, not synchronisation
    }
    assert!(!both_ready.load(Ordering::Relaxed), "both resources were Ready at once");
    let key = won.key("mine-litellm-key").await;
    assert_eq!(keys_of(&proxy, &user_id).await, vec![key_hash(&key)], "exactly the winner's key");
    assert!(lost.secrets().get_opt("mine-litellm-key").await.unwrap().is_none(), "the loser got no key");
    // Deleting the loser leaves the user alone.
    lost.delete("mine").await;
    lost.wait_gone("mine").await;
    assert_eq!(proxy.key_works(&key).await.as_deref(), Some(user_id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn a_blocked_deletion_says_so_and_retain_lets_go() {
    let ns = TestNamespace::new("stuck").await;
    let proxy = Proxy::from_env();
    let mut relay = Relay::start(&proxy.url).await;
    let _operator =
        Operator::start_with(&ns.name, OperatorOptions { litellm_url: relay.url(), ..OperatorOptions::from_env() });
    ns.apply("gil", json!({})).await;
    ns.wait_condition("gil", "Ready", "True").await;
    relay.stop();
    ns.delete("gil").await;
    let gil = ns.wait_reason("gil", "DeletionBlocked").await;
    let ready = gil.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("deletionPolicy"), "{}", ready.message);
    ns.wait_event("gil", "Warning", "DeletionBlocked").await;
    // The proxy is gone for good: an admin lets go of the user.
    let patch = json!({ "spec": { "deletionPolicy": "Retain" } });
    ns.users().patch("gil", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("switch to Retain");
    ns.wait_gone("gil").await;
    relay.resume().await;
    assert!(proxy.user(&ns.user_id("gil")).await.is_some(), "retained, as asked");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn spend_over_the_budget_is_a_condition_and_a_warning() {
    let ns = TestNamespace::new("budget").await;
    let _operator = Operator::start(&ns.name);
    let proxy = Proxy::from_env();
    ns.apply("hal", json!({ "maxBudget": 2, "softBudget": 1 })).await;
    ns.wait_condition("hal", "Ready", "True").await;
    proxy.update(json!({ "user_id": ns.user_id("hal"), "spend": 2.5 })).await;
    let hal = ns.wait_condition("hal", "BudgetExceeded", "True").await;
    let status = hal.status.unwrap();
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"), "still Ready");
    assert_eq!(status.spend, Some(2.5));
    ns.wait_event("hal", "Warning", "BudgetExceeded").await;
    ns.wait_condition("hal", "SoftBudgetExceeded", "True").await;
    ns.wait_event("hal", "Warning", "SoftBudgetExceeded").await;
}

/// A client like a workload: it keeps calling the proxy with whatever key the Secret holds now.
struct Workload {
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    fn start(ns: &TestNamespace, secret: &str, proxy: &Proxy) -> Self {
        let (stop, refused, calls) = (Arc::default(), Arc::default(), Arc::default());
        let (secrets, secret, proxy) = (ns.secrets(), secret.to_owned(), proxy.clone());
        let (s, r, c): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::clone(&stop), Arc::clone(&refused), Arc::clone(&calls));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let key =
                    secrets.get_opt(&secret).await.ok().flatten().and_then(|s| {
                        s.data?.get("LITELLM_API_KEY").map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    });
                // A call that got no answer is neither accepted nor refused: it is not counted.
                if let Some(key) = key
                    && let Ok((status, _)) = proxy.try_call_as(&key, Method::GET, "/key/info", None).await
                {
                    c.fetch_add(1, Ordering::Relaxed);
                    if status == 401 {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await; // the workload's pace
            }
        });
        Workload { stop, refused, calls, task }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (self.refused.load(Ordering::Relaxed), self.calls.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn rotation_on_schedule_and_on_demand_without_a_single_401() {
    let ns = TestNamespace::new("rotation").await;
    // Rotation every 20 s, and on demand right after: far more often than the default policy allows (1h).
    let options = OperatorOptions::from_env().with_policy("keys:\n  minRotationInterval: 5s\n");
    let mut operator = Operator::start_with(&ns.name, options.clone());
    let proxy = Proxy::from_env();
    let spec = json!({ "key": { "rotation": { "every": "20s", "gracePeriod": "6s" } } });
    ns.apply("ida", spec.clone()).await;
    let ida = ns.wait_condition("ida", "Ready", "True").await;
    let user_id = ns.user_id("ida");
    let first = ns.key("ida-litellm-key").await;
    let status = ida.status.unwrap();
    assert!(status.key_issued_at.is_some() && status.next_rotation_at.is_some(), "{status:?}");
    let workload = Workload::start(&ns, "ida-litellm-key", &proxy);

    let second = wait_for("the scheduled rotation", Duration::from_secs(60), || async {
        let key = ns.key("ida-litellm-key").await;
        (key != first).then_some(key)
    })
    .await;
    assert_eq!(proxy.key_works(&second).await.as_deref(), Some(user_id.as_str()));
    ns.wait_event("ida", "Normal", "KeyRotated").await;

    // On demand, then the operator dies during the grace period: the old key's revocation is recorded.
    let annotate = json!({ "metadata": { "annotations": { "litellm-operator.io/rotate": "now" } } });
    ns.users().patch("ida", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    let third = wait_for("the rotation on demand", DEADLINE, || async {
        let key = ns.key("ida-litellm-key").await;
        (key != second && key != first).then_some(key)
    })
    .await;
    let retiring = ns.users().get("ida").await.unwrap().status.unwrap().retiring_keys;
    assert!(retiring.iter().any(|k| k.hash == key_hash(&second)), "the old key is recorded: {retiring:?}");
    operator.kill();
    operator = Operator::start_with(&ns.name, options);
    for (what, old) in [("first", &first), ("second", &second)] {
        let waiting = format!("the {what} key to be refused after its grace period");
        proxy.wait_key_refused(&waiting, KEY_CACHE_DEADLINE, old).await;
    }
    let (refused, calls) = workload.finish().await;
    assert!(calls > 20, "the workload kept calling ({calls} calls)");
    assert_eq!(refused, 0, "a workload following the Secret never got a 401 ({calls} calls)");
    // The third key, or one the schedule brought since, is the one that works.
    let current = ns.key("ida-litellm-key").await;
    assert_eq!(proxy.key_works(&current).await.as_deref(), Some(user_id.as_str()));
    assert!(
        current == third || ns.users().get("ida").await.unwrap().status.unwrap().key_hash == Some(key_hash(&current))
    );
    drop(operator);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn tenants_cannot_ask_for_more_than_the_default_policy_allows() {
    let ns = TestNamespace::new("tenant").await;
    let _operator = Operator::start(&ns.name);
    let proxy = Proxy::from_env();
    let other = format!("{}x.victim", ns.name);
    let attempts = [
        ("admin", json!({ "userRole": "proxy_admin" }), ns.user_id("admin")),
        ("viewer-admin", json!({ "userRole": "proxy_admin_viewer" }), ns.user_id("viewer-admin")),
        ("elsewhere", json!({ "userId": other }), other.clone()),
        ("adopter", json!({ "userId": "legacy-user@example.com", "adopt": true }), "legacy-user@example.com".into()),
    ];
    for (name, spec, user_id) in &attempts {
        // The chart's admission policy refuses admin roles at the door; the operator refuses everything else.
        if let Err(refused) = ns.try_apply(name, spec.clone()).await {
            assert!(refused.to_string().contains("not allowed"), "{name}: {refused}");
            assert!(proxy.user(user_id).await.is_none(), "{name}: nothing on the proxy");
            continue;
        }
        let refused = ns.wait_reason(name, "PolicyViolation").await;
        let ready = refused.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.contains("policy."), "{name}: the message names the rule: {}", ready.message);
        assert_eq!(ns.kstatus(name), "Failed", "{name}");
        assert!(ns.secrets().get_opt(&format!("{name}-litellm-key")).await.unwrap().is_none(), "{name}: no key");
        if *name != "adopter" {
            assert!(proxy.user(user_id).await.is_none(), "{name}: nothing on the proxy");
        }
    }
    ns.wait_event("elsewhere", "Warning", "PolicyViolation").await;
    // The chart's admission policy is what refused the admin roles: the API server answers at once.
    let refused = ns.try_apply("admin", json!({ "userRole": "proxy_admin" })).await.expect_err("refused at admission");
    assert!(refused.to_string().contains("is not allowed here"), "{refused}");
}

/// An emulator and the options for an operator that uses it.
async fn emulator(generation: litellm_emulator::Generation) -> (litellm_emulator::Emulator, OperatorOptions, Proxy) {
    let emulator =
        litellm_emulator::Emulator::start(litellm_emulator::EmulatorConfig::new(generation)).await.expect("emulator");
    let mut options = OperatorOptions::from_env();
    options.litellm_url = emulator.url();
    options.master_key = emulator.master_key().to_owned();
    let proxy = Proxy::new(&emulator.url(), emulator.master_key());
    (emulator, options, proxy)
}

/// Deterministically, the race the real proxies lose: the emulator holds `/user/new` until two calls have
/// arrived (or a few seconds passed) and then performs them together, answering 200 to both as 1.108.7 does.
/// Only one call ever arrives: the claim decides before the proxy is asked.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn emulator_held_user_new_calls_cannot_make_two_winners() {
    use litellm_emulator::{Fault, Generation};
    for generation in [Generation::Newer, Generation::Older] {
        let (emulator, options, proxy) = emulator(generation).await;
        emulator.set_fault(Fault::hold(2, Duration::from_secs(3)).on("/user/new"));
        let (a, b) = (TestNamespace::new("hold-a").await, TestNamespace::new("hold-b").await);
        let policy = "userIds: { scope: Any }\n";
        let _one = Operator::start_with(&a.name, options.clone().with_policy(policy));
        let _two = Operator::start_with(&b.name, options.clone().with_policy(policy));
        let user_id = format!("{}-held", a.name);
        let spec = json!({ "userId": user_id });
        tokio::join!(a.apply("mine", spec.clone()), b.apply("mine", spec.clone()));
        let (won, lost) = wait_until("a winner", DEADLINE, || async {
            let (in_a, in_b) = tokio::join!(is_ready(&a, "mine"), is_ready(&b, "mine"));
            // A failed read is not "not Ready": it would name a winner that is not one.
            match (in_a?, in_b?) {
                (true, false) => Ok((&a, &b)),
                (false, true) => Ok((&b, &a)),
                (true, true) => panic!("{generation:?}: both resources Ready for one user id"),
                (false, false) => Err(String::from("neither is Ready")),
            }
        })
        .await;
        lost.wait_reason("mine", "OwnedByAnotherResource").await;
        assert_eq!(emulator.request_counts().get("/user/new").copied(), Some(1), "{generation:?}: one /user/new");
        let key = won.key("mine-litellm-key").await;
        assert_eq!(keys_of(&proxy, &user_id).await, vec![key_hash(&key)], "{generation:?}: only the winner's key");
    }
}

/// A `/user/list` that fails on every page does not fail a single resync: resyncs read users one by one,
/// still repair drift, and nothing leaves Ready.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn emulator_failing_list_pages_do_not_fail_resyncs() {
    use litellm_emulator::{Fault, FaultKind, Generation};
    let (emulator, options, proxy) = emulator(Generation::Newer).await;
    let ns = TestNamespace::new("pages").await;
    let _operator = Operator::start_with(&ns.name, options);
    for i in 0..6 {
        ns.apply(&format!("p{i}"), json!({ "maxBudget": i })).await;
    }
    for i in 0..6 {
        ns.wait_condition(&format!("p{i}"), "Ready", "True").await;
    }
    emulator.set_fault(Fault::new(FaultKind::Status(500)).on("/user/list").always());
    let lists = || emulator.request_counts().get("/user/list").copied().unwrap_or_default();
    // The drift comes after a listing has failed, so that it is the failing directory the repair gets past,
    // not one last good snapshot.
    let before = lists();
    wait_for("a listing to be tried and fail", DEADLINE, || async { (lists() > before).then_some(()) }).await;
    proxy.update(json!({ "user_id": ns.user_id("p3"), "max_budget": 999 })).await;
    proxy.wait_max_budget("the drift to be repaired without /user/list", DEADLINE, &ns.user_id("p3"), 3.0).await;
    for i in 0..6 {
        let user = ns.users().get(&format!("p{i}")).await.unwrap();
        let ready = user.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Synced"), "p{i} stayed Ready");
    }
}
