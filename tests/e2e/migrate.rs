//! Migrating an existing proxy: users and keys made through the proxy's own API, exported with
//! `litellm-operator export` and applied with kubectl, are adopted without a single change to the users, and
//! every key they had keeps working.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

use kube::api::{Patch, PatchParams};
use litellm_operator::crd::{DeletionPolicy, LiteLLMUser, UnmanagedKeys};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{DEADLINE, Operator, OperatorOptions, Proxy, TestNamespace, env, wait_until};

/// A user made on the proxy before the operator, and the keys made for it.
struct Seeded {
    id: String,
    keys: Vec<String>,
}

async fn seed(proxy: &Proxy, id: &str, fields: Value, keys: usize) -> Seeded {
    let mut body = fields;
    body["user_id"] = json!(id);
    body["auto_create_key"] = json!(false);
    let (status, answer) = proxy.call(Method::POST, "/user/new", Some(body)).await;
    assert_eq!(status, 200, "user/new {id}: {answer}");
    let mut made = Vec::new();
    for n in 0..keys {
        let body = json!({ "user_id": id, "key_alias": format!("{id}-key-{n}") });
        let (status, answer) = proxy.call(Method::POST, "/key/generate", Some(body)).await;
        assert_eq!(status, 200, "key/generate {id}: {answer}");
        made.push(answer["key"].as_str().expect("the new key").to_owned());
    }
    Seeded { id: id.to_owned(), keys: made }
}

/// The operator's count of reconciles that ended without an error, from its `/metrics`.
async fn reconciles_ok(operator: &Operator) -> Result<u64, String> {
    let (status, metrics) = operator.try_http_get("/metrics").await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let value = metrics.lines().find_map(|line| line.strip_prefix("litellm_operator_reconciles_total{result=\"ok\"} "));
    // Counters may be written as floats.
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| String::from("no count of ok reconciles yet"))
}

/// The user's `updated_at` on the proxy, which every write to the user's row moves (and nothing else here:
/// these users spend nothing).
async fn updated_at(proxy: &Proxy, id: &str) -> String {
    let (info, _) = proxy.user(id).await.unwrap_or_else(|| panic!("{id} on the proxy"));
    info["updated_at"].as_str().unwrap_or_else(|| panic!("{id} has no updated_at: {info}")).to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn migrate_export_and_apply_adopts_without_touching_users_or_keys() {
    let ns = TestNamespace::new("export").await;
    let proxy = Proxy::from_env();
    let team = format!("{}-team", ns.name);
    proxy.create_team(&team).await;
    let own = |name: &str| format!("{}.{name}", ns.name);
    // An id outside the namespace's own ids, as most users of an existing proxy have.
    let outsider = format!("erin.{}@example.com", ns.name);
    let seeded = [
        seed(
            &proxy,
            &own("carol"),
            json!({
                "user_alias": "Carol", "user_email": format!("carol@{}.example.com", ns.name),
                "user_role": "internal_user", "max_budget": 25, "budget_duration": "30d", "tpm_limit": 1000,
                "rpm_limit": 10, "models": ["gpt-4o", "gpt-4o-mini"], "metadata": { "cost-center": "4711" },
                "teams": [team],
            }),
            2,
        )
        .await,
        seed(
            &proxy,
            &own("dave"),
            json!({
                "user_role": "internal_user_viewer", "max_parallel_requests": 3, "allowed_cache_controls": ["no-cache"],
                "metadata": { "origin": "script", "model_rpm_limit": { "gpt-4o": 5 } },
                "sso_user_id": format!("sso-{}-dave", ns.name),
            }),
            1,
        )
        .await,
        seed(&proxy, &outsider, json!({ "user_alias": "Erin", "max_budget": 3.5 }), 1).await,
        seed(&proxy, &own("frank"), json!({}), 0).await,
    ];
    let mut before = BTreeMap::new();
    for user in &seeded {
        before.insert(user.id.clone(), updated_at(&proxy, &user.id).await);
    }

    // Export, as a person would: the proxy from the environment, the manifests on stdout.
    let master_key = env("LITELLM_MASTER_KEY");
    let out = Command::new(env("OPERATOR_BIN"))
        .args(["export", "--namespace", &ns.name, "--user-id-prefix", &format!("{}.", ns.name)])
        .args(["--user-id", &outsider])
        .env("LITELLM_URL", env("LITELLM_URL"))
        .env("LITELLM_MASTER_KEY", &master_key)
        .env_remove("LITELLM_MASTER_KEY_FILE")
        .output()
        .expect("run litellm-operator export");
    let (yaml, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "export failed: {stderr}");
    for secret in seeded.iter().flat_map(|s| s.keys.iter()).chain([&master_key]) {
        assert!(!yaml.contains(secret.as_str()) && !stderr.contains(secret.as_str()), "a key in the export's output");
    }
    assert!(yaml.starts_with("# LiteLLMUser manifests exported"), "{yaml}");
    assert!(yaml.contains("userIds.adoptionNamespaces"), "the header names what the policy must allow: {yaml}");
    let exported: Vec<LiteLLMUser> =
        yaml.split("---\n").skip(1).map(|doc| serde_saphyr::from_str(doc).expect("a LiteLLMUser")).collect();
    assert_eq!(exported.len(), seeded.len(), "{yaml}");
    let mut names = BTreeMap::new();
    for user in &exported {
        let id = user.spec.user_id.clone().expect("userId set");
        assert!(user.spec.adopt && user.spec.key.unmanaged_keys == Some(UnmanagedKeys::Keep), "{id}");
        assert_eq!(user.spec.deletion_policy, DeletionPolicy::Retain, "{id}");
        names.insert(id, user.metadata.name.clone().expect("a name"));
    }
    assert_eq!(names[&own("carol")], "carol");
    let carol = exported.iter().find(|u| u.spec.user_id.as_deref() == Some(own("carol").as_str())).expect("carol");
    assert_eq!(carol.spec.max_budget, Some(25.0));
    assert_eq!(carol.spec.user_email, Some(format!("carol@{}.example.com", ns.name)));
    assert_eq!(carol.spec.metadata.as_ref().map(|m| m["cost-center"].clone()), Some(json!("4711")));

    // Apply it, with the policy the header asks for.
    // Carol's team is not under the namespace's prefix and Dave has an SSO id: the platform allows both here.
    let policy = format!(
        "userIds:\n  scope: Any\n  adoptionNamespaces: [{}]\nteams:\n  allowed: [{team}]\nallowSsoUserId: true\n",
        ns.name
    );
    let operator = Operator::start_with(&ns.name, OperatorOptions::from_env().with_policy(&policy));
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    apply.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("feed kubectl");
    let applied = apply.wait_with_output().expect("kubectl apply");
    assert!(applied.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&applied.stderr));

    for user in &seeded {
        let name = &names[&user.id];
        let resource = ns.wait_condition(name, "Ready", "True").await;
        assert_eq!(resource.status.and_then(|s| s.user_id).as_deref(), Some(user.id.as_str()));
        let key = ns.key(&format!("{name}-litellm-key")).await;
        assert_eq!(proxy.key_works(&key).await.as_deref(), Some(user.id.as_str()), "{name}: the operator's key");
    }
    // Several resyncs (every 3 s) go by: adopted users stay untouched, not only on the first look. Counted in
    // the operator's own reconciles, three for each user, not by the clock: on a busy machine fewer resyncs
    // would fit in a fixed time, and the test would pass having looked less.
    let before_resyncs = wait_until("the operator's count of reconciles", DEADLINE, || reconciles_ok(&operator)).await;
    let resyncs = 3 * seeded.len() as u64;
    wait_until(&format!("{resyncs} more reconciles"), DEADLINE, || async {
        let since = reconciles_ok(&operator).await?.saturating_sub(before_resyncs);
        if since >= resyncs { Ok(()) } else { Err(format!("{since} reconciles so far")) }
    })
    .await;
    for user in &seeded {
        assert_eq!(updated_at(&proxy, &user.id).await, before[&user.id], "{}: the user was written to", user.id);
        for key in &user.keys {
            assert_eq!(proxy.key_works(key).await.as_deref(), Some(user.id.as_str()), "{}: a key it had", user.id);
        }
        let (_, hashes) = proxy.user(&user.id).await.expect("the user");
        assert_eq!(hashes.len(), user.keys.len() + 1, "{}: its keys and the operator's", user.id);
    }
    let (_, metrics) = operator.http_get("/metrics").await.expect("metrics");
    assert!(!metrics.contains("endpoint=\"/user/update\""), "the operator called /user/update:\n{metrics}");

    // Revoke: the keys carol came with go, the operator's stays.
    let patch = json!({ "spec": { "key": { "unmanagedKeys": "Revoke" } } });
    ns.users().patch("carol", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch carol");
    let carol_id = own("carol");
    let hashes = wait_until("carol's old keys to be revoked", DEADLINE, || async {
        let (_, hashes) = proxy.try_user(&carol_id).await?.ok_or("no such user")?;
        if hashes.len() == 1 { Ok(hashes) } else { Err(format!("{} keys", hashes.len())) }
    })
    .await;
    let status = ns.wait_condition("carol", "Ready", "True").await.status.expect("status");
    assert_eq!(status.key_hash.as_ref(), hashes.first(), "the operator's key is the one left");

    // Retain: deleting the resources leaves the users and their keys on the proxy.
    for user in &seeded {
        ns.delete(&names[&user.id]).await;
    }
    for user in &seeded {
        ns.wait_gone(&names[&user.id]).await;
        assert!(proxy.user(&user.id).await.is_some(), "{}: retained", user.id);
    }
    let dave = &seeded[1];
    assert_eq!(proxy.key_works(&dave.keys[0]).await.as_deref(), Some(dave.id.as_str()));
    drop(operator);
    // Best effort: the test has passed, and a failed cleanup is not a failure of the operator.
    let ids: Vec<&str> = seeded.iter().map(|s| s.id.as_str()).collect();
    let _ = proxy.try_call(Method::POST, "/user/delete", Some(json!({ "user_ids": ids }))).await;
}
