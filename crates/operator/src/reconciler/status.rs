//! The status a resource should have, computed from what is known about it. Pure: no I/O, no clock
//! (the time is passed in), so every rule is unit-tested.
//!
//! Conditions follow `metav1.Condition` and kstatus. `Ready`, `Running` and `Synced` are always
//! present once the resource has been observed; `Reconciling`, `Stalled` and `Paused` are
//! "abnormal-true" and present only while True (their absence means False to kstatus, Argo CD and
//! `kubectl wait`). Each carries the generation it was computed for; `lastTransitionTime` moves only
//! when a condition's status changes, so an unchanged resource yields an identical status and no
//! write.
//!
//! **What `Ready` means.** `Ready` is True when the machine has settled in the state the resource
//! asks for: `Running`, or `Stopped` when nothing asks it to run. It is False (with `Reconciling`)
//! while the machine is on its way somewhere, False (with `Stalled`) when a person must act, and
//! Unknown (with `Reconciling`) while the state cannot be read or is one this operator does not
//! know. So every GitOps tool reads one verdict: settled is Current (kstatus, Flux) and
//! Healthy/Suspended (Argo CD), moving is InProgress/Progressing, stalled is Failed/Degraded.
//! Whether the machine runs is the `Running` condition.
//!
//! **What `observedGeneration` means.** The generation of the spec that the facts and conditions
//! answer: claimed by an observation made for that generation (or by a decision that needs none:
//! paused, unusable credentials), never by an older observation or a failed call. A resource the
//! operator has not observed keeps the CRD's default (`observedGeneration: 0`), which every tool
//! reads as in progress.

use compact_str::{CompactString, format_compact};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::manage::Progress;
use super::reasons::Reason;
use crate::poller::{Observation, Outcome};
use crate::resource::{
    ActionRecord, AddressType, CompShareInstance, CompShareInstanceStatus, GpuInfo, ImageInfo,
    InstanceAddress, InstanceResource, OsInfo, PowerState, SoftwareEndpoint, SshAccess,
};
use compshare_api::Reach;
use compshare_api::parse_login_command;
use compshare_api::{CallError, Disposition, Instance, Phase};

pub(crate) const READY: &str = "Ready";
pub(crate) const RUNNING: &str = "Running";
pub(crate) const SYNCED: &str = "Synced";
pub(crate) const RECONCILING: &str = "Reconciling";
pub(crate) const STALLED: &str = "Stalled";
pub(crate) const PAUSED: &str = "Paused";
const CONDITION_ORDER: [&str; 6] = [READY, RUNNING, SYNCED, RECONCILING, STALLED, PAUSED];

pub(crate) const TRUE: &str = "True";
pub(crate) const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

/// Something a person must fix before the resource can be observed or trusted; shown in `Synced`
/// or `Stalled` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub reason: Reason,
    pub message: String,
}

/// Where the resource stands, as the reconciler found it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Situation<'a> {
    /// Polling is paused by the annotation.
    Paused,
    /// Something a person must fix stops the operator before any call (unusable credentials,
    /// management not allowed, a missing grant); nothing is polled until it is fixed.
    Refused(&'a Problem),
    /// The operator is bringing the machine into being or releasing it: not settled, and no
    /// observation says more (a machine being created or looked for by its mark; a deleted
    /// resource's machine being stopped and released).
    Working(&'a Progress),
    /// Watched by the poller; its latest observation, if one has arrived.
    Watched(Option<&'a Observation>),
}

/// What managing the machine adds to its status (all empty for a resource that only observes).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Management<'a> {
    /// The power state the resource asks for.
    pub(crate) power: Option<PowerState>,
    /// What the operator is doing now: on its way to the asked state, waiting for a lock,
    /// releasing the machine.
    pub(crate) progress: Option<&'a Progress>,
    /// What stops it, when a person must act.
    pub(crate) problem: Option<&'a Problem>,
    /// A call it has just made, to record as `lastAction`.
    pub(crate) action: Option<&'a ActionRecord>,
}

/// Everything the status depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inputs<'a> {
    pub resource: &'a CompShareInstance,
    pub situation: Situation<'a>,
    /// A problem with the connection Secret (for example, a Secret of that name that the operator
    /// does not own).
    pub connection_problem: Option<&'a Problem>,
    /// The connection Secret the operator now maintains, if any.
    pub connection_secret: Option<&'a str>,
    pub management: Management<'a>,
    pub now: &'a Time,
}

/// The status the resource should have.
pub(crate) fn desired(inputs: Inputs<'_>) -> CompShareInstanceStatus {
    let resource = inputs.resource;
    let mut status = resource.status.clone().unwrap_or_default();
    status.connection_secret_name = inputs.connection_secret.map(CompactString::from);
    let management = inputs.management;
    if let Some(action) = management.action {
        status.last_action = Some(Box::new(action.clone()));
    }
    let observed = status.conditions.iter().any(|c| c.type_ == READY);
    // The generation this status answers (see the module's documentation).
    let generation = match inputs.situation {
        Situation::Paused | Situation::Refused(_) | Situation::Working(_) => {
            resource.metadata.generation
        }
        // Nothing new is known: the status stays as it is, generation included.
        Situation::Watched(None) => status.observed_generation,
        // A passing failure says nothing about a new spec.
        Situation::Watched(Some(o)) if observed && passing_failure(o) => status.observed_generation,
        Situation::Watched(Some(o)) => Some(o.generation),
    };
    // Facts observed for another spec may describe another lookup (another region, project or
    // zone): they go, and only what was observed for this one is shown.
    let respecified = generation != status.observed_generation;
    if respecified {
        status = CompShareInstanceStatus {
            conditions: std::mem::take(&mut status.conditions),
            last_handled_refresh: status.last_handled_refresh.take(),
            connection_secret_name: status.connection_secret_name.take(),
            last_action: status.last_action.take(),
            ..CompShareInstanceStatus::default()
        };
    }
    status.observed_generation = generation;
    // The machine the status is about (named, or created), whenever the status says something.
    if !matches!(
        inputs.situation,
        Situation::Paused | Situation::Watched(None)
    ) {
        status.uhost_id = resource.machine_id().map(CompactString::from);
    }
    let mut conditions = Conditions {
        list: std::mem::take(&mut status.conditions),
        generation,
        now: inputs.now,
    };
    // Reported by a refused write (see `reconciler::report_refused_write`); any write that is
    // computed here and lands clears it.
    conditions
        .list
        .retain(|c| !(c.type_ == STALLED && c.reason == Reason::StatusWriteRefused.as_str()));

    match inputs.situation {
        Situation::Paused => {
            conditions.raise(
                PAUSED,
                Reason::PausedByAnnotation,
                "Observation is paused by the compshare.ucloud.cn/paused annotation",
            );
            conditions.clear(RECONCILING);
            // Paused before an observation of this spec: nothing is known of it.
            for kind in [READY, RUNNING, SYNCED] {
                if respecified || !conditions.has(kind) {
                    conditions.set(
                        kind,
                        UNKNOWN,
                        Reason::Paused,
                        "Observation is paused, and this spec has not been observed",
                    );
                }
            }
        }
        Situation::Refused(problem) => {
            conditions.clear(PAUSED);
            conditions.clear(RECONCILING);
            conditions.set(SYNCED, FALSE, problem.reason, &problem.message);
            conditions.set(READY, FALSE, problem.reason, &problem.message);
            if respecified || !conditions.has(RUNNING) {
                conditions.set(RUNNING, UNKNOWN, problem.reason, &problem.message);
            }
            conditions.raise(STALLED, problem.reason, &problem.message);
        }
        Situation::Working(progress) => {
            conditions.clear(PAUSED);
            conditions.clear(STALLED);
            conditions.set(READY, FALSE, progress.reason, &progress.message);
            // What was last observed of the machine stays true until the next observation.
            if respecified || !conditions.has(RUNNING) {
                conditions.set(RUNNING, FALSE, progress.reason, &progress.message);
            }
            if respecified || !conditions.has(SYNCED) {
                conditions.set(SYNCED, UNKNOWN, progress.reason, &progress.message);
            }
            conditions.raise(RECONCILING, progress.reason, &progress.message);
        }
        Situation::Watched(None) => conditions.clear(PAUSED),
        Situation::Watched(Some(observation)) => {
            conditions.clear(PAUSED);
            apply_observation(
                &mut status,
                &mut conditions,
                resource,
                observation,
                management.power,
            );
        }
    }

    // What the operator is doing about the machine, while it is not settled as asked.
    if let Some(progress) = management.progress
        && !conditions.is_true(READY)
        && !conditions.has(STALLED)
    {
        conditions.raise(RECONCILING, progress.reason, &progress.message);
    }
    for problem in [management.problem, inputs.connection_problem]
        .into_iter()
        .flatten()
    {
        if !conditions.has(STALLED) {
            conditions.raise(STALLED, problem.reason, &problem.message);
            conditions.set(READY, FALSE, problem.reason, &problem.message);
            conditions.clear(RECONCILING);
        }
    }

    // Every condition answers the same generation as the status.
    conditions.claim_all();
    conditions
        .list
        .sort_by_key(|c| CONDITION_ORDER.iter().position(|t| *t == c.type_));
    status.conditions = conditions.list;
    bound(&mut status);
    status
}

/// A failure that retrying may cure (throttling, network, 5xx): it changes nothing known.
fn passing_failure(observation: &Observation) -> bool {
    observation
        .outcome
        .failure()
        .is_some_and(CallError::is_retryable)
}

fn apply_observation(
    status: &mut CompShareInstanceStatus,
    conditions: &mut Conditions<'_>,
    resource: &CompShareInstance,
    observation: &Observation,
    power: Option<PowerState>,
) {
    if let Some(instance) = &observation.instance {
        set_facts(status, instance);
    }
    if observation.refresh.is_some() {
        status.last_handled_refresh = observation.refresh.as_deref().map(CompactString::from);
    }

    match &observation.outcome {
        Outcome::Failed(error) => {
            let message = format!("DescribeCompShareInstance failed: {error}");
            conditions.set(SYNCED, FALSE, failure_reason(error), &message);
        }
        _ => {
            let mut message = "The last DescribeCompShareInstance call succeeded".to_owned();
            if let Some(i) = observation
                .instance
                .as_ref()
                .filter(|i| !i.dropped_fields.is_empty())
            {
                message.push_str(&format!(
                    "; fields of the instance with a shape the operator cannot read were left out: {}",
                    i.dropped_fields.join(", ")
                ));
            }
            conditions.set(SYNCED, TRUE, Reason::Observed, &message);
        }
    }

    let state = status.state.clone();
    if let Some(problem) = stall(resource, observation, state.as_deref()) {
        conditions.raise(STALLED, problem.reason, &problem.message);
        conditions.set(READY, FALSE, problem.reason, &problem.message);
        conditions.clear(RECONCILING);
        match (&observation.outcome, state.as_deref()) {
            (Outcome::NotFound, _) => {
                conditions.set(RUNNING, FALSE, problem.reason, &problem.message);
            }
            (_, Some(state)) => set_running(conditions, state),
            (_, None) => conditions.set(RUNNING, UNKNOWN, problem.reason, &problem.message),
        }
        return;
    }
    conditions.clear(STALLED);
    match (&observation.outcome, state.as_deref()) {
        // A passing failure does not change what is known about the instance: every other
        // condition keeps its value (and its generation) rather than flapping.
        (Outcome::Failed(_), _) if conditions.has(READY) => {}
        (Outcome::Failed(error), _) => {
            let reason = failure_reason(error);
            let waiting = "The instance has not been observed yet";
            conditions.set(READY, UNKNOWN, reason, waiting);
            conditions.set(RUNNING, UNKNOWN, reason, waiting);
            conditions.raise(
                RECONCILING,
                Reason::AwaitingFirstObservation,
                "Waiting for the first observation",
            );
        }
        (_, Some(state)) => set_state_conditions(conditions, state, power),
        // Found always comes with the instance, and NotFound stalls.
        (_, None) => {}
    }
}

/// `Ready`, `Running` and `Reconciling` from the instance's state and the power state asked for.
fn set_state_conditions(conditions: &mut Conditions<'_>, state: &str, power: Option<PowerState>) {
    let reason = state_reason(state);
    let said = format!("The instance is {state}");
    set_running(conditions, state);
    match (Phase::of(state), power) {
        (Phase::Running, Some(PowerState::Stopped)) => {
            let message = format!("{said}; spec.powerState asks for Stopped");
            conditions.set(READY, FALSE, Reason::StopRequested, &message);
            conditions.raise(RECONCILING, Reason::StopRequested, &message);
        }
        (Phase::Stopped, Some(PowerState::Running)) => {
            let message = format!("{said}; spec.powerState asks for Running");
            conditions.set(READY, FALSE, Reason::StartRequested, &message);
            conditions.raise(RECONCILING, Reason::StartRequested, &message);
        }
        (Phase::Running, _) => {
            conditions.set(READY, TRUE, &reason, &said);
            conditions.clear(RECONCILING);
        }
        (Phase::Stopped, _) => {
            let settled = match power {
                Some(PowerState::Stopped) => format!("{said}, as spec.powerState asks"),
                _ => format!("{said}, and nothing asks it to run"),
            };
            conditions.set(READY, TRUE, &reason, &settled);
            conditions.clear(RECONCILING);
        }
        (Phase::Moving, _) => {
            conditions.set(READY, FALSE, &reason, &said);
            conditions.raise(RECONCILING, &reason, &said);
        }
        (Phase::Unreadable, _) => {
            let message = "The API could not read the instance's state; waiting until it can";
            conditions.set(READY, UNKNOWN, &reason, message);
            conditions.raise(RECONCILING, &reason, message);
        }
        (Phase::Unfamiliar, _) => {
            let message = format!(
                "The instance is in state {state:?}, which compshare-operator does not know; waiting for a known state"
            );
            conditions.set(READY, UNKNOWN, &reason, &message);
            conditions.raise(RECONCILING, &reason, &message);
        }
        // `stall` reports it.
        (Phase::InstallFailed, _) => {}
    }
}

/// `Running`: whether the machine runs, from its state.
fn set_running(conditions: &mut Conditions<'_>, state: &str) {
    let reason = state_reason(state);
    match Phase::of(state) {
        Phase::Running => conditions.set(RUNNING, TRUE, &reason, "The instance is Running"),
        Phase::Unreadable => conditions.set(
            RUNNING,
            UNKNOWN,
            &reason,
            "The API could not read the instance's state",
        ),
        _ => conditions.set(RUNNING, FALSE, &reason, &format!("The instance is {state}")),
    }
}

/// Why a person must act, if they must.
fn stall(
    resource: &CompShareInstance,
    observation: &Observation,
    state: Option<&str>,
) -> Option<Problem> {
    let spec = &resource.spec;
    let problem = |reason, message: String| Some(Problem { reason, message });
    match &observation.outcome {
        Outcome::NotFound => problem(
            Reason::NotFound,
            format!(
                "Instance {} was not found in region {}{}: it was deleted, or never existed, or belongs to another account or project",
                resource.machine_id().unwrap_or_default(),
                spec.region,
                spec.project_id
                    .as_deref()
                    .map(|p| format!(" (project {p})"))
                    .unwrap_or_default(),
            ),
        ),
        Outcome::ZoneMismatch { actual } => problem(
            Reason::ZoneMismatch,
            format!(
                "Instance {} is in zone {actual}, not in spec.zone {}",
                resource.machine_id().unwrap_or_default(),
                spec.zone.as_deref().unwrap_or_default()
            ),
        ),
        Outcome::Failed(error) => {
            let message = format!("DescribeCompShareInstance failed: {error}");
            match error.disposition() {
                Disposition::CredentialsRejected => problem(
                    Reason::CredentialsRejected,
                    format!("{message}. Check the key pair in the credentials Secret"),
                ),
                Disposition::PermissionDenied => problem(Reason::PermissionDenied, message),
                Disposition::InvalidRequest => problem(Reason::InvalidRequest, message),
                Disposition::AccountBlocked => problem(Reason::AccountBlocked, message),
                Disposition::Throttled
                | Disposition::Transient
                | Disposition::Busy
                | Disposition::OutOfCapacity => None,
            }
        }
        Outcome::Found if state.map(Phase::of) == Some(Phase::InstallFailed) => problem(
            Reason::InstallFailed,
            "The instance failed to install; recreate it in CompShare".to_owned(),
        ),
        Outcome::Found => None,
    }
}

pub(super) fn failure_reason(error: &CallError) -> Reason {
    match (error.disposition(), error) {
        (Disposition::Throttled, _) => Reason::Throttled,
        (Disposition::CredentialsRejected, _) => Reason::CredentialsRejected,
        (Disposition::PermissionDenied, _) => Reason::PermissionDenied,
        (Disposition::InvalidRequest, _) => Reason::InvalidRequest,
        (Disposition::AccountBlocked, _) => Reason::AccountBlocked,
        (Disposition::Busy | Disposition::OutOfCapacity, _) => Reason::CloudError,
        (Disposition::Transient, CallError::Timeout(_)) => Reason::Timeout,
        (Disposition::Transient, CallError::Transport(_) | CallError::Unreachable(_)) => {
            Reason::Unreachable
        }
        (Disposition::Transient, CallError::Malformed(_)) => Reason::MalformedAnswer,
        (Disposition::Transient, CallError::Http { .. } | CallError::Redirect { .. }) => {
            Reason::HttpError
        }
        (Disposition::Transient, CallError::Api { .. }) => Reason::CloudError,
    }
}

/// A condition reason from a state: `Install Fail` → `InstallFail`; empty → `StateUnknown`.
fn state_reason(state: &str) -> String {
    let reason: String = state.chars().filter(char::is_ascii_alphanumeric).collect();
    match reason.chars().next() {
        None => Reason::StateUnknown.as_str().to_owned(),
        Some(c) if c.is_ascii_digit() => format!("State{reason}"),
        Some(_) => reason,
    }
}

/// Bounds of what goes into status from the API's answer and the cloud's messages, so that no
/// answer can make a status too large to store (etcd refuses requests over 1.5 MiB).
mod limits {
    /// Condition messages (the cloud's own message included).
    pub(super) const MESSAGE: usize = 1024;
    /// Condition reasons (from a state, which is free text).
    pub(super) const REASON: usize = 128;
    /// Short facts: state, zone, types, addresses, user, GPU model.
    pub(super) const SHORT: usize = 128;
    /// Long facts: names, the SSH command, software URLs, image and OS names.
    pub(super) const LONG: usize = 1024;
    /// Entries of `addresses` and of `softwares`.
    pub(super) const ENTRIES: usize = 32;
}

/// Cuts `text` to `max` bytes, marking the cut.
fn cut<S: From<String> + std::ops::Deref<Target = str>>(text: &mut S, max: usize) {
    const MARK: &str = "…[truncated]";
    if text.len() > max {
        let kept = crate::resource::prefix(text, max - MARK.len());
        *text = S::from(format!("{kept}{MARK}"));
    }
}

fn cut_opt<S: From<String> + std::ops::Deref<Target = str>>(text: &mut Option<S>, max: usize) {
    if let Some(text) = text {
        cut(text, max);
    }
}

/// Applies [`limits`] to a status.
fn bound(status: &mut CompShareInstanceStatus) {
    use limits::{ENTRIES, LONG, MESSAGE, REASON, SHORT};
    for c in &mut status.conditions {
        cut(&mut c.message, MESSAGE);
        if c.reason.len() > REASON {
            // A reason must stay a bare identifier: shortened without a mark.
            c.reason = crate::resource::prefix(&c.reason, REASON).to_owned();
        }
    }
    cut_opt(&mut status.state, SHORT);
    cut_opt(&mut status.public_ip, SHORT);
    status.addresses.truncate(ENTRIES);
    for a in &mut status.addresses {
        cut(&mut a.address, SHORT);
    }
    if let Some(ssh) = &mut status.ssh {
        cut(&mut ssh.command, LONG);
        cut_opt(&mut ssh.user, SHORT);
        cut(&mut ssh.host, LONG);
        cut(&mut ssh.address, LONG);
    }
    for text in [
        &mut status.instance_name,
        &mut status.last_handled_refresh,
        &mut status.connection_secret_name,
    ] {
        cut_opt(text, LONG);
    }
    for text in [
        &mut status.zone,
        &mut status.machine_type,
        &mut status.instance_type,
        &mut status.charge_type,
    ] {
        cut_opt(text, SHORT);
    }
    if let Some(gpu) = &mut status.gpu {
        cut_opt(&mut gpu.type_, SHORT);
        cut(&mut gpu.summary, SHORT);
    }
    if let Some(image) = &mut status.image {
        cut_opt(&mut image.id, LONG);
        cut_opt(&mut image.name, LONG);
        cut_opt(&mut image.type_, SHORT);
    }
    if let Some(os) = &mut status.os {
        cut_opt(&mut os.name, LONG);
        cut_opt(&mut os.type_, SHORT);
    }
    status.softwares.truncate(ENTRIES);
    for software in &mut status.softwares {
        cut(&mut software.name, SHORT);
        cut(&mut software.url, LONG);
    }
}

/// Fills the instance's facts; every field is rebuilt, so a fact the API stops reporting goes away.
fn set_facts(status: &mut CompShareInstanceStatus, i: &Instance) {
    status.state = Some(i.state.clone());
    status.scheduled_stop = i.stop_scheduler_time.and_then(unix_time);
    status.addresses = i
        .ip_set
        .iter()
        .filter(|ip| !ip.ip.is_empty())
        .map(|ip| InstanceAddress {
            type_: match ip.reach() {
                Reach::External => AddressType::ExternalIp,
                Reach::Internal => AddressType::InternalIp,
            },
            address: ip.ip.clone(),
        })
        .collect();
    status.public_ip = status
        .addresses
        .iter()
        .find(|a| a.type_ == AddressType::ExternalIp)
        .map(|a| a.address.clone());
    status.ssh = ssh_access(&i.ssh_login_command).map(Box::new);
    status.instance_name = non_empty(&i.name);
    status.zone = non_empty(&i.zone);
    status.machine_type = non_empty(&i.machine_type);
    status.cpu = i.cpu.filter(|c| *c > 0);
    status.memory = i.memory.filter(|m| *m > 0).map(mebibytes);
    status.gpu = gpu(i).map(Box::new);
    status.image = Some(ImageInfo {
        id: non_empty(&i.comp_share_image_id),
        name: non_empty(&i.comp_share_image_name),
        type_: non_empty(&i.comp_share_image_type),
    })
    .filter(|img| img.id.is_some() || img.name.is_some() || img.type_.is_some())
    .map(Box::new);
    status.os = Some(OsInfo {
        name: non_empty(&i.os_name),
        type_: non_empty(&i.os_type),
    })
    .filter(|os| os.name.is_some() || os.type_.is_some())
    .map(Box::new);
    status.instance_type = non_empty(&i.instance_type);
    status.charge_type = non_empty(&i.charge_type);
    status.spot = i.is_spot;
    status.auto_renew = yes_no(&i.auto_renew);
    status.expired = yes_no(&i.is_expire);
    status.create_time = i.create_time.and_then(unix_time);
    status.expire_time = i.expire_time.and_then(unix_time);
    status.softwares = i
        .softwares
        .iter()
        .filter(|s| !s.name.is_empty() || !s.url.is_empty())
        .map(|s| SoftwareEndpoint {
            name: s.name.clone(),
            url: s.url.clone(),
        })
        .collect();
}

fn ssh_access(command: &str) -> Option<SshAccess> {
    let login = parse_login_command(command)?;
    let address = if login.host.contains(':') {
        format_compact!("[{}]:{}", login.host, login.port)
    } else {
        format_compact!("{}:{}", login.host, login.port)
    };
    Some(SshAccess {
        command: command.to_owned(),
        user: login.user.map(CompactString::from),
        host: login.host.into(),
        port: i32::from(login.port),
        address,
    })
}

fn gpu(i: &Instance) -> Option<GpuInfo> {
    let count = i.gpu.filter(|g| *g > 0);
    let type_ = non_empty(&i.gpu_type);
    if count.is_none() && type_.is_none() {
        return None;
    }
    let summary = match (&type_, count) {
        (Some(t), Some(n)) => format_compact!("{t}×{n}"),
        (Some(t), None) => t.clone(),
        (None, Some(n)) => format_compact!("GPU×{n}"),
        (None, None) => unreachable!("checked above"),
    };
    Some(GpuInfo {
        count,
        type_,
        memory: i
            .graphics_memory
            .as_ref()
            .and_then(|m| m.value)
            .filter(|v| *v > 0.0)
            .map(gigabytes),
        summary,
    })
}

/// The API's "MB" are MiB (65536 is a 64 GiB machine).
fn mebibytes(mib: i64) -> Quantity {
    if mib % 1024 == 0 {
        Quantity(format!("{}Gi", mib / 1024))
    } else {
        Quantity(format!("{mib}Mi"))
    }
}

fn gigabytes(gib: f64) -> Quantity {
    if gib.fract() == 0.0 {
        Quantity(format!("{}Gi", gib as i64))
    } else {
        Quantity(format!("{}Mi", (gib * 1024.0).round() as i64))
    }
}

fn unix_time(seconds: i64) -> Option<Time> {
    (seconds > 0)
        .then(|| jiff::Timestamp::from_second(seconds).ok())
        .flatten()
        .map(Time)
}

fn yes_no(value: &str) -> Option<bool> {
    match value {
        "Yes" | "yes" | "true" => Some(true),
        "No" | "no" | "false" => Some(false),
        _ => None,
    }
}

fn non_empty(value: &str) -> Option<CompactString> {
    (!value.is_empty()).then(|| value.into())
}

/// The conditions being computed, with the rules for updating one.
struct Conditions<'a> {
    list: Vec<Condition>,
    generation: Option<i64>,
    now: &'a Time,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &str, status: &str, reason: impl AsRef<str>, message: &str) {
        let updated = Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.as_ref().to_owned(),
            message: message.to_owned(),
            observed_generation: self.generation,
            last_transition_time: self.now.clone(),
        };
        match self.list.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) if existing.status == status => {
                let since = existing.last_transition_time.clone();
                *existing = Condition {
                    last_transition_time: since,
                    ..updated
                };
            }
            Some(existing) => *existing = updated,
            None => self.list.push(updated),
        }
    }

    /// Sets an abnormal-true condition (present only while True).
    fn raise(&mut self, type_: &str, reason: impl AsRef<str>, message: &str) {
        self.set(type_, TRUE, reason, message);
    }

    /// Removes an abnormal-true condition: its absence means False.
    fn clear(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }

    /// Marks every condition as computed for the generation being answered.
    fn claim_all(&mut self) {
        for c in &mut self.list {
            c.observed_generation = self.generation;
        }
    }

    fn has(&self, type_: &str) -> bool {
        self.list.iter().any(|c| c.type_ == type_)
    }

    fn is_true(&self, type_: &str) -> bool {
        self.list
            .iter()
            .any(|c| c.type_ == type_ && c.status == TRUE)
    }
}

/// The status of condition `type_`, if present.
pub(crate) fn condition<'a>(
    status: Option<&'a CompShareInstanceStatus>,
    type_: &str,
) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::resource::CompShareInstanceSpec;
    use compshare_api::MOVING_STATES;
    use compshare_api::{GraphicsMemory, IpInfo, Password, Software};
    use std::sync::Arc;

    fn resource(generation: i64) -> CompShareInstance {
        let mut r = CompShareInstance::new(
            "gpu",
            CompShareInstanceSpec {
                uhost_id: Some("uhost-1".into()),
                region: "cn-wlcb".into(),
                zone: None,
                ..CompShareInstanceSpec::default()
            },
        );
        r.metadata.namespace = Some("team".into());
        r.metadata.generation = Some(generation);
        r
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn instance(state: &str) -> Instance {
        Instance {
            u_host_id: "uhost-1".into(),
            name: "trainer".into(),
            state: state.into(),
            zone: "cn-wlcb-01".into(),
            region: "cn-wlcb".into(),
            machine_type: "G".into(),
            cpu: Some(16),
            memory: Some(65536),
            gpu: Some(2),
            gpu_type: "4090".into(),
            graphics_memory: Some(GraphicsMemory { value: Some(24.0) }),
            charge_type: "Month".into(),
            create_time: Some(1712563200),
            expire_time: Some(1715155200),
            is_expire: "No".into(),
            auto_renew: "Yes".into(),
            is_spot: Some(false),
            comp_share_image_id: "compshareImage-1".into(),
            comp_share_image_name: "PyTorch 2.1".into(),
            comp_share_image_type: "System".into(),
            instance_type: "UHost".into(),
            os_name: "Ubuntu 22.04".into(),
            os_type: "Linux".into(),
            password: Some(Password::from("c2VjcmV0LXB3")),
            ssh_login_command: "ssh root@117.50.1.2 -p 60022".into(),
            ip_set: vec![
                IpInfo {
                    ip: "10.9.0.4".into(),
                    r#type: "Private".into(),
                    ..IpInfo::default()
                },
                IpInfo {
                    ip: "117.50.1.2".into(),
                    r#type: "Bgp".into(),
                    ..IpInfo::default()
                },
            ],
            softwares: vec![Software {
                name: "JupyterLab".into(),
                url: "https://117.50.1.2:8888".into(),
            }],
            ..Instance::default()
        }
    }

    /// An observation made for the resource's current generation.
    fn observed(
        r: &CompShareInstance,
        outcome: Outcome,
        instance: Option<Instance>,
    ) -> Observation {
        Observation {
            instance: instance.map(Arc::new),
            outcome,
            refresh: None,
            generation: r.metadata.generation.unwrap(),
        }
    }

    fn compute(
        r: &CompShareInstance,
        situation: Situation<'_>,
        now: i64,
    ) -> CompShareInstanceStatus {
        manage(r, situation, Management::default(), now)
    }

    /// Computes and stores the status, as the apiserver would after a write.
    fn step(r: &mut CompShareInstance, situation: Situation<'_>, now: i64) {
        r.status = Some(compute(r, situation, now));
    }

    /// Observes `instance` in `state` for the resource's current generation.
    fn see(r: &mut CompShareInstance, state: &str, now: i64) {
        let o = observed(r, Outcome::Found, Some(instance(state)));
        step(r, Situation::Watched(Some(&o)), now);
    }

    fn absent(r: &CompShareInstance, type_: &str) -> bool {
        condition(r.status.as_ref(), type_).is_none()
    }

    fn cond<'a>(r: &'a CompShareInstance, type_: &str) -> (&'a str, &'a str, i64) {
        let c = condition(r.status.as_ref(), type_).unwrap_or_else(|| panic!("no {type_}"));
        (
            c.status.as_str(),
            c.reason.as_str(),
            c.last_transition_time.0.as_second(),
        )
    }

    fn types(r: &CompShareInstance) -> Vec<&str> {
        r.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect()
    }

    fn observed_generation(r: &CompShareInstance) -> Option<i64> {
        let s = r.status.as_ref().unwrap();
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == s.observed_generation),
            "every condition answers the status's generation: {s:?}"
        );
        s.observed_generation
    }

    fn api(code: i64, message: &str) -> CallError {
        CallError::Api {
            code,
            message: message.into(),
        }
    }

    /// The status the operator writes for a running machine (for the watch cache's packing).
    pub(in crate::reconciler) fn of_a_running_machine() -> CompShareInstanceStatus {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        r.status.expect("a status")
    }

    /// What the apiserver gives a new resource: the CRD's status default.
    fn created(generation: i64) -> CompShareInstance {
        let mut r = resource(generation);
        r.status = Some(crate::resource::initial_status());
        r
    }

    #[test]
    fn a_new_resource_keeps_the_defaulted_status_until_its_first_observation() {
        let r = created(1);
        // Nothing observed: exactly what the apiserver defaulted, so nothing is written.
        assert_eq!(
            compute(&r, Situation::Watched(None), 100),
            crate::resource::initial_status()
        );
        assert_eq!(r.status.as_ref().unwrap().observed_generation, Some(0));
        assert!(r.status.as_ref().unwrap().conditions.is_empty());
    }

    #[test]
    fn a_running_instance_is_ready_and_running_with_its_facts() {
        let mut r = created(3);
        see(&mut r, "Running", 101);
        assert_eq!(cond(&r, READY), (TRUE, "Running", 101));
        assert_eq!(cond(&r, RUNNING), (TRUE, "Running", 101));
        assert_eq!(cond(&r, SYNCED), (TRUE, "Observed", 101));
        assert_eq!(types(&r), [READY, RUNNING, SYNCED]);
        assert_eq!(observed_generation(&r), Some(3));
        let s = r.status.as_ref().unwrap();
        assert_eq!(s.state.as_deref(), Some("Running"));
        assert_eq!(s.public_ip.as_deref(), Some("117.50.1.2"));
        assert_eq!(
            s.addresses,
            [
                InstanceAddress {
                    type_: AddressType::InternalIp,
                    address: "10.9.0.4".into()
                },
                InstanceAddress {
                    type_: AddressType::ExternalIp,
                    address: "117.50.1.2".into()
                },
            ]
        );
        let ssh = s.ssh.as_ref().unwrap();
        assert_eq!(
            (ssh.user.as_deref(), ssh.host.as_str(), ssh.port),
            (Some("root"), "117.50.1.2", 60022)
        );
        assert_eq!(ssh.address, "117.50.1.2:60022");
        assert_eq!(s.memory, Some(Quantity("64Gi".into())));
        let gpu = s.gpu.as_ref().unwrap();
        assert_eq!((gpu.summary.as_str(), gpu.count), ("4090×2", Some(2)));
        assert_eq!(gpu.memory, Some(Quantity("24Gi".into())));
        assert_eq!(s.auto_renew, Some(true));
        assert_eq!(s.expired, Some(false));
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["createTime"], "2024-04-08T08:00:00Z");
        assert_eq!(json["softwares"][0]["name"], "JupyterLab");
    }

    #[test]
    fn a_stopped_instance_is_settled_ready_and_not_running() {
        let mut r = created(1);
        see(&mut r, "Stopped", 100);
        assert_eq!(cond(&r, READY), (TRUE, "Stopped", 100));
        assert_eq!(cond(&r, RUNNING), (FALSE, "Stopped", 100));
        assert!(absent(&r, RECONCILING) && absent(&r, STALLED));
    }

    #[test]
    fn the_same_observation_later_gives_an_identical_status() {
        let mut r = created(1);
        let o = observed(&r, Outcome::Found, Some(instance("Running")));
        step(&mut r, Situation::Watched(Some(&o)), 100);
        let first = r.status.clone().unwrap();
        assert_eq!(compute(&r, Situation::Watched(Some(&o)), 5000), first);
        // An operator restart (no observation yet) changes nothing either.
        assert_eq!(compute(&r, Situation::Watched(None), 6000), first);
    }

    #[test]
    fn moving_is_in_progress_and_settling_is_ready_again() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        see(&mut r, "Stopping", 200);
        assert_eq!(cond(&r, READY), (FALSE, "Stopping", 200));
        assert_eq!(cond(&r, RUNNING), (FALSE, "Stopping", 200));
        assert_eq!(cond(&r, RECONCILING), (TRUE, "Stopping", 200));
        assert_eq!(cond(&r, SYNCED), (TRUE, "Observed", 100));
        see(&mut r, "Stopped", 300);
        assert_eq!(cond(&r, READY), (TRUE, "Stopped", 300));
        assert_eq!(cond(&r, RUNNING), (FALSE, "Stopped", 200));
        assert!(absent(&r, RECONCILING));
        for state in MOVING_STATES {
            see(&mut r, state, 400);
            assert_eq!(cond(&r, READY).0, FALSE, "{state}");
            assert_eq!(cond(&r, RECONCILING).0, TRUE, "{state}");
        }
    }

    #[test]
    fn unknown_and_unreadable_states_are_kept_verbatim_and_in_progress() {
        let mut r = created(1);
        see(&mut r, "Hibernating 2", 100);
        assert_eq!(
            r.status.as_ref().unwrap().state.as_deref(),
            Some("Hibernating 2")
        );
        assert_eq!(cond(&r, READY), (UNKNOWN, "Hibernating2", 100));
        assert_eq!(cond(&r, RUNNING), (FALSE, "Hibernating2", 100));
        assert_eq!(cond(&r, RECONCILING), (TRUE, "Hibernating2", 100));
        see(&mut r, "", 200);
        assert_eq!(cond(&r, READY), (UNKNOWN, "StateUnknown", 100));
        assert_eq!(cond(&r, RUNNING), (UNKNOWN, "StateUnknown", 200));
        assert_eq!(cond(&r, RECONCILING), (TRUE, "StateUnknown", 100));
        assert_eq!(state_reason("9lives"), "State9lives");
    }

    #[test]
    fn install_failure_stalls() {
        let mut r = created(1);
        see(&mut r, "Install Fail", 100);
        assert_eq!(cond(&r, STALLED), (TRUE, "InstallFailed", 100));
        assert_eq!(cond(&r, READY), (FALSE, "InstallFailed", 100));
        assert_eq!(cond(&r, RUNNING), (FALSE, "InstallFail", 100));
        assert_eq!(cond(&r, SYNCED).0, TRUE);
        assert!(absent(&r, RECONCILING));
    }

    #[test]
    fn a_vanished_instance_stalls_and_keeps_what_was_known() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        let gone = observed(&r, Outcome::NotFound, Some(instance("Running")));
        step(&mut r, Situation::Watched(Some(&gone)), 200);
        assert_eq!(cond(&r, STALLED), (TRUE, "NotFound", 200));
        assert_eq!(cond(&r, READY), (FALSE, "NotFound", 200));
        assert_eq!(cond(&r, RUNNING), (FALSE, "NotFound", 200));
        let s = r.status.as_ref().unwrap();
        assert_eq!(s.public_ip.as_deref(), Some("117.50.1.2"));
        assert_eq!(s.addresses.len(), 2);
        assert!(s.conditions.iter().any(|c| c.message.contains("uhost-1")));
    }

    #[test]
    fn a_transient_failure_shows_the_cloud_code_and_keeps_ready_and_facts() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        let before = r.status.clone().unwrap();
        let failed = observed(
            &r,
            Outcome::failed(api(153, "Request too frequent")),
            Some(instance("Running")),
        );
        step(&mut r, Situation::Watched(Some(&failed)), 200);
        assert_eq!(cond(&r, SYNCED), (FALSE, "Throttled", 200));
        let message = &condition(r.status.as_ref(), SYNCED).unwrap().message;
        assert_eq!(
            message,
            "DescribeCompShareInstance failed: RetCode 153: Request too frequent"
        );
        assert_eq!(cond(&r, READY), (TRUE, "Running", 100));
        assert_eq!(cond(&r, RUNNING), (TRUE, "Running", 100));
        assert!(absent(&r, STALLED));
        let after = r.status.as_ref().unwrap();
        assert_eq!(after.addresses, before.addresses);
        assert_eq!(after.ssh, before.ssh);
        // Recovery flips Synced back, nothing else moves.
        see(&mut r, "Running", 300);
        assert_eq!(cond(&r, SYNCED), (TRUE, "Observed", 300));
        assert_eq!(cond(&r, READY), (TRUE, "Running", 100));
    }

    #[test]
    fn a_transient_failure_before_the_first_observation_is_in_progress() {
        for (error, reason) in [
            (
                CallError::Timeout(std::time::Duration::from_secs(10)),
                "Timeout",
            ),
            (
                CallError::Transport("connection reset".into()),
                "Unreachable",
            ),
            (
                CallError::Malformed("expected value".into()),
                "MalformedAnswer",
            ),
            (CallError::Http { status: 503 }, "HTTPError"),
            (api(150, "service unavailable"), "CloudError"),
            (api(153, "Request too frequent"), "Throttled"),
        ] {
            let mut r = created(1);
            let o = observed(&r, Outcome::failed(error), None);
            step(&mut r, Situation::Watched(Some(&o)), 200);
            assert_eq!(cond(&r, SYNCED), (FALSE, reason, 200));
            assert_eq!(cond(&r, READY), (UNKNOWN, reason, 200));
            assert_eq!(cond(&r, RUNNING), (UNKNOWN, reason, 200));
            assert_eq!(
                cond(&r, RECONCILING),
                (TRUE, "AwaitingFirstObservation", 200)
            );
            assert_eq!(observed_generation(&r), Some(1));
        }
    }

    #[test]
    fn a_spec_edit_is_answered_only_by_an_observation_made_for_it() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        let before = r.status.clone();
        r.metadata.generation = Some(2);
        // The observation made for generation 1 does not answer generation 2: nothing changes,
        // and every tool keeps reading the resource as in progress.
        let stale = Observation {
            generation: 1,
            ..observed(&r, Outcome::Found, Some(instance("Running")))
        };
        assert_eq!(
            compute(&r, Situation::Watched(Some(&stale)), 200),
            before.clone().unwrap()
        );
        assert_eq!(compute(&r, Situation::Watched(None), 200), before.unwrap());
        // Neither does a failed call made for it.
        let failed = observed(&r, Outcome::failed(api(153, "slow down")), None);
        step(&mut r, Situation::Watched(Some(&failed)), 300);
        assert_eq!(observed_generation(&r), Some(1));
        assert_eq!(cond(&r, SYNCED), (FALSE, "Throttled", 300));
        // An observation made for it does.
        see(&mut r, "Running", 400);
        assert_eq!(observed_generation(&r), Some(2));
        assert_eq!(cond(&r, READY), (TRUE, "Running", 100));
    }

    #[test]
    fn rejected_credentials_stall_with_the_cloud_message() {
        let mut r = created(1);
        let o = observed(
            &r,
            Outcome::failed(api(171, "Signature VerifyAC Error")),
            None,
        );
        step(&mut r, Situation::Watched(Some(&o)), 100);
        assert_eq!(cond(&r, SYNCED), (FALSE, "CredentialsRejected", 100));
        assert_eq!(cond(&r, STALLED), (TRUE, "CredentialsRejected", 100));
        assert_eq!(cond(&r, READY), (FALSE, "CredentialsRejected", 100));
        assert_eq!(cond(&r, RUNNING), (UNKNOWN, "CredentialsRejected", 100));
        assert_eq!(observed_generation(&r), Some(1));
        let message = &condition(r.status.as_ref(), STALLED).unwrap().message;
        assert!(
            message.contains("RetCode 171: Signature VerifyAC Error"),
            "{message}"
        );
    }

    #[test]
    fn unusable_credentials_stall_before_any_call() {
        let mut r = created(2);
        let problem = Problem {
            reason: Reason::CredentialsMissing,
            message: "Secret team/keys not found".into(),
        };
        step(&mut r, Situation::Refused(&problem), 100);
        assert_eq!(cond(&r, STALLED), (TRUE, "CredentialsMissing", 100));
        assert_eq!(cond(&r, SYNCED), (FALSE, "CredentialsMissing", 100));
        assert_eq!(cond(&r, READY), (FALSE, "CredentialsMissing", 100));
        assert_eq!(observed_generation(&r), Some(2));
    }

    #[test]
    fn pausing_keeps_what_is_known() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        step(&mut r, Situation::Paused, 200);
        assert_eq!(cond(&r, PAUSED), (TRUE, "PausedByAnnotation", 200));
        assert_eq!(cond(&r, READY), (TRUE, "Running", 100));
        assert_eq!(cond(&r, SYNCED), (TRUE, "Observed", 100));
        step(&mut r, Situation::Watched(None), 300);
        assert!(absent(&r, PAUSED));
        assert_eq!(cond(&r, READY), (TRUE, "Running", 100));

        let mut fresh = created(1);
        step(&mut fresh, Situation::Paused, 100);
        assert_eq!(cond(&fresh, READY), (UNKNOWN, "Paused", 100));
        assert_eq!(observed_generation(&fresh), Some(1));
    }

    #[test]
    fn a_handled_refresh_is_recorded() {
        let mut r = created(1);
        let mut o = observed(&r, Outcome::Found, Some(instance("Running")));
        o.refresh = Some("2026-11-26T10:00:00Z".into());
        step(&mut r, Situation::Watched(Some(&o)), 100);
        assert_eq!(
            r.status.as_ref().unwrap().last_handled_refresh.as_deref(),
            Some("2026-11-26T10:00:00Z")
        );
    }

    #[test]
    fn zone_mismatch_stalls() {
        let mut r = created(1);
        r.spec.zone = Some("cn-wlcb-02".into());
        let o = observed(
            &r,
            Outcome::ZoneMismatch {
                actual: "cn-wlcb-01".into(),
            },
            Some(instance("Running")),
        );
        step(&mut r, Situation::Watched(Some(&o)), 100);
        assert_eq!(cond(&r, STALLED), (TRUE, "ZoneMismatch", 100));
    }

    #[test]
    fn a_connection_secret_conflict_stalls_without_hiding_other_problems() {
        let r = created(1);
        let o = observed(&r, Outcome::Found, Some(instance("Running")));
        let conflict = Problem {
            reason: Reason::ConnectionSecretConflict,
            message: "Secret team/ssh exists and is not owned by this resource".into(),
        };
        let status = desired(Inputs {
            resource: &r,
            situation: Situation::Watched(Some(&o)),
            connection_problem: Some(&conflict),
            connection_secret: None,
            management: Management::default(),
            now: &at(100),
        });
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            (TRUE, "ConnectionSecretConflict")
        );
    }

    fn manage(
        r: &CompShareInstance,
        situation: Situation<'_>,
        management: Management<'_>,
        now: i64,
    ) -> CompShareInstanceStatus {
        desired(Inputs {
            resource: r,
            situation,
            connection_problem: None,
            connection_secret: None,
            management,
            now: &at(now),
        })
    }

    fn cond_of<'a>(s: &'a CompShareInstanceStatus, type_: &str) -> (&'a str, &'a str) {
        let c = condition(Some(s), type_).unwrap_or_else(|| panic!("no {type_} in {s:?}"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_machine_being_created_is_in_progress_for_this_generation() {
        let r = created(1);
        let creating = Progress {
            reason: Reason::Creating,
            message: "creating".into(),
        };
        let s = manage(
            &r,
            Situation::Working(&creating),
            Management::default(),
            100,
        );
        assert_eq!(cond_of(&s, RECONCILING), (TRUE, "Creating"));
        assert_eq!(cond_of(&s, READY), (FALSE, "Creating"));
        assert_eq!(cond_of(&s, RUNNING), (FALSE, "Creating"));
        assert!(condition(Some(&s), STALLED).is_none());
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn ready_means_settled_as_the_power_state_asks() {
        let r = created(1);
        let status = |state: &str, power: PowerState| {
            let o = observed(&r, Outcome::Found, Some(instance(state)));
            let management = Management {
                power: Some(power),
                ..Management::default()
            };
            manage(&r, Situation::Watched(Some(&o)), management, 100)
        };
        let s = status("Running", PowerState::Stopped);
        assert_eq!(cond_of(&s, READY), (FALSE, "StopRequested"));
        assert_eq!(cond_of(&s, RECONCILING), (TRUE, "StopRequested"));
        assert_eq!(cond_of(&s, RUNNING).0, TRUE);
        let s = status("Stopped", PowerState::Running);
        assert_eq!(cond_of(&s, READY), (FALSE, "StartRequested"));
        assert_eq!(cond_of(&s, RUNNING).0, FALSE);
        let s = status("Stopped", PowerState::Stopped);
        assert_eq!(cond_of(&s, READY).0, TRUE);
        assert!(condition(Some(&s), RECONCILING).is_none());
        let s = status("Running", PowerState::Running);
        assert_eq!(cond_of(&s, READY).0, TRUE);
    }

    #[test]
    fn progress_shows_only_while_unsettled_and_a_problem_stalls() {
        let r = created(1);
        let o = observed(&r, Outcome::Found, Some(instance("Running")));
        let locked = Progress {
            reason: Reason::InstanceLocked,
            message: "locked".into(),
        };
        // Settled: whatever the operator was doing is over.
        let settled = Management {
            progress: Some(&locked),
            ..Management::default()
        };
        let s = manage(&r, Situation::Watched(Some(&o)), settled, 100);
        assert!(condition(Some(&s), RECONCILING).is_none());
        let stopping = Management {
            power: Some(PowerState::Stopped),
            progress: Some(&locked),
            ..Management::default()
        };
        let s = manage(&r, Situation::Watched(Some(&o)), stopping, 100);
        assert_eq!(cond_of(&s, RECONCILING), (TRUE, "InstanceLocked"));
        let blocked = Problem {
            reason: Reason::AccountBlocked,
            message: "226601 in arrears".into(),
        };
        let refused = Management {
            power: Some(PowerState::Stopped),
            problem: Some(&blocked),
            ..Management::default()
        };
        let s = manage(&r, Situation::Watched(Some(&o)), refused, 100);
        assert_eq!(cond_of(&s, STALLED), (TRUE, "AccountBlocked"));
        assert_eq!(cond_of(&s, READY), (FALSE, "AccountBlocked"));
        assert!(condition(Some(&s), RECONCILING).is_none());
    }

    #[test]
    fn the_last_action_is_kept_until_the_next() {
        let mut r = created(1);
        let record = ActionRecord {
            action: "Stop".into(),
            time: at(90),
            result: "Succeeded".into(),
            ret_code: None,
            message: None,
        };
        let o = observed(&r, Outcome::Found, Some(instance("Stopping")));
        let with_action = Management {
            action: Some(&record),
            ..Management::default()
        };
        r.status = Some(manage(&r, Situation::Watched(Some(&o)), with_action, 100));
        see(&mut r, "Stopped", 110);
        let kept = r.status.as_ref().unwrap().last_action.as_deref();
        assert_eq!(kept, Some(&record));
    }

    #[test]
    fn the_password_never_reaches_status() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        let json = serde_json::to_string(&r.status).unwrap();
        assert!(!json.contains("c2VjcmV0LXB3") && !json.contains("secret-pw"));
    }

    #[test]
    fn facts_observed_for_another_spec_are_dropped() {
        let mut r = created(1);
        see(&mut r, "Running", 100);
        // spec.region edited: the instance is not in the new region, and the poller keeps no
        // instance observed for the old spec.
        r.metadata.generation = Some(2);
        let gone = observed(&r, Outcome::NotFound, None);
        step(&mut r, Situation::Watched(Some(&gone)), 200);
        let s = r.status.as_ref().unwrap();
        assert_eq!(s.observed_generation, Some(2));
        assert!(s.state.is_none() && s.addresses.is_empty() && s.ssh.is_none());
        assert_eq!(cond(&r, STALLED), (TRUE, "NotFound", 200));
        // Paused with a new spec: nothing is known of it either.
        r.metadata.generation = Some(3);
        step(&mut r, Situation::Paused, 300);
        assert_eq!(cond(&r, READY), (UNKNOWN, "Paused", 300));
        assert_eq!(cond(&r, RUNNING), (UNKNOWN, "Paused", 300));
    }

    #[test]
    fn fields_left_out_of_an_odd_answer_are_named_in_synced() {
        let mut r = created(1);
        let mut i = instance("Running");
        i.softwares.clear();
        i.dropped_fields = vec!["Softwares"];
        let o = observed(&r, Outcome::Found, Some(i));
        step(&mut r, Situation::Watched(Some(&o)), 100);
        let synced = condition(r.status.as_ref(), SYNCED).unwrap();
        assert_eq!(synced.status, TRUE);
        assert!(
            synced.message.ends_with("left out: Softwares"),
            "{}",
            synced.message
        );
    }

    #[test]
    fn an_oversized_answer_gives_a_bounded_status() {
        let mut r = created(1);
        let mut i = instance(&"Hibernating".repeat(10_000));
        i.name = "n".repeat(1 << 20).into();
        i.ssh_login_command = format!("ssh root@{} -p 22", "h".repeat(100_000)).into();
        i.ip_set = (0..10_000)
            .map(|n| IpInfo {
                ip: format!("10.0.{}.{}", n / 256, n % 256).into(),
                r#type: "Private".into(),
                ..IpInfo::default()
            })
            .collect();
        i.softwares = (0..10_000)
            .map(|n| Software {
                name: format!("app-{n}").into(),
                url: format!("https://{}", "u".repeat(10_000)).into(),
            })
            .collect();
        let o = observed(&r, Outcome::Found, Some(i));
        step(&mut r, Situation::Watched(Some(&o)), 100);
        let s = r.status.as_ref().unwrap();
        let size = serde_json::to_string(s).unwrap().len();
        assert!(size < 64 << 10, "{size} bytes");
        assert!(s.instance_name.as_ref().unwrap().ends_with("…[truncated]"));
        assert!(s.state.as_ref().unwrap().ends_with("…[truncated]"));
        assert_eq!(s.addresses.len(), 32);
        assert_eq!(s.softwares.len(), 32);
        let ready = condition(r.status.as_ref(), READY).unwrap();
        assert!(ready.reason.len() <= 128 && ready.message.len() <= 1024);
        // Computing it again changes nothing: no write.
        assert_eq!(compute(&r, Situation::Watched(Some(&o)), 200), *s);
    }

    #[test]
    fn bracketed_and_bare_ipv6_hosts_read_the_same() {
        for command in ["ssh root@[2001:db8::1] -p 22", "ssh root@2001:db8::1"] {
            let mut r = created(1);
            let mut i = instance("Running");
            i.ssh_login_command = command.into();
            let o = observed(&r, Outcome::Found, Some(i));
            step(&mut r, Situation::Watched(Some(&o)), 100);
            let ssh = r.status.as_ref().unwrap().ssh.clone().unwrap();
            assert_eq!(ssh.host, "2001:db8::1", "{command}");
            assert_eq!(ssh.address, "[2001:db8::1]:22", "{command}");
        }
    }

    #[test]
    fn container_instances_without_addresses_are_reached_by_ssh() {
        let mut r = created(1);
        let mut i = instance("Running");
        i.ip_set.clear();
        i.ssh_login_command = "ssh -p 23 root@gw.example.com".into();
        let o = observed(&r, Outcome::Found, Some(i));
        step(&mut r, Situation::Watched(Some(&o)), 100);
        let s = r.status.as_ref().unwrap();
        assert!(s.addresses.is_empty() && s.public_ip.is_none());
        assert_eq!(s.ssh.as_ref().unwrap().address, "gw.example.com:23");
    }
}
