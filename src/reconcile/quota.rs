//! What each namespace's LiteLLMUsers add up to, for the policy's namespace quota. Counted from the watch cache
//! (no request of its own), at most once every few seconds, and only while some proxy's policy has a quota: a
//! count is a pass over every cached resource.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::Store};
use serde::Deserialize;

use crate::{
    crd::{CachedUser, LiteLLMUser},
    policy::NamespaceUsage,
};

/// How long a count serves the resources it has (it is taken again for one it has not).
const FRESH_FOR: Duration = Duration::from_secs(5);
/// The longest a reconcile waits, after start-up, for the watch caches' first listing.
const LISTING_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Ledger {
    stores: OnceLock<Vec<Store<CachedUser>>>,
    counted: Mutex<Option<(Instant, Arc<Tally>)>>,
}

/// Per namespace, its resources that are not being deleted, oldest first.
#[derive(Debug, Default, PartialEq)]
struct Tally(HashMap<String, Vec<Entry>>);

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    created: Option<Timestamp>,
    name: String,
    /// The LiteLLMProxy the spec names.
    proxy: Option<String>,
    max_budget: Option<f64>,
}

/// The fields of a spec a count needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    #[serde(default)]
    proxy_ref: Option<crate::crd::ProxyRef>,
    #[serde(default)]
    max_budget: Option<f64>,
}

impl Ledger {
    /// The watch caches to count from, once the controllers have them.
    pub fn set_stores(&self, stores: Vec<Store<CachedUser>>) {
        let _ = self.stores.set(stores);
    }

    /// What the older resources of `user`'s namespace, on the proxy its spec names, add up to; `None` before
    /// the caches exist or while they have not listed.
    pub async fn usage(&self, user: &LiteLLMUser) -> Option<NamespaceUsage> {
        let stores = self.stores.get()?;
        for store in stores {
            listed(store).await?;
        }
        let tally = {
            let mut counted = crate::sync::lock(&self.counted);
            // A count that has this resource has every older one too: one watch delivers objects in the order
            // they were written. One that does not may lack older ones created since, and is taken again.
            let fresh = |tally: &Tally| tally.has(user);
            match counted.as_ref().filter(|(at, tally)| at.elapsed() < FRESH_FOR && fresh(tally)) {
                Some((_, tally)) => tally.clone(),
                None => {
                    let tally = Arc::new(Tally::count(stores.iter().flat_map(Store::state)));
                    *counted = Some((Instant::now(), tally.clone()));
                    tally
                }
            }
        };
        Some(tally.usage(user))
    }
}

/// Waits for a cache's first listing, polling: kube-runtime's readiness signal wakes only the last task that
/// polled it.
async fn listed(store: &Store<CachedUser>) -> Option<()> {
    let started = Instant::now();
    while started.elapsed() < LISTING_WAIT {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(Ok(())) => return Some(()),
            Ok(Err(_)) => return None,
            Err(_) => continue,
        }
    }
    None
}

impl Tally {
    fn count(users: impl Iterator<Item = Arc<CachedUser>>) -> Self {
        let mut tally = Tally::default();
        for user in users.filter(|u| u.metadata.deletion_timestamp.is_none()) {
            let counted: Option<Counted> = serde_json::from_str(user.spec_json()).ok();
            let entry = Entry {
                created: user.metadata.creation_timestamp.as_ref().map(|t| t.0),
                name: user.name_any(),
                proxy: counted.as_ref().and_then(|c| c.proxy_ref.as_ref().map(|p| p.name.clone())),
                max_budget: counted.and_then(|c| c.max_budget),
            };
            tally.0.entry(user.namespace().unwrap_or_default()).or_default().push(entry);
        }
        for entries in tally.0.values_mut() {
            entries.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        }
        tally
    }

    fn has(&self, user: &LiteLLMUser) -> bool {
        let name = user.name_any();
        self.0.get(&user.namespace().unwrap_or_default()).is_some_and(|entries| entries.iter().any(|e| e.name == name))
    }

    /// The resources of `user`'s namespace on the same proxy that sort before it. One the count has not seen
    /// yet is newer than every resource it has.
    fn usage(&self, user: &LiteLLMUser) -> NamespaceUsage {
        let me = (user.metadata.creation_timestamp.as_ref().map(|t| t.0), user.name_any());
        let proxy = user.spec.proxy_ref.as_ref().map(|p| p.name.as_str());
        let older = self
            .0
            .get(&user.namespace().unwrap_or_default())
            .into_iter()
            .flatten()
            .filter(|e| e.proxy.as_deref() == proxy && (e.created, &e.name) < (me.0, &me.1));
        older.fold(NamespaceUsage::default(), |usage, e| NamespaceUsage {
            older_users: usage.older_users + 1,
            older_budget: usage.older_budget + e.max_budget.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn cached(namespace: &str, name: &str, created: i64, spec: serde_json::Value, deleting: bool) -> Arc<CachedUser> {
        let at = |s: i64| Time(Timestamp::from_second(1_800_000_000 + s).unwrap());
        let mut object = json!({
            "apiVersion": "litellm-operator.io/v1alpha1", "kind": "LiteLLMUser",
            "metadata": { "name": name, "namespace": namespace, "creationTimestamp": at(created) },
            "spec": spec,
        });
        if deleting {
            object["metadata"]["deletionTimestamp"] = json!(at(created + 1));
        }
        Arc::new(serde_json::from_value(object).unwrap())
    }

    #[test]
    fn the_older_resources_of_a_namespace_on_one_proxy_count() {
        let tally = Tally::count(
            [
                cached("a", "first", 0, json!({ "maxBudget": 5 }), false),
                cached("a", "second", 10, json!({ "maxBudget": 7 }), false),
                cached("a", "same-second-b", 20, json!({}), false),
                cached("a", "same-second-a", 20, json!({ "maxBudget": 1 }), false),
                cached("a", "elsewhere", 5, json!({ "proxyRef": { "name": "other" }, "maxBudget": 100 }), false),
                cached("a", "going", 1, json!({ "maxBudget": 50 }), true),
                cached("b", "neighbour", 0, json!({ "maxBudget": 1000 }), false),
            ]
            .into_iter(),
        );
        let usage = |name: &str, created: i64, spec: serde_json::Value| {
            let user = cached("a", name, created, spec, false).parse().unwrap();
            tally.usage(&user)
        };
        assert_eq!(usage("first", 0, json!({})), NamespaceUsage { older_users: 0, older_budget: 0.0 });
        assert_eq!(usage("second", 10, json!({})), NamespaceUsage { older_users: 1, older_budget: 5.0 });
        let tie = usage("same-second-b", 20, json!({}));
        assert_eq!(tie, NamespaceUsage { older_users: 3, older_budget: 13.0 }, "same second: by name");
        let unseen = usage("brand-new", 30, json!({}));
        assert_eq!(unseen, NamespaceUsage { older_users: 4, older_budget: 13.0 }, "a new one is the newest");
        let other = usage("late", 30, json!({ "proxyRef": { "name": "other" } }));
        assert_eq!(other, NamespaceUsage { older_users: 1, older_budget: 100.0 }, "per proxy");
    }
}
