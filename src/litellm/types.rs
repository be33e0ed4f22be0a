//! LiteLLM's answers, read leniently: every field is optional, `null` reads as the default, unknown fields are
//! ignored, and whole numbers may come as floats (or the other way round) depending on the version.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `GET /user/info`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct UserInfo {
    #[serde(default, deserialize_with = "null_default")]
    pub user_info: Option<UserRecord>,
    #[serde(default, deserialize_with = "null_default")]
    pub keys: Vec<KeyRecord>,
}

impl UserInfo {
    /// Older proxies answer 200 with `{"user_info":{"spend":0}}` for a user without a row; only a real row has
    /// a `user_id`.
    pub fn into_record(self) -> Option<(UserRecord, Vec<KeyRecord>)> {
        let record = self.user_info?;
        record.user_id.as_ref()?;
        Some((record, self.keys))
    }
}

/// A row of LiteLLM's user table.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
pub struct UserRecord {
    #[serde(default, deserialize_with = "null_default")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub user_alias: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub user_email: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub user_role: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub teams: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub max_budget: Option<f64>,
    #[serde(default, deserialize_with = "null_default")]
    pub spend: f64,
    #[serde(default, deserialize_with = "null_default")]
    pub budget_duration: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub budget_reset_at: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub models: Vec<String>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub tpm_limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub rpm_limit: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub max_parallel_requests: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Map<String, Value>,
    #[serde(default, deserialize_with = "null_default")]
    pub model_max_budget: Map<String, Value>,
    #[serde(default, deserialize_with = "null_default")]
    pub allowed_cache_controls: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub sso_user_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub object_permission: Map<String, Value>,
    /// Only in `/user/list` answers.
    #[serde(default, deserialize_with = "lenient_int")]
    pub key_count: Option<i64>,
}

/// A key as `/user/info`, `/key/list` and `/key/info` describe it: `token` is the SHA-256 of the key, never
/// the key.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct KeyRecord {
    #[serde(default, deserialize_with = "null_default")]
    pub token: String,
    #[serde(default, deserialize_with = "null_default")]
    pub key_alias: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub aliases: Map<String, Value>,
    #[serde(default, deserialize_with = "null_default")]
    pub expires: Option<String>,
    /// When the proxy stored the key (its own clock).
    #[serde(default, deserialize_with = "null_default")]
    pub created_at: Option<String>,
    /// The resource named by the operator's mark in the key's metadata (`{"litellm-operator": {"owner": …}}`):
    /// only the owner is kept of the metadata, since the operator holds a record of every key it manages.
    #[serde(default, rename = "metadata", deserialize_with = "marked_owner")]
    pub owner: Option<String>,
}

/// `GET /user/list`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct UserListPage {
    #[serde(default, deserialize_with = "null_default")]
    pub users: Vec<UserRecord>,
    #[serde(default, deserialize_with = "null_default")]
    pub total_pages: i64,
}

/// `GET /key/list?return_full_object=true`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct KeyListPage {
    #[serde(default, deserialize_with = "null_default")]
    pub keys: Vec<KeyRecord>,
    #[serde(default, deserialize_with = "null_default")]
    pub total_pages: i64,
}

/// Totals of `GET /user/daily/activity` (its `metadata` object). LiteLLM totals each page on its own, and says
/// whether more pages follow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
pub struct ActivityTotals {
    #[serde(default, deserialize_with = "null_default")]
    pub total_spend: f64,
    #[serde(default, deserialize_with = "lenient_int")]
    pub total_tokens: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub total_api_requests: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub has_more: bool,
}

impl ActivityTotals {
    /// The totals of two pages together.
    pub fn plus(self, other: ActivityTotals) -> ActivityTotals {
        let add = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
        ActivityTotals {
            total_spend: self.total_spend + other.total_spend,
            total_tokens: add(self.total_tokens, other.total_tokens),
            total_api_requests: add(self.total_api_requests, other.total_api_requests),
            has_more: other.has_more,
        }
    }
}

fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The owner in a key's metadata, read without keeping the rest of it. serde needs the mark's name as a
/// literal: it is `reconcile::desired::OWNER_METADATA_KEY`, and a test there checks that the two agree.
fn marked_owner<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Mark {
        #[serde(default)]
        owner: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default, rename = "litellm-operator")]
        mark: Option<Value>,
    }
    // Metadata is free-form: anything that is not an object with a string owner is no mark.
    let Some(value) = Option::<Value>::deserialize(deserializer)? else { return Ok(None) };
    let mark = serde_json::from_value::<Metadata>(value).ok().and_then(|m| m.mark);
    let owner = mark.and_then(|m| serde_json::from_value::<Mark>(m).ok()).and_then(|m| m.owner);
    Ok(owner.and_then(|o| o.as_str().map(str::to_owned)))
}

/// An integer that may arrive as `3`, `3.0` or `null`.
fn lenient_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)),
        _ => None,
    })
}

/// LiteLLM's timestamps: RFC 3339, sometimes without an offset (then UTC).
pub fn parse_time(text: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    text.parse().ok().or_else(|| format!("{text}Z").parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_of_older_proxies_is_no_user() {
        let stub: UserInfo =
            serde_json::from_str(r#"{"user_id":"ghost","user_info":{"spend":0},"keys":[],"teams":[]}"#).unwrap();
        assert!(stub.into_record().is_none());
        let carol: UserInfo = serde_json::from_str(
            r#"{"user_id":"carol","user_info":{"spend":0.0},"keys":[{"token":"abc"}],"teams":[]}"#,
        )
        .unwrap();
        assert!(carol.into_record().is_none());
    }

    #[test]
    fn reads_nulls_and_mixed_numbers() {
        let info: UserInfo = serde_json::from_str(
            r#"{"user_info":{"user_id":"a","teams":null,"models":null,"metadata":null,"tpm_limit":3.0,"rpm_limit":null,
                 "max_budget":10,"spend":1,"unknown":{"x":1}},"keys":[{"token":"h1","key_alias":null,"extra":1}]}"#,
        )
        .unwrap();
        let (user, keys) = info.into_record().unwrap();
        assert_eq!(user.user_id.as_deref(), Some("a"));
        assert!(user.teams.is_empty() && user.models.is_empty() && user.metadata.is_empty());
        assert_eq!(user.tpm_limit, Some(3));
        assert_eq!(user.rpm_limit, None);
        assert_eq!(user.max_budget, Some(10.0));
        assert_eq!(user.spend, 1.0);
        assert_eq!(keys, vec![KeyRecord { token: "h1".into(), ..KeyRecord::default() }]);
    }

    #[test]
    fn a_keys_owner_is_read_from_its_metadata_and_nothing_else_is_kept() {
        let read = |metadata: &str| -> Option<String> {
            serde_json::from_str::<KeyRecord>(&format!(r#"{{"token":"h","metadata":{metadata}}}"#)).unwrap().owner
        };
        assert_eq!(read(r#"{"litellm-operator":{"owner":"team-a/alice"},"x":[1,2]}"#).as_deref(), Some("team-a/alice"));
        for unmarked in
            ["null", "{}", r#"{"litellm-operator":"team-a/alice"}"#, r#"{"litellm-operator":{"owner":3}}"#, "[1]"]
        {
            assert_eq!(read(unmarked), None, "{unmarked}");
        }
    }
}
