//! The proxies the operator serves: one [`Proxy`] per `LiteLLMProxy` resource (and one for the proxy the
//! operator's flags name, if any), each with its own client, claims, directory snapshot and policy, so that a
//! proxy that is down, or whose master key changed, affects only its own users.

pub mod controller;

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{sync::watch, task::AbortHandle};

use crate::{
    crd::ProxyPolicy,
    litellm::LiteLlmClient,
    reconcile::{claim::Claims, directory::Directory},
    sync::{read, write},
};

/// The name under which the proxy of the operator's flags is recorded in `status.proxy` (a spec cannot name it:
/// see [`Registry::resolve_spec`]).
pub const FLAGS_PROXY: &str = "default";

/// One proxy, ready for reconciles.
pub struct Proxy {
    pub name: String,
    pub client: LiteLlmClient,
    pub claims: Claims,
    pub directory: Arc<Directory>,
    pub policy: ProxyPolicy,
    /// What the handle was built from; a handle is rebuilt only when this changes.
    fingerprint: String,
    /// The directory's refresh task, stopped with the handle.
    refresh: Option<AbortHandle>,
}

impl Proxy {
    /// A proxy handle; its directory takes a snapshot at once, and one every `resync` from when the watch caches
    /// have synced.
    pub fn start(
        name: &str,
        client: LiteLlmClient,
        claims: Claims,
        policy: ProxyPolicy,
        fingerprint: String,
        resync: Duration,
        caches_synced: watch::Receiver<bool>,
    ) -> Self {
        let directory = Arc::new(Directory::default());
        let refresh = tokio::spawn(directory.clone().run(client.clone(), resync, caches_synced)).abort_handle();
        Proxy { name: name.to_owned(), client, claims, directory, policy, fingerprint, refresh: Some(refresh) }
    }

    /// A handle without a refresh task, for tests.
    pub fn idle(name: &str, client: LiteLlmClient, claims: Claims, policy: ProxyPolicy) -> Self {
        let directory = Arc::new(Directory::default());
        Proxy { name: name.to_owned(), client, claims, directory, policy, fingerprint: String::new(), refresh: None }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(refresh) = &self.refresh {
            refresh.abort();
        }
    }
}

/// Why a resource has no proxy to talk to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("LiteLLMProxy {0} does not exist")]
    NotFound(String),
    #[error("LiteLLMProxy {name} is not ready: {reason}")]
    NotReady { name: String, reason: String },
    #[error("no proxy is named and none is the default: set spec.proxyRef.name, or mark a LiteLLMProxy default")]
    NoDefault,
}

#[derive(Default)]
pub struct Registry {
    ready: RwLock<BTreeMap<String, Arc<Proxy>>>,
    /// Proxies that exist but cannot be used, and why.
    broken: RwLock<BTreeMap<String, String>>,
    /// Proxies marked `default`.
    defaults: RwLock<Vec<String>>,
    /// The proxy of the operator's flags, if any.
    flags: Option<Arc<Proxy>>,
}

impl Registry {
    pub fn new(flags: Option<Proxy>) -> Self {
        Registry { flags: flags.map(Arc::new), ..Registry::default() }
    }

    /// The proxy a resource names, or the default one.
    pub fn resolve(&self, name: Option<&str>) -> Result<Arc<Proxy>, Unresolved> {
        let wanted = match name {
            Some(name) => name.to_owned(),
            None => match read(&self.defaults).first() {
                Some(default) => default.clone(),
                None => return self.flags.clone().ok_or(Unresolved::NoDefault),
            },
        };
        if let Some(proxy) = read(&self.ready).get(&wanted) {
            return Ok(proxy.clone());
        }
        if let Some(reason) = read(&self.broken).get(&wanted) {
            return Err(Unresolved::NotReady { name: wanted, reason: reason.clone() });
        }
        match &self.flags {
            Some(flags) if wanted == FLAGS_PROXY => Ok(flags.clone()),
            _ => Err(Unresolved::NotFound(wanted)),
        }
    }

    /// The proxy a LiteLLMUser's `spec.proxyRef` names, or the default one. The proxy of the operator's flags is
    /// no LiteLLMProxy: a spec reaches it only by naming no proxy while no LiteLLMProxy is the default, never by
    /// its name, so a tenant cannot reach past a stricter LiteLLMProxy the platform offers for the same backend.
    pub fn resolve_spec(&self, name: Option<&str>) -> Result<Arc<Proxy>, Unresolved> {
        let is_resource = |name: &str| read(&self.ready).contains_key(name) || read(&self.broken).contains_key(name);
        match name {
            Some(FLAGS_PROXY) if !is_resource(FLAGS_PROXY) => Err(Unresolved::NotFound(FLAGS_PROXY.to_owned())),
            _ => self.resolve(name),
        }
    }

    /// The current handle of a proxy, if it is ready and was built from `fingerprint`.
    pub fn current(&self, name: &str, fingerprint: &str) -> Option<Arc<Proxy>> {
        read(&self.ready).get(name).filter(|p| p.fingerprint == fingerprint).cloned()
    }

    pub fn set_ready(&self, proxy: Proxy, default: bool) {
        let name = proxy.name.clone();
        write(&self.broken).remove(&name);
        write(&self.ready).insert(name.clone(), Arc::new(proxy));
        self.set_default(&name, default);
    }

    pub fn set_broken(&self, name: &str, reason: String, default: bool) {
        write(&self.ready).remove(name);
        write(&self.broken).insert(name.to_owned(), reason);
        self.set_default(name, default);
    }

    pub fn remove(&self, name: &str) {
        write(&self.ready).remove(name);
        write(&self.broken).remove(name);
        self.set_default(name, false);
    }

    /// Marks a proxy as a default one, or not.
    pub fn set_default(&self, name: &str, default: bool) {
        let mut defaults = write(&self.defaults);
        defaults.retain(|d| d != name);
        if default {
            defaults.push(name.to_owned());
            defaults.sort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::litellm::{ClientConfig, MasterKey};

    fn proxy(name: &str) -> Proxy {
        let client = LiteLlmClient::new(ClientConfig {
            base_url: format!("http://127.0.0.1:9/{name}").parse().unwrap(),
            master_key: MasterKey::new("sk-x"),
            ca_pem: None,
            timeout: Duration::from_secs(1),
            idle_timeout: crate::litellm::DEFAULT_IDLE_TIMEOUT,
        })
        .unwrap();
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        Proxy::idle(name, client, Claims::new(kube, "ns", name), ProxyPolicy::default())
    }

    #[tokio::test]
    async fn resources_find_the_proxy_they_name_or_the_default() {
        let registry = Registry::new(Some(proxy(FLAGS_PROXY)));
        assert_eq!(registry.resolve(None).unwrap().name, FLAGS_PROXY, "the flags' proxy is the implicit default");
        assert_eq!(registry.resolve_spec(None).unwrap().name, FLAGS_PROXY);
        let by_name = registry.resolve_spec(Some(FLAGS_PROXY)).map(|p| p.name.clone());
        assert_eq!(by_name, Err(Unresolved::NotFound(FLAGS_PROXY.into())), "not by name");
        assert!(registry.resolve(Some(FLAGS_PROXY)).is_ok(), "where status records it, it is found");
        registry.set_ready(proxy("prod"), false);
        registry.set_broken("staging", "master key Secret missing".into(), false);
        assert_eq!(registry.resolve(Some("prod")).unwrap().name, "prod");
        assert!(matches!(registry.resolve(Some("staging")), Err(Unresolved::NotReady { .. })));
        assert_eq!(registry.resolve(Some("nope")).err(), Some(Unresolved::NotFound("nope".into())));
        registry.set_ready(proxy("prod"), true);
        assert_eq!(registry.resolve(None).unwrap().name, "prod", "a proxy marked default wins over the flags");
        registry.remove("prod");
        assert_eq!(registry.resolve(None).unwrap().name, FLAGS_PROXY);
        assert_eq!(Registry::new(None).resolve(None).err(), Some(Unresolved::NoDefault));
    }
}
