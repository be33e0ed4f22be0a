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
        idle_timeout: litellm_operator::litellm::DEFAULT_IDLE_TIMEOUT,
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
        // One connection reset before the answer: a read is sent again and answered; two in a row are an error.
        emulator.set_fault(Fault::new(FaultKind::Reset));
        assert!(client.user_info("dora").await.expect("answered on the second try").is_none());
        emulator.set_fault(Fault::new(FaultKind::Reset).times(2));
        assert_eq!(client.user_info("dora").await.expect_err("reset").class(), ErrorClass::Transient);

        let wrong = client_for(&emulator, "sk-wrong");
        assert_eq!(wrong.user_info("dora").await.expect_err("401").class(), ErrorClass::Unauthorized);
    }
}

/// The directory snapshot between two full readings of the keys: one page of the newest keys, plus one
/// `/key/list` for each user whose `key_count` no longer adds up.
#[tokio::test]
async fn directory_reads_only_the_newest_keys_and_rereads_users_whose_keys_went() {
    use litellm_operator::reconcile::directory::{Directory, KeyReading};
    let emulator = start(Generation::Newer).await;
    let client = client_for(&emulator, emulator.master_key());
    let mut hashes = Vec::new();
    for i in 0..150 {
        let user_id = format!("u{i}");
        let marked = json!({ "user_id": user_id, "auto_create_key": false,
            "metadata": { "litellm-operator": { "owner": format!("ns/{user_id}") } } });
        client.user_new(&marked).await.expect("created");
        let key = format!("sk-directory-test-key-{i:04}-0123456789abcdefghijklmnop");
        client.key_register(&user_id, &key, &json!({})).await.expect("registered");
        hashes.push(litellm_operator::litellm::key_hash(&key));
    }
    // The emulator's clock moves on below; the operator's does not, so no overlap is needed to tell old from new.
    let directory = Directory::with_key_overlap(Duration::ZERO);
    let lookup = |id: &'static str| directory.lookup(id, None, Duration::from_secs(60));
    let key_lists = |e: &litellm_emulator::Emulator| e.request_counts().get("/key/list").copied().unwrap_or(0);
    // The first snapshot after start-up reads users only: their key counts, no keys.
    let before = key_lists(&emulator);
    directory.refresh(&client, KeyReading::Deferred).await.expect("snapshot");
    assert_eq!(key_lists(&emulator), before, "no key is read");
    let u5 = lookup("u5").await.expect("u5 managed");
    assert_eq!((u5.keys, u5.record.key_count), (None, Some(1)));
    directory.refresh(&client, KeyReading::Every).await.expect("snapshot");
    assert_eq!(lookup("u5").await.expect("u5 managed").keys.expect("read").len(), 1);

    // Later: an admin adds a key for u5 and deletes u7's.
    emulator.advance_clock(Duration::from_secs(600));
    client.key_register("u5", "sk-directory-test-admin-key-0123456789abcdefghij", &json!({})).await.expect("added");
    client.key_delete(&[hashes[7].clone()]).await.expect("deleted");
    let before = key_lists(&emulator);
    directory.refresh(&client, KeyReading::Newest).await.expect("snapshot");
    assert_eq!(key_lists(&emulator) - before, 2, "one page of new keys, and u7's keys read on their own");
    assert_eq!(lookup("u5").await.expect("u5").keys.expect("read").len(), 2, "the new key joins the known one");
    assert!(lookup("u7").await.expect("u7").keys.expect("read").is_empty(), "the deleted key is gone");
    let u9 = lookup("u9").await.expect("u9").keys.expect("read");
    assert_eq!(u9.iter().map(|k| k.token.clone()).collect::<Vec<_>>(), vec![hashes[9].clone()]);

    // A user managed without the operator's mark (adopted as it was) is in the snapshots once looked up.
    client.user_new(&json!({ "user_id": "adopted", "auto_create_key": false })).await.expect("created");
    directory.refresh(&client, KeyReading::Newest).await.expect("snapshot");
    assert!(lookup("adopted").await.is_none(), "unmarked users are not listed unasked");
    directory.refresh(&client, KeyReading::Newest).await.expect("snapshot");
    assert!(lookup("adopted").await.is_some(), "once asked for, it is");
}
