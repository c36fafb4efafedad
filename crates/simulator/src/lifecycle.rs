//! What happens to an instance over time: the timed transitions (`Initializing`, `Starting`,
//! `Stopping`, `Rebooting` → their final state), the per-instance operation lock, the scheduled
//! stop, and which state each action needs. Pure: the time is passed in.
//!
//! Nothing runs in the background. An instance carries what is due ([`Sim`]), and whoever reads or
//! writes the inventory first settles what has come due by then (`Inventory::settle`), so a
//! listing always shows the state the instance would have reached, and a test with paused tokio
//! time drives every transition.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use compshare_api::OPERATION_IN_PROGRESS;

use super::actions::{Action, ApiError};
use super::clock::Clock;

pub(super) const INITIALIZING: &str = "Initializing";
pub(super) const STARTING: &str = "Starting";
pub(super) const RUNNING: &str = "Running";
pub(super) const STOPPING: &str = "Stopping";
pub(super) const STOPPED: &str = "Stopped";
pub(super) const REBOOTING: &str = "Rebooting";

const STATE: &str = "State";
/// The scheduled stop, under the name of the vendor's pages and under the Go SDK's.
const SCHEDULER_STOP_TIME: &str = "SchedulerStopTime";
const STOP_SCHEDULER_TIME: &str = "StopSchedulerTime";

/// The documentation's TTL of the per-instance operation lock.
pub(super) const LOCK_TTL: Duration = Duration::from_secs(600);

/// How far ahead a scheduled stop must be: "需 >= 当前时间 + 300 秒".
pub(super) const MIN_STOP_LEAD_SECS: i64 = 300;

/// An unknown instance, or one of another account, project, region or zone. The documentation
/// gives no code for it: 8039 and the message are the simulator's guess (UHost's own range).
pub(super) const NOT_FOUND: i64 = 8039;
/// Another operation holds the instance's lock. The documentation gives the message
/// (`InstanceOperationInProgress`), not the code: 8040 is the simulator's guess.
pub(super) const LOCKED: i64 = 8040;
/// The instance is not in the state the action needs. The documentation gives neither code nor
/// message: both are the simulator's guess.
pub(super) const WRONG_STATE: i64 = 8041;

/// How long each transition takes, simulator-wide: short for tests, realistic for benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Transitions {
    /// `Initializing` → `Running` after `CreateCompShareInstance`.
    pub create_ms: u64,
    /// `Starting` → `Running`.
    pub start_ms: u64,
    /// `Stopping` → `Stopped` (after `StopCompShareInstance` or a scheduled stop).
    pub stop_ms: u64,
    /// `Rebooting` → `Running`.
    pub reboot_ms: u64,
}

impl Default for Transitions {
    fn default() -> Self {
        Transitions {
            create_ms: 3000,
            start_ms: 2000,
            stop_ms: 2000,
            reboot_ms: 2000,
        }
    }
}

impl Transitions {
    /// Every transition taking `ms` milliseconds.
    pub fn uniform(ms: u64) -> Self {
        Transitions {
            create_ms: ms,
            start_ms: ms,
            stop_ms: ms,
            reboot_ms: ms,
        }
    }
}

/// A state change that takes time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    Create,
    Start,
    Stop,
    Reboot,
}

impl Transition {
    fn during(self) -> &'static str {
        match self {
            Transition::Create => INITIALIZING,
            Transition::Start => STARTING,
            Transition::Stop => STOPPING,
            Transition::Reboot => REBOOTING,
        }
    }

    fn after(self) -> &'static str {
        match self {
            Transition::Create | Transition::Start | Transition::Reboot => RUNNING,
            Transition::Stop => STOPPED,
        }
    }

    fn delay(self, transitions: &Transitions) -> Duration {
        Duration::from_millis(match self {
            Transition::Create => transitions.create_ms,
            Transition::Start => transitions.start_ms,
            Transition::Stop => transitions.stop_ms,
            Transition::Reboot => transitions.reboot_ms,
        })
    }
}

/// A transition under way: the state it ends in, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pending {
    pub to: &'static str,
    pub at: Instant,
}

/// The per-instance operation lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lock {
    pub until: Instant,
    /// Taken by an action: released when its transition completes (or at the TTL). A lock set
    /// through the admin interface holds for its whole TTL.
    pub until_transition_ends: bool,
}

/// What the simulation keeps about an instance beside its served fields. Never served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Sim {
    pub pending: Option<Pending>,
    pub lock: Option<Lock>,
    /// When the scheduled stop fires.
    pub scheduled_stop: Option<Instant>,
}

impl Sim {
    /// When this instance next needs settling: its transition's end, else its scheduled stop (a
    /// stop that comes due during a transition waits for it to end).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pending.map(|p| p.at).or(self.scheduled_stop)
    }

    /// How long the lock still holds at `now`.
    pub(crate) fn lock_remaining(&self, now: Instant) -> Option<Duration> {
        self.lock
            .filter(|lock| lock.until > now)
            .map(|lock| lock.until - now)
    }

    /// Refuses an action while the lock holds.
    pub(crate) fn check_lock(&self, id: &str, now: Instant) -> Result<(), ApiError> {
        match self.lock_remaining(now) {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                LOCKED,
                format!(
                    "{OPERATION_IN_PROGRESS}: another operation on UHost [{id}] is in progress, try again later"
                ),
            )),
        }
    }

    /// Locks the instance for `ttl` from `now` (the admin interface).
    pub(crate) fn lock_for(&mut self, now: Instant, ttl: Duration) {
        self.lock = Some(Lock {
            until: later(now, ttl),
            until_transition_ends: false,
        });
    }

    /// Forgets a transition under way (an admin patch set the state itself), and the lock it held.
    pub(crate) fn drop_transition(&mut self) {
        self.pending = None;
        if self.lock.is_some_and(|lock| lock.until_transition_ends) {
            self.lock = None;
        }
    }
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::new(NOT_FOUND, format!("UHost [{id}] not found"))
}

/// The state `action` needs the instance in, if any.
fn required_state(action: Action) -> Option<&'static str> {
    match action {
        Action::Start | Action::Terminate => Some(STOPPED),
        Action::Stop | Action::Reboot => Some(RUNNING),
        _ => None,
    }
}

/// Refuses `action` on an instance in `state` when it needs another, naming both.
pub(super) fn check_state(action: Action, id: &str, state: &str) -> Result<(), ApiError> {
    match required_state(action) {
        Some(required) if state != required => Err(ApiError::new(
            WRONG_STATE,
            format!(
                "UHost [{id}] is {}: {} needs it {required}",
                if state.is_empty() {
                    "in no known state"
                } else {
                    state
                },
                action.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// The instance's `State`.
pub(super) fn state(fields: &Map<String, Value>) -> &str {
    fields.get(STATE).and_then(Value::as_str).unwrap_or("")
}

/// Starts `transition` at `at`: the in-between state now, the final one after its delay; the
/// operation lock is held until then.
pub(super) fn begin(
    fields: &mut Map<String, Value>,
    sim: &mut Sim,
    transition: Transition,
    at: Instant,
    clock: &Clock,
    transitions: &Transitions,
) {
    fields.insert(STATE.to_owned(), json!(transition.during()));
    fields.insert("UpdateTime".to_owned(), json!(clock.unix_secs(at)));
    sim.pending = Some(Pending {
        to: transition.after(),
        at: later(at, transition.delay(transitions)),
    });
    sim.lock = Some(Lock {
        until: later(at, LOCK_TTL),
        until_transition_ends: true,
    });
}

/// `at + delay`, or as late as the clock can tell apart when an admin gave an absurd delay (so
/// that no setting can make an action panic half done).
fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .or_else(|| at.checked_add(Duration::from_secs(u32::MAX.into())))
        .unwrap_or(at)
}

/// Ends `pending`: the final state, the times that go with it, the lock released.
fn finish(fields: &mut Map<String, Value>, sim: &mut Sim, pending: Pending, clock: &Clock) {
    let unix = clock.unix_secs(pending.at);
    fields.insert(STATE.to_owned(), json!(pending.to));
    fields.insert("UpdateTime".to_owned(), json!(unix));
    match pending.to {
        RUNNING => {
            fields.insert("StartTime".to_owned(), json!(unix));
        }
        STOPPED => {
            fields.insert("StopTime".to_owned(), json!(unix));
        }
        _ => {}
    }
    sim.pending = None;
    if sim.lock.is_some_and(|lock| lock.until_transition_ends) {
        sim.lock = None;
    }
}

/// Brings the instance to where it is at `now`: transitions that have ended end, a scheduled stop
/// that has come due stops a running instance as `StopCompShareInstance` would (and is dropped
/// otherwise). Each step is dated when it happened, not when it was noticed.
pub(super) fn settle(
    fields: &mut Map<String, Value>,
    sim: &mut Sim,
    now: Instant,
    clock: &Clock,
    transitions: &Transitions,
) {
    let mut last_step: Option<Instant> = None;
    loop {
        if let Some(pending) = sim.pending {
            if pending.at > now {
                return;
            }
            finish(fields, sim, pending, clock);
            last_step = Some(pending.at);
            continue;
        }
        let Some(stop_at) = sim.scheduled_stop.filter(|at| *at <= now) else {
            return;
        };
        // Fires at its time, or when the transition it waited for ended.
        let fires_at = last_step.map_or(stop_at, |step| step.max(stop_at));
        clear_scheduled_stop(fields, sim);
        if state(fields) == RUNNING {
            begin(fields, sim, Transition::Stop, fires_at, clock, transitions);
        }
    }
}

/// Schedules a stop at Unix second `unix` (validated by the caller).
pub(super) fn schedule_stop(
    fields: &mut Map<String, Value>,
    sim: &mut Sim,
    unix: i64,
    clock: &Clock,
) {
    fields.insert(SCHEDULER_STOP_TIME.to_owned(), json!(unix));
    fields.insert(STOP_SCHEDULER_TIME.to_owned(), json!(unix));
    sim.scheduled_stop = Some(clock.instant_of(unix));
}

pub(super) fn clear_scheduled_stop(fields: &mut Map<String, Value>, sim: &mut Sim) {
    fields.insert(SCHEDULER_STOP_TIME.to_owned(), json!(0));
    fields.insert(STOP_SCHEDULER_TIME.to_owned(), json!(0));
    sim.scheduled_stop = None;
}

/// The scheduled stop an admin patch asks for by setting either field: a positive Unix second
/// schedules it (without the 300 s lead the API demands, so tests need not wait), 0 clears it.
/// `None` when the patch names neither.
pub(super) fn scheduled_stop_in_patch(patch: &Value) -> Option<i64> {
    [SCHEDULER_STOP_TIME, STOP_SCHEDULER_TIME]
        .iter()
        .find_map(|name| patch.get(*name).and_then(Value::as_i64))
}

/// Whether the instance is billed as Spot (`ChargeType: Spot`, or `IsSpot` true).
pub(super) fn is_spot(fields: &Map<String, Value>) -> bool {
    fields.get("ChargeType").and_then(Value::as_str) == Some("Spot")
        || match fields.get("IsSpot") {
            Some(Value::Bool(spot)) => *spot,
            Some(Value::String(spot)) => {
                spot.eq_ignore_ascii_case("true") || spot.eq_ignore_ascii_case("yes")
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    struct World {
        fields: Map<String, Value>,
        sim: Sim,
        clock: Clock,
        t0: Instant,
        transitions: Transitions,
    }

    impl World {
        fn new(state: &str) -> World {
            let t0 = Instant::now();
            World {
                fields: json!({"State": state}).as_object().unwrap().clone(),
                sim: Sim::default(),
                clock: Clock::anchored(t0, 1_700_000_000_000),
                t0,
                transitions: Transitions {
                    create_ms: 3000,
                    start_ms: 2000,
                    stop_ms: 1000,
                    reboot_ms: 500,
                },
            }
        }

        fn begin(&mut self, transition: Transition, after: Duration) {
            begin(
                &mut self.fields,
                &mut self.sim,
                transition,
                self.t0 + after,
                &self.clock,
                &self.transitions,
            );
        }

        /// The state at `after` past the start.
        fn at(&mut self, after: Duration) -> String {
            settle(
                &mut self.fields,
                &mut self.sim,
                self.t0 + after,
                &self.clock,
                &self.transitions,
            );
            state(&self.fields).to_owned()
        }
    }

    #[test]
    fn each_transition_passes_through_its_state_and_ends_after_its_delay() {
        for (transition, from, during, to, delay) in [
            (Transition::Create, "", INITIALIZING, RUNNING, 3000),
            (Transition::Start, STOPPED, STARTING, RUNNING, 2000),
            (Transition::Stop, RUNNING, STOPPING, STOPPED, 1000),
            (Transition::Reboot, RUNNING, REBOOTING, RUNNING, 500),
        ] {
            let mut w = World::new(from);
            w.begin(transition, Duration::ZERO);
            assert_eq!(w.at(Duration::ZERO), during);
            assert_eq!(w.at((delay - 1) * MS), during, "{transition:?}");
            assert_eq!(w.at(delay * MS), to, "{transition:?}");
            assert_eq!(w.sim, Sim::default());
        }
    }

    #[test]
    fn settling_late_dates_the_change_when_it_happened() {
        let mut w = World::new(RUNNING);
        w.begin(Transition::Stop, Duration::from_secs(10));
        assert_eq!(w.fields["UpdateTime"], 1_700_000_010);
        // Noticed an hour later, dated 1 s after the stop began.
        assert_eq!(w.at(Duration::from_secs(3600)), STOPPED);
        assert_eq!(w.fields["StopTime"], 1_700_000_011);
        assert_eq!(w.fields["UpdateTime"], 1_700_000_011);
        w.begin(Transition::Start, Duration::from_secs(3600));
        assert_eq!(w.at(Duration::from_secs(3602)), RUNNING);
        assert_eq!(w.fields["StartTime"], 1_700_003_602);
    }

    #[test]
    fn an_action_holds_the_lock_until_its_transition_ends() {
        let mut w = World::new(RUNNING);
        w.begin(Transition::Reboot, Duration::ZERO);
        let during = w.t0 + 499 * MS;
        assert_eq!(w.sim.lock_remaining(during), Some(LOCK_TTL - 499 * MS));
        let refused = w.sim.check_lock("uhost-1", during).unwrap_err();
        assert_eq!(refused.code, LOCKED);
        assert!(
            refused.message.starts_with(OPERATION_IN_PROGRESS),
            "{}",
            refused.message
        );
        w.at(500 * MS);
        assert_eq!(w.sim.lock, None);
        assert!(w.sim.check_lock("uhost-1", w.t0 + 500 * MS).is_ok());
    }

    #[test]
    fn a_lock_expires_at_its_ttl_and_an_admin_lock_outlives_transitions() {
        let mut w = World::new(RUNNING);
        // A transition longer than the TTL: the lock lapses first.
        w.transitions.stop_ms = 700_000;
        w.begin(Transition::Stop, Duration::ZERO);
        assert!(w.sim.check_lock("u", w.t0 + LOCK_TTL - MS).is_err());
        assert!(w.sim.check_lock("u", w.t0 + LOCK_TTL).is_ok());
        assert_eq!(w.at(LOCK_TTL), STOPPING);

        let mut w = World::new(STOPPED);
        w.begin(Transition::Start, Duration::ZERO);
        w.sim.lock_for(w.t0, Duration::from_secs(60));
        assert_eq!(w.at(Duration::from_secs(2)), RUNNING);
        assert!(
            w.sim
                .check_lock("u", w.t0 + Duration::from_secs(59))
                .is_err()
        );
        assert!(
            w.sim
                .check_lock("u", w.t0 + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn dropping_a_transition_releases_its_lock_only() {
        let mut w = World::new(RUNNING);
        w.begin(Transition::Stop, Duration::ZERO);
        w.sim.drop_transition();
        assert_eq!(w.sim, Sim::default());
        w.sim.lock_for(w.t0, Duration::from_secs(5));
        w.sim.drop_transition();
        assert!(w.sim.lock.is_some());
    }

    #[test]
    fn actions_need_their_states_and_say_which() {
        assert!(check_state(Action::Start, "u", STOPPED).is_ok());
        assert!(check_state(Action::Stop, "u", RUNNING).is_ok());
        assert!(check_state(Action::Reboot, "u", RUNNING).is_ok());
        assert!(check_state(Action::Terminate, "u", STOPPED).is_ok());
        assert!(check_state(Action::UpdateStopScheduler, "u", STOPPED).is_ok());
        assert!(check_state(Action::DeleteStopScheduler, "u", INITIALIZING).is_ok());
        let error = check_state(Action::Stop, "uhost-1", STOPPED).unwrap_err();
        assert_eq!(
            error,
            ApiError::new(
                WRONG_STATE,
                "UHost [uhost-1] is Stopped: StopCompShareInstance needs it Running"
            )
        );
        let error = check_state(Action::Terminate, "uhost-1", RUNNING).unwrap_err();
        assert_eq!(
            error.message,
            "UHost [uhost-1] is Running: TerminateCompShareInstance needs it Stopped"
        );
        for state in [
            STARTING,
            STOPPING,
            REBOOTING,
            INITIALIZING,
            "Install Fail",
            "",
        ] {
            assert!(check_state(Action::Start, "u", state).is_err(), "{state}");
            assert!(check_state(Action::Reboot, "u", state).is_err(), "{state}");
        }
    }

    #[test]
    fn a_scheduled_stop_stops_a_running_instance_when_it_comes_due() {
        let mut w = World::new(RUNNING);
        let clock = w.clock;
        schedule_stop(&mut w.fields, &mut w.sim, 1_700_000_400, &clock);
        assert_eq!(w.fields["SchedulerStopTime"], 1_700_000_400);
        assert_eq!(w.fields["StopSchedulerTime"], 1_700_000_400);
        assert_eq!(w.sim.deadline(), Some(w.t0 + Duration::from_secs(400)));
        assert_eq!(w.at(Duration::from_secs(399)), RUNNING);
        assert_eq!(w.at(Duration::from_secs(400)), STOPPING);
        assert_eq!(w.fields["SchedulerStopTime"], 0);
        assert!(
            w.sim
                .check_lock("u", w.t0 + Duration::from_secs(400))
                .is_err()
        );
        // Noticed late, the whole stop has happened, dated from the scheduled time.
        let mut late = World::new(RUNNING);
        let clock = late.clock;
        schedule_stop(&mut late.fields, &mut late.sim, 1_700_000_400, &clock);
        assert_eq!(late.at(Duration::from_secs(5000)), STOPPED);
        assert_eq!(late.fields["StopTime"], 1_700_000_401);
        assert_eq!(late.sim, Sim::default());
    }

    #[test]
    fn a_scheduled_stop_waits_for_a_transition_and_is_dropped_on_a_stopped_instance() {
        let mut w = World::new(RUNNING);
        let clock = w.clock;
        schedule_stop(&mut w.fields, &mut w.sim, 1_700_000_001, &clock);
        w.begin(Transition::Reboot, 800 * MS);
        // Due at 1 s, while rebooting until 1.3 s: the stop fires when the reboot ends.
        assert_eq!(w.sim.deadline(), Some(w.t0 + 1300 * MS));
        assert_eq!(w.at(1200 * MS), REBOOTING);
        assert_eq!(w.at(1300 * MS), STOPPING);
        assert_eq!(w.at(2299 * MS), STOPPING);
        assert_eq!(w.at(2300 * MS), STOPPED);

        let mut w = World::new(STOPPED);
        let clock = w.clock;
        schedule_stop(&mut w.fields, &mut w.sim, 1_700_000_001, &clock);
        assert_eq!(w.at(Duration::from_secs(2)), STOPPED);
        assert_eq!(w.sim, Sim::default());
        assert_eq!(w.fields["StopSchedulerTime"], 0);
    }

    #[test]
    fn spot_is_read_from_either_field_and_admin_patches_name_a_stop_time() {
        let spot = |v: Value| is_spot(v.as_object().unwrap());
        assert!(spot(json!({"ChargeType": "Spot"})));
        assert!(spot(json!({"ChargeType": "Dynamic", "IsSpot": true})));
        assert!(spot(json!({"IsSpot": "Yes"})));
        assert!(!spot(json!({"ChargeType": "Month", "IsSpot": false})));
        assert_eq!(
            scheduled_stop_in_patch(&json!({"SchedulerStopTime": 5})),
            Some(5)
        );
        assert_eq!(
            scheduled_stop_in_patch(&json!({"StopSchedulerTime": 0})),
            Some(0)
        );
        assert_eq!(scheduled_stop_in_patch(&json!({"State": "Running"})), None);
    }
}
