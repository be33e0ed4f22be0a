//! `/key/generate`, `/key/update`, `/key/delete`, `/key/info` and `/key/list`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{
    ADMIN_USER_ID, Caller, Key, SortValue, Store, extend, key_name, mask, page_count, page_of, query_bool, query_int,
    sha256_hex,
};
use crate::{
    Generation,
    clock::{self, Instant},
    reply::{Issue, Kind, Param, Reply, as_f64, as_i64, validated_body},
};

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

/// Key-table columns that `/key/generate` and `/key/update` write from the request.
const KEY_COLUMNS: &[&str] = &[
    "models",
    "metadata",
    "aliases",
    "max_budget",
    "tpm_limit",
    "rpm_limit",
    "max_parallel_requests",
    "budget_duration",
];

/// The columns `/key/list` sorts by (`sort_by`); both generations refuse others.
const KEY_SORT_COLUMNS: &[&str] = &["spend", "max_budget", "created_at", "updated_at", "token", "key_alias"];

impl Key {
    /// Writes one column from an already validated request value. `null` is stored as `null` for `metadata` and
    /// `aliases` (as `/key/update` does) and clears the others.
    fn set(&mut self, field: &str, value: &Value) {
        match field {
            "models" => self.models = value.as_array().cloned().unwrap_or_default(),
            "metadata" => self.metadata = value.clone(),
            "aliases" => self.aliases = value.clone(),
            "max_budget" => self.max_budget = as_f64(value),
            "tpm_limit" => self.tpm_limit = as_i64(value),
            "rpm_limit" => self.rpm_limit = as_i64(value),
            "max_parallel_requests" => self.max_parallel_requests = as_i64(value),
            "budget_duration" => self.budget_duration = value.as_str().map(str::to_owned),
            "key_alias" => self.key_alias = value.as_str().map(str::to_owned),
            _ => {}
        }
    }
}

impl Store {
    /// `POST /key/generate`, optionally with a caller-chosen `key`. Creates no user row.
    pub(crate) fn key_generate(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match validated_body(generation, bytes, KEY_SCHEMA) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
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
        if let Some(taken) = alias.as_deref().and_then(|alias| self.alias_taken(alias, None)) {
            return taken;
        }
        let now = self.now();
        let expires = match self.key_expiry(str_field("duration").as_deref(), now) {
            Ok(expires) => expires,
            Err(reply) => return reply,
        };
        let plaintext = chosen.unwrap_or_else(|| self.new_key());
        let hash = sha256_hex(&plaintext);
        // A key that exists already is left exactly as it is (LiteLLM's upsert has an empty update part), even
        // when the request names another user or alias; the answer still echoes the request.
        if !self.keys.contains_key(&hash) {
            let seq = self.next_seq();
            let mut key = Key::new(&plaintext, str_field("user_id"), now, seq);
            key.key_alias = alias.clone();
            key.team_id = str_field("team_id");
            key.created_by = Some(ADMIN_USER_ID.to_owned());
            key.expires = expires;
            for field in KEY_COLUMNS {
                if let Some(value) = body.get(*field).filter(|value| !value.is_null()) {
                    key.set(field, value);
                }
            }
            self.keys.insert(hash.clone(), key);
        }
        let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
        let mut answer = json!({
            "key_alias": alias,
            // Not echoed: both generations answer null whatever was sent.
            "duration": null,
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
                "expires": expires.map(Instant::timestamp),
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
        let body = match validated_body(generation, bytes, &[("keys", Kind::StrList), ("key_aliases", Kind::StrList)]) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
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

    /// When a key made now with `duration` expires: exactly that long from now on newer proxies, at the next
    /// boundary of the period on older ones. A duration the proxy cannot read fails the request with a 500.
    pub(super) fn key_expiry(&self, duration: Option<&str>, now: Instant) -> Result<Option<Instant>, Reply> {
        let Some(duration) = duration else { return Ok(None) };
        let expires = match self.generation {
            Generation::Newer => clock::expiry_exact(duration, now),
            Generation::Older => clock::expiry_standardised(duration, now),
        };
        expires
            .map(Some)
            .map_err(|err| Reply::envelope(500, err.to_string(), "internal_server_error", self.generation.param()))
    }

    /// The 400 for an alias another key has (`except`: the hash of the key being changed).
    fn alias_taken(&self, alias: &str, except: Option<&str>) -> Option<Reply> {
        let taken = |key: &&Key| key.key_alias.as_deref() == Some(alias) && Some(key.hash.as_str()) != except;
        self.keys.values().find(taken).map(|_| {
            Reply::envelope(
                400,
                format!("Key with alias '{alias}' already exists. Unique key aliases across all keys are required."),
                "bad_request_error",
                Param::Named("key_alias"),
            )
        })
    }

    /// The hash of a key given as itself or as its hash, as the key endpoints accept both.
    fn hash_of(&self, key: &str) -> String {
        if self.keys.contains_key(key) { key.to_owned() } else { sha256_hex(key) }
    }

    /// `POST /key/update`: the key named by its value or its hash (newer proxies also take `key_alias` alone).
    /// Fields sent replace the stored ones, `null` included; fields left out stay.
    pub(crate) fn key_update(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match validated_body(generation, bytes, KEY_SCHEMA) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let str_field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let (key, alias) = (str_field("key"), str_field("key_alias"));
        let hash = match (&key, &alias, generation) {
            (Some(key), _, _) => Some(self.hash_of(key)).filter(|hash| self.keys.contains_key(hash)),
            (None, Some(alias), Generation::Newer) => {
                let found = self.keys.values().find(|k| k.key_alias.as_deref() == Some(alias.as_str()));
                let Some(found) = found else {
                    let message = format!("Key not found. No key with key_alias='{alias}'.");
                    return Reply::envelope(404, message, "not_found_error", Param::Named("key_alias"));
                };
                Some(found.hash.clone())
            }
            (None, _, Generation::Newer) => {
                let msg = "Value error, either key or key_alias must be provided";
                let issue = Issue::new("value_error", &["body"], msg, Value::Object(body.clone()));
                return Reply::invalid(generation, vec![issue.with_ctx(json!({ "error": {} }))]);
            }
            (None, _, Generation::Older) => {
                let issue = Issue::new("missing", &["body", "key"], "Field required", Value::Object(body.clone()));
                return Reply::invalid(generation, vec![issue]);
            }
        };
        let Some(hash) = hash else { return key_not_found(generation, key.as_deref()) };
        // A new alias must be free; named by its alias, a key keeps it.
        if let Some(taken) = alias.as_deref().filter(|_| key.is_some()).and_then(|a| self.alias_taken(a, Some(&hash))) {
            return taken;
        }
        let now = self.now();
        let Some(stored) = self.keys.get_mut(&hash) else { return key_not_found(generation, key.as_deref()) };
        for field in KEY_COLUMNS.iter().chain(&["key_alias"]) {
            match body.get(*field) {
                Some(Value::Null) if !matches!(*field, "metadata" | "aliases") => {}
                Some(value) => stored.set(field, value),
                None => {}
            }
        }
        stored.updated_at = now.timestamp();
        let mut answer = self.keys.get(&hash).map(|stored| self.key_item(stored)).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut answer {
            map.remove("team_alias");
            // The key as it was sent (its value, or its hash when named by hash or alias), then its hash.
            map.insert("key".into(), Value::from(key.unwrap_or_else(|| hash.clone())));
            map.insert("token".into(), Value::from(hash));
        }
        Reply::ok(answer)
    }

    /// `GET /key/list`: key hashes (or whole keys with `return_full_object=true`), newest first, in pages of
    /// `size` (1 to 100, default 10). Keys of users without a row are listed too; expired keys stay listed.
    pub(crate) fn key_list(&self, query: &BTreeMap<String, String>) -> Reply {
        let generation = self.generation;
        let mut issues = Vec::new();
        let page = query_int(query, "page", 1, 1, None, &mut issues);
        let size = query_int(query, "size", 10, 1, Some(100), &mut issues);
        let full = query_bool(query, "return_full_object", &mut issues);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        // Both generations wrap these in a ProxyException with the string "None" as param.
        let refuse = |message: &str| Reply::envelope(400, message, "internal_server_error", Param::NoneText);
        let sort = match query.get("sort_by") {
            None => None,
            Some(column) if !KEY_SORT_COLUMNS.contains(&column.as_str()) => {
                let columns = KEY_SORT_COLUMNS.join(", ");
                return refuse(&format!("{{'error': 'Invalid sort column. Must be one of: {columns}'}}"));
            }
            Some(column) => match query.get("sort_order").map(|order| order.to_lowercase()).as_deref() {
                None | Some("desc") => Some((column.as_str(), true)),
                Some("asc") => Some((column.as_str(), false)),
                Some(_) => return refuse("{'error': \"Invalid sort order. Must be 'asc' or 'desc'\"}"),
            },
        };
        let filter = |name: &str, value: Option<&String>| query.get(name).is_none_or(|wanted| value == Some(wanted));
        let mut keys: Vec<&Key> = self
            .keys
            .values()
            .filter(|key| filter("user_id", key.user_id.as_ref()))
            .filter(|key| filter("team_id", key.team_id.as_ref()))
            .filter(|key| filter("key_alias", key.key_alias.as_ref()))
            .filter(|key| filter("key_hash", Some(&key.hash)))
            .collect();
        // Default `created_at desc, token desc`; a sort column alone otherwise, with PostgreSQL's NULL placement
        // (last when ascending, first when descending).
        match sort {
            // Unique, so an unstable sort gives the same order, faster.
            None => keys.sort_unstable_by(|a, b| b.seq.cmp(&a.seq).then_with(|| b.hash.cmp(&a.hash))),
            Some((column, descending)) => keys
                .sort_by(|a, b| SortValue::order(&key_sort_value(a, column), &key_sort_value(b, column), descending)),
        }
        let total = keys.len() as i64;
        let listed: Vec<Value> = page_of(keys, page, size)
            .map(|key| if full { self.key_object(key) } else { Value::from(key.hash.clone()) })
            .collect();
        Reply::ok(json!({
            "keys": listed,
            "total_count": total,
            "current_page": page,
            "total_pages": page_count(total, size),
        }))
    }

    /// `GET /key/info[?key=…]`: the named key, or the caller's own key.
    pub(crate) fn key_info(&self, caller: &Caller, query: &BTreeMap<String, String>) -> Reply {
        let not_found = || Reply::envelope(404, "Key not found in database", "not_found_error", Param::Named("key"));
        let (shown, hash) = match (query.get("key"), caller) {
            (Some(key), _) => (key.clone(), self.hash_of(key)),
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
}

/// `/key/update` of a key the proxy does not have: 404 on newer proxies; 401 on older ones, which treat it as an
/// authentication failure and repeat the key they were given.
fn key_not_found(generation: Generation, key: Option<&str>) -> Reply {
    match generation {
        Generation::Newer => Reply::envelope(404, "Key not found.", "not_found_error", Param::Named("key")),
        Generation::Older => Reply::envelope(
            401,
            format!(
                "Authentication Error: invalid user key - user key does not exist in db. User Key={}",
                key.unwrap_or_default()
            ),
            "auth_error",
            Param::NoneText,
        ),
    }
}

/// What `/key/list` sorts a key by.
fn key_sort_value<'a>(key: &'a Key, column: &str) -> SortValue<'a> {
    match column {
        // Keys are never charged in the emulator.
        "spend" => SortValue::Number(0.0),
        "max_budget" => key.max_budget.map_or(SortValue::Null, SortValue::Number),
        "created_at" => SortValue::Text(&key.created_at),
        "updated_at" => SortValue::Text(&key.updated_at),
        "token" => SortValue::Text(&key.hash),
        "key_alias" => key.key_alias.as_deref().map_or(SortValue::Null, SortValue::Text),
        _ => SortValue::Null,
    }
}
