//! Observation of CompShare instances, batched: one poll group per (credentials, region, project)
//! asks for all its instances in pages of up to 100 ids, keeps the latest observation of each, and
//! wakes only the resources whose observation changed. Calls are spread over each poll interval,
//! limited by a per-account budget, and backed off on throttling and transient failures.
//!
//! Nothing here knows about Kubernetes: resources are named by [`ResourceKey`], and changes are
//! announced on a channel.

mod budget;
mod group;
mod observation;
mod refreshes;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::ExponentialBuilder;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub(crate) use budget::BudgetConfig;
pub(crate) use observation::{Observation, Outcome, PackedInstance};
pub(crate) use schedule::ScheduleConfig;

use crate::metrics::{GaugeSource, GroupSnapshot, Metrics, RefreshLabels, Snapshot};
use budget::Budget;
use compshare_api::{Client, Credentials, Instance};
use group::{Group, Wiring};
use refreshes::RefreshShares;
use schedule::Schedule;

/// A watched resource, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResourceKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A resource's key as the poller stores it: one allocation shared by the operator's cache, the
/// registry, the group and its schedule (at 100,000 resources, copies of the strings would be
/// megabytes).
pub(crate) type Key = Arc<ResourceKey>;

/// What to observe for one resource.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub credentials: Credentials,
    pub region: String,
    pub project_id: Option<String>,
    pub uhost_id: String,
    pub zone: Option<String>,
    pub interval: Duration,
    /// The resource's `metadata.generation`: an observation says which generation it answered,
    /// and a new generation is observed right away.
    pub generation: i64,
    /// Observe it right away (with whatever else is urgent in its group): the operator has just
    /// changed the machine.
    pub observe_now: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PollerConfig {
    pub budget: BudgetConfig,
    pub schedule: ScheduleConfig,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Identifies a poll group. Includes a digest of the private key, so that a wrong key pair never
/// rides on a right one with the same public key; the digest is never shown.
#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    public_key: String,
    private_key_digest: [u8; 32],
    region: String,
    project_id: Option<String>,
}

impl GroupKey {
    fn of(target: &Target) -> Self {
        GroupKey::new(
            &target.credentials,
            &target.region,
            target.project_id.as_deref(),
        )
    }

    fn new(credentials: &Credentials, region: &str, project_id: Option<&str>) -> Self {
        GroupKey {
            public_key: credentials.public_key.clone(),
            private_key_digest: Sha256::digest(credentials.private_key.expose_secret().as_bytes())
                .into(),
            region: region.to_owned(),
            project_id: project_id.map(str::to_owned),
        }
    }

    /// A short, non-reversible tag of the account for logs and metrics.
    fn account_tag(&self) -> String {
        account_tag(&self.public_key)
    }
}

fn account_tag(public_key: &str) -> String {
    hex::encode(&Sha256::digest(public_key.as_bytes())[..4])
}

/// The batched observer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Poller {
    shared: Arc<Shared>,
}

struct Shared {
    config: PollerConfig,
    wiring: Arc<Wiring>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Set by `stop`; for good.
    stopped: bool,
    groups: HashMap<GroupKey, GroupEntry>,
    member_groups: HashMap<Key, Arc<Group>>,
    /// By public key.
    accounts: HashMap<String, Account>,
}

/// What the groups of one account share: its call budget and its namespaces' refresh shares.
#[derive(Clone)]
struct Account {
    budget: Arc<Budget>,
    refreshes: Arc<RefreshShares>,
}

impl Account {
    fn new(config: BudgetConfig) -> Self {
        Account {
            budget: Arc::new(Budget::new(config)),
            refreshes: Arc::new(RefreshShares::new(config.calls_per_minute.get())),
        }
    }
}

struct GroupEntry {
    group: Arc<Group>,
    task: JoinHandle<()>,
}

impl Drop for GroupEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Poller {
    /// Returns the poller and the channel on which it announces resources whose observation
    /// changed.
    pub(crate) fn new(
        client: Client,
        config: PollerConfig,
        metrics: Arc<Metrics>,
    ) -> (Poller, mpsc::UnboundedReceiver<Key>) {
        let (wake, changes) = mpsc::unbounded_channel();
        let poller = Poller {
            shared: Arc::new(Shared {
                config,
                wiring: Arc::new(Wiring {
                    client,
                    metrics,
                    wake,
                }),
                registry: Mutex::default(),
            }),
        };
        (poller, changes)
    }

    /// What a resource needs, told once per reconciliation; returns its latest observation
    /// (`None` before its first, or when it is not to be observed).
    ///
    /// - `target: Some(…)` starts or updates its observation (idempotent). A new resource, a new
    ///   spec, or one that moved to another group (its credentials, region or project changed) is
    ///   observed right away.
    /// - `target: None` stops observing it (paused, unusable credentials, deleted).
    /// - `refresh: Some(token)` asks for an observation that carries `token` (once per token):
    ///   right away, unless the resource or its namespace refreshes too often (see `refreshes`).
    pub(crate) fn sync(
        &self,
        key: &Key,
        target: Option<Target>,
        refresh: Option<&str>,
    ) -> Option<Observation> {
        let Some(target) = target else {
            self.registry().remove_member(key);
            return None;
        };
        let group = self.join(key, &target)?;
        if let Some(handling) = refresh.and_then(|token| group.refresh(key, token)) {
            self.shared
                .wiring
                .metrics
                .refreshes
                .get_or_create(&RefreshLabels {
                    handling: handling.label(),
                })
                .inc();
        }
        group.observation(key)
    }

    /// Puts a resource in the group its target belongs to (moving it if needed) and updates it
    /// there; `None` once the poller has stopped.
    fn join(&self, key: &Key, target: &Target) -> Option<Arc<Group>> {
        let group_key = GroupKey::of(target);
        let mut registry = self.registry();
        if registry.stopped {
            return None;
        }
        let key = match registry.member_groups.get_key_value(key) {
            Some((key, group)) if group.key == group_key => {
                let (key, group) = (key.clone(), group.clone());
                drop(registry);
                group.upsert(&key, target);
                return Some(group);
            }
            Some((key, _)) => {
                let key = key.clone();
                registry.remove_member(&key);
                key
            }
            None => key.clone(),
        };
        let config = self.shared.config.budget;
        let account = registry
            .accounts
            .entry(target.credentials.public_key.clone())
            .or_insert_with(|| Account::new(config))
            .clone();
        let group = registry
            .groups
            .entry(group_key.clone())
            .or_insert_with(|| self.spawn_group(group_key, target, account))
            .group
            .clone();
        registry.member_groups.insert(key.clone(), group.clone());
        drop(registry);
        group.upsert(&key, target);
        Some(group)
    }

    /// Offers a listing of every instance of `region` (in `project_id`) made with `credentials`
    /// (discovery's): the poll group of that account, region and project, if there is one, takes
    /// its members' observations from it instead of asking for them by id (see
    /// `Group::apply_listing`). An account with M machines then costs ⌈M/100⌉ calls per interval
    /// in all, not a listing plus as many calls again.
    pub(crate) fn observe_listing(
        &self,
        credentials: &Credentials,
        region: &str,
        project_id: Option<&str>,
        listing: &[Instance],
    ) {
        let key = GroupKey::new(credentials, region, project_id);
        let Some(group) = self.registry().groups.get(&key).map(|e| e.group.clone()) else {
            return;
        };
        for key in group.apply_listing(listing) {
            // The receiver lives as long as the controller; if it is gone, so is the process.
            let _ = self.shared.wiring.wake.send(key);
        }
    }

    /// Stops observing every resource for which `keep` is false (after a re-list, for resources
    /// deleted while the watch was down).
    pub(crate) fn retain(&self, keep: impl Fn(&ResourceKey) -> bool) {
        let mut registry = self.registry();
        let gone: Vec<Key> = registry
            .member_groups
            .keys()
            .filter(|key| !keep(key))
            .cloned()
            .collect();
        for key in gone {
            registry.remove_member(&key);
        }
    }

    /// Waits for, and spends, a token of `credentials`' account budget, for a call made outside
    /// polling (the operator's state-changing calls): no mix of calls exceeds the budget.
    pub(crate) async fn spend(&self, credentials: &Credentials) {
        let budget = {
            let config = self.shared.config.budget;
            let mut registry = self.registry();
            registry
                .accounts
                .entry(credentials.public_key.clone())
                .or_insert_with(|| Account::new(config))
                .budget
                .clone()
        };
        let waited = budget.spend().await;
        self.shared
            .wiring
            .metrics
            .budget_wait_seconds
            .observe(waited.as_secs_f64());
    }

    /// Stops every observation, for good: later `sync` calls observe nothing. For a replica that
    /// stops leading, whose reconciles may still be finishing.
    pub(crate) fn stop(&self) {
        let mut registry = self.registry();
        registry.stopped = true;
        registry.member_groups.clear();
        registry.groups.clear(); // aborts the groups' tasks
        registry.accounts.clear();
    }

    fn spawn_group(&self, key: GroupKey, target: &Target, account: Account) -> GroupEntry {
        let config = &self.shared.config;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_jitter()
            .without_max_times();
        tracing::debug!(region = %key.region, account = %key.account_tag(), "starting poll group");
        let group = Arc::new(Group::new(
            key,
            target.credentials.clone(),
            account.budget,
            account.refreshes,
            Schedule::new(config.schedule),
            backoff,
        ));
        let task = tokio::spawn(group::run(group.clone(), self.shared.wiring.clone()));
        GroupEntry { group, task }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.shared.registry.lock().expect("poller registry lock")
    }
}

impl Registry {
    fn remove_member(&mut self, key: &ResourceKey) {
        let Some(group) = self.member_groups.remove(key) else {
            return;
        };
        if group.remove(key) {
            let group_key = &group.key;
            self.groups.remove(group_key);
            let public_key = &group_key.public_key;
            if !self.groups.keys().any(|g| &g.public_key == public_key) {
                self.accounts.remove(public_key);
            }
        }
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl GaugeSource for Poller {
    fn snapshot(&self) -> Snapshot {
        let groups: Vec<Arc<Group>> = self
            .registry()
            .groups
            .values()
            .map(|e| e.group.clone())
            .collect();
        let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
        let mut snapshots = Vec::with_capacity(groups.len());
        for group in groups {
            let gauges = group.gauges();
            for (state, count) in &gauges.states {
                let state = state.as_deref().unwrap_or("Unknown");
                *by_state.entry(state.to_owned()).or_default() += count;
            }
            snapshots.push(GroupSnapshot {
                region: group.key.region.clone(),
                project: group.key.project_id.clone().unwrap_or_default(),
                account: group.key.account_tag(),
                members: gauges.members as i64,
                since_last_success: gauges.since_last_success,
                listed: gauges.listed,
                interval: gauges.interval,
            });
        }
        Snapshot {
            instances_by_state: by_state.into_iter().collect(),
            groups: snapshots,
        }
    }
}
