//! Kubernetes Events on transitions only: the instance's state changed, observation started or
//! stopped failing, a person must act, or polling was paused or resumed. Never one per poll.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::events::EventType;

use super::reasons::Reason;
use super::status::{FALSE, PAUSED, STALLED, SYNCED, TRUE, condition};
use crate::resource::{ActionRecord, CompShareInstanceStatus};

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Transition {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

/// The events that moving from `old` to `new` deserves.
pub(super) fn transitions(
    old: Option<&CompShareInstanceStatus>,
    new: &CompShareInstanceStatus,
) -> Vec<Transition> {
    let mut events = Vec::new();

    if let (Some(before), Some(after)) =
        (old.and_then(|s| s.state.as_deref()), new.state.as_deref())
        && before != after
    {
        events.push(Transition {
            type_: EventType::Normal,
            reason: Reason::StateChanged.as_str().into(),
            note: format!(
                "Instance state changed from {} to {}",
                display_state(before),
                display_state(after)
            ),
        });
    }

    let synced_before = status_of(old, SYNCED);
    let synced = condition(Some(new), SYNCED);
    match synced.map(|c| c.status.as_str()) {
        Some(FALSE) if synced_before != Some(FALSE) => events.push(Transition {
            type_: EventType::Warning,
            reason: Reason::ObservationFailed.as_str().into(),
            note: synced.map(|c| c.message.clone()).unwrap_or_default(),
        }),
        Some(TRUE) if synced_before == Some(FALSE) => events.push(Transition {
            type_: EventType::Normal,
            reason: Reason::ObservationRecovered.as_str().into(),
            note: "The instance is observed again".into(),
        }),
        _ => {}
    }

    // When observation itself fails, the event above already says why.
    let stalled = condition(Some(new), STALLED);
    if stalled.is_some_and(|c| c.status == TRUE)
        && status_of(old, STALLED) != Some(TRUE)
        && synced.is_some_and(|c| c.status == TRUE)
    {
        let stalled = stalled.expect("checked above");
        events.push(Transition {
            type_: EventType::Warning,
            reason: stalled.reason.clone(),
            note: stalled.message.clone(),
        });
    }

    match (status_of(old, PAUSED), status_of(Some(new), PAUSED)) {
        (before, Some(TRUE)) if before != Some(TRUE) => events.push(Transition {
            type_: EventType::Normal,
            reason: Reason::Paused.as_str().into(),
            note: "Observation paused by the compshare.ucloud.cn/paused annotation".into(),
        }),
        (Some(TRUE), after) if after != Some(TRUE) => events.push(Transition {
            type_: EventType::Normal,
            reason: Reason::Resumed.as_str().into(),
            note: "Observation resumed".into(),
        }),
        _ => {}
    }
    events
}

/// The event a state-changing call the operator made deserves.
pub(crate) fn action(record: &ActionRecord) -> Transition {
    let reason = match (record.result.as_str(), record.action.as_str()) {
        ("Succeeded", "Create") => Reason::MachineCreated,
        ("Succeeded", "Start") => Reason::StartRequested,
        ("Succeeded", "Stop") => Reason::StopRequested,
        ("Succeeded", "ScheduleStop") => Reason::StopScheduled,
        ("Succeeded", "CancelScheduledStop") => Reason::ScheduledStopCancelled,
        ("Succeeded", "Terminate") => Reason::TerminateRequested,
        ("Succeeded", _) => Reason::Released,
        _ => Reason::ActionFailed,
    };
    let note = match &record.message {
        None => format!("{}: succeeded", record.action),
        Some(message) if record.result == "Unknown" => format!(
            "{}: the answer was lost ({message}); the operator finds out what happened by observing",
            record.action
        ),
        Some(message) => format!("{}: {message}", record.action),
    };
    Transition {
        type_: if reason == Reason::ActionFailed {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.as_str().to_owned(),
        note,
    }
}

/// Publishes events (`events.k8s.io/v1`) about resources.
///
/// kube-runtime's `Recorder` names an event `<object name>.<nanoseconds in hex>`, which exceeds the
/// 253 characters an object name may have once the object's own name is longer than about 236:
/// every event about such a resource was refused. This publisher shortens the prefix instead. It
/// keeps no event series: events here are transitions, not repetitions.
pub(super) struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// `controller` names the reporting controller, `instance` this replica (the pod name).
    pub(super) fn new(client: kube::Client, controller: &str, instance: Option<&str>) -> Self {
        Publisher {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or(controller).to_owned(),
        }
    }

    pub(super) async fn publish(
        &self,
        transition: &Transition,
        action: &str,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond(),
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.to_owned()),
            reason: Some(transition.reason.clone()),
            note: Some(transition.note.clone()),
            type_: Some(
                match transition.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// `<object name>.<nanoseconds in hex>`, with the object's name cut so that the whole is a valid
/// object name (at most 253 characters, each part ending in a letter or digit).
fn event_name(object: &str, nanos: i128) -> String {
    const MAX_NAME: usize = 253;
    let suffix = format!(".{nanos:x}");
    let mut prefix = &object[..object.len().min(MAX_NAME - suffix.len())];
    prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}{suffix}")
}

fn status_of<'a>(status: Option<&'a CompShareInstanceStatus>, type_: &str) -> Option<&'a str> {
    condition(status, type_).map(|c| c.status.as_str())
}

fn display_state(state: &str) -> &str {
    if state.is_empty() {
        "(unreadable)"
    } else {
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(state: Option<&str>, conditions: &[(&str, &str, &str)]) -> CompShareInstanceStatus {
        CompShareInstanceStatus {
            state: state.map(Into::into),
            conditions: conditions
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: (*r).into(),
                    message: format!("{t} is {s} because {r}"),
                    observed_generation: Some(1),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn reasons(events: &[Transition]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn nothing_changed_means_no_event() {
        let s = status(
            Some("Running"),
            &[
                ("Synced", "True", "Observed"),
                ("Stalled", "False", "NotStalled"),
            ],
        );
        assert!(transitions(Some(&s), &s).is_empty());
    }

    #[test]
    fn the_first_observation_is_not_an_event() {
        let new = status(Some("Running"), &[("Synced", "True", "Observed")]);
        let old = status(None, &[("Synced", "Unknown", "AwaitingFirstObservation")]);
        assert!(transitions(Some(&old), &new).is_empty());
        assert!(transitions(None, &new).is_empty());
    }

    #[test]
    fn a_state_change_is_one_normal_event() {
        let old = status(Some("Running"), &[("Synced", "True", "Observed")]);
        let new = status(Some("Stopped"), &[("Synced", "True", "Observed")]);
        let events = transitions(Some(&old), &new);
        assert_eq!(reasons(&events), ["StateChanged"]);
        assert_eq!(
            events[0].note,
            "Instance state changed from Running to Stopped"
        );
        assert_eq!(events[0].type_, EventType::Normal);
    }

    #[test]
    fn failing_and_recovering_are_one_event_each() {
        let ok = status(Some("Running"), &[("Synced", "True", "Observed")]);
        let failing = status(Some("Running"), &[("Synced", "False", "Throttled")]);
        let still_failing = status(Some("Running"), &[("Synced", "False", "Timeout")]);
        let down = transitions(Some(&ok), &failing);
        assert_eq!(reasons(&down), ["ObservationFailed"]);
        assert_eq!(down[0].type_, EventType::Warning);
        assert_eq!(down[0].note, "Synced is False because Throttled");
        assert!(transitions(Some(&failing), &still_failing).is_empty());
        assert_eq!(
            reasons(&transitions(Some(&still_failing), &ok)),
            ["ObservationRecovered"]
        );
    }

    #[test]
    fn stalling_while_observing_is_a_warning_once() {
        let ok = status(
            Some("Running"),
            &[
                ("Synced", "True", "Observed"),
                ("Stalled", "False", "NotStalled"),
            ],
        );
        let gone = status(
            Some("Running"),
            &[
                ("Synced", "True", "Observed"),
                ("Stalled", "True", "NotFound"),
            ],
        );
        assert_eq!(reasons(&transitions(Some(&ok), &gone)), ["NotFound"]);
        assert!(transitions(Some(&gone), &gone).is_empty());
        // Rejected credentials: the observation failure already tells it.
        let rejected = status(
            None,
            &[
                ("Synced", "False", "CredentialsRejected"),
                ("Stalled", "True", "CredentialsRejected"),
            ],
        );
        assert_eq!(
            reasons(&transitions(Some(&ok), &rejected)),
            ["ObservationFailed"]
        );
    }

    #[test]
    fn event_names_fit_for_every_legal_object_name() {
        let nanos = 1_764_000_000_000_000_000_i128;
        assert_eq!(event_name("gpu", nanos), format!("gpu.{nanos:x}"));
        let longest = format!("{}.{}", "a".repeat(200), "b-c".repeat(17));
        assert_eq!(longest.len(), 252);
        for name in [
            longest.as_str(),
            &"x".repeat(253),
            &format!("{}.-z", "y".repeat(234)),
        ] {
            let event = event_name(name, nanos);
            assert!(event.len() <= 253, "{} characters", event.len());
            assert!(event.starts_with(&name[..200]));
            let (prefix, _) = event.rsplit_once('.').unwrap();
            assert!(
                prefix.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{prefix}"
            );
        }
    }

    #[test]
    fn pause_and_resume() {
        let running = status(Some("Running"), &[("Paused", "False", "NotPaused")]);
        let paused = status(Some("Running"), &[("Paused", "True", "PausedByAnnotation")]);
        assert_eq!(reasons(&transitions(Some(&running), &paused)), ["Paused"]);
        assert_eq!(reasons(&transitions(Some(&paused), &running)), ["Resumed"]);
    }
}
