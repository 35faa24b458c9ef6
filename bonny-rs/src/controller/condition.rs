//! Status conditions that change only when their meaning changes.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Insert or update the condition `type_` in `conditions`.
///
/// `lastTransitionTime` moves only when the status flips, so re-setting the same condition
/// leaves the list unchanged and causes no status write.
///
/// ```
/// use bonny::controller::set_condition;
/// let mut conditions = Vec::new();
/// set_condition(&mut conditions, "Ready", true, "Reconciled", "all good", Some(1));
/// let first = conditions.clone();
/// set_condition(&mut conditions, "Ready", true, "Reconciled", "all good", Some(1));
/// assert_eq!(conditions, first);
/// ```
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(Timestamp::now());
                existing.status = status;
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation,
            last_transition_time: Time(Timestamp::now()),
        }),
    }
}
