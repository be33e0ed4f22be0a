//! The emulator's own features, which no real proxy has: injected faults, recorded spend, request counters and
//! the `/emulator/...` endpoints. What the emulator shares with real proxies is checked in `tests/contract.rs`;
//! the operator's client against the emulator is tested in the operator's `tests/emulator_client.rs`.

use std::time::{Duration, Instant};

use litellm_emulator::{Emulator, EmulatorConfig, EmulatorError, Fault, FaultKind, Generation};
use serde_json::{Value, json};

async fn start(generation: Generation) -> Emulator {
    Emulator::start(EmulatorConfig::new(generation)).await.expect("emulator starts")
}

fn http(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No pooling: a fault that closes a connection must not leak into the next request's connection.
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(0).build().expect("client")
}

async fn post(emulator: &Emulator, client: &reqwest::Client, path: &str, body: Value) -> reqwest::Result<(u16, Value)> {
    let response =
        client.post(format!("{}{path}", emulator.url())).bearer_auth(emulator.master_key()).json(&body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn get(emulator: &Emulator, path: &str) -> (u16, Value) {
    let response = http(Duration::from_secs(10))
        .get(format!("{}{path}", emulator.url()))
        .bearer_auth(emulator.master_key())
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn user_exists(emulator: &Emulator, user_id: &str) -> bool {
    get(emulator, &format!("/user/info?user_id={user_id}")).await.0 == 200
}

#[tokio::test]
async fn status_and_rate_limit_faults_answer_without_performing() {
    let emulator = start(Generation::Newer).await;
    let client = http(Duration::from_secs(10));
    emulator.set_fault(Fault::new(FaultKind::Status(503)).on("/user/new"));
    let (status, body) = post(&emulator, &client, "/user/new", json!({"user_id": "a"})).await.expect("answer");
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "503");
    assert!(!user_exists(&emulator, "a").await, "a faulted request is not performed");
    // The fault was for one request only.
    assert_eq!(post(&emulator, &client, "/user/new", json!({"user_id": "a"})).await.expect("answer").0, 200);

    emulator.set_fault(Fault::new(FaultKind::RateLimited { retry_after: Duration::from_secs(7) }).times(2));
    for _ in 0..2 {
        let response = client
            .get(format!("{}/user/list", emulator.url()))
            .bearer_auth(emulator.master_key())
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
    }
    assert_eq!(get(&emulator, "/user/list").await.0, 200);
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let emulator = start(Generation::Newer).await;
    emulator.set_fault(Fault::new(FaultKind::Latency(Duration::from_millis(300))).on("/user/list"));
    let started = Instant::now();
    assert_eq!(get(&emulator, "/user/list").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn reset_closes_the_connection_before_the_request_is_performed() {
    let emulator = start(Generation::Newer).await;
    emulator.set_fault(Fault::new(FaultKind::Reset).on("/user/new"));
    let result = post(&emulator, &http(Duration::from_secs(10)), "/user/new", json!({"user_id": "r"})).await;
    assert!(result.is_err(), "no answer expected, got {result:?}");
    assert!(!user_exists(&emulator, "r").await);
}

#[tokio::test]
async fn hang_never_answers_and_performs_nothing() {
    let emulator = start(Generation::Newer).await;
    emulator.set_fault(Fault::new(FaultKind::Hang).on("/user/new"));
    let result = post(&emulator, &http(Duration::from_millis(300)), "/user/new", json!({"user_id": "h"})).await;
    assert!(result.as_ref().is_err_and(reqwest::Error::is_timeout), "a timeout expected, got {result:?}");
    assert!(!user_exists(&emulator, "h").await);
}

#[tokio::test]
async fn lost_response_performs_the_request_but_the_answer_never_arrives() {
    let emulator = start(Generation::Newer).await;
    emulator.set_fault(Fault::new(FaultKind::LostResponse).on("/user/new"));
    let result = post(&emulator, &http(Duration::from_secs(10)), "/user/new", json!({"user_id": "l"})).await;
    assert!(result.is_err(), "no answer expected, got {result:?}");
    assert!(user_exists(&emulator, "l").await, "the user was created all the same");
}

#[tokio::test]
async fn probabilistic_faults_repeat_with_the_same_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let emulator = Emulator::start(EmulatorConfig { seed, ..EmulatorConfig::new(Generation::Newer) })
            .await
            .expect("emulator starts");
        emulator.set_fault(Fault::new(FaultKind::Status(500)).with_probability(0.5));
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(get(&emulator, "/health/readiness").await.0);
        }
        statuses
    }
    let first = pattern(7).await;
    assert_eq!(first, pattern(7).await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn faults_reset_and_stats_over_http_need_the_master_key() {
    let emulator = start(Generation::Older).await;
    let client = http(Duration::from_secs(10));
    let refused = client
        .post(format!("{}/emulator/faults", emulator.url()))
        .json(&json!({"kind": "status", "status": 500}))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 401);

    let fault = json!({"endpoint": "/user/info", "kind": "status", "status": 502, "count": 2});
    let (status, body) = post(&emulator, &client, "/emulator/faults", fault).await.expect("answer");
    assert_eq!((status, body), (200, json!({"faults": 1})));
    let bad = post(&emulator, &client, "/emulator/faults", json!({"kind": "sometimes"})).await.expect("answer");
    assert_eq!(bad.0, 400);
    assert_eq!(get(&emulator, "/user/info?user_id=x").await.0, 502);
    assert_eq!(get(&emulator, "/user/info?user_id=x").await.0, 502);
    assert_eq!(get(&emulator, "/user/info?user_id=x").await.0, 200);

    let (_, stats) = get(&emulator, "/emulator/stats").await;
    assert_eq!(stats["requests"]["/user/info"], 3);
    assert_eq!(stats["generation"], "1.80.5");
    assert_eq!(emulator.request_counts().get("/user/info"), Some(&3));
    // The emulator's own endpoints are not counted.
    assert!(!emulator.request_counts().contains_key("/emulator/stats"));

    post(&emulator, &client, "/user/new", json!({"user_id": "z", "auto_create_key": false})).await.expect("answer");
    assert_eq!(post(&emulator, &client, "/emulator/reset", json!({})).await.expect("answer").0, 200);
    assert!(emulator.request_counts().is_empty());
    let (_, stub) = get(&emulator, "/user/info?user_id=z").await;
    assert!(stub["user_info"].get("user_id").is_none(), "z is gone: {stub}");
}

/// The numbers of BEHAVIOUR.md row 10, where two `LiteLLM_DailyUserSpend` rows were inserted for alice.
#[tokio::test]
async fn recorded_spend_shows_in_daily_activity_and_user_spend() {
    for generation in [Generation::Newer, Generation::Older] {
        let emulator = start(generation).await;
        let client = http(Duration::from_secs(10));
        post(&emulator, &client, "/user/new", json!({"user_id": "alice", "auto_create_key": false})).await.expect("ok");
        emulator.record_spend("alice", "2025-01-10", 0.25, 100, 50, 3).expect("recorded");
        let over_http = json!({"user_id": "alice", "date": "2025-01-11", "spend": 0.01, "prompt_tokens": 10,
                               "completion_tokens": 5, "requests": 1});
        assert_eq!(post(&emulator, &client, "/emulator/spend", over_http).await.expect("answer").0, 200);
        emulator.record_spend("bob", "2025-01-12", 5.0, 1, 1, 1).expect("recorded");
        assert_eq!(
            emulator.record_spend("alice", "2025-02-30", 1.0, 0, 0, 0),
            Err(EmulatorError::InvalidDate("2025-02-30".into()))
        );

        let (status, body) =
            get(&emulator, "/user/daily/activity?start_date=2025-01-01&end_date=2025-01-31&user_id=alice").await;
        assert_eq!(status, 200);
        let dates: Vec<&str> =
            body["results"].as_array().expect("results").iter().filter_map(|d| d["date"].as_str()).collect();
        assert_eq!(dates, ["2025-01-11", "2025-01-10"], "newest first");
        let totals = &body["metadata"];
        assert_eq!(totals["total_spend"], json!(0.26));
        assert_eq!(
            (&totals["total_prompt_tokens"], &totals["total_completion_tokens"], &totals["total_tokens"]),
            (&json!(110), &json!(55), &json!(165))
        );
        assert_eq!((&totals["total_api_requests"], &totals["total_successful_requests"]), (&json!(4), &json!(4)));
        assert_eq!((&totals["total_pages"], &totals["has_more"]), (&json!(1), &json!(false)));
        assert_eq!(body["results"][1]["metrics"]["total_tokens"], 150);

        // Without a user filter the admin sees everyone's usage.
        let (_, all) = get(&emulator, "/user/daily/activity?start_date=2025-01-01&end_date=2025-01-31").await;
        assert_eq!(all["metadata"]["total_api_requests"], 5);
        let (_, info) = get(&emulator, "/user/info?user_id=alice").await;
        assert_eq!(info["user_info"]["spend"], json!(0.26));
    }
}
