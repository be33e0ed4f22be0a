//! Prometheus metrics. Labels never carry a key or a secret: users are labelled by namespace and name only.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The kind reconciled, lower case: `litellmuser`, `litellmproxy`.
    pub controller: &'static str,
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
pub struct RetryLabels {
    pub endpoint: &'static str,
    /// `recovered` (the second try was answered) or `failed`.
    pub outcome: &'static str,
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

/// Everything the operator measures, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Histogram,
    panics: Family<ControllerLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    litellm_requests: Family<CallLabels, Counter>,
    litellm_seconds: Family<EndpointLabels, Histogram>,
    litellm_retries: Family<RetryLabels, Counter>,
    kubernetes_requests: Family<KubernetesLabels, Counter>,
    resources: Family<ReasonLabels, Gauge>,
    /// The per-user series, when the operator keeps them (`--user-metrics`).
    users: Option<UserSeries>,
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
        let panics = Family::<ControllerLabels, Counter>::default();
        let litellm_requests = Family::<CallLabels, Counter>::default();
        let litellm_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let litellm_retries = Family::<RetryLabels, Counter>::default();
        let kubernetes_requests = Family::<KubernetesLabels, Counter>::default();
        let resources = Family::<ReasonLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles by result (ok, error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", reconcile_seconds.clone());
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked (a bug in the operator): each failed that resource's reconcile only",
            panics.clone(),
        );
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
            "litellm_retries",
            "Calls to LiteLLM sent a second time because the first failed before any answer (a connection the proxy \
             was closing), by endpoint and outcome",
            litellm_retries.clone(),
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
        Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            panics,
            failures,
            litellm_requests,
            litellm_seconds,
            litellm_retries,
            kubernetes_requests,
            resources,
            users: per_user.then(UserSeries::default),
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

    pub fn reconcile_panicked(&self, controller: &'static str) {
        self.panics.get_or_create(&ControllerLabels { controller }).inc();
    }

    pub fn litellm_call(&self, endpoint: &'static str, outcome: String, took: Duration) {
        self.litellm_requests.get_or_create(&CallLabels { endpoint, outcome }).inc();
        self.litellm_seconds.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    pub fn litellm_retry(&self, endpoint: &'static str, outcome: &'static str) {
        self.litellm_retries.get_or_create(&RetryLabels { endpoint, outcome }).inc();
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
        let previous = crate::sync::lock(&self.reasons).insert(key, reason);
        if previous != Some(reason) {
            if let Some(previous) = previous {
                self.resources.get_or_create(&ReasonLabels { reason: previous }).dec();
            }
            self.resources.get_or_create(&ReasonLabels { reason }).inc();
        }
        if let Some(users) = &self.users {
            users.record(namespace, name, spend, budget);
        }
    }

    /// Forgets a deleted resource.
    pub fn forget_resource(&self, namespace: &str, name: &str) {
        let key = resource_key(namespace, name);
        if let Some(reason) = crate::sync::lock(&self.reasons).remove(&key) {
            self.resources.get_or_create(&ReasonLabels { reason }).dec();
        }
        if let Some(users) = &self.users {
            users.forget(namespace, name);
        }
    }

    /// The OpenMetrics text exposition, whole (`/metrics` streams [`Scrape`] instead).
    #[cfg(test)]
    pub fn encode(self: &Arc<Self>) -> String {
        Scrape::new(self.clone()).collect()
    }
}

/// Spend and budget of each user, labelled by namespace and name. A `Family` would keep both label strings and a
/// gauge allocation per series, twice per user; this keeps one entry per user, with the namespace stored once,
/// and renders the series a chunk at a time so a scrape never holds the text of every user at once.
#[derive(Default)]
struct UserSeries {
    by_namespace: Mutex<ByNamespace>,
}

/// Namespace, then name, in order: a scrape resumes where its last chunk ended.
type ByNamespace = BTreeMap<Box<str>, BTreeMap<Box<str>, UserFigures>>;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct UserFigures {
    spend: Option<f64>,
    budget: Option<f64>,
}

/// The two per-user families, in the order they are rendered.
#[derive(Clone, Copy, Debug, PartialEq)]
enum UserFamily {
    Spend,
    Budget,
}

impl UserFamily {
    fn name(self) -> &'static str {
        match self {
            UserFamily::Spend => "litellm_operator_user_spend_usd",
            UserFamily::Budget => "litellm_operator_user_max_budget_usd",
        }
    }

    fn help(self) -> &'static str {
        match self {
            UserFamily::Spend => "Spend of a LiteLLM user in its current budget period.",
            UserFamily::Budget => "Budget of a LiteLLM user per budget period.",
        }
    }

    /// The family's HELP and TYPE lines, which come before its first sample.
    fn push_header(self, out: &mut String) {
        let name = self.name();
        // Writing to a String cannot fail.
        let _ = write!(out, "# HELP {name} {}\n# TYPE {name} gauge\n", self.help());
    }

    fn value(self, figures: UserFigures) -> Option<f64> {
        match self {
            UserFamily::Spend => figures.spend,
            UserFamily::Budget => figures.budget,
        }
    }
}

/// How many series one chunk of a scrape renders (about 80 bytes each).
const SERIES_PER_CHUNK: usize = 1024;

impl UserSeries {
    fn lock(&self) -> MutexGuard<'_, ByNamespace> {
        crate::sync::lock(&self.by_namespace)
    }

    /// Spend is kept when a reconcile did not read it; a budget that is gone removes its series.
    fn record(&self, namespace: &str, name: &str, spend: Option<f64>, budget: Option<f64>) {
        let mut by_namespace = self.lock();
        let previous = by_namespace.get(namespace).and_then(|users| users.get(name)).copied().unwrap_or_default();
        let figures = UserFigures { spend: spend.or(previous.spend), budget };
        if figures == previous {
            return;
        }
        if figures == UserFigures::default() {
            drop(by_namespace);
            self.forget(namespace, name);
            return;
        }
        // Look up before inserting: the map's keys are owned, and an update should not allocate them again.
        let users = match by_namespace.get_mut(namespace) {
            Some(users) => users,
            None => by_namespace.entry(namespace.into()).or_default(),
        };
        match users.get_mut(name) {
            Some(entry) => *entry = figures,
            None => {
                users.insert(name.into(), figures);
            }
        }
    }

    fn forget(&self, namespace: &str, name: &str) {
        let mut by_namespace = self.lock();
        let Some(users) = by_namespace.get_mut(namespace) else { return };
        users.remove(name);
        if users.is_empty() {
            by_namespace.remove(namespace);
        }
    }

    /// Renders series of `family` from the user at `from` (a namespace and name; the first user when `None`) until
    /// [`SERIES_PER_CHUNK`] are rendered, and returns the user to go on from, or `None` when the family is done.
    fn render(&self, family: UserFamily, from: Option<UserRef>, out: &mut String) -> Option<UserRef> {
        let by_namespace = self.lock();
        let first_namespace = from.as_ref().map_or(Bound::Unbounded, |(namespace, _)| Bound::Included(&**namespace));
        let mut rendered = 0;
        for (namespace, users) in by_namespace.range::<str, _>((first_namespace, Bound::Unbounded)) {
            let names = match &from {
                Some((from_namespace, from_name)) if from_namespace == namespace => {
                    users.range::<str, _>((Bound::Included(&**from_name), Bound::Unbounded))
                }
                _ => users.range::<str, _>(..),
            };
            for (name, figures) in names {
                let Some(value) = family.value(*figures) else { continue };
                if rendered == SERIES_PER_CHUNK {
                    return Some((namespace.clone(), name.clone()));
                }
                out.push_str(family.name());
                out.push_str("{namespace=\"");
                push_label_value(out, namespace);
                out.push_str("\",name=\"");
                push_label_value(out, name);
                out.push_str("\"} ");
                push_float(out, value);
                out.push('\n');
                rendered += 1;
            }
        }
        None
    }
}

/// A user's place in [`UserSeries`]: namespace and name.
type UserRef = (Box<str>, Box<str>);

/// A label value as OpenMetrics escapes it. Namespaces and names never need it; it keeps the text well-formed
/// whatever they hold.
fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: the shortest text that reads back as the same number, with `+Inf`, `-Inf` and `NaN` spelled
/// the way OpenMetrics spells them.
fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{value:?}");
    }
}

/// One `/metrics` response, produced a chunk at a time: the registry's series, then the per-user families in
/// chunks of [`SERIES_PER_CHUNK`], then the end marker.
pub struct Scrape {
    metrics: Arc<Metrics>,
    stage: ScrapeStage,
}

enum ScrapeStage {
    Registry,
    Users { family: UserFamily, from: Option<UserRef> },
    End,
    Done,
}

impl Scrape {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Scrape { metrics, stage: ScrapeStage::Registry }
    }
}

impl Iterator for Scrape {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::new();
        self.stage = match std::mem::replace(&mut self.stage, ScrapeStage::Done) {
            ScrapeStage::Registry => {
                if encode_registry(&mut out, &self.metrics.registry).is_err() {
                    out.clear();
                }
                match self.metrics.users {
                    Some(_) => {
                        UserFamily::Spend.push_header(&mut out);
                        ScrapeStage::Users { family: UserFamily::Spend, from: None }
                    }
                    None => ScrapeStage::End,
                }
            }
            ScrapeStage::Users { family, from } => {
                let next = self.metrics.users.as_ref().and_then(|users| users.render(family, from, &mut out));
                match (next, family) {
                    (Some(from), family) => ScrapeStage::Users { family, from: Some(from) },
                    (None, UserFamily::Spend) => {
                        UserFamily::Budget.push_header(&mut out);
                        ScrapeStage::Users { family: UserFamily::Budget, from: None }
                    }
                    (None, UserFamily::Budget) => ScrapeStage::End,
                }
            }
            ScrapeStage::End => {
                // Writing to a String cannot fail.
                let _ = encode_eof(&mut out);
                ScrapeStage::Done
            }
            ScrapeStage::Done => return None,
        };
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_counted_once_by_their_latest_reason() {
        let metrics = Arc::new(Metrics::default());
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
        let metrics = Arc::new(Metrics::new(false));
        metrics.observe_resource("ns", "a", "Synced", Some(1.5), Some(10.0));
        let text = metrics.encode();
        assert!(text.contains(r#"litellm_operator_resources{reason="Synced"} 1"#), "{text}");
        assert!(!text.contains(r#"name="a""#), "{text}");
    }

    #[test]
    fn calls_are_labelled_by_endpoint_and_outcome() {
        let metrics = Arc::new(Metrics::default());
        metrics.litellm_call("/user/info", "ok".into(), Duration::from_millis(3));
        metrics.litellm_call("/user/info", "404".into(), Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(r#"litellm_operator_litellm_requests_total{endpoint="/user/info",outcome="404"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_scrape_renders_each_family_whole_in_chunks_and_ends_once() {
        let metrics = Arc::new(Metrics::default());
        let users = SERIES_PER_CHUNK * 2 + 3;
        for i in 0..users {
            let namespace = format!("team-{}", i % 3);
            metrics.observe_resource(&namespace, &format!("user-{i:05}"), "Synced", Some(i as f64), Some(100.0));
        }
        let chunks: Vec<String> = Scrape::new(metrics.clone()).collect();
        assert!(chunks.len() > 4, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|chunk| chunk.len() < SERIES_PER_CHUNK * 100), "a chunk holds too much");
        let text = chunks.concat();
        assert_eq!(text.matches("# EOF\n").count(), 1);
        assert!(text.ends_with("# EOF\n"));
        let samples = |family: &str| -> Vec<&str> {
            text.lines().filter(|line| line.starts_with(&format!("{family}{{"))).collect()
        };
        for family in ["litellm_operator_user_spend_usd", "litellm_operator_user_max_budget_usd"] {
            let lines = samples(family);
            assert_eq!(lines.len(), users, "{family}");
            let unique: std::collections::HashSet<_> = lines.iter().collect();
            assert_eq!(unique.len(), users, "{family}: a series rendered twice");
            // OpenMetrics wants a family's samples together, after its own TYPE line.
            let type_line = text.find(&format!("# TYPE {family} gauge\n")).unwrap_or(usize::MAX);
            let first = text.find(lines[0]).unwrap_or(0);
            let last = text.find(lines[users - 1]).unwrap_or(0);
            assert!(type_line < first, "{family}");
            assert_eq!(text[first..last].lines().count(), users - 1, "{family} is split");
        }
        assert!(text.contains("litellm_operator_user_spend_usd{namespace=\"team-1\",name=\"user-00004\"} 4.0\n"));
    }

    #[test]
    fn spend_not_read_is_kept_and_a_user_without_figures_leaves() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe_resource("ns", "a", "Synced", Some(2.5), Some(10.0));
        metrics.observe_resource("ns", "a", "Synced", None, None);
        let text = metrics.encode();
        assert!(text.contains(r#"litellm_operator_user_spend_usd{namespace="ns",name="a"} 2.5"#), "{text}");
        assert!(!text.contains("litellm_operator_user_max_budget_usd{"), "{text}");
        metrics.forget_resource("ns", "a");
        let users = metrics.users.as_ref().map(|users| users.lock().len());
        assert_eq!(users, Some(0), "an emptied namespace stays behind");
    }

    #[test]
    fn label_values_and_odd_numbers_stay_well_formed() {
        let mut out = String::new();
        push_label_value(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#"a\"b\\c\nd"#);
        let floats: Vec<String> = [0.0, 10.0, 1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]
            .into_iter()
            .map(|value| {
                let mut out = String::new();
                push_float(&mut out, value);
                out
            })
            .collect();
        assert_eq!(floats, ["0.0", "10.0", "1.5", "+Inf", "-Inf", "NaN"]);
    }
}
