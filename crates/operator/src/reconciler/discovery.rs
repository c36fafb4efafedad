//! In-cluster discovery: for each `CompShareDiscovery`, lists the account's machines (the same
//! paged listing as `import`, ⌈machines/100⌉ calls per region) every `spec.pollInterval`, and keeps
//! exactly one observe-only `CompShareInstance` per matching machine in the discovery's namespace:
//! named, labelled and made as `import` makes them, plus the discovery's label and a controller
//! owner reference to it.
//!
//! Rules, all decided in [`plan`] (pure, unit-tested):
//! - A machine without a resource gets one, unless a resource this discovery did not create
//!   already names the machine or holds the name it would give: then it is left alone and
//!   reported in `status.clashes` (a hand-written resource wins, even over one the discovery made
//!   earlier, which is then removed).
//! - A resource whose machine is no longer listed (or no longer matches) is marked with the time
//!   of the listing that first missed it (an annotation, so a restart keeps it) and asked to
//!   observe at once (so that it shows `NotFound`); it is removed `spec.gracePeriod` later unless
//!   the machine comes back.
//! - A failed listing changes nothing, and shows in `Synced` with the cloud's code and message.
//! - Resources it did not create are never written.
//!
//! The discovery reconciles when it or one of its resources changes, using its last listing; it
//! lists again only when `spec.pollInterval` (jittered) has passed or its spec changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compshare_api::CallError;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use tokio::time::Instant;

use super::cache::{self, CachedInstance};
use super::credentials::ResolveError;
use super::events::Transition;
use super::reasons::Reason;
use super::status::{FALSE, READY, RECONCILING, STALLED, SYNCED, TRUE, failure_reason};
use super::{Context, FIELD_MANAGER, jittered};
use crate::import::Lister;
use crate::import::manifest::{self, Filters, Settings};
use crate::poller::PackedInstance;
use crate::resource::{
    Clash, CompShareDiscovery, CompShareDiscoveryStatus, CompShareInstance, DEFAULT_GRACE_PERIOD,
    DISCOVERY_LABEL, ListResult, MAX_GRACE_PERIOD, MAX_POLL_INTERVAL, MIN_POLL_INTERVAL,
    MISSING_SINCE_ANNOTATION, REFRESH_ANNOTATION, SHARD_LABEL,
};

/// Throttled or transient listing calls are tried again this many times (0.5 s, then 1 s) before
/// the listing counts as failed; the next one is a poll interval later.
const LIST_RETRIES: usize = 2;
/// How long the regions of an account (`DescribeCompShareSupportZone`) are reused, for a
/// discovery that lists every region.
const REGIONS_TTL: Duration = Duration::from_secs(60 * 60);
/// Names shown in one event about created or removed resources.
const NAMES_IN_EVENT: usize = 10;

/// Runs the discovery controller until `shutdown` resolves, reading `CompShareInstance`s from
/// the controller's cache.
pub(crate) async fn run(
    ctx: Arc<Context>,
    instances: cache::Reader,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let discoveries = match &ctx.settings.namespace {
        Some(ns) => Api::<CompShareDiscovery>::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let cache::Reader {
        store,
        ready,
        changed,
    } = instances;
    let changed = futures::stream::unfold(changed, |mut rx| async move {
        rx.recv().await.map(|owner| (owner, rx))
    });
    let controller = Controller::new(discoveries, ctx.settings.watch_config());
    let discoverer = Arc::new(Discoverer {
        ctx,
        discoveries: controller.store(),
        instances: store,
        instances_ready: ready,
        memory: Mutex::default(),
    });
    controller
        .reconcile_on(changed)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, discoverer)
        .for_each(|result| {
            // Reconciliation errors are logged by `error_policy`; a watch that fails (retried
            // with backoff) is said here.
            if let Err(kube::runtime::controller::Error::QueueError(error)) = result {
                tracing::warn!(%error, "cannot watch CompShareDiscoveries (is their CRD installed? apply crds/)");
            }
            std::future::ready(())
        })
        .await;
}

struct Discoverer {
    ctx: Arc<Context>,
    /// Every `CompShareDiscovery` in the watched namespaces (the controller's cache).
    discoveries: Store<CompShareDiscovery>,
    /// Every `CompShareInstance` in the watched namespaces.
    instances: cache::Store,
    /// Whether `instances` holds the first complete list: until then, nothing is created (a
    /// hand-written resource not seen yet would be duplicated).
    instances_ready: Arc<AtomicBool>,
    /// What each discovery (by uid) remembers between reconciliations.
    memory: Mutex<HashMap<String, Memory>>,
}

/// A discovery's last listing and running totals (initialised from its stored status, so that a
/// restart continues them).
#[derive(Clone, Debug)]
struct Memory {
    listing: Option<Listing>,
    /// When the next listing is due.
    next_listing: Instant,
    /// The account's regions, and when they were asked for.
    regions: Option<(Instant, BTreeSet<String>)>,
    created: i64,
    removed: i64,
}

#[derive(Clone, Debug)]
struct Listing {
    time: Time,
    /// The generation of the spec it was made for.
    generation: i64,
    /// The matching machines by id, or why there are none.
    outcome: Result<Arc<Machines>, Failure>,
}

/// A listing's matching machines by id, packed: a discovery of a large account keeps thousands
/// between listings and reads one only to make its resource.
type Machines = BTreeMap<String, PackedInstance>;

/// Why a listing failed, for the conditions and `lastListResult`.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    reason: Reason,
    /// A person must act (`Stalled`).
    stalls: bool,
    ret_code: Option<i64>,
    message: String,
}

impl Failure {
    fn of_call(action: &str, region: &str, error: &CallError) -> Failure {
        let reason = failure_reason(error);
        Failure {
            reason,
            stalls: !error.is_retryable(),
            ret_code: match error {
                CallError::Api { code, .. } => Some(*code),
                _ => None,
            },
            message: format!("{action} in region {region} failed: {error}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

async fn reconcile(
    discovery: Arc<CompShareDiscovery>,
    d: Arc<Discoverer>,
) -> Result<Action, Error> {
    let uid = discovery.uid().unwrap_or_default();
    if discovery.metadata.deletion_timestamp.is_some() {
        // Its resources go with it (garbage collection, by the owner reference); their machines
        // stay (deletionPolicy: Orphan).
        d.memory.lock().expect("memory lock").remove(&uid);
        return Ok(Action::await_change());
    }
    if !d.instances_ready.load(Ordering::Relaxed) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = discovery.namespace().unwrap_or_default();
    let interval = poll_interval(&discovery, d.ctx.settings.default_poll_interval);
    let generation = discovery.metadata.generation.unwrap_or_default();
    let mut memory = d
        .memory
        .lock()
        .expect("memory lock")
        .get(&uid)
        .cloned()
        .unwrap_or_else(|| {
            let stored = discovery.status.clone().unwrap_or_default();
            Memory {
                listing: None,
                next_listing: Instant::now(),
                regions: None,
                created: stored.resources_created.unwrap_or_default(),
                removed: stored.resources_removed.unwrap_or_default(),
            }
        });

    let due = memory.next_listing <= Instant::now()
        || memory
            .listing
            .as_ref()
            .is_none_or(|l| l.generation != generation);
    if due {
        let outcome = d.list(&discovery, &namespace, &mut memory).await?;
        memory.listing = Some(Listing {
            time: now(),
            generation,
            outcome,
        });
        memory.next_listing = Instant::now() + jittered(interval);
    }
    let listing = memory
        .listing
        .clone()
        .expect("listed above if never before");

    let mut requeue = memory
        .next_listing
        .saturating_duration_since(Instant::now());
    // A failed listing changes nothing, the clashes shown included.
    let mut clashes = discovery
        .status
        .as_ref()
        .map(|s| s.clashes.clone())
        .unwrap_or_default();
    if let Ok(machines) = &listing.outcome {
        let others = d.instances.in_namespace(&namespace);
        let plan = plan(
            &discovery,
            machines,
            &others,
            &listing.time,
            jiff::Timestamp::now(),
            grace_period(&discovery),
        );
        clashes = plan.clashes.clone();
        if let Some(at) = plan.look_again {
            requeue = requeue.min(at);
        }
        let (created, removed, stopped) = d.carry_out(&discovery, &namespace, plan).await;
        memory.created += created.len() as i64;
        memory.removed += removed.len() as i64;
        d.announce(&discovery, &created, &removed).await;
        if let Some(error) = stopped {
            // What was done is counted; the rest is tried again.
            d.memory.lock().expect("memory lock").insert(uid, memory);
            return Err(error.into());
        }
    }
    let managed = d
        .instances
        .in_namespace(&namespace)
        .iter()
        .filter(|i| created_by(i, &discovery))
        .count();
    {
        // Deleted discoveries are forgotten (they have no finalizer: no reconciliation sees them
        // go).
        let existing: BTreeSet<String> = d
            .discoveries
            .state()
            .iter()
            .filter_map(|o| o.uid())
            .collect();
        let mut memories = d.memory.lock().expect("memory lock");
        memories.retain(|uid, _| existing.contains(uid));
        memories.insert(uid, memory.clone());
    }

    let desired = desired_status(&discovery, &listing, &memory, managed, clashes, &now());
    if discovery.status.as_ref() != Some(&desired) {
        let api: Api<CompShareDiscovery> = Api::namespaced(d.ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": CompShareDiscovery::api_version(&()),
            "kind": CompShareDiscovery::kind(&()),
            "status": desired,
        });
        match api
            .patch_status(
                &discovery.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => d.ctx.metrics.record_write("status"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(requeue.max(Duration::from_millis(100))))
}

fn error_policy(discovery: Arc<CompShareDiscovery>, error: &Error, d: Arc<Discoverer>) -> Action {
    tracing::warn!(discovery = %discovery.name_any(), namespace = discovery.namespace().unwrap_or_default(), %error, "discovery failed; retrying");
    Action::requeue(jittered(d.ctx.settings.retry_after_error))
}

impl Discoverer {
    /// Lists the discovery's machines: the matching ones by id, or why it failed (credentials, a
    /// call). Only an unreachable apiserver is an error.
    async fn list(
        &self,
        discovery: &CompShareDiscovery,
        namespace: &str,
        memory: &mut Memory,
    ) -> Result<Result<Arc<Machines>, Failure>, Error> {
        let spec = &discovery.spec;
        // The Secret is read afresh while the last listing failed: it may have just been fixed.
        let fresh = memory.listing.as_ref().is_some_and(|l| l.outcome.is_err());
        let credentials = match self
            .ctx
            .credentials
            .resolve_ref(namespace.to_owned(), spec.credentials_ref.as_ref(), fresh)
            .await
        {
            Ok(credentials) => credentials,
            Err(ResolveError::Kube(e)) => return Err(e.into()),
            Err(ResolveError::Problem(p)) => {
                return Ok(Err(Failure {
                    reason: p.reason,
                    stalls: true,
                    ret_code: None,
                    message: p.message,
                }));
            }
        };
        let filters = match filters(discovery) {
            Ok(filters) => filters,
            Err(failure) => return Ok(Err(failure)),
        };
        let lister = Lister {
            client: &self.ctx.cloud,
            credentials: &credentials,
            retries: LIST_RETRIES,
            metrics: Some(&self.ctx.metrics),
        };
        let regions = if spec.regions.is_empty() {
            match &memory.regions {
                Some((at, regions)) if at.elapsed() < REGIONS_TTL => regions.clone(),
                _ => match lister.regions().await {
                    Ok(regions) => {
                        memory.regions = Some((Instant::now(), regions.clone()));
                        regions
                    }
                    Err(f) => return Ok(Err(Failure::of_call(f.action, &f.region, &f.error))),
                },
            }
        } else {
            spec.regions.iter().cloned().collect()
        };
        let project = spec.project_id.as_deref();
        let mut matching = BTreeMap::new();
        for region in &regions {
            let listed = match lister.list(region, project).await {
                Ok(listed) => listed,
                Err(f) => return Ok(Err(Failure::of_call(f.action, &f.region, &f.error))),
            };
            // The listing is the observation: resources of this account, region and project
            // take theirs from it rather than asking again by id.
            if listed.complete {
                self.ctx
                    .poller
                    .observe_listing(&credentials, region, project, &listed.machines);
            }
            // By id: a machine that moved between pages while they were read is listed once.
            matching.extend(
                listed
                    .machines
                    .into_iter()
                    .filter(|machine| filters.keeps(machine))
                    .map(|machine| {
                        (
                            machine.u_host_id.to_string(),
                            PackedInstance::pack(&machine),
                        )
                    }),
            );
        }
        tracing::debug!(discovery = %discovery.name_any(), namespace, machines = matching.len(), ?regions, "listed");
        Ok(Ok(Arc::new(matching)))
    }

    /// Makes the changes `plan` names: the resources created and removed, and the error that
    /// stopped it (the apiserver could not be reached), if one did. A resource that already exists
    /// (or is already gone) is not counted: the cache was behind. A change the apiserver refuses
    /// is logged and the others are made.
    async fn carry_out(
        &self,
        discovery: &CompShareDiscovery,
        namespace: &str,
        plan: Plan,
    ) -> (Vec<String>, Vec<String>, Option<kube::Error>) {
        let api: Api<CompShareInstance> = Api::namespaced(self.ctx.client.clone(), namespace);
        let mut created = Vec::new();
        let mut removed = Vec::new();
        let refused = |what: &str, name: &str, status: &kube::core::Status| {
            tracing::warn!(discovery = %discovery.name_any(), namespace, resource = name, code = status.code, message = %status.message, "the apiserver refused to {what} a resource");
        };
        let stopped = 'changes: {
            for resource in plan.create {
                let name = resource.name_any();
                match api.create(&PostParams::default(), &resource).await {
                    Ok(_) => created.push(name),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(kube::Error::Api(s)) => refused("create", &name, &s),
                    Err(e) => break 'changes Some(e),
                }
            }
            for (name, missing_since) in plan.mark {
                let patch = serde_json::json!({"metadata": {"annotations": {
                    MISSING_SINCE_ANNOTATION: missing_since,
                    // Observed at once, so that it shows NotFound for the whole grace period.
                    REFRESH_ANNOTATION: missing_since,
                }}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => break 'changes Some(e),
                }
            }
            for name in plan.unmark {
                let patch = serde_json::json!({"metadata": {"annotations": {MISSING_SINCE_ANNOTATION: null}}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => break 'changes Some(e),
                }
            }
            for (name, uid) in plan.remove {
                // Only the very resource that was planned for (a newer one of the same name is
                // not).
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => removed.push(name),
                    Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
                    Err(kube::Error::Api(s)) => refused("delete", &name, &s),
                    Err(e) => break 'changes Some(e),
                }
            }
            None
        };
        if !created.is_empty() || !removed.is_empty() {
            tracing::info!(discovery = %discovery.name_any(), namespace, created = created.len(), removed = removed.len(), "resources kept in step with the listing");
        }
        (created, removed, stopped)
    }

    /// One event for the resources created, one for those removed; a failure is logged.
    async fn announce(
        &self,
        discovery: &CompShareDiscovery,
        created: &[String],
        removed: &[String],
    ) {
        for (names, reason, verb) in [
            (created, Reason::DiscoveredResourcesCreated, "Created"),
            (
                removed,
                Reason::DiscoveredResourcesRemoved,
                "Removed, their machines gone for longer than the grace period,",
            ),
        ] {
            if names.is_empty() {
                continue;
            }
            let mut shown = names
                .iter()
                .take(NAMES_IN_EVENT)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if names.len() > NAMES_IN_EVENT {
                shown.push_str(&format!(" and {} more", names.len() - NAMES_IN_EVENT));
            }
            let transition = Transition {
                type_: EventType::Normal,
                reason: reason.as_str().to_owned(),
                note: format!("{verb} {} CompShareInstance(s): {shown}", names.len()),
            };
            match self
                .ctx
                .events
                .publish(&transition, "Discover", &discovery.object_ref(&()))
                .await
            {
                Ok(()) => self.ctx.metrics.record_write("event"),
                Err(error) => {
                    tracing::warn!(discovery = %discovery.name_any(), %error, "could not publish an event")
                }
            }
        }
    }
}

/// The filters of the spec; a name pattern admission let through but that is no glob is a
/// problem a person must fix.
fn filters(discovery: &CompShareDiscovery) -> Result<Filters, Failure> {
    let f = discovery.spec.filters.clone().unwrap_or_default();
    let names = Filters::name_patterns(&f.names).map_err(|e| Failure {
        reason: Reason::InvalidRequest,
        stalls: true,
        ret_code: None,
        message: format!("spec.filters.names: {e}"),
    })?;
    Ok(Filters {
        zones: f.zones,
        tags: f.tags,
        vpcs: f.vpcs,
        names,
        states: f.states,
    })
}

/// What to change so that the resources match the listing.
#[derive(Debug, Default)]
struct Plan {
    create: Vec<CompShareInstance>,
    /// Resources whose machine the listing first missed: name → the listing's time.
    mark: Vec<(String, String)>,
    /// Resources whose machine is back: their mark goes.
    unmark: Vec<String>,
    /// Resources to remove: name and uid.
    remove: Vec<(String, String)>,
    clashes: Vec<Clash>,
    /// When a marked resource's grace period ends, if one does before the next listing.
    look_again: Option<Duration>,
}

/// Whether `discovery` created `resource`: its controller owner reference and label say so.
fn created_by(resource: &CachedInstance, discovery: &CompShareDiscovery) -> bool {
    discovery
        .uid()
        .is_some_and(|uid| resource.made_by(&discovery.name_any(), &uid))
}

/// Pure: the changes that make `resources` (every `CompShareInstance` of the discovery's
/// namespace) match `machines` (the last successful listing's matching machines), at `now`.
fn plan(
    discovery: &CompShareDiscovery,
    machines: &Machines,
    resources: &[Arc<CachedInstance>],
    listed_at: &Time,
    now: jiff::Timestamp,
    grace: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let (mine, others): (Vec<&CachedInstance>, Vec<&CachedInstance>) = resources
        .iter()
        .map(Arc::as_ref)
        .filter(|r| !r.is_deleting())
        .partition(|r| created_by(r, discovery));
    let others_by_id: BTreeMap<&str, &str> = others
        .iter()
        .filter_map(|r| Some((r.machine_id()?, r.key().name.as_str())))
        .collect();
    let taken: BTreeSet<&str> = resources.iter().map(|r| r.key().name.as_str()).collect();
    let mine_by_id: BTreeMap<&str, &CachedInstance> = mine
        .iter()
        .filter_map(|r| Some((r.machine_id()?, *r)))
        .collect();
    let settings = Settings {
        namespace: discovery.namespace(),
        project_id: discovery.spec.project_id.clone(),
        credentials_ref: discovery
            .spec
            .credentials_ref
            .as_ref()
            .map(|r| r.name.clone()),
    };
    let owner = OwnerReference {
        api_version: CompShareDiscovery::api_version(&()).into_owned(),
        kind: CompShareDiscovery::kind(&()).into_owned(),
        name: discovery.name_any(),
        uid: discovery.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    for (id, machine) in machines {
        if let Some(other) = others_by_id.get(id.as_str()) {
            plan.clashes.push(Clash {
                uhost_id: id.clone(),
                resource: (*other).to_owned(),
            });
            // A hand-written resource wins over one made earlier.
            if let Some(own) = mine_by_id.get(id.as_str()) {
                plan.remove.push(removal(own));
            }
            continue;
        }
        if let Some(own) = mine_by_id.get(id.as_str()) {
            if own.missing_since().is_some() {
                plan.unmark.push(own.key().name.clone());
            }
            continue;
        }
        let mut resource = manifest::manifest(&machine.unpack(), &settings);
        let name = resource.name_any();
        if taken.contains(name.as_str()) {
            plan.clashes.push(Clash {
                uhost_id: id.clone(),
                resource: name,
            });
            continue;
        }
        let labels = resource.labels_mut();
        labels.insert(DISCOVERY_LABEL.to_owned(), discovery.name_any());
        // A sharded operator watches its discovery's resources only if they are in its shard.
        if let Some(shard) = discovery.labels().get(SHARD_LABEL) {
            labels.insert(SHARD_LABEL.to_owned(), shard.clone());
        }
        resource.metadata.owner_references = Some(vec![owner.clone()]);
        plan.create.push(resource);
    }
    let listed = listed_at.0.to_string();
    for own in &mine {
        let Some(id) = own.machine_id() else { continue };
        if machines.contains_key(id) {
            continue;
        }
        let since = own
            .missing_since()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        match since {
            None => plan.mark.push((own.key().name.clone(), listed.clone())),
            Some(since) => {
                let ends = jiff::SignedDuration::try_from(grace)
                    .ok()
                    .and_then(|g| since.checked_add(g).ok())
                    .unwrap_or(jiff::Timestamp::MAX);
                match Duration::try_from(now.duration_until(ends)) {
                    // Not over yet (a negative span fails to convert: over).
                    Ok(left) if left > Duration::ZERO => {
                        plan.look_again =
                            Some(plan.look_again.map_or(left, |l: Duration| l.min(left)));
                    }
                    _ => plan.remove.push(removal(own)),
                }
            }
        }
    }
    // A freshly marked resource is looked at again when its grace period ends.
    if !plan.mark.is_empty() {
        plan.look_again = Some(plan.look_again.map_or(grace, |l| l.min(grace)));
    }
    plan.clashes.sort();
    plan
}

/// A resource to remove: its name, and its uid (the deletion's precondition).
fn removal(resource: &CachedInstance) -> (String, String) {
    (
        resource.key().name.clone(),
        resource.metadata().uid.unwrap_or_default(),
    )
}

/// The status for the discovery after a reconciliation.
fn desired_status(
    discovery: &CompShareDiscovery,
    listing: &Listing,
    memory: &Memory,
    managed: usize,
    clashes: Vec<Clash>,
    now: &Time,
) -> CompShareDiscoveryStatus {
    let stored = discovery.status.clone().unwrap_or_default();
    let generation = discovery.metadata.generation;
    let mut conditions: Vec<Condition> = Vec::new();
    let mut set = |type_: &str, status: &str, reason: &str, message: &str| {
        let since = stored
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: since,
        });
    };
    let mut status = CompShareDiscoveryStatus {
        observed_generation: generation,
        resources_managed: Some(managed as i64),
        resources_created: Some(memory.created),
        resources_removed: Some(memory.removed),
        last_list_time: Some(listing.time.clone()),
        ..CompShareDiscoveryStatus::default()
    };
    match &listing.outcome {
        Ok(machines) => {
            let message = format!(
                "Listed {} matching machine(s); {} clash(es) with resources this discovery did not create",
                machines.len(),
                clashes.len()
            );
            set(READY, TRUE, Reason::Observed.as_str(), &message);
            set(SYNCED, TRUE, Reason::Observed.as_str(), &message);
            status.machines_found = Some(machines.len() as i64);
            status.last_list_result = Some(ListResult {
                result: "Succeeded".to_owned(),
                ret_code: None,
                message: None,
            });
        }
        Err(failure) => {
            let reason = failure.reason.as_str();
            let message = format!("{}; the resources are kept as they were", failure.message);
            set(READY, FALSE, reason, &message);
            set(SYNCED, FALSE, reason, &message);
            // Stalled when a person must act; otherwise tried again at the next interval, which
            // kstatus and Argo CD read as in progress.
            if failure.stalls {
                set(STALLED, TRUE, reason, &message);
            } else {
                set(RECONCILING, TRUE, reason, &message);
            }
            status.machines_found = stored.machines_found;
            status.last_list_result = Some(ListResult {
                result: "Failed".to_owned(),
                ret_code: failure.ret_code,
                message: Some(failure.message.clone()),
            });
        }
    }
    status.conditions = conditions;
    status.clashes = clashes;
    status
}

/// The discovery's poll interval, or the default; clamped to the documented bounds.
fn poll_interval(discovery: &CompShareDiscovery, default: Duration) -> Duration {
    discovery
        .spec
        .poll_interval
        .as_deref()
        .and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or(default)
        .clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
}

fn grace_period(discovery: &CompShareDiscovery) -> Duration {
    discovery
        .spec
        .grace_period
        .as_deref()
        .and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or(DEFAULT_GRACE_PERIOD)
        .min(MAX_GRACE_PERIOD)
}

/// Now, to the second (as conditions and `lastListTime` show it).
fn now() -> Time {
    Time(
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .expect("now is a valid time"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{CompShareDiscoverySpec, CompShareInstanceSpec};
    use compshare_api::Instance;

    const GRACE: Duration = Duration::from_secs(60);

    fn discovery() -> CompShareDiscovery {
        let mut d = CompShareDiscovery::new("account", CompShareDiscoverySpec::default());
        d.metadata.namespace = Some("team".into());
        d.metadata.uid = Some("uid-1".into());
        d
    }

    fn machine(id: &str, name: &str) -> Instance {
        Instance {
            u_host_id: id.into(),
            name: name.into(),
            state: "Running".into(),
            region: "cn-wlcb".into(),
            zone: "cn-wlcb-01".into(),
            gpu_type: "4090".into(),
            ..Instance::default()
        }
    }

    fn machines(list: &[(&str, &str)]) -> Machines {
        list.iter()
            .map(|(id, name)| ((*id).to_owned(), PackedInstance::pack(&machine(id, name))))
            .collect()
    }

    /// A resource the discovery made for `m`.
    fn own(
        d: &CompShareDiscovery,
        m: &Instance,
        missing_since: Option<&str>,
    ) -> Arc<CachedInstance> {
        let planned = plan(
            d,
            &BTreeMap::from([(m.u_host_id.to_string(), PackedInstance::pack(m))]),
            &[],
            &at(0),
            ts(0),
            GRACE,
        );
        let mut r = planned.create.into_iter().next().unwrap();
        r.metadata.uid = Some(format!("uid-of-{}", m.u_host_id));
        if let Some(since) = missing_since {
            r.annotations_mut()
                .insert(MISSING_SINCE_ANNOTATION.into(), since.into());
        }
        Arc::new(r.into())
    }

    fn hand_written(name: &str, id: &str) -> Arc<CachedInstance> {
        let mut r = CompShareInstance::new(
            name,
            CompShareInstanceSpec {
                uhost_id: Some(id.into()),
                region: "cn-wlcb".into(),
                ..CompShareInstanceSpec::default()
            },
        );
        r.metadata.namespace = Some("team".into());
        Arc::new(r.into())
    }

    fn ts(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn at(seconds: i64) -> Time {
        Time(ts(seconds))
    }

    #[test]
    fn a_machine_without_a_resource_gets_one_as_import_makes_it_owned_and_labelled() {
        let mut d = discovery();
        d.spec.credentials_ref = Some(crate::resource::SecretRef {
            name: "keys".into(),
        });
        let planned = plan(
            &d,
            &machines(&[("uhost-a1", "Trainer A")]),
            &[],
            &at(0),
            ts(0),
            GRACE,
        );
        let [r] = <[CompShareInstance; 1]>::try_from(planned.create).unwrap();
        assert_eq!(r.name_any(), "trainer-a-a1");
        assert_eq!(r.namespace().as_deref(), Some("team"));
        assert_eq!(r.labels()[DISCOVERY_LABEL], "account");
        assert_eq!(r.labels()["compshare.ucloud.cn/region"], "cn-wlcb");
        assert_eq!(r.spec.credentials_ref.as_ref().unwrap().name, "keys");
        assert!(created_by(&CachedInstance::from(r.clone()), &d));
        let owner = &r.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        assert!(planned.clashes.is_empty() && planned.remove.is_empty());
        assert!(!r.labels().contains_key(SHARD_LABEL));

        // A discovery in a shard keeps its resources in it (a sharded operator sees only those).
        d.labels_mut().insert(SHARD_LABEL.into(), "gpu-a".into());
        d.labels_mut().insert("team".into(), "ml".into());
        let planned = plan(
            &d,
            &machines(&[("uhost-a1", "Trainer A")]),
            &[],
            &at(0),
            ts(0),
            GRACE,
        );
        let labels = planned.create[0].labels();
        assert_eq!(labels[SHARD_LABEL], "gpu-a");
        assert!(
            !labels.contains_key("team"),
            "only the shard's label: {labels:?}"
        );
    }

    #[test]
    fn a_resource_it_did_not_create_wins_and_is_reported() {
        let d = discovery();
        let listed = machines(&[("uhost-a1", "a"), ("uhost-b2", "b")]);
        // One names machine a1; another holds the name machine b2 would get.
        let resources = [
            hand_written("mine-by-hand", "uhost-a1"),
            hand_written("b-b2", "uhost-zz"),
        ];
        let planned = plan(&d, &listed, &resources, &at(0), ts(0), GRACE);
        assert!(planned.create.is_empty());
        assert_eq!(
            planned.clashes,
            vec![
                Clash {
                    uhost_id: "uhost-a1".into(),
                    resource: "mine-by-hand".into()
                },
                Clash {
                    uhost_id: "uhost-b2".into(),
                    resource: "b-b2".into()
                },
            ]
        );
        // Over a resource it made earlier, too: that one goes.
        let earlier = own(&d, &listed["uhost-a1"].unpack(), None);
        let planned = plan(
            &d,
            &listed,
            &[earlier, resources[0].clone()],
            &at(0),
            ts(0),
            GRACE,
        );
        assert_eq!(
            planned.remove,
            vec![("a-a1".to_owned(), "uid-of-uhost-a1".to_owned())]
        );
        // Another discovery's resource is not this one's either.
        let mut other = discovery();
        other.metadata.uid = Some("uid-2".into());
        let theirs = own(&other, &listed["uhost-a1"].unpack(), None);
        let planned = plan(
            &d,
            &machines(&[("uhost-a1", "a")]),
            &[theirs],
            &at(0),
            ts(0),
            GRACE,
        );
        assert!(planned.create.is_empty() && planned.remove.is_empty());
        assert_eq!(planned.clashes.len(), 1);
    }

    #[test]
    fn a_vanished_machine_is_marked_then_removed_after_the_grace_period_not_before() {
        let d = discovery();
        let gone = machine("uhost-g1", "gone");
        let unmarked = own(&d, &gone, None);
        let planned = plan(&d, &BTreeMap::new(), &[unmarked], &at(5), ts(5), GRACE);
        assert_eq!(
            planned.mark,
            vec![("gone-g1".to_owned(), at(5).0.to_string())]
        );
        assert_eq!(planned.look_again, Some(GRACE));
        assert!(planned.remove.is_empty());

        let marked = own(&d, &gone, Some(&at(5).0.to_string()));
        let planned = plan(
            &d,
            &BTreeMap::new(),
            std::slice::from_ref(&marked),
            &at(30),
            ts(30),
            GRACE,
        );
        assert!(planned.mark.is_empty() && planned.remove.is_empty());
        assert_eq!(planned.look_again, Some(Duration::from_secs(35)));

        let planned = plan(
            &d,
            &BTreeMap::new(),
            std::slice::from_ref(&marked),
            &at(65),
            ts(65),
            GRACE,
        );
        assert_eq!(
            planned.remove,
            vec![("gone-g1".to_owned(), "uid-of-uhost-g1".to_owned())]
        );

        // Back before the end: the mark goes, the resource stays.
        let back = BTreeMap::from([("uhost-g1".to_owned(), PackedInstance::pack(&gone))]);
        let planned = plan(&d, &back, &[marked], &at(40), ts(40), GRACE);
        assert_eq!(planned.unmark, vec!["gone-g1".to_owned()]);
        assert!(planned.create.is_empty() && planned.remove.is_empty());
    }

    #[test]
    fn a_failed_listing_is_shown_with_the_code_and_an_unchanged_one_writes_nothing() {
        let d = discovery();
        let memory = Memory {
            listing: None,
            next_listing: Instant::now(),
            regions: None,
            created: 3,
            removed: 1,
        };
        let failed = Listing {
            time: at(0),
            generation: 1,
            outcome: Err(Failure::of_call(
                "DescribeCompShareInstance",
                "cn-wlcb",
                &CallError::Api {
                    code: 171,
                    message: "Signature VerifyAC Error".into(),
                },
            )),
        };
        let status = desired_status(&d, &failed, &memory, 2, Vec::new(), &at(0));
        let result = status.last_list_result.clone().unwrap();
        assert_eq!(
            (result.result.as_str(), result.ret_code),
            ("Failed", Some(171))
        );
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap();
        assert_eq!(stalled.reason, "CredentialsRejected");
        assert!(
            stalled.message.contains("RetCode 171"),
            "{}",
            stalled.message
        );
        assert_eq!(
            (status.resources_created, status.resources_removed),
            (Some(3), Some(1))
        );

        // The same inputs later: the same status (transition times kept), so no write.
        let mut written = d.clone();
        written.status = Some(status.clone());
        assert_eq!(
            desired_status(&written, &failed, &memory, 2, Vec::new(), &at(99)),
            status
        );

        // A throttled listing may pass next time: Reconciling, not Stalled.
        let throttled = Listing {
            outcome: Err(Failure::of_call(
                "DescribeCompShareInstance",
                "cn-wlcb",
                &CallError::Api {
                    code: 153,
                    message: "throttled".into(),
                },
            )),
            ..failed
        };
        let status = desired_status(&d, &throttled, &memory, 2, Vec::new(), &at(0));
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, SYNCED, RECONCILING]);
    }
}
