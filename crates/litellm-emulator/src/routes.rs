//! The HTTP surface: LiteLLM's routes, the fault and counting layer in front of them, and `/emulator/...`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{MatchedPath, RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    FaultKind, Generation, Shared, UsageRecord,
    faults::FaultRequest,
    reply::Reply,
    server::ConnectionKill,
    store::{Access, Caller, RaceView, Store},
};

type App = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let litellm = Router::new()
        .route("/user/new", post(user_new))
        .route("/user/info", get(user_info))
        .route("/user/update", post(user_update))
        .route("/user/delete", post(user_delete))
        .route("/user/list", get(user_list))
        .route("/user/daily/activity", get(daily_activity))
        .route("/key/generate", post(key_generate))
        .route("/key/update", post(key_update))
        .route("/key/delete", post(key_delete))
        .route("/key/info", get(key_info))
        .route("/key/list", get(key_list))
        .route("/team/new", post(team_new))
        .route("/team/member_add", post(team_member_add))
        .route("/team/member_delete", post(team_member_delete))
        .route("/team/delete", post(team_delete))
        .route("/health/readiness", get(readiness))
        .route("/health/liveliness", get(liveliness))
        // route_layer: only matched routes are counted and faulted, and the matched path names the endpoint.
        .route_layer(middleware::from_fn_with_state(shared.clone(), faults_and_counts));
    let own = Router::new()
        .route("/emulator/faults", post(add_fault).delete(clear_faults))
        .route("/emulator/spend", post(record_spend))
        .route("/emulator/clock", post(advance_clock))
        .route("/emulator/reset", post(reset))
        .route("/emulator/stats", get(stats));
    litellm.merge(own).fallback(not_found).with_state(shared)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Put into the extensions of the requests a hold released together: what they check for duplicates against.
#[derive(Clone, Debug)]
struct Batch(Arc<RaceView>);

/// Counts the request, then applies whatever fault fires for it.
async fn faults_and_counts(State(shared): App, mut request: Request, next: Next) -> Response {
    let endpoint = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => request.uri().path().to_owned(),
    };
    shared.count(&endpoint);
    let decision = shared.faults().decide(&endpoint);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let kill = request.extensions().get::<ConnectionKill>().cloned();
    let param = shared.generation.param();
    match decision.action {
        None | Some(FaultKind::Latency(_)) => next.run(request).await,
        Some(FaultKind::Status(status)) => {
            let message = format!("Emulated fault: HTTP {status}");
            Reply::envelope(status, message, "internal_server_error", param).into_response()
        }
        Some(FaultKind::RateLimited { retry_after }) => {
            let seconds = retry_after.as_secs_f64().ceil() as u64;
            let mut reply = Reply::envelope(429, "Emulated fault: rate limited", "rate_limit_error", param);
            reply.retry_after = Some(seconds);
            reply.into_response()
        }
        Some(FaultKind::Reset) => close_without_answer(kill).await,
        Some(FaultKind::Hang) => std::future::pending().await,
        Some(FaultKind::Hold { timeout, .. }) => {
            if let Some(gate) = decision.gate {
                // The view is taken by the request that releases the batch, before any request of it goes on.
                if let Some(view) = gate.arrive(timeout, || shared.store().race_view()).await {
                    request.extensions_mut().insert(Batch(view));
                }
            }
            next.run(request).await
        }
        Some(FaultKind::LostResponse) => {
            // Perform the request, then throw its answer away with the connection.
            drop(next.run(request).await);
            close_without_answer(kill).await
        }
    }
}

/// Asks the connection task to drop the connection, which also drops this future. A router used without the
/// emulator's server has no connection to drop; the request then hangs instead.
async fn close_without_answer(kill: Option<ConnectionKill>) -> Response {
    if let Some(kill) = kill {
        kill.close();
    }
    std::future::pending().await
}

/// Runs `operation` for an authorised caller, holding the store's lock (never across an await).
fn call(
    shared: &Shared,
    route: &str,
    headers: &HeaderMap,
    access: Access,
    operation: impl FnOnce(&mut Store, &Caller) -> Reply,
) -> Reply {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let mut store = shared.store();
    match store.authorize(authorization, route, access) {
        Ok(caller) => operation(&mut store, &caller),
        Err(reply) => reply,
    }
}

fn query_map(query: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect()
}

async fn user_new(State(shared): App, batch: Option<Extension<Batch>>, headers: HeaderMap, body: Bytes) -> Reply {
    let race = batch.as_ref().map(|Extension(Batch(view))| view.as_ref());
    call(&shared, "/user/new", &headers, Access::Admin, |store, _| store.user_new(&body, race))
}

async fn user_info(State(shared): App, headers: HeaderMap, RawQuery(query): RawQuery) -> Reply {
    call(&shared, "/user/info", &headers, Access::Admin, |store, _| store.user_info(&query_map(query)))
}

async fn user_update(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/user/update", &headers, Access::Admin, |store, _| store.user_update(&body))
}

async fn user_delete(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/user/delete", &headers, Access::Admin, |store, _| store.user_delete(&body))
}

async fn user_list(State(shared): App, headers: HeaderMap, RawQuery(query): RawQuery) -> Reply {
    call(&shared, "/user/list", &headers, Access::Admin, |store, _| store.user_list(&query_map(query)))
}

async fn daily_activity(State(shared): App, headers: HeaderMap, RawQuery(query): RawQuery) -> Reply {
    let route = "/user/daily/activity";
    call(&shared, route, &headers, Access::Admin, |store, _| store.daily_activity(&query_map(query)))
}

async fn key_generate(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/key/generate", &headers, Access::Admin, |store, _| store.key_generate(&body))
}

async fn key_update(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/key/update", &headers, Access::Admin, |store, _| store.key_update(&body))
}

async fn key_list(State(shared): App, headers: HeaderMap, RawQuery(query): RawQuery) -> Reply {
    call(&shared, "/key/list", &headers, Access::Admin, |store, _| store.key_list(&query_map(query)))
}

async fn key_delete(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/key/delete", &headers, Access::Admin, |store, _| store.key_delete(&body))
}

async fn key_info(State(shared): App, headers: HeaderMap, RawQuery(query): RawQuery) -> Reply {
    call(&shared, "/key/info", &headers, Access::AnyKey, |store, caller| store.key_info(caller, &query_map(query)))
}

async fn team_new(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/team/new", &headers, Access::Admin, |store, _| store.team_new(&body))
}

async fn team_member_add(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/team/member_add", &headers, Access::Admin, |store, _| store.team_member_add(&body))
}

async fn team_member_delete(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/team/member_delete", &headers, Access::Admin, |store, _| store.team_member_delete(&body))
}

async fn team_delete(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    call(&shared, "/team/delete", &headers, Access::Admin, |store, _| store.team_delete(&body))
}

/// Unauthenticated, like the real probe.
async fn readiness(State(shared): App) -> Reply {
    Reply::ok(match shared.generation {
        Generation::Newer => json!({ "status": "healthy", "db": "connected" }),
        Generation::Older => json!({
            "status": "connected", "db": "connected", "cache": null, "litellm_version": "1.80.5",
            "success_callbacks": [], "license": { "has_license": false, "expiration_date": null },
        }),
    })
}

async fn liveliness() -> Reply {
    Reply::ok(json!("I'm alive!"))
}

async fn not_found() -> Reply {
    Reply { status: 404, body: json!({ "detail": "Not Found" }), retry_after: None }
}

// ---------- the emulator's own API (master key only) ----------

/// Runs `operation` if the request carries the master key.
fn admin_only(shared: &Shared, route: &str, headers: &HeaderMap, operation: impl FnOnce() -> Reply) -> Reply {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    // The store's lock ends with this statement: `operation` may take it again.
    let refused = shared.store().authorize(authorization, route, Access::Admin).err();
    refused.unwrap_or_else(operation)
}

async fn add_fault(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    admin_only(&shared, "/emulator/faults", &headers, || {
        let fault = serde_json::from_slice::<FaultRequest>(&body)
            .map_err(|err| err.to_string())
            .and_then(FaultRequest::into_fault);
        match fault {
            Ok(fault) => {
                let mut faults = shared.faults();
                faults.add(fault);
                Reply::ok(json!({ "faults": faults.len() }))
            }
            Err(message) => Reply::detail(400, message),
        }
    })
}

async fn clear_faults(State(shared): App, headers: HeaderMap) -> Reply {
    admin_only(&shared, "/emulator/faults", &headers, || {
        shared.faults().clear();
        Reply::ok(json!({ "faults": 0 }))
    })
}

/// `POST /emulator/spend` body: a [`UsageRecord`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendRequest {
    user_id: String,
    date: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    spend: f64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    requests: u64,
}

async fn record_spend(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    admin_only(&shared, "/emulator/spend", &headers, || {
        let request = match serde_json::from_slice::<SpendRequest>(&body) {
            Ok(request) => request,
            Err(err) => return Reply::detail(400, err.to_string()),
        };
        let SpendRequest { user_id, date, model, api_key, spend, prompt_tokens, completion_tokens, requests } = request;
        let record = UsageRecord { user_id, date, model, api_key, spend, prompt_tokens, completion_tokens, requests };
        match shared.store().record_usage(&record) {
            Ok(()) => Reply::ok(json!({ "recorded": true })),
            Err(err) => Reply::detail(400, err.to_string()),
        }
    })
}

/// `POST /emulator/clock` body: how far to move the clock forward.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_ms: u64,
}

async fn advance_clock(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    admin_only(&shared, "/emulator/clock", &headers, || match serde_json::from_slice::<ClockRequest>(&body) {
        Ok(request) => {
            shared.store().advance_clock(std::time::Duration::from_millis(request.advance_ms));
            Reply::ok(json!({ "advanced_ms": request.advance_ms }))
        }
        Err(err) => Reply::detail(400, err.to_string()),
    })
}

async fn reset(State(shared): App, headers: HeaderMap) -> Reply {
    admin_only(&shared, "/emulator/reset", &headers, || {
        shared.store().clear();
        shared.faults().clear();
        super::lock(&shared.counts).clear();
        Reply::ok(json!({ "reset": true }))
    })
}

async fn stats(State(shared): App, headers: HeaderMap) -> Reply {
    admin_only(&shared, "/emulator/stats", &headers, || {
        let counts = super::lock(&shared.counts).clone();
        Reply::ok(json!({ "generation": shared.generation.version(), "requests": counts }))
    })
}
