//! The tenant suite: everything a hostile tenant tries from a namespace where it may only write LiteLLMUsers and
//! their Secrets, with a ServiceAccount token of exactly that. Every attempt is refused — by the API server's
//! admission policy or by the operator as `PolicyViolation` — and the proxy's users and keys stay what they were.

use std::process::Command;

use k8s_openapi::ByteString;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use litellm_operator::{crd::LiteLLMUser, litellm::key_hash};
use serde_json::{Value, json};

use crate::{
    proxies::TestProxy,
    support::{DEADLINE, Operator, Proxy, TestNamespace, env, wait_until},
};

/// A client acting as a tenant of `ns`: a ServiceAccount allowed LiteLLMUsers and Secrets there, nothing else.
async fn tenant_client(ns: &TestNamespace) -> Client {
    let apply = |manifest: Value| {
        let mut child = Command::new("kubectl")
            .args(["apply", "-n", &ns.name, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), manifest.to_string().as_bytes())
            .expect("feed");
        assert!(child.wait().expect("kubectl").success(), "kubectl apply {manifest}");
    };
    apply(json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "tenant" } }));
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "tenant" },
        "rules": [
            { "apiGroups": ["litellm-operator.io"], "resources": ["litellmusers"],
              "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "update", "patch"] },
        ],
    }));
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": { "name": "tenant" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant" },
        "subjects": [{ "kind": "ServiceAccount", "name": "tenant", "namespace": ns.name }],
    }));
    let token = Command::new("kubectl").args(["create", "token", "tenant", "-n", &ns.name]).output().expect("token");
    assert!(token.status.success(), "kubectl create token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
    let run = |args: &[&str]| {
        let out = Command::new("kubectl").args(args).output().expect("kubectl");
        assert!(out.status.success(), "kubectl {:?}", &args[..2]);
        out.stdout
    };
    std::fs::write(&kubeconfig, run(&["config", "view", "--minify", "--raw", "--flatten"])).expect("kubeconfig");
    let path = kubeconfig.display().to_string();
    run(&["--kubeconfig", &path, "config", "set-credentials", "tenant", &format!("--token={token}")]);
    run(&["--kubeconfig", &path, "config", "set-context", "--current", "--user=tenant"]);
    let read = Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
    // It holds the admin's credentials as well as the tenant's token: gone as soon as it is read.
    let _ = std::fs::remove_file(&kubeconfig);
    let config =
        kube::Config::from_custom_kubeconfig(read, &KubeConfigOptions::default()).await.expect("tenant config");
    Client::try_from(config).expect("tenant client")
}

/// A LiteLLMUser manifest as a tenant applies it.
fn with_kind(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser", "metadata": { "name": name }, "spec": spec })
}

/// The message of a resource's Ready condition.
fn ready_message(user: &LiteLLMUser) -> Option<String> {
    let conditions = user.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone())
}

/// A team's members on the proxy, as a sorted list of user ids in the state's shape (no keys).
async fn team_members(proxy: &Proxy, team_id: &str) -> Option<(Value, Vec<String>)> {
    let path = format!("/team/info?team_id={}", crate::support::urlencode(team_id));
    let (status, body) = proxy.call(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "team/info {team_id}: {body}");
    let info = &body["team_info"];
    let mut members: Vec<String> = info["members_with_roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["user_id"].as_str().map(str::to_owned))
        .collect();
    members.sort();
    Some((json!({ "models": info["models"], "max_budget": info["max_budget"] }), members))
}

/// A user's record and keys on the proxy, to compare before and after.
async fn proxy_state(proxy: &Proxy, user_id: &str) -> Option<(Value, Vec<String>)> {
    proxy.user(user_id).await.map(|(mut info, mut keys)| {
        // Spend and timestamps move by themselves.
        for field in ["spend", "updated_at", "model_spend", "budget_reset_at"] {
            info.as_object_mut().map(|o| o.remove(field));
        }
        keys.sort();
        (info, keys)
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn tenants_with_namespaced_rights_get_nothing_more() {
    let (victim_ns, ns) = (TestNamespace::new("victim").await, TestNamespace::new("hostile").await);
    let proxy = Proxy::from_env();
    let (url, master_key) = (env("LITELLM_URL"), env("LITELLM_MASTER_KEY"));
    let capped_policy =
        json!({ "maxBudget": 10, "allowedModels": ["m1"], "userEmailDomains": [format!("{}.example", ns.name)] });
    let capped = TestProxy::create(&ns, "capped", &url, &master_key, capped_policy).await;
    let closed =
        TestProxy::create(&ns, "closed", &url, &master_key, json!({ "namespaces": { "names": ["nobody"] } })).await;
    let _victims = Operator::start(&victim_ns.name);
    let operator = Operator::start(&ns.name);
    capped.wait_ready().await;
    closed.wait_ready().await;

    // Another tenant, and a user made outside the operator.
    victim_ns.apply("vera", json!({ "maxBudget": 5 })).await;
    victim_ns.wait_condition("vera", "Ready", "True").await;
    let vera_id = victim_ns.user_id("vera");
    let vera_key = victim_ns.key("vera-litellm-key").await;
    let legacy = format!("{}.legacy", victim_ns.name);
    // Its address is in the domain the hostile namespace may use.
    let cfo = format!("cfo@{}.example", ns.name);
    let (status, body) = proxy
        .call(
            reqwest::Method::POST,
            "/user/new",
            Some(json!({ "user_id": legacy, "user_email": cfo, "max_budget": 1, "auto_create_key": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The platform's team, which lets its members mint keys for a pricey model and spend its budget.
    let platform_team = format!("{}.platform", victim_ns.name);
    proxy.create_team(&platform_team).await;
    let (status, body) = proxy
        .call(
            reqwest::Method::POST,
            "/team/member_add",
            Some(json!({ "team_id": platform_team, "member": { "role": "user", "user_id": vera_id } })),
        )
        .await;
    assert!(status == 200 || status == 400, "{body}");
    // A proxy admin under the tenant's own prefix, made by hand on the proxy.
    let boss = ns.user_id("boss");
    let (status, body) = proxy
        .call(
            reqwest::Method::POST,
            "/user/new",
            Some(json!({ "user_id": boss, "user_role": "proxy_admin", "auto_create_key": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = [
        proxy_state(&proxy, &vera_id).await,
        proxy_state(&proxy, &legacy).await,
        proxy_state(&proxy, &boss).await,
        team_members(&proxy, &platform_team).await,
    ];

    let tenant = tenant_client(&ns).await;
    let users: Api<LiteLLMUser> = Api::namespaced(tenant.clone(), &ns.name);
    let attempts = [
        ("admin", json!({ "userRole": "proxy_admin" })),
        ("neighbour", json!({ "userId": vera_id })),
        ("taker", json!({ "userId": legacy, "adopt": true })),
        ("rich", json!({ "proxyRef": { "name": capped.name }, "maxBudget": 50, "models": ["m1"] })),
        ("greedy", json!({ "proxyRef": { "name": capped.name }, "maxBudget": 5, "models": ["m2"] })),
        ("unlimited", json!({ "proxyRef": { "name": capped.name }, "models": ["m1"] })),
        ("gatecrasher", json!({ "proxyRef": { "name": closed.name } })),
        ("teamster", json!({ "teams": [platform_team] })),
        (
            "cycler",
            json!({ "proxyRef": { "name": capped.name }, "maxBudget": 5, "models": ["m1"], "budgetDuration": "1s" }),
        ),
        (
            "squatter",
            json!({ "proxyRef": { "name": capped.name }, "maxBudget": 5, "models": ["m1"], "userEmail": "ceo@corp.example" }),
        ),
        ("librarian", json!({ "objectPermission": { "vectorStores": ["hr-records"], "mcpServers": ["github"] } })),
        ("mailer", json!({ "sendInviteEmail": true, "userEmail": "someone@corp.example" })),
        ("impostor", json!({ "ssoUserId": "00u-the-ceo" })),
        ("rotator", json!({ "key": { "rotation": { "every": "1s" } } })),
        ("short-lived", json!({ "key": { "duration": "1m" } })),
        ("lingerer", json!({ "key": { "rotation": { "gracePeriod": "7d" } } })),
        ("boss", json!({ "adopt": true })),
        (
            "aliaser",
            json!({ "proxyRef": { "name": capped.name }, "maxBudget": 5, "models": ["m1"], "aliases": { "m1x": "pricey" } }),
        ),
    ];
    for (name, spec) in &attempts {
        match users
            .patch(name, &PatchParams::apply("tenant").force(), &Patch::Apply(&with_kind(name, spec.clone())))
            .await
        {
            Err(refused) => assert!(refused.to_string().contains("not allowed"), "{name}: {refused}"),
            Ok(_) => {
                let refused = ns.wait_reason(name, "PolicyViolation").await;
                let message = refused.status.unwrap().conditions[0].message.clone();
                assert!(message.contains("policy."), "{name}: {message}");
            }
        }
        if *name != "boss" {
            assert!(proxy.user(&ns.user_id(name)).await.is_none(), "{name}: nothing created on the proxy");
        }
    }
    assert!(ns.secrets().get_opt("boss-litellm-key").await.expect("read").is_none(), "no key for an admin");
    // A megabyte the CRD cannot reach (nested in a metadata value) is refused, and not kept by the operator.
    ns.apply("hoarder", json!({ "metadata": { "notes": { "deep": "x".repeat(64 * 1024) } } })).await;
    let hoarder = ns.wait_reason("hoarder", "InvalidSpec").await;
    let message = ready_message(&hoarder);
    assert!(message.as_deref().is_some_and(|m| m.starts_with("spec.metadata: 65 KiB")), "{message:?}");
    assert!(proxy.user(&ns.user_id("hoarder")).await.is_none(), "hoarder: nothing created on the proxy");
    // An address another user holds: the tenant is told only that the proxy refused it; the platform, in the
    // operator's log, also who holds it.
    let copycat = json!({
        "proxyRef": { "name": capped.name }, "maxBudget": 5, "models": ["m1"], "userEmail": cfo.to_uppercase(),
    });
    users
        .patch("copycat", &PatchParams::apply("tenant").force(), &Patch::Apply(&with_kind("copycat", copycat)))
        .await
        .expect("admitted");
    let refused = ns.wait_reason("copycat", "LiteLLMRejected").await;
    let message = ready_message(&refused).unwrap_or_default();
    assert!(message.contains("already exists") && !message.contains(&legacy), "copycat: {message}");
    wait_until("the operator's log to name who holds the address", DEADLINE, || async {
        let log = operator.log_text();
        let line = log.lines().find(|line| line.contains("spec.userEmail is already another user's"));
        match line {
            Some(line) if line.contains(&legacy) => Ok(()),
            Some(line) => Err(format!("the line does not name {legacy}: {line}")),
            None => Err("no such line yet".to_owned()),
        }
    })
    .await;
    assert!(proxy.user(&ns.user_id("copycat")).await.is_none(), "copycat: nothing created on the proxy");
    // The operator's own proxy is not reachable by name past the LiteLLMProxies the platform offers.
    ns.apply("by-name", json!({ "proxyRef": { "name": "default" } })).await;
    ns.wait_reason("by-name", "ProxyUnavailable").await;
    assert!(proxy.user(&ns.user_id("by-name")).await.is_none(), "by-name: nothing created on the proxy");

    // The tenant's own user is fine; planting the neighbour's key in its Secret gets it nothing.
    let own: LiteLLMUser = serde_json::from_value(json!({
        "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser", "metadata": { "name": "own" }, "spec": {},
    }))
    .unwrap();
    users.create(&PostParams::default(), &own).await.expect("a tenant may create its own user");
    ns.wait_condition("own", "Ready", "True").await;
    let own_key = ns.key("own-litellm-key").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(tenant, &ns.name);
    let patch = json!({ "data": { "LITELLM_API_KEY": ByteString(vera_key.as_bytes().to_vec()) } });
    secrets
        .patch("own-litellm-key", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("tenant writes its Secret");
    // The planted key is neither registered to the tenant's user nor revoked, and the Secret's new key waits for
    // the least rotation interval: overwriting the Secret in a loop mints nothing.
    let deferred = ns.wait_reason("own", "KeyReplacementDeferred").await;
    let message = ready_message(&deferred);
    assert!(message.as_deref().is_some_and(|m| m.contains("did not hold a key the operator issued")), "{message:?}");
    let own_keys = proxy.user(&ns.user_id("own")).await.map(|(_, keys)| keys);
    assert_eq!(own_keys, Some(vec![key_hash(&own_key)]), "the tenant's user has only the key it was issued");
    assert_eq!(proxy.key_works(&vera_key).await.as_deref(), Some(vera_id.as_str()), "vera's key is still vera's");
    let after = [
        proxy_state(&proxy, &vera_id).await,
        proxy_state(&proxy, &legacy).await,
        proxy_state(&proxy, &boss).await,
        team_members(&proxy, &platform_team).await,
    ];
    assert_eq!(before, after, "the proxy holds exactly what it held before for the other tenant's users and team");
    assert_eq!(after[0].as_ref().map(|(_, keys)| keys.clone()), Some(vec![key_hash(&vera_key)]));
    assert_eq!(after[2].as_ref().map(|(_, keys)| keys.len()), Some(0), "the admin got no key");
    // Still waiting: the planted key's Secret is never taken for one holding the user's key.
    let own = ns.users().get("own").await.expect("read own");
    let ready = own.status.as_ref().and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"));
    assert_eq!(ready.map(|c| c.reason.as_str()), Some("KeyReplacementDeferred"));
}

/// The manifests that once stopped the operator for every tenant (a rotation or key lifetime past the year
/// 9999). The API server refuses them by name; and when one was stored before the CRD refused it (an older
/// CRD, here put back for a moment), the operator refuses that resource alone as `InvalidSpec` and goes on
/// serving its neighbour. Runs alone (`serial_`): it changes the CRD that every test uses.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn serial_tenant_crash_manifests_stop_nothing() {
    let ns = TestNamespace::new("crash").await;
    let proxy = Proxy::from_env();
    let mut operator = Operator::start(&ns.name);
    let tenant = tenant_client(&ns).await;
    let users: Api<LiteLLMUser> = Api::namespaced(tenant, &ns.name);
    let crash = [
        ("forever", json!({ "key": { "rotation": { "every": "999999999w" } } }), "spec.key.rotation.every"),
        ("eternal", json!({ "key": { "duration": "9999999d" } }), "spec.key.duration"),
        (
            "lingering",
            json!({ "key": { "rotation": { "gracePeriod": "999999999w" } } }),
            "spec.key.rotation.gracePeriod",
        ),
    ];
    let create = |name: &str, spec: &Value| {
        let object = json!({ "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser",
            "metadata": { "name": name }, "spec": spec });
        let users = users.clone();
        async move { users.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await }
    };
    for (name, spec, field) in &crash {
        let Err(kube::Error::Api(refused)) = create(name, spec).await else { panic!("{name} was admitted") };
        assert_eq!(refused.code, 422, "{name}");
        assert!(refused.message.contains(field) && refused.message.contains("3650d"), "{name}: {}", refused.message);
    }

    // Stored under an older CRD, without the bound.
    {
        let _older = OlderCrd::install().await;
        for (name, spec, _) in &crash {
            wait_until(&format!("{name} to be admitted by the older CRD"), DEADLINE, || async {
                match create(name, spec).await {
                    Ok(_) => Ok(()),
                    // An earlier try was admitted, though its answer was lost.
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(err) => Err(err.to_string()),
                }
            })
            .await;
        }
    }
    let (_, late_spec, late_field) = &crash[0];
    wait_until("the CRD to refuse the crash manifests again", DEADLINE, || async {
        // Only the API server's refusal counts, not a request that failed on the way.
        match create("late", late_spec).await {
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(late_field) => Ok(()),
            Ok(_) => Err(String::from("admitted")),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;

    ns.apply("neighbour", json!({})).await;
    ns.wait_condition("neighbour", "Ready", "True").await;
    for (name, _, field) in &crash {
        let refused = ns.wait_reason(name, "InvalidSpec").await;
        let message = ready_message(&refused);
        assert!(message.as_deref().is_some_and(|m| m.starts_with(field)), "{name}: {message:?}");
        assert!(proxy.user(&ns.user_id(name)).await.is_none(), "{name}: nothing created on the proxy");
    }
    assert!(operator.running(), "the operator is still running");
    let (_, metrics) = operator.http_get("/metrics").await.expect("metrics served");
    assert!(!metrics.contains("litellm_operator_reconcile_panics_total{"), "no reconcile panicked");
    assert!(!operator.log_text().contains("panicked"), "no panic logged");
}

/// The LiteLLMUser CRD without the rules that bound durations, as CRDs were before they had them; the current
/// CRD is put back when this is dropped (also when the test fails).
struct OlderCrd {
    saved: std::path::PathBuf,
}

impl OlderCrd {
    const NAME: &str = "litellmusers.litellm-operator.io";

    async fn install() -> Self {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let client = Client::try_default().await.expect("cluster");
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let current = crds.get(Self::NAME).await.expect("the CRD");
        let mut saved = serde_json::to_value(&current).expect("CRD as JSON");
        if let Some(metadata) = saved["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        let path = std::env::temp_dir().join(format!("litellmuser-crd-{}.json", std::process::id()));
        std::fs::write(&path, saved.to_string()).expect("save the CRD");
        let mut older = serde_json::to_value(&current).expect("CRD as JSON");
        strip_duration_rules(&mut older);
        crds.replace(Self::NAME, &Default::default(), &serde_json::from_value(older).expect("CRD"))
            .await
            .expect("install the older CRD");
        OlderCrd { saved: path }
    }
}

fn strip_duration_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let bound = |rules: &Value| rules.to_string().contains("315360000");
            if map.get("x-kubernetes-validations").is_some_and(bound) {
                map.remove("x-kubernetes-validations");
            }
            map.values_mut().for_each(strip_duration_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_duration_rules),
        _ => {}
    }
}

impl Drop for OlderCrd {
    fn drop(&mut self) {
        let restored = Command::new("kubectl").args(["replace", "-f"]).arg(&self.saved).output();
        // Not a panic while the test is failing already: that would abort the whole suite.
        if !restored.is_ok_and(|out| out.status.success()) {
            eprintln!("could not put the current LiteLLMUser CRD back from {}", self.saved.display());
        }
    }
}

/// A namespace quota on a proxy: the newest resources beyond it are refused, whatever order the operator looks
/// at them in, and one becomes Ready once an older one is deleted.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn tenants_namespace_quota_refuses_the_newest() {
    let ns = TestNamespace::new("quota").await;
    let proxy = Proxy::from_env();
    let (url, master_key) = (env("LITELLM_URL"), env("LITELLM_MASTER_KEY"));
    let quota = json!({ "namespaceQuota": { "maxUsers": 2, "maxBudget": 10 } });
    let quoted = TestProxy::create(&ns, "quota", &url, &master_key, quota).await;
    let _operator = Operator::start(&ns.name);
    quoted.wait_ready().await;
    let on = |budget: f64| json!({ "proxyRef": { "name": quoted.name }, "maxBudget": budget });
    ns.apply("first", on(4.0)).await;
    ns.apply("second", on(4.0)).await;
    ns.wait_condition("first", "Ready", "True").await;
    ns.wait_condition("second", "Ready", "True").await;
    ns.apply("third", on(1.0)).await;
    let refused = ns.wait_reason("third", "PolicyViolation").await;
    let message = ready_message(&refused);
    assert!(message.as_deref().is_some_and(|m| m.contains("namespaceQuota.maxUsers")), "{message:?}");
    assert!(proxy.user(&ns.user_id("third")).await.is_none(), "nothing created for the third");
    // Created within the same second as the third, perhaps: resources of one second are ordered by name, and
    // this one's sorts after it, so it is the newer either way.
    ns.apply("yet-another", on(100.0)).await;
    ns.wait_reason("yet-another", "PolicyViolation").await;
    // One older resource gone: the third fits, by count and by budget (4 + 1 of 10).
    ns.delete("first").await;
    ns.wait_gone("first").await;
    ns.wait_condition("third", "Ready", "True").await;
}

/// Eight rotation requests in a row, or the Secret deleted five times, mint no key at all within the least
/// rotation interval (1h by default); and a policy tightened later stops a user where it is: reported, not
/// changed, its key still working.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn tenants_cannot_churn_keys_and_a_tightened_policy_freezes_users() {
    let ns = TestNamespace::new("tighten").await;
    let proxy = Proxy::from_env();
    let (url, master_key) = (env("LITELLM_URL"), env("LITELLM_MASTER_KEY"));
    let generous = TestProxy::create(&ns, "generous", &url, &master_key, json!({ "maxBudget": 50 })).await;
    let _operator = Operator::start(&ns.name);
    generous.wait_ready().await;
    ns.apply("spender", json!({ "proxyRef": { "name": generous.name }, "maxBudget": 40 })).await;
    ns.wait_condition("spender", "Ready", "True").await;
    let key = ns.key("spender-litellm-key").await;
    let user_id = ns.user_id("spender");

    for n in 0..8 {
        let annotate = json!({ "metadata": { "annotations": { "litellm-operator.io/rotate": format!("now-{n}") } } });
        ns.users().patch("spender", &PatchParams::default(), &Patch::Merge(&annotate)).await.expect("annotate");
    }
    let waiting = wait_until("the rotation request to be deferred", DEADLINE, || async {
        let user = ns.users().get("spender").await.map_err(|err| err.to_string())?;
        let status = user.status.unwrap_or_default();
        match (status.next_rotation_at, status.observed_generation == user.metadata.generation) {
            (Some(at), true) => Ok(at),
            (at, _) => Err(format!("nextRotationAt {at:?}")),
        }
    })
    .await;
    let issued: k8s_openapi::jiff::Timestamp =
        ns.users().get("spender").await.unwrap().status.unwrap().key_issued_at.unwrap().parse().unwrap();
    let waits = waiting.parse::<k8s_openapi::jiff::Timestamp>().unwrap().duration_since(issued).as_secs();
    assert_eq!(waits, 3600, "the request waits for the least rotation interval after the key's issue");
    assert_eq!(ns.key("spender-litellm-key").await, key, "the key is unchanged");
    let (_, keys) = proxy.user(&user_id).await.expect("the user");
    assert_eq!(keys, vec![key_hash(&key)], "no key was minted");
    // Deleting the Secret in a loop mints no key either: the new key waits for the same interval, and the
    // current one stays the user's only key, working.
    for _ in 0..5 {
        let _gone_already = ns.secrets().delete("spender-litellm-key", &Default::default()).await;
    }
    let deferred = ns.wait_reason("spender", "KeyReplacementDeferred").await;
    let message = ready_message(&deferred);
    assert!(message.as_deref().is_some_and(|m| m.contains("minRotationInterval")), "{message:?}");
    let (_, keys) = proxy.user(&user_id).await.expect("the user");
    assert_eq!(keys, vec![key_hash(&key)], "no key was minted for the deleted Secret");
    assert_eq!(proxy.key_works(&key).await.as_deref(), Some(user_id.as_str()), "the current key keeps working");

    // The platform lowers the ceiling below what the user has.
    let before = proxy_state(&proxy, &user_id).await;
    let proxies: Api<litellm_operator::crd::LiteLLMProxy> = Api::all(ns.client.clone());
    let patch = json!({ "spec": { "policy": { "maxBudget": 10 } } });
    proxies.patch(&generous.name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("tighten the policy");
    let refused = ns.wait_reason("spender", "PolicyViolation").await;
    let message = ready_message(&refused);
    assert!(message.as_deref().is_some_and(|m| m.contains("maxBudget 40 is above the ceiling of 10")), "{message:?}");
    ns.wait_event("spender", "Warning", "PolicyViolation").await;
    assert_eq!(proxy.key_works(&key).await.as_deref(), Some(user_id.as_str()), "the key keeps working");
    assert_eq!(proxy_state(&proxy, &user_id).await, before, "the user is not changed");
}
