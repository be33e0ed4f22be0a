//! A panic in one reconcile fails that reconcile, never the process: whatever a resource holds, and whatever bug
//! it meets, the other resources go on being served. The panic is logged (redacted, like every log line),
//! counted, and the resource retried with backoff like any other failure.

use std::{any::Any, future::Future, panic::AssertUnwindSafe};

use futures::FutureExt;

use crate::{litellm::redact_keys, text::bounded_chars};

/// A reconcile that panicked, with the panic's message (redacted and bounded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the reconcile panicked (a bug in the operator; please report it): {0}")]
pub struct Panicked(pub String);

/// Runs `work`, turning a panic inside it into [`Panicked`].
///
/// Unwind safety: what a reconcile shares with others lives behind locks whose poisoning the operator already
/// tolerates (it takes the inner value), in atomics, or in the API server and the proxy, whose state every
/// reconcile reads again; a half-done reconcile leaves nothing that the next one does not look at afresh.
pub async fn contain<T>(work: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|payload| Panicked(message(payload.as_ref())))
}

/// A panic's message as it may be shown: redacted of anything key-like, at most 300 characters.
pub fn message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    bounded_chars(&redact_keys(&text), 300)
}

/// Replaces the default panic hook, which prints the panic's message as it is to stderr, with one that logs it
/// through `tracing`, redacted and bounded like every other line, with where it happened.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %message(info.payload()), location, "panicked");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_the_caller_goes_on() {
        assert_eq!(contain(async { 7 }).await, Ok(7));
        let limit = i64::MAX;
        let caught = contain(async move { limit.checked_add(1).map(|_| ()).unwrap_or_else(|| panic!("overflowed")) });
        assert_eq!(caught.await, Err(Panicked("overflowed".into())));
    }

    #[test]
    fn messages_are_redacted_and_bounded() {
        let payload: Box<dyn Any + Send> = Box::new(format!("adding {}{} overflowed", "sk-", "1234567890abcdef"));
        let text = message(payload.as_ref());
        assert!(text.contains("overflowed") && !text.contains("1234567890abcdef"), "{text}");
        let long: Box<dyn Any + Send> = Box::new("é".repeat(1000));
        assert_eq!(message(long.as_ref()).chars().count(), 301, "300 characters and an ellipsis");
        let opaque: Box<dyn Any + Send> = Box::new(42);
        assert_eq!(message(opaque.as_ref()), "a panic without a message");
    }
}
