use std::time::Duration;

use serde_json::Value;

/// An admin-API call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("LiteLLM answered HTTP {status} to {endpoint}: {message}")]
    Status {
        endpoint: &'static str,
        status: u16,
        /// LiteLLM's message with anything that looks like a key removed.
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("could not reach LiteLLM for {endpoint}: {reason}")]
    Transport { endpoint: &'static str, reason: String },
    #[error("LiteLLM's answer to {endpoint} could not be read: {reason}")]
    Decode { endpoint: &'static str, reason: String },
}

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The proxy is down, slow, overloaded or failing: retry with backoff.
    Transient,
    /// The master key was refused: nothing works until the operator's configuration is fixed.
    Unauthorized,
    /// The request itself was refused (bad value, duplicate e-mail, unknown team): retrying the same spec will
    /// fail again, so wait for the spec to change.
    Rejected,
}

impl ApiError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Transport { .. } | ApiError::Decode { .. } => ErrorClass::Transient,
            ApiError::Status { status, .. } => match status {
                401 | 403 => ErrorClass::Unauthorized,
                408 | 429 => ErrorClass::Transient,
                400..=499 => ErrorClass::Rejected,
                _ => ErrorClass::Transient,
            },
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn transport(endpoint: &'static str, err: &reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_decode() {
            "the answer was cut off"
        } else {
            "request failed"
        };
        // reqwest's Display includes the URL, which carries no secret (the key is in a header).
        let mut reason = format!("{kind}: {err}");
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            reason.push_str(": ");
            reason.push_str(&inner.to_string());
            source = inner.source();
        }
        ApiError::Transport { endpoint, reason: redact_keys(&reason) }
    }
}

/// The human-readable part of a LiteLLM error body, whichever envelope it came in:
/// `{"error":{"message":…}}`, `{"detail":{"error":…}}`, `{"detail":"…"}` or a 422 `{"detail":[{loc,msg}]}`.
pub(crate) fn error_message(body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(json) => message_from_json(&json).unwrap_or_else(|| body.to_owned()),
        Err(_) => body.to_owned(),
    };
    crate::text::bounded_bytes(&redact_keys(text.trim()), 512)
}

fn message_from_json(json: &Value) -> Option<String> {
    if let Some(message) = json.pointer("/error/message") {
        return Some(value_text(message));
    }
    match json.get("detail")? {
        Value::Array(items) => Some(
            items
                .iter()
                .map(|item| {
                    let loc = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|parts| parts.iter().map(value_text).collect::<Vec<_>>().join("."))
                        .unwrap_or_default();
                    let msg = item.get("msg").map(value_text).unwrap_or_default();
                    if loc.is_empty() { msg } else { format!("{loc}: {msg}") }
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Value::Object(map) => {
            Some(map.get("error").map(value_text).unwrap_or_else(|| Value::Object(map.clone()).to_string()))
        }
        other => Some(value_text(other)),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces anything that looks like a LiteLLM key (`sk-` followed by key characters) with `sk-***`, so that
/// no key LiteLLM echoes in an error reaches a condition, an event or a log line.
pub(crate) fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sk-") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let key_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(after.len());
        // `sk-...abcd` is LiteLLM's own abbreviation; it still shows four characters of a key.
        let dotted = after.starts_with("...");
        let skip = if dotted {
            3 + after[3..].find(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-').unwrap_or(after.len() - 3)
        } else {
            key_len
        };
        out.push_str(if skip > 0 { "sk-***" } else { "sk-" });
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_envelope() {
        assert_eq!(
            error_message(r#"{"error":{"message":"User ghost not found","type":"x","param":null,"code":"404"}}"#),
            "User ghost not found"
        );
        assert_eq!(
            error_message(r#"{"detail":{"error":"User not found, passed user_id=bob"}}"#),
            "User not found, passed user_id=bob"
        );
        assert_eq!(
            error_message(
                r#"{"detail":[{"type":"literal_error","loc":["body","user_role"],"msg":"Input should be 'a' or 'b'"}]}"#
            ),
            "body.user_role: Input should be 'a' or 'b'"
        );
        assert_eq!(error_message("Internal Server Error"), "Internal Server Error");
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
    }

    #[test]
    fn removes_keys_from_messages() {
        assert_eq!(redact_keys("Received API Key = sk-...rong, Key Hash"), "Received API Key = sk-***, Key Hash");
        assert_eq!(redact_keys("key sk-AbC_d-123 is bad"), "key sk-*** is bad");
        assert_eq!(redact_keys("ends with sk-"), "ends with sk-");
        assert_eq!(redact_keys("no key here"), "no key here");
        assert!(!error_message(r#"{"error":{"message":"Invalid key sk-0123456789abcdef"}}"#).contains("0123"));
    }

    #[test]
    fn classifies_by_status_only() {
        let status =
            |status| ApiError::Status { endpoint: "/user/new", status, message: String::new(), retry_after: None };
        assert_eq!(status(401).class(), ErrorClass::Unauthorized);
        assert_eq!(status(403).class(), ErrorClass::Unauthorized);
        assert_eq!(status(429).class(), ErrorClass::Transient);
        assert_eq!(status(400).class(), ErrorClass::Rejected);
        assert_eq!(status(422).class(), ErrorClass::Rejected);
        assert_eq!(status(500).class(), ErrorClass::Transient);
        assert_eq!(status(503).class(), ErrorClass::Transient);
        assert_eq!(
            ApiError::Transport { endpoint: "/user/info", reason: String::new() }.class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let long = "é".repeat(400);
        assert!(error_message(&long).len() <= 512);
    }
}
