//! Injected faults: what they are, which calls they hit, and when they run out.
//!
//! A fault hits the calls that match its `action` and `publicKey` (each matches anything when left
//! out), for its next `count` matching calls, for `durationMs` after it was injected, or both
//! (whichever ends first), or until cleared when neither is given.
//!
//! Faults act in two phases of a call (see the module documentation of `simulator` for why):
//! - before the signature is checked: `latency`, `http`, `redirect`, `drop`, `malformed`, `html`,
//!   `oversized`, `throttle`;
//! - after it, on an otherwise successful call: `retcode`, `omit`, `retcode-as-string`;
//! - with `"stage": "after-action"` (`latency` and `drop` only), after the action has been carried
//!   out: the answer comes late or never, but what the call changed stays changed, as when a
//!   gateway times out or a connection breaks after the service acted.
//!
//! In a phase the first matching fault that replaces the answer (`http`, `redirect`, `drop`,
//! `malformed`, `html`, `oversized`, `throttle`, `retcode`) wins; later ones are not used up. Delays of every matching fault add up
//! (`latencyMs` may be given on any kind: the answer then comes late). `omit` and
//! `retcode-as-string` shape a successful answer, so they are used up only when no answer is
//! replaced.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use compshare_api::DESCRIBE_ACTION;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum FaultKind {
    Latency,
    Http,
    /// A 3xx answer to `location` (a proxy or a moved endpoint).
    Redirect,
    Retcode,
    Throttle,
    Malformed,
    /// A 200 answer that is an HTML page (a captive portal, a misrouted proxy).
    Html,
    /// A 200 JSON answer of `bytes` bytes, streamed.
    Oversized,
    Drop,
    Omit,
    RetcodeAsString,
}

/// When a fault acts, when not when its kind does.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Stage {
    /// After the action was carried out, before its answer is sent.
    AfterAction,
}

/// A fault as the admin interface takes and shows it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct FaultSpec {
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum FaultError {
    #[error("a {kind} fault needs {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{field} does not apply to a {kind} fault")]
    NotApplicable {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{0} must be at least 1 when given")]
    Zero(&'static str),
    #[error("status {0} is not an HTTP error status (400-599)")]
    NotAnErrorStatus(u16),
    #[error("status {0} is not an HTTP redirect status (300-399)")]
    NotARedirectStatus(u16),
    #[error("retCode 0 is success, not a fault")]
    SuccessRetCode,
}

/// What a fault answers instead of the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Http(u16),
    Redirect { status: u16, location: String },
    Throttle,
    Malformed,
    Html,
    Oversized(u64),
    Drop,
    RetCode { code: i64, message: String },
}

#[derive(Debug)]
enum Effect {
    /// Only the delay.
    Delay,
    Answer(Answer),
    Omit(HashSet<String>),
    NumbersAsStrings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// After the request is parsed, before the signature is checked.
    BeforeVerification,
    /// After the signature is checked, before the action runs.
    AfterVerification,
    /// After the action ran, before the answer is sent (`"stage": "after-action"`).
    AfterAction,
}

/// Who is calling what, as far as faults care.
#[derive(Clone, Copy, Debug)]
pub(super) struct Call<'a> {
    pub action: Option<&'a str>,
    pub public_key: Option<&'a str>,
}

/// What the faults taken for one phase of a call do to it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Taken {
    pub delay: Duration,
    pub answer: Option<Answer>,
    pub hidden: HashSet<String>,
    pub numbers_as_strings: bool,
}

#[derive(Debug)]
struct ActiveFault {
    id: u64,
    spec: FaultSpec,
    phase: Phase,
    delay: Duration,
    effect: Effect,
    remaining: Option<u32>,
    expires_at: Option<Instant>,
}

/// A fault as listed: its spec, plus how much of it is left.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FaultView {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct FaultBook {
    next_id: u64,
    active: Vec<ActiveFault>,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Http => "http",
            FaultKind::Redirect => "redirect",
            FaultKind::Retcode => "retcode",
            FaultKind::Throttle => "throttle",
            FaultKind::Malformed => "malformed",
            FaultKind::Html => "html",
            FaultKind::Oversized => "oversized",
            FaultKind::Drop => "drop",
            FaultKind::Omit => "omit",
            FaultKind::RetcodeAsString => "retcode-as-string",
        }
    }
}

impl FaultSpec {
    fn effect(&self) -> Result<Effect, FaultError> {
        let kind = self.kind.name();
        let missing = |field| FaultError::Missing { kind, field };
        let check_not_given = |given: bool, field, applies_to: FaultKind| {
            if given && self.kind != applies_to {
                Err(FaultError::NotApplicable { kind, field })
            } else {
                Ok(())
            }
        };
        if self.status.is_some() && !matches!(self.kind, FaultKind::Http | FaultKind::Redirect) {
            return Err(FaultError::NotApplicable {
                kind,
                field: "status",
            });
        }
        check_not_given(self.location.is_some(), "location", FaultKind::Redirect)?;
        check_not_given(self.bytes.is_some(), "bytes", FaultKind::Oversized)?;
        check_not_given(self.ret_code.is_some(), "retCode", FaultKind::Retcode)?;
        check_not_given(self.message.is_some(), "message", FaultKind::Retcode)?;
        check_not_given(self.ids.is_some(), "ids", FaultKind::Omit)?;
        if self.stage.is_some() && !matches!(self.kind, FaultKind::Latency | FaultKind::Drop) {
            return Err(FaultError::NotApplicable {
                kind,
                field: "stage",
            });
        }
        if self.count == Some(0) {
            return Err(FaultError::Zero("count"));
        }
        if self.duration_ms == Some(0) {
            return Err(FaultError::Zero("durationMs"));
        }
        Ok(match self.kind {
            FaultKind::Latency => {
                self.latency_ms.ok_or(missing("latencyMs"))?;
                Effect::Delay
            }
            FaultKind::Http => match self.status.ok_or(missing("status"))? {
                status @ 400..=599 => Effect::Answer(Answer::Http(status)),
                status => return Err(FaultError::NotAnErrorStatus(status)),
            },
            FaultKind::Retcode => match self.ret_code.ok_or(missing("retCode"))? {
                0 => return Err(FaultError::SuccessRetCode),
                code => Effect::Answer(Answer::RetCode {
                    code,
                    message: self
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("Simulated error {code}")),
                }),
            },
            FaultKind::Redirect => match self.status.unwrap_or(302) {
                status @ 300..=399 => Effect::Answer(Answer::Redirect {
                    status,
                    location: self.location.clone().ok_or(missing("location"))?,
                }),
                status => return Err(FaultError::NotARedirectStatus(status)),
            },
            FaultKind::Throttle => Effect::Answer(Answer::Throttle),
            FaultKind::Malformed => Effect::Answer(Answer::Malformed),
            FaultKind::Html => Effect::Answer(Answer::Html),
            FaultKind::Oversized => match self.bytes.ok_or(missing("bytes"))? {
                0 => return Err(FaultError::Zero("bytes")),
                bytes => Effect::Answer(Answer::Oversized(bytes)),
            },
            FaultKind::Drop => Effect::Answer(Answer::Drop),
            FaultKind::Omit => match &self.ids {
                Some(ids) if !ids.is_empty() => Effect::Omit(ids.iter().cloned().collect()),
                _ => return Err(missing("ids")),
            },
            FaultKind::RetcodeAsString => Effect::NumbersAsStrings,
        })
    }
}

impl Effect {
    fn phase(&self) -> Phase {
        match self {
            Effect::Delay
            | Effect::Answer(
                Answer::Http(_)
                | Answer::Redirect { .. }
                | Answer::Throttle
                | Answer::Malformed
                | Answer::Html
                | Answer::Oversized(_)
                | Answer::Drop,
            ) => Phase::BeforeVerification,
            Effect::Answer(Answer::RetCode { .. }) | Effect::Omit(_) | Effect::NumbersAsStrings => {
                Phase::AfterVerification
            }
        }
    }
}

impl ActiveFault {
    fn applies(&self, call: &Call<'_>, phase: Phase) -> bool {
        let action_matches = match (&self.spec.action, call.action) {
            (Some(wanted), action) => action == Some(wanted.as_str()),
            // Leaving out instances only means something to the action that lists them.
            (None, action) if matches!(self.effect, Effect::Omit(_)) => {
                action == Some(DESCRIBE_ACTION)
            }
            (None, _) => true,
        };
        self.phase == phase
            && action_matches
            && self
                .spec
                .public_key
                .as_deref()
                .is_none_or(|key| call.public_key == Some(key))
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    fn view(&self, now: Instant) -> FaultView {
        FaultView {
            id: self.id,
            spec: self.spec.clone(),
            remaining: self.remaining,
            expires_in_ms: self
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

impl FaultBook {
    pub(crate) fn inject(
        &mut self,
        spec: FaultSpec,
        now: Instant,
    ) -> Result<FaultView, FaultError> {
        let effect = spec.effect()?;
        let phase = match spec.stage {
            Some(Stage::AfterAction) => Phase::AfterAction,
            None => effect.phase(),
        };
        self.next_id += 1;
        let fault = ActiveFault {
            id: self.next_id,
            phase,
            delay: Duration::from_millis(spec.latency_ms.unwrap_or(0)),
            effect,
            remaining: spec.count,
            expires_at: spec.duration_ms.map(|ms| now + Duration::from_millis(ms)),
            spec,
        };
        let view = fault.view(now);
        self.active.push(fault);
        Ok(view)
    }

    pub(crate) fn list(&mut self, now: Instant) -> Vec<FaultView> {
        self.active.retain(|f| !f.expired(now));
        self.active.iter().map(|f| f.view(now)).collect()
    }

    pub(crate) fn clear(&mut self) {
        self.active.clear();
    }

    /// Takes the faults that hit `call` in `phase`, using up one of each one's count.
    pub(crate) fn take(&mut self, call: &Call<'_>, phase: Phase, now: Instant) -> Taken {
        self.active.retain(|f| !f.expired(now));
        let answering = self
            .active
            .iter()
            .position(|f| f.applies(call, phase) && matches!(f.effect, Effect::Answer(_)));
        let mut taken = Taken::default();
        for (index, fault) in self.active.iter_mut().enumerate() {
            if !fault.applies(call, phase) {
                continue;
            }
            let used = match &fault.effect {
                Effect::Delay => true,
                Effect::Answer(answer) => {
                    let wins = answering == Some(index);
                    if wins {
                        taken.answer = Some(answer.clone());
                    }
                    wins
                }
                Effect::Omit(ids) => {
                    if answering.is_none() {
                        taken.hidden.extend(ids.iter().cloned());
                    }
                    answering.is_none()
                }
                Effect::NumbersAsStrings => {
                    taken.numbers_as_strings |= answering.is_none();
                    answering.is_none()
                }
            };
            if used {
                taken.delay += fault.delay;
                if let Some(remaining) = &mut fault.remaining {
                    *remaining -= 1;
                }
            }
        }
        self.active.retain(|f| f.remaining != Some(0));
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> FaultSpec {
        serde_json::from_value(value).unwrap()
    }

    fn book(specs: Vec<serde_json::Value>, now: Instant) -> FaultBook {
        let mut book = FaultBook::default();
        for s in specs {
            book.inject(spec(s), now).unwrap();
        }
        book
    }

    const DESCRIBE: Call<'static> = Call {
        action: Some(DESCRIBE_ACTION),
        public_key: Some("pub-a"),
    };
    const PROJECTS: Call<'static> = Call {
        action: Some("GetProjectList"),
        public_key: Some("pub-b"),
    };
    use Phase::{AfterAction, AfterVerification as After, BeforeVerification as Before};

    #[test]
    fn specs_are_checked_per_kind() {
        let error = |value| spec(value).effect().map(|_| ()).unwrap_err();
        assert_eq!(
            error(json!({"kind": "latency"})),
            FaultError::Missing {
                kind: "latency",
                field: "latencyMs"
            }
        );
        assert_eq!(
            error(json!({"kind": "http"})),
            FaultError::Missing {
                kind: "http",
                field: "status"
            }
        );
        assert_eq!(
            error(json!({"kind": "http", "status": 200})),
            FaultError::NotAnErrorStatus(200)
        );
        assert_eq!(
            error(json!({"kind": "retcode", "retCode": 0})),
            FaultError::SuccessRetCode
        );
        assert_eq!(
            error(json!({"kind": "redirect", "status": 301})),
            FaultError::Missing {
                kind: "redirect",
                field: "location"
            }
        );
        assert_eq!(
            error(json!({"kind": "redirect", "status": 404, "location": "/"})),
            FaultError::NotARedirectStatus(404)
        );
        assert_eq!(
            error(json!({"kind": "oversized"})),
            FaultError::Missing {
                kind: "oversized",
                field: "bytes"
            }
        );
        assert_eq!(
            error(json!({"kind": "html", "bytes": 10})),
            FaultError::NotApplicable {
                kind: "html",
                field: "bytes"
            }
        );
        assert_eq!(
            error(json!({"kind": "omit", "ids": []})),
            FaultError::Missing {
                kind: "omit",
                field: "ids"
            }
        );
        assert_eq!(
            error(json!({"kind": "throttle", "status": 503})),
            FaultError::NotApplicable {
                kind: "throttle",
                field: "status"
            }
        );
        assert_eq!(
            error(json!({"kind": "drop", "ids": ["x"]})),
            FaultError::NotApplicable {
                kind: "drop",
                field: "ids"
            }
        );
        assert_eq!(
            error(json!({"kind": "drop", "count": 0})),
            FaultError::Zero("count")
        );
        assert!(serde_json::from_value::<FaultSpec>(json!({"kind": "drop", "cuont": 1})).is_err());
        assert!(serde_json::from_value::<FaultSpec>(json!({"kind": "flood"})).is_err());
        // Latency may ride on any kind.
        assert!(
            spec(json!({"kind": "http", "status": 503, "latencyMs": 10}))
                .effect()
                .is_ok()
        );
    }

    #[test]
    fn faults_act_in_their_phase_only() {
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "retcode", "retCode": 150}),
                json!({"kind": "throttle"}),
            ],
            now,
        );
        assert_eq!(
            book.take(&DESCRIBE, Before, now).answer,
            Some(Answer::Throttle)
        );
        assert_eq!(
            book.take(&DESCRIBE, After, now).answer,
            Some(Answer::RetCode {
                code: 150,
                message: "Simulated error 150".into()
            })
        );
    }

    #[test]
    fn count_limited_faults_run_out() {
        let now = Instant::now();
        let mut book = book(
            vec![json!({"kind": "http", "status": 503, "count": 2})],
            now,
        );
        assert_eq!(
            book.take(&DESCRIBE, Before, now).answer,
            Some(Answer::Http(503))
        );
        // A call in the other phase does not use it up.
        assert_eq!(book.take(&DESCRIBE, After, now), Taken::default());
        assert_eq!(
            book.take(&PROJECTS, Before, now).answer,
            Some(Answer::Http(503))
        );
        assert_eq!(book.take(&DESCRIBE, Before, now).answer, None);
        assert!(book.list(now).is_empty());
    }

    #[test]
    fn duration_limited_faults_expire_and_the_earlier_limit_wins() {
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "drop", "durationMs": 100}),
                json!({"kind": "malformed", "durationMs": 1000, "count": 1}),
            ],
            now,
        );
        let listed = book.list(now);
        assert_eq!(listed[0].expires_in_ms, Some(100));
        assert_eq!(listed[1].remaining, Some(1));
        assert_eq!(book.take(&DESCRIBE, Before, now).answer, Some(Answer::Drop));
        let later = now + Duration::from_millis(100);
        assert_eq!(
            book.take(&DESCRIBE, Before, later).answer,
            Some(Answer::Malformed)
        );
        assert_eq!(book.take(&DESCRIBE, Before, later).answer, None);
    }

    #[test]
    fn faults_match_action_and_public_key() {
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "throttle", "action": DESCRIBE_ACTION}),
                json!({"kind": "http", "status": 502, "publicKey": "pub-b"}),
            ],
            now,
        );
        assert_eq!(
            book.take(&DESCRIBE, Before, now).answer,
            Some(Answer::Throttle)
        );
        assert_eq!(
            book.take(&PROJECTS, Before, now).answer,
            Some(Answer::Http(502))
        );
        let anonymous = Call {
            action: None,
            public_key: None,
        };
        assert_eq!(book.take(&anonymous, Before, now).answer, None);
    }

    #[test]
    fn the_first_answer_wins_and_delays_add_up() {
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "latency", "latencyMs": 100, "count": 1}),
                json!({"kind": "http", "status": 503, "latencyMs": 50, "count": 1}),
                json!({"kind": "drop", "count": 1}),
            ],
            now,
        );
        let taken = book.take(&DESCRIBE, Before, now);
        assert_eq!(taken.delay, Duration::from_millis(150));
        assert_eq!(taken.answer, Some(Answer::Http(503)));
        // The drop fault was not used up by the call the http fault answered.
        assert_eq!(book.take(&DESCRIBE, Before, now).answer, Some(Answer::Drop));
    }

    #[test]
    fn omit_and_string_numbers_shape_only_successful_describe_answers() {
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "omit", "ids": ["uhost-1"], "count": 1}),
                json!({"kind": "omit", "ids": ["uhost-2"]}),
                json!({"kind": "retcode-as-string", "count": 2}),
            ],
            now,
        );
        let taken = book.take(&PROJECTS, After, now);
        assert!(taken.hidden.is_empty());
        assert!(taken.numbers_as_strings);
        let taken = book.take(&DESCRIBE, After, now);
        assert_eq!(
            taken.hidden,
            ["uhost-1".to_owned(), "uhost-2".to_owned()].into()
        );
        assert!(taken.numbers_as_strings);
        let taken = book.take(&DESCRIBE, After, now);
        assert_eq!(taken.hidden, ["uhost-2".to_owned()].into());
        assert!(!taken.numbers_as_strings);

        // A RetCode answer leaves them unused.
        book.inject(
            spec(json!({"kind": "retcode", "retCode": 2000, "count": 1})),
            now,
        )
        .unwrap();
        let taken = book.take(&DESCRIBE, After, now);
        assert!(taken.hidden.is_empty());
        assert_eq!(book.list(now).len(), 1);
    }

    #[test]
    fn an_after_action_stage_moves_latency_and_drop_past_the_action() {
        let error = |value| spec(value).effect().map(|_| ()).unwrap_err();
        assert_eq!(
            error(json!({"kind": "throttle", "stage": "after-action"})),
            FaultError::NotApplicable {
                kind: "throttle",
                field: "stage"
            }
        );
        assert!(
            serde_json::from_value::<FaultSpec>(json!({"kind": "drop", "stage": "later"})).is_err()
        );
        let now = Instant::now();
        let mut book = book(
            vec![
                json!({"kind": "drop", "stage": "after-action", "action": "StopCompShareInstance", "count": 1}),
                json!({"kind": "latency", "latencyMs": 70, "stage": "after-action", "count": 1}),
            ],
            now,
        );
        let stop = Call {
            action: Some("StopCompShareInstance"),
            public_key: Some("pub-a"),
        };
        // Not before the action, nor on another action.
        assert_eq!(book.take(&stop, Before, now), Taken::default());
        assert_eq!(book.take(&stop, After, now), Taken::default());
        assert_eq!(
            book.take(&DESCRIBE, AfterAction, now).delay,
            Duration::from_millis(70)
        );
        let taken = book.take(&stop, AfterAction, now);
        assert_eq!(
            (taken.answer, taken.delay),
            (Some(Answer::Drop), Duration::ZERO)
        );
        assert!(book.list(now).is_empty());
        assert_eq!(
            serde_json::to_value(spec(json!({"kind": "drop", "stage": "after-action"}))).unwrap()["stage"],
            "after-action"
        );
    }

    #[test]
    fn clearing_removes_everything() {
        let now = Instant::now();
        let mut book = book(
            vec![json!({"kind": "drop"}), json!({"kind": "throttle"})],
            now,
        );
        assert_eq!(
            book.list(now).iter().map(|f| f.id).collect::<Vec<_>>(),
            [1, 2]
        );
        book.clear();
        assert!(book.list(now).is_empty());
    }
}
