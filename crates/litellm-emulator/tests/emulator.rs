//! The emulator's own features, which no real proxy has: injected faults, recorded spend, request counters and
//! the `/emulator/...` endpoints. What the emulator shares with real proxies is checked in `tests/contract.rs`;
//! the operator's client against the emulator is tested in the operator's `tests/emulator_client.rs`.

use std::time::{Duration, Instant};

use litellm_emulator::{Emulator, EmulatorConfig, EmulatorError, Fault, FaultKind, Generation, UsageRecord};
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

        // 1.80.5 has no `user_id` parameter: the master key sees everyone's usage, bob's too.
        let end = if generation == Generation::Newer { "2025-01-31" } else { "2025-01-11" };
        let (status, body) =
            get(&emulator, &format!("/user/daily/activity?start_date=2025-01-01&end_date={end}&user_id=alice")).await;
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

        // Without a user filter the admin sees everyone's usage; 1.80.5 ignores the filter.
        let (_, all) = get(&emulator, "/user/daily/activity?start_date=2025-01-01&end_date=2025-01-31").await;
        assert_eq!(all["metadata"]["total_api_requests"], 5);
        let (_, filtered) =
            get(&emulator, "/user/daily/activity?start_date=2025-01-01&end_date=2025-01-31&user_id=alice").await;
        let expected = if generation == Generation::Newer { 4 } else { 5 };
        assert_eq!(filtered["metadata"]["total_api_requests"], expected, "{generation:?}");
        let (_, info) = get(&emulator, "/user/info?user_id=alice").await;
        assert_eq!(info["user_info"]["spend"], json!(0.26));
    }
}

/// Pages of `/user/daily/activity` are pages of rows (one per user, day, model and key), and their totals are
/// the page's own, as on the real proxies (the contract suite checks the same against them).
#[tokio::test]
async fn daily_activity_pages_rows_and_totals_each_page() {
    let emulator = start(Generation::Newer).await;
    let row = |date: &str, model: &str, spend: f64| UsageRecord {
        user_id: "u".into(),
        date: date.into(),
        model: Some(model.into()),
        spend,
        requests: 1,
        ..UsageRecord::default()
    };
    for record in [row("2025-01-10", "a", 1.0), row("2025-01-12", "a", 2.0), row("2025-01-12", "b", 4.0)] {
        emulator.record_usage(&record).expect("recorded");
    }
    // The same user, day, model and key again adds to its row.
    emulator.record_usage(&row("2025-01-10", "a", 8.0)).expect("recorded");
    let page = |n: u32| {
        let path = format!("/user/daily/activity?start_date=2025-01-01&end_date=2025-01-31&page_size=2&page={n}");
        let emulator = &emulator;
        async move { get(emulator, &path).await.1 }
    };
    let first = page(1).await;
    assert_eq!(first["results"].as_array().map(Vec::len), Some(1), "two rows of one day: {first}");
    assert_eq!(first["metadata"]["total_spend"], json!(6.0));
    assert_eq!((&first["metadata"]["total_pages"], &first["metadata"]["has_more"]), (&json!(2), &json!(true)));
    let second = page(2).await;
    assert_eq!(second["results"][0]["date"], "2025-01-10");
    assert_eq!(second["metadata"]["total_spend"], json!(9.0));
    assert_eq!(second["metadata"]["has_more"], json!(false));
}

/// A key made with a `duration` stops authenticating once the clock passes its expiry: 401 on 1.108.7, 400 on
/// 1.80.5, with type `expired_key`. It stays listed. Older proxies expire it at the next full hour, newer ones an
/// hour after it was made; either way two hours later it is gone.
#[tokio::test]
async fn keys_expire_when_the_clock_passes_their_duration() {
    for (generation, refused) in [(Generation::Newer, 401), (Generation::Older, 400)] {
        let emulator = start(generation).await;
        let client = http(Duration::from_secs(10));
        let key = "sk-expiring-0123456789abcdefghijklmnopqr";
        let body = json!({"user_id": "eve", "key": key, "duration": "1h"});
        let (status, made) = post(&emulator, &client, "/key/generate", body).await.expect("answer");
        assert_eq!(status, 200);
        assert!(made["expires"].is_string(), "{made}");
        let with_key = |client: &reqwest::Client| client.get(format!("{}/key/info", emulator.url())).bearer_auth(key);
        let status = |response: reqwest::Response| response.status().as_u16();
        assert_eq!(with_key(&client).send().await.map(status).expect("answer"), 200, "{generation:?}");

        // Over HTTP, as for the standalone binary; the Rust API does the same (`advance_clock`).
        let (moved, _) =
            post(&emulator, &client, "/emulator/clock", json!({"advance_ms": 2 * 3_600_000})).await.expect("answer");
        assert_eq!(moved, 200);
        let response = with_key(&client).send().await.expect("answer");
        assert_eq!(response.status().as_u16(), refused, "{generation:?}");
        let error: Value = response.json().await.expect("JSON");
        assert_eq!(error["error"]["type"], "expired_key", "{generation:?}");
        assert!(!error.to_string().contains(key), "the key itself is not repeated: {error}");
        let (_, listed) = get(&emulator, "/key/list?user_id=eve").await;
        assert_eq!(listed["total_count"], 1, "an expired key stays listed");

        emulator.reset();
        let again = json!({"user_id": "eve", "key": key, "duration": "1h"});
        post(&emulator, &client, "/key/generate", again).await.expect("answer");
        assert_eq!(with_key(&client).send().await.map(status).expect("answer"), 200, "reset puts the clock back");
    }
}

/// Two `/user/new` for one `user_id`, held and then performed together, both answer 200 and leave one user with
/// the metadata of one of them, as 1.108.7 does under a race; performed one after the other, the second gets 409.
#[tokio::test]
async fn held_requests_are_performed_together() {
    let emulator = start(Generation::Newer).await;
    let client = http(Duration::from_secs(10));
    let create = |user_id: &str, writer: &str| {
        let body = json!({"user_id": user_id, "auto_create_key": false, "metadata": {"writer": writer}});
        let (emulator, client) = (&emulator, &client);
        async move { post(emulator, client, "/user/new", body).await.expect("answer").0 }
    };
    assert_eq!((create("seq", "a").await, create("seq", "b").await), (200, 409));

    emulator.set_fault(Fault::hold(2, Duration::from_secs(30)).on("/user/new"));
    let (a, b) = tokio::join!(create("race", "a"), create("race", "b"));
    assert_eq!((a, b), (200, 200));
    let (_, info) = get(&emulator, "/user/info?user_id=race").await;
    let writer = info["user_info"]["metadata"]["writer"].as_str().unwrap_or_default().to_owned();
    assert!(writer == "a" || writer == "b", "the later write's metadata: {info}");
    let (_, listed) = get(&emulator, "/user/list?user_ids=race,none").await;
    assert_eq!(listed["total"], 1, "one user");
    // The hold was for two requests: the next one is checked as usual.
    assert_eq!(create("race", "c").await, 409);

    // Set over HTTP, with fewer requests than it waits for: after the timeout they go on together all the same.
    let fault = json!({"endpoint": "/user/new", "kind": "hold", "until": 3, "timeout_ms": 300});
    assert_eq!(post(&emulator, &client, "/emulator/faults", fault).await.expect("answer").0, 200);
    let started = Instant::now();
    let (a, b) = tokio::join!(create("slow", "a"), create("slow", "b"));
    assert_eq!((a, b), (200, 200));
    assert!(started.elapsed() >= Duration::from_millis(300), "held until the timeout");
    emulator.clear_faults();
}
