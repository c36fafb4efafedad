//! One poll group: the instances of one account, region and project, observed together by a
//! single task that makes one call at a time.
//!
//! The schedule is kept by instance id, not by resource: several resources naming one machine
//! (in one namespace or many) cost one id in one call per interval, at the shortest of their poll
//! intervals, and every one of them gets its own observation from the answer. An instance on its
//! way somewhere (`Starting`, `Stopping`, …) is polled every [`MOVING_INTERVAL`] until it settles,
//! batched with the other moving instances of its group; settled ones keep their intervals.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use compact_str::CompactString;
use rand::SeedableRng;
use rand::rngs::StdRng;
use smallvec::SmallVec;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::budget::Budget;
use super::observation::{Observation, Outcome, PackedInstance, Record};
use super::refreshes::{Handling, REFRESH_SPACING, RefreshShares};
use super::schedule::{Page, Schedule};
use super::{GroupKey, Key, ResourceKey, Target};
use crate::metrics::{BackoffLabels, Metrics};
use compshare_api::{
    CallError, Client, Credentials, DescribeRequest, DescribeResponse, Disposition, Instance, Phase,
};
use compshare_api::{DESCRIBE_ACTION, MAX_IDS_PER_CALL};

/// An instance id.
type Id = CompactString;

/// How often an instance on its way somewhere is polled, so that a wait for it to settle ends
/// within seconds of it settling.
pub(super) const MOVING_INTERVAL: Duration = Duration::from_secs(3);

/// How long, in intervals, a group whose members were all observed by a listing (discovery's)
/// makes no call of its own: a listing every interval, jittered by up to a tenth, keeps arriving
/// before the group's next slot, and a listing that stops leaves members at most this stale once.
pub(super) const LISTING_HOLD: f64 = 1.25;

/// What a group shares with its task.
pub(super) struct Group {
    pub key: GroupKey,
    state: Mutex<GroupState>,
    notify: Notify,
    credentials: Credentials,
    budget: Arc<Budget>,
    refreshes: Arc<RefreshShares>,
}

/// The resources naming an instance id: almost always one, kept without an allocation of its
/// own.
type Naming = SmallVec<[Key; 1]>;

struct GroupState {
    /// The instance ids, each with its slot and the resources naming it: one table for both
    /// (two cost about 50 bytes more per resource: 681 against 630; BENCHMARKS.md, Memory).
    schedule: Schedule<Id, Naming>,
    /// The ids whose instance was last seen on its way somewhere.
    moving: std::collections::HashSet<Id>,
    /// Boxed: a hash table keeps up to twice as many slots as entries, and a slot is as large
    /// as its value.
    members: HashMap<Key, Box<Member>>,
    /// Refreshes waiting for the end of their resource's refresh spacing.
    deferred: Vec<(Instant, Key)>,
    last_success: Option<Instant>,
    /// Until when the group's calls are held because a listing observed its members.
    listed_until: Option<Instant>,
    /// Staleness counts from here until the first success.
    created: Instant,
    backoff_policy: ExponentialBuilder,
    backoff: ExponentialBackoff,
    backoff_until: Option<Instant>,
    rng: StdRng,
}

struct Member {
    uhost_id: Id,
    zone: Option<Box<str>>,
    generation: i64,
    interval: Duration,
    observation: Option<Record>,
    /// Boxed apart: few members are ever asked for a refresh, and every member is kept.
    refreshing: Option<Box<Refreshing>>,
}

/// A member's refresh requests.
#[derive(Default)]
struct Refreshing {
    /// A refresh request waiting for the next call that includes this member.
    pending: Option<Box<str>>,
    /// When a refresh of this member was last polled right away.
    at: Option<Instant>,
    /// The latest refresh request an observation answered (what its observation carries).
    answered: Option<Box<str>>,
}

impl Member {
    fn pending_refresh(&self) -> Option<&str> {
        self.refreshing.as_ref()?.pending.as_deref()
    }

    fn take_pending_refresh(&mut self) -> Option<Box<str>> {
        self.refreshing.as_mut()?.pending.take()
    }

    fn answered_refresh(&self) -> Option<&str> {
        self.refreshing.as_ref()?.answered.as_deref()
    }

    fn refreshing(&mut self) -> &mut Refreshing {
        self.refreshing.get_or_insert_default()
    }
}

/// What the task needs beyond its group.
pub(super) struct Wiring {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub wake: mpsc::UnboundedSender<Key>,
}

/// A group's members, for the gauges.
pub(super) struct GroupGauges {
    pub members: usize,
    /// How many members' instances were last seen in each state (`None`: not yet seen). Counted
    /// under the lock: a list of every member's state would be megabytes per scrape at 100,000.
    pub states: BTreeMap<Option<CompactString>, i64>,
    /// Since the last success, or since the group was created before the first.
    pub since_last_success: Duration,
    /// The shortest interval of its members.
    pub interval: Option<Duration>,
    /// Whether a listing observes the members now, instead of calls by id.
    pub listed: bool,
}

impl Group {
    pub(super) fn new(
        key: GroupKey,
        credentials: Credentials,
        budget: Arc<Budget>,
        refreshes: Arc<RefreshShares>,
        schedule: Schedule<Id, Naming>,
        backoff_policy: ExponentialBuilder,
    ) -> Self {
        Group {
            key,
            state: Mutex::new(GroupState {
                schedule,
                moving: Default::default(),
                members: HashMap::new(),
                deferred: Vec::new(),
                last_success: None,
                listed_until: None,
                created: Instant::now(),
                backoff_policy,
                backoff: backoff_policy.build(),
                backoff_until: None,
                rng: StdRng::from_os_rng(),
            }),
            notify: Notify::new(),
            credentials,
            budget,
            refreshes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().expect("group lock")
    }

    /// Adds or updates a member, and wakes the task when it has something new to do.
    pub(super) fn upsert(&self, key: &Key, target: &Target) {
        let now = Instant::now();
        let id = Id::from(target.uhost_id.as_str());
        let mut guard = self.state();
        let state = &mut *guard;
        // The id is immutable in the CRD; one changed behind its back is a new member.
        if state.members.get(key).is_some_and(|m| m.uhost_id != id) {
            state.remove(key, &self.refreshes, now);
        }
        let zone: Option<Box<str>> = target.zone.as_deref().map(Box::from);
        let woken = match state.members.get_mut(key) {
            Some(member) => {
                // A new spec is answered by an observation made for it, right away (a changed
                // zone also changes what the answer means).
                let respecified = member.generation != target.generation || member.zone != zone;
                member.zone = zone;
                member.generation = target.generation;
                member.interval = target.interval;
                let moved = state.reschedule(&id, now);
                if respecified || target.observe_now {
                    state.schedule.mark_urgent(&id, now);
                }
                respecified || target.observe_now || moved
            }
            None => {
                state.members.insert(
                    key.clone(),
                    Box::new(Member {
                        uhost_id: id.clone(),
                        zone,
                        generation: target.generation,
                        interval: target.interval,
                        observation: None,
                        refreshing: None,
                    }),
                );
                self.refreshes.join(&key.namespace);
                match state.schedule.get_mut(&id) {
                    Some(naming) => {
                        naming.push(key.clone());
                        state.reschedule(&id, now);
                    }
                    None => {
                        // A new id: polled at its one member's interval (it is not moving).
                        let naming = Naming::from_elem(key.clone(), 1);
                        let (interval, rng) = (target.interval, &mut state.rng);
                        state
                            .schedule
                            .insert(id.clone(), naming, interval, now, rng);
                    }
                }
                // Its first observation is owed at once, even when the id is polled already.
                state.schedule.mark_urgent(&id, now);
                true
            }
        };
        drop(guard);
        if woken {
            self.notify.notify_one();
        }
    }

    /// Removes a member; returns whether the group is now empty.
    pub(super) fn remove(&self, key: &ResourceKey) -> bool {
        let mut state = self.state();
        state.remove(key, &self.refreshes, Instant::now());
        state.members.is_empty()
    }

    /// Asks for an observation that will carry `token` (see `refreshes` for when it is made).
    /// `None` when there is nothing new to do: the token is already answered or pending.
    pub(super) fn refresh(&self, key: &ResourceKey, token: &str) -> Option<Handling> {
        let now = Instant::now();
        let mut state = self.state();
        let member = state.members.get_mut(key)?;
        if member.answered_refresh() == Some(token) || member.pending_refresh() == Some(token) {
            return None;
        }
        let refreshing = member.refreshing();
        let already_waiting = refreshing.pending.is_some();
        refreshing.pending = Some(token.into());
        let spaced_until = refreshing
            .at
            .map(|at| at + REFRESH_SPACING)
            .filter(|until| now < *until);
        let handling = if already_waiting {
            // A newer value while one waits merges into it.
            Handling::Merged
        } else if let Some(until) = spaced_until {
            let key = Arc::clone(state.members.get_key_value(key)?.0);
            state.deferred.push((until, key));
            Handling::Deferred
        } else {
            state.urgent_refresh(key, &self.refreshes, now)
        };
        drop(state);
        if handling != Handling::Merged {
            self.notify.notify_one();
        }
        Some(handling)
    }

    /// A member's latest observation, unpacked (outside the lock).
    pub(super) fn observation(&self, key: &ResourceKey) -> Option<Observation> {
        let (record, refresh) = {
            let state = self.state();
            let member = state.members.get(key)?;
            (
                member.observation.clone()?,
                member.answered_refresh().map(Box::from),
            )
        };
        Some(record.unpack(refresh))
    }

    pub(super) fn gauges(&self) -> GroupGauges {
        let state = self.state();
        GroupGauges {
            members: state.members.len(),
            states: state
                .members
                .values()
                .fold(BTreeMap::new(), |mut counts, m| {
                    let seen = m.observation.as_ref().and_then(|o| o.instance.as_ref());
                    *counts.entry(seen.map(|i| i.state.clone())).or_default() += 1;
                    counts
                }),
            since_last_success: state.last_success.unwrap_or(state.created).elapsed(),
            interval: state.members.values().map(|m| m.interval).min(),
            listed: state
                .listed_until
                .is_some_and(|until| until > Instant::now()),
        }
    }

    /// Takes the members' observations from `listing`, every instance of the group's region and
    /// project (discovery lists them): what by-id calls would have asked, for no call of the
    /// group's own. Returns the members whose observation changed (they are woken) and wakes the
    /// task, whose next slots moved. Members owed an urgent call (a first observation, a new
    /// spec, a refresh) and instances on their way somewhere keep theirs: the listing may predate
    /// what they wait for, and moving instances are polled faster than any listing.
    pub(super) fn apply_listing(&self, listing: &[Instance]) -> Vec<Key> {
        let now = Instant::now();
        let mut state = self.state();
        let state = &mut *state;
        let covered: Vec<Id> = state
            .schedule
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !state.schedule.is_urgent(*id) && !state.moving.contains(*id))
            .cloned()
            .collect();
        let covered_ids: std::collections::HashSet<&Id> = covered.iter().collect();
        // Only the group's own instances are kept (a region may hold many more).
        let answer = Answer {
            found: listing
                .iter()
                .filter(|i| covered_ids.contains(&i.u_host_id))
                .map(|i| (i.u_host_id.clone(), i.clone()))
                .collect(),
            unreadable: HashMap::new(),
            anonymous: None,
        };
        state.note_moving(&covered, &answer, now);
        let asked = state.asked(&covered);
        let changed = state.observe(&asked, &Ok(answer), false);
        state.last_success = Some(now);
        let settled: Vec<Id> = covered
            .into_iter()
            .filter(|id| !state.moving.contains(id))
            .collect();
        state.listed_until = state.schedule.covered(&settled, now, LISTING_HOLD);
        self.notify.notify_one();
        changed
    }
}

impl GroupState {
    /// Schedules `id` at the shortest interval of the members naming it (or faster while the
    /// instance moves); whether that changed.
    fn reschedule(&mut self, id: &Id, now: Instant) -> bool {
        let naming = self.schedule.get(id).into_iter().flatten();
        let Some(interval) = naming
            .filter_map(|key| self.members.get(key))
            .map(|m| m.interval)
            .min()
        else {
            return false;
        };
        let moving = self.moving.contains(id).then_some(MOVING_INTERVAL);
        let interval = moving.map_or(interval, |fast| interval.min(fast));
        self.schedule.set_interval(id, interval, now, &mut self.rng)
    }

    /// The members naming `ids`, with the generation each is asked for.
    fn asked(&self, ids: &[Id]) -> HashMap<Key, i64> {
        ids.iter()
            .flat_map(|id| self.schedule.get(id).into_iter().flatten())
            .filter_map(|key| Some((key.clone(), self.members.get(key)?.generation)))
            .collect()
    }

    fn remove(&mut self, key: &ResourceKey, refreshes: &RefreshShares, now: Instant) {
        let Some(member) = self.members.remove(key) else {
            return;
        };
        refreshes.leave(&key.namespace);
        let id = &member.uhost_id;
        let Some(naming) = self.schedule.get_mut(id) else {
            return;
        };
        naming.retain(|k| **k != *key);
        if naming.is_empty() {
            self.schedule.remove(id);
            self.moving.remove(id);
        } else {
            self.reschedule(id, now);
        }
    }

    /// Polls a member's refresh right away if its namespace's share allows.
    fn urgent_refresh(
        &mut self,
        key: &ResourceKey,
        refreshes: &RefreshShares,
        now: Instant,
    ) -> Handling {
        if !refreshes.admit(&key.namespace, now) {
            return Handling::Merged;
        }
        let Some(member) = self.members.get_mut(key) else {
            return Handling::Merged;
        };
        member.refreshing().at = Some(now);
        let id = member.uhost_id.clone();
        self.schedule.mark_urgent(&id, now);
        Handling::Immediate
    }

    /// Deferred refreshes whose time has come.
    fn release_deferred(&mut self, refreshes: &RefreshShares, now: Instant) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.deferred = waiting;
        for (_, key) in due {
            if self
                .members
                .get(&*key)
                .is_some_and(|m| m.pending_refresh().is_some())
            {
                self.urgent_refresh(&key, refreshes, now);
            }
        }
    }

    fn next_deferred(&self) -> Option<Instant> {
        self.deferred.iter().map(|(at, _)| *at).min()
    }
}

enum Next {
    Call(Page<Id>),
    WaitUntil(Option<Instant>),
}

/// The group's task: waits for the next due page, spends budget, calls, and publishes what
/// changed. Runs until aborted by the poller when the group empties.
pub(super) async fn run(group: Arc<Group>, wiring: Arc<Wiring>) {
    loop {
        let next = {
            let mut state = group.state();
            let state = &mut *state;
            let now = Instant::now();
            state.release_deferred(&group.refreshes, now);
            match state.backoff_until.filter(|until| *until > now) {
                Some(until) => Next::WaitUntil(Some(until)),
                None => match state.schedule.take_due(now, &mut state.rng) {
                    Some(page) => Next::Call(page),
                    None => Next::WaitUntil(
                        state
                            .schedule
                            .next_due()
                            .into_iter()
                            .chain(state.next_deferred())
                            .min(),
                    ),
                },
            }
        };
        match next {
            Next::WaitUntil(until) => tokio::select! {
                () = tokio::time::sleep_until(until.unwrap_or_else(Instant::now)),
                    if until.is_some() => {}
                () = group.notify.notified() => {}
            },
            Next::Call(page) => call(&group, &wiring, page).await,
        }
    }
}

async fn call(group: &Group, wiring: &Wiring, page: Page<Id>) {
    // The generation each member is asked for: a spec edited during the call is answered by the
    // next one.
    let asked = group.state().asked(&page.keys);
    if asked.is_empty() {
        return;
    }
    let request = DescribeRequest {
        region: group.key.region.clone(),
        project_id: group.key.project_id.clone(),
        // Limit defaults to 20: ask for a whole page, or ids past the 20th go missing.
        limit: Some(MAX_IDS_PER_CALL as u32),
        uhost_ids: page.keys.iter().map(|id| id.to_string()).collect(),
        ..DescribeRequest::default()
    };

    let waited = group.budget.spend().await;
    wiring
        .metrics
        .budget_wait_seconds
        .observe(waited.as_secs_f64());
    let started = Instant::now();
    let result = wiring.client.describe(&group.credentials, &request).await;
    wiring.metrics.record_call(
        DESCRIBE_ACTION,
        started.elapsed(),
        result.as_ref().map(|_| ()),
    );

    let failure = result.as_ref().err().cloned();
    let (changed, backoff) = {
        let mut state = group.state();
        state.apply(&page, &asked, result, Instant::now(), &wiring.metrics)
    };
    if let (Some(error), Some(delay)) = (failure, backoff) {
        tracing::info!(
            region = %group.key.region,
            project = group.key.project_id.as_deref().unwrap_or(""),
            account = %group.key.account_tag(),
            %error,
            ?delay,
            "backing off before the next CompShare call of this group"
        );
    }
    for key in changed {
        // The receiver lives as long as the controller; if it is gone, so is the process.
        let _ = wiring.wake.send(key);
    }
}

/// A call's answer, by instance id.
struct Answer {
    found: HashMap<Id, Instance>,
    /// Elements that could not be read, by their id.
    unreadable: HashMap<Id, String>,
    /// Why an element without a readable id could not be read: any instance missing from the
    /// answer may be that one, so none of them is reported as not found.
    anonymous: Option<String>,
}

impl Answer {
    fn of(response: DescribeResponse) -> Answer {
        let mut answer = Answer {
            found: response
                .u_host_set
                .into_iter()
                .map(|i| (i.u_host_id.clone(), i))
                .collect(),
            unreadable: HashMap::new(),
            anonymous: None,
        };
        for element in response.unreadable {
            match element.id {
                Some(id) => {
                    answer.unreadable.insert(id, element.problem);
                }
                None => answer.anonymous = Some(element.problem),
            }
        }
        answer
    }

    /// What the answer says of instance `id` for a member expecting `zone`, with the instance
    /// `last_known` before.
    fn about(
        &self,
        id: &str,
        zone: Option<&str>,
        last_known: Option<&PackedInstance>,
    ) -> (Outcome, Option<PackedInstance>) {
        if let Some(seen) = self.found.get(id) {
            return (outcome_of(seen, zone), Some(PackedInstance::pack(seen)));
        }
        let malformed = |problem: String| Outcome::failed(CallError::Malformed(problem));
        let outcome = if let Some(problem) = self.unreadable.get(id) {
            malformed(problem.clone())
        } else if let Some(problem) = &self.anonymous {
            malformed(format!(
                "{id} is not in the answer, which has an element that could not be read ({problem})"
            ))
        } else {
            Outcome::NotFound
        };
        (outcome, last_known.cloned())
    }
}

impl GroupState {
    /// Records the result of a call for `page` (`asked`: the generation each member was asked
    /// for); returns the members whose observation changed and the backoff chosen, if the failure
    /// calls for one.
    fn apply(
        &mut self,
        page: &Page<Id>,
        asked: &HashMap<Key, i64>,
        result: Result<DescribeResponse, CallError>,
        now: Instant,
        metrics: &Metrics,
    ) -> (Vec<Key>, Option<Duration>) {
        let mut backoff = None;
        let answer = match result {
            Ok(response) => {
                self.last_success = Some(now);
                self.backoff = self.backoff_policy.build();
                self.schedule.polled(&page.keys);
                Ok(Answer::of(response))
            }
            Err(error) if error.is_retryable() => {
                let delay = self.backoff.next().unwrap_or(Duration::from_secs(60));
                self.backoff_until = Some(now + delay);
                let reason = match error.disposition() {
                    Disposition::Throttled => "throttled",
                    _ => "transient",
                };
                metrics
                    .cloud_backoffs
                    .get_or_create(&BackoffLabels { reason })
                    .inc();
                metrics.cloud_backoff_seconds.observe(delay.as_secs_f64());
                backoff = Some(delay);
                if page.urgent {
                    self.schedule.requeue_urgent(&page.keys, now);
                }
                Err(error)
            }
            Err(error) => {
                // Retrying cannot help (credentials, permissions, parameters): try again at the
                // normal interval, not in a loop.
                self.schedule.polled(&page.keys);
                Err(error)
            }
        };

        if let Ok(answer) = &answer {
            self.note_moving(&page.keys, answer, now);
        }
        (self.observe(asked, &answer, true), backoff)
    }

    /// Instances on their way somewhere are polled faster until they settle.
    fn note_moving(&mut self, ids: &[Id], answer: &Answer, now: Instant) {
        for id in ids {
            // An id whose members all left during the call is not kept.
            if self.schedule.get(id).is_none() {
                continue;
            }
            let moving = answer
                .found
                .get(id)
                .is_some_and(|i| Phase::of(&i.state) == Phase::Moving);
            let changed = if moving {
                self.moving.insert(id.clone())
            } else {
                self.moving.remove(id)
            };
            if changed {
                self.reschedule(id, now);
            }
        }
    }

    /// Records what `answer` says of the members `asked` (with the generation each was asked
    /// for); `answers_refresh`: whether it answers their pending refresh requests (a listing
    /// made by someone else may predate them). Returns the members whose observation changed.
    fn observe(
        &mut self,
        asked: &HashMap<Key, i64>,
        answer: &Result<Answer, CallError>,
        answers_refresh: bool,
    ) -> Vec<Key> {
        let mut changed = Vec::new();
        for (key, &generation) in asked {
            let Some(member) = self.members.get_mut(key) else {
                continue;
            };
            let previous = member.observation.as_ref();
            // What was known of the instance, as long as it was observed for this same spec:
            // facts seen under another generation may describe another lookup.
            let last_known = previous
                .filter(|p| p.generation == generation)
                .and_then(|p| p.instance.as_ref());
            let (outcome, instance) = match answer {
                Ok(answer) => answer.about(&member.uhost_id, member.zone.as_deref(), last_known),
                Err(error) => (Outcome::failed(error.clone()), last_known.cloned()),
            };
            let observation = Record {
                instance,
                outcome,
                generation,
            };
            let mut changed_refresh = false;
            if answers_refresh && let Some(token) = member.take_pending_refresh() {
                let refreshing = member.refreshing();
                changed_refresh = refreshing.answered.as_ref() != Some(&token);
                refreshing.answered = Some(token);
            }
            let previous = member.observation.as_ref();
            if previous != Some(&observation) || changed_refresh {
                if let Some(instance) = &observation.instance
                    && !instance.dropped_fields.is_empty()
                    && previous.and_then(|p| p.instance.as_ref()) != Some(instance)
                {
                    tracing::warn!(
                        uhost_id = %member.uhost_id,
                        fields = ?instance.dropped_fields,
                        "fields of the instance have a shape the operator cannot read; they are left out"
                    );
                }
                member.observation = Some(observation);
                changed.push(key.clone());
            }
        }
        changed
    }
}

fn outcome_of(instance: &Instance, zone: Option<&str>) -> Outcome {
    match zone {
        Some(zone) if !instance.zone.is_empty() && instance.zone != zone => Outcome::ZoneMismatch {
            actual: instance.zone.to_string(),
        },
        _ => Outcome::Found,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use compshare_api::{Credentials, DescribeResponse, Instance};

    use super::*;
    use crate::poller::{BudgetConfig, ScheduleConfig};

    /// What the group holds per member once observed, deterministically (run with
    /// `--nocapture` to see the figure; BENCHMARKS.md, Memory): the member, its place in the
    /// schedule and the index by id, and its packed observation (its key is the cache's). The
    /// bound keeps it from growing back unnoticed.
    #[test]
    fn an_observed_member_costs_what_its_observation_packs_into() {
        const N: usize = 1000;
        let credentials = Credentials::new("public", "private");
        let budget = BudgetConfig {
            calls_per_minute: NonZeroU32::new(600).unwrap(),
            burst: NonZeroU32::new(10).unwrap(),
        };
        let schedule = ScheduleConfig {
            page_size: 100,
            urgent_window: Duration::from_millis(50),
            max_jitter: Duration::from_secs(1),
        };
        let group = Group::new(
            GroupKey::new(&credentials, "cn-wlcb", None),
            credentials.clone(),
            Arc::new(Budget::new(budget)),
            Arc::new(RefreshShares::new(600)),
            Schedule::new(schedule),
            ExponentialBuilder::default(),
        );
        let metrics = Metrics::new();
        let id = |i: usize| format!("uhost-{i:08}");

        // The keys are the cache's, which the poller shares: not the member's cost.
        let keys: Vec<Key> = (0..N)
            .map(|i| {
                Arc::new(ResourceKey {
                    namespace: "scale-1733127480".into(),
                    name: format!("instance-{i:05}"),
                })
            })
            .collect();
        let before = crate::allocations::held();
        for (i, key) in keys.iter().enumerate() {
            let target = Target {
                credentials: credentials.clone(),
                region: "cn-wlcb".into(),
                project_id: None,
                uhost_id: id(i),
                zone: None,
                interval: Duration::from_secs(10),
                generation: 1,
                observe_now: false,
            };
            group.upsert(key, &target);
        }
        let mut state = group.state();
        for ids in (0..N).collect::<Vec<_>>().chunks(100) {
            let page = Page {
                keys: ids.iter().map(|&i| Id::from(id(i))).collect(),
                urgent: false,
            };
            let asked = state.asked(&page.keys);
            // A running machine as the scale benchmark's simulator answers (BENCHMARKS.md).
            let answer = DescribeResponse {
                u_host_set: ids
                    .iter()
                    .map(|&i| {
                        let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
                        let element = compshare_test_support::running(&id(i), &ip);
                        Instance::read(&element).expect("a running machine")
                    })
                    .collect(),
                ..DescribeResponse::default()
            };
            let (changed, _) = state.apply(&page, &asked, Ok(answer), Instant::now(), &metrics);
            assert_eq!(changed.len(), ids.len());
        }
        let held = crate::allocations::held() - before;
        let per_member = held / N as isize;
        println!(
            "bytes per observed member: {per_member} ({} inline as a member, {} as its record)",
            size_of::<Member>(),
            size_of::<Record>(),
        );
        assert!(per_member < 720, "{per_member} bytes per observed member");
    }
}
