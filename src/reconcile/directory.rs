//! A snapshot of every LiteLLM user, read in pages from `/user/list`, so that periodic resyncs of thousands of
//! resources cost a few list calls instead of one `/user/info` per resource.
//!
//! The snapshot only ever confirms that nothing needs doing. Whenever it shows a difference, or lacks the
//! user, the reconciler takes the full path and reads the user itself, so a stale snapshot costs a call, never
//! a wrong write.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::litellm::{ApiError, LiteLlmClient, UserRecord};

/// Users per `/user/list` page: the most LiteLLM allows.
const PAGE_SIZE: i64 = 100;

#[derive(Default)]
pub struct Directory {
    snapshot: Mutex<Snapshot>,
}

#[derive(Default)]
struct Snapshot {
    users: HashMap<String, UserRecord>,
    taken: Option<Instant>,
}

impl Directory {
    /// The user as of a snapshot at most `max_age` old, taking a new snapshot first if needed. Concurrent
    /// callers share one refresh.
    pub async fn get(
        &self,
        litellm: &LiteLlmClient,
        user_id: &str,
        max_age: Duration,
    ) -> Result<Option<UserRecord>, ApiError> {
        let mut snapshot = self.snapshot.lock().await;
        if snapshot.taken.is_none_or(|taken| taken.elapsed() >= max_age) {
            let started = Instant::now();
            let mut users = HashMap::with_capacity(snapshot.users.len());
            let mut page = 1;
            loop {
                let listed = litellm.user_list(page, PAGE_SIZE).await?;
                let count = listed.users.len();
                users.extend(listed.users.into_iter().filter_map(|u| Some((u.user_id.clone()?, u))));
                if page >= listed.total_pages || count == 0 {
                    break;
                }
                page += 1;
            }
            tracing::debug!(users = users.len(), pages = page, took = ?started.elapsed(), "listed LiteLLM users");
            *snapshot = Snapshot { users, taken: Some(started) };
        }
        Ok(snapshot.users.get(user_id).cloned())
    }
}
