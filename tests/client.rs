//! The LiteLLM client against a local HTTP server that answers as the real proxies do (bodies from
//! shared/testbed/litellm/BEHAVIOUR.md), so the client's own parsing and error mapping are what is tested.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use litellm_operator::litellm::{ApiError, ClientConfig, Created, ErrorClass, LiteLlmClient, MasterKey};
use serde_json::{Value, json};

const MASTER_KEY: &str = "sk-test-master";

#[derive(Default)]
struct Seen {
    requests: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Seen>>;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {MASTER_KEY}"))
}

fn unauthorized() -> Response {
    let body = json!({"error": {"message": "Authentication Error, Invalid proxy server token passed. Received API Key = sk-...rong",
                                "type": "token_not_found_in_db", "param": "key", "code": "401"}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

async fn user_info(headers: HeaderMap, Query(q): Query<Vec<(String, String)>>) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let id = q.iter().find(|(k, _)| k == "user_id").map(|(_, v)| v.clone()).unwrap_or_default();
    match id.as_str() {
        "alice+1@x" => Json(json!({"user_id": id, "user_info": {"user_id": id, "max_budget": 10, "spend": 0.5,
            "teams": null, "metadata": {"litellm-operator": {"owner": "ns/alice"}}, "tpm_limit": 5.0},
            "keys": [{"token": "abc", "key_alias": null}], "teams": []}))
        .into_response(),
        "old-ghost" => Json(json!({"user_id": id, "user_info": {"spend": 0}, "keys": [], "teams": []})).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(json!({})).into_response()
        }
        "busy" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down").into_response(),
        "broken" => (StatusCode::OK, "not json").into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("User {id} not found"), "type": "internal_server_error", "param": null, "code": "404"}})),
        )
            .into_response(),
    }
}

async fn user_new(State(seen): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    seen.lock().unwrap().requests.push(("/user/new".into(), body.clone()));
    match body["user_id"].as_str() {
        Some("taken") => (
            StatusCode::CONFLICT,
            Json(json!({"error": {"message": "{'error': 'User with id taken already exists'}", "type": "internal_server_error", "param": "None", "code": "409"}})),
        )
            .into_response(),
        Some("bad-role") => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": [{"type": "literal_error", "loc": ["body", "user_role"], "msg": "Input should be 'proxy_admin'"}]})),
        )
            .into_response(),
        _ => Json(json!({"user_id": body["user_id"], "key": ""})).into_response(),
    }
}

async fn user_delete(Json(body): Json<Value>) -> Response {
    if body["user_ids"][0] == "gone" {
        return (StatusCode::NOT_FOUND, Json(json!({"detail": {"error": "User not found, passed user_id=gone"}})))
            .into_response();
    }
    Json(json!(1)).into_response()
}

async fn key_delete() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": {"message": "{'error': 'No keys found'}", "code": "404"}})))
        .into_response()
}

async fn key_generate(State(seen): State<Shared>, Json(body): Json<Value>) -> Response {
    seen.lock().unwrap().requests.push(("/key/generate".into(), body));
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

async fn start() -> (LiteLlmClient, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/user/info", get(user_info))
        .route("/user/new", post(user_new))
        .route("/user/delete", post(user_delete))
        .route("/key/delete", post(key_delete))
        .route("/key/generate", post(key_generate))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (client(&format!("http://{addr}/"), MASTER_KEY), seen)
}

fn client(url: &str, key: &str) -> LiteLlmClient {
    LiteLlmClient::new(ClientConfig {
        base_url: url.parse().unwrap(),
        master_key: MasterKey::new(key),
        ca_pem: None,
        timeout: Duration::from_secs(1),
        idle_timeout: litellm_operator::litellm::DEFAULT_IDLE_TIMEOUT,
    })
    .unwrap()
}

#[tokio::test]
async fn reads_a_user_and_encodes_the_id() {
    let (client, _) = start().await;
    let (user, keys) = client.user_info("alice+1@x").await.unwrap().expect("user");
    assert_eq!(user.max_budget, Some(10.0));
    assert_eq!(user.tpm_limit, Some(5));
    assert!(user.teams.is_empty());
    assert_eq!(keys[0].token, "abc");
}

#[tokio::test]
async fn both_generations_of_no_such_user_read_as_none() {
    let (client, _) = start().await;
    assert!(client.user_info("new-ghost").await.unwrap().is_none(), "404 of newer proxies");
    assert!(client.user_info("old-ghost").await.unwrap().is_none(), "200 stub of older proxies");
}

#[tokio::test]
async fn create_reports_conflicts_and_refusals() {
    let (client, seen) = start().await;
    assert!(matches!(client.user_new(&json!({"user_id": "fresh"})).await.unwrap(), Created::Created(_)));
    let taken = client.user_new(&json!({"user_id": "taken"})).await.unwrap();
    assert!(matches!(taken, Created::Conflict { ref message } if !message.is_empty()), "{taken:?}");
    let err = client.user_new(&json!({"user_id": "bad-role"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Rejected);
    assert!(err.to_string().contains("body.user_role: Input should be"), "{err}");
    assert_eq!(seen.lock().unwrap().requests.len(), 3);
}

#[tokio::test]
async fn deletes_treat_missing_as_done() {
    let (client, _) = start().await;
    assert!(client.user_delete("someone").await.unwrap());
    assert!(!client.user_delete("gone").await.unwrap());
    client.key_delete(&["deadbeef".into()]).await.expect("404 on key delete is success");
}

#[tokio::test]
async fn transient_failures_are_classified_and_carry_retry_after() {
    let (client, seen) = start().await;
    let busy = client.user_info("busy").await.unwrap_err();
    assert_eq!(busy.class(), ErrorClass::Transient);
    assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
    let slow = client.user_info("slow").await.unwrap_err();
    assert!(matches!(slow, ApiError::Transport { .. }) && slow.to_string().contains("timed out"), "{slow}");
    let broken = client.user_info("broken").await.unwrap_err();
    assert!(matches!(broken, ApiError::Decode { .. }));
    let failed = client.key_register("u", "sk-secret-value-123", &json!({})).await.unwrap_err();
    assert_eq!(failed.status(), Some(500));
    assert!(!failed.to_string().contains("sk-secret-value-123"));
    assert_eq!(seen.lock().unwrap().requests[0].1["key"], "sk-secret-value-123", "the key is sent in the body");
    let refused = self::client("http://127.0.0.1:9/", MASTER_KEY).user_info("x").await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_wrong_master_key_is_unauthorized_and_never_echoed() {
    let (good, _) = start().await;
    let debug = format!("{good:?}");
    assert!(!debug.contains(MASTER_KEY), "the client's Debug must hide the key: {debug}");
    let seen: Shared = Arc::default();
    let app = Router::new().route("/user/info", get(user_info)).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = client(&format!("http://127.0.0.1:{port}"), "sk-wrong").user_info("alice+1@x").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unauthorized);
    assert!(!err.to_string().contains("rong"), "{err}");
}

/// A server that closes each of its first `cut` connections as soon as it has read a request, without answering
/// (as a proxy closing an idle connection at the moment a request arrives), and answers `{}` on the others.
/// Returns its URL and how many requests it has read.
async fn cutting_server(cut: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut read = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.read(&mut buf).await {
                read.extend_from_slice(&buf[..n]);
                if n == 0 || whole_request(&read) {
                    break;
                }
            }
            if count.fetch_add(1, Ordering::SeqCst) < cut {
                continue; // dropped unanswered
            }
            let answer =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (format!("http://{addr}/"), requests)
}

/// Whether `read` holds a request's head and as much body as its `content-length` says.
fn whole_request(read: &[u8]) -> bool {
    let text = String::from_utf8_lossy(read).to_lowercase();
    let Some(end) = text.find("\r\n\r\n") else { return false };
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    read.len() >= end + 4 + length
}

#[tokio::test]
async fn a_request_cut_off_before_any_answer_is_sent_again_only_when_that_cannot_act_twice() {
    use std::sync::atomic::Ordering;
    // A read, an update and a key registration are sent again once, and succeed.
    let (url, requests) = cutting_server(1).await;
    let reader = client(&url, MASTER_KEY);
    assert!(reader.user_info("ghost").await.expect("read on the second try").is_none());
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    let (url, requests) = cutting_server(1).await;
    client(&url, MASTER_KEY).key_register("u", "sk-abc", &json!({})).await.expect("registered on the second try");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // Creating a user is not: the first request may have created it, and a second would answer 409 for it.
    let (url, requests) = cutting_server(1).await;
    let err = client(&url, MASTER_KEY).user_new(&json!({"user_id": "fresh"})).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
    // Only once: a proxy that keeps cutting is an error, after two requests.
    let (url, requests) = cutting_server(usize::MAX).await;
    assert!(client(&url, MASTER_KEY).user_info("ghost").await.is_err());
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}
