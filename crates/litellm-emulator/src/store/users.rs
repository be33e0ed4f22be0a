//! `/user/new`, `/user/info`, `/user/update`, `/user/delete` and `/user/list`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::{
    Key, RaceView, SortValue, Store, User, View, extend, key_name, page_count, page_of, query_int, request_metadata,
};
use crate::{
    Generation,
    clock::{Instant, Period},
    reply::{Issue, Kind, Param, Reply, as_f64, as_i64, check_body, is_empty, parse_body, validated_body},
};

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

const MODEL_MAX_BUDGET_LICENSE: &str = "Invalid model_max_budget: You must have an enterprise license to set \
    model_max_budget. You must be a LiteLLM Enterprise user to use this feature. If you have a license please set \
    `LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. \
    \nPricing: https://www.litellm.ai/#pricing. Example of valid model_max_budget: \
    https://docs.litellm.ai/docs/proxy/users";

impl Store {
    /// `POST /user/new`. With `race`, the request is one of several performed at the same time: it checks for
    /// duplicates against the users as they were when they all started, so that each of them creates the user
    /// and the last write wins, as on a real proxy under a race (see [`RaceView`]).
    pub(crate) fn user_new(&mut self, bytes: &[u8], race: Option<&RaceView>) -> Reply {
        let generation = self.generation;
        let body = match validated_body(generation, bytes, USER_SCHEMA) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let str_field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let user_id = str_field("user_id");
        let email = str_field("user_email");
        let duration = str_field("budget_duration");
        let auto_create_key = body.get("auto_create_key").and_then(Value::as_bool).unwrap_or(true);
        let exists = |store: &Store, id: &str| race.map_or_else(|| store.users.contains_key(id), |view| view.has(id));
        let email_owner = email.as_deref().and_then(|email| match race {
            Some(view) => view.owner_of(email),
            None => self.user_with_email(email).map(|user| user.user_id.clone()),
        });
        let now = self.now();

        match generation {
            Generation::Newer => {
                if let Some(duration) = duration.as_deref().filter(|d| !Period::is_valid_budget_duration(d)) {
                    return Reply::envelope(400, invalid_duration(duration), "internal_server_error", Param::Null);
                }
                if let Some(id) = user_id.as_deref().filter(|id| exists(self, id)) {
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

        // The key's expiry is worked out before anything is written, so a bad `duration` fails the whole request.
        let expires = match self.key_expiry(str_field("duration").as_deref(), now) {
            Ok(expires) => expires,
            Err(reply) => return reply,
        };
        let user_id = user_id.unwrap_or_else(|| self.uuid());
        let existed = exists(self, &user_id);
        let mut joined = Vec::new();
        // Under a race the row may exist by now all the same: this write replaces it.
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
            let seq = self.next_seq();
            let mut key = Key::new(&plaintext, Some(user_id.clone()), now, seq);
            key.key_alias = str_field("key_alias");
            // Only the /user/new path copies the user's models onto the key.
            key.models = body.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
            key.metadata = Value::Object(request_metadata(&body));
            key.expires = expires;
            self.keys.insert(key.hash.clone(), key);
            Some(plaintext)
        } else {
            None
        };
        let mut answer = self.user_new_response(&body, &user_id, key.as_deref(), now);
        answer["expires"] = json!(key.as_ref().and(expires).map(Instant::timestamp));
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
            "metadata": request_metadata(body),
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
        let body = match validated_body(generation, bytes, USER_SCHEMA) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
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
        let now = self.now();
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
        let sort = match query.get("sort_by") {
            None => None,
            Some(column) if !USER_SORT_COLUMNS.contains(&column.as_str()) => {
                let columns = USER_SORT_COLUMNS.join(", ");
                return Reply::detail(400, format!("Invalid sort column. Must be one of: {columns}"));
            }
            // Ascending unless told otherwise, unlike /key/list.
            Some(column) => match query.get("sort_order").map(|order| order.to_lowercase()).as_deref() {
                None | Some("asc") => Some((column.as_str(), false)),
                Some("desc") => Some((column.as_str(), true)),
                Some(_) => return Reply::detail(400, "Invalid sort order. Must be 'asc' or 'desc'"),
            },
        };
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
        // Newest first by default. Text sorts by code point, as PostgreSQL does with the C collation of the test
        // bed's database (a database with another collation sorts `user_id` differently).
        match sort {
            // Sequence numbers are unique: an unstable sort gives the same order, faster.
            None => users.sort_unstable_by_key(|user| std::cmp::Reverse(user.seq)),
            Some((column, descending)) => users
                .sort_by(|a, b| SortValue::order(&user_sort_value(a, column), &user_sort_value(b, column), descending)),
        }
        let total = users.len() as i64;
        let listed: Vec<&User> = page_of(users, page, page_size).collect();
        // One pass over the keys for the page's users, not one per user: a page of a large proxy stays cheap.
        let mut key_counts: HashMap<&str, usize> = listed.iter().map(|user| (user.user_id.as_str(), 0)).collect();
        for key in self.keys.values() {
            if let Some(count) = key.user_id.as_deref().and_then(|id| key_counts.get_mut(id)) {
                *count += 1;
            }
        }
        let rows: Vec<Value> = listed
            .into_iter()
            .map(|user| {
                let mut row = self.user_json(user, View::List);
                extend(&mut row, json!({ "key_count": key_counts.get(user.user_id.as_str()).copied().unwrap_or(0) }));
                row
            })
            .collect();
        Reply::ok(json!({
            "users": rows,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": page_count(total, page_size),
        }))
    }
}

/// The columns `/user/list` sorts by (`sort_by`).
const USER_SORT_COLUMNS: &[&str] = &["user_id", "user_email", "created_at", "spend", "user_alias", "user_role"];

/// What `/user/list` sorts a user by.
fn user_sort_value<'a>(user: &'a User, column: &str) -> SortValue<'a> {
    let text = |value: &'a Option<String>| value.as_deref().map_or(SortValue::Null, SortValue::Text);
    match column {
        "user_id" => SortValue::Text(&user.user_id),
        "user_email" => text(&user.user_email),
        "created_at" => SortValue::Text(&user.created_at),
        "spend" => SortValue::Number(user.spend),
        "user_alias" => text(&user.user_alias),
        "user_role" => text(&user.user_role),
        _ => SortValue::Null,
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
