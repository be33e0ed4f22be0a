//! Conditions as kstatus, Argo CD and Flux read them: `Ready`, plus `Reconciling` while work is under way and
//! `Stalled` when the operator cannot go on without a change from someone. Every reason a condition can carry
//! is a variant of [`Reason`], and [`Outcome::of_error`] is the one place that turns an error into one.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Condition, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};

use super::Error;
use crate::litellm::ErrorClass;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// True while the proxy keeps values for fields the spec no longer sets, because LiteLLM cannot clear them.
pub const FIELDS_NOT_CLEARED: &str = "FieldsNotCleared";
/// True while the user's spend has reached its budget: the proxy refuses the user's requests.
pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
/// True while the user's spend has reached `spec.softBudget`.
pub const SOFT_BUDGET_EXCEEDED: &str = "SoftBudgetExceeded";

/// Why a resource is where it is: the `reason` of its `Ready` condition, and (the last three) of the conditions
/// beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The LiteLLM user, its key and the Secret match the spec.
    Synced,
    /// The proxy is unreachable, failing or overloaded; retried with backoff.
    LiteLLMUnavailable,
    /// The proxy refused the operator's master key.
    MasterKeyRejected,
    /// The proxy refused a request made for this spec (a bad value, a duplicate e-mail, an unknown team).
    LiteLLMRejected,
    /// A Kubernetes API call failed; retried with backoff.
    KubernetesError,
    /// A LiteLLM user with this id exists, is not managed by the operator, and `spec.adopt` is not set.
    UserExists,
    /// Another LiteLLMUser manages this user id.
    OwnedByAnotherResource,
    /// The key Secret's name is taken by a Secret the operator does not manage.
    SecretConflict,
    /// The key was lost (its Secret deleted or overwritten, or the key revoked) sooner than the policy's least
    /// rotation interval after it was issued; the new key comes when the interval has passed.
    KeyReplacementDeferred,
    /// The resource is being deleted and its LiteLLM user cannot be deleted yet.
    DeletionBlocked,
    /// The spec asks for more than the proxy's policy allows; nothing was sent to the proxy.
    PolicyViolation,
    /// A spec value the operator cannot use (a duration beyond its bound, say); nothing was sent to the proxy.
    InvalidSpec,
    /// The operator hit a bug while reconciling the resource; retried with backoff.
    OperatorError,
    /// The proxy named (or the default one) does not exist or cannot be used.
    ProxyUnavailable,
    /// `FieldsNotCleared`: LiteLLM cannot clear a field the spec no longer sets.
    NotClearable,
    /// `BudgetExceeded`, `SoftBudgetExceeded`: spend has reached the budget.
    SpendReachedBudget,
    /// `BudgetExceeded`, `SoftBudgetExceeded`: spend is below the budget.
    WithinBudget,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::LiteLLMUnavailable => "LiteLLMUnavailable",
            Reason::MasterKeyRejected => "MasterKeyRejected",
            Reason::LiteLLMRejected => "LiteLLMRejected",
            Reason::KubernetesError => "KubernetesError",
            Reason::UserExists => "UserExists",
            Reason::OwnedByAnotherResource => "OwnedByAnotherResource",
            Reason::SecretConflict => "SecretConflict",
            Reason::KeyReplacementDeferred => "KeyReplacementDeferred",
            Reason::DeletionBlocked => "DeletionBlocked",
            Reason::PolicyViolation => "PolicyViolation",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::OperatorError => "OperatorError",
            Reason::ProxyUnavailable => "ProxyUnavailable",
            Reason::NotClearable => "NotClearable",
            Reason::SpendReachedBudget => "SpendReachedBudget",
            Reason::WithinBudget => "WithinBudget",
        }
    }
}

/// Why an Event was recorded: a change the operator made, or (for a Warning) the reason of an outcome other than
/// in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    Created,
    Adopted,
    Updated,
    TeamsChanged,
    KeyIssued,
    KeyRotated,
    KeyTakenBack,
    KeyRevoked,
    BudgetExceeded,
    SoftBudgetExceeded,
    Outcome(Reason),
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Created => "Created",
            EventReason::Adopted => "Adopted",
            EventReason::Updated => "Updated",
            EventReason::TeamsChanged => "TeamsChanged",
            EventReason::KeyIssued => "KeyIssued",
            EventReason::KeyRotated => "KeyRotated",
            EventReason::KeyTakenBack => "KeyTakenBack",
            EventReason::KeyRevoked => "KeyRevoked",
            EventReason::BudgetExceeded => "BudgetExceeded",
            EventReason::SoftBudgetExceeded => "SoftBudgetExceeded",
            EventReason::Outcome(reason) => reason.as_str(),
        }
    }
}

impl PartialEq<&str> for EventReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where a resource stands after a reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// In sync with the proxy.
    #[default]
    Ready,
    /// Not in sync yet, and the operator is retrying by itself (proxy unreachable, failing or overloaded).
    Progressing { reason: Reason, message: String },
    /// Not in sync, and retrying will not help until the spec, the proxy or the operator's settings change.
    Stalled { reason: Reason, message: String },
}

impl Outcome {
    pub fn reason(&self) -> Reason {
        match self {
            Outcome::Ready => Reason::Synced,
            Outcome::Progressing { reason, .. } | Outcome::Stalled { reason, .. } => *reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Ready => "The LiteLLM user matches the spec",
            Outcome::Progressing { message, .. } | Outcome::Stalled { message, .. } => message,
        }
    }

    pub fn stalled(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::Stalled { reason, message: message.into() }
    }

    /// The outcome of a reconcile that failed with `err`, and whether retrying soon can help.
    pub fn of_error(err: &Error) -> (Outcome, Retry) {
        let message = err.to_string();
        match err {
            Error::LiteLlm(api) => match api.class() {
                ErrorClass::Transient => (
                    Outcome::Progressing { reason: Reason::LiteLLMUnavailable, message },
                    Retry::Backoff { at_least: api.retry_after() },
                ),
                ErrorClass::Unauthorized => (
                    Outcome::Stalled {
                        reason: Reason::MasterKeyRejected,
                        message: format!(
                            "LiteLLM refused the operator's master key ({message}); fix the operator's configuration"
                        ),
                    },
                    Retry::Backoff { at_least: None },
                ),
                ErrorClass::Rejected => {
                    (Outcome::Stalled { reason: Reason::LiteLLMRejected, message }, Retry::AtResync)
                }
            },
            Error::Panicked(_) => {
                (Outcome::Progressing { reason: Reason::OperatorError, message }, Retry::Backoff { at_least: None })
            }
            _ => (Outcome::Progressing { reason: Reason::KubernetesError, message }, Retry::Backoff { at_least: None }),
        }
    }
}

/// When a failed reconcile is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Soon, with per-resource exponential backoff (and no sooner than the proxy asked).
    Backoff { at_least: Option<std::time::Duration> },
    /// At the next resync: the same request would be refused again.
    AtResync,
}

/// What the conditions besides `Ready` report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras<'a> {
    /// Fields the proxy keeps although the spec no longer sets them.
    pub uncleared: &'a [&'a str],
    /// Whether spend reached the budget, when the user has one, with a message.
    pub budget: Option<(bool, String)>,
    /// Whether spend reached the soft budget, when the spec sets one, with a message.
    pub soft_budget: Option<(bool, String)>,
}

/// The conditions for an outcome, keeping each condition's `lastTransitionTime` when its status is unchanged
/// so that a reconcile that changes nothing writes nothing.
pub fn conditions(
    previous: &[Condition],
    outcome: &Outcome,
    extras: &Extras,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let (ready, reconciling, stalled) = match outcome {
        Outcome::Ready => ("True", "False", "False"),
        Outcome::Progressing { .. } => ("False", "True", "False"),
        Outcome::Stalled { .. } => ("False", "False", "True"),
    };
    let (reason, message) = (outcome.reason().as_str(), outcome.message());
    let only_if = |status: &str| if status == "True" { message } else { "" };
    let mut out = vec![
        condition(previous, READY, ready, reason, message, generation, now),
        condition(previous, RECONCILING, reconciling, reason, only_if(reconciling), generation, now),
        condition(previous, STALLED, stalled, reason, only_if(stalled), generation, now),
    ];
    if !extras.uncleared.is_empty() {
        let message = format!(
            "LiteLLM cannot clear these fields through its API, so the proxy keeps their old values: {}. \
             Set them in the spec again, or clear them in LiteLLM.",
            extras.uncleared.join(", ")
        );
        out.push(condition(
            previous,
            FIELDS_NOT_CLEARED,
            "True",
            Reason::NotClearable.as_str(),
            &message,
            generation,
            now,
        ));
    }
    for (type_, state) in [(BUDGET_EXCEEDED, &extras.budget), (SOFT_BUDGET_EXCEEDED, &extras.soft_budget)] {
        if let Some((exceeded, message)) = state {
            let (status, reason) =
                if *exceeded { ("True", Reason::SpendReachedBudget) } else { ("False", Reason::WithinBudget) };
            out.push(condition(previous, type_, status, reason.as_str(), message, generation, now));
        }
    }
    out
}

/// A condition of this type and status, keeping its `lastTransitionTime` if the status did not change.
pub fn condition(
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

/// The condition of this type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of this type is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        find(conditions, type_).unwrap()
    }

    #[test]
    fn ready_means_not_reconciling_and_not_stalled() {
        let c = conditions(&[], &Outcome::Ready, &Extras::default(), Some(3), at(10));
        assert_eq!(get(&c, READY).status, "True");
        assert_eq!(get(&c, RECONCILING).status, "False");
        assert_eq!(get(&c, STALLED).status, "False");
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn transient_trouble_is_reconciling_and_spec_trouble_is_stalled() {
        let progressing = Outcome::Progressing { reason: Reason::LiteLLMUnavailable, message: "down".into() };
        let c = conditions(&[], &progressing, &Extras::default(), None, at(10));
        assert_eq!((get(&c, READY).status.as_str(), get(&c, RECONCILING).status.as_str()), ("False", "True"));
        assert_eq!(get(&c, RECONCILING).message, "down");
        let stalled = Outcome::stalled(Reason::LiteLLMRejected, "bad");
        let c = conditions(&[], &stalled, &Extras::default(), None, at(10));
        assert_eq!((get(&c, READY).status.as_str(), get(&c, STALLED).status.as_str()), ("False", "True"));
        assert_eq!(get(&c, READY).reason, "LiteLLMRejected");
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = conditions(&[], &Outcome::Ready, &Extras::default(), Some(1), at(10));
        let again = conditions(&first, &Outcome::Ready, &Extras::default(), Some(1), at(20));
        assert_eq!(first, again);
        let failed =
            conditions(&again, &Outcome::stalled(Reason::UserExists, "m"), &Extras::default(), Some(1), at(30));
        assert_eq!(get(&failed, READY).last_transition_time, Time(at(30)));
    }

    #[test]
    fn uncleared_fields_and_budgets_get_their_own_conditions() {
        let extras = Extras {
            uncleared: &["models", "userAlias"],
            budget: Some((true, "spent 10 of 10".into())),
            soft_budget: Some((false, "spent 10 of 20".into())),
        };
        let c = conditions(&[], &Outcome::Ready, &extras, None, at(1));
        let uncleared = get(&c, FIELDS_NOT_CLEARED);
        assert_eq!(uncleared.status, "True");
        assert!(uncleared.message.contains("models, userAlias"));
        assert_eq!(get(&c, BUDGET_EXCEEDED).status, "True");
        assert_eq!(get(&c, SOFT_BUDGET_EXCEEDED).status, "False");
        assert_eq!(get(&c, READY).status, "True", "a user over budget is still Ready");
    }
}
