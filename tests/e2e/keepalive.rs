//! The operator's LiteLLM client against the real proxy's keep-alive: uvicorn closes a connection idle for 5 s,
//! and a request sent on a connection at the moment it closes is reset. The client keeps idle connections for
//! less than that and sends a request cut off before any answer once more when that cannot act twice; so a
//! thousand calls spaced around the keep-alive timeout meet no transport error at all.
//!
//! It runs alone (`serial_`): forty clients calling `/user/list` are a load of their own, and with one core kept
//! busy they starved the older proxy (1.80.5) until every other test's calls to it timed out.

use std::time::{Duration, Instant};

use litellm_operator::litellm::{ApiError, ClientConfig, DEFAULT_IDLE_TIMEOUT, LiteLlmClient, MasterKey};

use crate::support::env;

const WORKERS: u64 = 40;
const CALLS_PER_WORKER: u64 = 25;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the test bed: run hack/e2e.sh"]
async fn serial_litellm_keep_alive_never_resets_a_call() {
    let client = LiteLlmClient::new(ClientConfig {
        base_url: env("LITELLM_URL").parse().expect("LITELLM_URL"),
        master_key: MasterKey::new(env("LITELLM_MASTER_KEY")),
        ca_pem: None,
        timeout: Duration::from_secs(30),
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
    })
    .expect("client");
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut transport_errors = Vec::new();
                for call in 0..CALLS_PER_WORKER {
                    // The spacing is what is tested: from well below to above the proxy's 5 s, so that calls meet
                    // connections idle for every length of time around it.
                    let spacing_ms = 2_000 + (worker * 7_919 + call * 104_729) % 4_000;
                    tokio::time::sleep(Duration::from_millis(spacing_ms)).await;
                    if let Err(ApiError::Transport { reason, .. }) = client.user_list(1, 1).await {
                        transport_errors.push(reason);
                    }
                }
                transport_errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.expect("worker"));
    }
    println!("{} calls over {:?}, {} transport errors", WORKERS * CALLS_PER_WORKER, started.elapsed(), errors.len());
    assert!(errors.is_empty(), "transport errors: {errors:?}");
}
