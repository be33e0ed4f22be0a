//! Scale benchmark: the real operator binary (release build) against the real kube-apiserver and the LiteLLM
//! emulator. Not a timed test: it prints figures and writes them as JSON for BENCHMARKS.md.
//!
//! Run it with `hack/bench.sh` (which starts the control plane and builds the operator), or directly with
//! `KUBECONFIG`, `OPERATOR_BIN` and optionally `BENCH_SIZES` (default "100 1000 10000") set:
//! `cargo bench --bench scale`. With `BENCH_LITELLM_URL` and `BENCH_LITELLM_MASTER_KEY` it runs against that
//! proxy (a real one) instead of the emulator, and counts calls from the operator's own metrics.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use litellm_emulator::{Emulator, EmulatorConfig, Generation};
use litellm_operator::crd::LiteLLMUser;
use serde_json::{Value, json};

/// The operator's resync interval during the benchmark (`BENCH_RESYNC_SECONDS`, default 60, shorter than the
/// operator's default of 5 minutes so that steady state is measured sooner).
fn resync() -> Duration {
    let seconds = std::env::var("BENCH_RESYNC_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(seconds)
}
/// How long the restart is watched: the figure the scale issue names ("the first 5 minutes").
fn restart_window() -> Duration {
    let seconds = std::env::var("BENCH_RESTART_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    Duration::from_secs(seconds)
}
static PROFILE_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The proxy under the operator.
enum Litellm {
    /// Counts every call it serves.
    Emulator(Emulator),
    /// A real proxy: calls are counted by the operator.
    Real { url: String, master_key: String },
}

impl Litellm {
    async fn start() -> Litellm {
        match (std::env::var("BENCH_LITELLM_URL"), std::env::var("BENCH_LITELLM_MASTER_KEY")) {
            (Ok(url), Ok(master_key)) => Litellm::Real { url, master_key },
            _ => Litellm::Emulator(Emulator::start(EmulatorConfig::new(Generation::Newer)).await.expect("emulator")),
        }
    }

    fn url(&self) -> String {
        match self {
            Litellm::Emulator(emulator) => emulator.url(),
            Litellm::Real { url, .. } => url.clone(),
        }
    }

    fn master_key(&self) -> String {
        match self {
            Litellm::Emulator(emulator) => emulator.master_key().to_owned(),
            Litellm::Real { master_key, .. } => master_key.clone(),
        }
    }

    /// Calls the emulator has served so far, by endpoint; `None` for a real proxy.
    fn served(&self) -> Option<BTreeMap<String, f64>> {
        match self {
            Litellm::Emulator(emulator) => {
                Some(emulator.request_counts().into_iter().map(|(k, v)| (k, v as f64)).collect())
            }
            Litellm::Real { .. } => None,
        }
    }

    /// Calls served so far, by endpoint: the emulator's count, or the count of the running operator.
    async fn calls(&self, operator: &Operator) -> BTreeMap<String, f64> {
        match self.served() {
            Some(served) => served,
            None => operator.litellm_calls().await,
        }
    }

    /// Calls served by the time a new operator starts (for a real proxy: none that it counted yet).
    fn calls_before_start(&self) -> BTreeMap<String, f64> {
        self.served().unwrap_or_default()
    }
}

struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    fn start(namespace: &str, litellm: &Litellm, resync: Option<Duration>) -> Operator {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18090);
        let log = std::fs::File::create(std::env::temp_dir().join(format!("bench-operator-{namespace}.log")))
            .expect("log file");
        let mut command =
            Command::new(std::env::var("OPERATOR_BIN").expect("OPERATOR_BIN: the release operator binary"));
        command
            .args(["run", "--namespaces", namespace])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--litellm-url", &litellm.url()])
            .env("LITELLM_MASTER_KEY", litellm.master_key())
            .env("CLAIM_NAMESPACE", namespace)
            .env("RUST_LOG", "warn");
        if let Some(resync) = resync {
            command.args(["--resync-interval", &format!("{}s", resync.as_secs())]);
        }
        // Heap profiles per run when the binary is built with `--features dhat-heap` (BENCH_PROFILE=1) or
        // `--features jemalloc-profiling` (BENCH_PROFILE=jemalloc); each build reads only its own variable.
        if let Ok(dir) = std::env::var("BENCH_PROFILE_DIR") {
            let run = PROFILE_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            command.env("DHAT_OUT", format!("{dir}/dhat-{namespace}-{run}.json"));
            // One allocation in every 128 KiB or so is sampled, with its stack; a profile of what is live is
            // written at every new high-water mark of the heap, so the last one is the peak's.
            command.env(
                "_RJEM_MALLOC_CONF",
                format!("prof:true,lg_prof_sample:17,prof_gdump:true,prof_prefix:{dir}/jeprof-{namespace}-{run}"),
            );
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().expect("start the operator");
        Operator { child, port }
    }

    /// CPU seconds used so far and peak resident memory in MiB, from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (cpu_seconds(&pid.to_string()), hwm_kib / 1024.0)
    }

    /// The operator's own count of its LiteLLM calls, by endpoint, from its metrics.
    async fn litellm_calls(&self) -> BTreeMap<String, f64> {
        let text = metrics_text(self.port).await;
        let mut calls = BTreeMap::new();
        for (line, value) in samples(&text, "litellm_operator_litellm_requests_total") {
            if let Some(endpoint) = label(line, "endpoint") {
                *calls.entry(endpoint.to_owned()).or_default() += value;
            }
        }
        calls
    }

    /// The operator's own count of its Kubernetes requests, by `verb resource`, from its metrics.
    async fn kubernetes_requests(&self) -> BTreeMap<String, f64> {
        let text = metrics_text(self.port).await;
        let mut requests = BTreeMap::new();
        for (line, value) in samples(&text, "litellm_operator_kubernetes_requests_total") {
            if let (Some(verb), Some(resource)) = (label(line, "verb"), label(line, "resource")) {
                *requests.entry(format!("{verb} {resource}")).or_default() += value;
            }
        }
        requests
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        for _ in 0..600 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready");
    }
}

impl Drop for Operator {
    /// SIGTERM, as Kubernetes stops a pod, so that a heap profile is written; SIGKILL after a minute.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes (POST, PUT, PATCH, DELETE) the API server has served, by resource, from its own metrics.
async fn api_writes(client: &Client) -> BTreeMap<String, f64> {
    api_requests(client, |verb, resource| {
        // The API server renews its own identity Lease every 10 s (a PUT); the operator creates and deletes
        // claims, and replaces one only when taking over a stale claim.
        matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY")
            && matches!(resource, "litellmusers" | "secrets" | "events" | "leases")
            && !(resource == "leases" && verb == "PUT")
    })
    .await
}

/// Of the operator's own requests (by `verb resource`), the reads of single objects and the writes: what a
/// resync that finds nothing to do should not make. Its watches' LIST and WATCH are the cache it reads instead.
fn gets_and_writes(requests: &BTreeMap<String, f64>) -> f64 {
    requests.iter().filter(|(k, _)| !k.starts_with("list ") && !k.starts_with("watch ")).map(|(_, v)| v).sum()
}

/// Reads of single objects (GET; not the watches' LIST and WATCH) the API server has served, by resource.
/// The benchmark itself reads nothing that way, and runs the operator without leader election.
async fn api_reads(client: &Client) -> BTreeMap<String, f64> {
    api_requests(client, |verb, resource| verb == "GET" && matches!(resource, "litellmusers" | "secrets" | "leases"))
        .await
}

/// Requests the API server has served, by resource, from its own `apiserver_request_total`: those that
/// `counted(verb, resource)`.
async fn api_requests(client: &Client, counted: impl Fn(&str, &str) -> bool) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("API server metrics");
    let mut requests = BTreeMap::new();
    for (line, value) in samples(&text, "apiserver_request_total") {
        let resource = label(line, "resource").unwrap_or_default();
        if counted(label(line, "verb").unwrap_or_default(), resource) {
            *requests.entry(resource.to_owned()).or_default() += value;
        }
    }
    requests
}

/// The samples of a labelled metric in Prometheus text: each line, with its value.
fn samples<'a>(text: &'a str, metric: &str) -> impl Iterator<Item = (&'a str, f64)> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter(move |line| line.starts_with(&prefix))
        .filter_map(|line| Some((line, line.rsplit(' ').next()?.parse().ok()?)))
}

/// The value of label `name` in a sample line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(&format!("{name}=\"")).nth(1)?.split('"').next()
}

/// CPU time of the whole machine so far: (busy, total) in ticks, from /proc/stat.
/// CPU seconds a process (`self` for this one) has used so far, from /proc; 0 when it is not there.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of the control plane (etcd and kube-apiserver in one process: `KUBE_TESTBED_PID`) and of the
/// benchmark itself (its clients and the emulator), to show where the machine's time goes.
fn other_cpu() -> (f64, f64) {
    let control_plane = std::env::var("KUBE_TESTBED_PID").map(|pid| cpu_seconds(&pid)).unwrap_or(0.0);
    (control_plane, cpu_seconds("self"))
}

fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .map(|line| line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Metric series the operator exposes that are labelled with a user's name.
/// The operator's `/metrics` text; empty when it does not answer.
async fn metrics_text(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn user_series(port: u16) -> usize {
    let text = metrics_text(port).await;
    text.lines().filter(|l| !l.starts_with('#') && l.contains("name=\"")).count()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect()
}

fn user(name: &str) -> LiteLLMUser {
    serde_json::from_value(json!({
        "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser",
        "metadata": { "name": name },
        "spec": { "maxBudget": 10, "budgetDuration": "30d", "models": ["gpt-4o-mini"] },
    }))
    .expect("user")
}

fn is_ready(user: &LiteLLMUser) -> bool {
    user.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until `size` resources are Ready, from one watch: polling with lists would cost the API server more
/// than the operator's whole work at 10,000 users, and slow down what it measures.
async fn wait_all_ready(users: &Api<LiteLLMUser>, size: usize, deadline: Duration) {
    let mut ready = std::collections::HashSet::new();
    let mut events = Box::pin(watcher(users.clone(), watcher::Config::default()).applied_objects());
    let waited = tokio::time::timeout(deadline, async {
        while ready.len() < size {
            match events.try_next().await {
                Ok(Some(user)) if is_ready(&user) => drop(ready.insert(user.metadata.name.unwrap_or_default())),
                Ok(Some(user)) => drop(ready.remove(&user.metadata.name.unwrap_or_default())),
                Ok(None) => panic!("the watch ended"),
                // The watcher starts over by itself (a 410, a dropped connection).
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "not all Ready after {deadline:?}: {} of {size}", ready.len());
}

/// With `BENCH_CONTROL_PLANE_PROFILE` set to a directory: a CPU profile of etcd and the API server (one process
/// in the test bed) over `BENCH_CONTROL_PLANE_PROFILE_SECONDS` (default 30) of creation, starting 10 s in,
/// written there as `control-plane-<users>.pprof` for `go tool pprof`.
fn profile_control_plane(client: &Client, size: usize) -> Option<tokio::task::JoinHandle<()>> {
    let dir = std::env::var("BENCH_CONTROL_PLANE_PROFILE").ok()?;
    let seconds: u64 =
        std::env::var("BENCH_CONTROL_PLANE_PROFILE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let client = client.clone();
    Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
            .body(Vec::new())
            .expect("profile request");
        let mut profile = Vec::new();
        match client.request_stream(request).await {
            Ok(body) => {
                use futures::AsyncReadExt;
                let mut body = Box::pin(body);
                if let Err(err) = body.read_to_end(&mut profile).await {
                    eprintln!("[bench] control-plane profile failed: {err}");
                    return;
                }
            }
            Err(err) => {
                eprintln!("[bench] control-plane profile failed: {err}");
                return;
            }
        }
        let path = format!("{dir}/control-plane-{size}.pprof");
        match std::fs::write(&path, profile) {
            Ok(()) => eprintln!("[bench] control-plane CPU profile ({seconds} s of creation) in {path}"),
            Err(err) => eprintln!("[bench] cannot write {path}: {err}"),
        }
    }))
}

/// Milliseconds this machine takes for a fixed CPU-bound workload (one core, no memory traffic), taken while the
/// control plane is idle: the machine's speed varies from day to day, and runs are compared with it in view.
fn calibration_ms() -> f64 {
    let started = Instant::now();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..300_000_000_u64 {
        state = std::hint::black_box(state.rotate_left(7).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ i);
    }
    std::hint::black_box(state);
    started.elapsed().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run_size(client: &Client, size: usize) -> Value {
    let calibration = calibration_ms();
    let litellm = Litellm::start().await;
    let namespace = format!("bench-{size}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": namespace } })).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
    let users: Api<LiteLLMUser> = Api::namespaced(client.clone(), &namespace);
    let operator = Operator::start(&namespace, &litellm, Some(resync()));
    operator.wait_ready().await;

    // Creation: apply `size` users, wait until all are Ready.
    let (calls_before, writes_before) = (litellm.calls(&operator).await, api_writes(client).await);
    let started = Instant::now();
    let profile = profile_control_plane(client, size);
    let cpu_before_creation = machine_cpu();
    let others_before_creation = other_cpu();
    stream::iter(0..size)
        .map(|i| {
            let users = users.clone();
            async move { users.create(&PostParams::default(), &user(&format!("u{i}"))).await.map(drop) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create users");
    let applied = started.elapsed();
    let deadline = Duration::from_secs(1800).max(Duration::from_millis(40 * size as u64));
    wait_all_ready(&users, size, deadline.saturating_sub(started.elapsed())).await;
    let all_ready = started.elapsed();
    if let Some(profile) = profile {
        let _ = profile.await;
    }
    let cpu_after_creation = machine_cpu();
    let others_after_creation = other_cpu();
    let control_plane_cpu = others_after_creation.0 - others_before_creation.0;
    let bench_cpu = others_after_creation.1 - others_before_creation.1;
    let machine_busy = 100.0 * (cpu_after_creation.0 - cpu_before_creation.0)
        / (cpu_after_creation.1 - cpu_before_creation.1).max(1.0);
    let (cpu_create, rss_create) = operator.usage();
    let create_calls = delta(&litellm.calls(&operator).await, &calls_before);
    let mut create_writes = delta(&api_writes(client).await, &writes_before);
    *create_writes.entry("litellmusers".into()).or_default() -= size as f64; // the benchmark's own creates

    if std::env::var("BENCH_CREATION_ONLY").is_ok_and(|v| v == "1") {
        let result = json!({
            "users": size,
            "resync_seconds": resync().as_secs(),
            "calibration_ms": calibration,
            "all_ready_seconds": all_ready.as_secs_f64(),
            "peak_rss_mib": rss_create,
            "cpu_seconds_creation": cpu_create,
            "machine_cpu_busy_creation": machine_busy,
            "control_plane_cpu_seconds_creation": control_plane_cpu,
            "bench_cpu_seconds_creation": bench_cpu,
            "creation_litellm_calls_per_user": create_calls.values().sum::<f64>() / size as f64,
            "creation_litellm_calls": create_calls,
            "creation_k8s_writes_per_user": create_writes.values().sum::<f64>() / size as f64,
            "creation_k8s_writes": create_writes,
        });
        println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
        return result;
    }

    // Latency of one apply to Ready, one at a time (before the resyncs, so that these users are in sync by the
    // time the steady state and the restart are measured).
    let mut latencies = Vec::new();
    for i in 0..if size >= 1000 { 50 } else { 100 } {
        let name = format!("single-{i}");
        let watch = watcher(users.clone(), watcher::Config::default().fields(&format!("metadata.name={name}")))
            .applied_objects()
            .try_filter(|u| futures::future::ready(is_ready(u)));
        let mut watch = Box::pin(watch);
        let started = Instant::now();
        users.create(&PostParams::default(), &user(&name)).await.expect("create single");
        tokio::time::timeout(Duration::from_secs(60), watch.next()).await.expect("single Ready in time");
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // The first resync after creation fills in what creation could not know (budget_reset_at is computed by
    // the proxy and not in /user/new's answer); its writes are reported on their own.
    let writes_before = api_writes(client).await;
    tokio::time::sleep(resync() + Duration::from_secs(5)).await;
    let first_resync_writes = delta(&api_writes(client).await, &writes_before);

    // Steady state: one more resync period with nothing changed.
    let (calls_before, writes_before) = (litellm.calls(&operator).await, api_writes(client).await);
    let reads_before = api_reads(client).await;
    let requests_before = operator.kubernetes_requests().await;
    let (cpu_before, _) = operator.usage();
    tokio::time::sleep(resync() + Duration::from_secs(5)).await;
    let steady_calls = delta(&litellm.calls(&operator).await, &calls_before);
    let steady_writes = delta(&api_writes(client).await, &writes_before);
    let steady_reads = delta(&api_reads(client).await, &reads_before);
    let steady_requests = delta(&operator.kubernetes_requests().await, &requests_before);
    let (cpu_after, rss_peak) = operator.usage();

    let series = user_series(operator.port).await;
    drop(operator);

    // A restart with every user in sync, at the default resync interval: what the first minutes cost.
    // The first 5 minutes of the new process, from its start.
    let (calls_before, writes_before) = (litellm.calls_before_start(), api_writes(client).await);
    let reads_before = api_reads(client).await;
    let restarted = Instant::now();
    let operator = Operator::start(&namespace, &litellm, None);
    operator.wait_ready().await;
    tokio::time::sleep(restart_window().saturating_sub(restarted.elapsed())).await;
    let restart_calls = delta(&litellm.calls(&operator).await, &calls_before);
    let restart_writes = delta(&api_writes(client).await, &writes_before);
    let restart_reads = delta(&api_reads(client).await, &reads_before);
    let restart_requests = operator.kubernetes_requests().await;
    let (_, rss_restart) = operator.usage();
    drop(operator);

    let per_user = |m: &BTreeMap<String, f64>| m.values().sum::<f64>() / size as f64;
    let result = json!({
        "users": size,
        "resync_seconds": resync().as_secs(),
        "calibration_ms": calibration,
        "proxy": if matches!(litellm, Litellm::Real { .. }) { "real" } else { "emulator" },
        "apply_seconds": applied.as_secs_f64(),
        "all_ready_seconds": all_ready.as_secs_f64(),
        "cpu_seconds_creation": cpu_create,
        "machine_cpu_busy_creation": machine_busy,
        "control_plane_cpu_seconds_creation": control_plane_cpu,
        "bench_cpu_seconds_creation": bench_cpu,
        "metric_series_per_user": series as f64 / (size + latencies.len()) as f64,
        "cpu_seconds_steady_period": cpu_after - cpu_before,
        "peak_rss_mib": rss_peak.max(rss_create),
        "creation_litellm_calls_per_user": per_user(&create_calls),
        "creation_litellm_calls": create_calls,
        "creation_k8s_writes_per_user": per_user(&create_writes),
        "creation_k8s_writes": create_writes,
        "creation_k8s_writes_per_user_without_events":
            create_writes.iter().filter(|(k, _)| *k != "events").map(|(_, v)| v).sum::<f64>() / size as f64,
        "first_resync_k8s_writes": first_resync_writes.values().sum::<f64>(),
        "steady_litellm_calls_per_user": per_user(&steady_calls),
        "steady_litellm_calls": steady_calls,
        "steady_k8s_writes": steady_writes.values().sum::<f64>(),
        "steady_k8s_reads": steady_reads.values().sum::<f64>(),
        "steady_k8s_reads_by_resource": steady_reads,
        "steady_operator_k8s_requests": steady_requests,
        "steady_operator_k8s_gets_and_writes": gets_and_writes(&steady_requests),
        "restart_window_seconds": restart_window().as_secs(),
        "restart_litellm_calls_per_100_users": per_user(&restart_calls) * 100.0,
        "restart_litellm_calls": restart_calls,
        "restart_k8s_writes": restart_writes.values().sum::<f64>(),
        "restart_k8s_reads": restart_reads.values().sum::<f64>(),
        "restart_k8s_reads_by_resource": restart_reads,
        "restart_operator_k8s_requests": restart_requests,
        "restart_operator_k8s_gets_and_writes": gets_and_writes(&restart_requests),
        "restart_peak_rss_mib": rss_restart,
        "single_apply_ready_ms_p50": percentile(&latencies, 0.5),
        "single_apply_ready_ms_p99": percentile(&latencies, 0.99),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    result
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.expect("KUBECONFIG");
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100 1000 10000".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut results = Vec::new();
    for size in sizes {
        eprintln!("[bench] {size} users");
        results.push(run_size(&client, size).await);
    }
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench-results.json".into());
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap_or_default()).expect("write results");
    eprintln!("[bench] results in {out}");
}
