//! Kubernetes events about a LiteLLMUser, published in the background: an event is one more API write and
//! nothing waits for it, so it stays off the path from a change to Ready. Written here rather than with
//! kube-runtime's recorder because the recorder names an event `<object name>.<time>`, which the API server
//! refuses for the longest object names it accepts.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use tracing::warn;

use super::decide::Note;
use crate::crd::{LiteLLMUser, bounded_name};

/// Longest note the API server accepts, in bytes.
const MAX_NOTE: usize = 1024;

#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.to_owned());
        Events { client, controller: controller.to_owned(), instance }
    }

    pub fn publish(&self, user: &LiteLLMUser, note: &Note) {
        let Some(namespace) = user.namespace() else { return };
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(bounded_name(&user.name_any(), &format!(".{:x}", now.as_nanosecond()), 253)),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(note.reason.as_str().into()),
            note: Some(crate::text::bounded_bytes(&note.text, MAX_NOTE)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference(user)),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(err) = api.create(&PostParams::default(), &event).await {
                warn!(error = %err, "could not publish event");
            }
        });
    }
}

fn reference(user: &LiteLLMUser) -> ObjectReference {
    ObjectReference {
        api_version: Some(LiteLLMUser::api_version(&()).into_owned()),
        kind: Some(LiteLLMUser::kind(&()).into_owned()),
        name: Some(user.name_any()),
        namespace: user.namespace(),
        uid: user.uid(),
        resource_version: user.resource_version(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_api_servers_limit() {
        let long = "é".repeat(1000);
        let cut = crate::text::bounded_bytes(&long, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE && cut.ends_with('…'));
        assert_eq!(crate::text::bounded_bytes("short", MAX_NOTE), "short");
    }
}
