//! A snapshot of the users this operator manages on the proxy, and of their keys, read in pages from
//! `/user/list` and `/key/list` by a background task, so that periodic resyncs of thousands of resources cost a
//! few list calls instead of one `/user/info` per resource.
//!
//! The snapshot only ever confirms that nothing needs doing. Whenever it shows a difference, lacks the user,
//! or is older than the operator's last change to the user, the reconciler reads the user itself: a stale or
//! partial snapshot costs a call, never a wrong write. A page that keeps failing leaves its users out of the
//! snapshot (they are read one by one) instead of failing every resync.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, stream};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::desired;
use crate::litellm::{ApiError, KeyRecord, LiteLlmClient, UserRecord};

/// Users or keys per page: the most LiteLLM allows.
const PAGE_SIZE: i64 = 100;
/// Pages read at the same time.
const CONCURRENT_PAGES: usize = 4;
/// Tries per page before its users are left out of this snapshot.
const PAGE_TRIES: u32 = 3;
/// How long a reconcile waits for the first snapshot before reading the user itself.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// A managed user as the snapshot saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub record: UserRecord,
    pub keys: Vec<KeyRecord>,
}

struct Snapshot {
    /// When the reading began: everything in it is at least this recent.
    taken: Timestamp,
    users: HashMap<String, Entry>,
}

pub struct Directory {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Ticks once per refresh attempt, so that the first reconciles can wait for the first snapshot (and stop
    /// waiting once the first attempt failed).
    refreshed: watch::Sender<u64>,
    /// Whether a refresh task runs at all; without one there is no snapshot to wait for.
    running: AtomicBool,
}

impl Default for Directory {
    fn default() -> Self {
        Directory { snapshot: RwLock::new(None), refreshed: watch::channel(0).0, running: AtomicBool::new(false) }
    }
}

impl Directory {
    /// The user as a snapshot taken after `newer_than` and at most `max_age` ago saw it. Waits (a bounded
    /// time) for the first snapshot after start-up, which saves one call per resource on every restart.
    pub async fn lookup(&self, user_id: &str, newer_than: Option<Timestamp>, max_age: Duration) -> Option<Entry> {
        if self.current().is_none() && self.running.load(Ordering::Relaxed) {
            let mut ticks = self.refreshed.subscribe();
            let _ = tokio::time::timeout(FIRST_SNAPSHOT_WAIT, ticks.wait_for(|count| *count > 0)).await;
        }
        let snapshot = self.current()?;
        let fresh = Timestamp::now().duration_since(snapshot.taken) <= max_age.try_into().ok()?;
        let after_change = newer_than.is_none_or(|changed| snapshot.taken > changed);
        (fresh && after_change).then(|| snapshot.users.get(user_id).cloned()).flatten()
    }

    /// How many managed users the last snapshot saw.
    pub fn managed_count(&self) -> usize {
        self.current().map_or(0, |snapshot| snapshot.users.len())
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Refreshes the snapshot every `interval`, for as long as the process runs.
    pub async fn run(self: Arc<Self>, litellm: LiteLlmClient, interval: Duration) {
        self.running.store(true, Ordering::Relaxed);
        loop {
            if let Err(err) = self.refresh(&litellm).await {
                warn!(error = %err, "could not list LiteLLM users; resyncs read users one by one");
            }
            self.refreshed.send_modify(|count| *count += 1);
            tokio::time::sleep(interval).await;
        }
    }

    async fn refresh(&self, litellm: &LiteLlmClient) -> Result<(), ApiError> {
        let taken = Timestamp::now();
        let users = all_pages(|page| async move {
            let listed = litellm.user_list(page, PAGE_SIZE).await?;
            Ok((listed.users, listed.total_pages))
        })
        .await?;
        let mut managed: HashMap<String, Entry> = users
            .items
            .into_iter()
            .filter(|user| user.metadata.contains_key(desired::OWNER_METADATA_KEY))
            .filter_map(|record| Some((record.user_id.clone()?, Entry { record, keys: Vec::new() })))
            .collect();
        let keys = all_pages(|page| async move {
            let listed = litellm.key_list(page, PAGE_SIZE).await?;
            Ok((listed.keys, listed.total_pages))
        })
        .await;
        match keys {
            Ok(keys) if keys.missing_pages == 0 => {
                for key in keys.items {
                    if let Some(entry) = key.user_id.as_deref().and_then(|id| managed.get_mut(id)) {
                        entry.keys.push(key);
                    }
                }
            }
            // Without every key, no user's keys can be confirmed: this snapshot cannot confirm anyone.
            Ok(_) | Err(_) => managed.clear(),
        }
        debug!(users = managed.len(), missing_user_pages = users.missing_pages, "listed LiteLLM users and keys");
        *self.snapshot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Arc::new(Snapshot { taken, users: managed }));
        Ok(())
    }
}

struct Pages<T> {
    items: Vec<T>,
    missing_pages: usize,
}

/// Every page of a paged list: the first to learn how many there are, then the rest a few at a time, each
/// tried a few times. Fails only when the first page does.
async fn all_pages<T, F, Fut>(fetch: F) -> Result<Pages<T>, ApiError>
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, i64), ApiError>>,
{
    let fetch = &fetch;
    let with_retries = |page: i64| async move {
        let mut tries = 0;
        loop {
            tries += 1;
            match fetch(page).await {
                Ok(found) => return Ok(found),
                Err(err) if tries >= PAGE_TRIES => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(tries)).await,
            }
        }
    };
    let (mut items, total_pages) = with_retries(1).await?;
    let rest: Vec<_> =
        stream::iter(2..=total_pages).map(with_retries).buffer_unordered(CONCURRENT_PAGES).collect().await;
    let mut missing_pages = 0;
    for page in rest {
        match page {
            Ok((found, _)) => items.extend(found),
            Err(err) => {
                warn!(error = %err, "a page of a LiteLLM list failed; its entries are read one by one");
                missing_pages += 1;
            }
        }
    }
    Ok(Pages { items, missing_pages })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn failure() -> ApiError {
        ApiError::Status { endpoint: "/user/list", status: 500, message: "boom".into(), retry_after: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_page_is_retried_and_then_left_out_without_failing_the_rest() {
        let calls = AtomicU32::new(0);
        let flaky_once = AtomicU32::new(0);
        let pages = all_pages(|page| {
            calls.fetch_add(1, Ordering::Relaxed);
            let fail = page == 3 || (page == 2 && flaky_once.fetch_add(1, Ordering::Relaxed) == 0);
            async move { if fail { Err(failure()) } else { Ok((vec![page], 4)) } }
        })
        .await
        .unwrap();
        let mut items = pages.items;
        items.sort();
        assert_eq!(items, vec![1, 2, 4], "page 2 recovered on a retry, page 3 never did");
        assert_eq!(pages.missing_pages, 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1 + 2 + PAGE_TRIES + 1);
    }

    #[tokio::test]
    async fn only_a_failing_first_page_fails_the_list() {
        let result = all_pages(|_| async { Err::<(Vec<u8>, i64), _>(failure()) }).await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn without_a_refresh_task_a_lookup_does_not_wait() {
        let directory = Directory::default();
        let started = std::time::Instant::now();
        assert!(directory.lookup("u", None, Duration::from_secs(60)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
