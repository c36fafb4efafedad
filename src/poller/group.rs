//! One poll group: the instances of one account, region and project, observed together by a
//! single task that makes one call at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::budget::Budget;
use super::observation::{Observation, Outcome};
use super::schedule::{Page, Schedule};
use super::{GroupKey, Key, ResourceKey, Target};
use crate::compshare::client::{DESCRIBE_ACTION, MAX_IDS_PER_CALL};
use crate::compshare::{CallError, Client, Credentials, DescribeRequest, Disposition, Instance};
use crate::metrics::{BackoffLabels, Metrics};

/// What a group shares with its task.
pub(super) struct Group {
    pub key: GroupKey,
    pub state: Mutex<GroupState>,
    pub notify: Notify,
    credentials: Credentials,
    budget: Arc<Budget>,
}

pub(super) struct GroupState {
    pub schedule: Schedule<Key>,
    pub members: HashMap<Key, Member>,
    pub last_success: Option<Instant>,
    backoff_policy: ExponentialBuilder,
    backoff: ExponentialBackoff,
    backoff_until: Option<Instant>,
    rng: StdRng,
}

pub(super) struct Member {
    pub uhost_id: String,
    pub zone: Option<String>,
    pub generation: i64,
    pub observation: Option<Arc<Observation>>,
    /// A refresh request waiting for the next call that includes this member.
    pub pending_refresh: Option<String>,
}

/// What the task needs beyond its group.
pub(super) struct Wiring {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub wake: mpsc::UnboundedSender<ResourceKey>,
}

impl Group {
    pub fn new(
        key: GroupKey,
        credentials: Credentials,
        budget: Arc<Budget>,
        schedule: Schedule<Key>,
        backoff_policy: ExponentialBuilder,
    ) -> Self {
        Group {
            key,
            state: Mutex::new(GroupState {
                schedule,
                members: HashMap::new(),
                last_success: None,
                backoff_policy,
                backoff: backoff_policy.build(),
                backoff_until: None,
                rng: StdRng::from_os_rng(),
            }),
            notify: Notify::new(),
            credentials,
            budget,
        }
    }

    /// Adds or updates a member; returns whether its task should look at the schedule again.
    pub fn upsert(&self, key: &Key, target: &Target) -> bool {
        let mut state = self.state.lock().expect("group lock");
        let state = &mut *state;
        let now = Instant::now();
        let member = state.members.entry(key.clone()).or_insert_with(|| Member {
            uhost_id: target.uhost_id.clone(),
            zone: target.zone.clone(),
            generation: target.generation,
            observation: None,
            pending_refresh: None,
        });
        // A new spec is answered by an observation made for it, right away (a changed zone also
        // changes what the answer means).
        let respecified = member.generation != target.generation || member.zone != target.zone;
        member.zone.clone_from(&target.zone);
        member.generation = target.generation;
        let inserted = state
            .schedule
            .insert(key.clone(), target.interval, now, &mut state.rng);
        if respecified {
            state.schedule.mark_urgent(key, now);
        }
        respecified || inserted != super::schedule::Inserted::Unchanged
    }

    /// Removes a member; returns whether the group is now empty.
    pub fn remove(&self, key: &ResourceKey) -> bool {
        let mut state = self.state.lock().expect("group lock");
        state.members.remove(key);
        state.schedule.remove(key);
        state.members.is_empty()
    }

    /// Asks for an urgent observation that will carry `token`.
    pub fn refresh(&self, key: &ResourceKey, token: &str) {
        let mut state = self.state.lock().expect("group lock");
        let Some(member) = state.members.get_mut(key) else {
            return;
        };
        let answered = member
            .observation
            .as_ref()
            .is_some_and(|o| o.refresh.as_deref() == Some(token));
        if answered || member.pending_refresh.as_deref() == Some(token) {
            return;
        }
        member.pending_refresh = Some(token.to_owned());
        state.schedule.mark_urgent(key, Instant::now());
        drop(state);
        self.notify.notify_one();
    }

    pub fn observation(&self, key: &ResourceKey) -> Option<Arc<Observation>> {
        let state = self.state.lock().expect("group lock");
        state.members.get(key)?.observation.clone()
    }
}

enum Next {
    Call(Page<Key>),
    WaitUntil(Option<Instant>),
}

/// The group's task: waits for the next due page, spends budget, calls, and publishes what
/// changed. Runs until aborted by the poller when the group empties.
pub(super) async fn run(group: Arc<Group>, wiring: Arc<Wiring>) {
    loop {
        let next = {
            let mut state = group.state.lock().expect("group lock");
            let state = &mut *state;
            let now = Instant::now();
            match state.backoff_until.filter(|until| *until > now) {
                Some(until) => Next::WaitUntil(Some(until)),
                None => match state.schedule.take_due(now, &mut state.rng) {
                    Some(page) => Next::Call(page),
                    None => Next::WaitUntil(state.schedule.next_due()),
                },
            }
        };
        match next {
            Next::WaitUntil(until) => {
                let sleep = async {
                    match until {
                        Some(until) => tokio::time::sleep_until(until).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => {}
                    () = group.notify.notified() => {}
                }
            }
            Next::Call(page) => call(&group, &wiring, page).await,
        }
    }
}

async fn call(group: &Group, wiring: &Wiring, page: Page<Key>) {
    let (request, asked) = {
        let state = group.state.lock().expect("group lock");
        let mut seen = HashSet::new();
        let ids: Vec<String> = page
            .keys
            .iter()
            .filter_map(|key| state.members.get(key))
            .filter(|m| seen.insert(m.uhost_id.as_str()))
            .map(|m| m.uhost_id.clone())
            .collect();
        // The generation each member is asked for: a spec edited during the call is answered by
        // the next one.
        let asked: HashMap<Key, i64> = page
            .keys
            .iter()
            .filter_map(|key| Some((key.clone(), state.members.get(key)?.generation)))
            .collect();
        let request = DescribeRequest {
            region: group.key.region.clone(),
            project_id: group.key.project_id.clone(),
            // Limit defaults to 20: ask for a whole page, or ids past the 20th go missing.
            limit: Some(MAX_IDS_PER_CALL as u32),
            uhost_ids: ids,
            ..DescribeRequest::default()
        };
        (request, asked)
    };
    if request.uhost_ids.is_empty() {
        return;
    }

    let waited = group.budget.spend().await;
    wiring
        .metrics
        .budget_wait_seconds
        .observe(waited.as_secs_f64());
    let started = Instant::now();
    let result = wiring
        .client
        .describe(&group.credentials, &request)
        .await
        .map(|r| r.u_host_set);
    wiring.metrics.record_call(
        DESCRIBE_ACTION,
        started.elapsed(),
        result.as_ref().map(|_| ()),
    );

    let failure = result.as_ref().err().cloned();
    let (changed, backoff) = {
        let mut state = group.state.lock().expect("group lock");
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
        let _ = wiring.wake.send(ResourceKey::clone(&key));
    }
}

impl GroupState {
    /// Records the result of a call for `page` (`asked`: the generation each member was asked
    /// for); returns the members whose observation changed and
    /// the backoff chosen, if the failure calls for one.
    fn apply(
        &mut self,
        page: &Page<Key>,
        asked: &HashMap<Key, i64>,
        result: Result<Vec<Instance>, CallError>,
        now: Instant,
        metrics: &Metrics,
    ) -> (Vec<Key>, Option<Duration>) {
        let mut backoff = None;
        let answer: Result<HashMap<String, Arc<Instance>>, CallError> = match result {
            Ok(instances) => {
                self.last_success = Some(now);
                self.backoff = self.backoff_policy.build();
                self.schedule.polled(&page.keys);
                // Moved, not cloned: the answer's instances become the stored observations.
                Ok(instances
                    .into_iter()
                    .map(|i| (i.u_host_id.to_string(), Arc::new(i)))
                    .collect())
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

        let mut changed = Vec::new();
        for key in &page.keys {
            let Some(member) = self.members.get_mut(key) else {
                continue;
            };
            let previous = member.observation.as_deref();
            let last_known = previous.and_then(|p| p.instance.as_ref());
            let (outcome, instance) = match &answer {
                Ok(by_id) => match by_id.get(&member.uhost_id) {
                    Some(seen) => {
                        let outcome = outcome_of(seen, member.zone.as_deref());
                        // Keep the stored instance when nothing changed: the new copy is
                        // dropped with the answer instead of replacing an equal one.
                        let instance = match last_known {
                            Some(old) if **old == **seen => old.clone(),
                            _ => seen.clone(),
                        };
                        (outcome, Some(instance))
                    }
                    None => (Outcome::NotFound, last_known.cloned()),
                },
                Err(error) => (Outcome::Failed(error.clone()), last_known.cloned()),
            };
            let refresh = member
                .pending_refresh
                .take()
                .or_else(|| previous.and_then(|p| p.refresh.clone()));
            let observation = Observation {
                instance,
                outcome,
                refresh,
                generation: asked.get(key).copied().unwrap_or(member.generation),
            };
            if previous != Some(&observation) {
                member.observation = Some(Arc::new(observation));
                changed.push(key.clone());
            }
        }
        (changed, backoff)
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
