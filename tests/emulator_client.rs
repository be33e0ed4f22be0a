//! The operator's LiteLLM client against the emulator of both generations: it reads both the same way (README,
//! "How it works with both LiteLLM generations") and classifies the emulator's faults as it would a real proxy's.

use std::time::Duration;

use litellm_emulator::{Emulator, EmulatorConfig, Fault, FaultKind, Generation};
use litellm_operator::litellm::{ClientConfig, Created, ErrorClass, LiteLlmClient, MasterKey};
use serde_json::json;

async fn start(generation: Generation) -> Emulator {
    Emulator::start(EmulatorConfig::new(generation)).await.expect("emulator starts")
}

fn client_for(emulator: &Emulator, key: &str) -> LiteLlmClient {
    LiteLlmClient::new(ClientConfig {
        base_url: emulator.url().parse().expect("url"),
        master_key: MasterKey::new(key),
        ca_pem: None,
        timeout: Duration::from_millis(500),
    })
    .expect("client")
}

/// The operator's client reads both generations the same way (README, "How it works with both generations").
#[tokio::test]
async fn operator_client_reads_both_generations() {
    for generation in [Generation::Newer, Generation::Older] {
        let emulator = start(generation).await;
        let client = client_for(&emulator, emulator.master_key());
        let body = json!({"user_id": "dora", "user_email": "dora@example.com", "auto_create_key": false});
        assert!(matches!(client.user_new(&body).await.expect("created"), Created::Created(_)));
        let again = client.user_new(&json!({"user_id": "dora", "auto_create_key": false})).await.expect("answer");
        let conflict = matches!(again, Created::Conflict { .. });
        assert_eq!(conflict, generation == Generation::Newer, "{generation:?}");

        assert!(client.user_info("ghost").await.expect("answer").is_none(), "{generation:?}: 404 and stub alike");
        let key = "sk-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        client.key_register("dora", key, &json!({"key_alias": "dora-main"})).await.expect("registered");
        // Re-registering the same value without an alias is a no-op; the alias would clash.
        client.key_register("dora", key, &json!({})).await.expect("no-op");
        let (user, keys) = client.user_info("dora").await.expect("answer").expect("dora exists");
        assert_eq!(user.user_email.as_deref(), Some("dora@example.com"));
        assert_eq!(keys.len(), 1);
        client.key_delete(&[keys[0].token.clone()]).await.expect("deleted");
        client.key_delete(&[keys[0].token.clone()]).await.expect("already gone is fine");
        assert!(client.user_delete("dora").await.expect("deleted"));
        assert!(!client.user_delete("dora").await.expect("answer"), "already gone");

        emulator.set_fault(Fault::new(FaultKind::Status(503)));
        assert_eq!(client.user_info("dora").await.expect_err("503").class(), ErrorClass::Transient);
        emulator.set_fault(Fault::new(FaultKind::RateLimited { retry_after: Duration::from_secs(3) }));
        let limited = client.user_info("dora").await.expect_err("429");
        assert_eq!((limited.class(), limited.retry_after()), (ErrorClass::Transient, Some(Duration::from_secs(3))));
        emulator.set_fault(Fault::new(FaultKind::Hang));
        assert_eq!(client.user_info("dora").await.expect_err("timeout").class(), ErrorClass::Transient);
        emulator.set_fault(Fault::new(FaultKind::Reset));
        assert_eq!(client.user_info("dora").await.expect_err("reset").class(), ErrorClass::Transient);

        let wrong = client_for(&emulator, "sk-wrong");
        assert_eq!(wrong.user_info("dora").await.expect_err("401").class(), ErrorClass::Unauthorized);
    }
}
