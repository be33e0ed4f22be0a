//! Contract suite: one list of request sequences, run against the LiteLLM emulator and against real proxies, and
//! compared through a normalised projection of the answers (status, error shape, and the fields the operator
//! reads; never timestamps, generated keys or hashes, which are compared only as "the hash of the key we sent").
//!
//! The expectations are the real proxies' answers, recorded in `tests/contract/expected-<version>.json`:
//!
//! ```sh
//! eval "$(bash ../shared/testbed/litellm/up.sh /tmp/contract-1108 --version 1.108.7 --port 4510 --pg-port 15510)"
//! cargo test -p litellm-emulator --test contract -- --ignored --exact record_real_proxy_expectations   # rewrite the file
//! cargo test -p litellm-emulator --test contract -- --ignored --exact real_proxy_matches_expectations  # or only compare (CI)
//! ```
//!
//! `emulator_matches_recorded_expectations` runs the same sequence against an in-process emulator of each
//! generation and compares it with those files: Newer with 1.108.7, Older with 1.80.5. Every run uses fresh ids
//! (`ct-<random>-…`), so the sequence can run against a proxy that other tests use too.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use litellm_emulator::{Emulator, EmulatorConfig, Generation};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

// ---------- the sequence ----------

#[derive(Clone, Copy, Debug)]
enum Auth {
    Master,
    /// No `Authorization` header.
    Nothing,
    /// This literal bearer value.
    Literal(&'static str),
    /// The run's custom key `$K<n>` (1: registered in `key_generate_custom`; 5: made already expired).
    Key(usize),
}

/// What the operator cares about in a successful answer.
#[derive(Clone, Copy, Debug)]
enum Projection {
    Health,
    UserNew,
    UserInfo,
    UserUpdate,
    /// A bare integer body.
    Count,
    UserList,
    Activity,
    KeyGenerate,
    KeyUpdate,
    KeyDelete,
    KeyInfo,
    KeyList,
    /// Only the `key_alias` of each listed key, in order: keys without one tie, and ties come in any order.
    KeyAliases,
    /// The usage rows `SEED` wrote.
    Seeded,
    Team,
    TeamDelete,
}

#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// JSON with placeholders: `$R` the run prefix, `$K1` to `$K9` the custom keys, `$H1` to `$H9` their hashes.
    Json(&'static str),
    /// Sent as is (after placeholders), as `application/json`.
    Raw(&'static str),
}

struct Step {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Body,
    auth: Auth,
    projection: Projection,
}

const fn step(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Body,
    auth: Auth,
    projection: Projection,
) -> Step {
    Step { name, method, path, body, auth, projection }
}

use Auth::{Key, Literal, Master, Nothing};

/// `$K1`, the key `key_generate_custom` registers for alice.
const KEY1: Auth = Key(1);
use Body::{Json, Raw};
use Projection as P;

/// The requests, in order; each sees what the earlier ones left.
const STEPS: &[Step] = &[
    step("health", "GET", "/health/readiness", Body::None, Nothing, P::Health),
    step("team_new", "POST", "/team/new", Json(r#"{"team_id":"$R-team","team_alias":"$R team"}"#), Master, P::Team),
    // ----- users: create, duplicates, invalid bodies -----
    step(
        "user_new_alice",
        "POST",
        "/user/new",
        Json(
            r#"{"user_id":"$R-alice","user_email":"$R-alice@example.com","user_alias":"Alice","user_role":"internal_user",
                "max_budget":10,"budget_duration":"30d","models":["gpt-4o"],"tpm_limit":100,"rpm_limit":10,
                "max_parallel_requests":2,"metadata":{"team":"x"},"model_rpm_limit":{"gpt-4o":5},
                "allowed_cache_controls":["no-cache"],"sso_user_id":"$R-sso","object_permission":{"vector_stores":["v1"]},
                "teams":["$R-team","$R-no-such-team"],"auto_create_key":false}"#,
        ),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_same_id",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-alice","user_email":"$R-alice2@example.com","auto_create_key":false}"#),
        Master,
        P::UserNew,
    ),
    step("user_new_same_id_default_key", "POST", "/user/new", Json(r#"{"user_id":"$R-alice"}"#), Master, P::UserNew),
    step(
        "user_new_same_email",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-bob","user_email":"$R-ALICE@example.com","auto_create_key":false}"#),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_bob_with_key",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-bob","user_email":"$R-bob@example.com"}"#),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_carl",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-carl","auto_create_key":false}"#),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_bad_role",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-mallory","user_role":"boss"}"#),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_model_max_budget",
        "POST",
        "/user/new",
        Json(
            r#"{"user_id":"$R-mmb","model_max_budget":{"gpt-4o":{"budget_limit":1,"time_period":"1d"}},"auto_create_key":false}"#,
        ),
        Master,
        P::UserNew,
    ),
    step(
        "user_new_unitless_duration",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-unitless","budget_duration":"30","auto_create_key":false}"#),
        Master,
        P::UserNew,
    ),
    step("user_new_not_json", "POST", "/user/new", Raw("not json"), Master, P::UserNew),
    step(
        "user_new_wrong_type",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-x","max_budget":"lots"}"#),
        Master,
        P::UserNew,
    ),
    // ----- users: read -----
    step("user_info_alice", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    step("user_info_unknown", "GET", "/user/info?user_id=$R-ghost", Body::None, Master, P::UserInfo),
    step("user_info_unitless", "GET", "/user/info?user_id=$R-unitless", Body::None, Master, P::UserInfo),
    // ----- users: partial updates -----
    step(
        "user_update_alice",
        "POST",
        "/user/update",
        Json(
            r#"{"user_id":"$R-alice","max_budget":20,"user_alias":"Alice A.","metadata":{"team":"y"},"tpm_limit":200,
                "model_tpm_limit":{"gpt-4o":500}}"#,
        ),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_nulls_and_empties",
        "POST",
        "/user/update",
        Json(
            r#"{"user_id":"$R-alice","max_budget":null,"budget_duration":null,"tpm_limit":null,"rpm_limit":null,
                "models":[],"metadata":{},"user_alias":null,"user_email":null,"max_parallel_requests":null,
                "allowed_cache_controls":[],"sso_user_id":null,"teams":[]}"#,
        ),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_model_max_budget",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","model_max_budget":{"gpt-4o":{"budget_limit":1.5,"time_period":"1d"}}}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_model_max_budget_null",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","model_max_budget":null}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_unitless_duration",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","budget_duration":"30"}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_duration_role_models",
        "POST",
        "/user/update",
        Json(
            r#"{"user_id":"$R-alice","budget_duration":"1d","user_role":"internal_user_viewer","models":["gpt-4o-mini"]}"#,
        ),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_blocked",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","blocked":true}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_key_alias",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","key_alias":"x"}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_bad_role",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-alice","user_role":"boss"}"#),
        Master,
        P::UserUpdate,
    ),
    step("user_update_no_id", "POST", "/user/update", Json(r#"{"max_budget":1}"#), Master, P::UserUpdate),
    step(
        "user_update_by_email",
        "POST",
        "/user/update",
        Json(r#"{"user_email":"$R-bob@example.com","max_budget":7}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_unknown_email",
        "POST",
        "/user/update",
        Json(r#"{"user_email":"$R-nobody@example.com","max_budget":7}"#),
        Master,
        P::UserUpdate,
    ),
    step(
        "user_update_unknown_upserts",
        "POST",
        "/user/update",
        Json(r#"{"user_id":"$R-ghost2","max_budget":1}"#),
        Master,
        P::UserUpdate,
    ),
    step("user_info_after_updates", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    step("user_info_upserted", "GET", "/user/info?user_id=$R-ghost2", Body::None, Master, P::UserInfo),
    // ----- keys -----
    step(
        "key_generate_custom",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K1","key_alias":"$R-main"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_same_key_and_alias",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K1","key_alias":"$R-main"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_same_key",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K1"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_alias_taken",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-bob","key_alias":"$R-main"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_not_sk",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"not-an-sk-key"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_for_user_without_row",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-carol","key":"$K2"}"#),
        Master,
        P::KeyGenerate,
    ),
    step("user_info_alice_keys", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    step("user_info_key_only_user", "GET", "/user/info?user_id=$R-carol", Body::None, Master, P::UserInfo),
    step("key_info_with_user_key", "GET", "/key/info", Body::None, KEY1, P::KeyInfo),
    step("key_info_by_param", "GET", "/key/info?key=$K1", Body::None, Master, P::KeyInfo),
    step("key_info_unknown", "GET", "/key/info?key=sk-$R-unknown", Body::None, Master, P::KeyInfo),
    // ----- keys with a duration, and expiry -----
    step(
        "key_generate_30s",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K3","key_alias":"$R-k3","duration":"30s"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_1h",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K4","duration":"1h","aliases":{"gpt":"gpt-4o"},"metadata":{"k":4}}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_bad_duration",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K6","duration":"bogus"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_unitless_duration",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K7","duration":"30"}"#),
        Master,
        P::KeyGenerate,
    ),
    step(
        "key_generate_expired",
        "POST",
        "/key/generate",
        Json(r#"{"user_id":"$R-alice","key":"$K5","duration":"0s"}"#),
        Master,
        P::KeyGenerate,
    ),
    step("key_info_with_expired_key", "GET", "/key/info", Body::None, Key(5), P::KeyInfo),
    step("user_list_with_expired_key", "GET", "/user/list", Body::None, Key(5), P::UserList),
    step("key_info_expiring_by_hash", "GET", "/key/info?key=$H3", Body::None, Master, P::KeyInfo),
    step("key_info_with_expiring_key", "GET", "/key/info", Body::None, Key(4), P::KeyInfo),
    step("user_info_alice_expiring_keys", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    // ----- listing keys -----
    step("key_list_alice", "GET", "/key/list?user_id=$R-alice", Body::None, Master, P::KeyList),
    step(
        "key_list_alice_full",
        "GET",
        "/key/list?user_id=$R-alice&return_full_object=true",
        Body::None,
        Master,
        P::KeyList,
    ),
    step("key_list_alice_page_2", "GET", "/key/list?user_id=$R-alice&size=2&page=2", Body::None, Master, P::KeyList),
    step(
        "key_list_by_alias_asc",
        "GET",
        "/key/list?user_id=$R-alice&sort_by=key_alias&sort_order=asc&return_full_object=true",
        Body::None,
        Master,
        P::KeyAliases,
    ),
    step(
        "key_list_by_alias_desc",
        "GET",
        "/key/list?user_id=$R-alice&sort_by=key_alias&return_full_object=true",
        Body::None,
        Master,
        P::KeyAliases,
    ),
    step("key_list_bad_sort_column", "GET", "/key/list?sort_by=user_id", Body::None, Master, P::KeyList),
    step("key_list_bad_sort_order", "GET", "/key/list?sort_by=key_alias&sort_order=up", Body::None, Master, P::KeyList),
    step("key_list_size_too_big", "GET", "/key/list?size=101", Body::None, Master, P::KeyList),
    step("key_list_size_zero", "GET", "/key/list?size=0", Body::None, Master, P::KeyList),
    step("key_list_not_a_bool", "GET", "/key/list?return_full_object=maybe", Body::None, Master, P::KeyList),
    step("key_list_user_without_row", "GET", "/key/list?user_id=$R-carol", Body::None, Master, P::KeyList),
    step("key_list_by_key_alias", "GET", "/key/list?key_alias=$R-main", Body::None, Master, P::KeyList),
    step("key_list_unknown_user", "GET", "/key/list?user_id=$R-ghost", Body::None, Master, P::KeyList),
    // ----- updating keys -----
    step(
        "key_update_by_key",
        "POST",
        "/key/update",
        Json(r#"{"key":"$K1","aliases":{"gpt":"gpt-4o"}}"#),
        Master,
        P::KeyUpdate,
    ),
    step(
        "key_update_by_hash",
        "POST",
        "/key/update",
        Json(r#"{"key":"$H1","aliases":{"gpt":"gpt-4o-mini"},"metadata":{"owner":"$R"}}"#),
        Master,
        P::KeyUpdate,
    ),
    step("key_info_after_update", "GET", "/key/info?key=$H1", Body::None, Master, P::KeyInfo),
    step(
        "key_update_metadata_null",
        "POST",
        "/key/update",
        Json(r#"{"key":"$H4","metadata":null}"#),
        Master,
        P::KeyUpdate,
    ),
    step(
        "key_update_unknown_key",
        "POST",
        "/key/update",
        Json(r#"{"key":"sk-$R-unknown","aliases":{"a":"b"}}"#),
        Master,
        P::KeyUpdate,
    ),
    step(
        "key_update_unknown_hash",
        "POST",
        "/key/update",
        Json(r#"{"key":"$H8","aliases":{"a":"b"}}"#),
        Master,
        P::KeyUpdate,
    ),
    step("key_update_no_key", "POST", "/key/update", Json(r#"{"aliases":{"a":"b"}}"#), Master, P::KeyUpdate),
    step(
        "key_update_alias_taken",
        "POST",
        "/key/update",
        Json(r#"{"key":"$K3","key_alias":"$R-main"}"#),
        Master,
        P::KeyUpdate,
    ),
    step(
        "key_update_not_an_object",
        "POST",
        "/key/update",
        Json(r#"{"key":"$K1","aliases":[1]}"#),
        Master,
        P::KeyUpdate,
    ),
    step("user_info_alice_updated_keys", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    step("key_info_with_updated_key", "GET", "/key/info", Body::None, KEY1, P::KeyInfo),
    step("user_list_with_user_key", "GET", "/user/list", Body::None, KEY1, P::UserList),
    step("user_new_with_user_key", "POST", "/user/new", Json(r#"{"user_id":"$R-mallory"}"#), KEY1, P::UserNew),
    step("key_delete_by_hash", "POST", "/key/delete", Json(r#"{"keys":["$H2"]}"#), Master, P::KeyDelete),
    step("key_delete_unknown", "POST", "/key/delete", Json(r#"{"keys":["$H2"]}"#), Master, P::KeyDelete),
    step("key_delete_by_alias", "POST", "/key/delete", Json(r#"{"key_aliases":["$R-main"]}"#), Master, P::KeyDelete),
    step("key_delete_nothing_named", "POST", "/key/delete", Json(r#"{}"#), Master, P::KeyDelete),
    step("key_info_with_deleted_key", "GET", "/key/info", Body::None, KEY1, P::KeyInfo),
    step("user_info_alice_after_key_delete", "GET", "/user/info?user_id=$R-alice", Body::None, Master, P::UserInfo),
    // ----- teams -----
    step(
        "team_member_add_existing_member",
        "POST",
        "/team/member_add",
        Json(r#"{"team_id":"$R-team","member":{"user_id":"$R-alice","role":"user"}}"#),
        Master,
        P::Team,
    ),
    step(
        "team_member_add_unknown_team",
        "POST",
        "/team/member_add",
        Json(r#"{"team_id":"$R-no-such-team","member":{"user_id":"$R-carl","role":"user"}}"#),
        Master,
        P::Team,
    ),
    step(
        "team_member_add_carl",
        "POST",
        "/team/member_add",
        Json(r#"{"team_id":"$R-team","member":{"user_id":"$R-carl","role":"user"}}"#),
        Master,
        P::Team,
    ),
    step("team_member_add_no_member", "POST", "/team/member_add", Json(r#"{"team_id":"$R-team"}"#), Master, P::Team),
    step("user_info_carl_in_team", "GET", "/user/info?user_id=$R-carl", Body::None, Master, P::UserInfo),
    step(
        "team_member_delete_carl",
        "POST",
        "/team/member_delete",
        Json(r#"{"team_id":"$R-team","user_id":"$R-carl"}"#),
        Master,
        P::Team,
    ),
    step(
        "team_member_delete_not_member",
        "POST",
        "/team/member_delete",
        Json(r#"{"team_id":"$R-team","user_id":"$R-carl"}"#),
        Master,
        P::Team,
    ),
    step(
        "team_member_delete_unknown_team",
        "POST",
        "/team/member_delete",
        Json(r#"{"team_id":"$R-no-such-team","user_id":"$R-carl"}"#),
        Master,
        P::Team,
    ),
    step("user_info_carl_left_team", "GET", "/user/info?user_id=$R-carl", Body::None, Master, P::UserInfo),
    // ----- usage -----
    step(
        "activity_with_dates",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-alice",
        Body::None,
        Master,
        P::Activity,
    ),
    step("activity_without_dates", "GET", "/user/daily/activity?user_id=$R-alice", Body::None, Master, P::Activity),
    step(
        "activity_bad_date",
        "GET",
        "/user/daily/activity?start_date=bad&end_date=$D2&user_id=$R-alice",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_page_size_too_big",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-alice&page_size=2000",
        Body::None,
        Master,
        P::Activity,
    ),
    // Four rows of `$R-usage` (a user without a row, so no running spend changes): one on `$D0`, one on `$D1` and
    // two models on `$D2`. Pages are of rows, and their totals are the page's only.
    step("seed_usage", "SEED", "", Body::None, Master, P::Seeded),
    step(
        "activity_page_1_of_rows",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-usage&page_size=2",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_page_2_of_rows",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-usage&page_size=2&page=2",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_page_past_the_end",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-usage&page_size=2&page=3",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_one_page",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-usage",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_some_days",
        "GET",
        "/user/daily/activity?start_date=$D1&end_date=$D2&user_id=$R-usage&page_size=3",
        Body::None,
        Master,
        P::Activity,
    ),
    step(
        "activity_page_size_zero",
        "GET",
        "/user/daily/activity?start_date=$D0&end_date=$D2&user_id=$R-usage&page_size=0",
        Body::None,
        Master,
        P::Activity,
    ),
    // ----- listing -----
    step(
        "list_page_1",
        "GET",
        "/user/list?user_ids=$R-alice,$R-bob,$R-carl&page_size=1&page=1",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_page_2",
        "GET",
        "/user/list?user_ids=$R-alice,$R-bob,$R-carl&page_size=1&page=2",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_page_3",
        "GET",
        "/user/list?user_ids=$R-alice,$R-bob,$R-carl&page_size=1&page=3",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_page_4",
        "GET",
        "/user/list?user_ids=$R-alice,$R-bob,$R-carl&page_size=1&page=4",
        Body::None,
        Master,
        P::UserList,
    ),
    step("list_two_ids_exact", "GET", "/user/list?user_ids=$R-alice,$R-ghost", Body::None, Master, P::UserList),
    step("list_one_id_is_substring", "GET", "/user/list?user_ids=$R-", Body::None, Master, P::UserList),
    step("list_page_size_too_big", "GET", "/user/list?page_size=101", Body::None, Master, P::UserList),
    step("list_page_zero", "GET", "/user/list?page=0", Body::None, Master, P::UserList),
    step(
        "list_sorted_by_user_id_asc",
        "GET",
        "/user/list?user_ids=$R-carl,$R-alice,$R-bob&sort_by=user_id&sort_order=asc",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_sorted_by_user_id_default_order",
        "GET",
        "/user/list?user_ids=$R-carl,$R-alice,$R-bob&sort_by=user_id",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_sorted_by_user_id_desc",
        "GET",
        "/user/list?user_ids=$R-carl,$R-alice,$R-bob&sort_by=user_id&sort_order=desc",
        Body::None,
        Master,
        P::UserList,
    ),
    step(
        "list_order_without_sort_by",
        "GET",
        "/user/list?user_ids=$R-carl,$R-alice,$R-bob&sort_order=asc",
        Body::None,
        Master,
        P::UserList,
    ),
    step("list_bad_sort_column", "GET", "/user/list?sort_by=key_count", Body::None, Master, P::UserList),
    step("list_bad_sort_order", "GET", "/user/list?sort_by=user_id&sort_order=up", Body::None, Master, P::UserList),
    step("list_page_size_1000", "GET", "/user/list?page_size=1000", Body::None, Master, P::UserList),
    // ----- deletes -----
    step("user_delete_bob", "POST", "/user/delete", Json(r#"{"user_ids":["$R-bob"]}"#), Master, P::Count),
    step("user_info_deleted", "GET", "/user/info?user_id=$R-bob", Body::None, Master, P::UserInfo),
    step("user_delete_unknown", "POST", "/user/delete", Json(r#"{"user_ids":["$R-nobody"]}"#), Master, P::Count),
    step(
        "user_delete_known_and_unknown",
        "POST",
        "/user/delete",
        Json(r#"{"user_ids":["$R-carl","$R-nobody"]}"#),
        Master,
        P::Count,
    ),
    step("user_info_carl_kept", "GET", "/user/info?user_id=$R-carl", Body::None, Master, P::UserInfo),
    step("user_delete_no_ids", "POST", "/user/delete", Json(r#"{}"#), Master, P::Count),
    // ----- authentication -----
    step("auth_none_get", "GET", "/user/list", Body::None, Nothing, P::UserList),
    step("auth_none_post", "POST", "/user/new", Json(r#"{"user_id":"$R-mallory"}"#), Nothing, P::UserNew),
    step("auth_wrong_key_get", "GET", "/user/list", Body::None, Literal("sk-wrong"), P::UserList),
    step(
        "auth_wrong_key_post",
        "POST",
        "/user/new",
        Json(r#"{"user_id":"$R-mallory"}"#),
        Literal("sk-wrong"),
        P::UserNew,
    ),
    step("auth_not_sk", "GET", "/user/list", Body::None, Literal("notsk"), P::UserList),
    step("user_info_mallory_never_created", "GET", "/user/info?user_id=$R-mallory", Body::None, Master, P::UserInfo),
    // ----- cleanup (also checks multi-id deletes) -----
    step(
        "cleanup_users",
        "POST",
        "/user/delete",
        Json(r#"{"user_ids":["$R-alice","$R-carl","$R-ghost2"]}"#),
        Master,
        P::Count,
    ),
    step("cleanup_unitless", "POST", "/user/delete", Json(r#"{"user_ids":["$R-unitless"]}"#), Master, P::Count),
    step("cleanup_team", "POST", "/team/delete", Json(r#"{"team_ids":["$R-team"]}"#), Master, P::TeamDelete),
    step("cleanup_team_again", "POST", "/team/delete", Json(r#"{"team_ids":["$R-team"]}"#), Master, P::TeamDelete),
];

// ---------- running a sequence ----------

struct Target {
    url: String,
    master_key: String,
    /// Where the `SEED` step writes usage rows.
    usage: UsageSink,
}

/// How usage gets into a proxy: the emulator records it over HTTP; a real proxy's daily table is written with
/// psql, as BEHAVIOUR.md's requests do (the proxy only writes it for model calls, which the test bed cannot make).
enum UsageSink {
    Emulator,
    Postgres { database_url: String },
}

/// The usage rows `SEED` writes, for user `$R-usage`: (id suffix, date, model, prompt, completion, spend, requests).
/// The dates are the run's `$D0` to `$D2`.
const USAGE_ROWS: &[(&str, &str, &str, u64, u64, f64, u64)] = &[
    ("d1", "$D0", "gpt-4o", 100, 50, 0.25, 3),
    ("d2", "$D1", "gpt-4o", 10, 5, 0.01, 1),
    ("d3", "$D2", "gpt-4o", 20, 10, 0.5, 2),
    ("d4", "$D2", "gpt-4o-mini", 1, 1, 0.125, 1),
];

impl Target {
    async fn seed_usage(&self, client: &reqwest::Client, run: &Run) -> Value {
        let user_id = format!("{}-usage", run.prefix);
        match &self.usage {
            UsageSink::Emulator => {
                for &(_, date, model, prompt_tokens, completion_tokens, spend, requests) in USAGE_ROWS {
                    let date = run.fill(date);
                    let record = json!({"user_id": user_id, "date": date, "model": model, "api_key": "hashed-key-1",
                                        "spend": spend, "prompt_tokens": prompt_tokens,
                                        "completion_tokens": completion_tokens, "requests": requests});
                    let url = format!("{}/emulator/spend", self.url);
                    let response = client.post(url).bearer_auth(&self.master_key).json(&record).send().await;
                    let status = response.expect("POST /emulator/spend").status();
                    assert!(status.is_success(), "POST /emulator/spend: {status}");
                }
            }
            UsageSink::Postgres { database_url } => {
                let values: Vec<String> = USAGE_ROWS
                    .iter()
                    .map(|(id, date, model, prompt, completion, spend, requests)| {
                        let date = run.fill(date);
                        format!(
                            "('{}-{id}','{user_id}','{date}','hashed-key-1','{model}','{model}','openai',{prompt},\
                             {completion},{spend},now(),{requests},{requests})",
                            run.prefix
                        )
                    })
                    .collect();
                let sql = format!(
                    "insert into \"LiteLLM_DailyUserSpend\"(id,user_id,date,api_key,model,model_group,\
                     custom_llm_provider,prompt_tokens,completion_tokens,spend,updated_at,api_requests,\
                     successful_requests) values {}",
                    values.join(",")
                );
                let output = std::process::Command::new(psql())
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", &sql])
                    .output()
                    .expect("run psql");
                // The URL holds the database password: never printed.
                assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
        json!({ "rows": USAGE_ROWS.len() })
    }
}

/// `psql` from PATH, or from the PostgreSQL the test bed installed (as its verify.sh looks for it).
fn psql() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("psql")).find(|psql| psql.is_file()));
    let installed = || {
        let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        let mut found: Vec<PathBuf> = versions
            .filter_map(|entry| Some(entry.ok()?.path().join("bin/psql")))
            .filter(|psql| psql.is_file())
            .collect();
        found.sort();
        found.pop()
    };
    on_path.flatten().or_else(installed).unwrap_or_else(|| PathBuf::from("psql"))
}

/// The values of one run: fresh ids, keys and dates, and how to turn them back into placeholders.
struct Run {
    prefix: String,
    /// `$D0` to `$D2`: three days in a row, picked at random so that a run sees only its own usage (1.80.5's
    /// `/user/daily/activity` ignores `user_id` and answers the usage of every user in the date range).
    days: [String; 3],
    /// `$K1` to `$K9`.
    keys: Vec<String>,
    /// Keys made with a `duration`, by hash: when the request was sent (seconds since the epoch) and the duration.
    durations: BTreeMap<String, (f64, String)>,
}

impl Run {
    fn new() -> Self {
        let keys = (0..9).map(|_| custom_key()).collect();
        let mut seed = [0u8; 3];
        getrandom::fill(&mut seed).expect("OS randomness");
        // A day from 2001 to 2099, early enough in its month that the next two days are in it too.
        let (year, month, day) = (2001 + u32::from(seed[0]) % 99, 1 + seed[1] % 12, 1 + seed[2] % 26);
        let days = [0, 1, 2].map(|n| format!("{year:04}-{month:02}-{:02}", day + n));
        Run { prefix: format!("ct-{}", random_text(8, HEX)), keys, days, durations: BTreeMap::new() }
    }

    fn fill(&self, template: &str) -> String {
        let mut text = template.replace("$R", &self.prefix);
        for (index, day) in self.days.iter().enumerate() {
            text = text.replace(&format!("$D{index}"), day);
        }
        for (index, key) in self.keys.iter().enumerate() {
            text =
                text.replace(&format!("$K{}", index + 1), key).replace(&format!("$H{}", index + 1), &sha256_hex(key));
        }
        text
    }

    /// Remembers when a key with a `duration` was asked for, to judge its `expires` later.
    fn note_duration(&mut self, body: &Value) {
        if let (Some(key), Some(duration)) = (body["key"].as_str(), body["duration"].as_str()) {
            self.durations.insert(sha256_hex(key), (unix_now(), duration.to_owned()));
        }
    }

    /// Replaces this run's values by stable names, and generated keys, hashes and times by what they are.
    fn normalise_text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (index, key) in self.keys.iter().enumerate() {
            let n = index + 1;
            text = text.replace(&sha256_hex(key), &format!("<sha256(key{n})>")).replace(key, &format!("<key{n}>"));
            // `sk-...` and the last four characters, as some errors show a key.
            let tail = &key[key.len() - 4..];
            text = text.replace(&format!("sk-...{tail}"), &format!("<name of key{n}>"));
        }
        for (index, day) in self.days.iter().enumerate() {
            text = text.replace(day, &format!("<day{index}>"));
        }
        let text = text
            .replace(&self.prefix, "ct-<run>")
            // LiteLLM shows user ids in some errors as their first six characters, stars and the last two.
            .replace(&format!("{}*", &self.prefix[..6]), "ct-<run>*");
        scrub_times(&scrub_generated(&text))
    }

    fn normalise(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.normalise_text(text)),
            Value::Number(n) => canonical_number(n.as_f64().unwrap_or(f64::NAN)),
            Value::Array(items) => Value::Array(items.iter().map(|item| self.normalise(item)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (self.normalise_text(k), self.normalise(v))).collect())
            }
            other => other.clone(),
        }
    }
}

/// One step's outcome as compared: the request line, the status and the projection of the answer.
fn outcome(step: &Step, status: u16, answer: Value) -> Value {
    json!({ "step": step.name, "request": format!("{} {}", step.method, step.path), "status": status, "answer": answer })
}

async fn run_sequence(target: &Target) -> Vec<Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Idle connections are dropped well before uvicorn closes them (5 s): a step sent on a connection the proxy
    // is closing at that moment would be reset, and the steps are not all safe to send twice.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("HTTP client");
    let mut run = Run::new();
    let mut outcomes = Vec::new();
    for step in STEPS {
        if step.method == "SEED" {
            let answer = target.seed_usage(&client, &run).await;
            outcomes.push(outcome(step, 200, answer));
            continue;
        }
        let url = format!("{}{}", target.url.trim_end_matches('/'), run.fill(step.path));
        let method = reqwest::Method::from_bytes(step.method.as_bytes()).expect("method");
        let mut request = client.request(method, &url);
        request = match step.auth {
            Master => request.bearer_auth(&target.master_key),
            Nothing => request,
            Literal(value) => request.bearer_auth(value),
            Key(n) => request.bearer_auth(&run.keys[n - 1]),
        };
        request = match step.body {
            Body::None => request,
            Json(template) => {
                let text = run.fill(template);
                let body: Value =
                    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: bad JSON: {err}", step.name));
                run.note_duration(&body);
                request.json(&body)
            }
            Raw(text) => request.header("content-type", "application/json").body(run.fill(text)),
        };
        let response = request.send().await.unwrap_or_else(|err| panic!("{} {url}: {err}", step.name));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_else(|err| panic!("{}: reading the answer: {err}", step.name));
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        outcomes.push(outcome(step, status, project(&run, step.projection, status, &body)));
    }
    outcomes
}

// ---------- projections ----------

/// The user-table fields the operator reads (`src/litellm/types.rs`).
const USER_FIELDS: &[&str] = &[
    "user_id",
    "user_alias",
    "user_email",
    "user_role",
    "teams",
    "max_budget",
    "spend",
    "budget_duration",
    "budget_reset_at",
    "models",
    "tpm_limit",
    "rpm_limit",
    "max_parallel_requests",
    "metadata",
    "model_max_budget",
    "allowed_cache_controls",
    "sso_user_id",
    "object_permission",
];

fn project(run: &Run, projection: Projection, status: u16, body: &Value) -> Value {
    if !(200..300).contains(&status) {
        return error_shape(run, body);
    }
    match projection {
        P::Health => pick(run, body, &["status", "db"]),
        P::UserNew => pick(
            run,
            body,
            &[
                "user_id",
                "key",
                "user_email",
                "user_alias",
                "user_role",
                "max_budget",
                "budget_duration",
                "models",
                "metadata",
                "tpm_limit",
                "rpm_limit",
                "max_parallel_requests",
                "allowed_cache_controls",
                "teams",
            ],
        ),
        P::UserInfo => {
            let user_info = match body.get("user_info") {
                Some(row) if row.get("user_id").is_some() => user_row(run, row),
                // Older proxies' stub for a user without a row: shown whole, it is small.
                Some(other) => json!({ "stub": run.normalise(other) }),
                None => Value::String("<absent>".into()),
            };
            let mut keys: Vec<Value> = array(body, "keys").iter().map(|key| key_row(run, key, None)).collect();
            keys.sort_by_key(|key| key.to_string());
            let teams: Vec<Value> = array(body, "teams").iter().map(|team| run.normalise(&team["team_id"])).collect();
            json!({ "user_id": run.normalise(&body["user_id"]), "user_info": user_info, "keys": keys, "teams": teams })
        }
        P::UserUpdate => json!({ "user_id": run.normalise(&body["user_id"]), "data": user_row(run, &body["data"]) }),
        P::Count => run.normalise(body),
        P::UserList => {
            let users: Vec<Value> = array(body, "users")
                .iter()
                .map(|user| pick(run, user, &["user_id", "key_count", "teams", "max_budget"]))
                .collect();
            let mut answer = pick(run, body, &["total", "page", "page_size", "total_pages"]);
            answer["users"] = Value::Array(users);
            answer
        }
        P::Activity => {
            let days: Vec<Value> = array(body, "results")
                .iter()
                .map(|day| {
                    let mut answer = pick(run, &day["metrics"], &["spend", "api_requests", "total_tokens"]);
                    answer["date"] = run.normalise(&day["date"]);
                    answer
                })
                .collect();
            let totals = pick(
                run,
                &body["metadata"],
                &[
                    "total_spend",
                    "total_prompt_tokens",
                    "total_completion_tokens",
                    "total_tokens",
                    "total_api_requests",
                    "total_successful_requests",
                    "total_failed_requests",
                    "page",
                    "total_pages",
                    "has_more",
                ],
            );
            json!({ "days": days, "metadata": totals })
        }
        P::KeyGenerate | P::KeyUpdate => {
            let mut answer = key_row(run, body, None);
            extend(&mut answer, pick(run, body, &["key", "token_id", "duration"]));
            answer
        }
        P::KeyDelete => pick(run, body, &["deleted_keys"]),
        P::KeyInfo => json!({
            "key": run.normalise(&body["key"]),
            "info": key_row(run, &body["info"], body["key"].as_str().map(hash_of)),
        }),
        P::KeyList => {
            let keys: Vec<Value> = array(body, "keys")
                .iter()
                .map(|key| if key.is_object() { key_row(run, key, None) } else { run.normalise(key) })
                .collect();
            let mut answer = pick(run, body, &["total_count", "current_page", "total_pages"]);
            answer["keys"] = Value::Array(keys);
            answer
        }
        P::KeyAliases => {
            let aliases: Vec<Value> = array(body, "keys").iter().map(|key| run.normalise(&key["key_alias"])).collect();
            json!({ "key_aliases": aliases })
        }
        P::Seeded => run.normalise(body),
        P::Team => {
            let members: Vec<Value> =
                array(body, "members_with_roles").iter().map(|m| pick(run, m, &["user_id", "role"])).collect();
            let mut answer = pick(run, body, &["team_id", "team_alias"]);
            answer["members_with_roles"] = Value::Array(members);
            if let Some(updated) = body.get("updated_users").and_then(Value::as_array) {
                let updated: Vec<Value> =
                    updated.iter().map(|user| pick(run, user, &["user_id", "teams", "user_role"])).collect();
                answer["updated_users"] = Value::Array(updated);
            }
            answer
        }
        P::TeamDelete => pick(run, body, &["deleted_teams"]),
    }
}

/// Which of LiteLLM's error shapes an answer has, with its details (BEHAVIOUR.md conventions).
fn error_shape(run: &Run, body: &Value) -> Value {
    if body.get("error").is_some_and(Value::is_object) {
        let mut answer = pick(run, &body["error"], &["message", "type", "param", "code"]);
        answer["shape"] = json!("E");
        if answer["type"] == "expired_key" {
            // The key, its hash, or `sk-...` and the last four characters of either, depending on LiteLLM's cache.
            answer["param"] = json!("<the key in some form>");
        }
        return answer;
    }
    match body.get("detail") {
        Some(Value::Array(items)) => {
            let items: Vec<Value> = items.iter().map(|item| pick(run, item, &["type", "loc", "msg"])).collect();
            json!({ "shape": "422", "detail": items })
        }
        Some(Value::Object(detail)) if detail.contains_key("error") => {
            json!({ "shape": "D", "error": run.normalise(&detail["error"]) })
        }
        Some(other) => json!({ "shape": "detail", "detail": run.normalise(other) }),
        None => json!({ "shape": "other", "body": run.normalise(body) }),
    }
}

/// A key as the key endpoints and `/user/info` show it: its hash and the fields the operator reads, with
/// `expires` judged against the `duration` it was made with. `hash` names the key when `token` does not.
fn key_row(run: &Run, key: &Value, hash: Option<String>) -> Value {
    let mut answer = pick(run, key, &["token", "key_alias", "user_id", "aliases", "metadata", "expires"]);
    let hash = hash.or_else(|| key["token"].as_str().map(str::to_owned));
    if let Some(expires) = key.get("expires") {
        answer["expires"] = expiry(run, expires, hash.as_deref());
    }
    answer
}

/// A key's hash, whether the key or its hash is given.
fn hash_of(key: &str) -> String {
    if key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()) { key.to_owned() } else { sha256_hex(key) }
}

/// What a key's `expires` is, relative to when the key was asked for and its `duration`: the times themselves
/// differ from run to run. Newer proxies expire a key a full duration after it was made, older ones at the next
/// boundary of the period (a multiple of 30 s, the next full hour, the next midnight for what they cannot read).
fn expiry(run: &Run, expires: &Value, hash: Option<&str>) -> Value {
    let Some(text) = expires.as_str() else { return run.normalise(expires) };
    let Some((sent, duration)) = hash.and_then(|hash| run.durations.get(hash)) else { return json!("<set>") };
    let Some(at) = parse_time(text) else { return json!(format!("<not a time: {text}>")) };
    let (sent, whole) = (*sent, at.fract() == 0.0);
    let period = duration
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .or_else(|| duration.strip_suffix('h').and_then(|n| n.parse::<f64>().ok()).map(|hours| hours * 3600.0));
    let next_midnight = (sent / 86_400.0).floor() * 86_400.0 + 86_400.0;
    let label = match period {
        Some(period) if period == 0.0 && (at - sent).abs() <= 5.0 => "<when it was made>".to_owned(),
        Some(period) if whole && at % period == 0.0 && at > sent - 1.0 && at <= sent + period + 1.0 => {
            format!("<the next {duration} boundary>")
        }
        Some(period) if (at - (sent + period)).abs() <= 5.0 => format!("<{duration} after it was made>"),
        _ if at == next_midnight => "<the next midnight>".to_owned(),
        _ => format!("<{:.0} s after it was made>", at - sent),
    };
    json!(label)
}

/// Seconds since the epoch of `2026-12-01T21:14:22.311019Z`, `…+00:00`, with or without a fraction.
fn parse_time(text: &str) -> Option<f64> {
    let (date, time) = text.split_once(['T', ' '])?;
    let time = time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00"))?;
    let mut date_parts = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (y, m, d) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let mut time_parts = time.splitn(3, ':');
    let (h, min) = (time_parts.next()?.parse::<f64>().ok()?, time_parts.next()?.parse::<f64>().ok()?);
    let sec = time_parts.next()?.parse::<f64>().ok()?;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let years: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let days = years + BEFORE_MONTH.get(usize::try_from(m - 1).ok()?)? + i64::from(m > 2 && leap(y)) + d - 1;
    // Whole milliseconds: proxies print microseconds, the database keeps milliseconds.
    Some(((days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec) * 1000.0).round() / 1000.0)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Adds the fields of `extra` (an object) to `target` (an object).
fn extend(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

fn user_row(run: &Run, row: &Value) -> Value {
    let mut answer = pick(run, row, USER_FIELDS);
    // The reset time depends on the day the test runs; only whether there is one is compared.
    if let Some(reset) = answer.get_mut("budget_reset_at").filter(|value| value.is_string()) {
        *reset = json!("<set>");
    }
    answer
}

/// The named fields of an object, normalised; a field the answer lacks shows as `"<absent>"`.
fn pick(run: &Run, object: &Value, fields: &[&str]) -> Value {
    let mut answer = Map::new();
    for field in fields {
        let value = object.get(*field).map(|v| run.normalise(v)).unwrap_or_else(|| json!("<absent>"));
        answer.insert((*field).to_owned(), value);
    }
    Value::Object(answer)
}

fn array<'a>(body: &'a Value, field: &str) -> &'a [Value] {
    body.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// `10` and `10.0` are the same to the operator (it reads numbers leniently); floats keep nine decimals.
fn canonical_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 { json!(n as i64) } else { json!((n * 1e9).round() / 1e9) }
}

/// Replaces keys the proxy generated (`sk-` and 22 URL-safe characters) and other SHA-256 hashes.
fn scrub_generated(text: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("sk-") {
            let len = after.find(|c: char| !is_key_char(c)).unwrap_or(after.len());
            if len == 22 {
                out.push_str("<generated-key>");
                rest = &after[len..];
                continue;
            }
        }
        let hex_len = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
        if hex_len == 64 {
            out.push_str("<sha256>");
            rest = &rest[64..];
            continue;
        }
        // Skip a whole run of hex (or one other character), so a hash is only matched from its start.
        let skip = if hex_len > 0 { hex_len } else { rest.chars().next().map_or(1, char::len_utf8) };
        out.push_str(&rest[..skip]);
        rest = &rest[skip..];
    }
    out
}

/// Replaces times as Python prints them in messages (`2026-12-01 21:14:22.311000+00:00`) by `<time>`.
fn scrub_times(text: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-dd dd:dd:dd";
    let bytes = text.as_bytes();
    let fits = |at: usize| {
        bytes.len() >= at + SHAPE.len()
            && SHAPE
                .iter()
                .zip(&bytes[at..])
                .all(|(shape, byte)| if *shape == b'd' { byte.is_ascii_digit() } else { shape == byte })
    };
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < bytes.len() {
        if !fits(at) {
            let next = text[at..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[at..at + next]);
            at += next;
            continue;
        }
        at += SHAPE.len();
        if bytes.get(at) == Some(&b'.') {
            at += 1 + bytes[at + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        }
        if text[at..].starts_with("+00:00") {
            at += "+00:00".len();
        }
        out.push_str("<time>");
    }
    out
}

// ---------- comparing ----------

fn expected_path(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract").join(format!("expected-{version}.json"))
}

fn read_expected(version: &str) -> Vec<Value> {
    let path = expected_path(version);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    file["steps"].as_array().cloned().unwrap_or_default()
}

/// Compares step by step; returns a readable report of every difference, empty when there is none.
fn compare(label: &str, expected: &[Value], actual: &[Value]) -> String {
    let mut report = String::new();
    for (index, actual_step) in actual.iter().enumerate() {
        let name = actual_step["step"].as_str().unwrap_or("?");
        let Some(expected_step) = expected.iter().find(|step| step["step"] == actual_step["step"]) else {
            let _ = writeln!(report, "step {name}: not in the expected file (record it again)");
            continue;
        };
        let mut lines = Vec::new();
        diff(&mut lines, "", &expected_step["status"], &actual_step["status"]);
        diff(&mut lines, "answer", &expected_step["answer"], &actual_step["answer"]);
        if !lines.is_empty() {
            let _ = writeln!(report, "step {} {name} ({}):", index + 1, actual_step["request"].as_str().unwrap_or("?"));
            for line in lines {
                let _ = writeln!(report, "    {line}");
            }
        }
    }
    for expected_step in expected {
        if !actual.iter().any(|step| step["step"] == expected_step["step"]) {
            let _ = writeln!(report, "step {}: expected, but no longer in the sequence", expected_step["step"]);
        }
    }
    if report.is_empty() { report } else { format!("{label} differs from the real proxy:\n{report}") }
}

fn diff(lines: &mut Vec<String>, path: &str, expected: &Value, actual: &Value) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for key in keys {
                let missing = Value::String("<absent>".into());
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                diff(lines, &child, e.get(key).unwrap_or(&missing), a.get(key).unwrap_or(&missing));
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (index, (e, a)) in e.iter().zip(a).enumerate() {
                diff(lines, &format!("{path}[{index}]"), e, a);
            }
        }
        _ if expected != actual => {
            let at = if path.is_empty() { "status" } else { path };
            lines.push(format!("{at}: real proxy {expected}, emulator/now {actual}"));
        }
        _ => {}
    }
}

// ---------- the tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_matches_recorded_expectations() {
    let mut failures = String::new();
    for generation in [Generation::Newer, Generation::Older] {
        let emulator = Emulator::start(EmulatorConfig::new(generation)).await.expect("emulator starts");
        let target =
            Target { url: emulator.url(), master_key: emulator.master_key().to_owned(), usage: UsageSink::Emulator };
        let actual = run_sequence(&target).await;
        let label = format!("emulator {generation:?} (compared with real {})", generation.version());
        failures.push_str(&compare(&label, &read_expected(generation.version()), &actual));
    }
    assert!(failures.is_empty(), "{failures}");
}

/// The target named by `LITELLM_URL`, `LITELLM_MASTER_KEY`, `LITELLM_DATABASE_URL` and `LITELLM_VERSION` (as
/// up.sh exports them).
fn real_target() -> (Target, String) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("set {name} (eval \"$(up.sh …)\")"));
    let usage = UsageSink::Postgres { database_url: var("LITELLM_DATABASE_URL") };
    (Target { url: var("LITELLM_URL"), master_key: var("LITELLM_MASTER_KEY"), usage }, var("LITELLM_VERSION"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real proxy: LITELLM_URL, LITELLM_MASTER_KEY, LITELLM_VERSION"]
async fn real_proxy_matches_expectations() {
    let (target, version) = real_target();
    let actual = run_sequence(&target).await;
    let failures = compare(&format!("proxy at {} ({version})", target.url), &read_expected(&version), &actual);
    assert!(failures.is_empty(), "{failures}");
}

/// Writes `tests/contract/expected-<LITELLM_VERSION>.json` from the real proxy. Run it on every version the
/// emulator follows after changing `STEPS` or the projections, and review the diff before committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites tests/contract/expected-<version>.json from a real proxy: LITELLM_URL, LITELLM_MASTER_KEY, LITELLM_VERSION"]
async fn record_real_proxy_expectations() {
    let (target, version) = real_target();
    let steps = run_sequence(&target).await;
    let file = json!({
        "version": version,
        "about": "Answers of a real LiteLLM proxy to the sequence in tests/contract.rs, normalised. Written by \
                  `cargo test -p litellm-emulator --test contract -- --ignored --exact record_real_proxy_expectations`; do not edit.",
        "steps": steps,
    });
    let path = expected_path(&version);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create tests/contract");
    let text = serde_json::to_string_pretty(&file).expect("serialise") + "\n";
    std::fs::write(&path, text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    eprintln!("wrote {}", path.display());
}

// ---------- helpers ----------

const HEX: &[u8] = b"0123456789abcdef";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect()
}

/// `sk-` and 32 URL-safe characters, like the keys the operator makes (and longer than generated ones, so the
/// normaliser tells them apart).
fn custom_key() -> String {
    format!("sk-{}", random_text(32, URL_SAFE))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn normaliser_hides_volatile_values() {
    let mut run = Run::new();
    run.prefix = "ct-0123abcd".into();
    run.keys[0] = "sk-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let hash1 = sha256_hex(&run.keys[0]);
    let text = format!("ct-0123abcd-alice sk-AbCdEfGhIjKlMnOpQrStUv {hash1} {} sk-...rong", "f".repeat(64));
    assert_eq!(run.normalise_text(&text), "ct-<run>-alice <generated-key> <sha256(key1)> <sha256> sk-...rong");
    assert_eq!(run.normalise(&json!([10.0, 0.26, 3])), json!([10, 0.26, 3]));
    let expired = "Key Expiry time 2026-12-01 21:14:20+00:00 and current time 2026-12-01 21:14:49.426204+00:00.";
    assert_eq!(run.normalise_text(expired), "Key Expiry time <time> and current time <time>.");
}

#[test]
fn expiry_is_judged_against_the_duration() {
    let mut run = Run::new();
    let sent = parse_time("2026-12-01T21:14:09.486Z").expect("a time");
    for (n, duration) in [(1, "30s"), (2, "1h"), (3, "0s"), (4, "bogus")] {
        run.durations.insert(sha256_hex(&run.keys[n - 1]), (sent, duration.into()));
    }
    let judge = |n: usize, expires: &str| expiry(&run, &json!(expires), Some(&sha256_hex(&run.keys[n - 1])));
    assert_eq!(judge(1, "2026-12-01T21:14:30Z"), json!("<the next 30s boundary>"));
    assert_eq!(judge(1, "2026-12-01T21:14:39.486019Z"), json!("<30s after it was made>"));
    assert_eq!(judge(2, "2026-12-01T22:00:00+00:00"), json!("<the next 1h boundary>"));
    assert_eq!(judge(2, "2026-12-01T22:14:09.511000+00:00"), json!("<1h after it was made>"));
    assert_eq!(judge(3, "2026-12-01T21:14:09.500000Z"), json!("<when it was made>"));
    assert_eq!(judge(4, "2026-12-02T00:00:00Z"), json!("<the next midnight>"));
    assert_eq!(expiry(&run, &Value::Null, None), Value::Null);
    assert_eq!(parse_time("2024-03-01T00:00:00Z"), Some(1_709_251_200.0));
}
