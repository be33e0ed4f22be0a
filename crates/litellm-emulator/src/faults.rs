//! Injected failures: the ways a real proxy misbehaves that an operator has to survive.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Deserialize;
use tokio::sync::watch;

use crate::{lock, store::RaceView};

/// What goes wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The request is answered normally, this much later.
    Latency(Duration),
    /// The request is not performed and answered with this status (for example 500 or 503) and an error body.
    Status(u16),
    /// The request is not performed and answered 429 with a `Retry-After` header of this many whole seconds.
    RateLimited { retry_after: Duration },
    /// The connection is closed without an answer, before the request is performed.
    Reset,
    /// The request is never answered (until the client gives up or the emulator stops), and not performed.
    Hang,
    /// The request is performed, then the connection is closed without an answer: the client cannot know that
    /// its change happened.
    LostResponse,
    /// Requests are held until `until` of them have arrived, or until one has waited `timeout`, and are then
    /// performed together, as concurrent requests are on a real proxy: each checks what exists against the
    /// state from before any of them wrote. So two `/user/new` for one `user_id` both answer 200 and the later
    /// write wins, as on 1.108.7 under a race (without the hold the second answers 409). Other endpoints are
    /// performed one after the other once released. [`Fault::hold`] holds exactly `until` requests.
    Hold { until: u32, timeout: Duration },
}

/// When a fault fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// For the next `n` matching requests, then the fault is gone.
    Next(u32),
    /// For each matching request with this probability (0.0 to 1.0), drawn from the emulator's seeded generator
    /// so that a run can be repeated.
    Probability(f64),
    /// For every matching request until the faults are cleared.
    Always,
}

/// A fault on one endpoint path (such as `/user/new`) or on all of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// `None`: every LiteLLM endpoint (the emulator's own `/emulator/...` endpoints are never affected).
    pub endpoint: Option<String>,
    pub kind: FaultKind,
    pub trigger: Trigger,
}

impl Fault {
    /// A fault on every endpoint, for the next request only.
    pub fn new(kind: FaultKind) -> Self {
        Fault { endpoint: None, kind, trigger: Trigger::Next(1) }
    }

    /// Only requests to this path, for example `/user/new`.
    pub fn on(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// For the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.trigger = Trigger::Next(n);
        self
    }

    /// For each matching request with probability `p`.
    pub fn with_probability(mut self, p: f64) -> Self {
        self.trigger = Trigger::Probability(p.clamp(0.0, 1.0));
        self
    }

    /// For every matching request.
    pub fn always(mut self) -> Self {
        self.trigger = Trigger::Always;
        self
    }

    /// Holds the next `until` requests (on every endpoint, or the one set with [`Fault::on`]) until all of them
    /// have arrived or one has waited `timeout`, then performs them together: see [`FaultKind::Hold`].
    pub fn hold(until: u32, timeout: Duration) -> Self {
        Fault { endpoint: None, kind: FaultKind::Hold { until, timeout }, trigger: Trigger::Next(until) }
    }
}

/// `POST /emulator/faults` body, e.g. `{"endpoint":"/user/new","kind":"status","status":503,"count":2}`,
/// `{"kind":"latency","latency_ms":300,"probability":0.5}` or
/// `{"endpoint":"/user/new","kind":"hold","until":2,"timeout_ms":5000}`. Without `count` or `probability` a fault
/// fires once, a hold for `until` requests (`timeout_ms` defaults to 10 s).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    #[serde(default)]
    endpoint: Option<String>,
    kind: String,
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    retry_after_secs: Option<u64>,
    #[serde(default)]
    until: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    always: bool,
}

impl FaultRequest {
    pub(crate) fn into_fault(self) -> Result<Fault, String> {
        let kind = match self.kind.as_str() {
            "latency" => FaultKind::Latency(Duration::from_millis(self.latency_ms.ok_or("latency needs latency_ms")?)),
            "status" => match self.status {
                Some(status @ 100..=599) => FaultKind::Status(status),
                _ => return Err("status needs a status between 100 and 599".into()),
            },
            "rate_limited" | "rate_limit" | "429" => {
                FaultKind::RateLimited { retry_after: Duration::from_secs(self.retry_after_secs.unwrap_or(1)) }
            }
            "reset" => FaultKind::Reset,
            "hang" => FaultKind::Hang,
            "lost_response" => FaultKind::LostResponse,
            "hold" => match self.until {
                Some(until @ 1..) => FaultKind::Hold {
                    until,
                    timeout: Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_HOLD_TIMEOUT_MS)),
                },
                _ => return Err("hold needs until, the number of requests to hold (at least 1)".into()),
            },
            other => {
                return Err(format!(
                    "unknown kind '{other}'; use latency, status, rate_limited, reset, hang, lost_response or hold"
                ));
            }
        };
        // A hold holds `until` requests unless told otherwise; every other fault fires once.
        let once = match kind {
            FaultKind::Hold { until, .. } => until,
            _ => 1,
        };
        let trigger = match (self.count, self.probability, self.always) {
            (None, None, true) => Trigger::Always,
            (Some(n), None, false) => Trigger::Next(n),
            (None, Some(p), false) if (0.0..=1.0).contains(&p) => Trigger::Probability(p),
            (None, Some(_), false) => return Err("probability must be between 0 and 1".into()),
            (None, None, false) => Trigger::Next(once),
            _ => return Err("give at most one of count, probability and always".into()),
        };
        Ok(Fault { endpoint: self.endpoint, kind, trigger })
    }
}

/// How long a hold set over HTTP waits for its requests when no `timeout_ms` is given.
const DEFAULT_HOLD_TIMEOUT_MS: u64 = 10_000;

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) delay: Duration,
    /// The first non-latency fault that fired, if any.
    pub(crate) action: Option<FaultKind>,
    /// With a [`FaultKind::Hold`] action: where the request waits for the others.
    pub(crate) gate: Option<Arc<Gate>>,
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        let same_gate = match (&self.gate, &other.gate) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.delay == other.delay && self.action == other.action && same_gate
    }
}

/// One fault that is set, with the gate of a hold.
#[derive(Debug)]
struct Active {
    fault: Fault,
    gate: Option<Arc<Gate>>,
}

/// The active faults, in the order they were set, and the generator that draws their probabilities.
#[derive(Debug)]
pub(crate) struct FaultBook {
    faults: Vec<Active>,
    rng: SplitMix64,
}

impl FaultBook {
    pub(crate) fn new(seed: u64) -> Self {
        FaultBook { faults: Vec::new(), rng: SplitMix64(seed) }
    }

    pub(crate) fn add(&mut self, fault: Fault) {
        let gate = match fault.kind {
            FaultKind::Hold { until, .. } => Some(Arc::new(Gate::new(until))),
            _ => None,
        };
        self.faults.push(Active { fault, gate });
    }

    /// Removes every fault and lets go of the requests their holds are holding.
    pub(crate) fn clear(&mut self) {
        for gate in self.faults.drain(..).filter_map(|active| active.gate) {
            gate.release_all();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.faults.len()
    }

    /// Decides what happens to one request to `path`. Every matching latency fault that fires adds its delay; of
    /// the other faults, the first that fires decides. A fault that fires uses up one of its `Next(n)` requests.
    pub(crate) fn decide(&mut self, path: &str) -> Decision {
        let mut decision = Decision::default();
        for Active { fault, gate } in &mut self.faults {
            if fault.endpoint.as_deref().is_some_and(|endpoint| endpoint != path) {
                continue;
            }
            let is_latency = matches!(fault.kind, FaultKind::Latency(_));
            // A second action fault must not use up its budget on a request the first one already took.
            if !is_latency && decision.action.is_some() {
                continue;
            }
            let fires = match &mut fault.trigger {
                Trigger::Always => true,
                Trigger::Next(0) => false,
                Trigger::Next(n) => {
                    *n -= 1;
                    true
                }
                Trigger::Probability(p) => self.rng.next_f64() < *p,
            };
            if !fires {
                continue;
            }
            match &fault.kind {
                FaultKind::Latency(delay) => decision.delay += *delay,
                other => {
                    decision.action = Some(other.clone());
                    decision.gate = gate.clone();
                }
            }
        }
        // A used-up hold's gate lives on in the requests it holds.
        self.faults.retain(|active| active.fault.trigger != Trigger::Next(0));
        decision
    }
}

/// Where held requests wait for each other. Each batch of `until` requests has its own release signal, so that a
/// request never misses its batch's release, however quickly the next batch follows.
#[derive(Debug)]
pub(crate) struct Gate {
    until: usize,
    /// How many requests of the current batch are waiting, and the current batch.
    state: Mutex<(usize, Arc<Batch>)>,
}

/// One batch of held requests: waiting, or released with the users as they were at the release.
#[derive(Debug)]
struct Batch(watch::Sender<Option<Released>>);

/// A batch's release: the view its requests check against (none when the faults were cleared).
type Released = Option<Arc<RaceView>>;

impl Batch {
    fn new() -> Arc<Batch> {
        Arc::new(Batch(watch::Sender::new(None)))
    }
}

impl Gate {
    fn new(until: u32) -> Self {
        Gate { until: usize::try_from(until).unwrap_or(usize::MAX).max(1), state: Mutex::new((0, Batch::new())) }
    }

    /// Waits until this request's batch is complete or it has waited `timeout` (which releases its batch
    /// early), and answers the view the batch's requests check against. `view` is called once per batch, by the
    /// request that releases it, before any request of the batch goes on.
    pub(crate) async fn arrive(&self, timeout: Duration, view: impl FnOnce() -> RaceView) -> Released {
        let (batch, complete) = {
            let mut state = lock(&self.state);
            state.0 += 1;
            let batch = state.1.clone();
            let complete = state.0 >= self.until;
            if complete {
                *state = (0, Batch::new());
            }
            (batch, complete)
        };
        if complete {
            return Self::release(&batch, Some(Arc::new(view())));
        }
        let mut released = batch.0.subscribe();
        if let Ok(Ok(value)) = tokio::time::timeout(timeout, released.wait_for(Option::is_some)).await {
            return value.clone().flatten();
        }
        // Waited long enough: release this batch as it is, unless another request has just done so.
        let still_current = {
            let mut state = lock(&self.state);
            let current = Arc::ptr_eq(&state.1, &batch);
            if current {
                *state = (0, Batch::new());
            }
            current
        };
        if still_current { Self::release(&batch, Some(Arc::new(view()))) } else { batch.0.borrow().clone().flatten() }
    }

    fn release(batch: &Batch, view: Released) -> Released {
        batch.0.send_replace(Some(view.clone()));
        view
    }

    /// Lets every waiting request go on at once, each on its own (the faults were cleared).
    fn release_all(&self) {
        let mut state = lock(&self.state);
        let batch = std::mem::replace(&mut *state, (0, Batch::new())).1;
        Self::release(&batch, None);
    }
}

/// A small, seedable generator (Steele, Lea and Flood's SplitMix64): the same seed gives the same faults.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_fires_n_times_on_its_endpoint_only() {
        let mut book = FaultBook::new(1);
        book.add(Fault::new(FaultKind::Status(503)).on("/user/new").times(2));
        assert_eq!(book.decide("/user/info").action, None);
        assert_eq!(book.decide("/user/new").action, Some(FaultKind::Status(503)));
        assert_eq!(book.decide("/user/new").action, Some(FaultKind::Status(503)));
        assert_eq!(book.decide("/user/new").action, None);
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn latency_adds_up_and_the_first_action_wins() {
        let mut book = FaultBook::new(1);
        book.add(Fault::new(FaultKind::Latency(Duration::from_millis(5))).always());
        book.add(Fault::new(FaultKind::Reset));
        book.add(Fault::new(FaultKind::Hang));
        book.add(Fault::new(FaultKind::Latency(Duration::from_millis(7))));
        let first = book.decide("/x");
        let decision = |delay, action| Decision { delay: Duration::from_millis(delay), action, gate: None };
        assert_eq!(first, decision(12, Some(FaultKind::Reset)));
        // The hang was not used up by the request the reset took.
        assert_eq!(book.decide("/x").action, Some(FaultKind::Hang));
        assert_eq!(book.decide("/x"), decision(5, None));
    }

    #[tokio::test]
    async fn a_hold_releases_its_batch_when_complete_or_on_timeout() {
        let gate = Arc::new(Gate::new(2));
        let view = || RaceView::default();
        let first = tokio::spawn({
            let gate = gate.clone();
            async move { gate.arrive(Duration::from_secs(30), view).await }
        });
        // The second request completes the batch: both go on with the one view it took.
        let second = gate.arrive(Duration::from_secs(30), view).await.expect("a view");
        let first = first.await.expect("joined").expect("a view");
        assert!(Arc::ptr_eq(&first, &second));
        // Alone, a request goes on after its timeout, with a view of its own.
        let started = std::time::Instant::now();
        assert!(gate.arrive(Duration::from_millis(50), view).await.is_some());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Clearing the faults lets a waiting request go on at once, without a view.
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.arrive(Duration::from_secs(30), view).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&gate.state).0 == 0 {
            assert!(std::time::Instant::now() < deadline, "the request never arrived");
            tokio::task::yield_now().await;
        }
        gate.release_all();
        assert!(waiting.await.expect("joined").is_none());
    }

    #[test]
    fn probability_is_repeatable_with_a_seed() {
        let run = |seed| {
            let mut book = FaultBook::new(seed);
            book.add(Fault::new(FaultKind::Status(500)).with_probability(0.3));
            (0..1000).map(|_| book.decide("/user/info").action.is_some()).collect::<Vec<_>>()
        };
        let first = run(42);
        assert_eq!(first, run(42));
        assert_ne!(first, run(43));
        let hits = first.iter().filter(|&&hit| hit).count();
        assert!((200..400).contains(&hits), "{hits} of 1000 at p=0.3");
    }

    #[test]
    fn reads_http_requests() {
        let parse = |json: &str| serde_json::from_str::<FaultRequest>(json).map_err(|e| e.to_string())?.into_fault();
        assert_eq!(
            parse(r#"{"endpoint":"/user/new","kind":"status","status":503,"count":2}"#),
            Ok(Fault::new(FaultKind::Status(503)).on("/user/new").times(2))
        );
        assert_eq!(
            parse(r#"{"kind":"rate_limited","retry_after_secs":7,"probability":0.5}"#),
            Ok(Fault::new(FaultKind::RateLimited { retry_after: Duration::from_secs(7) }).with_probability(0.5))
        );
        assert_eq!(
            parse(r#"{"kind":"lost_response","always":true}"#),
            Ok(Fault::new(FaultKind::LostResponse).always())
        );
        assert_eq!(
            parse(r#"{"endpoint":"/user/new","kind":"hold","until":2,"timeout_ms":500}"#),
            Ok(Fault::hold(2, Duration::from_millis(500)).on("/user/new"))
        );
        assert!(parse(r#"{"kind":"hold"}"#).is_err());
        assert!(parse(r#"{"kind":"status"}"#).is_err());
        assert!(parse(r#"{"kind":"boom"}"#).is_err());
        assert!(parse(r#"{"kind":"hang","count":1,"probability":0.5}"#).is_err());
    }
}
