//! The emulated proxy's database and what each admin endpoint does to it.
//!
//! Every behaviour here was observed on the real proxies (1.108.7 for [`Generation::Newer`], 1.80.5 for
//! [`Generation::Older`]; `shared/testbed/litellm/BEHAVIOUR.md` and `tests/contract/`), or is described in
//! `shared/reference/litellm-user-api.md`. Where the two generations differ, the code says so next to the branch.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    EmulatorError, Generation,
    clock::{self, Instant, Period},
    faults::SplitMix64,
    reply::{Issue, Kind, Param, Reply, as_f64, as_i64, check_body, is_empty, parse_body},
};

/// The id LiteLLM gives the master key's user; teams created with the master key get it as an admin member.
const ADMIN_USER_ID: &str = "default_user_id";

/// Request fields of `/user/new` and `/user/update` that the emulator validates.
const USER_SCHEMA: &[(&str, Kind)] = &[
    ("user_id", Kind::Str),
    ("user_email", Kind::Str),
    ("user_alias", Kind::Str),
    ("user_role", Kind::Role),
    ("teams", Kind::List),
    ("auto_create_key", Kind::Bool),
    ("send_invite_email", Kind::Bool),
    ("sso_user_id", Kind::Str),
    ("max_budget", Kind::Float),
    ("spend", Kind::Float),
    ("tpm_limit", Kind::Int),
    ("rpm_limit", Kind::Int),
    ("max_parallel_requests", Kind::Int),
    ("key_alias", Kind::Str),
    ("duration", Kind::Str),
    ("models", Kind::List),
    ("metadata", Kind::Object),
    ("budget_duration", Kind::Str),
    ("allowed_cache_controls", Kind::List),
    ("aliases", Kind::Object),
    ("config", Kind::Object),
    ("permissions", Kind::Object),
    ("model_max_budget", Kind::Object),
    ("model_rpm_limit", Kind::Object),
    ("model_tpm_limit", Kind::Object),
    ("blocked", Kind::Bool),
    ("object_permission", Kind::Object),
];

/// Request fields of `/key/generate` that the emulator validates and stores.
const KEY_SCHEMA: &[(&str, Kind)] = &[
    ("key", Kind::Str),
    ("key_alias", Kind::Str),
    ("user_id", Kind::Str),
    ("team_id", Kind::Str),
    ("duration", Kind::Str),
    ("models", Kind::List),
    ("metadata", Kind::Object),
    ("aliases", Kind::Object),
    ("max_budget", Kind::Float),
    ("tpm_limit", Kind::Int),
    ("rpm_limit", Kind::Int),
    ("max_parallel_requests", Kind::Int),
    ("budget_duration", Kind::Str),
];

/// `/user/update` fields that are columns of the user table, in the order the emulator applies them.
const USER_COLUMNS: &[&str] = &[
    "user_alias",
    "user_email",
    "user_role",
    "sso_user_id",
    "max_budget",
    "spend",
    "budget_duration",
    "tpm_limit",
    "rpm_limit",
    "max_parallel_requests",
    "models",
    "allowed_cache_controls",
    "metadata",
    "model_max_budget",
];

/// `/user/update` fields of LiteLLM's request model that have no user-table column: the upsert that writes them
/// fails, and the proxy answers 400 (observed on both generations for `blocked`, `key_alias`, `duration` and
/// `aliases`; `null`, `[]` and `{}` are dropped before the write and so pass).
const NOT_USER_COLUMNS: &[&str] = &["aliases", "blocked", "config", "duration", "key_alias", "permissions"];

/// Fields that `/user/new` and `/user/update` move into `metadata`.
const METADATA_FIELDS: &[&str] = &["model_rpm_limit", "model_tpm_limit"];

const MODEL_MAX_BUDGET_LICENSE: &str = "Invalid model_max_budget: You must have an enterprise license to set \
    model_max_budget. You must be a LiteLLM Enterprise user to use this feature. If you have a license please set \
    `LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. \
    \nPricing: https://www.litellm.ai/#pricing. Example of valid model_max_budget: \
    https://docs.litellm.ai/docs/proxy/users";

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
        for field in METADATA_FIELDS {
            if let Some(value) = body.get(*field).filter(|value| !is_empty(value)) {
                self.metadata.insert((*field).to_owned(), value.clone());
            }
        }
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
    metadata: Map<String, Value>,
    aliases: Map<String, Value>,
    max_budget: Option<f64>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    budget_duration: Option<String>,
    created_by: Option<String>,
    created_at: String,
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

/// One user's usage on one day (`LiteLLM_DailyUserSpend`, summed over models and keys).
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
    /// By (date, user id).
    daily: BTreeMap<(String, String), Usage>,
    seq: u64,
    /// Ids and keys; seeded, so runs can be repeated (keys are then predictable, which is fine in a test double).
    rng: SplitMix64,
}

impl Store {
    pub(crate) fn new(generation: Generation, master_key: &str, seed: u64) -> Self {
        Store {
            generation,
            master_hash: sha256_hex(master_key),
            users: BTreeMap::new(),
            keys: BTreeMap::new(),
            teams: BTreeMap::new(),
            daily: BTreeMap::new(),
            seq: 0,
            // Not the fault generator's sequence, so that ids do not shift when faults draw numbers.
            rng: SplitMix64(seed ^ 0xA5A5_A5A5_A5A5_A5A5),
        }
    }

    /// Forgets every user, key, team and usage record.
    pub(crate) fn clear(&mut self) {
        self.users.clear();
        self.keys.clear();
        self.teams.clear();
        self.daily.clear();
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

    // ---------- users ----------

    /// `POST /user/new`.
    pub(crate) fn user_new(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let issues = check_body(&body, USER_SCHEMA);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let str_field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let user_id = str_field("user_id");
        let email = str_field("user_email");
        let duration = str_field("budget_duration");
        let auto_create_key = body.get("auto_create_key").and_then(Value::as_bool).unwrap_or(true);
        let email_owner =
            email.as_deref().and_then(|email| self.user_with_email(email)).map(|user| user.user_id.clone());
        let now = Instant::now();

        match generation {
            Generation::Newer => {
                if let Some(duration) = duration.as_deref().filter(|d| !Period::is_valid_budget_duration(d)) {
                    return Reply::envelope(400, invalid_duration(duration), "internal_server_error", Param::Null);
                }
                if let Some(id) = user_id.as_deref().filter(|id| self.users.contains_key(*id)) {
                    let message = format!("{{'error': 'User with id {id} already exists'}}");
                    return Reply::envelope(409, message, "internal_server_error", Param::Null);
                }
                if let (Some(email), Some(_)) = (&email, &email_owner) {
                    let message = format!("{{'error': 'User with email {} already exists'}}", email.to_lowercase());
                    return Reply::envelope(409, message, "internal_server_error", Param::Null);
                }
            }
            Generation::Older => {
                // 1.80.5 checks the e-mail first, against every user including one with the same id, and answers
                // 400; a repeated id then answers 200 below.
                if let (Some(email), Some(_)) = (&email, &email_owner) {
                    let message = format!("{{'error': 'User with email {} already exists'}}", email.to_lowercase());
                    return Reply::envelope(400, message, "internal_server_error", Param::NoneText);
                }
            }
        }
        if body.get("model_max_budget").is_some_and(|value| !is_empty(value)) {
            // Enterprise-only; both generations fail the whole request (1.80.5 adds a prefix).
            let message = match generation {
                Generation::Newer => MODEL_MAX_BUDGET_LICENSE.to_owned(),
                Generation::Older => format!("Internal Server Error, {MODEL_MAX_BUDGET_LICENSE}"),
            };
            return Reply::envelope(500, message, "internal_server_error", generation.param());
        }

        let user_id = user_id.unwrap_or_else(|| self.uuid());
        let existed = self.users.contains_key(&user_id);
        let mut joined = Vec::new();
        if !existed {
            let seq = self.next_seq();
            let mut user = User::new(user_id.clone(), &now.timestamp(), seq);
            for field in USER_COLUMNS {
                if let Some(value) = body.get(*field).filter(|value| !value.is_null()) {
                    user.set(field, value, now);
                }
            }
            user.merge_metadata_fields(&body);
            if body.get("object_permission").is_some_and(|v| !is_empty(v)) && generation == Generation::Newer {
                user.object_permission_id = Some(self.uuid());
            }
            self.users.insert(user_id.clone(), user);
            // Teams that do not exist are skipped without an error, as LiteLLM swallows the failure.
            for team_id in requested_teams(&body) {
                if self.teams.contains_key(&team_id) {
                    self.join_team(&team_id, &user_id, "user", now);
                    joined.push(Value::from(team_id));
                }
            }
        }
        // Older proxies get here for a repeated id too: the row stays as it was, but a key is still issued.
        let key = if auto_create_key {
            let plaintext = self.new_key();
            let mut metadata = body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
            for field in METADATA_FIELDS {
                if let Some(value) = body.get(*field).filter(|value| !is_empty(value)) {
                    metadata.insert((*field).to_owned(), value.clone());
                }
            }
            let key = Key {
                hash: sha256_hex(&plaintext),
                key_name: key_name(&plaintext),
                key_alias: str_field("key_alias"),
                user_id: Some(user_id.clone()),
                team_id: None,
                // Only the /user/new path copies the user's models onto the key.
                models: body.get("models").and_then(Value::as_array).cloned().unwrap_or_default(),
                metadata,
                aliases: Map::new(),
                max_budget: None,
                tpm_limit: None,
                rpm_limit: None,
                max_parallel_requests: None,
                budget_duration: None,
                created_by: None,
                created_at: now.timestamp(),
            };
            self.keys.insert(key.hash.clone(), key);
            Some(plaintext)
        } else {
            None
        };
        let mut answer = self.user_new_response(&body, &user_id, key.as_deref(), now);
        // 1.108.7 answers the teams actually joined (null when none were asked for); 1.80.5 always null.
        let asked_for_teams = body.get("teams").is_some_and(|teams| !teams.is_null());
        answer["teams"] = match generation {
            Generation::Newer if asked_for_teams => Value::Array(joined),
            _ => Value::Null,
        };
        Reply::ok(answer)
    }

    /// `/user/new`'s flat answer: the request echoed, plus the key (plaintext, the only time it is shown).
    fn user_new_response(&self, body: &Map<String, Value>, user_id: &str, key: Option<&str>, now: Instant) -> Value {
        let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
        let mut metadata = body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
        for name in METADATA_FIELDS {
            if let Some(value) = body.get(*name).filter(|value| !is_empty(value)) {
                metadata.insert((*name).to_owned(), value.clone());
            }
        }
        let stamp = key.map(|_| Value::from(now.timestamp())).unwrap_or(Value::Null);
        let mut answer = json!({
            "key_alias": field("key_alias"),
            "duration": field("duration"),
            "models": body.get("models").cloned().filter(|v| !v.is_null()).unwrap_or(json!([])),
            "spend": body.get("spend").and_then(as_f64).unwrap_or(0.0),
            "max_budget": body.get("max_budget").and_then(as_f64),
            "user_id": user_id,
            "team_id": field("team_id"),
            "max_parallel_requests": body.get("max_parallel_requests").and_then(as_i64),
            "metadata": metadata,
            "tpm_limit": body.get("tpm_limit").and_then(as_i64),
            "rpm_limit": body.get("rpm_limit").and_then(as_i64),
            "budget_duration": field("budget_duration"),
            "allowed_cache_controls": body.get("allowed_cache_controls").cloned().filter(|v| !v.is_null()).unwrap_or(json!([])),
            "config": {},
            "permissions": {},
            "model_max_budget": if key.is_some() { json!({}) } else { Value::Null },
            "model_rpm_limit": null,
            "model_tpm_limit": null,
            "guardrails": null,
            "prompts": null,
            "blocked": null,
            "aliases": {},
            "object_permission": null,
        });
        // Two `json!` calls: one that large exceeds the macro's recursion limit.
        extend(
            &mut answer,
            json!({
                "key": key.unwrap_or(""),
                "key_name": key.map(key_name),
                "expires": null,
                "token_id": null,
                "token": null,
                "organization_id": null,
                "litellm_budget_table": null,
                "budget_id": null,
                "tags": null,
                "enforced_params": null,
                "allowed_routes": [],
                "created_by": null,
                "updated_by": null,
                "created_at": stamp.clone(),
                "updated_at": stamp,
                "user_email": field("user_email"),
                "user_role": field("user_role"),
                "teams": field("teams"),
                "user_alias": field("user_alias"),
            }),
        );
        if self.generation == Generation::Newer {
            extend(
                &mut answer,
                json!({"agent_id": null, "budget_limits": null, "budget_fallbacks": null,
                "mcp_rpm_limit": null, "tag_rpm_limit": null, "policies": null, "tpd_limit": null, "key_type": null,
                "project_id": null, "router_settings": null, "access_group_ids": null}),
            );
        }
        answer
    }

    /// `GET /user/info?user_id=…`.
    pub(crate) fn user_info(&self, query: &BTreeMap<String, String>) -> Reply {
        let Some(user_id) = query.get("user_id") else {
            // Without an id the admin view lists every key and team of the proxy (a documented footgun).
            let keys: Vec<Value> = self.keys.values().map(|key| self.key_item(key)).collect();
            let teams: Vec<Value> = self.teams.values().map(|team| self.team_json(team)).collect();
            return Reply::ok(json!({ "user_id": null, "user_info": null, "keys": keys, "teams": teams }));
        };
        let keys: Vec<Value> = self
            .keys
            .values()
            .filter(|key| key.user_id.as_deref() == Some(user_id))
            .map(|k| self.key_item(k))
            .collect();
        let Some(user) = self.users.get(user_id) else {
            return match self.generation {
                Generation::Newer => {
                    Reply::envelope(404, format!("User {user_id} not found"), "internal_server_error", Param::Null)
                }
                // The stub: no `user_id` inside `user_info`, but the keys that carry this user id.
                Generation::Older => {
                    Reply::ok(json!({ "user_id": user_id, "user_info": {"spend": 0}, "keys": keys, "teams": [] }))
                }
            };
        };
        let teams: Vec<Value> = user
            .teams
            .iter()
            .filter_map(|team_id| self.teams.get(team_id))
            .map(|team| {
                let mut item = self.team_json(team);
                extend(&mut item, json!({ "team_memberships": [], "keys": [] }));
                item
            })
            .collect();
        Reply::ok(json!({
            "user_id": user_id,
            "user_info": self.user_json(user, View::Info),
            "keys": keys,
            "teams": teams,
        }))
    }

    /// `POST /user/update`: LiteLLM's partial update (reference §1.5) and its upsert.
    pub(crate) fn user_update(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let issues = check_body(&body, USER_SCHEMA);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let user_id = body.get("user_id").and_then(Value::as_str).map(str::to_owned);
        let email = body.get("user_email").and_then(Value::as_str).map(str::to_owned);
        if user_id.is_none() && email.is_none() {
            let issue = Issue::new(
                "value_error",
                &["body"],
                "Value error, Either user id or user email must be provided",
                Value::Object(body.clone()),
            )
            .with_ctx(json!({ "error": {} }));
            return Reply::invalid(generation, vec![issue]);
        }

        // Which fields are written: explicit nulls clear only a few fields; null, [] and {} are ignored elsewhere.
        let clears_on_null: &[&str] = match generation {
            Generation::Newer => &["max_budget", "budget_duration", "tpm_limit", "rpm_limit"],
            // 1.80.5 drops every null, max_budget's too (its `_update_internal_user_params`, and the contract).
            Generation::Older => &[],
        };
        let mut changes: Vec<(&str, Value)> = Vec::new();
        for field in USER_COLUMNS.iter().copied().filter(|field| *field != "user_email" || user_id.is_some()) {
            let Some(value) = body.get(field) else { continue };
            if clears_on_null.contains(&field) {
                changes.push((field, value.clone()));
            } else if field == "model_max_budget" && generation == Generation::Newer {
                // 1.108.7 writes whatever is sent, null as {}; 1.80.5 ignores null and {} like other fields.
                changes.push((field, if value.is_null() { json!({}) } else { value.clone() }));
            } else if !is_empty(value) {
                changes.push((field, value.clone()));
            }
        }
        if let Some(field) = NOT_USER_COLUMNS.iter().find(|field| body.get(**field).is_some_and(|v| !is_empty(v))) {
            return Reply::envelope(
                400,
                format!("Authentication Error, Could not find field at `upsertOneLiteLLM_UserTable.create.{field}`"),
                "auth_error",
                Param::NoneText,
            );
        }
        if generation == Generation::Newer {
            let duration = changes.iter().find(|(field, _)| *field == "budget_duration").and_then(|(_, v)| v.as_str());
            if let Some(duration) = duration.filter(|d| !Period::is_valid_budget_duration(d)) {
                return Reply::envelope(400, invalid_duration(duration), "auth_error", Param::NoneText);
            }
        }

        let target = match (&user_id, email.as_deref().and_then(|email| self.user_with_email(email))) {
            (Some(id), _) => id.clone(),
            (None, Some(user)) => user.user_id.clone(),
            // LiteLLM means to create a user for an unknown e-mail but trips over its own row object (seen on
            // both generations).
            (None, None) => {
                return Reply::envelope(
                    400,
                    "Authentication Error, 'LiteLLM_UserTable' object has no attribute 'get'",
                    "auth_error",
                    Param::NoneText,
                );
            }
        };
        let now = Instant::now();
        let stamp = now.timestamp();
        let seq = self.next_seq();
        // The upsert: an unknown id is created (with the master key, on every version).
        let user = self.users.entry(target.clone()).or_insert_with(|| User::new(target.clone(), &stamp, seq));
        for (field, value) in &changes {
            user.set(field, value, now);
        }
        user.merge_metadata_fields(&body);
        user.updated_at = stamp;
        let data = self.users.get(&target).map(|user| self.user_json(user, View::Update)).unwrap_or(Value::Null);
        Reply::ok(json!({ "user_id": target, "data": data }))
    }

    /// `POST /user/delete`: all ids must exist, then the users, their keys and memberships go.
    pub(crate) fn user_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let Some(value) = body.get("user_ids") else {
            let issue = Issue::new("missing", &["body", "user_ids"], "Field required", Value::Object(body.clone()));
            return Reply::invalid(generation, vec![issue]);
        };
        let issues = check_body(&body, &[("user_ids", Kind::StrList)]);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let Some(ids) = value.as_array() else {
            let issue = Issue::new("list_type", &["body", "user_ids"], "Input should be a valid list", value.clone());
            return Reply::invalid(generation, vec![issue]);
        };
        let ids: Vec<String> = ids.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        if let Some(missing) = ids.iter().find(|id| !self.users.contains_key(*id)) {
            return Reply::detail(404, format!("User not found, passed user_id={missing}"));
        }
        let ids: BTreeSet<String> = ids.into_iter().collect();
        self.keys.retain(|_, key| !key.user_id.as_ref().is_some_and(|id| ids.contains(id)));
        for team in self.teams.values_mut() {
            team.members.retain(|member| !ids.contains(&member.user_id));
        }
        let before = self.users.len();
        self.users.retain(|id, _| !ids.contains(id));
        Reply::ok(Value::from(before - self.users.len()))
    }

    /// `GET /user/list`: newest first, paged; `user_ids` with one id matches by substring (reference §1.7).
    pub(crate) fn user_list(&self, query: &BTreeMap<String, String>) -> Reply {
        let generation = self.generation;
        let mut issues = Vec::new();
        let page = query_int(query, "page", 1, 1, None, &mut issues);
        let page_size = query_int(query, "page_size", 25, 1, Some(100), &mut issues);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let ids: Vec<String> = query
            .get("user_ids")
            .map(|ids| ids.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let email = query.get("user_email").map(|email| email.to_lowercase());
        let role = query.get("role");
        let mut users: Vec<&User> = self
            .users
            .values()
            .filter(|user| match ids.as_slice() {
                [] => true,
                // One id is matched with `contains`, case-insensitively: `?user_ids=bob` also finds `bobby`.
                [one] => user.user_id.to_lowercase().contains(&one.to_lowercase()),
                many => many.contains(&user.user_id),
            })
            .filter(|user| {
                email.as_ref().is_none_or(|email| {
                    user.user_email.as_ref().is_some_and(|mine| mine.to_lowercase().contains(email.as_str()))
                })
            })
            .filter(|user| role.is_none_or(|role| user.user_role.as_ref() == Some(role)))
            .collect();
        users.sort_by_key(|user| std::cmp::Reverse(user.seq));
        let total = users.len() as i64;
        let start = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
        let rows: Vec<Value> = users
            .into_iter()
            .skip(start)
            .take(usize::try_from(page_size).unwrap_or(0))
            .map(|user| self.user_json(user, View::List))
            .collect();
        Reply::ok(json!({
            "users": rows,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": (total + page_size - 1) / page_size,
        }))
    }

    /// `GET /user/daily/activity`: usage per day, newest first, with totals in `metadata`.
    pub(crate) fn daily_activity(&self, query: &BTreeMap<String, String>) -> Reply {
        let generation = self.generation;
        let (Some(start), Some(end)) = (query.get("start_date"), query.get("end_date")) else {
            return Reply::detail(400, "Please provide start_date and end_date");
        };
        if generation == Generation::Newer && !(clock::is_date(start) && clock::is_date(end)) {
            return Reply::detail(400, "start_date and end_date must be valid YYYY-MM-DD dates");
        }
        let mut issues = Vec::new();
        let page = query_int(query, "page", 1, 1, None, &mut issues);
        let page_size = query_int(query, "page_size", 50, 1, Some(1000), &mut issues);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        // Older proxies compare the raw strings; a malformed date simply matches nothing.
        let user_filter = query.get("user_id");
        let mut days: BTreeMap<&str, BTreeMap<&str, Usage>> = BTreeMap::new();
        for ((date, user_id), usage) in &self.daily {
            if date.as_str() < start.as_str() || date.as_str() > end.as_str() {
                continue;
            }
            if user_filter.is_some_and(|wanted| wanted != user_id) {
                continue;
            }
            days.entry(date).or_default().entry(user_id).or_default().add(usage);
        }
        let mut totals = Usage::default();
        for users in days.values() {
            for usage in users.values() {
                totals.add(usage);
            }
        }
        let total_pages = (days.len() as i64 + page_size - 1) / page_size;
        let start_index = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
        let results: Vec<Value> = days
            .iter()
            .rev()
            .skip(start_index)
            .take(usize::try_from(page_size).unwrap_or(0))
            .map(|(date, users)| self.day_json(date, users))
            .collect();
        let mut metadata = json!({
            "total_spend": totals.spend,
            "total_prompt_tokens": totals.prompt_tokens,
            "total_completion_tokens": totals.completion_tokens,
            "total_tokens": totals.prompt_tokens + totals.completion_tokens,
            "total_api_requests": totals.requests,
            "total_successful_requests": totals.requests,
            "total_failed_requests": 0,
            "total_cache_read_input_tokens": 0,
            "total_cache_creation_input_tokens": 0,
            "page": page,
            "total_pages": total_pages,
            "has_more": page < total_pages,
        });
        if generation == Generation::Newer {
            extend(
                &mut metadata,
                json!({"total_flat_cost": 0.0, "total_ptu_hours": 0.0,
                "total_compression_saved_tokens": 0, "total_compression_savings_spend": 0.0,
                "total_prompt_caching_savings_spend": 0.0, "total_gateway_injected_caching_savings_spend": 0.0,
                "total_autorouter_savings_spend": 0.0, "total_response_time_ms": 0, "total_timed_requests": 0,
                "api_key_limit": null, "total_api_keys": null, "entity_total_api_keys": null}),
            );
        }
        Reply::ok(json!({ "results": results, "metadata": metadata }))
    }

    fn day_json(&self, date: &str, users: &BTreeMap<&str, Usage>) -> Value {
        let mut day = Usage::default();
        let mut entities = Map::new();
        for (user_id, usage) in users {
            day.add(usage);
            entities.insert(
                (*user_id).to_owned(),
                json!({ "metrics": self.metrics_json(usage), "metadata": {}, "api_key_breakdown": {} }),
            );
        }
        let mut breakdown = json!({
            "models": {}, "model_groups": {}, "providers": {}, "api_keys": {}, "mcp_servers": {},
            "entities": entities,
        });
        if self.generation == Generation::Newer {
            extend(&mut breakdown, json!({ "endpoints": {} }));
        }
        json!({ "date": date, "metrics": self.metrics_json(&day), "breakdown": breakdown })
    }

    fn metrics_json(&self, usage: &Usage) -> Value {
        let mut metrics = json!({
            "spend": usage.spend,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "successful_requests": usage.requests,
            "failed_requests": 0,
            "api_requests": usage.requests,
        });
        if self.generation == Generation::Newer {
            extend(
                &mut metrics,
                json!({"flat_cost": 0.0, "ptu_hours": 0.0, "compression_saved_tokens": 0,
                "compression_savings_spend": 0.0, "prompt_caching_savings_spend": 0.0,
                "gateway_injected_caching_savings_spend": 0.0, "autorouter_savings_spend": 0.0,
                "total_response_time_ms": 0, "timed_requests": 0}),
            );
        }
        metrics
    }

    /// Adds usage as the proxy's spend tracking would: to the user's running `spend` and to the daily table.
    pub(crate) fn record_spend(
        &mut self,
        user_id: &str,
        date: &str,
        spend: f64,
        prompt_tokens: u64,
        completion_tokens: u64,
        requests: u64,
    ) -> Result<(), EmulatorError> {
        if !clock::is_date(date) {
            return Err(EmulatorError::InvalidDate(date.to_owned()));
        }
        if !spend.is_finite() || spend < 0.0 {
            return Err(EmulatorError::InvalidSpend(spend));
        }
        if let Some(user) = self.users.get_mut(user_id) {
            user.spend += spend;
        }
        let usage = Usage { spend, prompt_tokens, completion_tokens, requests };
        self.daily.entry((date.to_owned(), user_id.to_owned())).or_default().add(&usage);
        Ok(())
    }

    // ---------- keys ----------

    /// `POST /key/generate`, optionally with a caller-chosen `key`. Creates no user row.
    pub(crate) fn key_generate(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let issues = check_body(&body, KEY_SCHEMA);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let str_field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let chosen = str_field("key");
        if let Some(chosen) = chosen.as_deref().filter(|key| !key.starts_with("sk-")) {
            let shown = match generation {
                Generation::Newer => mask(chosen),
                Generation::Older => chosen.to_owned(),
            };
            let message = format!(
                "{{'error': \"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {shown}\"}}"
            );
            return Reply::envelope(400, message, "internal_server_error", generation.param());
        }
        let alias = str_field("key_alias");
        // Aliases are unique across all keys, including the one being re-sent (BEHAVIOUR.md, custom keys).
        if let Some(alias) =
            alias.as_deref().filter(|alias| self.keys.values().any(|k| k.key_alias.as_deref() == Some(*alias)))
        {
            return Reply::envelope(
                400,
                format!("Key with alias '{alias}' already exists. Unique key aliases across all keys are required."),
                "bad_request_error",
                Param::Named("key_alias"),
            );
        }
        let plaintext = chosen.unwrap_or_else(|| self.new_key());
        let hash = sha256_hex(&plaintext);
        let now = Instant::now();
        // A key that exists already is left exactly as it is (LiteLLM's upsert has an empty update part), even
        // when the request names another user or alias; the answer still echoes the request.
        if !self.keys.contains_key(&hash) {
            let key = Key {
                hash: hash.clone(),
                key_name: key_name(&plaintext),
                key_alias: alias.clone(),
                user_id: str_field("user_id"),
                team_id: str_field("team_id"),
                models: body.get("models").and_then(Value::as_array).cloned().unwrap_or_default(),
                metadata: body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
                aliases: body.get("aliases").and_then(Value::as_object).cloned().unwrap_or_default(),
                max_budget: body.get("max_budget").and_then(as_f64),
                tpm_limit: body.get("tpm_limit").and_then(as_i64),
                rpm_limit: body.get("rpm_limit").and_then(as_i64),
                max_parallel_requests: body.get("max_parallel_requests").and_then(as_i64),
                budget_duration: str_field("budget_duration"),
                created_by: Some(ADMIN_USER_ID.to_owned()),
                created_at: now.timestamp(),
            };
            self.keys.insert(hash.clone(), key);
        }
        let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
        let mut answer = json!({
            "key_alias": alias,
            "duration": field("duration"),
            "models": body.get("models").cloned().filter(|v| !v.is_null()).unwrap_or(json!([])),
            "spend": 0.0,
            "max_budget": body.get("max_budget").and_then(as_f64),
            "user_id": field("user_id"),
            "team_id": field("team_id"),
            "max_parallel_requests": body.get("max_parallel_requests").and_then(as_i64),
            "metadata": body.get("metadata").cloned().filter(|v| !v.is_null()).unwrap_or(json!({})),
            "tpm_limit": body.get("tpm_limit").and_then(as_i64),
            "rpm_limit": body.get("rpm_limit").and_then(as_i64),
            "budget_duration": field("budget_duration"),
            "allowed_cache_controls": [],
            "config": {},
            "permissions": {},
            "model_max_budget": {},
            "model_rpm_limit": null,
            "model_tpm_limit": null,
            "guardrails": null,
            "prompts": null,
            "blocked": null,
            "aliases": body.get("aliases").cloned().filter(|v| !v.is_null()).unwrap_or(json!({})),
            "object_permission": null,
        });
        extend(
            &mut answer,
            json!({
                "key": plaintext,
                "key_name": key_name(&plaintext),
                "expires": null,
                "token_id": hash,
                "token": hash,
                "organization_id": null,
                "litellm_budget_table": null,
                "budget_id": null,
                "tags": null,
                "enforced_params": null,
                "allowed_routes": [],
                "created_by": ADMIN_USER_ID,
                "updated_by": ADMIN_USER_ID,
                "created_at": now.timestamp(),
                "updated_at": now.timestamp(),
            }),
        );
        if generation == Generation::Newer {
            extend(
                &mut answer,
                json!({"agent_id": null, "budget_limits": null, "budget_fallbacks": {},
                "mcp_rpm_limit": null, "tag_rpm_limit": null, "policies": null, "tpd_limit": null,
                "key_type": "default", "project_id": null, "access_group_ids": []}),
            );
        }
        Reply::ok(answer)
    }

    /// `POST /key/delete` by plaintext key, hash or alias.
    pub(crate) fn key_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let issues = check_body(&body, &[("keys", Kind::StrList), ("key_aliases", Kind::StrList)]);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let strings = |name: &str| -> Vec<String> {
            body.get(name)
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let (keys, aliases) = (strings("keys"), strings("key_aliases"));
        if keys.is_empty() && aliases.is_empty() {
            let issue = Issue::new(
                "value_error",
                &["body"],
                "Value error, At least one of 'keys' or 'key_aliases' must be provided.",
                Value::Object(body.clone()),
            )
            .with_ctx(json!({ "error": {} }));
            return Reply::invalid(generation, vec![issue]);
        }
        let wanted: BTreeSet<String> = keys
            .iter()
            .flat_map(|key| [key.clone(), sha256_hex(key)])
            .filter(|hash| self.keys.contains_key(hash))
            .chain(
                self.keys
                    .values()
                    .filter(|key| key.key_alias.as_ref().is_some_and(|alias| aliases.contains(alias)))
                    .map(|key| key.hash.clone()),
            )
            .collect();
        if wanted.is_empty() {
            return Reply::envelope(404, "{'error': 'No keys found'}", "internal_server_error", generation.param());
        }
        self.keys.retain(|hash, _| !wanted.contains(hash));
        // The answer echoes the request, matched or not (observed); by alias it echoes the aliases.
        let echoed = if keys.is_empty() { aliases } else { keys };
        Reply::ok(json!({ "deleted_keys": echoed }))
    }

    /// `GET /key/info[?key=…]`: the named key, or the caller's own key.
    pub(crate) fn key_info(&self, caller: &Caller, query: &BTreeMap<String, String>) -> Reply {
        let not_found = || Reply::envelope(404, "Key not found in database", "not_found_error", Param::Named("key"));
        let (shown, hash) = match (query.get("key"), caller) {
            (Some(key), _) => (key.clone(), if self.keys.contains_key(key) { key.clone() } else { sha256_hex(key) }),
            (None, Caller::Key { hash, .. }) => (hash.clone(), hash.clone()),
            // The master key is not in the key table.
            (None, Caller::Admin) => return not_found(),
        };
        let Some(key) = self.keys.get(&hash) else { return not_found() };
        if let Caller::Key { hash: own, user_id } = caller {
            // A key may look at itself and at keys of its own user.
            if *own != key.hash && (user_id.is_none() || *user_id != key.user_id) {
                return self.not_admin("/key/info", user_id.as_deref());
            }
        }
        let mut info = self.key_item(key);
        if let Value::Object(map) = &mut info {
            map.remove("token");
            map.remove("team_alias");
        }
        Reply::ok(json!({ "key": shown, "info": info }))
    }

    // ---------- teams ----------

    /// `POST /team/new`. The master key's user joins as an admin, which creates its user row if needed.
    pub(crate) fn team_new(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let schema = [
            ("team_id", Kind::Str),
            ("team_alias", Kind::Str),
            ("metadata", Kind::Object),
            ("models", Kind::List),
            ("max_budget", Kind::Float),
        ];
        let issues = check_body(&body, &schema);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let team_id = match body.get("team_id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => self.uuid(),
        };
        if self.teams.contains_key(&team_id) {
            let message = format!("{{'error': 'Team id = {team_id} already exists. Please use a different team id.'}}");
            return Reply::envelope(400, message, "internal_server_error", generation.param());
        }
        let now = Instant::now();
        let team = Team {
            team_id: team_id.clone(),
            team_alias: body.get("team_alias").and_then(Value::as_str).map(str::to_owned),
            members: Vec::new(),
            metadata: body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
            models: body.get("models").and_then(Value::as_array).cloned().unwrap_or_default(),
            max_budget: body.get("max_budget").and_then(as_f64),
            created_at: now.timestamp(),
            updated_at: now.timestamp(),
        };
        self.teams.insert(team_id.clone(), team);
        self.join_team(&team_id, ADMIN_USER_ID, "admin", now);
        self.team_reply(&team_id, json!({}))
    }

    /// Adds a membership on both sides; a user without a row gets one (role `internal_user`), as LiteLLM does.
    fn join_team(&mut self, team_id: &str, user_id: &str, role: &str, now: Instant) {
        if !self.users.contains_key(user_id) {
            let seq = self.next_seq();
            let mut user = User::new(user_id.to_owned(), &now.timestamp(), seq);
            user.user_role = Some("internal_user".to_owned());
            self.users.insert(user_id.to_owned(), user);
        }
        let email = self.users.get(user_id).and_then(|user| user.user_email.clone());
        if let Some(user) = self.users.get_mut(user_id)
            && !user.teams.iter().any(|team| team == team_id)
        {
            user.teams.push(team_id.to_owned());
            user.updated_at = now.timestamp();
        }
        if let Some(team) = self.teams.get_mut(team_id)
            && !team.members.iter().any(|member| member.user_id == user_id)
        {
            team.members.push(Member { user_id: user_id.to_owned(), user_email: email, role: role.to_owned() });
            team.updated_at = now.timestamp();
        }
    }

    /// `POST /team/member_add` with one member or a list of them.
    pub(crate) fn team_member_add(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let mut issues = Vec::new();
        for field in ["team_id", "member"] {
            if body.get(field).is_none_or(Value::is_null) {
                issues.push(Issue::new("missing", &["body", field], "Field required", Value::Object(body.clone())));
            }
        }
        issues.extend(check_body(&body, &[("team_id", Kind::Str)]));
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let team_id = body.get("team_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let members: Vec<Value> = match body.get("member") {
            Some(Value::Array(items)) => items.clone(),
            Some(item) => vec![item.clone()],
            None => Vec::new(),
        };
        let Some(team) = self.teams.get(&team_id) else {
            // Observed as 404 on both generations (not 400).
            return Reply::detail(
                404,
                format!("Team doesn't exist in db. Team={team_id}. Create team via `/team/new` call."),
            );
        };
        let mut wanted = Vec::new();
        for member in &members {
            let email = member.get("user_email").and_then(Value::as_str).map(str::to_owned);
            let user_id = match member.get("user_id").and_then(Value::as_str) {
                Some(id) => Some(id.to_owned()),
                None => email.as_deref().and_then(|email| self.user_with_email(email)).map(|u| u.user_id.clone()),
            };
            let Some(user_id) = user_id else {
                let issue = Issue::new(
                    "value_error",
                    &["body", "member"],
                    "Value error, Either user_id or user_email must be provided",
                    member.clone(),
                );
                return Reply::invalid(generation, vec![issue]);
            };
            if team.members.iter().any(|existing| existing.user_id == user_id) {
                let existing: Vec<String> = team.members.iter().map(member_repr).collect();
                let message = format!(
                    "User already in team. Member: user_id={user_id}, user_email={}. Existing members=[{}]",
                    py_str(email.as_deref()),
                    existing.join(", ")
                );
                return Reply::envelope(400, message, "team_member_already_in_team", Param::Named("member"));
            }
            let role = member.get("role").and_then(Value::as_str).unwrap_or("user").to_owned();
            wanted.push((user_id, role));
        }
        let now = Instant::now();
        let mut updated = Vec::new();
        for (user_id, role) in &wanted {
            // 1.108.7 answers an existing member's row as it was before the team was appended (the append is a
            // separate write); a user it had to create, and every user on 1.80.5, shows the team.
            let before = match (generation, self.users.get(user_id)) {
                (Generation::Newer, Some(user)) => Some(self.user_json(user, View::List)),
                _ => None,
            };
            self.join_team(&team_id, user_id, role, now);
            let after = self.users.get(user_id).map(|user| self.user_json(user, View::List));
            updated.extend(before.or(after));
        }
        self.team_reply(&team_id, json!({ "updated_users": updated, "updated_team_memberships": [] }))
    }

    /// `POST /team/member_delete`.
    pub(crate) fn team_member_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let issues = check_body(&body, &[("team_id", Kind::Str), ("user_id", Kind::Str), ("user_email", Kind::Str)]);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let team_id = body.get("team_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let user_id = match body.get("user_id").and_then(Value::as_str) {
            Some(id) => Some(id.to_owned()),
            None => body
                .get("user_email")
                .and_then(Value::as_str)
                .and_then(|email| self.user_with_email(email))
                .map(|user| user.user_id.clone()),
        };
        let Some(team) = self.teams.get_mut(&team_id) else {
            return Reply::detail(400, format!("Team id={team_id} does not exist in db"));
        };
        let Some(user_id) = user_id.filter(|id| team.members.iter().any(|member| member.user_id == *id)) else {
            return Reply::detail(400, "User not found in team");
        };
        let now = Instant::now();
        team.members.retain(|member| member.user_id != user_id);
        team.updated_at = now.timestamp();
        if let Some(user) = self.users.get_mut(&user_id) {
            user.teams.retain(|team| *team != team_id);
            user.updated_at = now.timestamp();
        }
        self.team_reply(&team_id, json!({}))
    }

    /// A team as the team endpoints answer it, with `extra` fields.
    fn team_reply(&self, team_id: &str, extra: Value) -> Reply {
        match self.teams.get(team_id) {
            Some(team) => {
                let mut answer = self.team_json(team);
                extend(&mut answer, extra);
                Reply::ok(answer)
            }
            // Callers have just written the team; this only keeps the code free of panics.
            None => Reply::detail(404, format!("Team not found, passed team_id={team_id}")),
        }
    }

    /// `POST /team/delete`: every id must exist; members leave, the team's keys go.
    pub(crate) fn team_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        if body.get("team_ids").is_none() {
            let issue = Issue::new("missing", &["body", "team_ids"], "Field required", Value::Object(body.clone()));
            return Reply::invalid(generation, vec![issue]);
        }
        let issues = check_body(&body, &[("team_ids", Kind::StrList)]);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let ids: Vec<String> = body
            .get("team_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(missing) = ids.iter().find(|id| !self.teams.contains_key(*id)) {
            return Reply::detail(404, format!("Team not found, passed team_id={missing}"));
        }
        for id in &ids {
            self.teams.remove(id);
            self.keys.retain(|_, key| key.team_id.as_ref() != Some(id));
            for user in self.users.values_mut() {
                user.teams.retain(|team| team != id);
            }
        }
        Reply::ok(json!({ "deleted_teams": ids }))
    }

    // ---------- rendering ----------

    fn user_with_email(&self, email: &str) -> Option<&User> {
        let email = email.to_lowercase();
        self.users.values().find(|user| user.user_email.as_ref().is_some_and(|mine| mine.to_lowercase() == email))
    }

    fn user_json(&self, user: &User, view: View) -> Value {
        let mut row = json!({
            "user_id": user.user_id,
            "user_alias": user.user_alias,
            "team_id": null,
            "sso_user_id": user.sso_user_id,
            "organization_id": null,
            "object_permission_id": user.object_permission_id,
            "teams": user.teams,
            "user_role": user.user_role,
            "max_budget": user.max_budget,
            "spend": user.spend,
            "user_email": user.user_email,
            "models": user.models,
            "metadata": user.metadata,
            "max_parallel_requests": user.max_parallel_requests,
            "tpm_limit": user.tpm_limit,
            "rpm_limit": user.rpm_limit,
            "budget_duration": user.budget_duration,
            "budget_reset_at": user.budget_reset_at,
            "allowed_cache_controls": user.allowed_cache_controls,
            "model_spend": {},
            "model_max_budget": user.model_max_budget,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
            "organization_memberships": if view == View::Info { json!([]) } else { Value::Null },
            // Stored, but neither generation reads it back on the user row.
            "object_permission": null,
        });
        if view != View::List {
            extend(
                &mut row,
                json!({"litellm_organization_table": null, "invitations_created": null,
                "invitations_updated": null, "invitations_user": null}),
            );
        }
        match self.generation {
            Generation::Newer => {
                extend(
                    &mut row,
                    json!({"verified_subjects": null, "password_reset_required": null,
                    "last_breach_check_at": null, "policies": []}),
                );
                if view == View::Info {
                    extend(&mut row, json!({ "model_max_budget_usage": {} }));
                }
            }
            Generation::Older => {
                if view != View::List {
                    extend(&mut row, json!({ "password": null }));
                }
            }
        }
        if view == View::List {
            let key_count = self.keys.values().filter(|key| key.user_id.as_deref() == Some(&user.user_id)).count();
            extend(&mut row, json!({ "key_count": key_count }));
        }
        row
    }

    /// A key as `/user/info` lists it: the hash as `token`, never the key.
    fn key_item(&self, key: &Key) -> Value {
        let mut item = json!({
            "token": key.hash,
            "key_name": key.key_name,
            "key_alias": key.key_alias,
            "soft_budget_cooldown": false,
            "spend": 0.0,
            "expires": null,
            "models": key.models,
            "aliases": key.aliases,
            "config": {},
            "user_id": key.user_id,
            "team_id": key.team_id,
            "permissions": {},
            "max_parallel_requests": key.max_parallel_requests,
            "metadata": key.metadata,
            "blocked": null,
            "tpm_limit": key.tpm_limit,
            "rpm_limit": key.rpm_limit,
            "max_budget": key.max_budget,
            "budget_duration": key.budget_duration,
            "budget_reset_at": null,
            "allowed_cache_controls": [],
            "allowed_routes": [],
            "model_spend": {},
            "model_max_budget": {},
            "budget_id": null,
            "organization_id": null,
            "object_permission_id": null,
            "created_at": key.created_at,
            "created_by": key.created_by,
            "updated_at": key.created_at,
            "updated_by": key.created_by,
            "litellm_budget_table": null,
            "object_permission": null,
            "rotation_count": 0,
            "auto_rotate": false,
            "rotation_interval": null,
            "last_rotation_at": null,
            "key_rotation_at": null,
            // LiteLLM prints Python's None for a key without a team.
            "team_alias": "None",
        });
        if self.generation == Generation::Newer {
            extend(
                &mut item,
                json!({"total_spend": 0.0, "router_settings": {}, "agent_id": null, "project_id": null,
                "tpd_limit": null, "key_type": "default", "policies": [], "access_group_ids": [],
                "budget_fallbacks": {}, "settings_updated_at": null, "last_active": null, "budget_limits": null}),
            );
        }
        item
    }

    fn team_json(&self, team: &Team) -> Value {
        let members: Vec<Value> = team
            .members
            .iter()
            .map(|member| json!({ "user_id": member.user_id, "user_email": member.user_email, "role": member.role }))
            .collect();
        let mut answer = json!({
            "team_alias": team.team_alias,
            "team_id": team.team_id,
            "organization_id": null,
            "admins": [],
            "members": [],
            "members_with_roles": members,
            "team_member_permissions": [],
            "metadata": team.metadata,
            "tpm_limit": null,
            "rpm_limit": null,
            "max_budget": team.max_budget,
            "budget_duration": null,
            "models": team.models,
            "blocked": false,
            "spend": 0.0,
            "max_parallel_requests": null,
            "budget_reset_at": null,
            "model_id": null,
            "litellm_model_table": null,
            "object_permission": null,
            "object_permission_id": null,
            "created_at": team.created_at,
            "updated_at": team.updated_at,
        });
        if self.generation == Generation::Newer {
            extend(
                &mut answer,
                json!({"tpd_limit": null, "soft_budget": null, "budget_limits": null,
                "router_settings": {}, "access_group_ids": [], "default_team_member_models": [], "model_spend": {},
                "model_max_budget": {}, "policies": [], "allow_team_guardrail_config": false}),
            );
        }
        answer
    }
}

/// The teams named in a `/user/new` body: ids, or objects with a `team_id`.
fn requested_teams(body: &Map<String, Value>) -> Vec<String> {
    body.get("teams")
        .and_then(Value::as_array)
        .map(|teams| {
            teams
                .iter()
                .filter_map(|team| team.as_str().or_else(|| team.get("team_id").and_then(Value::as_str)))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The text LiteLLM wraps (as a Python dict repr) in its 400 for a bad `budget_duration`.
fn invalid_duration(duration: &str) -> String {
    format!("{{'error': \"Invalid budget_duration '{duration}'. Use a format like '1h', '24h', '7d', or '30d'.\"}}")
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

/// Adds the fields of `extra` (an object) to `target` (an object).
fn extend(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

/// `Member(user_id='a', user_email=None, role='admin')`, as LiteLLM prints a team member in an error.
fn member_repr(member: &Member) -> String {
    format!(
        "Member(user_id='{}', user_email={}, role='{}')",
        member.user_id,
        py_repr(member.user_email.as_deref()),
        member.role
    )
}

fn py_repr(text: Option<&str>) -> String {
    text.map(|text| format!("'{text}'")).unwrap_or_else(|| "None".to_owned())
}

fn py_str(text: Option<&str>) -> String {
    text.unwrap_or("None").to_owned()
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
