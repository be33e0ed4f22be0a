//! litellm-operator: keeps LiteLLM proxy users equal to `LiteLLMUser` resources.

pub mod crd;
pub mod duration;
pub mod export;
pub mod kube_requests;
pub mod litellm;
pub mod metrics;
pub mod operator;
pub mod panics;
pub mod policy;
pub mod proxies;
pub mod reconcile;
mod sync;
mod text;
