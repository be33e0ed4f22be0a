//! `/key/generate`, `/key/delete` and `/key/info`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{ADMIN_USER_ID, Caller, Key, Store, extend, key_name, mask, sha256_hex};
use crate::{
    Generation,
    clock::Instant,
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
}
