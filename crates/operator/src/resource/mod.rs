//! The `CompShareInstance` API (`compshare.ucloud.cn/v1alpha1`): a public contract read by kubectl,
//! GitOps tools and other controllers. Field names are stable; every field is documented so that
//! `kubectl explain compshareinstance.spec` and `.status` are useful.

// This module is the crate's public API. `KubeSchema` re-emits its structs in a private module to
// derive their schemas, where `unreachable_pub` cannot see that they are exported.
#![allow(unreachable_pub)]

use std::borrow::Cow;
use std::time::Duration;

use compact_str::CompactString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod discovery;
mod rules;
pub use discovery::*;

/// The label a sharded operator selects on (`--watch-label-selector`), Flux's convention; a
/// discovery passes its own value to the resources it creates.
pub const SHARD_LABEL: &str = "sharding.fluxcd.io/key";

/// `"true"` stops polling the resource until the annotation is removed or set to anything else.
pub const PAUSED_ANNOTATION: &str = "compshare.ucloud.cn/paused";
/// The id of the machine the operator created for the resource, recorded the moment it is known,
/// in metadata, where it survives a status wipe.
pub const CREATED_ID_ANNOTATION: &str = "compshare.ucloud.cn/uhost-id";
/// Set (to the time) before the operator asks CompShare to create a machine, and removed once the
/// outcome is known: while it is set and no id is recorded, the operator looks for a machine
/// bearing the resource's mark before it would ever create another.
pub const CREATE_PENDING_ANNOTATION: &str = "compshare.ucloud.cn/create-pending";
/// Held while the operator must release the resource's machine before the resource may go.
pub const RELEASE_FINALIZER: &str = "compshare.ucloud.cn/release";
/// Any new value asks for one immediate observation; the handled value is recorded in
/// `status.lastHandledRefresh`.
pub const REFRESH_ANNOTATION: &str = "compshare.ucloud.cn/refresh-requested-at";

/// Bounds of `spec.pollInterval`, enforced at admission (CEL) and relied on by the poller.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Keys of the credentials Secret.
pub const PUBLIC_KEY_KEY: &str = "publicKey";
pub const PRIVATE_KEY_KEY: &str = "privateKey";

/// Keys of the connection Secret.
pub mod connection_keys {
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const SSH_COMMAND: &str = "sshCommand";
}

// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "compshare.ucloud.cn",
    version = "v1alpha1",
    kind = "CompShareInstance",
    plural = "compshareinstances",
    singular = "compshareinstance",
    shortname = "csinst",
    category = "compshare",
    namespaced,
    status = "CompShareInstanceStatus",
    derive = "PartialEq",
    doc = "A CompShare (UCloud GPU cloud) machine, observed by compshare-operator: the operator polls DescribeCompShareInstance and writes the machine's state, addresses and SSH details into status. With spec.managementPolicy Manage (where the operator's administrator allows it) it also creates, starts, stops and releases the machine. Ready means settled in the state asked for (Running, or Stopped when nothing asks it to run); Running means running.",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "The instance's state as the CompShare API reports it"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True when the instance has settled in the state asked for: Running, or Stopped when nothing asks it to run"
    ),
    printcolumn(
        name = "GPU",
        type_ = "string",
        json_path = ".status.gpu.summary",
        description = "GPU type × count"
    ),
    printcolumn(
        name = "Public-IP",
        type_ = "string",
        json_path = ".status.publicIP",
        description = "First public address"
    ),
    printcolumn(
        name = "SSH",
        type_ = "string",
        json_path = ".status.ssh.address",
        description = "SSH host:port"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "UHost-ID",
        type_ = "string",
        json_path = ".status.uhostId",
        priority = 1,
        description = "The CompShare instance id"
    ),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".status.zone",
        priority = 1
    ),
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".status.instanceName",
        priority = 1,
        description = "The instance's name in CompShare"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        priority = 1,
        description = "True when the last observation succeeded"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Why the instance is or is not Ready"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.uhostId) != has(self.machine)").message("set spec.uhostId (a machine that exists) or spec.machine (a machine to create), not both"))]
#[x_kube(validation = Rule::new("!has(self.machine) || (has(self.managementPolicy) && self.managementPolicy == 'Manage')").message("spec.machine creates a machine, which spends money: it needs spec.managementPolicy: Manage"))]
#[x_kube(validation = Rule::new("!has(self.powerState) || (has(self.managementPolicy) && self.managementPolicy == 'Manage')").message("spec.powerState starts and stops the machine: it needs spec.managementPolicy: Manage"))]
#[x_kube(validation = Rule::new("!has(self.stopAt) || (has(self.managementPolicy) && self.managementPolicy == 'Manage')").message("spec.stopAt schedules a stop: it needs spec.managementPolicy: Manage"))]
#[x_kube(validation = Rule::new("!has(self.deletionPolicy) || self.deletionPolicy == 'Orphan' || (has(self.managementPolicy) && self.managementPolicy == 'Manage')").message("spec.deletionPolicy: Delete releases the machine: it needs spec.managementPolicy: Manage"))]
#[x_kube(validation = Rule::new("!has(self.stopAt) || !has(self.machine) || !has(self.machine.chargeType) || self.machine.chargeType != 'Spot'").message("spec.stopAt is not available for Spot machines (CompShare has no scheduled stop for them)"))]
#[x_kube(validation = Rule::new("!has(self.stopAt) || has(self.projectId)").message("spec.stopAt needs spec.projectId: CompShare's stop scheduler asks for the project (org-…, shown in the console)"))]
#[x_kube(validation = Rule::new("!has(self.machine) || has(self.zone)").message("spec.zone is needed to create a machine (for example cn-wlcb-01)"))]
#[x_kube(validation = Rule::new("has(self.machine) == has(oldSelf.machine)").message("spec.machine cannot be added or removed: create another CompShareInstance for another machine"))]
#[x_kube(validation = Rule::new("!has(oldSelf.uhostId) || has(self.uhostId)").message("spec.uhostId cannot be removed"))]
/// Which CompShare machine to observe (or to create), with which credentials, how often, and
/// what the operator may do to it.
pub struct CompShareInstanceSpec {
    /// The id of an existing machine (for example `uhost-1a2b3c4d`); or leave it out and describe
    /// one to create in `machine`. Immutable: for another machine, create another resource.
    #[x_kube(validation = Rule::new("self == oldSelf").message("uhostId is immutable: create another CompShareInstance to observe another instance"))]
    #[x_kube(validation = rules::id("uhostId must be a CompShare instance id such as uhost-1a2b3c4d (letters, digits, '-' and '_')"))]
    #[schemars(length(min = 1, max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uhost_id: Option<String>,

    /// The CompShare region of the instance, for example `cn-wlcb`.
    #[x_kube(validation = rules::region())]
    #[schemars(length(min = 1, max = 32))]
    pub region: String,

    /// The zone of the instance, for example `cn-wlcb-01`. Optional; when set, an instance found in
    /// another zone is reported as a mismatch instead of being shown.
    #[x_kube(validation = rules::zone())]
    #[schemars(length(min = 1, max = 32))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,

    /// The CompShare project (`org-…`) that holds the instance. Optional: the account's default
    /// project is used when absent; sub-accounts must set it.
    #[x_kube(validation = rules::project_id())]
    #[schemars(length(min = 1, max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,

    /// A Secret in this resource's namespace with the API key pair in the keys `publicKey` and
    /// `privateKey`. When absent, the operator's default credentials are used, but only in the
    /// namespaces its administrator allowed. Secrets of other namespaces are never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<SecretRef>,

    /// How often to observe the instance, as a duration such as `30s`, `5m` or `1h30m`, between
    /// 10s and 24h. Defaults to the operator's `--default-poll-interval`.
    #[x_kube(validation = rules::poll_interval_form())]
    #[x_kube(validation = rules::poll_interval_bounds())]
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,

    /// Opt-in: a Secret in this resource's namespace that the operator creates and owns, holding
    /// `host`, `port`, `username`, `password` (decoded) and `sshCommand`. The password is written
    /// nowhere else. With the operator's default credentials, the administrator must grant this
    /// namespace the `connection` privilege.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_secret_to_ref: Option<SecretRef>,

    /// `Observe` (the default): the operator only reads the machine. `Manage`: it may also create
    /// it (`machine`), start and stop it (`powerState`, `stopAt`) and release it when the resource
    /// is deleted (`deletionPolicy`), all of which cost or save money. The operator's
    /// administrator must allow management in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,

    /// A machine to create (instead of naming one in `uhostId`). Needs `managementPolicy: Manage`
    /// and `zone`. Immutable: for another machine, create another resource.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.machine is immutable: create another CompShareInstance for another machine"))]
    //
    // Boxed: every cached resource holds a spec inline, and most name a machine instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Box<MachineSpec>>,

    /// `Running` or `Stopped`: the power state the operator keeps the machine in. Absent: the
    /// operator leaves it as it is. Needs `managementPolicy: Manage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<PowerState>,

    /// A time (RFC 3339, for example `2026-12-31T18:00:00Z`) at which CompShare stops the machine by
    /// itself (its stop scheduler): at least five minutes ahead when set; not for Spot machines.
    /// Removing it cancels the scheduled stop. Needs `managementPolicy: Manage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_at: Option<Time>,

    /// What happens to the machine when this resource is deleted. `Delete` stops it and releases
    /// it (billing stops) before the resource goes; `Orphan` leaves it. Default: `Delete` for a
    /// machine the operator created from `machine`, `Orphan` for one named by `uhostId`. `Delete`
    /// needs `managementPolicy: Manage`. A resource whose machine cannot be released keeps its
    /// finalizer and says why in `Stalled`; set `Orphan` to let it go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// What the operator may do to the machine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Read it only: never a state-changing call.
    Observe,
    /// Create, start, stop and release it.
    Manage,
}

/// A power state the operator keeps a machine in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PowerState {
    Running,
    Stopped,
}

/// What deleting the resource does to its machine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Stop and release it.
    Delete,
    /// Leave it.
    Orphan,
}

/// A machine to create (`CreateCompShareInstance`). Legal CPU and memory sizes per GPU type are
/// those `DescribeAvailableCompShareInstanceTypes` lists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.quantity) || (has(self.chargeType) && (self.chargeType == 'Month' || self.chargeType == 'Day'))").message("machine.quantity (months or days) goes with chargeType Month or Day"))]
pub struct MachineSpec {
    /// The GPU model, for example `4090`, `4090_48G`, `A800`, `H20`, `3090`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("gpuType must be a CompShare GPU type such as 4090 or A800"))]
    #[schemars(length(min = 1, max = 32))]
    pub gpu_type: String,
    /// GPUs (1 to 10 for the 4090; up to 8 for the others).
    #[schemars(range(min = 1, max = 10))]
    pub gpu: i32,
    /// CPU cores.
    #[schemars(range(min = 1, max = 512))]
    pub cpu: i32,
    /// Memory in MB, a multiple of 1024 (65536 is 64 GiB).
    #[x_kube(validation = Rule::new("self % 1024 == 0").message("machine.memoryMB must be a multiple of 1024, for example 65536 for 64 GiB"))]
    #[schemars(range(min = 1024, max = 4194304))]
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    /// The image (`CompShareImageId`), for example a PyTorch image's id.
    #[x_kube(validation = rules::id("imageId must be a CompShare image id such as compshareImage-abc123"))]
    #[schemars(length(min = 1, max = 64))]
    pub image_id: String,
    /// The disks: exactly one boot disk, and up to seven data disks.
    #[x_kube(validation = Rule::new("self.filter(d, d.boot).size() == 1").message("machine.disks must have exactly one boot disk (boot: true)"))]
    #[schemars(length(min = 1, max = 8))]
    pub disks: Vec<DiskSpec>,
    /// `Dynamic` (by the hour; the default here, so that deleting the resource stops the
    /// spending), `Postpay`, `Spot` (may be reclaimed), or the prepaid `Day` and `Month`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_type: Option<ChargeType>,
    /// Days or months to prepay with `Day` or `Month` (default 1).
    #[schemars(range(min = 1, max = 36))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i32>,
    /// The machine's name in CompShare (default: the resource's name, cut to 63 characters).
    #[x_kube(validation = Rule::new("self.matches('^[-_.,:A-Za-z0-9\\\\p{Han}]+$')").message("machine.name may hold letters, digits, Chinese characters and _ . , : -"))]
    #[schemars(length(min = 1, max = 63))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A Secret in this namespace holding the login password (never given in the spec). Without
    /// it, CompShare sets one, which the connection Secret can hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// `Auto` (the default), `Intel/Auto` or `Amd/Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimal_cpu_platform: Option<CpuPlatform>,
}

/// One disk of a machine to create.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DiskSpec {
    /// The system disk.
    #[serde(default)]
    pub boot: bool,
    /// The disk type (`CLOUD_RSSD` on A800 only).
    #[serde(rename = "type")]
    pub type_: DiskType,
    /// Size in GB (200 GB of system disk are free).
    #[schemars(range(min = 1, max = 32000))]
    #[serde(rename = "sizeGB")]
    pub size_gb: i32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(non_camel_case_types)]
pub enum DiskType {
    CLOUD_SSD,
    CLOUD_RSSD,
    CLOUD_NORMAL,
    LOCAL_NORMAL,
    LOCAL_SSD,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ChargeType {
    Dynamic,
    Postpay,
    Spot,
    Day,
    Month,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CpuPlatform {
    Auto,
    #[serde(rename = "Intel/Auto")]
    IntelAuto,
    #[serde(rename = "Amd/Auto")]
    AmdAuto,
}

/// A key of a Secret in the same namespace as the resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = rules::secret_name())]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key (default `password`).
    #[schemars(length(min = 1, max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A Secret in the same namespace as the resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of the Secret.
    #[x_kube(validation = rules::secret_name())]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the operator last observed. Only fields that change when the instance changes are kept
/// (no prices, monitoring figures or update times), so an unchanged instance causes no writes.
/// Passwords are never stored here.
//
// The operator caches one status per resource, so its Rust layout is kept small: the larger
// optional groups are boxed (an absent box costs a pointer, an absent struct its whole size), and
// text is held in `CompactString`s (values up to 24 bytes need no allocation).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompShareInstanceStatus {
    /// The `metadata.generation` of the spec that this status answers: claimed by an observation
    /// made for it. 0 (the default the apiserver gives a new resource) until the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the instance has settled in the state asked for: `Running`, or `Stopped` when
    /// nothing asks it to run), `Running` (the instance is Running), `Synced` (the last
    /// observation succeeded), `Reconciling` (the instance is on its way somewhere, or not observed
    /// yet), `Stalled` (a person must act) and `Paused`. (Earlier builds of v1alpha1 set `Ready`
    /// only for `Running`; to wait for a running machine, wait for `Running`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The instance's state, verbatim from the API: `Initializing`, `Install`, `Install Fail`,
    /// `Starting`, `Running`, `Stopping`, `Stopped`, `Rebooting`, `Resizing`, or any value the API
    /// adds later. Empty when the API could not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub state: Option<CompactString>,

    /// The first public address of the instance (from `addresses`), for display.
    #[serde(default, rename = "publicIP", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub public_ip: Option<CompactString>,

    /// The instance's addresses. Container instances often have none and are reached via `ssh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<InstanceAddress>,

    /// How to log in, read from the API's SSH login command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Box<SshAccess>>,

    /// The instance's name in CompShare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub instance_name: Option<CompactString>,

    /// The zone the instance runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub zone: Option<CompactString>,

    /// The machine type, for example `G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub machine_type: Option<CompactString>,

    /// Number of CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,

    /// Memory, for example `64Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,

    /// The GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Box<GpuInfo>>,

    /// The image the instance runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Box<ImageInfo>>,

    /// The operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Box<OsInfo>>,

    /// `UHost` (a virtual machine) or `Container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub instance_type: Option<CompactString>,

    /// The billing mode, for example `Month`, `Day` or `Dynamic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub charge_type: Option<CompactString>,

    /// Whether the instance is a spot (preemptible) instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<bool>,

    /// Whether the instance renews automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_renew: Option<bool>,

    /// Whether the instance has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,

    /// When the instance was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Time>,

    /// When the instance expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<Time>,

    /// Software endpoints on the instance, such as JupyterLab.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub softwares: Vec<SoftwareEndpoint>,

    /// The last value of the `compshare.ucloud.cn/refresh-requested-at` annotation that was
    /// handled by an observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_handled_refresh: Option<CompactString>,

    /// The connection Secret the operator maintains for this resource (see
    /// `spec.writeConnectionSecretToRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub connection_secret_name: Option<CompactString>,

    /// The machine's id: `spec.uhostId`, or the machine the operator created (also recorded in
    /// the annotation `compshare.ucloud.cn/uhost-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub uhost_id: Option<CompactString>,

    /// When CompShare will stop the machine by itself (its stop scheduler), as observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_stop: Option<Time>,

    /// The last state-changing call the operator made for this resource, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<Box<ActionRecord>>,
}

/// A state-changing call the operator made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// `Create`, `Start`, `Stop`, `ScheduleStop`, `CancelScheduledStop` or `Terminate`.
    #[schemars(with = "String")]
    pub action: CompactString,
    /// When it was made.
    pub time: Time,
    /// `Succeeded`, `Failed`, or `Unknown` (the answer was lost: the operator finds out by
    /// observing).
    #[schemars(with = "String")]
    pub result: CompactString,
    /// The cloud's RetCode, when it answered with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_code: Option<i64>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An address of the instance, as in Cluster API's `MachineAddress`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct InstanceAddress {
    /// `ExternalIP` (the API's `Internation` and `Bgp` types) or `InternalIP` (`Private`).
    #[serde(rename = "type")]
    pub type_: AddressType,
    /// The IP address.
    #[schemars(with = "String")]
    pub address: CompactString,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AddressType {
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    #[serde(rename = "InternalIP")]
    InternalIp,
}

/// SSH login details. The password is never here; see `spec.writeConnectionSecretToRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SshAccess {
    /// The login command, verbatim from the API.
    pub command: String,
    /// The login user, when the command names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub user: Option<CompactString>,
    /// The host to connect to.
    #[schemars(with = "String")]
    pub host: CompactString,
    /// The port to connect to (22 unless the command says otherwise).
    pub port: i32,
    /// `host:port`, for display.
    #[schemars(with = "String")]
    pub address: CompactString,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GpuInfo {
    /// Number of GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// The GPU model, for example `4090`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub type_: Option<CompactString>,
    /// Memory per GPU, for example `24Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// `type×count`, for display (for example `4090×2`).
    #[schemars(with = "String")]
    pub summary: CompactString,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ImageInfo {
    /// The image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub id: Option<CompactString>,
    /// The image name, for example `PyTorch 2.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub name: Option<CompactString>,
    /// `System`, `App`, `Custom` or `Community`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub type_: Option<CompactString>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct OsInfo {
    /// The OS name, for example `Ubuntu 22.04`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub name: Option<CompactString>,
    /// `Linux` or `Windows`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub type_: Option<CompactString>,
}

/// A software endpoint on the instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SoftwareEndpoint {
    /// The software, for example `JupyterLab`.
    #[schemars(with = "String")]
    pub name: CompactString,
    /// Where to reach it.
    #[schemars(with = "String")]
    pub url: CompactString,
}

/// What a `CompShareInstance` says through its metadata and the machine id its spec names, for
/// the resource itself and for the form the operator's watch reads it in (`reconciler::cache`),
/// which keeps these at hand but packs the rest of the spec and the status.
pub trait InstanceResource: kube::Resource {
    /// The machine id the spec names (`spec.uhostId`).
    fn named_id(&self) -> Option<&str>;

    /// The machine's id: the one the spec names, or the one the operator created for it.
    fn machine_id(&self) -> Option<&str> {
        self.named_id()
            .or_else(|| self.annotation(CREATED_ID_ANNOTATION))
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.meta()
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// The annotation-requested pause.
    fn is_paused(&self) -> bool {
        self.annotation(PAUSED_ANNOTATION) == Some("true")
    }

    /// The current refresh request, if any, as it is recorded in `status.lastHandledRefresh`:
    /// verbatim up to [`MAX_REFRESH_VALUE`] bytes; a longer value is cut short and marked with a
    /// digest of the whole, so that different long values stay different.
    fn refresh_request(&self) -> Option<Cow<'_, str>> {
        let value = self.annotation(REFRESH_ANNOTATION)?;
        if value.len() <= MAX_REFRESH_VALUE {
            return Some(Cow::Borrowed(value));
        }
        let digest = hex::encode(&Sha256::digest(value.as_bytes())[..8]);
        let kept = prefix(value, MAX_REFRESH_VALUE - 30);
        Some(Cow::Owned(format!("{kept}…sha256:{digest}")))
    }
}

impl InstanceResource for CompShareInstance {
    fn named_id(&self) -> Option<&str> {
        self.spec.uhost_id.as_deref()
    }
}

impl CompShareInstance {
    /// Whether the operator may change the machine (`managementPolicy: Manage`).
    pub fn is_managed(&self) -> bool {
        self.spec.management_policy == Some(ManagementPolicy::Manage)
    }

    /// The deletion policy in force: as set, else `Delete` for a machine to create and `Orphan`
    /// for one named by id.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec
            .deletion_policy
            .unwrap_or(if self.spec.machine.is_some() {
                DeletionPolicy::Delete
            } else {
                DeletionPolicy::Orphan
            })
    }
}

/// The longest refresh value recorded verbatim (see [`InstanceResource::refresh_request`]).
pub const MAX_REFRESH_VALUE: usize = 128;

/// The longest prefix of `text` that has at most `max` bytes and ends on a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The status the apiserver gives every resource the operator has not observed yet (the CRD's
/// default for `status`): `observedGeneration: 0`. kstatus, Flux, Argo CD and `kubectl wait` read
/// it as in progress from the very first version a client can see (the create response and the
/// watch's ADDED event), and the operator's first write is its first observation. It stays
/// minimal on purpose: a defaulted field belongs to no server-side-apply manager, so a defaulted
/// condition could never be removed by an apply that leaves it out.
pub fn initial_status() -> CompShareInstanceStatus {
    CompShareInstanceStatus {
        observed_generation: Some(0),
        ..CompShareInstanceStatus::default()
    }
}

/// The CustomResourceDefinition: the derived one, with [`initial_status`] as the status default.
pub fn crd() -> CustomResourceDefinition {
    with_status_default(
        CompShareInstance::crd(),
        serde_json::to_value(initial_status()).expect("the status serializes"),
    )
}

/// The `CompShareDiscovery` CustomResourceDefinition, with `observedGeneration: 0` as the status
/// default (in progress until the first listing, as [`initial_status`] for an instance).
/// Its name is limited to 63 characters: it is the value of the label on every resource it
/// creates.
pub fn discovery_crd() -> CustomResourceDefinition {
    let mut crd = with_status_default(
        CompShareDiscovery::crd(),
        serde_json::to_value(CompShareDiscoveryStatus {
            observed_generation: Some(0),
            ..CompShareDiscoveryStatus::default()
        })
        .expect("the status serializes"),
    );
    for version in &mut crd.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .expect("the derived CRD has a schema");
        root.x_kubernetes_validations = Some(vec![ValidationRule {
            rule: "size(self.metadata.name) <= 63".to_owned(),
            message: Some(format!(
                "a CompShareDiscovery's name must be at most 63 characters: it is the value of the label {DISCOVERY_LABEL} on every resource it creates"
            )),
            ..ValidationRule::default()
        }]);
    }
    crd
}

fn with_status_default(
    mut crd: CustomResourceDefinition,
    default: serde_json::Value,
) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .expect("the derived schema has a status");
        status.default = Some(JSON(default.clone()));
    }
    crd
}

/// The `CompShareInstance` CRD as YAML, exactly as `crds/` holds it.
pub fn crd_yaml() -> String {
    yaml(&crd())
}

/// Every CRD as `(file name, YAML)`, exactly as `crds/` (and the chart's `crds/`) hold them.
pub fn crd_files() -> Vec<(String, String)> {
    [crd(), discovery_crd()]
        .iter()
        .map(|crd| {
            use kube::ResourceExt as _;
            (format!("{}.yaml", crd.name_any()), yaml(crd))
        })
        .collect()
}

/// What `compshare-operator crd` prints: every CRD, as YAML documents.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

fn yaml(crd: &CustomResourceDefinition) -> String {
    let yaml = serde_saphyr::to_string(crd).expect("the CRD serializes");
    format!(
        "# Generated by `compshare-operator crd`; do not edit (a test fails if this differs).\n{yaml}"
    )
}
