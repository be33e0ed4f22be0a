use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use url::Url;

use crate::metrics::Metrics;

use super::{
    error::{ApiError, error_message},
    types::{ActivityTotals, KeyListPage, KeyRecord, UserInfo, UserListPage, UserRecord},
};

/// The proxy's master key. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct MasterKey(String);

impl MasterKey {
    pub fn new(value: impl Into<String>) -> Self {
        MasterKey(value.into().trim().to_owned())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// How to reach the proxy.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub base_url: Url,
    pub master_key: MasterKey,
    /// PEM certificates to trust for an HTTPS proxy URL, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// How long an idle connection is kept for the next call. Below the proxy's own keep-alive timeout (uvicorn's
    /// is 5 s), so that no request goes out on a connection the proxy is closing.
    pub idle_timeout: Duration,
}

/// The default [`ClientConfig::idle_timeout`]: below uvicorn's default keep-alive of 5 s, with room for the two
/// clocks' timers.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// A client for LiteLLM's admin API, authenticated with the master key.
#[derive(Clone, Debug)]
pub struct LiteLlmClient {
    http: reqwest::Client,
    base_url: Url,
    master_key: MasterKey,
    metrics: Option<Arc<Metrics>>,
    generation: Arc<OnceLock<Generation>>,
    /// The proxy's clock minus the operator's, in seconds, from the `Date` of its last answer (`i64::MIN`
    /// until one came).
    clock_offset: Arc<std::sync::atomic::AtomicI64>,
    /// When the proxy last answered a call with success (Unix seconds, 0 before it did).
    last_success: Arc<std::sync::atomic::AtomicI64>,
}

/// The two behaviours of LiteLLM's admin API (see `shared/reference/litellm-user-api.md`, 1.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// About 1.80.7 and before: 200 stubs for unknown users, duplicates accepted, nulls ignored on update.
    Older,
    /// 1.80.8 and after: 404 for unknown users, 409 for duplicates.
    Newer,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Older => "older",
            Generation::Newer => "newer",
        }
    }
}

/// Result of `POST /user/new`.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The proxy stored the user; its answer describes the user, when it could be read.
    Created(Option<Box<UserRecord>>),
    /// The id or the e-mail address is taken (newer proxies answer 409; older ones 400 for an address, and
    /// nothing for an id); the message says which.
    Conflict { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("the CA bundle holds no usable PEM certificate: {0}")]
    ParseCa(#[source] reqwest::Error),
    #[error("the CA bundle holds no PEM certificate")]
    NoCertificate,
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

impl LiteLlmClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientBuildError> {
        // rustls needs a process-wide crypto provider; a second install is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(config.idle_timeout)
            .user_agent(concat!("litellm-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(ClientBuildError::ParseCa)?;
            if certs.is_empty() {
                return Err(ClientBuildError::NoCertificate);
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(ClientBuildError::Build)?;
        let mut base_url = config.base_url;
        // Url::join drops the last path segment unless the base ends with '/'.
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        Ok(LiteLlmClient {
            http,
            base_url,
            master_key: config.master_key,
            metrics: None,
            generation: Arc::default(),
            clock_offset: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            last_success: Arc::default(),
        })
    }

    /// The proxy's base URL, which also names the proxy (claims on user ids are per proxy).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Counts and times every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether one of this client's calls succeeded within `within`: as good a sign the proxy is reachable as
    /// a probe, and free.
    pub fn answered_within(&self, within: Duration) -> bool {
        let last = self.last_success.load(std::sync::atomic::Ordering::Relaxed);
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        last > 0 && now.saturating_sub(last) <= within.as_secs() as i64
    }

    /// Whether the proxy answers its liveness probe (counted and timed like every other call).
    pub async fn reachable(&self) -> bool {
        self.call("/health/liveliness", Method::GET, &[], None).await.is_ok()
    }

    /// `GET /user/info`: the user row and its keys, or `None` when there is no such user (404 on newer proxies,
    /// a stub without `user_id` on older ones).
    pub async fn user_info(&self, user_id: &str) -> Result<Option<(UserRecord, Vec<KeyRecord>)>, ApiError> {
        const EP: &str = "/user/info";
        match self.call(EP, Method::GET, &[("user_id", user_id)], None).await {
            Ok(body) => Ok(parse::<UserInfo>(EP, &body)?.into_record()),
            Err(err) if err.status() == Some(404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `POST /user/new`, with the user as the proxy's answer describes it (it echoes the stored fields, such as a
    /// computed `budget_reset_at`).
    pub async fn user_new(&self, body: &Value) -> Result<Created, ApiError> {
        match self.call("/user/new", Method::POST, &[], Some(body)).await {
            Ok(answer) => Ok(Created::Created(serde_json::from_str(&answer).ok().map(Box::new))),
            Err(ApiError::Status { status: 409, message, .. }) => Ok(Created::Conflict { message }),
            // Older proxies refuse a taken e-mail address with a 400 that says so.
            Err(ApiError::Status { status: 400, message, .. }) if message.contains("already exists") => {
                Ok(Created::Conflict { message })
            }
            Err(err) => Err(err),
        }
    }

    /// `POST /user/update`; returns the row as stored afterwards. LiteLLM creates a missing user here, so only
    /// call it for a user that was just seen.
    pub async fn user_update(&self, body: &Value) -> Result<Option<UserRecord>, ApiError> {
        const EP: &str = "/user/update";
        let body = self.call(EP, Method::POST, &[], Some(body)).await?;
        let value: Value = parse(EP, &body)?;
        Ok(value.get("data").and_then(|data| serde_json::from_value(data.clone()).ok()))
    }

    /// `POST /user/delete`, which also deletes the user's keys. `Ok(false)` when the user did not exist.
    pub async fn user_delete(&self, user_id: &str) -> Result<bool, ApiError> {
        match self.call("/user/delete", Method::POST, &[], Some(&json!({ "user_ids": [user_id] }))).await {
            Ok(_) => Ok(true),
            Err(err) if err.status() == Some(404) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `GET /user/list`, one page, in user id order so that pages stay put while users are created.
    pub async fn user_list(&self, page: i64, page_size: i64) -> Result<UserListPage, ApiError> {
        const EP: &str = "/user/list";
        let (page, page_size) = (page.to_string(), page_size.to_string());
        let query = [("page", page.as_str()), ("page_size", &page_size), ("sort_by", "user_id"), ("sort_order", "asc")];
        let body = self.call(EP, Method::GET, &query, None).await?;
        parse(EP, &body)
    }

    /// The users whose e-mail address is `email`, ignoring case as the proxy's uniqueness check does. The proxy
    /// matches parts of addresses, so its answer is narrowed here.
    pub async fn users_with_email(&self, email: &str) -> Result<Vec<UserRecord>, ApiError> {
        const EP: &str = "/user/list";
        let body = self.call(EP, Method::GET, &[("user_email", email), ("page_size", "100")], None).await?;
        let page: UserListPage = parse(EP, &body)?;
        let same = |user: &UserRecord| user.user_email.as_deref().is_some_and(|held| held.eq_ignore_ascii_case(email));
        Ok(page.users.into_iter().filter(same).collect())
    }

    /// `GET /key/list`, one page of full key records.
    pub async fn key_list(&self, page: i64, size: i64, user_id: Option<&str>) -> Result<KeyListPage, ApiError> {
        const EP: &str = "/key/list";
        let (page, size) = (page.to_string(), size.to_string());
        let mut query = vec![("page", page.as_str()), ("size", &size), ("return_full_object", "true")];
        if let Some(user_id) = user_id {
            query.push(("user_id", user_id));
        }
        let body = self.call(EP, Method::GET, &query, None).await?;
        parse(EP, &body)
    }

    /// `POST /key/update` of the key with this hash.
    pub async fn key_update(&self, hash: &str, fields: &Value) -> Result<(), ApiError> {
        let mut body = json!({ "key": hash });
        if let (Value::Object(body), Value::Object(fields)) = (&mut body, fields) {
            body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.call("/key/update", Method::POST, &[], Some(&body)).await.map(drop)
    }

    /// `POST /key/generate` with a key value chosen by the operator. Re-sending the same key is a no-op on the
    /// proxy, which makes this call safe to retry.
    pub async fn key_register(&self, user_id: &str, key: &str, extra: &Value) -> Result<(), ApiError> {
        let mut body = json!({ "user_id": user_id, "key": key });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.call("/key/generate", Method::POST, &[], Some(&body)).await.map(drop)
    }

    /// `POST /key/delete` by key hash; keys that are already gone are fine.
    pub async fn key_delete(&self, hashes: &[String]) -> Result<(), ApiError> {
        match self.call("/key/delete", Method::POST, &[], Some(&json!({ "keys": hashes }))).await {
            Ok(_) => Ok(()),
            Err(err) if err.status() == Some(404) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// `POST /team/member_add` as a plain member.
    pub async fn team_member_add(&self, team_id: &str, user_id: &str) -> Result<(), ApiError> {
        let body = json!({ "team_id": team_id, "member": { "role": "user", "user_id": user_id } });
        self.call("/team/member_add", Method::POST, &[], Some(&body)).await.map(drop)
    }

    /// `POST /team/member_delete`.
    pub async fn team_member_delete(&self, team_id: &str, user_id: &str) -> Result<(), ApiError> {
        let body = json!({ "team_id": team_id, "user_id": user_id });
        self.call("/team/member_delete", Method::POST, &[], Some(&body)).await.map(drop)
    }

    /// Which generation the proxy behaves like, found out once by asking for a user that cannot exist: newer
    /// proxies answer 404, older ones a 200 stub.
    pub async fn generation(&self) -> Result<Generation, ApiError> {
        if let Some(known) = self.generation.get() {
            return Ok(*known);
        }
        const EP: &str = "/user/info";
        let probe = [("user_id", "litellm-operator-generation-probe")];
        let found = match self.call(EP, Method::GET, &probe, None).await {
            Ok(_) => Generation::Older,
            Err(err) if err.status() == Some(404) => Generation::Newer,
            Err(err) => return Err(err),
        };
        Ok(*self.generation.get_or_init(|| found))
    }

    /// `GET /user/daily/activity` totals for one user between two dates (`YYYY-MM-DD`, inclusive), over every
    /// page (LiteLLM totals each page on its own). Older proxies ignore `user_id` for the master key and answer
    /// for every user, so there the totals are those of the user's key (`key_hash`), the only key the operator
    /// leaves a managed user.
    pub async fn daily_activity(
        &self,
        user_id: &str,
        key_hash: Option<&str>,
        start: &str,
        end: &str,
    ) -> Result<ActivityTotals, ApiError> {
        const EP: &str = "/user/daily/activity";
        /// A bound on pages, so that a proxy that always says `has_more` cannot keep us here.
        const MAX_PAGES: u32 = 50;
        let filter = match (self.generation().await?, key_hash) {
            (Generation::Newer, _) => ("user_id", user_id),
            (Generation::Older, Some(hash)) => ("api_key", hash),
            (Generation::Older, None) => return Ok(ActivityTotals::default()),
        };
        let mut totals = ActivityTotals::default();
        for page in 1..=MAX_PAGES {
            let page = page.to_string();
            let query = [filter, ("start_date", start), ("end_date", end), ("page_size", "1000"), ("page", &page)];
            let body = self.call(EP, Method::GET, &query, None).await?;
            let value: Value = parse(EP, &body)?;
            let this: ActivityTotals =
                value.get("metadata").and_then(|m| serde_json::from_value(m.clone()).ok()).unwrap_or_default();
            totals = totals.plus(this);
            if !this.has_more {
                break;
            }
        }
        Ok(totals)
    }

    /// What the proxy's clock reads now (to the second), as its last answer's `Date` header showed; `None`
    /// before any answer carried one. Its keys' `created_at` come from that clock, not the operator's.
    pub fn proxy_now(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        let offset = self.clock_offset.load(std::sync::atomic::Ordering::Relaxed);
        let now = k8s_openapi::jiff::Timestamp::now();
        (offset != i64::MIN).then(|| now + k8s_openapi::jiff::SignedDuration::from_secs(offset))
    }

    fn note_proxy_clock(&self, date: Option<&reqwest::header::HeaderValue>) {
        let Some(date) = date.and_then(|d| d.to_str().ok()) else { return };
        let Ok(at) = k8s_openapi::jiff::fmt::rfc2822::parse(date) else { return };
        let offset = at.timestamp().as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
        self.clock_offset.store(offset, std::sync::atomic::Ordering::Relaxed);
    }

    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<String, ApiError> {
        let started = Instant::now();
        let result = self.send(endpoint, method, query, body).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(ApiError::Status { status, .. }) => status.to_string(),
                Err(ApiError::Transport { .. }) => "transport".to_owned(),
                Err(ApiError::Decode { .. }) => "decode".to_owned(),
            };
            metrics.litellm_call(endpoint, outcome, started.elapsed());
        }
        result
    }

    async fn send(
        &self,
        endpoint: &'static str,
        method: Method,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<String, ApiError> {
        let url = self
            .base_url
            .join(endpoint.trim_start_matches('/'))
            .map_err(|err| ApiError::Transport { endpoint, reason: err.to_string() })?;
        let request = || {
            let request = self.http.request(method.clone(), url.clone()).bearer_auth(&self.master_key.0).query(query);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        // A request that failed before any answer is sent once more, on another connection, when that cannot
        // act twice: the connection it went out on may have been closing just then.
        let response = match request().send().await {
            Ok(response) => response,
            Err(err) if Replay::of(endpoint, &method).allows(&err) => {
                let again = request().send().await;
                if let Some(metrics) = &self.metrics {
                    metrics.litellm_retry(endpoint, if again.is_ok() { "recovered" } else { "failed" });
                }
                again.map_err(|err| ApiError::transport(endpoint, &err))?
            }
            Err(err) => return Err(ApiError::transport(endpoint, &err)),
        };
        let status = response.status();
        self.note_proxy_clock(response.headers().get(header::DATE));
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(|err| ApiError::transport(endpoint, &err))?;
        if status.is_success() {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            self.last_success.store(now, std::sync::atomic::Ordering::Relaxed);
            return Ok(text);
        }
        let message = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // LiteLLM echoes parts of the presented key in some versions; say only what matters.
            "the master key was refused".to_owned()
        } else {
            error_message(&text)
        };
        Err(ApiError::Status { endpoint, status: status.as_u16(), message, retry_after })
    }
}

/// Whether a request that failed before the proxy answered may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    /// Sending it twice does what sending it once does: reads, updates to given values, deletions, and
    /// registering a key value the operator chose (a second `/key/generate` of the same value changes nothing).
    Idempotent,
    /// Only when it certainly never reached the proxy: a second `/user/new` would answer 409 for the user the
    /// first one created, a second `/team/member_add` that the user is a member already.
    IfUnsent,
}

impl Replay {
    fn of(endpoint: &str, method: &Method) -> Self {
        match endpoint {
            _ if method == Method::GET => Replay::Idempotent,
            "/user/update" | "/user/delete" | "/key/update" | "/key/delete" | "/key/generate" => Replay::Idempotent,
            _ => Replay::IfUnsent,
        }
    }

    /// A timeout is never replayed: the proxy may still be working on the request, and waiting as long again is
    /// what backoff is for.
    fn allows(self, err: &reqwest::Error) -> bool {
        if err.is_timeout() {
            return false;
        }
        let hyper = source_of::<hyper::Error>(err);
        let unsent = err.is_connect() || hyper.is_some_and(hyper::Error::is_canceled);
        let lost = hyper.is_some_and(|h| h.is_incomplete_message() || h.is_closed())
            || source_of::<std::io::Error>(err).is_some_and(|io| {
                use std::io::ErrorKind::*;
                matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
            });
        match self {
            Replay::Idempotent => unsent || lost,
            Replay::IfUnsent => unsent,
        }
    }
}

/// The first error of type `T` in `err`'s chain of sources.
fn source_of<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

fn parse<T: serde::de::DeserializeOwned>(endpoint: &'static str, body: &str) -> Result<T, ApiError> {
    serde_json::from_str(body).map_err(|err| ApiError::Decode { endpoint, reason: err.to_string() })
}
