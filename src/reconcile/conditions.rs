//! Conditions as kstatus, Argo CD and Flux read them: `Ready`, plus `Reconciling` while work is under way and
//! `Stalled` when the operator cannot go on without a change from someone.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Condition, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// True while the proxy keeps values for fields the spec no longer sets, because LiteLLM cannot clear them.
pub const FIELDS_NOT_CLEARED: &str = "FieldsNotCleared";

/// Where a resource stands after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In sync with the proxy.
    Ready,
    /// Not in sync yet, and the operator is retrying by itself (proxy unreachable, failing or overloaded).
    Progressing { reason: &'static str, message: String },
    /// Not in sync, and retrying will not help until the spec, the proxy or the operator's settings change.
    Stalled { reason: &'static str, message: String },
}

impl Outcome {
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Ready => "Synced",
            Outcome::Progressing { reason, .. } | Outcome::Stalled { reason, .. } => reason,
        }
    }
}

/// The conditions for an outcome, keeping each condition's `lastTransitionTime` when its status is unchanged
/// so that a reconcile that changes nothing writes nothing.
pub fn conditions(
    previous: &[Condition],
    outcome: &Outcome,
    uncleared: &[&str],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let (ready, reconciling, stalled, message) = match outcome {
        Outcome::Ready => ("True", "False", "False", "The LiteLLM user matches the spec".to_owned()),
        Outcome::Progressing { message, .. } => ("False", "True", "False", message.clone()),
        Outcome::Stalled { message, .. } => ("False", "False", "True", message.clone()),
    };
    let reason = outcome.reason();
    let mut out = vec![
        condition(previous, READY, ready, reason, &message, generation, now),
        condition(
            previous,
            RECONCILING,
            reconciling,
            reason,
            if reconciling == "True" { &message } else { "" },
            generation,
            now,
        ),
        condition(previous, STALLED, stalled, reason, if stalled == "True" { &message } else { "" }, generation, now),
    ];
    if !uncleared.is_empty() {
        let message = format!(
            "LiteLLM cannot clear these fields through its API, so the proxy keeps their old values: {}. \
             Set them in the spec again, or clear them in LiteLLM.",
            uncleared.join(", ")
        );
        out.push(condition(previous, FIELDS_NOT_CLEARED, "True", "NotClearable", &message, generation, now));
    }
    out
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of a condition, if present.
pub fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn ready_means_not_reconciling_and_not_stalled() {
        let c = conditions(&[], &Outcome::Ready, &[], Some(3), at(10));
        assert_eq!(get(&c, READY).status, "True");
        assert_eq!(get(&c, RECONCILING).status, "False");
        assert_eq!(get(&c, STALLED).status, "False");
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn transient_trouble_is_reconciling_and_spec_trouble_is_stalled() {
        let progressing = Outcome::Progressing { reason: "LiteLLMUnavailable", message: "down".into() };
        let c = conditions(&[], &progressing, &[], None, at(10));
        assert_eq!((get(&c, READY).status.as_str(), get(&c, RECONCILING).status.as_str()), ("False", "True"));
        assert_eq!(get(&c, RECONCILING).message, "down");
        let stalled = Outcome::Stalled { reason: "LiteLLMRejected", message: "bad".into() };
        let c = conditions(&[], &stalled, &[], None, at(10));
        assert_eq!((get(&c, READY).status.as_str(), get(&c, STALLED).status.as_str()), ("False", "True"));
        assert_eq!(get(&c, READY).reason, "LiteLLMRejected");
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = conditions(&[], &Outcome::Ready, &[], Some(1), at(10));
        let again = conditions(&first, &Outcome::Ready, &[], Some(1), at(20));
        assert_eq!(first, again);
        let failed = conditions(&again, &Outcome::Stalled { reason: "X", message: "m".into() }, &[], Some(1), at(30));
        assert_eq!(get(&failed, READY).last_transition_time, Time(at(30)));
    }

    #[test]
    fn uncleared_fields_get_their_own_condition() {
        let c = conditions(&[], &Outcome::Ready, &["models", "userAlias"], None, at(1));
        let uncleared = get(&c, FIELDS_NOT_CLEARED);
        assert_eq!(uncleared.status, "True");
        assert!(uncleared.message.contains("models, userAlias"));
    }
}
