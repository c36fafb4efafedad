//! The Kubernetes side: watches `CompShareInstance` resources, registers them with the poller, and
//! turns observations into status, conditions, events and connection Secrets.
//!
//! A resource is reconciled when it changes (spec, pause or refresh annotations) and when the
//! poller announces that its observation changed; never on a timer that would rewrite status.

pub mod connection;
pub mod credentials;
pub mod events;
pub mod status;

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use crate::poller::{Poller, ResourceKey, Target};
use crate::resource::{
    CompShareInstance, MAX_POLL_INTERVAL, MIN_POLL_INTERVAL, PAUSED_ANNOTATION, REFRESH_ANNOTATION,
};
use credentials::{CredentialsPolicy, CredentialsResolver, ResolveError};
use status::{Inputs, Situation};

/// The field manager of everything the operator writes (server-side apply).
pub const FIELD_MANAGER: &str = "compshare-operator";

#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; all when `None`.
    pub namespace: Option<String>,
    pub default_poll_interval: Duration,
    /// Reconciliations at once.
    pub concurrency: u16,
    /// How often a healthy resource's credentials are read again, to pick up a rotated key.
    pub credentials_recheck: Duration,
    pub credentials: CredentialsPolicy,
    /// Names this operator instance in events.
    pub reporter_instance: Option<String>,
}

/// What every reconciliation shares.
pub struct Context {
    client: kube::Client,
    poller: Poller,
    credentials: Arc<CredentialsResolver>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Context {
    pub fn new(
        client: kube::Client,
        poller: Poller,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: settings.reporter_instance.clone(),
        };
        Context {
            credentials: Arc::new(CredentialsResolver::new(
                client.clone(),
                settings.credentials.clone(),
            )),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            poller,
            metrics,
            settings,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until `shutdown` resolves. `changes` is the poller's announcement channel;
/// `ready` is set once the first list of resources has arrived.
pub async fn run(
    ctx: Arc<Context>,
    changes: mpsc::UnboundedReceiver<ResourceKey>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<CompShareInstance> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (store, writer) = reflector::store();

    let poller = ctx.poller.clone();
    let known = store.clone();
    let resources = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(keep_what_is_read)
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Delete(o)) => poller.forget(&key_of(o)),
            // After a (re-)list: forget resources deleted while the watch was down. The first
            // also makes the operator ready. (Not `Store::wait_until_ready`: it wakes only one
            // of its waiters, and the controller is already one.)
            Ok(watcher::Event::InitDone) => {
                poller.retain(|key| {
                    known
                        .get(&ObjectRef::new(&key.name).within(&key.namespace))
                        .is_some()
                });
                ready.store(true, Ordering::Release);
            }
            _ => {}
        })
        .applied_objects()
        // Our own status writes need no reconciliation: only spec, annotations and deletion do.
        .predicate_filter(reconcile_inputs, Default::default());

    let observed = futures::stream::unfold(changes, |mut rx| async move {
        rx.recv()
            .await
            .map(|key| (ObjectRef::new(&key.name).within(&key.namespace), rx))
    });

    let concurrency = ctx.settings.concurrency;
    let rotations = ctx
        .credentials
        .clone()
        .rotations(ctx.settings.credentials_recheck);
    Controller::for_stream(resources, store)
        .reconcile_on(observed)
        .reconcile_all_on(rotations)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Drops from cached objects what the operator never reads: managed fields (the bulk of each
/// object), labels, and annotations other than its own (`kubectl apply` keeps a whole copy of the
/// object in one). At 10,000 resources this is most of the cache.
fn keep_what_is_read(o: &mut CompShareInstance) {
    let meta = &mut o.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k == PAUSED_ANNOTATION || k == REFRESH_ANNOTATION);
    }
}

/// What decides whether a watch event is worth a reconciliation.
fn reconcile_inputs(o: &CompShareInstance) -> Option<u64> {
    let mut h = DefaultHasher::new();
    o.metadata.generation.hash(&mut h);
    o.is_paused().hash(&mut h);
    o.refresh_request().hash(&mut h);
    o.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn key_of(o: &CompShareInstance) -> ResourceKey {
    ResourceKey {
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
    }
}

async fn reconcile(resource: Arc<CompShareInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_one(&resource, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result: outcome })
        .inc();
    result
}

async fn reconcile_one(resource: &CompShareInstance, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(resource);
    if resource.metadata.deletion_timestamp.is_some() {
        ctx.poller.forget(&key);
        return Ok(Action::await_change());
    }
    let interval = poll_interval(resource, ctx.settings.default_poll_interval);

    let problem;
    let observation;
    let (situation, next) = if resource.is_paused() {
        ctx.poller.forget(&key);
        (Situation::Paused, Action::await_change())
    } else {
        match ctx.credentials.resolve(resource).await {
            Err(ResolveError::Kube(e)) => return Err(e.into()),
            Err(ResolveError::Problem(p)) => {
                ctx.poller.forget(&key);
                problem = p;
                // Secrets are not watched (that would need rights to read every Secret), so a
                // fixed Secret is noticed by checking again at the poll interval.
                (
                    Situation::CredentialsProblem(&problem),
                    Action::requeue(jittered(interval)),
                )
            }
            Ok(credentials) => {
                ctx.poller.watch(Target {
                    key: key.clone(),
                    credentials,
                    region: resource.spec.region.clone(),
                    project_id: resource.spec.project_id.clone(),
                    uhost_id: resource.spec.uhost_id.clone(),
                    zone: resource.spec.zone.clone(),
                    interval,
                    generation: resource.metadata.generation.unwrap_or_default(),
                });
                let handled = resource
                    .status
                    .as_ref()
                    .and_then(|s| s.last_handled_refresh.as_deref());
                if let Some(token) = resource.refresh_request().filter(|t| Some(*t) != handled) {
                    ctx.poller.refresh(&key, token);
                }
                observation = ctx.poller.observation(&key);
                // Nothing to do until the observation or the resource changes (or a credentials
                // Secret does: see `CredentialsResolver::rotations`).
                (
                    Situation::Watched(observation.as_deref()),
                    Action::await_change(),
                )
            }
        }
    };

    let instance = match situation {
        Situation::Watched(Some(o)) => o.instance.as_deref(),
        _ => None,
    };
    let connection = connection::sync(&ctx.client, &ctx.metrics, resource, instance).await?;

    let now = Time(
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .expect("now is a valid time"),
    );
    let desired = status::desired(Inputs {
        resource,
        situation,
        connection_problem: connection.problem.as_ref(),
        connection_secret: connection.name.as_deref(),
        now: &now,
    });
    if resource.status.as_ref() == Some(&desired) {
        return Ok(next);
    }

    let api: Api<CompShareInstance> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = serde_json::json!({
        "apiVersion": CompShareInstance::api_version(&()),
        "kind": CompShareInstance::kind(&()),
        "status": desired,
    });
    match api
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => ctx.metrics.record_write("status"),
        // Deleted meanwhile: its watch event will follow.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }

    let reference = resource.object_ref(&());
    for transition in events::transitions(resource.status.as_ref(), &desired) {
        let event = Event {
            type_: transition.type_,
            reason: transition.reason,
            note: Some(transition.note),
            action: "Observe".to_owned(),
            secondary: None,
        };
        match ctx.recorder.publish(&event, &reference).await {
            Ok(()) => ctx.metrics.record_write("event"),
            Err(error) => tracing::warn!(resource = %key, %error, "could not publish an event"),
        }
    }
    Ok(next)
}

fn error_policy(resource: Arc<CompShareInstance>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(resource = %key_of(&resource), %error, "reconciliation failed; retrying");
    Action::requeue(jittered(Duration::from_secs(10)))
}

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
