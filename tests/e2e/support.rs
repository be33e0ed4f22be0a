//! Harness for the end-to-end suite: the built operator binary as a real process, a real API server (from
//! `KUBECONFIG`) and a real LiteLLM proxy (`LITELLM_URL`, `LITELLM_MASTER_KEY`). Each test gets a namespace
//! of its own and an operator that watches only that namespace, so tests run in parallel without seeing each
//! other. Waiting is always for a condition with a deadline, never a fixed sleep.

use std::{
    future::Future,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use litellm_operator::crd::LiteLLMUser;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

pub const DEADLINE: Duration = Duration::from_secs(60);
/// A policy that replaces a lost key at once: the default waits for an hour after the key's issue.
pub const QUICK_REISSUE: &str = "keys:\n  minRotationInterval: 1s\n";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; run the suite with hack/e2e.sh"))
}

/// Waits until `check` returns `Some`, or fails the test with `what` after the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` returns `Ok`, or fails the test with `what` after the deadline and the last `Err` it
/// returned: what it saw instead, or why it could not look. A probe that fails (the proxy or the API server not
/// answering this once) is "not yet", not the end of the test; the deadline still bounds the wait.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An error with its causes: reqwest's own message does not say what went wrong ("connection reset", ...).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Conditions, on one line, for timeout messages.
pub fn describe_conditions(conditions: &[Condition]) -> String {
    let seen: Vec<String> = conditions
        .iter()
        .map(|c| {
            format!("{}={} {} (generation {:?}): {}", c.type_, c.status, c.reason, c.observed_generation, c.message)
        })
        .collect();
    if seen.is_empty() { String::from("no conditions") } else { seen.join("; ") }
}

/// How often a request to the proxy that is safe to repeat is tried before the error counts, and the pause
/// between tries.
const PROXY_TRIES: u32 = 5;
const PROXY_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// A starved proxy can fail database calls for several seconds in a row.
const DATABASE_HICCUP_TRIES: u32 = 15;
const DATABASE_HICCUP_PAUSE: Duration = Duration::from_secs(1);

/// A raw client for the LiteLLM proxy, to check the proxy's side independently of the operator.
#[derive(Clone)]
pub struct Proxy {
    pub url: String,
    master_key: String,
    http: reqwest::Client,
}

/// LiteLLM's answer when a database call failed and was rolled back: on a loaded machine its query engine
/// expires a transaction that waited too long to run (1.108.7 `/team/member_add`, `/team/new`). Nothing was
/// written, and the suite's own calls are tried again; the operator retries it as any 503.
fn database_hiccup(status: u16, answer: &Value) -> bool {
    status == 503 && answer.pointer("/error/type").and_then(Value::as_str) == Some("no_db_connection")
}

impl Proxy {
    pub fn from_env() -> Self {
        Self::new(&env("LITELLM_URL"), &env("LITELLM_MASTER_KEY"))
    }

    pub fn new(url: &str, master_key: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // LiteLLM runs under uvicorn, which closes a connection idle for 5 s: a request sent on a pooled
        // connection just as the proxy closes it is reset. Idle connections are dropped well before that.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client for the proxy");
        Proxy { url: url.to_owned(), master_key: master_key.to_owned(), http }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.master_key.clone(), method, path, body).await
    }

    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        self.try_call_as(&self.master_key.clone(), method, path, body).await
    }

    pub async fn call_as(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call_as(key, method, path, body).await.unwrap_or_else(|err| panic!("LiteLLM proxy reachable: {err}"))
    }

    /// Status and answer, or why there is none. A request that is safe to repeat is tried again after a
    /// transport error: a GET, or any request that never reached the proxy (no connection). Any other may have
    /// acted on the proxy, so its error is returned at once. Any request is tried again after the proxy said
    /// its database call failed and nothing was written ([`database_hiccup`]).
    pub async fn try_call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(key);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let err = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(text) => {
                            let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
                            if !database_hiccup(status, &answer) || tries >= DATABASE_HICCUP_TRIES {
                                return Ok((status, answer));
                            }
                            tokio::time::sleep(DATABASE_HICCUP_PAUSE).await;
                            continue;
                        }
                        Err(err) => err,
                    }
                }
                Err(err) => err,
            };
            let repeatable = method == reqwest::Method::GET || err.is_connect();
            if !repeatable || tries >= PROXY_TRIES {
                return Err(format!("{method} {path} ({tries} tries): {}", error_chain(&err)));
            }
            tokio::time::sleep(PROXY_RETRY_PAUSE).await;
        }
    }

    /// The user row, or `None` when the proxy has no such user (404, or the older proxies' stub).
    pub async fn user(&self, user_id: &str) -> Option<(Value, Vec<String>)> {
        self.try_user(user_id).await.unwrap_or_else(|err| panic!("{err}"))
    }

    /// The same, or why the proxy could not say: no answer, or an answer other than 200 and 404.
    pub async fn try_user(&self, user_id: &str) -> Result<Option<(Value, Vec<String>)>, String> {
        let (status, body) =
            self.try_call(reqwest::Method::GET, &format!("/user/info?user_id={}", urlencode(user_id)), None).await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("user/info {user_id}: {status} {body}"));
        }
        let info = body.get("user_info").cloned().unwrap_or(Value::Null);
        if info.get("user_id").and_then(Value::as_str).is_none() {
            return Ok(None);
        }
        let keys = body["keys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(|k| k["token"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Some((info, keys)))
    }

    pub async fn update(&self, body: Value) {
        let (status, answer) = self.call(reqwest::Method::POST, "/user/update", Some(body)).await;
        assert_eq!(status, 200, "user/update: {answer}");
    }

    /// Makes the team, or finds it made. On a loaded machine 1.108.7 can write the team and then fail the
    /// transaction that adds its first member (500 "Transaction already closed"): the next try finds it.
    pub async fn create_team(&self, team_id: &str) {
        let body = json!({ "team_id": team_id, "team_alias": team_id });
        wait_until(&format!("team/new {team_id}"), DEADLINE, || async {
            match self.try_call(reqwest::Method::POST, "/team/new", Some(body.clone())).await? {
                (200 | 400 | 409, _) => Ok(()),
                (status, answer) => Err(format!("{status} {answer}")),
            }
        })
        .await
    }

    /// Status code of `/key/info` when authenticating with `key` itself.
    pub async fn key_works(&self, key: &str) -> Option<String> {
        let (status, body) = self.call_as(key, reqwest::Method::GET, "/key/info", None).await;
        (status == 200).then(|| body["info"]["user_id"].as_str().unwrap_or_default().to_owned())
    }

    /// The user `key` authenticates as, `None` when the proxy refuses the key, or why the proxy could not say:
    /// no answer, a failure of its own (5xx) or too many requests (429), which tell neither that the key works
    /// nor that it does not.
    pub async fn try_key_works(&self, key: &str) -> Result<Option<String>, String> {
        let (status, body) = self.try_call_as(key, reqwest::Method::GET, "/key/info", None).await?;
        if status >= 500 || status == 429 {
            // Not the body: an error about a key may quote part of it.
            return Err(format!("/key/info answered {status}"));
        }
        Ok((status == 200).then(|| body["info"]["user_id"].as_str().unwrap_or_default().to_owned()))
    }

    /// Waits for the proxy's user `user_id` to have `max_budget`.
    pub async fn wait_max_budget(&self, what: &str, deadline: Duration, user_id: &str, max_budget: f64) {
        wait_until(what, deadline, || async {
            let (info, _) = self.try_user(user_id).await?.ok_or("no such user")?;
            match info["max_budget"].as_f64() == Some(max_budget) {
                true => Ok(()),
                false => Err(format!("max_budget {}", info["max_budget"])),
            }
        })
        .await
    }

    /// Waits for `key` to be refused by the proxy (revoked, and out of the proxy's key cache).
    pub async fn wait_key_refused(&self, what: &str, deadline: Duration, key: &str) {
        wait_until(what, deadline, || async {
            match self.try_key_works(key).await? {
                None => Ok(()),
                Some(owner) => Err(format!("the key still authenticates as {owner:?}")),
            }
        })
        .await
    }

    /// Waits for `key` to work, and returns the user it authenticates as.
    pub async fn wait_key_works(&self, what: &str, key: &str) -> String {
        wait_until(what, DEADLINE, || async {
            self.try_key_works(key).await?.ok_or_else(|| String::from("the proxy refuses the key"))
        })
        .await
    }
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A namespace of the test's own, deleted at the end of the test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

static COUNTER: AtomicU16 = AtomicU16::new(0);

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = Client::try_default().await.expect("KUBECONFIG points at a reachable cluster");
        let suffix = format!(
            "{:x}{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
                % 0xfffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name = format!("e2e-{prefix}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        namespaces.create(&PostParams::default(), &ns).await.expect("create test namespace");
        TestNamespace { name, client }
    }

    pub fn users(&self) -> Api<LiteLLMUser> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn user_id(&self, name: &str) -> String {
        format!("{}.{name}", self.name)
    }

    /// Like `apply`, but returns the API server's refusal instead of failing the test.
    pub async fn try_apply(&self, name: &str, spec: Value) -> Result<LiteLLMUser, kube::Error> {
        let object = json!({
            "apiVersion": "litellm-operator.io/v1alpha1",
            "kind": "LiteLLMUser",
            "metadata": { "name": name },
            "spec": spec,
        });
        self.users().patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(&object)).await
    }

    /// Creates or updates a LiteLLMUser from a spec, as `kubectl apply --server-side` would.
    pub async fn apply(&self, name: &str, spec: Value) -> LiteLLMUser {
        let object = json!({
            "apiVersion": "litellm-operator.io/v1alpha1",
            "kind": "LiteLLMUser",
            "metadata": { "name": name },
            "spec": spec,
        });
        self.users()
            .patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|err| panic!("apply {name}: {err}"))
    }

    pub async fn delete(&self, name: &str) {
        self.users().delete(name, &DeleteParams::default()).await.expect("delete LiteLLMUser");
    }

    /// Waits for a condition of `name` to have `status`, and returns the resource then.
    pub async fn wait_condition(&self, name: &str, type_: &str, status: &str) -> LiteLLMUser {
        self.wait_condition_within(name, type_, status, DEADLINE).await
    }

    /// The same with a deadline of the caller's.
    pub async fn wait_condition_within(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        deadline: Duration,
    ) -> LiteLLMUser {
        let users = self.users();
        let start = Instant::now();
        let mut last_seen = String::from("no resource");
        loop {
            // Kept apart from what was seen: a failed read says nothing about the conditions.
            let failed_read = match users.get_opt(name).await {
                Err(err) => format!("; then a failed read: {err}"),
                Ok(None) => {
                    last_seen = String::from("no resource");
                    String::new()
                }
                Ok(Some(user)) => {
                    let generation = user.metadata.generation;
                    let conditions = user.status.as_ref().map(|st| st.conditions.as_slice()).unwrap_or_default();
                    let found = conditions.iter().any(|c| {
                        c.type_ == type_
                            && c.status == status
                            && (c.observed_generation == generation || type_ != "Ready")
                    });
                    if found {
                        return user;
                    }
                    last_seen = format!("generation {generation:?}, {}", describe_conditions(conditions));
                    String::new()
                }
            };
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {name} to have {type_}={status}; last seen: {last_seen}\
                 {failed_read}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_reason(&self, name: &str, reason: &str) -> LiteLLMUser {
        let users = self.users();
        wait_until(&format!("{name} to have Ready reason {reason}"), DEADLINE, || {
            let users = users.clone();
            async move {
                let user = users.get_opt(name).await.map_err(|err| err.to_string())?.ok_or("no resource")?;
                let conditions = user.status.as_ref().map(|st| st.conditions.as_slice()).unwrap_or_default();
                match conditions.iter().find(|c| c.type_ == "Ready") {
                    Some(ready) if ready.reason == reason => Ok(user),
                    _ => Err(describe_conditions(conditions)),
                }
            }
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str) {
        self.wait_gone_within(name, DEADLINE).await
    }

    pub async fn wait_gone_within(&self, name: &str, deadline: Duration) {
        let users = self.users();
        wait_until(&format!("{name} to be deleted"), deadline, || {
            let users = users.clone();
            async move {
                match users.get_opt(name).await.map_err(|err| err.to_string())? {
                    None => Ok(()),
                    Some(user) => Err(format!(
                        "still there, finalizers {:?}, {}",
                        user.metadata.finalizers.unwrap_or_default(),
                        describe_conditions(
                            user.status.as_ref().map(|st| st.conditions.as_slice()).unwrap_or_default()
                        )
                    )),
                }
            }
        })
        .await
    }

    /// The key held in a Secret, once the Secret exists.
    pub async fn key(&self, secret: &str) -> String {
        let secrets = self.secrets();
        // The key itself is never part of what the timeout says.
        wait_until(&format!("Secret {secret}"), DEADLINE, || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt(secret).await.map_err(|err| err.to_string())?.ok_or("no such Secret")?;
                let bytes =
                    s.data.and_then(|mut data| data.remove("LITELLM_API_KEY")).ok_or("no LITELLM_API_KEY in it")?;
                String::from_utf8(bytes.0).map_err(|_| String::from("LITELLM_API_KEY is not UTF-8"))
            }
        })
        .await
    }

    /// kstatus' verdict on a resource (`Current`, `InProgress`, `Failed`, ...), computed by the Go library
    /// Flux uses (hack/kstatus).
    pub fn kstatus(&self, name: &str) -> String {
        let json = Command::new("kubectl")
            .args(["get", "litellmuser", name, "-n", &self.name, "-o", "json"])
            .output()
            .expect("run kubectl");
        assert!(json.status.success(), "kubectl get: {}", String::from_utf8_lossy(&json.stderr));
        let mut child =
            Command::new(env("KSTATUS_BIN")).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run kstatus");
        std::io::Write::write_all(&mut child.stdin.take().expect("kstatus stdin"), &json.stdout).expect("feed kstatus");
        let out = child.wait_with_output().expect("kstatus output");
        String::from_utf8_lossy(&out.stdout).split('\t').next().unwrap_or_default().to_owned()
    }

    /// `kubectl wait --for=condition=Ready` on a resource.
    pub fn kubectl_wait_ready(&self, name: &str) -> bool {
        Command::new("kubectl")
            .args(["wait", "--for=condition=Ready", "--timeout=60s", "-n", &self.name, &format!("litellmuser/{name}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits for an event of `name` with this type and reason (events are published in the background), and
    /// returns all of the resource's events then.
    pub async fn wait_event(&self, name: &str, type_: &str, reason: &str) -> Vec<(String, String, String)> {
        wait_until(&format!("a {type_} event {reason} on {name}"), DEADLINE, || async {
            let events = self.try_events(name).await.map_err(|err| err.to_string())?;
            if events.iter().any(|(t, r, _)| t == type_ && r == reason) {
                return Ok(events);
            }
            // Types and reasons only: the notes are what the tests search for leaked keys.
            let seen: Vec<(&str, &str)> = events.iter().map(|(t, r, _)| (t.as_str(), r.as_str())).collect();
            Err(format!("events {seen:?}"))
        })
        .await
    }

    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        self.try_events(name).await.expect("list events")
    }

    pub async fn try_events(&self, name: &str) -> Result<Vec<(String, String, String)>, kube::Error> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.name);
        let list = events.list(&Default::default()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort, in the background: the namespace controller removes what is left.
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The operator binary as a real process, watching one namespace. With `E2E_OPERATOR_IMAGE` set, the process
/// runs in that container image instead, through `podman run` on the host network with the chart's security
/// settings (`E2E_OPERATOR_PODMAN_FLAGS`, one flag per line, from `hack/image.sh flags`) and the kubeconfig
/// mounted read-only; the arguments and environment are the same.
pub struct Operator {
    child: Child,
    /// The container's name in container mode.
    container: Option<String>,
    pub log: PathBuf,
    /// Where its /metrics, /healthz and /readyz are served.
    pub http_port: u16,
}

#[derive(Clone)]
pub struct OperatorOptions {
    pub litellm_url: String,
    pub master_key: String,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl OperatorOptions {
    pub fn from_env() -> Self {
        OperatorOptions {
            litellm_url: env("LITELLM_URL"),
            master_key: env("LITELLM_MASTER_KEY"),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Runs the operator with this policy (YAML) for its proxy instead of the secure default.
    pub fn with_policy(mut self, yaml: &str) -> Self {
        let path = std::env::temp_dir().join(format!("policy-{}.yaml", COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, yaml).expect("write the policy file");
        self.extra_args.extend(["--policy-file".to_owned(), path.display().to_string()]);
        self
    }
}

/// A port free now, below the kernel's ephemeral range (32768 and up by default): a port handed out for port 0
/// can be taken again as the local end of some outgoing connection before the operator binds it. Each call in
/// this process tries a port no earlier call tried, starting from one that differs per process.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const FIRST: usize = 20_000;
    const COUNT: usize = 12_000;
    let start = std::process::id() as usize * 97;
    (0..COUNT)
        .map(|_| (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

impl Operator {
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, OperatorOptions::from_env())
    }

    pub fn start_with(namespace: &str, options: OperatorOptions) -> Self {
        let dir = std::env::var("E2E_LOG_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("operator-{namespace}-{}.log", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("operator log file");
        let http_port = free_port();
        let listen = format!("127.0.0.1:{http_port}");
        let kubeconfig =
            std::env::var("OPERATOR_KUBECONFIG").or_else(|_| std::env::var("KUBECONFIG")).unwrap_or_default();
        let (mut command, container) = match std::env::var("E2E_OPERATOR_IMAGE") {
            Ok(image) => container_command(&image, namespace, &kubeconfig, &options),
            Err(_) => (Command::new(env("OPERATOR_BIN")), None),
        };
        let child = command
            .args(["run", "--namespaces", namespace, "--resync-interval", "3s"])
            .args(
                if options.extra_args.iter().any(|a| a == "--litellm-timeout") {
                    None
                } else {
                    Some(["--litellm-timeout", "5s"])
                }
                .into_iter()
                .flatten(),
            )
            .args(["--listen", &listen])
            // Only the LiteLLMProxy resources of this test: every test's operator serving every test's proxies
            // would be a load no installation sees.
            .args(["--proxy-selector", &format!("litellm-operator.io/e2e-namespace={namespace}")])
            .args(&options.extra_args)
            .env("KUBECONFIG", if container.is_some() { CONTAINER_KUBECONFIG } else { &kubeconfig })
            .env("LITELLM_URL", &options.litellm_url)
            .env("LITELLM_MASTER_KEY", &options.master_key)
            .env("RUST_LOG", std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            // Every operator of the suite arbitrates user ids in the chart's namespace, as installed operators do.
            .env("CLAIM_NAMESPACE", std::env::var("E2E_LEASE_NAMESPACE").unwrap_or_else(|_| "default".into()))
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the operator binary");
        Operator { child, container, log, http_port }
    }

    /// GET on the operator's own HTTP server: status and body.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        self.try_http_get(path).await.ok()
    }

    /// The same, or why there is no answer.
    pub async fn try_http_get(&self, path: &str) -> Result<(u16, String), String> {
        let failed = |err: reqwest::Error| format!("GET {path}: {}", error_chain(&err));
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.http_port)).await.map_err(failed)?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(failed)?))
    }

    /// Waits for a GET on the operator's HTTP server to answer 200, and returns the body.
    pub async fn wait_http_ok(&self, what: &str, path: &str) -> String {
        wait_until(what, DEADLINE, || async {
            match self.try_http_get(path).await? {
                (200, body) => Ok(body),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&mut self) {
        match &self.container {
            Some(name) => podman(&["kill", "--signal", "TERM", name]),
            None => {
                let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            }
        }
        let _ = self.child.wait();
    }

    /// SIGKILL: the process dies at whatever line it is on.
    pub fn kill(&mut self) {
        if let Some(name) = &self.container {
            // `podman run` is only the client: the container is removed, which kills its process.
            podman(&["rm", "--force", "--time", "0", "--ignore", name]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running (it has not exited, by a crash or otherwise).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the kubeconfig is mounted in container mode.
const CONTAINER_KUBECONFIG: &str = "/etc/litellm-operator/kubeconfig";

/// `podman run` in front of the operator's arguments. The environment is passed by name only (`--env NAME`
/// takes the value from podman's own environment), so the master key is not on a command line.
fn container_command(
    image: &str,
    namespace: &str,
    kubeconfig: &str,
    options: &OperatorOptions,
) -> (Command, Option<String>) {
    let name = format!("e2e-operator-{namespace}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut command = Command::new("podman");
    command.args(["run", "--rm", "--pull=never", "--name", &name, "--network=host"]);
    let flags = std::env::var("E2E_OPERATOR_PODMAN_FLAGS").unwrap_or_default();
    assert!(flags.contains("--read-only"), "E2E_OPERATOR_PODMAN_FLAGS lacks the chart's settings: {flags:?}");
    command.args(flags.lines().map(str::trim).filter(|f| !f.is_empty()));
    command.args(["-v", &format!("{kubeconfig}:{CONTAINER_KUBECONFIG}:ro")]);
    // A policy file is read at the same path inside the container.
    let files = options.extra_args.windows(2).filter(|pair| pair[0] == "--policy-file").map(|pair| &pair[1]);
    for file in files {
        command.args(["-v", &format!("{file}:{file}:ro")]);
    }
    let names = ["KUBECONFIG", "LITELLM_URL", "LITELLM_MASTER_KEY", "RUST_LOG", "CLAIM_NAMESPACE"].into_iter();
    for var in names.chain(options.env.iter().map(|(k, _)| k.as_str())) {
        command.args(["--env", var]);
    }
    command.arg(image);
    (command, Some(name))
}

fn podman(args: &[&str]) {
    let _ = Command::new("podman").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// A TCP relay in front of the proxy that a test can stop and start, so the proxy seems to go away for one
/// operator only, without disturbing tests that share the proxy.
pub struct Relay {
    pub port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    pub async fn start(target_url: &str) -> Self {
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let mut relay = Relay { port, target, task: None };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set, so stopping the relay also cuts open keep-alive connections.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops accepting: new connections are refused, as if the proxy were down.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn resume(&mut self) {
        let listener = wait_until("the relay port to be free again", DEADLINE, || async {
            TcpListener::bind(("127.0.0.1", self.port)).await.map_err(|err| err.to_string())
        })
        .await;
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TLS terminator in front of a plain-http proxy, with a CA of its own: `https://127.0.0.1:<port>` for the
/// operator, and the CA's PEM for a LiteLLMProxy's `caBundle`.
pub struct TlsTerminator {
    pub url: String,
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTerminator {
    pub async fn start(target_url: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "litellm-operator e2e CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("server key");
        let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("SANs");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("server certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("TLS server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS port");
        let port = listener.local_addr().expect("TLS address").port();
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (acceptor, target) = (acceptor.clone(), target.clone());
                tokio::spawn(async move {
                    let (Ok(mut tls), Ok(mut outbound)) =
                        (acceptor.accept(inbound).await, TcpStream::connect(&target).await)
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                });
            }
        });
        TlsTerminator { url: format!("https://127.0.0.1:{port}"), ca_pem: ca_cert.pem(), task }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
