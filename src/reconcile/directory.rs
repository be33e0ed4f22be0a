//! A snapshot of the users this operator manages on the proxy, and of their keys, read in pages from
//! `/user/list` and `/key/list` by a background task, so that periodic resyncs of thousands of resources cost a
//! few list calls instead of one `/user/info` per resource.
//!
//! The snapshot only ever confirms that nothing needs doing. Whenever it shows a difference, lacks the user,
//! or is older than the operator's last change to the user, the reconciler reads the user itself: a stale or
//! partial snapshot costs a call, never a wrong write. A page that keeps failing leaves its users out of the
//! snapshot (they are read one by one) instead of failing every resync.
//!
//! Keys are read in full only every [`FULL_KEY_READING_EVERY`] refreshes. In between, only the newest keys are
//! read (`/key/list` is newest first) and added to what the last snapshot knew; `/user/list` tells how many
//! keys each user has (`key_count`), so a user whose keys were deleted, or who has keys the reading missed,
//! is read again on its own. A key swapped on the proxy is a new key, so it is seen at the next refresh; what
//! waits for the next full reading is only an edit of an existing key (its aliases or expiry).
//!
//! The first snapshot after start-up reads no keys at all, so that a restart costs one listing of users and
//! not a reading of every key as well: until the second snapshot (one interval later) reads every key, a
//! resource whose user has as many keys as its status accounts for is taken to have those keys (see
//! `observe`). Keys changed while the operator was down are then seen at most one interval late.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, LazyLock, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::desired;
use crate::litellm::{ApiError, KeyRecord, LiteLlmClient, UserRecord, parse_time};
use crate::sync::lock;

/// Users or keys per page: the most LiteLLM allows.
const PAGE_SIZE: i64 = 100;
/// Pages read at the same time.
const CONCURRENT_PAGES: usize = 4;
/// Tries per page before its users are left out of this snapshot.
const PAGE_TRIES: u32 = 3;
/// How long a reconcile waits for the first snapshot before reading the user itself.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// Every this many refreshes, every key is read; the others read only keys newer than the last snapshot's.
pub const FULL_KEY_READING_EVERY: u64 = 12;
/// Keys created up to this long before the last snapshot began (by the proxy's clock, which its `Date` header
/// shows to the second) are read again: the proxy stamps a key before its transaction commits, so keys do not
/// become visible in `created_at` order.
const KEY_OVERLAP: SignedDuration = SignedDuration::from_secs(30);
/// The same when the proxy's answers carry no `Date`, so its clock is not known: generous, for clocks that
/// differ. (A key stamped by a proxy whose clock is further behind is seen at the next reading of every key,
/// or as soon as it makes its user's key count not add up.)
const KEY_OVERLAP_WITHOUT_CLOCK: SignedDuration = SignedDuration::from_secs(300);
/// Users whose keys are read one by one in a refresh, at most; the rest are left to their reconciles.
const USERS_READ_ALONE: usize = 200;
/// How long a resync waits for a refresh under way when no refresh has completed yet to tell how long one takes.
const REFRESH_POLL: Duration = Duration::from_secs(5);

/// A managed user as the snapshot saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub record: UserRecord,
    /// `None` when the snapshot read no keys (the first one after start-up); `record.key_count` still says how
    /// many the user has.
    pub keys: Option<Vec<KeyRecord>>,
}

/// Which keys a refresh reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyReading {
    /// None: the first refresh after start-up.
    Deferred,
    /// Only keys newer than the last snapshot's (every key when the last snapshot did not hold them all).
    Newest,
    Every,
}

impl KeyReading {
    /// What the `refresh`-th refresh since start-up (counting from 0) reads: nothing at first, every key at the
    /// second and then every [`FULL_KEY_READING_EVERY`] refreshes, only the newest in between.
    pub fn for_refresh(refresh: u64) -> Self {
        match refresh {
            0 => KeyReading::Deferred,
            n if n % FULL_KEY_READING_EVERY == 1 => KeyReading::Every,
            _ => KeyReading::Newest,
        }
    }
}

/// A managed user while a refresh reads it: its record already frozen, its keys still being gathered.
#[derive(Debug)]
struct Kept {
    /// The record, packed (see [`Frozen`]).
    record: Box<[u8]>,
    key_count: Option<i64>,
    keys: KeptKeys,
}

/// A managed user's keys while a refresh gathers them.
#[derive(Debug)]
enum KeptKeys {
    /// As the previous snapshot packed them. A reading of only the newest keys touches few users, and unpacking
    /// every user's keys to merge them was the largest part of a refresh's memory (23 MiB at 100,000 users).
    Packed {
        packed: Box<[u8]>,
        count: usize,
    },
    Read(Vec<KeyRecord>),
}

impl KeptKeys {
    fn len(&self) -> usize {
        match self {
            KeptKeys::Packed { count, .. } => *count,
            KeptKeys::Read(keys) => keys.len(),
        }
    }

    /// Changes the keys, unpacking them first if they were not yet.
    fn change(&mut self, change: impl FnOnce(&mut Vec<KeyRecord>)) {
        let mut keys = match std::mem::replace(self, KeptKeys::Read(Vec::new())) {
            KeptKeys::Packed { packed, .. } => unpack_keys(&packed).unwrap_or_default(),
            KeptKeys::Read(keys) => keys,
        };
        change(&mut keys);
        *self = KeptKeys::Read(keys);
    }
}

/// A managed user as a snapshot keeps it: its record and its keys as compact JSON, each compressed against
/// [`PACKING_DICTIONARY`]. A snapshot holds every managed user, and while a refresh runs the one it replaces is
/// alive too. Parsed, a user and its key took over a dozen allocations and the struct overhead of each field;
/// packed, two allocations of compressed bytes.
#[derive(Debug)]
struct Frozen {
    record: Box<[u8]>,
    /// Empty when there are none (or none were read).
    keys: Box<[u8]>,
}

/// A key packed: what a snapshot needs of it, without its user (the map's key) or creation time (which only the
/// reading of the newest keys looks at).
type PackedKey = (String, Option<String>, Map<String, Value>, Option<String>, Option<String>);

/// What packed users and keys have in common: one of each, as the operator creates them.
static PACKING_DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut record: UserRecord = serde_json::from_value(serde_json::json!({
        "user_alias": "", "user_email": "@example.com", "user_role": "internal_user", "max_budget": 10.0,
        "spend": 0.0, "budget_duration": "30d", "budget_reset_at": "2026-01-01T00:00:00Z", "models": [""],
        "key_count": 1, "metadata": { desired::OWNER_METADATA_KEY: { "owner": "/" } },
    }))
    .unwrap_or_default();
    record.user_id = Some(String::new());
    let key =
        KeyRecord { token: "0".repeat(64), key_alias: Some("/".into()), owner: Some("/".into()), ..Default::default() };
    let mut sample = record_json(&record);
    sample.extend(keys_json(&[key]));
    sample
});

/// The record as compact JSON, without what reads back as it is when left out: the user id (the map's key) and
/// empty fields.
fn record_json(record: &UserRecord) -> Vec<u8> {
    let mut json = serde_json::to_value(record).unwrap_or_default();
    if let Value::Object(fields) = &mut json {
        fields.retain(|name, value| name != "user_id" && !is_empty(value));
    }
    json.to_string().into_bytes()
}

fn keys_json(keys: &[KeyRecord]) -> Vec<u8> {
    let packed: Vec<PackedKey> = keys
        .iter()
        .map(|key| {
            (key.token.clone(), key.key_alias.clone(), key.aliases.clone(), key.expires.clone(), key.owner.clone())
        })
        .collect();
    serde_json::to_vec(&packed).unwrap_or_default()
}

fn pack(json: &[u8]) -> Box<[u8]> {
    lz4_flex::block::compress_prepend_size_with_dict(json, &PACKING_DICTIONARY).into_boxed_slice()
}

fn unpack(packed: &[u8]) -> Option<Vec<u8>> {
    lz4_flex::block::decompress_size_prepended_with_dict(packed, &PACKING_DICTIONARY).ok()
}

impl Kept {
    fn new(record: &UserRecord) -> Self {
        Kept { record: pack(&record_json(record)), key_count: record.key_count, keys: KeptKeys::Read(Vec::new()) }
    }

    fn freeze(self) -> Frozen {
        let keys = match self.keys {
            KeptKeys::Packed { packed, .. } => packed,
            KeptKeys::Read(keys) if keys.is_empty() => Box::default(),
            KeptKeys::Read(keys) => pack(&keys_json(&keys)),
        };
        Frozen { record: self.record, keys }
    }
}

impl Frozen {
    /// What the snapshot saw; `None` only if what it packed does not read back, which a test rules out.
    fn entry(&self, user_id: &str, keys_read: bool) -> Option<Entry> {
        let record =
            UserRecord { user_id: Some(user_id.to_owned()), ..serde_json::from_slice(&unpack(&self.record)?).ok()? };
        let keys = match keys_read {
            true => Some(
                unpack_keys(&self.keys)?
                    .into_iter()
                    .map(|key| KeyRecord { user_id: Some(user_id.to_owned()), ..key })
                    .collect(),
            ),
            false => None,
        };
        Some(Entry { record, keys })
    }

    /// Its keys as a refresh carries them over, still packed; `None` if they do not read back.
    fn kept_keys(&self) -> Option<KeptKeys> {
        let count = match self.keys.is_empty() {
            true => 0,
            false => serde_json::from_slice::<Vec<IgnoredAny>>(&unpack(&self.keys)?).ok()?.len(),
        };
        Some(KeptKeys::Packed { packed: self.keys.clone(), count })
    }
}

/// Packed keys, without their user.
fn unpack_keys(packed: &[u8]) -> Option<Vec<KeyRecord>> {
    if packed.is_empty() {
        return Some(Vec::new());
    }
    let packed: Vec<PackedKey> = serde_json::from_slice(&unpack(packed)?).ok()?;
    let key = |(token, key_alias, aliases, expires, owner)| KeyRecord {
        token,
        key_alias,
        aliases,
        expires,
        owner,
        ..Default::default()
    };
    Some(packed.into_iter().map(key).collect())
}

/// Whether a field of a user record reads back the same when it is left out.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// A key as a refresh gathers it: without what the snapshot does not keep.
fn compact(key: KeyRecord) -> KeyRecord {
    KeyRecord { user_id: None, created_at: None, ..key }
}

struct Snapshot {
    /// When the reading began: everything in it is at least this recent.
    taken: Timestamp,
    /// The same by the proxy's clock, when known.
    taken_by_proxy: Option<Timestamp>,
    users: HashMap<Box<str>, Frozen>,
    /// Whether it holds every key of its users, so that the next snapshot may read only newer keys.
    keys_complete: bool,
    /// Whether it read keys at all.
    keys_read: bool,
}

impl Snapshot {
    /// Whether what it saw of a user changed at `changed` still holds: it began after the change and is at most
    /// `max_age` old.
    fn vouches_for(&self, changed: Option<Timestamp>, max_age: Duration) -> bool {
        let fresh =
            SignedDuration::try_from(max_age).is_ok_and(|max| Timestamp::now().duration_since(self.taken) <= max);
        fresh && changed.is_none_or(|changed| self.taken > changed)
    }
}

pub struct Directory {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Ticks once per refresh attempt, so that the first reconciles can wait for the first snapshot (and stop
    /// waiting once the first attempt failed).
    refreshed: watch::Sender<u64>,
    /// Whether a refresh task runs at all; without one there is no snapshot to wait for.
    running: AtomicBool,
    /// Users the operator manages without its mark in their metadata (adopted ones): looked up, so kept.
    unmarked: Mutex<HashSet<String>>,
    key_overlap: SignedDuration,
    /// The refresh under way, if any: when it began, by the wall clock and by the process's.
    under_way: Mutex<Option<(Timestamp, Instant)>>,
    /// How long the last complete refresh took: when the one under way should be done.
    last_took: Mutex<Option<Duration>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            snapshot: RwLock::new(None),
            refreshed: watch::channel(0).0,
            running: AtomicBool::new(false),
            unmarked: Mutex::default(),
            key_overlap: KEY_OVERLAP,
            under_way: Mutex::default(),
            last_took: Mutex::default(),
        }
    }
}

impl Directory {
    /// A directory that reads again the keys created up to `key_overlap` before its last snapshot began
    /// (default 30 seconds by the proxy's clock).
    pub fn with_key_overlap(key_overlap: Duration) -> Self {
        let key_overlap = SignedDuration::try_from(key_overlap).unwrap_or(KEY_OVERLAP);
        Directory { key_overlap, ..Directory::default() }
    }

    /// The user as a snapshot taken after `newer_than` and at most `max_age` ago saw it. Waits (a bounded
    /// time) for the first snapshot after start-up, which saves one call per resource on every restart.
    pub async fn lookup(&self, user_id: &str, newer_than: Option<Timestamp>, max_age: Duration) -> Option<Entry> {
        if self.current().is_none() && self.running.load(Ordering::Relaxed) {
            let mut ticks = self.refreshed.subscribe();
            let _ = tokio::time::timeout(FIRST_SNAPSHOT_WAIT, ticks.wait_for(|count| *count > 0)).await;
        }
        let snapshot = self.current()?;
        let found = snapshot.users.get(user_id).and_then(|kept| kept.entry(user_id, snapshot.keys_read));
        if found.is_none() {
            // Perhaps a user the operator manages without its mark: look for it from the next refresh on.
            lock(&self.unmarked).insert(user_id.to_owned());
        }
        found.filter(|_| snapshot.vouches_for(newer_than, max_age))
    }

    /// How long to wait for the refresh under way, when the last complete snapshot cannot vouch for a user
    /// changed at `changed` (it began before the change, or is older than `max_age`) and the refresh under way
    /// began after it: a resync that only confirms that nothing changed waits for that refresh rather than
    /// read the user on its own. During a long creation, that is most resyncs. `None` when there is nothing
    /// worth waiting for: no refresh under way, one that began too early, or one that has run for longer than
    /// `max_age` (a refresh that hangs must not hold resyncs back).
    pub fn wait_for_refresh(&self, changed: Option<Timestamp>, max_age: Duration) -> Option<Duration> {
        let (began, began_at) = (*lock(&self.under_way))?;
        let running = began_at.elapsed();
        if running >= max_age || changed.is_some_and(|changed| began <= changed) {
            return None;
        }
        if self.current().is_some_and(|snapshot| snapshot.vouches_for(changed, max_age)) {
            return None;
        }
        // Due when the last one took as long; come back a moment after that, and at least a second later.
        let expected = lock(&self.last_took).unwrap_or(REFRESH_POLL);
        Some(expected.saturating_sub(running).max(Duration::from_secs(1)) + Duration::from_millis(500))
    }

    /// How many managed users the last snapshot saw.
    pub fn managed_count(&self) -> usize {
        self.current().map_or(0, |snapshot| snapshot.users.len())
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        crate::sync::read(&self.snapshot).clone()
    }

    /// Takes a snapshot at once, then one every `interval` (at a steady rate: a slow refresh does not push the
    /// later ones back), for as long as the process runs.
    ///
    /// The interval is counted from when the first snapshot is complete and the watch caches have synced
    /// (`caches_synced` turns true: the operator is ready), whichever comes later, rather than from start-up, so
    /// that the first interval after a restart holds that one listing and nothing else. Counted from start-up,
    /// the second listing came the few seconds that start-up takes before the operator had been ready for a
    /// whole interval. Caches that take longer than an interval to sync are not waited for.
    pub async fn run(
        self: Arc<Self>,
        litellm: LiteLlmClient,
        interval: Duration,
        caches_synced: watch::Receiver<bool>,
    ) {
        self.running.store(true, Ordering::Relaxed);
        self.refresh_logged(&litellm, KeyReading::for_refresh(0)).await;
        let interval = interval.max(Duration::from_secs(1));
        let mut caches_synced = caches_synced;
        let _ = tokio::time::timeout(interval, caches_synced.wait_for(|synced| *synced)).await;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for refresh in 1u64.. {
            ticks.tick().await;
            self.refresh_logged(&litellm, KeyReading::for_refresh(refresh)).await;
        }
    }

    async fn refresh_logged(&self, litellm: &LiteLlmClient, reading: KeyReading) {
        let began = Instant::now();
        *lock(&self.under_way) = Some((Timestamp::now(), began));
        match self.refresh(litellm, reading).await {
            Ok(()) => *lock(&self.last_took) = Some(began.elapsed()),
            Err(err) => warn!(error = %err, "could not list LiteLLM users; resyncs read users one by one"),
        }
        *lock(&self.under_way) = None;
        self.refreshed.send_modify(|count| *count += 1);
    }

    /// Where a reading of the newest keys may stop.
    fn keys_since(&self, previous: &Snapshot) -> Timestamp {
        match previous.taken_by_proxy {
            Some(by_proxy) => by_proxy - self.key_overlap,
            None => previous.taken - KEY_OVERLAP_WITHOUT_CLOCK.max(self.key_overlap),
        }
    }

    /// Takes one snapshot, with the keys `reading` says.
    pub async fn refresh(&self, litellm: &LiteLlmClient, reading: KeyReading) -> Result<(), ApiError> {
        let taken = Timestamp::now();
        let taken_by_proxy = litellm.proxy_now();
        let unmarked = lock(&self.unmarked).clone();
        let unmarked = &unmarked;
        // Only managed users are kept, page by page and compacted: a proxy may have many more users than the
        // operator manages.
        let mut listed_unmarked = HashSet::new();
        // As many as last time: a table grown by doubling holds the old and the new one at each step.
        let mut managed: HashMap<String, Kept> = HashMap::with_capacity(self.managed_count());
        let fetch = |page| async move {
            let listed = litellm.user_list(page, PAGE_SIZE).await?;
            let managed = listed.users.into_iter().filter_map(|record| {
                let marked = record.metadata.contains_key(desired::OWNER_METADATA_KEY);
                let user_id = record.user_id.clone()?;
                (marked || unmarked.contains(&user_id)).then(|| (user_id, marked, Kept::new(&record)))
            });
            Ok((managed.collect::<Vec<_>>(), listed.total_pages))
        };
        let missing_user_pages = all_pages(fetch, |page| {
            for (user_id, marked, kept) in page {
                if !marked {
                    listed_unmarked.insert(user_id.clone());
                }
                managed.insert(user_id, kept);
            }
        })
        .await?;
        if missing_user_pages == 0 {
            // Ids asked for that the proxy does not have, or that carry the mark now, need no watching. Ids
            // asked for while this listing ran stay: the next one looks for them.
            let mut watched = lock(&self.unmarked);
            watched.retain(|id| listed_unmarked.contains(id) || !unmarked.contains(id));
        }

        let previous = self.current().filter(|previous| reading == KeyReading::Newest && previous.keys_complete);
        let keys_complete = match &previous {
            _ if reading == KeyReading::Deferred => false,
            Some(previous) => match newest_keys(litellm, self.keys_since(previous)).await {
                Ok(keys) => {
                    merge(&mut managed, Some(&previous.users), keys);
                    true
                }
                Err(err) => {
                    warn!(error = %err, "could not read the newest LiteLLM keys; reading every key");
                    every_key_merged(litellm, &mut managed).await
                }
            },
            None => every_key_merged(litellm, &mut managed).await,
        };
        let keys_read = reading != KeyReading::Deferred;
        if keys_read {
            confirm_key_counts(litellm, &mut managed).await;
        }
        let users = managed.into_iter().map(|(user_id, kept)| (user_id.into_boxed_str(), kept.freeze())).collect();
        debug!(missing_user_pages, ?reading, "listed LiteLLM users and keys");
        *crate::sync::write(&self.snapshot) =
            Some(Arc::new(Snapshot { taken, taken_by_proxy, users, keys_complete, keys_read }));
        Ok(())
    }
}

/// Reads every key into `managed`. Without every page, no user's keys can be confirmed: then `managed` is
/// emptied and the answer is `false`.
async fn every_key_merged(litellm: &LiteLlmClient, managed: &mut HashMap<String, Kept>) -> bool {
    let fetch = |page| async move {
        let listed = litellm.key_list(page, PAGE_SIZE, None).await?;
        Ok((listed.keys, listed.total_pages))
    };
    // Page by page: a proxy may hold many more keys than the operator manages, and only managed users' are kept.
    match all_pages(fetch, |keys| merge(managed, None, keys)).await {
        Ok(0) => true,
        Ok(_) | Err(_) => {
            managed.clear();
            false
        }
    }
}

/// The keys created at `since` or later, newest first, page by page until an older one shows up.
async fn newest_keys(litellm: &LiteLlmClient, since: Timestamp) -> Result<Vec<KeyRecord>, ApiError> {
    let mut keys = Vec::new();
    for page in 1.. {
        let listed = litellm.key_list(page, PAGE_SIZE, None).await?;
        let mut reached_older = listed.keys.is_empty() || page >= listed.total_pages;
        for key in listed.keys {
            match key.created_at.as_deref().and_then(parse_time) {
                Some(created) if created < since => reached_older = true,
                // A key without a creation time cannot be placed: read it, and every key after it.
                _ => keys.push(key),
            }
        }
        if reached_older {
            break;
        }
    }
    Ok(keys)
}

/// Gives each managed user its keys: the ones `previous` knew (for a reading of only the newest keys) and the
/// ones read now.
fn merge(managed: &mut HashMap<String, Kept>, previous: Option<&HashMap<Box<str>, Frozen>>, keys: Vec<KeyRecord>) {
    if let Some(previous) = previous {
        for (user_id, entry) in managed.iter_mut() {
            if let Some(known) = previous.get(user_id.as_str()).and_then(Frozen::kept_keys) {
                entry.keys = known;
            }
        }
    }
    for key in keys {
        let Some(entry) = key.user_id.as_deref().and_then(|id| managed.get_mut(id)) else { continue };
        entry.keys.change(|known_keys| match known_keys.iter_mut().find(|known| known.token == key.token) {
            Some(known) => *known = compact(key),
            None => known_keys.push(compact(key)),
        });
    }
}

/// Users whose keys do not add up to the `key_count` the user listing gave (keys deleted since, or created
/// where the reading did not look) have their keys read on their own; those that still do not add up are
/// left out, to be read by their reconciles.
async fn confirm_key_counts(litellm: &LiteLlmClient, managed: &mut HashMap<String, Kept>) {
    let adds_up = |kept: &Kept| kept.key_count == Some(kept.keys.len() as i64);
    let unsure: Vec<String> = managed.iter().filter(|(_, e)| !adds_up(e)).map(|(id, _)| id.clone()).collect();
    let (read_alone, left_out) = unsure.split_at(unsure.len().min(USERS_READ_ALONE));
    for user_id in left_out {
        managed.remove(user_id);
    }
    let read: Vec<(String, Option<Vec<KeyRecord>>)> = stream::iter(read_alone.iter().cloned())
        .map(|user_id| async move {
            let keys = litellm.key_list(1, PAGE_SIZE, Some(&user_id)).await;
            let keys = keys.ok().filter(|page| page.total_pages <= 1).map(|page| page.keys);
            (user_id, keys)
        })
        .buffer_unordered(CONCURRENT_PAGES)
        .collect()
        .await;
    for (user_id, keys) in read {
        match (managed.get_mut(&user_id), keys) {
            (Some(entry), Some(keys)) => {
                entry.keys = KeptKeys::Read(keys.into_iter().map(compact).collect());
                if !adds_up(entry) {
                    managed.remove(&user_id);
                }
            }
            _ => drop(managed.remove(&user_id)),
        }
    }
}

/// Every page of a paged list, each handed to `take` as it arrives: the first to learn how many there are, then
/// the rest a few at a time, each tried a few times. Fails only when the first page does; otherwise answers how
/// many pages are missing.
async fn all_pages<T, F, Fut>(fetch: F, mut take: impl FnMut(Vec<T>)) -> Result<usize, ApiError>
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
    let (first, total_pages) = with_retries(1).await?;
    take(first);
    let mut rest = stream::iter(2..=total_pages).map(with_retries).buffer_unordered(CONCURRENT_PAGES);
    let mut missing_pages = 0;
    while let Some(page) = rest.next().await {
        match page {
            Ok((found, _)) => take(found),
            Err(err) => {
                warn!(error = %err, "a page of a LiteLLM list failed; its entries are read one by one");
                missing_pages += 1;
            }
        }
    }
    Ok(missing_pages)
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
        let mut items = Vec::new();
        let fetch = |page| {
            calls.fetch_add(1, Ordering::Relaxed);
            let fail = page == 3 || (page == 2 && flaky_once.fetch_add(1, Ordering::Relaxed) == 0);
            async move { if fail { Err(failure()) } else { Ok((vec![page], 4)) } }
        };
        let missing_pages = all_pages(fetch, |page| items.extend(page)).await.unwrap();
        items.sort();
        assert_eq!(items, vec![1, 2, 4], "page 2 recovered on a retry, page 3 never did");
        assert_eq!(missing_pages, 1);
        assert_eq!(calls.load(Ordering::Relaxed), 1 + 2 + PAGE_TRIES + 1);
    }

    #[tokio::test]
    async fn only_a_failing_first_page_fails_the_list() {
        let result = all_pages(|_| async { Err::<(Vec<u8>, i64), _>(failure()) }, drop).await;
        assert!(result.is_err());
    }

    #[test]
    fn a_kept_user_reads_back_as_the_proxy_gave_it() {
        let record: UserRecord = serde_json::from_value(serde_json::json!({
            "user_id": "u", "user_role": "internal_user", "max_budget": 2.5, "spend": 0.25, "tpm_limit": "10",
            "metadata": { "litellm-operator": { "owner": "ns/u" }, "team": "x" }, "teams": ["t"], "key_count": 1,
            "object_permission": { "mcp_servers": ["a"] }, "models": ["m"]
        }))
        .unwrap();
        let json = String::from_utf8(record_json(&record)).unwrap();
        assert!(!json.contains("null") && !json.contains("[]") && !json.contains("\"u\""), "{json}");
        let mut kept = Kept::new(&record);
        let key = KeyRecord {
            token: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            key_alias: Some("ns/u".into()),
            user_id: Some("u".into()),
            aliases: serde_json::from_value(serde_json::json!({ "m": "n" })).unwrap(),
            expires: Some("2027-01-01T00:00:00Z".into()),
            owner: Some("ns/u".into()),
            created_at: None,
        };
        kept.keys.change(|keys| keys.push(compact(key.clone())));
        let frozen = kept.freeze();
        let entry = frozen.entry("u", true).unwrap();
        assert_eq!(entry.record, record);
        assert_eq!(entry.keys, Some(vec![key.clone()]));
        assert_eq!(frozen.entry("u", false).unwrap().keys, None, "a snapshot without keys says so");
        let (packed, unpacked) = (frozen.record.len() + frozen.keys.len(), json.len() + keys_json(&[key]).len());
        assert!(packed * 4 < unpacked * 3, "{packed} bytes packed, {unpacked} as JSON");
    }

    #[test]
    fn a_reading_of_the_newest_keys_unpacks_only_the_users_it_changes() {
        let record = |id: &str| UserRecord { user_id: Some(id.into()), key_count: Some(1), ..Default::default() };
        let key = |token: &str, user: &str| KeyRecord {
            token: token.repeat(64),
            key_alias: Some(format!("ns/{user}")),
            user_id: Some(user.into()),
            ..Default::default()
        };
        let frozen_with = |user: &str, keys: Vec<KeyRecord>| {
            let mut kept = Kept::new(&record(user));
            kept.keys.change(|known| known.extend(keys.into_iter().map(compact)));
            kept.freeze()
        };
        let previous: HashMap<Box<str>, Frozen> =
            [("a".into(), frozen_with("a", vec![key("1", "a")])), ("b".into(), frozen_with("b", vec![key("2", "b")]))]
                .into();
        let mut managed: HashMap<String, Kept> =
            ["a", "b", "c"].map(|id| (id.to_owned(), Kept::new(&record(id)))).into();

        merge(&mut managed, Some(&previous), vec![key("3", "b"), key("4", "stranger")]);

        assert!(matches!(managed["a"].keys, KeptKeys::Packed { count: 1, .. }), "untouched: {:?}", managed["a"]);
        assert!(matches!(&managed["b"].keys, KeptKeys::Read(keys) if keys.len() == 2));
        assert_eq!(managed["c"].keys.len(), 0);
        let keys_of = |id: &str, managed: &mut HashMap<String, Kept>| {
            let kept = managed.remove(id).unwrap();
            kept.freeze().entry(id, true).unwrap().keys.unwrap()
        };
        assert_eq!(keys_of("a", &mut managed), vec![key("1", "a")]);
        assert_eq!(keys_of("b", &mut managed), vec![key("2", "b"), key("3", "b")]);
        assert_eq!(keys_of("c", &mut managed), vec![]);
    }

    #[test]
    fn keys_wait_for_the_second_refresh_and_are_read_in_full_every_so_often() {
        let readings: Vec<KeyReading> = (0..FULL_KEY_READING_EVERY + 3).map(KeyReading::for_refresh).collect();
        assert_eq!(readings[0], KeyReading::Deferred);
        assert_eq!(readings[1], KeyReading::Every);
        assert!(readings[2..=FULL_KEY_READING_EVERY as usize].iter().all(|r| *r == KeyReading::Newest));
        assert_eq!(readings[FULL_KEY_READING_EVERY as usize + 1], KeyReading::Every);
    }

    #[test]
    fn a_resync_waits_only_for_a_refresh_that_will_vouch_for_its_user() {
        let directory = Directory::default();
        let max_age = Duration::from_secs(600);
        let changed = Timestamp::now() - SignedDuration::from_secs(10);
        assert_eq!(directory.wait_for_refresh(Some(changed), max_age), None, "no refresh under way");

        *lock(&directory.under_way) = Some((Timestamp::now(), Instant::now()));
        let wait = directory.wait_for_refresh(Some(changed), max_age).expect("a refresh that began after the change");
        assert!(wait > Duration::from_secs(1) && wait <= REFRESH_POLL + Duration::from_secs(1), "{wait:?}");
        *lock(&directory.last_took) = Some(Duration::from_secs(90));
        let wait = directory.wait_for_refresh(Some(changed), max_age).unwrap();
        assert!(wait > Duration::from_secs(85), "as long as the last refresh took: {wait:?}");
        assert!(directory.wait_for_refresh(Some(Timestamp::now()), max_age).is_none(), "changed after it began");
        assert!(directory.wait_for_refresh(Some(changed), Duration::ZERO).is_none(), "running for too long");

        *directory.snapshot.write().unwrap() = Some(Arc::new(Snapshot {
            taken: Timestamp::now(),
            taken_by_proxy: None,
            users: HashMap::new(),
            keys_complete: true,
            keys_read: true,
        }));
        assert_eq!(directory.wait_for_refresh(Some(changed), max_age), None, "the last snapshot vouches already");
    }

    #[tokio::test]
    async fn without_a_refresh_task_a_lookup_does_not_wait() {
        let directory = Directory::default();
        let started = std::time::Instant::now();
        assert!(directory.lookup("u", None, Duration::from_secs(60)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
