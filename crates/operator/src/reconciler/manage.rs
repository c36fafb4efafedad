//! Managing machines (`spec.managementPolicy: Manage`): creating the machine a resource describes
//! without ever making two, keeping its power state and its scheduled stop, and releasing it when
//! the resource is deleted, without ever forgetting one.
//!
//! A create has no idempotency token. So, before asking for one, the operator marks its intent on
//! the resource (the `create-pending` annotation, and the release finalizer) and has the apiserver
//! confirm it; it stamps the resource's UID into the machine's `Remark`; it records the new id in
//! an annotation the moment it knows it. After a crash, a lost answer or a refused write, a
//! pending intent without an id is resolved by looking for the machine bearing the mark, which is
//! adopted if found; only when it is not there after a settle window (`CREATE_SETTLE`), and the
//! failure was one that may not have reached the gateway, is a create asked again.
//!
//! The decisions are pure ([`plan_power`], [`plan_release`]); the calls around them are below.

use std::time::Duration;

use compshare_api::DELETE_STOP_SCHEDULER_ACTION;
use compshare_api::{
    CREATE_ACTION, CallError, CreateRequest, Credentials, DescribeRequest, Disk, Disposition,
    Instance, InstanceRef, MAX_IDS_PER_CALL, Phase, START_ACTION, STOP_ACTION, TERMINATE_ACTION,
    UPDATE_STOP_SCHEDULER_ACTION,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use secrecy::SecretString;

use super::credentials::ResolveError;
use super::privileges::{Machine, Privilege};
use super::queue::Action;
use super::reasons::Reason;
use super::status::{self, Problem, Situation};
use super::{Context, Error, FIELD_MANAGER};
use crate::poller::{Key, ResourceKey, Target};
use crate::resource::{
    ActionRecord, CREATE_PENDING_ANNOTATION, CREATED_ID_ANNOTATION, CompShareInstance, CpuPlatform,
    DeletionPolicy, InstanceResource, PowerState, RELEASE_FINALIZER,
};

/// How long a pending create whose outcome is unknown (its answer was lost) is looked for by its
/// mark before it is taken as not made. The gateway lists a new machine at once; this leaves a
/// wide margin for one that is slow to.
pub(crate) const CREATE_SETTLE: Duration = Duration::from_secs(120);
/// How often a machine on its way somewhere, or an outcome being looked for, is looked at again.
pub(crate) const MOVING_CHECK: Duration = Duration::from_secs(3);
/// How long to wait for an instance's operation lock (`InstanceOperationInProgress`, up to 10
/// minutes) before trying again: often enough to follow, never hammering.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for capacity in the zone before trying to create again.
pub(crate) const CAPACITY_WAIT: Duration = Duration::from_secs(120);
/// The least time ahead a scheduled stop may be set (the gateway's rule).
const SCHEDULE_LEAD: i64 = 300;

/// The mark the operator leaves in a machine's `Remark`: who created it, for which resource.
pub(crate) fn mark_text(namespace: &str, name: &str, uid: &str) -> String {
    format!("compshare-operator {namespace}/{name} uid={uid}")
}

fn mark(resource: &CompShareInstance) -> String {
    mark_text(
        &resource.namespace().unwrap_or_default(),
        &resource.name_any(),
        resource.uid().as_deref().unwrap_or_default(),
    )
}

/// The namespace of the resource that created a machine bearing `remark`, if the operator did.
pub(crate) fn namespace_of_mark(remark: &str) -> Option<&str> {
    let rest = remark.strip_prefix("compshare-operator ")?;
    let (resource, _) = rest.split_once(" uid=")?;
    Some(resource.split_once('/')?.0)
}

/// Whether `remark` is the mark of the resource with `uid`.
fn bears_mark(remark: &str, uid: &str) -> bool {
    remark.starts_with("compshare-operator ") && remark.ends_with(&format!(" uid={uid}"))
}

/// The machine a resource's action is about.
pub(crate) fn instance_ref(resource: &CompShareInstance, id: &str, zone: &str) -> InstanceRef {
    InstanceRef {
        region: resource.spec.region.clone(),
        zone: zone.to_owned(),
        project_id: resource.spec.project_id.clone(),
        uhost_id: id.to_owned(),
    }
}

/// A state-changing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Start,
    Stop,
    ScheduleStop(i64),
    CancelScheduledStop,
    Terminate,
}

impl Call {
    /// The name in `status.lastAction` and in events.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Call::Start => "Start",
            Call::Stop => "Stop",
            Call::ScheduleStop(_) => "ScheduleStop",
            Call::CancelScheduledStop => "CancelScheduledStop",
            Call::Terminate => "Terminate",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Call::Start => START_ACTION,
            Call::Stop => STOP_ACTION,
            Call::ScheduleStop(_) => UPDATE_STOP_SCHEDULER_ACTION,
            Call::CancelScheduledStop => DELETE_STOP_SCHEDULER_ACTION,
            Call::Terminate => TERMINATE_ACTION,
        }
    }
}

/// What to do about a managed machine's power state and scheduled stop, from its last
/// observation. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PowerPlan {
    /// As asked.
    Settled,
    /// On its way somewhere: look again soon.
    Moving,
    Act(Call),
}

pub(crate) fn plan_power(
    power: Option<PowerState>,
    stop_at: Option<i64>,
    instance: &Instance,
    now: i64,
) -> PowerPlan {
    let phase = Phase::of(&instance.state);
    match (power, phase) {
        (_, Phase::Moving | Phase::Unreadable | Phase::Unfamiliar) if power.is_some() => {
            return PowerPlan::Moving;
        }
        (Some(PowerState::Running), Phase::Stopped) => return PowerPlan::Act(Call::Start),
        (Some(PowerState::Stopped), Phase::Running) => return PowerPlan::Act(Call::Stop),
        _ => {}
    }
    let scheduled = instance.stop_scheduler_time;
    match stop_at {
        // Set, and far enough ahead to be set (a past or imminent time is left alone).
        Some(at) if scheduled != Some(at) && at >= now + SCHEDULE_LEAD => {
            PowerPlan::Act(Call::ScheduleStop(at))
        }
        None if scheduled.is_some_and(|t| t > now) => PowerPlan::Act(Call::CancelScheduledStop),
        _ => PowerPlan::Settled,
    }
}

/// The next step of releasing a machine, from its state. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReleaseStep {
    /// Gone: the resource may go.
    Released,
    Act(Call),
    /// On its way: look again soon.
    Wait,
}

pub(crate) fn plan_release(instance: Option<&Instance>) -> ReleaseStep {
    let Some(instance) = instance else {
        return ReleaseStep::Released;
    };
    match Phase::of(&instance.state) {
        Phase::Running => ReleaseStep::Act(Call::Stop),
        Phase::Stopped | Phase::InstallFailed => ReleaseStep::Act(Call::Terminate),
        Phase::Moving | Phase::Unreadable | Phase::Unfamiliar => ReleaseStep::Wait,
    }
}

/// What the operator is doing about a managed resource, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// How a create went.
pub(crate) enum Creation {
    /// The machine exists (created now, or found by its mark).
    Known(String),
    /// Not yet known: look again after this long.
    Waiting(Progress, Duration),
    /// A person must act (or the zone must have capacity again).
    Refused(Problem, Duration),
}

impl Context {
    /// Makes sure the machine a resource describes exists, creating it at most once.
    pub(crate) async fn create_machine(
        &self,
        resource: &CompShareInstance,
        credentials: &Credentials,
        password: Option<SecretString>,
        now: jiff::Timestamp,
    ) -> Result<(Creation, Option<ActionRecord>), Error> {
        let uid = resource.uid().unwrap_or_default();
        if let Some(pending) = resource.annotation(CREATE_PENDING_ANNOTATION) {
            match self.find_marked(resource, credentials, &uid).await {
                Ok(Some(id)) => {
                    self.record_created(resource, &id).await?;
                    return Ok((Creation::Known(id), None));
                }
                Ok(None) => {
                    let since = pending
                        .parse::<jiff::Timestamp>()
                        .map(|at| now.duration_since(at).unsigned_abs())
                        .unwrap_or_default();
                    if since < CREATE_SETTLE {
                        let progress = Progress {
                            reason: Reason::CreateOutcomeUnknown,
                            message: format!(
                                "A create was asked for at {pending} and its outcome is not known yet; looking for the machine marked with this resource's UID before any other create (for up to {}s)",
                                CREATE_SETTLE.as_secs()
                            ),
                        };
                        return Ok((Creation::Waiting(progress, MOVING_CHECK), None));
                    }
                    // Not made: the intent is cleared and made again below.
                }
                Err(error) => return Ok((self.lookup_failed(&error), None)),
            }
        }

        // The intent, confirmed by the apiserver before the call: a crash from here on is
        // resolved by the lookup above. The patch holds only on the version this decision was
        // made from: a reconciliation working from a cache that has not yet seen an earlier
        // intent or id conflicts here instead of creating a second machine.
        let mut metadata = serde_json::json!({
            "resourceVersion": self.version_of(resource),
            "annotations": {CREATE_PENDING_ANNOTATION: now.to_string()},
        });
        if let Some(finalizers) = finalizers_to_set(resource) {
            metadata["finalizers"] = finalizers.into();
        }
        self.patch_metadata(resource, serde_json::json!({ "metadata": metadata }))
            .await?;

        let request = create_request(resource, mark(resource), password);
        let result = self.spend_and_call(credentials, CREATE_ACTION, async {
            self.cloud.create(credentials, &request).await
        });
        let result = result.await;
        let record = |error: Option<&CallError>| action_record("Create", now, error);
        match result {
            Ok(ids) => {
                let id = ids.into_iter().next().expect("a create answers an id");
                self.record_created(resource, &id).await?;
                Ok((Creation::Known(id), Some(record(None))))
            }
            Err(error) if error.may_have_taken_effect() => {
                let progress = Progress {
                    reason: Reason::CreateOutcomeUnknown,
                    message: format!(
                        "The create's answer was lost ({error}); looking for the machine marked with this resource's UID before any other create"
                    ),
                };
                Ok((
                    Creation::Waiting(progress, MOVING_CHECK),
                    Some(record(Some(&error))),
                ))
            }
            Err(error) => {
                // Certainly not made: the intent goes, so that a later try starts afresh.
                self.patch_metadata(
                    resource,
                    serde_json::json!({"metadata": {"annotations": {CREATE_PENDING_ANNOTATION: null}}}),
                )
                .await?;
                let record = record(Some(&error));
                Ok((self.create_failed(&error), Some(record)))
            }
        }
    }

    fn lookup_failed(&self, error: &CallError) -> Creation {
        let progress = Progress {
            reason: Reason::CreateOutcomeUnknown,
            message: format!(
                "Looking for the machine a create may have made failed ({error}); no create is asked until it succeeds"
            ),
        };
        Creation::Waiting(progress, LOCK_WAIT)
    }

    fn create_failed(&self, error: &CallError) -> Creation {
        let message = format!("CreateCompShareInstance failed: {error}");
        match error.disposition() {
            Disposition::OutOfCapacity => Creation::Waiting(
                Progress {
                    reason: Reason::WaitingForCapacity,
                    message: format!("{message}; trying again in {}s", CAPACITY_WAIT.as_secs()),
                },
                CAPACITY_WAIT,
            ),
            Disposition::Throttled | Disposition::Transient | Disposition::Busy => {
                Creation::Waiting(
                    Progress {
                        reason: Reason::Creating,
                        message: format!("{message}; trying again"),
                    },
                    LOCK_WAIT,
                )
            }
            Disposition::AccountBlocked => Creation::Refused(
                Problem {
                    reason: Reason::AccountBlocked,
                    message,
                },
                CAPACITY_WAIT,
            ),
            Disposition::CredentialsRejected => Creation::Refused(
                Problem {
                    reason: Reason::CredentialsRejected,
                    message,
                },
                CAPACITY_WAIT,
            ),
            Disposition::PermissionDenied => Creation::Refused(
                Problem {
                    reason: Reason::PermissionDenied,
                    message,
                },
                CAPACITY_WAIT,
            ),
            Disposition::InvalidRequest => Creation::Refused(
                Problem {
                    reason: Reason::InvalidRequest,
                    message: format!("{message}; check spec.machine"),
                },
                CAPACITY_WAIT,
            ),
        }
    }

    /// Adds the release finalizer to a managed resource whose machine is to be released on
    /// deletion, or removes it from one whose is not (only on the version read, or the one this
    /// reconciliation's own writes made since: a concurrent change to the finalizers conflicts
    /// rather than being overwritten).
    pub(crate) async fn keep_finalizer(&self, resource: &CompShareInstance) -> Result<(), Error> {
        let Some(finalizers) = finalizers_to_set(resource) else {
            return Ok(());
        };
        self.patch_metadata(
            resource,
            serde_json::json!({"metadata": {
                "resourceVersion": self.version_of(resource),
                "finalizers": finalizers,
            }}),
        )
        .await
    }

    /// Records the created id where it survives a status wipe, and clears the intent.
    async fn record_created(&self, resource: &CompShareInstance, id: &str) -> Result<(), Error> {
        self.patch_metadata(
            resource,
            serde_json::json!({"metadata": {"annotations": {
                CREATED_ID_ANNOTATION: id,
                CREATE_PENDING_ANNOTATION: null,
            }}}),
        )
        .await
    }

    /// A JSON merge patch of the resource's metadata (annotations and finalizers are the
    /// operator's to keep: a merge patch leaves every other key alone).
    pub(crate) async fn patch_metadata(
        &self,
        resource: &CompShareInstance,
        patch: serde_json::Value,
    ) -> Result<(), Error> {
        let api: Api<CompShareInstance> = Api::namespaced(
            self.client.clone(),
            &resource.namespace().unwrap_or_default(),
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let written = api
            .patch(&resource.name_any(), &params, &Patch::Merge(&patch))
            .await?;
        self.metrics.record_write("metadata");
        self.wrote(super::key_of(resource), &written);
        Ok(())
    }

    /// The id of the machine bearing the resource's mark, listing the region (and zone) page by
    /// page.
    async fn find_marked(
        &self,
        resource: &CompShareInstance,
        credentials: &Credentials,
        uid: &str,
    ) -> Result<Option<String>, CallError> {
        let mut offset = 0;
        loop {
            let request = DescribeRequest {
                region: resource.spec.region.clone(),
                zone: resource.spec.zone.clone(),
                project_id: resource.spec.project_id.clone(),
                limit: Some(MAX_IDS_PER_CALL as u32),
                offset: Some(offset),
                ..DescribeRequest::default()
            };
            let page = self
                .spend_and_call(credentials, compshare_api::DESCRIBE_ACTION, async {
                    self.cloud.describe(credentials, &request).await
                })
                .await?;
            if let Some(found) = page.u_host_set.iter().find(|i| bears_mark(&i.remark, uid)) {
                return Ok(Some(found.u_host_id.to_string()));
            }
            let seen = page.u_host_set.len() + page.unreadable.len();
            offset += seen as u32;
            let total = page.total_count.unwrap_or_default().max(0) as u32;
            if seen == 0 || offset >= total {
                return Ok(None);
            }
        }
    }

    /// Makes `call` on the machine; the record of it for status, and its failure.
    pub(crate) async fn make_call(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
        call: Call,
        now: jiff::Timestamp,
    ) -> (ActionRecord, Option<CallError>) {
        let result = self
            .spend_and_call(credentials, call.action(), async {
                match call {
                    Call::Start => self.cloud.start(credentials, instance, false).await,
                    Call::Stop => self.cloud.stop(credentials, instance).await,
                    Call::ScheduleStop(at) => {
                        self.cloud
                            .update_stop_scheduler(credentials, instance, at)
                            .await
                    }
                    Call::CancelScheduledStop => {
                        self.cloud
                            .delete_stop_scheduler(credentials, instance)
                            .await
                    }
                    Call::Terminate => self
                        .cloud
                        .terminate(credentials, instance, false)
                        .await
                        .map(drop),
                }
            })
            .await;
        let error = result.err();
        (action_record(call.name(), now, error.as_ref()), error)
    }

    /// Spends a token of the account's budget, makes the call, and counts it.
    async fn spend_and_call<T>(
        &self,
        credentials: &Credentials,
        action: &'static str,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        self.poller.spend(credentials).await;
        let started = std::time::Instant::now();
        let result = call.await;
        self.metrics
            .record_call(action, started.elapsed(), result.as_ref().map(|_| ()));
        result
    }
}

/// What keeping a machine as asked did this time.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub(crate) progress: Option<Progress>,
    pub(crate) problem: Option<Problem>,
    pub(crate) action: Option<ActionRecord>,
    /// Look at the resource again after this long (a lock, a passing failure).
    pub(crate) look_again: Option<Duration>,
}

/// How long a successful call is not made again for the same resource, while the observation
/// that shows its effect is on its way.
const RECENT_CALL: Duration = Duration::from_secs(10);

/// A call made for a resource, not made again before `until` (its effect is on its way, or the
/// cloud refused it and asked to wait), whatever reconciles the resource meanwhile; and what the
/// resource shows until then.
#[derive(Debug)]
pub(crate) struct Held {
    call: Call,
    until: tokio::time::Instant,
    progress: Option<Progress>,
    problem: Option<Problem>,
}

impl Context {
    /// Whether the resource may ask for management here: the administrator's switch.
    pub(crate) fn may_manage(&self, resource: &CompShareInstance) -> Result<(), Problem> {
        let namespace = resource.namespace().unwrap_or_default();
        if !resource.is_managed() || self.settings.management_namespaces.allows(&namespace) {
            return Ok(());
        }
        Err(Problem {
            reason: Reason::ManagementNotAllowed,
            message: format!(
                "spec.managementPolicy is Manage, but the operator's administrator has not allowed namespace {namespace} to manage machines (--management-namespaces); nothing is called. Set spec.managementPolicy: Observe to observe only"
            ),
        })
    }

    /// Whether the resource may exercise `privilege` on the machine `instance` (when observed):
    /// always with its own credentials, as granted with the operator's default ones.
    pub(crate) fn grant(
        &self,
        resource: &CompShareInstance,
        privilege: Privilege,
        instance: Option<&Instance>,
    ) -> Result<(), Problem> {
        if resource.spec.credentials_ref.is_some() {
            return Ok(());
        }
        // Nothing is written or called before the machine is seen.
        let Some(instance) = instance else {
            return Ok(());
        };
        self.settings.grants.check(
            &resource.namespace().unwrap_or_default(),
            privilege,
            Machine {
                project_id: resource.spec.project_id.as_deref(),
                tag: Some(&instance.tag),
                remark: Some(&instance.remark),
                to_be_created: false,
            },
        )
    }

    /// What a create needs before it is asked for: the grant (with the default credentials) and
    /// the password, from its Secret.
    pub(crate) async fn prepare_create(
        &self,
        resource: &CompShareInstance,
    ) -> Result<Result<Option<SecretString>, Problem>, Error> {
        let namespace = resource.namespace().unwrap_or_default();
        if resource.spec.credentials_ref.is_none()
            && let Err(problem) = self.settings.grants.check(
                &namespace,
                Privilege::Manage,
                Machine {
                    project_id: resource.spec.project_id.as_deref(),
                    to_be_created: true,
                    ..Machine::default()
                },
            )
        {
            return Ok(Err(problem));
        }
        let Some(reference) = resource
            .spec
            .machine
            .as_ref()
            .and_then(|m| m.password_secret_ref.as_ref())
        else {
            return Ok(Ok(None));
        };
        let key = reference.key.as_deref().unwrap_or("password");
        let missing = |what: String| {
            Ok(Err(Problem {
                reason: Reason::PasswordSecretMissing,
                message: format!(
                    "Secret {namespace}/{} (spec.machine.passwordSecretRef) {what}; no machine is created without it",
                    reference.name
                ),
            }))
        };
        let api: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &namespace);
        let secret = match api.get_opt(&reference.name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return missing("does not exist".to_owned()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return missing(format!(
                    "cannot be read by the operator: {}",
                    status.message
                ));
            }
            Err(error) => return Err(error.into()),
        };
        match secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|p| !p.is_empty())
        {
            Some(password) => Ok(Ok(Some(SecretString::from(password)))),
            None => missing(format!("has no non-empty UTF-8 key {key:?}")),
        }
    }

    /// Keeps an observed, managed machine as the spec asks: its power state and its scheduled
    /// stop. At most one call per reconciliation, and none while the machine is moving.
    pub(crate) async fn keep_as_asked(
        &self,
        key: &Key,
        resource: &CompShareInstance,
        credentials: &Credentials,
        target: &Target,
        instance: &Instance,
        now: jiff::Timestamp,
    ) -> Step {
        let stop_at = resource.spec.stop_at.as_ref().map(|t| t.0.as_second());
        let call = match plan_power(
            resource.spec.power_state,
            stop_at,
            instance,
            now.as_second(),
        ) {
            PowerPlan::Settled | PowerPlan::Moving => return Step::default(),
            PowerPlan::Act(call) => call,
        };
        if matches!(call, Call::ScheduleStop(_)) && instance.is_spot == Some(true) {
            return Step {
                problem: Some(Problem {
                    reason: Reason::InvalidRequest,
                    message: "spec.stopAt: CompShare has no scheduled stop for Spot machines; remove spec.stopAt".to_owned(),
                }),
                ..Step::default()
            };
        }
        if let Err(problem) = self.grant(resource, Privilege::Manage, Some(instance)) {
            return Step {
                problem: Some(problem),
                ..Step::default()
            };
        }
        let progress = |reason: Reason, message: String| Some(Progress { reason, message });
        let waiting = match call {
            Call::Start => progress(
                Reason::StartRequested,
                "The operator asked CompShare to start the machine (spec.powerState: Running)"
                    .into(),
            ),
            Call::Stop => progress(
                Reason::StopRequested,
                "The operator asked CompShare to stop the machine (spec.powerState: Stopped)"
                    .into(),
            ),
            _ => None,
        };
        if let Some(step) = self.held(key, call) {
            return step;
        }
        let zone = if instance.zone.is_empty() {
            resource.spec.zone.clone().unwrap_or_default()
        } else {
            instance.zone.to_string()
        };
        let instance_ref = instance_ref(resource, &target.uhost_id, &zone);
        let (record, error) = self.make_call(credentials, &instance_ref, call, now).await;
        let (progress, problem, hold) = match &error {
            None => {
                // Watched closely until it settles (the poller polls moving machines faster).
                let hurry = Target {
                    observe_now: true,
                    ..target.clone()
                };
                self.poller.sync(key, Some(hurry), None);
                (waiting, None, RECENT_CALL)
            }
            Some(error) => match call_failed(call, error) {
                Some(problem) => (None, Some(problem), CAPACITY_WAIT),
                None => {
                    let reason = if error.disposition() == Disposition::Busy {
                        Reason::InstanceLocked
                    } else {
                        waiting
                            .as_ref()
                            .map_or(Reason::InstanceLocked, |w| w.reason)
                    };
                    let message = format!(
                        "{} failed ({error}); trying again in {}s",
                        call.action(),
                        LOCK_WAIT.as_secs()
                    );
                    (progress(reason, message), None, LOCK_WAIT)
                }
            },
        };
        let held = Held {
            call,
            until: tokio::time::Instant::now() + hold,
            progress,
            problem,
        };
        let step = Step {
            progress: held.progress.clone(),
            problem: held.problem.clone(),
            action: Some(record),
            look_again: error.is_some().then_some(hold),
        };
        self.recent_calls
            .lock()
            .expect("recent calls lock")
            .insert(ResourceKey::clone(key), held);
        step
    }

    /// What the resource shows while `call` is held (made recently, or refused and waited for).
    fn held(&self, key: &ResourceKey, call: Call) -> Option<Step> {
        let now = tokio::time::Instant::now();
        let mut recent = self.recent_calls.lock().expect("recent calls lock");
        recent.retain(|_, held| held.until > now);
        let held = recent.get(key).filter(|held| held.call == call)?;
        Some(Step {
            progress: held.progress.clone(),
            problem: held.problem.clone(),
            action: None,
            look_again: Some((held.until - now).max(Duration::from_secs(1))),
        })
    }

    /// Releases a deleted resource's machine (stops it, then terminates it), then lets the
    /// resource go; or keeps the finalizer and says why it cannot.
    pub(crate) async fn release(
        &self,
        resource: &CompShareInstance,
        now: jiff::Timestamp,
    ) -> Result<Action, Error> {
        if resource.deletion_policy() == DeletionPolicy::Orphan {
            return self.let_go(resource, None).await;
        }
        // Management turned off since: nothing is called, and a person decides.
        if let Err(problem) = self.may_manage(resource) {
            return self.release_blocked(resource, &problem, None, now).await;
        }
        let credentials = match self.credentials.resolve(resource, true).await {
            Ok(credentials) => credentials,
            Err(ResolveError::Kube(error)) => return Err(error.into()),
            Err(ResolveError::Problem(problem)) => {
                return self.release_blocked(resource, &problem, None, now).await;
            }
        };
        let id = match resource.machine_id() {
            Some(id) => id.to_owned(),
            None if resource.annotation(CREATE_PENDING_ANNOTATION).is_some() => {
                let uid = resource.uid().unwrap_or_default();
                match self.find_marked(resource, &credentials, &uid).await {
                    Ok(Some(id)) => {
                        self.record_created(resource, &id).await?;
                        id
                    }
                    Ok(None) => {
                        let pending = resource
                            .annotation(CREATE_PENDING_ANNOTATION)
                            .and_then(|p| p.parse::<jiff::Timestamp>().ok())
                            .map_or(Duration::MAX, |at| now.duration_since(at).unsigned_abs());
                        if pending < CREATE_SETTLE {
                            return Ok(Action::requeue(MOVING_CHECK));
                        }
                        return self.let_go(resource, None).await;
                    }
                    Err(error) => {
                        let problem = Problem {
                            reason: Reason::ReleaseBlocked,
                            message: format!(
                                "looking for the machine a create may have made failed: {error}"
                            ),
                        };
                        return self.release_blocked(resource, &problem, None, now).await;
                    }
                }
            }
            // Nothing was created.
            None => return self.let_go(resource, None).await,
        };
        let zone = resource.spec.zone.clone();
        let request = DescribeRequest {
            region: resource.spec.region.clone(),
            project_id: resource.spec.project_id.clone(),
            uhost_ids: vec![id.clone()],
            limit: Some(MAX_IDS_PER_CALL as u32),
            ..DescribeRequest::default()
        };
        let answer = self
            .spend_and_call(&credentials, compshare_api::DESCRIBE_ACTION, async {
                self.cloud.describe(&credentials, &request).await
            })
            .await;
        let instance = match &answer {
            Ok(answer) => answer.u_host_set.iter().find(|i| i.u_host_id == id),
            Err(error) => {
                let problem = Problem {
                    reason: Reason::ReleaseBlocked,
                    message: format!("DescribeCompShareInstance failed: {error}"),
                };
                return self.release_blocked(resource, &problem, None, now).await;
            }
        };
        if let Err(problem) = self.grant(resource, Privilege::Manage, instance) {
            return self.release_blocked(resource, &problem, None, now).await;
        }
        let call = match plan_release(instance) {
            ReleaseStep::Released => {
                let record = action_record("Release", now, None);
                return self.let_go(resource, Some(record)).await;
            }
            ReleaseStep::Wait => {
                self.show_releasing(resource, None, now).await?;
                return Ok(Action::requeue(MOVING_CHECK));
            }
            ReleaseStep::Act(call) => call,
        };
        let instance = instance.expect("a machine to act on");
        let zone = non_empty(&instance.zone).or(zone).unwrap_or_default();
        let (record, error) = self
            .make_call(&credentials, &instance_ref(resource, &id, &zone), call, now)
            .await;
        match error.as_ref().and_then(|e| call_failed(call, e)) {
            Some(problem) => {
                self.release_blocked(resource, &problem, Some(&record), now)
                    .await
            }
            None => {
                self.show_releasing(resource, Some(&record), now).await?;
                Ok(Action::requeue(if error.is_some() {
                    LOCK_WAIT
                } else {
                    MOVING_CHECK
                }))
            }
        }
    }

    /// Removes the release finalizer: the resource may go.
    async fn let_go(
        &self,
        resource: &CompShareInstance,
        released: Option<ActionRecord>,
    ) -> Result<Action, Error> {
        let finalizers: Vec<&String> = resource
            .finalizers()
            .iter()
            .filter(|f| *f != RELEASE_FINALIZER)
            .collect();
        self.patch_metadata(
            resource,
            serde_json::json!({"metadata": {
                "resourceVersion": self.version_of(resource),
                "finalizers": finalizers,
            }}),
        )
        .await?;
        if let Some(record) = released {
            self.publish(resource, &super::events::action(&record))
                .await;
        }
        Ok(Action::await_change())
    }

    /// Says why the machine cannot be released (and records the call that failed, if one did);
    /// the resource keeps its finalizer and is looked at again later.
    async fn release_blocked(
        &self,
        resource: &CompShareInstance,
        problem: &Problem,
        action: Option<&ActionRecord>,
        now: jiff::Timestamp,
    ) -> Result<Action, Error> {
        let blocked = Problem {
            reason: Reason::ReleaseBlocked,
            message: format!(
                "The machine cannot be released: {}. The resource keeps its finalizer until it is; to let it go without releasing the machine (which then keeps running and billing), set spec.deletionPolicy: Orphan",
                problem.message
            ),
        };
        self.write_release_status(resource, Situation::Refused(&blocked), action, now)
            .await?;
        Ok(Action::requeue(super::jittered(CAPACITY_WAIT)))
    }

    async fn show_releasing(
        &self,
        resource: &CompShareInstance,
        action: Option<&ActionRecord>,
        now: jiff::Timestamp,
    ) -> Result<(), Error> {
        let releasing = Progress {
            reason: Reason::Releasing,
            message: "The resource is being deleted: the operator stops and releases its machine first (spec.deletionPolicy: Delete)".to_owned(),
        };
        self.write_release_status(resource, Situation::Working(&releasing), action, now)
            .await
    }

    async fn write_release_status(
        &self,
        resource: &CompShareInstance,
        situation: Situation<'_>,
        action: Option<&ActionRecord>,
        now: jiff::Timestamp,
    ) -> Result<(), Error> {
        let stamp = Time(jiff::Timestamp::from_second(now.as_second()).expect("a valid time"));
        let desired = status::desired(status::Inputs {
            resource,
            situation,
            connection_problem: None,
            connection_secret: resource
                .status
                .as_ref()
                .and_then(|s| s.connection_secret_name.as_deref()),
            management: status::Management {
                action,
                ..status::Management::default()
            },
            now: &stamp,
        });
        self.write_status(resource, &desired, action).await
    }
}

/// The finalizers a resource should have, when they differ from those it has: the release
/// finalizer belongs to a managed resource whose deletion releases its machine. Pure.
pub(crate) fn finalizers_to_set(resource: &CompShareInstance) -> Option<Vec<String>> {
    let wanted = resource.is_managed() && resource.deletion_policy() == DeletionPolicy::Delete;
    let has = resource.finalizers().iter().any(|f| f == RELEASE_FINALIZER);
    let mut finalizers = resource.finalizers().to_vec();
    match (wanted, has) {
        (true, false) => finalizers.push(RELEASE_FINALIZER.to_owned()),
        (false, true) => finalizers.retain(|f| f != RELEASE_FINALIZER),
        _ => return None,
    }
    Some(finalizers)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The record of a call for `status.lastAction`.
fn action_record(action: &str, now: jiff::Timestamp, error: Option<&CallError>) -> ActionRecord {
    ActionRecord {
        action: action.into(),
        time: Time(now),
        result: match error {
            None => "Succeeded".into(),
            Some(e) if e.may_have_taken_effect() => "Unknown".into(),
            Some(_) => "Failed".into(),
        },
        ret_code: match error {
            Some(CallError::Api { code, .. }) => Some(*code),
            _ => None,
        },
        message: error.map(ToString::to_string),
    }
}

/// What a failed call on an existing machine means for the resource: a problem a person must
/// fix, or `None` when waiting and trying again is the answer (a lock, throttling, a passing
/// failure).
pub(crate) fn call_failed(call: Call, error: &CallError) -> Option<Problem> {
    let message = format!("{} failed: {error}", call.action());
    let reason = match error.disposition() {
        Disposition::AccountBlocked => Reason::AccountBlocked,
        Disposition::CredentialsRejected => Reason::CredentialsRejected,
        Disposition::PermissionDenied => Reason::PermissionDenied,
        Disposition::InvalidRequest => Reason::InvalidRequest,
        Disposition::Busy
        | Disposition::OutOfCapacity
        | Disposition::Throttled
        | Disposition::Transient => return None,
    };
    Some(Problem { reason, message })
}

fn create_request(
    resource: &CompShareInstance,
    mark: String,
    password: Option<SecretString>,
) -> CreateRequest {
    let machine = resource.spec.machine.as_ref().expect("a machine to create");
    let name = machine
        .name
        .clone()
        .unwrap_or_else(|| crate::resource::prefix(&resource.name_any(), 63).to_owned());
    CreateRequest {
        region: resource.spec.region.clone(),
        zone: resource.spec.zone.clone().unwrap_or_default(),
        project_id: resource.spec.project_id.clone(),
        gpu_type: machine.gpu_type.clone(),
        gpu: machine.gpu.max(0) as u32,
        cpu: machine.cpu.max(0) as u32,
        memory_mb: machine.memory_mb.max(0) as u64,
        image_id: machine.image_id.clone(),
        disks: machine
            .disks
            .iter()
            .map(|d| Disk {
                boot: d.boot,
                kind: serde_json::to_value(d.type_)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                size_gb: d.size_gb.max(0) as u32,
            })
            .collect(),
        machine_type: Some("G".to_owned()),
        charge_type: Some(
            serde_json::to_value(
                machine
                    .charge_type
                    .unwrap_or(crate::resource::ChargeType::Dynamic),
            )
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        ),
        quantity: machine.quantity.map(|q| q.max(1) as u32),
        name: Some(name),
        remark: Some(mark),
        password,
        minimal_cpu_platform: Some(
            match machine.minimal_cpu_platform.unwrap_or(CpuPlatform::Auto) {
                CpuPlatform::Auto => "Auto",
                CpuPlatform::IntelAuto => "Intel/Auto",
                CpuPlatform::AmdAuto => "Amd/Auto",
            }
            .to_owned(),
        ),
        security_group_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(state: &str) -> Instance {
        Instance {
            u_host_id: "uhost-1".into(),
            state: state.into(),
            ..Instance::default()
        }
    }

    #[test]
    fn marks_name_their_resource_and_uid() {
        let m = mark_text("team-a", "trainer", "0c9e");
        assert_eq!(namespace_of_mark(&m), Some("team-a"));
        assert!(bears_mark(&m, "0c9e"));
        assert!(!bears_mark(&m, "0c9"));
        assert!(!bears_mark("uid=0c9e", "0c9e"));
        assert_eq!(namespace_of_mark("a remark someone typed"), None);
    }

    #[test]
    fn power_follows_the_spec_when_the_machine_is_settled() {
        let now = 1_000_000;
        let run = Some(PowerState::Running);
        let stop = Some(PowerState::Stopped);
        assert_eq!(
            plan_power(run, None, &instance("Stopped"), now),
            PowerPlan::Act(Call::Start)
        );
        assert_eq!(
            plan_power(stop, None, &instance("Running"), now),
            PowerPlan::Act(Call::Stop)
        );
        assert_eq!(
            plan_power(run, None, &instance("Running"), now),
            PowerPlan::Settled
        );
        assert_eq!(
            plan_power(run, None, &instance("Starting"), now),
            PowerPlan::Moving
        );
        assert_eq!(
            plan_power(stop, None, &instance(""), now),
            PowerPlan::Moving
        );
        // Left as it is when nothing is asked.
        assert_eq!(
            plan_power(None, None, &instance("Stopped"), now),
            PowerPlan::Settled
        );
        assert_eq!(
            plan_power(None, None, &instance("Starting"), now),
            PowerPlan::Settled
        );
        // A failed install is not started or stopped.
        assert_eq!(
            plan_power(run, None, &instance("Install Fail"), now),
            PowerPlan::Settled
        );
    }

    #[test]
    fn a_scheduled_stop_is_set_changed_and_cancelled_once_each() {
        let now = 1_000_000;
        let running = instance("Running");
        let at = now + 3600;
        assert_eq!(
            plan_power(None, Some(at), &running, now),
            PowerPlan::Act(Call::ScheduleStop(at))
        );
        let mut scheduled = running.clone();
        scheduled.stop_scheduler_time = Some(at);
        assert_eq!(
            plan_power(None, Some(at), &scheduled, now),
            PowerPlan::Settled
        );
        assert_eq!(
            plan_power(None, Some(at + 60), &scheduled, now),
            PowerPlan::Act(Call::ScheduleStop(at + 60))
        );
        assert_eq!(
            plan_power(None, None, &scheduled, now),
            PowerPlan::Act(Call::CancelScheduledStop)
        );
        // Too soon or past: left alone.
        assert_eq!(
            plan_power(None, Some(now + 60), &running, now),
            PowerPlan::Settled
        );
    }

    #[test]
    fn release_stops_then_terminates_then_lets_go() {
        assert_eq!(
            plan_release(Some(&instance("Running"))),
            ReleaseStep::Act(Call::Stop)
        );
        assert_eq!(plan_release(Some(&instance("Stopping"))), ReleaseStep::Wait);
        assert_eq!(
            plan_release(Some(&instance("Stopped"))),
            ReleaseStep::Act(Call::Terminate)
        );
        assert_eq!(
            plan_release(Some(&instance("Install Fail"))),
            ReleaseStep::Act(Call::Terminate)
        );
        assert_eq!(plan_release(None), ReleaseStep::Released);
    }

    #[test]
    fn a_failed_call_is_a_problem_only_when_a_person_must_act() {
        let api = |code: i64, message: &str| CallError::Api {
            code,
            message: message.into(),
        };
        assert_eq!(
            call_failed(Call::Start, &api(226601, "in arrears")).map(|p| p.reason),
            Some(Reason::AccountBlocked)
        );
        assert_eq!(
            call_failed(Call::Start, &api(8040, "InstanceOperationInProgress: wait")),
            None
        );
        assert_eq!(call_failed(Call::Start, &api(153, "slow down")), None);
        assert_eq!(
            call_failed(Call::Stop, &api(230, "state Stopped")).map(|p| p.reason),
            Some(Reason::InvalidRequest)
        );
        let record = action_record("Start", jiff::Timestamp::UNIX_EPOCH, Some(&api(171, "no")));
        assert_eq!(
            (record.result.as_str(), record.ret_code),
            ("Failed", Some(171))
        );
        let lost = CallError::Timeout(Duration::from_secs(10));
        assert_eq!(
            action_record("Create", jiff::Timestamp::UNIX_EPOCH, Some(&lost)).result,
            "Unknown"
        );
    }
}
