//! The reconciler against a mocked Kubernetes API server: each test scripts the exact requests the reconciler
//! must make, in order, and fails on any other. LiteLLM points at a closed port, so any proxy call fails; these
//! paths either need no proxy or show what its absence does.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Client, Resource, client::Body, core::PartialObjectMeta, runtime::watcher};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;
use crate::litellm::{ClientConfig, LiteLlmClient, MasterKey};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/litellm-system/leases";
const USER_PATH: &str = "/apis/litellm-operator.io/v1alpha1/namespaces/team-a/litellmusers/alice";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// A context whose Secret cache holds `secrets`.
fn context_with(secrets: &[Secret]) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let litellm = LiteLlmClient::new(ClientConfig {
        base_url: "http://127.0.0.1:9/".parse().unwrap(),
        master_key: MasterKey::new("sk-test"),
        ca_pem: None,
        timeout: Duration::from_millis(200),
        idle_timeout: crate::litellm::DEFAULT_IDLE_TIMEOUT,
    })
    .unwrap();
    let index = Arc::new(SecretIndex::default());
    index.apply(&watcher::Event::Init);
    for secret in secrets {
        let meta = PartialObjectMeta::<Secret> { metadata: secret.metadata.clone(), ..Default::default() };
        index.apply(&watcher::Event::InitApply(meta));
    }
    index.apply(&watcher::Event::InitDone);
    let proxy = Proxy::idle(
        crate::proxies::FLAGS_PROXY,
        litellm,
        claim::Claims::new(client.clone(), "litellm-system", "default"),
        crate::crd::ProxyPolicy::default(),
    );
    let ctx = Context::new(
        client.clone(),
        Arc::new(Registry::new(Some(proxy))),
        events::Events::new(client, FIELD_MANAGER, None),
        Settings::default(),
        Arc::new(Metrics::default()),
        vec![index],
    );
    (Arc::new(ctx), handle)
}

fn context() -> (Arc<Context>, ApiHandle) {
    context_with(&[])
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
    assert!(
        request.method() == method && request.uri().path().starts_with(path),
        "expected {method} {path}, got {} {}",
        request.method(),
        request.uri()
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap(),
    );
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Answers the next requests, in whatever order they come (events are sent in the background), and returns
/// each body in the order of `wanted`.
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

fn not_found() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" })
}

fn already_exists() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists" })
}

fn lease(holder: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "x", "namespace": "litellm-system", "resourceVersion": "7",
                      "annotations": { "litellm-operator.io/holder-uid": uid } },
        "spec": { "holderIdentity": holder },
    })
}

fn ready_condition(status: &Value) -> (String, String) {
    let conditions = status["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
    (ready["status"].as_str().unwrap_or_default().into(), ready["reason"].as_str().unwrap_or_default().into())
}

#[tokio::test]
async fn a_new_resource_gets_the_finalizer_then_claims_its_user_id_before_calling_the_proxy() {
    let (ctx, mut api) = context();
    let mut fresh = user(json!({}));
    fresh.meta_mut().finalizers = None;
    let task = tokio::spawn(reconcile(Arc::new(fresh.clone()), ctx));
    let patch = expect(&mut api, Method::PATCH, USER_PATH, 200, serde_json::to_value(&fresh).unwrap()).await;
    assert!(patch.to_string().contains(FINALIZER), "{patch}");
    // Just patched, so known to exist as it is; brand new, so the claim is created without reading it first.
    let claim = expect(&mut api, Method::POST, LEASES, 201, lease("team-a/alice", "uid-1")).await;
    assert_eq!(claim["spec"]["holderIdentity"], "team-a/alice");
    assert_eq!(claim["metadata"]["annotations"]["litellm-operator.io/user-id"], "team-a.alice");
    // Then the proxy, unreachable here: a Warning and a status.
    let status_path = format!("{USER_PATH}/status");
    let bodies = expect_unordered(
        &mut api,
        &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, serde_json::to_value(&fresh).unwrap())],
    )
    .await;
    assert_eq!(ready_condition(&bodies[1]), ("False".into(), "LiteLLMUnavailable".into()));
    assert_eq!(bodies[1]["status"]["observedGeneration"], 1);
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_user_id_claimed_by_a_live_resource_is_left_alone() {
    let (ctx, mut api) = context();
    let contender = user(json!({ "userId": "team-a.shared" }));
    let task = tokio::spawn(reconcile(Arc::new(contender.clone()), ctx));
    expect(&mut api, Method::GET, USER_PATH, 200, serde_json::to_value(&contender).unwrap()).await;
    expect(&mut api, Method::POST, LEASES, 409, already_exists()).await;
    expect(&mut api, Method::GET, LEASES, 200, lease("team-b/bob", "uid-2")).await;
    let mut bob = user(json!({}));
    bob.metadata.uid = Some("uid-2".into());
    expect(
        &mut api,
        Method::GET,
        "/apis/litellm-operator.io/v1alpha1/namespaces/team-b/litellmusers/bob",
        200,
        serde_json::to_value(&bob).unwrap(),
    )
    .await;
    let status_path = format!("{USER_PATH}/status");
    let bodies = expect_unordered(
        &mut api,
        &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, serde_json::to_value(&contender).unwrap())],
    )
    .await;
    assert_eq!(ready_condition(&bodies[1]), ("False".into(), "OwnedByAnotherResource".into()));
    assert!(bodies[1]["status"].get("userId").is_none(), "the loser never records the user as its own");
    assert!(bodies[0]["note"].as_str().unwrap_or_default().contains("team-b/bob"), "{}", bodies[0]);
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_claim_whose_holder_is_gone_is_taken_over_with_its_resource_version() {
    let (ctx, mut api) = context();
    let task = tokio::spawn(reconcile(Arc::new(user(json!({ "userId": "team-a.shared" }))), ctx));
    expect(&mut api, Method::GET, USER_PATH, 200, serde_json::to_value(user(json!({}))).unwrap()).await;
    expect(&mut api, Method::POST, LEASES, 409, already_exists()).await;
    expect(&mut api, Method::GET, LEASES, 200, lease("team-b/bob", "uid-2")).await;
    expect(
        &mut api,
        Method::GET,
        "/apis/litellm-operator.io/v1alpha1/namespaces/team-b/litellmusers/bob",
        404,
        not_found(),
    )
    .await;
    let replaced = expect(&mut api, Method::PUT, LEASES, 200, lease("team-a/alice", "uid-1")).await;
    assert_eq!(replaced["metadata"]["resourceVersion"], "7", "only one writer can win the take-over");
    assert_eq!(replaced["spec"]["holderIdentity"], "team-a/alice");
    let status_path = format!("{USER_PATH}/status");
    let answer = serde_json::to_value(user(json!({}))).unwrap();
    expect_unordered(&mut api, &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, answer)]).await;
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn retain_releases_the_secret_and_the_claim_and_never_calls_the_proxy() {
    let (ctx, mut api) = context();
    let mut deleted = user(json!({ "deletionPolicy": "Retain" }));
    deleted.meta_mut().deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    deleted.status =
        Some(LiteLLMUserStatus { key_secret_name: Some("alice-litellm-key".into()), ..Default::default() });
    let secret = keys::key_secret(&deleted, "alice-litellm-key", "team-a.alice", None, None);
    let task = tokio::spawn(reconcile(Arc::new(deleted.clone()), ctx));
    let secret_path = "/api/v1/namespaces/team-a/secrets/alice-litellm-key";
    expect(&mut api, Method::GET, secret_path, 200, serde_json::to_value(&secret).unwrap()).await;
    let released = expect(&mut api, Method::PATCH, secret_path, 200, serde_json::to_value(&secret).unwrap()).await;
    assert_eq!(released["metadata"]["ownerReferences"], json!([]), "owner reference removed: {released}");
    expect(&mut api, Method::GET, LEASES, 200, lease("team-a/alice", "uid-1")).await;
    expect(&mut api, Method::DELETE, LEASES, 200, json!({})).await;
    let finalizer_patch =
        expect(&mut api, Method::PATCH, USER_PATH, 200, serde_json::to_value(&deleted).unwrap()).await;
    assert!(finalizer_patch.to_string().contains("remove"), "finalizer removed: {finalizer_patch}");
    task.await.unwrap().unwrap();
    no_more_requests(&mut api).await;
}

/// A resource as it is once found in sync at generation 1, and its Secret at the version the status records.
fn synced() -> (LiteLLMUser, Secret) {
    let mut synced = user(json!({}));
    let key = FreshKey::generate().unwrap();
    let mut secret = keys::key_secret(&synced, "alice-litellm-key", "team-a.alice", Some(&key), None);
    secret.metadata.resource_version = Some("55".into());
    let outcome = Outcome::Ready;
    synced.status = Some(LiteLLMUserStatus {
        user_id: Some("team-a.alice".into()),
        key_secret_name: Some("alice-litellm-key".into()),
        key_hash: Some(key.hash().into()),
        key_secret_version: Some("55".into()),
        observed_generation: Some(1),
        synced_generation: Some(1),
        conditions: conditions::conditions(&[], &outcome, &Extras::default(), Some(1), Timestamp::now()),
        ..Default::default()
    });
    (synced, secret)
}

#[tokio::test]
async fn a_reconcile_that_finds_nothing_to_do_makes_no_request_at_all() {
    let (synced, secret) = synced();
    let (ctx, mut api) = context_with(&[secret]);
    ctx.remember_in_sync(&synced, synced.status.as_ref(), None);
    let action = reconcile(Arc::new(synced), ctx.clone()).await.unwrap();
    assert_ne!(action, Action::await_change(), "it waits for the next resync");
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_secret_changed_by_someone_is_looked_at() {
    let (synced, mut secret) = synced();
    secret.metadata.resource_version = Some("56".into());
    let (ctx, mut api) = context_with(&[secret.clone()]);
    ctx.remember_in_sync(&synced, synced.status.as_ref(), None);
    let task = tokio::spawn(reconcile(Arc::new(synced), ctx.clone()));
    // The proxy is unreachable, so the look ends there; what matters is that it happens.
    let status_path = format!("{USER_PATH}/status");
    let answer = serde_json::to_value(user(json!({}))).unwrap();
    let bodies =
        expect_unordered(&mut api, &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, answer)]).await;
    assert_eq!(ready_condition(&bodies[1]), ("False".into(), "LiteLLMUnavailable".into()));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreachable_proxy_becomes_a_reconciling_condition_with_backoff() {
    let (ctx, mut api) = context();
    let mut claimed = user(json!({ "maxBudget": 5 }));
    claimed.status = Some(LiteLLMUserStatus { user_id: Some("team-a.alice".into()), ..Default::default() });
    let task = tokio::spawn(reconcile(Arc::new(claimed.clone()), ctx.clone()));
    let status_path = format!("{USER_PATH}/status");
    let answer = serde_json::to_value(&claimed).unwrap();
    let bodies =
        expect_unordered(&mut api, &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, answer.clone())])
            .await;
    let (event, status) = (&bodies[0], &bodies[1]);
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("LiteLLMUnavailable")));
    assert_eq!(ready_condition(status), ("False".into(), "LiteLLMUnavailable".into()));
    let first = task.await.unwrap().unwrap();

    // Again, as the status now says: no second Warning for the same reason, and a longer wait.
    claimed.status = serde_json::from_value(status["status"].clone()).unwrap();
    let second = reconcile(Arc::new(claimed), ctx.clone()).await.unwrap();
    assert_ne!(first, second, "the retry delay grows");
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_deletion_the_proxy_blocks_says_so() {
    let (ctx, mut api) = context();
    let mut deleted = user(json!({}));
    deleted.meta_mut().deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    deleted.status = Some(LiteLLMUserStatus { user_id: Some("team-a.alice".into()), ..Default::default() });
    let task = tokio::spawn(reconcile(Arc::new(deleted.clone()), ctx));
    let status_path = format!("{USER_PATH}/status");
    let answer = serde_json::to_value(&deleted).unwrap();
    let bodies =
        expect_unordered(&mut api, &[(Method::POST, EVENTS, json!({})), (Method::PATCH, &status_path, answer)]).await;
    assert_eq!(bodies[0]["reason"], "DeletionBlocked");
    assert_eq!(ready_condition(&bodies[1]), ("False".into(), "DeletionBlocked".into()));
    let message = bodies[1]["status"]["conditions"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("deletionPolicy to Retain"), "{message}");
    assert!(task.await.unwrap().is_err(), "the finalizer stays");
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_deletion_waits_out_an_unanswered_creation_and_is_tried_again_when_the_wait_is_over() {
    let (ctx, _api) = context();
    let alice = user(json!({}));
    assert_eq!(ctx.creation_may_land(&alice), None, "nothing to wait for");
    ctx.creation_unanswered(&alice);
    let left = ctx.creation_may_land(&alice).expect("a creation that may still land");
    assert!(left > UNANSWERED_CREATE_WINDOW - Duration::from_secs(5) && left <= UNANSWERED_CREATE_WINDOW);
    let waiting = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(Error::CreationMayLand(left))));
    assert_eq!(error_policy(Arc::new(alice.clone()), &waiting, ctx.clone()), Action::requeue(left), "no backoff");
    ctx.forget(&alice);
    assert_eq!(ctx.creation_may_land(&alice), None, "a finished deletion forgets it");
}

#[test]
fn a_lease_parses_as_a_claim() {
    let lease: Lease = serde_json::from_value(lease("a/b", "u")).unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("a/b"));
}

#[tokio::test]
async fn nothing_is_claimed_for_a_resource_that_is_already_gone() {
    let (ctx, mut api) = context();
    let task = tokio::spawn(reconcile(Arc::new(user(json!({}))), ctx));
    // The cache still shows it; the API server no longer has it.
    expect(&mut api, Method::GET, USER_PATH, 404, not_found()).await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn the_echo_of_the_operators_own_status_write_waits_for_the_cache_to_catch_up() {
    let (synced, secret) = synced();
    let (ctx, mut api) = context_with(&[secret]);
    ctx.remember_in_sync(&synced, synced.status.as_ref(), None);
    // The watch brings an event for the resource before it brings the operator's status write.
    let mut stale = synced.clone();
    stale.status = Some(LiteLLMUserStatus { user_id: Some("team-a.alice".into()), ..Default::default() });
    let action = reconcile(Arc::new(stale), ctx.clone()).await.unwrap();
    assert_ne!(action, Action::await_change());
    no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_secret_the_operator_has_just_written_is_trusted_before_the_cache_has_it() {
    let (synced, _) = synced();
    let (ctx, mut api) = context_with(&[]);
    ctx.remember_in_sync(&synced, synced.status.as_ref(), Some("55"));
    let action = reconcile(Arc::new(synced.clone()), ctx.clone()).await.unwrap();
    assert_ne!(action, Action::await_change());
    no_more_requests(&mut api).await;

    // Without that memory, a Secret missing from the cache is looked at.
    let (ctx, mut api) = context_with(&[]);
    ctx.remember_in_sync(&synced, synced.status.as_ref(), None);
    let task = tokio::spawn(reconcile(Arc::new(synced), ctx.clone()));
    let next = tokio::time::timeout(Duration::from_secs(5), api.next_request()).await;
    assert!(next.is_ok_and(|request| request.is_some()), "it looks at the world again");
    task.abort();
}
