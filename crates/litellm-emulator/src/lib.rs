//! An emulator of the LiteLLM proxy's admin API, for tests and benchmarks that should not need a real proxy.
//!
//! It answers the user, key and team endpoints the operator uses, the way LiteLLM 1.108.7
//! ([`Generation::Newer`]) or 1.80.5 ([`Generation::Older`]) does, down to status codes, error shapes and the
//! quirks (the upsert of `/user/update`, the `/user/info` stub of older proxies, the substring match of a single
//! `user_ids` on `/user/list`, …). `tests/contract.rs` runs the same requests against the emulator and against
//! real proxies and compares the answers, so a difference shows as a failing test rather than as a surprise in
//! production.
//!
//! On top of the API it can misbehave on purpose ([`Fault`]: latency, 5xx, 429 with `Retry-After`, a dropped
//! connection, a request that never gets an answer, one that is performed but whose answer is lost, or requests
//! held and then performed together as in a race), record usage as if users had made calls
//! ([`EmulatorHandle::record_usage`]), and count requests per endpoint.
//!
//! State lives in memory behind a mutex; nothing is persisted. Keys are kept only as SHA-256 hashes.
//!
//! Its clock can be moved forward ([`EmulatorHandle::advance_clock`]), so that keys made with a `duration` expire
//! without a test waiting for them.
//!
//! Besides the Rust API, everything is reachable over HTTP with the master key, for the standalone
//! `litellm-emulator` binary: `POST /emulator/faults`, `DELETE /emulator/faults`,
//! `POST /emulator/spend`, `POST /emulator/clock`, `POST /emulator/reset` and `GET /emulator/stats`.

mod clock;
mod faults;
mod reply;
mod routes;
mod server;
mod store;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    ops::Deref,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};

pub use faults::{Fault, FaultKind, Trigger};

use faults::FaultBook;
use store::Store;

/// The master key of an emulator when none is configured. Fine for a test double; never for a real proxy.
pub const DEFAULT_MASTER_KEY: &str = "sk-emulator-master-key";

/// Which LiteLLM the emulator behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// Like 1.80.5 (and 1.74.9): a repeated `/user/new` answers 200 (and mints another key unless
    /// `auto_create_key` is false), `/user/info` of an unknown user answers a 200 stub, a non-admin key on an
    /// admin route gets 401, error `param` is the string `"None"`.
    Older,
    /// Like 1.108.7 (and 1.97.0): 409 for a repeated id or e-mail, 404 for an unknown user, 403 for a non-admin
    /// on `/user/list`, `budget_duration` validated.
    Newer,
}

impl Generation {
    /// The real proxy version this generation was checked against.
    pub fn version(self) -> &'static str {
        match self {
            Generation::Older => "1.80.5",
            Generation::Newer => "1.108.7",
        }
    }
}

impl FromStr for Generation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "older" | "1.80.5" | "1.74.9" => Ok(Generation::Older),
            "newer" | "1.108.7" | "1.97.0" => Ok(Generation::Newer),
            other => Err(format!("unknown generation '{other}': use newer or older")),
        }
    }
}

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub generation: Generation,
    pub master_key: String,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Seed of the generator behind probabilistic faults and generated ids, so that a run can be repeated.
    pub seed: u64,
}

impl EmulatorConfig {
    pub fn new(generation: Generation) -> Self {
        EmulatorConfig { generation, master_key: DEFAULT_MASTER_KEY.to_owned(), port: 0, seed: 0 }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig::new(Generation::Newer)
    }
}

/// Something the emulator's own API was asked to do and cannot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmulatorError {
    #[error("'{0}' is not a date like 2025-01-31")]
    InvalidDate(String),
    #[error("spend must be a finite number >= 0, not {0}")]
    InvalidSpend(f64),
}

/// Usage to record as if a user had made calls ([`EmulatorHandle::record_usage`]). Each user, day, model and key
/// is one row of LiteLLM's daily table, which `/user/daily/activity` pages over; recording the same four again
/// adds to that row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageRecord {
    pub user_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub model: Option<String>,
    /// The hash of the key the calls were made with.
    pub api_key: Option<String>,
    pub spend: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u64,
}

/// What the server and every handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    generation: Generation,
    store: Mutex<Store>,
    faults: Mutex<FaultBook>,
    counts: Mutex<BTreeMap<String, u64>>,
}

/// Locks a mutex; a panic in another holder (a bug) must not wedge the emulator, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn faults(&self) -> MutexGuard<'_, FaultBook> {
        lock(&self.faults)
    }

    fn count(&self, endpoint: &str) {
        *lock(&self.counts).entry(endpoint.to_owned()).or_default() += 1;
    }
}

/// Controls a running emulator from the same process: faults, spend, counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
}

impl EmulatorHandle {
    pub fn generation(&self) -> Generation {
        self.shared.generation
    }

    /// Adds a fault; faults already set stay.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.faults().add(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Records usage for `user_id` on `date` (`YYYY-MM-DD`), with no model or key: adds `spend` to the user's
    /// running spend (when the user exists) and to `/user/daily/activity`.
    pub fn record_spend(
        &self,
        user_id: &str,
        date: &str,
        spend: f64,
        prompt_tokens: u64,
        completion_tokens: u64,
        requests: u64,
    ) -> Result<(), EmulatorError> {
        let (user_id, date) = (user_id.to_owned(), date.to_owned());
        self.record_usage(&UsageRecord {
            user_id,
            date,
            spend,
            prompt_tokens,
            completion_tokens,
            requests,
            ..Default::default()
        })
    }

    /// Records usage in the daily row of its user, day, model and key, and adds its spend to the user's running
    /// spend (when the user exists).
    pub fn record_usage(&self, record: &UsageRecord) -> Result<(), EmulatorError> {
        self.shared.store().record_usage(record)
    }

    /// Moves the emulator's clock forward by `by`: keys whose expiry it passes stop authenticating, and new
    /// timestamps are that much later. [`EmulatorHandle::reset`] puts it back.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.store().advance_clock(by);
    }

    /// Requests received per endpoint path (for example `"/user/info"`), including refused and faulted ones.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counts).clone()
    }

    /// Forgets all users, keys, teams, usage, faults and counts, and puts the clock back.
    pub fn reset(&self) {
        self.shared.store().clear();
        self.shared.faults().clear();
        lock(&self.shared.counts).clear();
    }
}

/// A running emulator. Dropping it stops the server and closes every connection.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    master_key: String,
    handle: EmulatorHandle,
    server: JoinHandle<()>,
}

impl Emulator {
    /// Binds 127.0.0.1 on `config.port` and starts answering. Needs a Tokio runtime.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            generation: config.generation,
            store: Mutex::new(Store::new(config.generation, &config.master_key, config.seed)),
            faults: Mutex::new(FaultBook::new(config.seed)),
            counts: Mutex::new(BTreeMap::new()),
        });
        let router = routes::router(shared.clone());
        let server = tokio::spawn(server::serve(listener, router));
        Ok(Emulator { addr, master_key: config.master_key, handle: EmulatorHandle { shared }, server })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn master_key(&self) -> &str {
        &self.master_key
    }

    /// A handle that outlives borrows of the emulator, e.g. to move into another task.
    pub fn handle(&self) -> EmulatorHandle {
        self.handle.clone()
    }
}

/// An emulator is controlled like its handle: `emulator.set_fault(…)`, `emulator.record_spend(…)`, ….
impl Deref for Emulator {
    type Target = EmulatorHandle;

    fn deref(&self) -> &EmulatorHandle {
        &self.handle
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Aborting the accept loop drops its set of connection tasks, which aborts them too.
        self.server.abort();
    }
}
