//! The Kubernetes side: watches `CompShareInstance` resources, registers them with the poller, and
//! turns observations into status, conditions, events and connection Secrets.
//!
//! A resource is reconciled when it changes (spec, pause or refresh annotations) and when the
//! poller announces that its observation changed; never on a timer that would rewrite status.

pub(crate) mod cache;
mod connection;
pub(crate) mod credentials;
pub(crate) mod discovery;
mod events;
mod manage;
pub(crate) mod privileges;
mod queue;
mod reasons;
pub(crate) mod status;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::metrics::{Metrics, ResultLabels, WriteLabels};
use crate::poller::{Key, Outcome, Poller, ResourceKey, Target};
use crate::resource::{
    ActionRecord, CompShareInstance, CompShareInstanceStatus, InstanceResource, MAX_POLL_INTERVAL,
    MIN_POLL_INTERVAL, RELEASE_FINALIZER,
};
use crate::server::Readiness;
use compshare_api::Disposition;
use credentials::{AllowedNamespaces, CredentialsPolicy, CredentialsResolver, ResolveError};
use privileges::Privilege;
use queue::{Action, Trigger};
use reasons::Reason;
use status::{Inputs, Management, Situation};

/// The field manager of everything the operator writes (server-side apply).
pub(crate) const FIELD_MANAGER: &str = "compshare-operator";

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Watch only this namespace; all when `None`.
    pub namespace: Option<String>,
    /// Watch only resources (and discoveries) with these labels; all when `None`.
    pub label_selector: Option<String>,
    pub default_poll_interval: Duration,
    /// Reconciliations at once.
    pub concurrency: u16,
    /// How often a healthy resource's credentials are read again, to pick up a rotated key.
    pub credentials_recheck: Duration,
    pub credentials: CredentialsPolicy,
    /// Names this operator instance in events.
    pub reporter_instance: Option<String>,
    /// When a failed reconciliation is tried again (jittered).
    pub retry_after_error: Duration,
    /// Where resources may manage machines.
    pub management_namespaces: AllowedNamespaces,
    /// What namespaces may do with the default credentials beyond observing.
    pub grants: privileges::Grants,
}

/// What every reconciliation shares.
pub(crate) struct Context {
    client: kube::Client,
    /// For the operator's own calls (managing machines); observation goes through the poller.
    cloud: compshare_api::Client,
    poller: Poller,
    credentials: Arc<CredentialsResolver>,
    events: events::Publisher,
    /// Resources whose last status write was refused and reported (see `report_refused_write`).
    refused: Mutex<HashSet<ResourceKey>>,
    /// The last state-changing call per resource, held back from being made again while its
    /// effect is on its way or the cloud asked to wait (see `manage::Held`).
    recent_calls: Mutex<std::collections::HashMap<ResourceKey, manage::Held>>,
    /// The resource version the operator's own writes made, for each resource being reconciled
    /// that wrote one (see [`Context::version_of`]); emptied when its reconciliation ends.
    written: Mutex<std::collections::HashMap<ResourceKey, String>>,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Settings {
    /// How the controllers watch: the label selector of a shard, if any.
    pub(crate) fn watch_config(&self) -> watcher::Config {
        let config = watcher::Config::default().any_semantic();
        match &self.label_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }
}

impl Context {
    pub(crate) fn new(
        client: kube::Client,
        cloud: compshare_api::Client,
        poller: Poller,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Context {
            credentials: Arc::new(CredentialsResolver::new(
                client.clone(),
                settings.credentials.clone(),
            )),
            events: events::Publisher::new(
                client.clone(),
                FIELD_MANAGER,
                settings.reporter_instance.as_deref(),
            ),
            refused: Mutex::default(),
            written: Mutex::default(),
            recent_calls: Mutex::default(),
            client,
            cloud,
            poller,
            metrics,
            settings,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Whether a write conflicted with a newer version of the resource than the one the
    /// reconciliation read (a guarded write: see `apply_status` and `manage`). Not a failure:
    /// the watch brings the newer version in moments, and the reconciliation runs again on it.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}

/// Runs the controller until `shutdown` resolves, filling `cache` from its watch. `changes` is
/// the poller's announcement channel; `readiness` is set once the first list of resources has
/// arrived.
pub(crate) async fn run(
    ctx: Arc<Context>,
    cache: cache::Filler,
    changes: mpsc::UnboundedReceiver<Key>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<cache::WatchedInstance> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let cache::Filler { store, notify } = cache;
    ctx.metrics
        .set_stalled_source(Some(Arc::new(store.clone())));

    let poller = ctx.poller.clone();
    let known = store.clone();
    let cached = store.clone();
    // The watch fills the cache and asks for the reconciliations its versions call for.
    let resources = watcher(api, ctx.settings.watch_config())
        .default_backoff()
        .map_ok(move |event| cached.apply(event))
        .filter_map(move |event| {
            std::future::ready(match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    notify.touched(&o);
                    // Our own status writes need no reconciliation: only spec, annotations and
                    // deletion do.
                    o.changed().then(|| Trigger::One(o.key().clone()))
                }
                Ok(watcher::Event::Delete(o)) => {
                    poller.sync(o.key(), None, None);
                    notify.touched(&o);
                    None
                }
                // After a (re-)list: forget resources deleted while the watch was down. The first
                // also makes the operator ready.
                Ok(watcher::Event::InitDone) => {
                    poller.retain(|key| known.contains(key));
                    notify.set_ready();
                    readiness.set(true);
                    Some(Trigger::Ready)
                }
                Ok(watcher::Event::Init) => None,
                // The watcher tries again, with backoff.
                Err(error) => {
                    tracing::debug!(%error, "watching CompShareInstances");
                    None
                }
            })
        });
    let observed = futures::stream::unfold(changes, |mut rx| async move {
        rx.recv().await.map(|key| (Trigger::One(key), rx))
    });
    let rotations = ctx
        .credentials
        .clone()
        .rotations(ctx.settings.credentials_recheck)
        .map(|()| Trigger::All);
    let every = store.clone();
    queue::drive(
        futures::stream::select(resources, futures::stream::select(observed, rotations)),
        move || every.keys(),
        ctx.settings.concurrency,
        |key: Key| {
            let cached = store.get(&key);
            let span = tracing::info_span!("reconciling", resource = %key);
            reconcile(cached, ctx.clone()).instrument(span)
        },
        shutdown,
    )
    .await;
    ctx.metrics.set_stalled_source(None);
}

fn key_of(o: &impl Resource) -> ResourceKey {
    ResourceKey {
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
    }
}

/// Reconciles a resource as the cache holds it now (nothing when it is gone), and says when to
/// again.
async fn reconcile(cached: Option<Arc<cache::CachedInstance>>, ctx: Arc<Context>) -> Action {
    let Some(cached) = cached else {
        return Action::await_change();
    };
    let started = std::time::Instant::now();
    let resource = cached.unpack();
    let result = reconcile_one(&resource, cached.key(), &ctx).await;
    ctx.written
        .lock()
        .expect("written lock")
        .remove(&**cached.key());
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "success",
        Err(error) if error.is_conflict() => "conflict",
        Err(_) => "error",
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result: outcome })
        .inc();
    result.unwrap_or_else(|error| error_policy(cached.key(), &error, &ctx))
}

/// `key` is the cache's, which the poller shares.
async fn reconcile_one(
    resource: &CompShareInstance,
    key: &Key,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    if resource.metadata.deletion_timestamp.is_some() {
        ctx.poller.sync(key, None, None);
        ctx.refused.lock().expect("refused lock").remove(&**key);
        if resource.finalizers().iter().any(|f| f == RELEASE_FINALIZER) {
            return ctx.release(resource, now).await;
        }
        return Ok(Action::await_change());
    }
    let interval = poll_interval(resource, ctx.settings.default_poll_interval);

    let problem;
    let progress;
    let observation;
    let mut management = Management {
        power: resource
            .is_managed()
            .then_some(resource.spec.power_state)
            .flatten(),
        ..Management::default()
    };
    let mut action = None;
    let mut step = manage::Step::default();
    let mut connection_refused = None;
    let (situation, next) = 'situation: {
        if resource.is_paused() {
            ctx.poller.sync(key, None, None);
            break 'situation (Situation::Paused, Action::await_change());
        }
        // Secrets are not watched (that would need rights to read every Secret): a resource
        // stalled on its credentials reads its Secret afresh each time it is checked again.
        let credentials = match ctx
            .credentials
            .resolve(resource, stalled_on_credentials(resource))
            .await
        {
            Ok(credentials) => credentials,
            Err(ResolveError::Kube(e)) => return Err(e.into()),
            Err(ResolveError::Problem(p)) => {
                ctx.poller.sync(key, None, None);
                problem = p;
                // A fixed Secret is noticed by checking again at the poll interval.
                break 'situation (
                    Situation::Refused(&problem),
                    Action::requeue(jittered(interval)),
                );
            }
        };
        if let Err(p) = ctx.may_manage(resource) {
            ctx.poller.sync(key, None, None);
            problem = p;
            break 'situation (
                Situation::Refused(&problem),
                Action::requeue(jittered(interval)),
            );
        }
        let mut observe_now = false;
        let id = match resource.machine_id() {
            Some(id) => {
                ctx.keep_finalizer(resource).await?;
                id.to_owned()
            }
            // A machine to create (the CRD allows no id only with spec.machine and Manage).
            None => {
                let password = match ctx.prepare_create(resource).await? {
                    Ok(password) => password,
                    Err(p) => {
                        problem = p;
                        break 'situation (
                            Situation::Refused(&problem),
                            Action::requeue(jittered(interval)),
                        );
                    }
                };
                let (creation, record) = ctx
                    .create_machine(resource, &credentials, password, now)
                    .await?;
                action = record;
                match creation {
                    manage::Creation::Known(id) => {
                        observe_now = true;
                        id
                    }
                    manage::Creation::Waiting(p, after) => {
                        progress = p;
                        break 'situation (Situation::Working(&progress), Action::requeue(after));
                    }
                    manage::Creation::Refused(p, after) => {
                        problem = p;
                        break 'situation (Situation::Refused(&problem), Action::requeue(after));
                    }
                }
            }
        };
        let target = Target {
            credentials: credentials.clone(),
            region: resource.spec.region.clone(),
            project_id: resource.spec.project_id.clone(),
            uhost_id: id.clone(),
            zone: resource.spec.zone.clone(),
            interval,
            generation: resource.metadata.generation.unwrap_or_default(),
            observe_now,
        };
        let handled = resource
            .status
            .as_ref()
            .and_then(|s| s.last_handled_refresh.as_deref());
        let refresh = resource.refresh_request();
        let refresh = refresh.as_deref().filter(|token| Some(*token) != handled);
        observation = ctx.poller.sync(key, Some(target.clone()), refresh);
        let found = observation
            .as_ref()
            .filter(|o| o.outcome == Outcome::Found)
            .and_then(|o| o.instance.as_deref());
        connection_refused = resource
            .spec
            .write_connection_secret_to_ref
            .as_ref()
            .and_then(|_| ctx.grant(resource, Privilege::Connection, found).err());
        // Checked again at the poll interval, as no Secret is watched: a key pair the cloud
        // rejected (until it is fixed), and the connection Secret (restored if deleted or
        // edited). Otherwise nothing is done until the observation or the resource changes, or a
        // credentials Secret does (`CredentialsResolver::rotations`).
        let rejected = observation
            .as_ref()
            .and_then(|o| o.outcome.failure())
            .is_some_and(|e| e.disposition() == Disposition::CredentialsRejected);
        let mut next = if rejected || resource.spec.write_connection_secret_to_ref.is_some() {
            Action::requeue(jittered(interval))
        } else {
            Action::await_change()
        };
        if resource.is_managed()
            && let Some(instance) = found
        {
            step = ctx
                .keep_as_asked(key, resource, &credentials, &target, instance, now)
                .await;
            if let Some(after) = step.look_again {
                next = Action::requeue(after);
            }
        }
        (Situation::Watched(observation.as_ref()), next)
    };
    let action = action.or(step.action.take());
    management.action = action.as_ref();
    management.progress = step.progress.as_ref();
    management.problem = step.problem.as_ref();

    let instance = match situation {
        Situation::Watched(Some(o)) => o.instance.as_deref(),
        _ => None,
    };
    let connection = connection::sync(
        &ctx.client,
        &ctx.metrics,
        resource,
        instance,
        connection_refused,
    )
    .await?;

    let stamp = Time(jiff::Timestamp::from_second(now.as_second()).expect("now is a valid time"));
    let desired = status::desired(Inputs {
        resource,
        situation,
        connection_problem: connection.problem.as_ref(),
        connection_secret: connection.name.as_deref(),
        management,
        now: &stamp,
    });
    ctx.write_status(resource, &desired, action.as_ref())
        .await?;
    Ok(next)
}

impl Context {
    /// The version of `resource` its status is written on: the one this reconciliation's own
    /// writes made last, or else the one it read. (A write of the operator's own changes the
    /// version, and the reconciliation goes on from what it read.)
    fn version_of(&self, resource: &CompShareInstance) -> Option<String> {
        self.written
            .lock()
            .expect("written lock")
            .get(&key_of(resource))
            .cloned()
            .or_else(|| resource.resource_version())
    }

    /// Remembers the version a write of the operator's own made, until its reconciliation ends.
    fn wrote(&self, key: ResourceKey, written: &CompShareInstance) {
        if let Some(version) = written.resource_version() {
            self.written
                .lock()
                .expect("written lock")
                .insert(key, version);
        }
    }

    /// Writes `desired` when it differs from the stored status, then the events the change (and
    /// `action`, a call just made) deserve.
    async fn write_status(
        &self,
        resource: &CompShareInstance,
        desired: &CompShareInstanceStatus,
        action: Option<&ActionRecord>,
    ) -> Result<(), Error> {
        let key = key_of(resource);
        if resource.status.as_ref() == Some(desired) {
            return Ok(());
        }
        match apply_status(self, resource, desired).await {
            Ok(()) => {
                self.metrics.record_write("status");
                self.refused.lock().expect("refused lock").remove(&key);
            }
            // Deleted meanwhile: its watch event will follow.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            // Refused (admission, validation, size): retried by the error policy, and said once.
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 413 | 422) => {
                self.metrics
                    .kube_write_refusals
                    .get_or_create(&WriteLabels { kind: "status" })
                    .inc();
                if self
                    .refused
                    .lock()
                    .expect("refused lock")
                    .insert(key.clone())
                {
                    report_refused_write(self, resource, &s.message).await;
                }
                return Err(kube::Error::Api(s).into());
            }
            Err(e) => return Err(e.into()),
        }
        let mut transitions = events::transitions(resource.status.as_ref(), desired);
        transitions.extend(action.map(events::action));
        for transition in transitions {
            self.publish(resource, &transition).await;
        }
        Ok(())
    }

    /// Publishes an event about `resource`; a failure is logged, not returned (an event is not
    /// worth a retried reconciliation).
    async fn publish(&self, resource: &CompShareInstance, transition: &events::Transition) {
        match self
            .events
            .publish(transition, "Observe", &resource.object_ref(&()))
            .await
        {
            Ok(()) => self.metrics.record_write("event"),
            Err(error) => {
                tracing::warn!(resource = %key_of(resource), %error, "could not publish an event");
            }
        }
    }
}

/// Says that the apiserver refuses the status the operator computed: in `Stalled`, added to the
/// status as it is stored (which the apiserver may still take, the refused change being left
/// out), or else in a warning event. It is applied like every status, by the same field manager,
/// so the next status that lands removes it.
async fn report_refused_write(ctx: &Context, resource: &CompShareInstance, refusal: &str) {
    let key = key_of(resource);
    let message = format!(
        "The apiserver refuses the status the operator observed ({refusal}); the status shown is older than the last observation"
    );
    let stalled = Condition {
        type_: status::STALLED.to_owned(),
        status: "True".to_owned(),
        reason: Reason::StatusWriteRefused.as_str().to_owned(),
        message: message.clone(),
        observed_generation: resource.status.as_ref().and_then(|s| s.observed_generation),
        last_transition_time: Time(jiff::Timestamp::now()),
    };
    let mut stored = resource.status.clone().unwrap_or_default();
    stored.conditions.retain(|c| c.type_ != status::STALLED);
    stored.conditions.push(stalled);
    if apply_status(ctx, resource, &stored).await.is_ok() {
        ctx.metrics.record_write("status");
        return;
    }
    let transition = events::Transition {
        type_: kube::runtime::events::EventType::Warning,
        reason: Reason::StatusWriteRefused.as_str().to_owned(),
        note: message,
    };
    match ctx
        .events
        .publish(&transition, "Observe", &resource.object_ref(&()))
        .await
    {
        Ok(()) => ctx.metrics.record_write("event"),
        Err(error) => tracing::warn!(resource = %key, %error, "could not publish an event"),
    }
}

/// Applies `status` (server-side apply by the operator's field manager: fields it wrote before
/// and leaves out now are removed), computed from `resource`, on the version it was computed
/// from: a status computed from a cache that has not yet seen a newer version (the status this
/// operator wrote a moment ago, above all) would write over what that version holds (the last
/// call's record, the conditions' transition times), so the apiserver refuses it with a
/// conflict and the reconciliation runs again from the newer version.
async fn apply_status(
    ctx: &Context,
    resource: &CompShareInstance,
    status: &CompShareInstanceStatus,
) -> Result<(), kube::Error> {
    let key = key_of(resource);
    let api: Api<CompShareInstance> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = serde_json::json!({
        "apiVersion": CompShareInstance::api_version(&()),
        "kind": CompShareInstance::kind(&()),
        "metadata": {"resourceVersion": ctx.version_of(resource)},
        "status": status,
    });
    let written = api
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.wrote(key, &written);
    Ok(())
}

/// Whether the status says the resource's credentials are what stops it.
fn stalled_on_credentials(resource: &CompShareInstance) -> bool {
    status::condition(resource.status.as_ref(), status::STALLED)
        .and_then(|c| Reason::parse(&c.reason))
        .is_some_and(Reason::is_credentials)
}

/// When a failed reconciliation is tried again.
fn error_policy(key: &ResourceKey, error: &Error, ctx: &Context) -> Action {
    if error.is_conflict() {
        tracing::debug!(resource = %key, %error, "working from an older version; retrying");
        return Action::requeue(jittered(CONFLICT_RETRY));
    }
    tracing::warn!(resource = %key, %error, "reconciliation failed; retrying");
    Action::requeue(jittered(ctx.settings.retry_after_error))
}

/// When a reconciliation that conflicted with a newer version of its resource is tried again.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// The resource's poll interval, or the default; clamped to the documented bounds in case the
/// CRD's validation was bypassed (an older CRD, a direct etcd write).
fn poll_interval(resource: &CompShareInstance, default: Duration) -> Duration {
    resource
        .spec
        .poll_interval
        .as_deref()
        .and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or(default)
        .clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
}

/// ±10%, so that re-checks of resources created together do not stay together.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..1.1))
}
