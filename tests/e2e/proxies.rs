//! One operator, many proxies: LiteLLMProxy resources for both real proxies (1.108.7 and 1.80.5) at once, users
//! on each, a proxyRef change, an outage of one proxy, and a master key rotated without a restart. These tests
//! need both proxies up (`E2E_PROXIES`), so hack/e2e.sh runs them once, after the per-version suites.

use std::time::Duration;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use litellm_operator::crd::LiteLLMProxy;
use serde_json::{Value, json};

use crate::support::{
    DEADLINE, Operator, Proxy, Relay, TestNamespace, TlsTerminator, describe_conditions, env, wait_until,
};

/// The two real proxies hack/e2e.sh started: `url=key` pairs, space-separated.
fn real_proxies() -> Vec<(String, String)> {
    env("E2E_PROXIES")
        .split_whitespace()
        .filter_map(|pair| pair.split_once('=').map(|(url, key)| (url.to_owned(), key.to_owned())))
        .collect()
}

/// Where the chart put the operator (and so where master key Secrets may live).
fn operator_namespace() -> String {
    std::env::var("E2E_LEASE_NAMESPACE").unwrap_or_else(|_| "default".into())
}

/// A LiteLLMProxy for `url` whose master key is in a new Secret; deleted when dropped.
pub struct TestProxy {
    pub name: String,
    secret: String,
    client: kube::Client,
}

impl TestProxy {
    pub async fn create(ns: &TestNamespace, suffix: &str, url: &str, master_key: &str, policy: Value) -> Self {
        Self::create_with(ns, suffix, url, master_key, json!({ "policy": policy })).await
    }

    /// With more of the spec (`policy`, `caBundle`, …) than URL and master key.
    pub async fn create_with(ns: &TestNamespace, suffix: &str, url: &str, master_key: &str, extra: Value) -> Self {
        let name = format!("{}-{suffix}", ns.name);
        let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &operator_namespace());
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": name },
            "data": { "masterkey": ByteString(master_key.as_bytes().to_vec()) },
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.expect("create the master key Secret");
        let mut spec = json!({
            "url": url,
            "masterKeySecretRef": { "namespace": operator_namespace(), "name": name },
            "timeout": "5s",
        });
        if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
            spec.extend(extra);
        }
        let proxy: LiteLLMProxy = serde_json::from_value(json!({
            "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMProxy",
            "metadata": { "name": name, "labels": { "litellm-operator.io/e2e-namespace": ns.name } },
            "spec": spec,
        }))
        .unwrap();
        let api: Api<LiteLLMProxy> = Api::all(ns.client.clone());
        api.create(&PostParams::default(), &proxy).await.expect("create the LiteLLMProxy");
        TestProxy { secret: name.clone(), name, client: ns.client.clone() }
    }

    pub async fn wait_ready(&self) -> LiteLLMProxy {
        let api: Api<LiteLLMProxy> = Api::all(self.client.clone());
        wait_until(&format!("LiteLLMProxy {} to be Ready", self.name), DEADLINE, || async {
            let proxy = api.get(&self.name).await.map_err(|err| err.to_string())?;
            let conditions = proxy.status.as_ref().map(|st| st.conditions.as_slice()).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
                return Ok(proxy);
            }
            Err(describe_conditions(conditions))
        })
        .await
    }

    async fn set_master_key(&self, master_key: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &operator_namespace());
        let patch = json!({ "data": { "masterkey": ByteString(master_key.as_bytes().to_vec()) } });
        secrets.patch(&self.secret, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("rotate");
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let (client, name, secret) = (self.client.clone(), self.name.clone(), self.secret.clone());
        // Best effort, like the test namespaces.
        tokio::spawn(async move {
            let _ = Api::<LiteLLMProxy>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
            let _ = Api::<Secret>::namespaced(client, &operator_namespace())
                .delete(&secret, &DeleteParams::default())
                .await;
        });
    }
}

fn on(proxy: &TestProxy) -> Value {
    json!({ "proxyRef": { "name": proxy.name } })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn proxies_one_operator_serves_both_real_proxies() {
    let ns = TestNamespace::new("proxies").await;
    let reals = real_proxies();
    assert_eq!(reals.len(), 2, "hack/e2e.sh starts two proxies");
    let (newer_url, newer_key) = &reals[0];
    let (older_url, older_key) = &reals[1];
    // The older proxy sits behind a relay, so that it can go away without disturbing anyone else.
    let mut relay = Relay::start(older_url).await;
    let newer = TestProxy::create(&ns, "newer", newer_url, newer_key, json!({})).await;
    let older = TestProxy::create(&ns, "older", &relay.url(), older_key, json!({})).await;
    let _operator = Operator::start(&ns.name);
    let status = newer.wait_ready().await.status.unwrap();
    assert_eq!(
        (status.reachable, status.master_key_accepted, status.generation.as_deref()),
        (true, true, Some("newer"))
    );
    assert_eq!(older.wait_ready().await.status.unwrap().generation.as_deref(), Some("older"));

    ns.apply("n", on(&newer)).await;
    ns.apply("o", on(&older)).await;
    ns.apply("mover", on(&newer)).await;
    for name in ["n", "o", "mover"] {
        ns.wait_condition(name, "Ready", "True").await;
    }
    let (at_newer, at_older) = (Proxy::new(newer_url, newer_key), Proxy::new(older_url, older_key));
    assert!(at_newer.user(&ns.user_id("n")).await.is_some() && at_older.user(&ns.user_id("n")).await.is_none());
    assert!(at_older.user(&ns.user_id("o")).await.is_some() && at_newer.user(&ns.user_id("o")).await.is_none());
    let status = ns.users().get("o").await.unwrap().status.unwrap();
    assert_eq!(status.proxy.as_deref(), Some(older.name.as_str()));

    // A proxyRef change moves the user: gone from the old proxy, there with a working key on the new one.
    let old_key = ns.key("mover-litellm-key").await;
    ns.apply("mover", on(&older)).await;
    let moved = wait_until("the user to move", DEADLINE, || async {
        let key = ns.key("mover-litellm-key").await;
        let there = at_older.try_user(&ns.user_id("mover")).await?.is_some();
        let gone = at_newer.try_user(&ns.user_id("mover")).await?.is_none();
        // Not the keys themselves: they are secret.
        let new_key = key != old_key;
        if new_key && there && gone {
            Ok(key)
        } else {
            Err(format!("new key {new_key}, on the new proxy {there}, gone from the old {gone}"))
        }
    })
    .await;
    let works = at_older.wait_key_works("the new key to work", &moved).await;
    assert_eq!(works, ns.user_id("mover"));

    // One proxy down: only its users say so; the other proxy's users go on.
    relay.stop();
    ns.apply("o", json!({ "proxyRef": { "name": older.name }, "maxBudget": 3 })).await;
    ns.wait_reason("o", "LiteLLMUnavailable").await;
    ns.apply("n", json!({ "proxyRef": { "name": newer.name }, "maxBudget": 7 })).await;
    at_newer.wait_max_budget("a change to reach the proxy that is up", DEADLINE, &ns.user_id("n"), 7.0).await;
    ns.wait_condition("n", "Ready", "True").await;
    relay.resume().await;
    ns.wait_condition("o", "Ready", "True").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn proxies_a_rotated_master_key_takes_effect_without_a_restart() {
    use litellm_emulator::{Emulator, EmulatorConfig, Generation};
    let ns = TestNamespace::new("masterkey").await;
    let mut config = EmulatorConfig::new(Generation::Newer);
    config.master_key = "sk-first-master-key".into();
    let first = Emulator::start(config.clone()).await.expect("emulator");
    let port = first.addr().port();
    let proxy = TestProxy::create(&ns, "rotating", &first.url(), "sk-first-master-key", json!({})).await;
    let _operator = Operator::start(&ns.name);
    proxy.wait_ready().await;
    ns.apply("kai", json!({ "proxyRef": { "name": proxy.name }, "maxBudget": 1 })).await;
    ns.wait_condition("kai", "Ready", "True").await;

    // The proxy restarts with a new master key, and the platform updates the Secret.
    drop(first);
    config.master_key = "sk-second-master-key".into();
    config.port = port;
    let second = wait_until("the port to be free", DEADLINE, || {
        let config = config.clone();
        async move { Emulator::start(config).await.map_err(|err| err.to_string()) }
    })
    .await;
    proxy.set_master_key("sk-second-master-key").await;
    ns.apply("kai", json!({ "proxyRef": { "name": proxy.name }, "maxBudget": 2 })).await;
    let at_second = Proxy::new(&second.url(), "sk-second-master-key");
    at_second
        .wait_max_budget(
            "reconciles to go on with the new master key",
            Duration::from_secs(90),
            &ns.user_id("kai"),
            2.0,
        )
        .await;
    ns.wait_condition("kai", "Ready", "True").await;
    proxy.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn proxies_plain_http_to_a_remote_address_is_refused() {
    let ns = TestNamespace::new("insecure").await;
    let proxy = TestProxy::create(&ns, "remote", "http://litellm.example.invalid:4000", "sk-x", json!({})).await;
    let _operator = Operator::start(&ns.name);
    let api: Api<LiteLLMProxy> = Api::all(ns.client.clone());
    let ready = wait_until("the proxy's Ready condition", DEADLINE, || async {
        let proxy = api.get(&proxy.name).await.map_err(|err| err.to_string())?;
        let conditions = proxy.status.map(|st| st.conditions).unwrap_or_default();
        let described = describe_conditions(&conditions);
        conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == "False").ok_or(described)
    })
    .await;
    assert_eq!(ready.reason, "InsecureUrl");
    assert!(ready.message.contains("allowInsecureHttp"), "{}", ready.message);
    ns.apply("lou", json!({ "proxyRef": { "name": proxy.name } })).await;
    let lou = ns.wait_reason("lou", "ProxyUnavailable").await;
    let message = lou.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(message.contains("not ready"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn proxies_https_with_a_ca_bundle_end_to_end() {
    let ns = TestNamespace::new("tls").await;
    let (url, master_key) = real_proxies().into_iter().next().expect("a real proxy");
    let tls = TlsTerminator::start(&url).await;
    let trusted = TestProxy::create_with(&ns, "tls", &tls.url, &master_key, json!({ "caBundle": tls.ca_pem })).await;
    let untrusted = TestProxy::create_with(&ns, "tls-no-ca", &tls.url, &master_key, json!({})).await;
    let _operator = Operator::start(&ns.name);
    trusted.wait_ready().await;
    ns.apply("tess", json!({ "proxyRef": { "name": trusted.name } })).await;
    ns.wait_condition("tess", "Ready", "True").await;
    let key = ns.key("tess-litellm-key").await;
    assert_eq!(Proxy::new(&url, &master_key).key_works(&key).await.as_deref(), Some(ns.user_id("tess").as_str()));
    // Without the CA the proxy's certificate is not trusted, and the proxy says so.
    let api: Api<LiteLLMProxy> = Api::all(ns.client.clone());
    let refused = wait_until("the untrusted proxy's condition", DEADLINE, || async {
        let proxy = api.get(&untrusted.name).await.map_err(|err| err.to_string())?;
        let conditions = proxy.status.map(|st| st.conditions).unwrap_or_default();
        let described = describe_conditions(&conditions);
        conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == "False").ok_or(described)
    })
    .await;
    assert_eq!(refused.reason, "Unreachable");
    assert!(refused.message.to_lowercase().contains("certificate"), "{}", refused.message);
}
