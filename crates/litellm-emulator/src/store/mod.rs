//! The emulated proxy's database and what each admin endpoint does to it.
//!
//! Every behaviour here was observed on the real proxies (1.108.7 for [`Generation::Newer`], 1.80.5 for
//! [`Generation::Older`]; `shared/testbed/litellm/BEHAVIOUR.md` and `tests/contract/`), or is described in
//! `shared/reference/litellm-user-api.md`. Where the two generations differ, the code says so next to the branch.

mod activity;
mod keys;
mod render;
mod teams;
mod users;

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    Generation,
    clock::{self, Instant},
    faults::SplitMix64,
    reply::{Issue, Param, Reply, as_f64, as_i64, is_empty},
};

/// The id LiteLLM gives the master key's user; teams created with the master key get it as an admin member.
const ADMIN_USER_ID: &str = "default_user_id";

/// Fields that `/user/new` and `/user/update` move into `metadata`.
const METADATA_FIELDS: &[&str] = &["model_rpm_limit", "model_tpm_limit"];

/// Who sent a request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Caller {
    /// The master key.
    Admin,
    /// A key of the key table (a non-admin: the emulator gives keys no role).
    Key { hash: String, user_id: Option<String> },
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Access {
    /// Only the master key.
    Admin,
    /// Any valid key (`/key/info`).
    AnyKey,
}

#[derive(Clone, Debug)]
struct User {
    user_id: String,
    user_alias: Option<String>,
    user_email: Option<String>,
    user_role: Option<String>,
    teams: Vec<String>,
    max_budget: Option<f64>,
    spend: f64,
    budget_duration: Option<String>,
    budget_reset_at: Option<String>,
    models: Vec<Value>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    metadata: Map<String, Value>,
    model_max_budget: Map<String, Value>,
    allowed_cache_controls: Vec<Value>,
    sso_user_id: Option<String>,
    /// Set when `object_permission` was sent (newer proxies); the object itself reads back as `null`.
    object_permission_id: Option<String>,
    created_at: String,
    updated_at: String,
    /// Creation order: `/user/list` is newest first, and timestamps can tie.
    seq: u64,
}

impl User {
    fn new(user_id: String, now: &str, seq: u64) -> Self {
        User {
            user_id,
            user_alias: None,
            user_email: None,
            user_role: None,
            teams: Vec::new(),
            max_budget: None,
            spend: 0.0,
            budget_duration: None,
            budget_reset_at: None,
            models: Vec::new(),
            tpm_limit: None,
            rpm_limit: None,
            max_parallel_requests: None,
            metadata: Map::new(),
            model_max_budget: Map::new(),
            allowed_cache_controls: Vec::new(),
            sso_user_id: None,
            object_permission_id: None,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            seq,
        }
    }

    /// Writes one user-table column from an already validated request value; `null` clears it.
    fn set(&mut self, field: &str, value: &Value, now: Instant) {
        let text = || value.as_str().map(str::to_owned);
        let list = || value.as_array().cloned().unwrap_or_default();
        match field {
            "user_alias" => self.user_alias = text(),
            "user_email" => self.user_email = text(),
            "user_role" => self.user_role = text(),
            "sso_user_id" => self.sso_user_id = text(),
            "max_budget" => self.max_budget = as_f64(value),
            "spend" => self.spend = as_f64(value).unwrap_or(0.0),
            "tpm_limit" => self.tpm_limit = as_i64(value),
            "rpm_limit" => self.rpm_limit = as_i64(value),
            "max_parallel_requests" => self.max_parallel_requests = as_i64(value),
            "models" => self.models = list(),
            "allowed_cache_controls" => self.allowed_cache_controls = list(),
            "metadata" => self.metadata = value.as_object().cloned().unwrap_or_default(),
            "model_max_budget" => self.model_max_budget = value.as_object().cloned().unwrap_or_default(),
            "budget_duration" => {
                self.budget_duration = text();
                // LiteLLM recomputes the reset time whenever the duration changes.
                self.budget_reset_at = self.budget_duration.as_deref().map(|d| clock::budget_reset_at(d, now));
            }
            _ => {}
        }
    }

    /// `model_rpm_limit`, `model_tpm_limit`: stored inside `metadata`.
    fn merge_metadata_fields(&mut self, body: &Map<String, Value>) {
        self.metadata.extend(metadata_fields(body));
    }
}

#[derive(Clone, Debug)]
struct Key {
    /// SHA-256 of the key: the only form in which a key is kept, as LiteLLM does.
    hash: String,
    /// `sk-...` and the key's last four characters.
    key_name: String,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    models: Vec<Value>,
    /// An object, or `null` once `/key/update` set it so.
    metadata: Value,
    /// An object, or `null` once `/key/update` set it so.
    aliases: Value,
    max_budget: Option<f64>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    budget_duration: Option<String>,
    /// After this moment the key no longer authenticates (it stays listed).
    expires: Option<Instant>,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
    /// Creation order: `/key/list` is newest first, and timestamps can tie.
    seq: u64,
}

impl Key {
    /// A key with nothing but its value, owner and creation time set.
    fn new(plaintext: &str, user_id: Option<String>, now: Instant, seq: u64) -> Self {
        Key {
            hash: sha256_hex(plaintext),
            key_name: key_name(plaintext),
            key_alias: None,
            user_id,
            team_id: None,
            models: Vec::new(),
            metadata: json!({}),
            aliases: json!({}),
            max_budget: None,
            tpm_limit: None,
            rpm_limit: None,
            max_parallel_requests: None,
            budget_duration: None,
            expires: None,
            created_by: None,
            created_at: now.timestamp(),
            updated_at: now.timestamp(),
            seq,
        }
    }

    fn is_expired(&self, now: Instant) -> bool {
        // The proxy's clock has microseconds and ours milliseconds: a key made with `duration: "0s"` and used within
        // the same millisecond has, on the proxy, already passed its expiry, so the moment itself counts as expired.
        self.expires.is_some_and(|expires| expires <= now)
    }
}

#[derive(Clone, Debug)]
struct Member {
    user_id: String,
    user_email: Option<String>,
    role: String,
}

#[derive(Clone, Debug)]
struct Team {
    team_id: String,
    team_alias: Option<String>,
    members: Vec<Member>,
    metadata: Map<String, Value>,
    models: Vec<Value>,
    max_budget: Option<f64>,
    created_at: String,
    updated_at: String,
}

/// One row of `LiteLLM_DailyUserSpend`: a user's usage on one day with one model and key.
#[derive(Clone, Debug)]
struct DailyRow {
    date: String,
    user_id: String,
    model: Option<String>,
    api_key: Option<String>,
    usage: Usage,
}

/// Usage summed over some rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Usage {
    spend: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    requests: u64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
        self.spend += other.spend;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.requests += other.requests;
    }
}

/// Which view of a user row to render; the proxies add and drop fields per endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum View {
    Info,
    Update,
    List,
}

/// The emulated database.
#[derive(Debug)]
pub(crate) struct Store {
    generation: Generation,
    master_hash: String,
    users: BTreeMap<String, User>,
    /// By key hash.
    keys: BTreeMap<String, Key>,
    teams: BTreeMap<String, Team>,
    /// In the order they were first written, which is how rows of one day are paged.
    daily: Vec<DailyRow>,
    seq: u64,
    /// Ids and keys; seeded, so runs can be repeated (keys are then predictable, which is fine in a test double).
    rng: SplitMix64,
    /// How far the emulator's clock is ahead of the system clock ([`Store::advance_clock`]).
    clock_offset_ms: i64,
}

impl Store {
    pub(crate) fn new(generation: Generation, master_key: &str, seed: u64) -> Self {
        Store {
            generation,
            master_hash: sha256_hex(master_key),
            users: BTreeMap::new(),
            keys: BTreeMap::new(),
            teams: BTreeMap::new(),
            daily: Vec::new(),
            seq: 0,
            // Not the fault generator's sequence, so that ids do not shift when faults draw numbers.
            rng: SplitMix64(seed ^ 0xA5A5_A5A5_A5A5_A5A5),
            clock_offset_ms: 0,
        }
    }

    /// Forgets every user, key, team and usage record, and puts the clock back.
    pub(crate) fn clear(&mut self) {
        self.users.clear();
        self.keys.clear();
        self.teams.clear();
        self.daily.clear();
        self.clock_offset_ms = 0;
    }

    /// The emulator's time: the system clock plus whatever [`Store::advance_clock`] added.
    pub(crate) fn now(&self) -> Instant {
        Instant::now().plus_millis(self.clock_offset_ms)
    }

    /// Moves the emulator's clock forward, so that keys expire without a test waiting for them.
    pub(crate) fn advance_clock(&mut self, by: std::time::Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.clock_offset_ms = self.clock_offset_ms.saturating_add(millis);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// A new plaintext key like LiteLLM's: `sk-` and 22 URL-safe characters (16 random bytes).
    fn new_key(&mut self) -> String {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: the seeded generator still gives unique keys within this emulator.
            let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
            bytes[..8].copy_from_slice(&a.to_le_bytes());
            bytes[8..].copy_from_slice(&b.to_le_bytes());
        }
        format!("sk-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    // ---------- authentication ----------

    /// Checks the `Authorization` header the way LiteLLM does (BEHAVIOUR.md rows 21-25).
    pub(crate) fn authorize(&self, authorization: Option<&str>, route: &str, access: Access) -> Result<Caller, Reply> {
        let generation = self.generation;
        let auth_error = |message: String| Reply::envelope(401, message, "auth_error", Param::NoneText);
        let presented = authorization.map(str::trim).unwrap_or_default();
        if presented.is_empty() {
            return Err(auth_error("Authentication Error, No api key passed in.".into()));
        }
        let Some(key) = presented.strip_prefix("Bearer ").map(str::trim) else {
            return Err(auth_error(
                "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.".into(),
            ));
        };
        if key.is_empty() {
            return Err(auth_error("Authentication Error, No api key passed in.".into()));
        }
        if !key.starts_with("sk-") {
            return Err(auth_error(match generation {
                // 1.108.7 masks what it received; 1.80.5 echoes it.
                Generation::Newer => {
                    format!("LiteLLM Virtual Key expected. Received={}, expected to start with 'sk-'.", mask(key))
                }
                Generation::Older => format!(
                    "Authentication Error, LiteLLM Virtual Key expected. Received={key}, expected to start with 'sk-'."
                ),
            }));
        }
        let hash = sha256_hex(key);
        if hash == self.master_hash {
            return Ok(Caller::Admin);
        }
        let Some(stored) = self.keys.get(&hash) else {
            let message = match generation {
                Generation::Newer => "Authentication Error, Invalid API key provided.".to_owned(),
                Generation::Older => format!(
                    "Authentication Error, Invalid proxy server token passed. Received API Key = {}, Key Hash \
                     (Token) ={hash}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
                    key_name(key)
                ),
            };
            return Err(Reply::envelope(401, message, "token_not_found_in_db", Param::Named("key")));
        };
        let now = self.now();
        if stored.is_expired(now) {
            return Err(expired(generation, stored, now));
        }
        let caller = Caller::Key { hash, user_id: stored.user_id.clone() };
        match access {
            Access::AnyKey => Ok(caller),
            Access::Admin => Err(self.not_admin(route, stored.user_id.as_deref())),
        }
    }

    /// A non-admin key on an admin route (BEHAVIOUR.md row 21 and difference 5).
    fn not_admin(&self, route: &str, user_id: Option<&str>) -> Reply {
        if self.generation == Generation::Newer && route == "/user/list" {
            return Reply::detail(403, "Only proxy admins and organization admins can list users.");
        }
        let user = user_id.and_then(|id| self.users.get(id));
        let role = user.and_then(|user| user.user_role.as_deref()).unwrap_or("unknown");
        let shown = mask_user_id(self.generation, user.map_or("unknown", |user| user.user_id.as_str()));
        Reply::envelope(
            401,
            format!(
                "Authentication Error, Only proxy admin can be used to generate, delete, update info for new \
                 keys/users/teams. Route={route}. Your role={role}. Your user_id={shown}"
            ),
            "auth_error",
            Param::NoneText,
        )
    }

    fn user_with_email(&self, email: &str) -> Option<&User> {
        let email = email.to_lowercase();
        self.users.values().find(|user| user.user_email.as_ref().is_some_and(|mine| mine.to_lowercase() == email))
    }
}

/// An expired key presented for authentication. 1.108.7 answers 401 and shows the key as `sk-...` and four
/// characters; 1.80.5 answers 400 and shows it whole. Both show the key or its hash, depending on LiteLLM's cache;
/// the emulator shows the hash, as both do for a key they have not cached yet.
fn expired(generation: Generation, key: &Key, now: Instant) -> Reply {
    let expires = key.expires.map(Instant::python).unwrap_or_default();
    let message =
        format!("Authentication Error - Expired Key. Key Expiry time {expires} and current time {}", now.python());
    let (status, shown) = match generation {
        Generation::Newer => (401, key_name(&key.hash)),
        Generation::Older => (400, key.hash.clone()),
    };
    Reply::envelope(status, message, "expired_key", Param::Shown(shown))
}

/// The fields of a request that LiteLLM moves into `metadata`, when they are not empty.
fn metadata_fields(body: &Map<String, Value>) -> impl Iterator<Item = (String, Value)> + '_ {
    METADATA_FIELDS
        .iter()
        .filter_map(|field| body.get(*field).filter(|value| !is_empty(value)).map(|v| ((*field).to_owned(), v.clone())))
}

/// A request's `metadata` with the fields LiteLLM moves into it, as `/user/new` stores it on its key and echoes it.
fn request_metadata(body: &Map<String, Value>) -> Map<String, Value> {
    let mut metadata = body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    metadata.extend(metadata_fields(body));
    metadata
}

/// A query integer with bounds, as FastAPI validates `Query(ge=…, le=…)`.
fn query_int(
    query: &BTreeMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: Option<i64>,
    issues: &mut Vec<Issue>,
) -> i64 {
    let Some(text) = query.get(name) else { return default };
    let loc = ["query", name];
    let input = Value::from(text.as_str());
    match text.trim().parse::<i64>() {
        Err(_) => {
            let msg = "Input should be a valid integer, unable to parse string as an integer";
            issues.push(Issue::new("int_parsing", &loc, msg, input));
        }
        Ok(n) if n < min => {
            let msg = format!("Input should be greater than or equal to {min}");
            issues.push(Issue::new("greater_than_equal", &loc, msg, input).with_ctx(json!({ "ge": min })));
        }
        Ok(n) if max.is_some_and(|max| n > max) => {
            let max = max.unwrap_or_default();
            let msg = format!("Input should be less than or equal to {max}");
            issues.push(Issue::new("less_than_equal", &loc, msg, input).with_ctx(json!({ "le": max })));
        }
        Ok(n) => return n,
    }
    default
}

/// A value a list is sorted by. `Null` (SQL NULL) sorts after every value, so that ascending order puts it last
/// and descending order first, as PostgreSQL does.
#[derive(Debug, PartialEq, PartialOrd)]
enum SortValue<'a> {
    Number(f64),
    Text(&'a str),
    Null,
}

impl SortValue<'_> {
    fn order(a: &Self, b: &Self, descending: bool) -> std::cmp::Ordering {
        let ordering = a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
        if descending { ordering.reverse() } else { ordering }
    }
}

/// The users as they were when a batch of held requests was released together (the `Hold` fault): requests of
/// the batch check for duplicates against this, not against what the others of the batch wrote meanwhile, the
/// way concurrent requests on a real proxy all pass their checks before any of them commits.
#[derive(Debug, Default)]
pub(crate) struct RaceView {
    /// User id → lower-cased e-mail.
    users: BTreeMap<String, Option<String>>,
}

impl RaceView {
    fn has(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    fn owner_of(&self, email: &str) -> Option<String> {
        let email = email.to_lowercase();
        self.users.iter().find(|(_, mine)| mine.as_deref() == Some(email.as_str())).map(|(id, _)| id.clone())
    }
}

impl Store {
    pub(crate) fn race_view(&self) -> RaceView {
        let users =
            self.users.values().map(|user| (user.user_id.clone(), user.user_email.as_ref().map(|e| e.to_lowercase())));
        RaceView { users: users.collect() }
    }
}

/// Page `page` (from 1) of `size` items, as SQL's `OFFSET (page - 1) * size LIMIT size`.
fn page_of<T>(items: impl IntoIterator<Item = T>, page: i64, size: i64) -> impl Iterator<Item = T> {
    let start = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    items.into_iter().skip(start).take(usize::try_from(size).unwrap_or(0))
}

/// How many pages of `size` hold `total` items.
fn page_count(total: i64, size: i64) -> i64 {
    (total + size - 1) / size
}

/// A query boolean as pydantic reads it (`true`, `1`, `yes`, `on`, … in any case); `false` when absent.
fn query_bool(query: &BTreeMap<String, String>, name: &str, issues: &mut Vec<Issue>) -> bool {
    let Some(text) = query.get(name) else { return false };
    match text.trim().to_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => true,
        "0" | "false" | "f" | "no" | "n" | "off" => false,
        _ => {
            let msg = "Input should be a valid boolean, unable to interpret input";
            issues.push(Issue::new("bool_parsing", &["query", name], msg, Value::from(text.as_str())));
            false
        }
    }
}

/// Adds the fields of `extra` (an object) to `target` (an object).
fn extend(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

/// LiteLLM's id for a key: the hex SHA-256 of its text.
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `sk-...` and the last four characters of the key.
fn key_name(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("sk-...{tail}")
}

/// LiteLLM's `RouteChecks._mask_user_id`: the first six and last two characters. Ids of four characters or fewer
/// are `***`; shorter ids than eight characters are shown whole by 1.80.5 and as stars by 1.108.7.
fn mask_user_id(generation: Generation, user_id: &str) -> String {
    let chars: Vec<char> = user_id.chars().collect();
    if chars.len() <= 4 {
        return "***".to_owned();
    }
    match generation {
        Generation::Older if chars.len() < 8 => return user_id.to_owned(),
        Generation::Newer if chars.len() <= 8 => return "*".repeat(chars.len()),
        _ => {}
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

/// How 1.108.7 shows a rejected non-`sk-` key: its ends, or nothing of a short one.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() > 8 {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}****{tail}")
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_made_with_no_duration_left_is_expired_within_the_same_millisecond() {
        let made = Instant::from_millis(1_765_000_000_000);
        let mut key = Key::new("sk-test", None, made, 1);
        key.expires = Some(made);
        assert!(key.is_expired(made));
        assert!(!Key { expires: Some(made.plus_millis(1)), ..key.clone() }.is_expired(made));
    }
}
