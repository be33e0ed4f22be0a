//! The operator's own requests to the Kubernetes API server, counted by verb and resource
//! (`litellm_operator_kubernetes_requests_total`): what the operator costs the control plane, apart from
//! every other client of the same API server. A resync that finds nothing to do should add nothing here.

use std::sync::Arc;

use http::{Method, Request, Uri};
use kube::{Client, Config, client::ClientBuilder};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// A client for the API server that `kubeconfig` or the pod's service account points at, whose every request is
/// counted in `metrics`.
pub async fn counted_client(metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    let count = MapRequestLayer::new(move |request: Request<kube::client::Body>| {
        let (verb, resource) = classify(request.method(), request.uri());
        metrics.kubernetes_request(verb, resource);
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The verb and resource of a request, named as the API server's own `apiserver_request_total` names them:
/// `get` reads one object, `list` and `watch` many; the resource carries its subresource (`litellmusers/status`).
/// Paths that name no resource (discovery, `/version`) are `other`.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // Namespaced: namespaces/<ns>/<resource>/...; a namespace itself is namespaces[/<name>[/<subresource>]].
    let rest = match rest {
        ["namespaces", _namespace, in_namespace @ ..] if !in_namespace.is_empty() => in_namespace,
        other => other,
    };
    let (resource, named) = match rest {
        [] => return (verb(method, false, uri), "other".to_owned()),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    (verb(method, named, uri), resource)
}

fn verb(method: &Method, named: bool, uri: &Uri) -> &'static str {
    let watch = uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn requests_are_named_as_the_api_server_names_them() {
        let users = "/apis/litellm-operator.io/v1alpha1/namespaces/team-a/litellmusers";
        assert_eq!(classified(Method::GET, &format!("{users}/alice")), ("get", "litellmusers".into()));
        assert_eq!(classified(Method::GET, &format!("{users}?limit=1")), ("list", "litellmusers".into()));
        assert_eq!(
            classified(Method::GET, &format!("{users}?watch=true&resourceVersion=5")),
            ("watch", "litellmusers".into())
        );
        assert_eq!(
            classified(Method::PATCH, &format!("{users}/alice/status?fieldManager=x")),
            ("patch", "litellmusers/status".into())
        );
        assert_eq!(
            classified(Method::GET, "/apis/litellm-operator.io/v1alpha1/litellmusers"),
            ("list", "litellmusers".into())
        );
        assert_eq!(classified(Method::POST, "/api/v1/namespaces/team-a/secrets"), ("create", "secrets".into()));
        assert_eq!(classified(Method::PUT, "/api/v1/namespaces/team-a/secrets/k"), ("update", "secrets".into()));
        assert_eq!(classified(Method::DELETE, "/api/v1/namespaces/team-a/secrets/k"), ("delete", "secrets".into()));
        assert_eq!(classified(Method::GET, "/api/v1/namespaces/team-a"), ("get", "namespaces".into()));
        assert_eq!(classified(Method::GET, "/api/v1/namespaces"), ("list", "namespaces".into()));
        assert_eq!(
            classified(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/ops/leases/litellm-user-0a"),
            ("get", "leases".into())
        );
        assert_eq!(classified(Method::GET, "/version"), ("list", "other".into()));
        assert_eq!(classified(Method::GET, "/apis"), ("list", "other".into()));
    }
}
