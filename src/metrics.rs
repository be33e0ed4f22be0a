//! Prometheus metrics. Labels never carry a key or a secret: users are labelled by namespace and name only.

use std::{
    collections::HashMap,
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub endpoint: &'static str,
    /// `ok`, the HTTP status of a failure, or `transport`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubernetesLabels {
    pub verb: &'static str,
    /// A resource type (with its subresource), never an object's name.
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub namespace: String,
    pub name: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Everything the operator measures, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Histogram,
    failures: Family<ReasonLabels, Counter>,
    litellm_requests: Family<CallLabels, Counter>,
    litellm_seconds: Family<EndpointLabels, Histogram>,
    kubernetes_requests: Family<KubernetesLabels, Counter>,
    resources: Family<ReasonLabels, Gauge>,
    spend: Family<UserLabels, FloatGauge>,
    max_budget: Family<UserLabels, FloatGauge>,
    /// Whether each user has series of its own (`user_spend_usd`, `user_max_budget_usd`).
    per_user: bool,
    /// The Ready reason last reported per resource (by a fingerprint of its namespace and name), so
    /// `resources` counts each resource once.
    reasons: Mutex<HashMap<u64, &'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

fn resource_key(namespace: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (namespace, name).hash(&mut hasher);
    hasher.finish()
}

impl Metrics {
    /// `per_user`: two series per LiteLLMUser (spend and budget), for dashboards and budget alerts per user;
    /// without them the operator's series do not grow with the number of users.
    pub fn new(per_user: bool) -> Self {
        let mut registry = Registry::with_prefix("litellm_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_seconds = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let failures = Family::<ReasonLabels, Counter>::default();
        let litellm_requests = Family::<CallLabels, Counter>::default();
        let litellm_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let kubernetes_requests = Family::<KubernetesLabels, Counter>::default();
        let resources = Family::<ReasonLabels, Gauge>::default();
        let spend = Family::<UserLabels, FloatGauge>::default();
        let max_budget = Family::<UserLabels, FloatGauge>::default();
        registry.register("reconciles", "Reconciles by result (ok, error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", reconcile_seconds.clone());
        registry.register("reconcile_failures", "Reconciles that did not reach Ready, by reason", failures.clone());
        registry.register(
            "litellm_requests",
            "Calls to the LiteLLM admin API by endpoint and outcome",
            litellm_requests.clone(),
        );
        registry.register(
            "litellm_request_duration_seconds",
            "Latency of LiteLLM admin API calls",
            litellm_seconds.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "The operator's requests to the Kubernetes API server, by verb and resource",
            kubernetes_requests.clone(),
        );
        registry.register(
            "resources",
            "LiteLLMUser resources by the reason of their Ready condition",
            resources.clone(),
        );
        registry.register("user_spend_usd", "Spend of a LiteLLM user in its current budget period", spend.clone());
        registry.register("user_max_budget_usd", "Budget of a LiteLLM user per budget period", max_budget.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            failures,
            litellm_requests,
            litellm_seconds,
            kubernetes_requests,
            resources,
            spend,
            max_budget,
            per_user,
            reasons: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn reconciled(&self, ok: bool, took: Duration) {
        self.reconciles.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn litellm_call(&self, endpoint: &'static str, outcome: String, took: Duration) {
        self.litellm_requests.get_or_create(&CallLabels { endpoint, outcome }).inc();
        self.litellm_seconds.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    pub fn kubernetes_request(&self, verb: &'static str, resource: String) {
        self.kubernetes_requests.get_or_create(&KubernetesLabels { verb, resource }).inc();
    }

    /// Records where a resource stands after a reconcile.
    pub fn observe_resource(
        &self,
        namespace: &str,
        name: &str,
        reason: &'static str,
        spend: Option<f64>,
        budget: Option<f64>,
    ) {
        if reason != "Synced" {
            self.failures.get_or_create(&ReasonLabels { reason }).inc();
        }
        let key = resource_key(namespace, name);
        let previous = self.reasons.lock().unwrap_or_else(|p| p.into_inner()).insert(key, reason);
        if previous != Some(reason) {
            if let Some(previous) = previous {
                self.resources.get_or_create(&ReasonLabels { reason: previous }).dec();
            }
            self.resources.get_or_create(&ReasonLabels { reason }).inc();
        }
        if !self.per_user {
            return;
        }
        let user = UserLabels { namespace: namespace.to_owned(), name: name.to_owned() };
        if let Some(spend) = spend {
            self.spend.get_or_create(&user).set(spend);
        }
        match budget {
            Some(budget) => {
                self.max_budget.get_or_create(&user).set(budget);
            }
            None => {
                self.max_budget.remove(&user);
            }
        }
    }

    /// Forgets a deleted resource.
    pub fn forget_resource(&self, namespace: &str, name: &str) {
        let key = resource_key(namespace, name);
        if let Some(reason) = self.reasons.lock().unwrap_or_else(|p| p.into_inner()).remove(&key) {
            self.resources.get_or_create(&ReasonLabels { reason }).dec();
        }
        let user = UserLabels { namespace: namespace.to_owned(), name: name.to_owned() };
        self.spend.remove(&user);
        self.max_budget.remove(&user);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_counted_once_by_their_latest_reason() {
        let metrics = Metrics::default();
        metrics.observe_resource("ns", "a", "LiteLLMUnavailable", None, None);
        metrics.observe_resource("ns", "a", "Synced", Some(1.5), Some(10.0));
        metrics.observe_resource("ns", "b", "Synced", Some(0.0), None);
        let text = metrics.encode();
        assert!(text.contains(r#"litellm_operator_resources{reason="Synced"} 2"#), "{text}");
        assert!(text.contains(r#"litellm_operator_resources{reason="LiteLLMUnavailable"} 0"#), "{text}");
        assert!(text.contains(r#"litellm_operator_user_spend_usd{namespace="ns",name="a"} 1.5"#), "{text}");
        assert!(text.contains(r#"litellm_operator_user_max_budget_usd{namespace="ns",name="a"} 10.0"#), "{text}");
        metrics.forget_resource("ns", "a");
        let text = metrics.encode();
        assert!(text.contains(r#"litellm_operator_resources{reason="Synced"} 1"#), "{text}");
        assert!(!text.contains(r#"name="a""#), "{text}");
    }

    #[test]
    fn without_per_user_series_only_the_counts_by_reason_remain() {
        let metrics = Metrics::new(false);
        metrics.observe_resource("ns", "a", "Synced", Some(1.5), Some(10.0));
        let text = metrics.encode();
        assert!(text.contains(r#"litellm_operator_resources{reason="Synced"} 1"#), "{text}");
        assert!(!text.contains(r#"name="a""#), "{text}");
    }

    #[test]
    fn calls_are_labelled_by_endpoint_and_outcome() {
        let metrics = Metrics::default();
        metrics.litellm_call("/user/info", "ok".into(), Duration::from_millis(3));
        metrics.litellm_call("/user/info", "404".into(), Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(r#"litellm_operator_litellm_requests_total{endpoint="/user/info",outcome="404"} 1"#),
            "{text}"
        );
    }
}
