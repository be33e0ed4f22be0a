//! The reconciler against a mocked Kubernetes API server: each test scripts the exact requests the reconciler
//! must make, in order, and fails on any other. LiteLLM points at a closed port, so any proxy call fails the
//! test too: these paths must not need the proxy.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response};
use kube::{
    Client, Resource,
    client::Body,
    runtime::events::{Recorder, Reporter},
};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;
use crate::litellm::{ClientConfig, MasterKey};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn context() -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let litellm = LiteLlmClient::new(ClientConfig {
        base_url: "http://127.0.0.1:9/".parse().unwrap(),
        master_key: MasterKey::new("sk-test"),
        ca_file: None,
        timeout: Duration::from_millis(200),
    })
    .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None });
    let ctx = Context::new(client, litellm, recorder, Settings::default(), Arc::new(Metrics::default()));
    (Arc::new(ctx), handle)
}

fn user(spec: Value) -> LiteLLMUser {
    let mut user: LiteLLMUser = serde_json::from_value(json!({
        "apiVersion": "litellm-operator.io/v1alpha1",
        "kind": "LiteLLMUser",
        "metadata": { "name": "alice", "namespace": "team-a", "uid": "uid-1", "generation": 1, "resourceVersion": "10" },
        "spec": spec,
    }))
    .unwrap();
    user.meta_mut().finalizers = Some(vec![FINALIZER.into()]);
    user
}

/// Answers the next request after checking its method and path; returns the request body.
async fn expect(handle: &mut ApiHandle, method: Method, path: &str, status: u16, answer: Value) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(2), handle.next_request())
        .await
        .expect("a request in time")
        .expect("a request");
    assert_eq!((request.method(), request.uri().path()), (&method, path), "unexpected request {}", request.uri());
    let body = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap(),
    );
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Answers the next requests, in whatever order they come (events are sent in the background), and returns
/// each body by path.
async fn expect_unordered(handle: &mut ApiHandle, wanted: &[(Method, &str, Value)]) -> Vec<Value> {
    let mut bodies = vec![Value::Null; wanted.len()];
    let mut seen = vec![false; wanted.len()];
    for _ in 0..wanted.len() {
        let (request, send) = tokio::time::timeout(Duration::from_secs(2), handle.next_request())
            .await
            .expect("a request in time")
            .expect("a request");
        let at = wanted
            .iter()
            .enumerate()
            .position(|(i, (m, p, _))| !seen[i] && request.method() == m && request.uri().path().starts_with(p))
            .unwrap_or_else(|| panic!("unexpected request {} {}", request.method(), request.uri()));
        seen[at] = true;
        let body = request.into_body().collect_bytes().await.unwrap();
        let answer = serde_json::to_vec(&wanted[at].2).unwrap();
        send.send_response(Response::builder().status(200).body(Body::from(answer)).unwrap());
        bodies[at] = serde_json::from_slice(&body).unwrap_or(Value::Null);
    }
    bodies
}

async fn no_more_requests(handle: &mut ApiHandle) {
    let next = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(next.is_err() || next.as_ref().is_ok_and(Option::is_none), "unexpected extra request");
}

/// As if `user` had just been found in sync at generation 1, with `key` in its Secret.
fn remember_in_sync(ctx: &Context, user: &LiteLLMUser, key: &str) {
    let in_sync = InSync {
        generation: Some(1),
        at: Instant::now(),
        key: Some(("alice-litellm-key".into(), keys::key_hash(key))),
    };
    ctx.last_in_sync.lock().unwrap().insert(ObjectRef::from_obj(user), in_sync);
}

fn not_found() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" })
}

#[tokio::test]
async fn a_new_resource_gets_the_finalizer_before_anything_else() {
    let (ctx, mut api) = context();
    let mut fresh = user(json!({}));
    fresh.meta_mut().finalizers = None;
    let task = tokio::spawn(reconcile(Arc::new(fresh.clone()), ctx));
    let path = "/apis/litellm-operator.io/v1alpha1/namespaces/team-a/litellmusers/alice";
    let patch = expect(&mut api, Method::PATCH, path, 200, serde_json::to_value(&fresh).unwrap()).await;
    assert!(patch.to_string().contains(FINALIZER), "{patch}");
    // Then, in the same reconcile, the work itself: here the proxy is unreachable, so a Warning and a status.
    let status_path = format!("{path}/status");
    let bodies = expect_unordered(
        &mut api,
        &[
            (Method::POST, "/apis/events.k8s.io/v1/namespaces/team-a/events", json!({})),
            (Method::PATCH, &status_path, serde_json::to_value(&fresh).unwrap()),
        ],
    )
    .await;
    assert!(bodies[1].to_string().contains("LiteLLMUnavailable"), "{}", bodies[1]);
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn retain_releases_the_secret_and_never_calls_the_proxy() {
    let (ctx, mut api) = context();
    let mut deleted = user(json!({ "deletionPolicy": "Retain" }));
    deleted.meta_mut().deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    deleted.status =
        Some(LiteLLMUserStatus { key_secret_name: Some("alice-litellm-key".into()), ..Default::default() });
    let secret = keys::key_secret(&deleted, "alice-litellm-key", "team-a.alice", "sk-abc");
    let task = tokio::spawn(reconcile(Arc::new(deleted.clone()), ctx));
    let secret_path = "/api/v1/namespaces/team-a/secrets/alice-litellm-key";
    expect(&mut api, Method::GET, secret_path, 200, serde_json::to_value(&secret).unwrap()).await;
    let released = expect(&mut api, Method::PATCH, secret_path, 200, serde_json::to_value(&secret).unwrap()).await;
    assert_eq!(released["metadata"]["ownerReferences"], json!([]), "owner reference removed: {released}");
    let finalizer_patch = expect(
        &mut api,
        Method::PATCH,
        "/apis/litellm-operator.io/v1alpha1/namespaces/team-a/litellmusers/alice",
        200,
        serde_json::to_value(&deleted).unwrap(),
    )
    .await;
    assert!(finalizer_patch.to_string().contains("remove"), "finalizer removed: {finalizer_patch}");
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_reconcile_with_an_unchanged_spec_costs_one_secret_read() {
    let (ctx, mut api) = context();
    let mut synced = user(json!({}));
    let secret = keys::key_secret(&synced, "alice-litellm-key", "team-a.alice", "sk-abc");
    synced.status = Some(LiteLLMUserStatus {
        user_id: Some("team-a.alice".into()),
        key_secret_name: Some("alice-litellm-key".into()),
        key_hash: Some(keys::key_hash("sk-abc")),
        observed_generation: Some(1),
        ..Default::default()
    });
    remember_in_sync(&ctx, &synced, "sk-abc");
    let task = tokio::spawn(reconcile(Arc::new(synced), ctx.clone()));
    expect(
        &mut api,
        Method::GET,
        "/api/v1/namespaces/team-a/secrets/alice-litellm-key",
        200,
        serde_json::to_value(&secret).unwrap(),
    )
    .await;
    let action = task.await.unwrap().unwrap();
    assert_ne!(action, Action::await_change(), "it waits for the next resync");
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_deleted_secret_needs_a_full_reconcile() {
    let (ctx, mut api) = context();
    let mut synced = user(json!({}));
    synced.status = Some(LiteLLMUserStatus {
        key_secret_name: Some("alice-litellm-key".into()),
        key_hash: Some(keys::key_hash("sk-abc")),
        ..Default::default()
    });
    remember_in_sync(&ctx, &synced, "sk-abc");
    let task = tokio::spawn(async move { still_in_sync(&synced, &ctx).await });
    expect(&mut api, Method::GET, "/api/v1/namespaces/team-a/secrets/alice-litellm-key", 404, not_found()).await;
    assert_eq!(task.await.unwrap().unwrap(), None, "a missing Secret needs a full reconcile");
}

#[tokio::test]
async fn an_unreachable_proxy_becomes_a_reconciling_condition_with_backoff() {
    let (ctx, mut api) = context();
    let fresh = user(json!({ "maxBudget": 5 }));
    let task = tokio::spawn(reconcile(Arc::new(fresh.clone()), ctx.clone()));
    // A Warning event for the new reason (sent in the background) and the status.
    let path = "/apis/litellm-operator.io/v1alpha1/namespaces/team-a/litellmusers/alice/status";
    let events = "/apis/events.k8s.io/v1/namespaces/team-a/events";
    let answer = serde_json::to_value(&fresh).unwrap();
    let bodies =
        expect_unordered(&mut api, &[(Method::POST, events, json!({})), (Method::PATCH, path, answer.clone())]).await;
    let (event, status) = (&bodies[0], &bodies[1]);
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("LiteLLMUnavailable")));
    let conditions = status["status"]["conditions"].as_array().unwrap().clone();
    let get = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(
        (get("Ready")["status"].as_str(), get("Ready")["reason"].as_str()),
        (Some("False"), Some("LiteLLMUnavailable"))
    );
    assert_eq!(get("Reconciling")["status"], "True");
    assert!(status["status"].get("userId").is_none(), "no claim on a user the operator has not seen");
    let first = task.await.unwrap().unwrap();

    // The same warning again is folded into the first event (a series PATCH), not a new event.
    let again = tokio::spawn(reconcile(Arc::new(fresh.clone()), ctx.clone()));
    let series = format!("{events}/alice.");
    expect_unordered(&mut api, &[(Method::PATCH, &series, json!({})), (Method::PATCH, path, answer)]).await;
    let second = again.await.unwrap().unwrap();
    assert_ne!(first, second, "the retry delay grows");
    no_more_requests(&mut api).await;
}
