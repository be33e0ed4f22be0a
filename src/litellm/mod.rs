//! The LiteLLM proxy's admin API, as the operator uses it.
//!
//! One HTTP client, one place that turns HTTP answers into typed results. LiteLLM's answers differ between
//! versions (see `shared/reference/litellm-user-api.md`), so this module branches on HTTP status only, never on
//! message text, and parses bodies leniently.

mod client;
mod error;
mod types;

pub use client::{ClientBuildError, ClientConfig, Created, DEFAULT_IDLE_TIMEOUT, Generation, LiteLlmClient, MasterKey};
pub(crate) use error::redact_keys;
pub use error::{ApiError, ErrorClass};
pub use types::{ActivityTotals, KeyListPage, KeyRecord, UserInfo, UserListPage, UserRecord, parse_time};

/// LiteLLM's id for a key (the `token` of its key records): the hex SHA-256 of the key.
pub fn key_hash(key: &str) -> String {
    crate::text::sha256_hex(key)
}
