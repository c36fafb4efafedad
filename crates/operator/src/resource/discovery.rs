//! The `CompShareDiscovery` API (`compshare.ucloud.cn/v1alpha1`): the machines of an account, kept
//! visible as one observe-only `CompShareInstance` each, without anyone writing ids.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretRef, rules};

/// The label on every resource a discovery created: the discovery's name.
pub const DISCOVERY_LABEL: &str = "compshare.ucloud.cn/discovery";
/// When the discovery first listed the accounts's machines without this resource's machine (RFC
/// 3339), on a resource it created; the resource is removed `spec.gracePeriod` later unless the
/// machine comes back. Kept in metadata, so that an operator restart neither resets nor loses it.
pub const MISSING_SINCE_ANNOTATION: &str = "compshare.ucloud.cn/missing-since";
/// How long a vanished machine's resource is kept when `spec.gracePeriod` is not set.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10 * 60);
/// The longest `spec.gracePeriod`.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 60 * 60);

// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "compshare.ucloud.cn",
    version = "v1alpha1",
    kind = "CompShareDiscovery",
    plural = "compsharediscoveries",
    singular = "compsharediscovery",
    shortname = "csd",
    category = "compshare",
    namespaced,
    status = "CompShareDiscoveryStatus",
    derive = "PartialEq",
    doc = "The machines of a CompShare account, kept visible: compshare-operator lists them (⌈machines/100⌉ DescribeCompShareInstance calls per region and interval) and keeps exactly one observe-only CompShareInstance per matching machine in this namespace, owned by this object. A machine that disappears has its resource removed after spec.gracePeriod. Resources it did not create are never touched; a machine one of them already names is reported in status.clashes.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True when the last listing succeeded and every matching machine has its resource"
    ),
    printcolumn(
        name = "Machines",
        type_ = "integer",
        json_path = ".status.machinesFound",
        description = "Matching machines in the last listing"
    ),
    printcolumn(
        name = "Resources",
        type_ = "integer",
        json_path = ".status.resourcesManaged",
        description = "CompShareInstances this discovery keeps now"
    ),
    printcolumn(
        name = "Last-List",
        type_ = "date",
        json_path = ".status.lastListTime",
        description = "When the machines were last listed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        priority = 1,
        description = "True when the last listing succeeded"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].reason",
        priority = 1,
        description = "Why the last listing succeeded or failed"
    )
)]
#[serde(rename_all = "camelCase")]
/// Which account's machines to keep resources for: its credentials, regions and filters.
pub struct CompShareDiscoverySpec {
    /// A Secret in this namespace with the API key pair in the keys `publicKey` and `privateKey`;
    /// every resource the discovery creates names it too. When absent, the operator's default
    /// credentials are used, but only in the namespaces its administrator allowed. Secrets of
    /// other namespaces are never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<SecretRef>,

    /// The regions to list, for example `cn-wlcb`. Empty (the default): every region the account
    /// has zones in (`DescribeCompShareSupportZone`).
    #[x_kube(validation = rules::regions())]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s == r))").message("regions must not repeat a region"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 32)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,

    /// The CompShare project (`org-…`) to list, also written into each resource. Optional: the
    /// account's default project when absent; sub-accounts must set it.
    #[x_kube(validation = rules::project_id())]
    #[schemars(length(min = 1, max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,

    /// Which machines to keep resources for; without filters, every machine listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<DiscoveryFilters>,

    /// How often to list the machines, as a duration such as `30s`, `5m` or `1h30m`, between 10s
    /// and 24h. Defaults to the operator's `--default-poll-interval`. (Each resource also
    /// observes its machine at the operator's default interval.)
    #[x_kube(validation = rules::poll_interval_form())]
    #[x_kube(validation = rules::poll_interval_bounds())]
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,

    /// How long the resource of a machine that no longer appears in the listing is kept (its own
    /// polling shows it `NotFound`) before the discovery removes it, counted from the listing that
    /// first missed it: a duration such as `30s`, `10m` or `24h`, at most 720h (30 days). Default
    /// `10m`. A machine that reappears within it keeps its resource.
    #[x_kube(validation = rules::grace_period_form())]
    #[x_kube(validation = rules::grace_period_bound())]
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
}

/// Which machines to keep. Within one kind, any value matches; across kinds, all must.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryFilters {
    /// Keep machines in one of these zones, for example `cn-wlcb-01`.
    #[x_kube(validation = rules::zones())]
    #[schemars(length(max = 64), inner(length(min = 1, max = 32)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,

    /// Keep machines of one of these business groups (the console's `Tag`).
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,

    /// Keep machines with an address in one of these VPCs, for example `uvnet-abc123`. A machine
    /// without addresses (containers often have none) is in no VPC.
    #[x_kube(validation = rules::vpcs())]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpcs: Vec<String>,

    /// Keep machines whose name matches one of these glob patterns (`*`, `?`, `[…]`, `{a,b}`),
    /// matched against the whole name, for example `trainer-*`.
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[^\\\\[\\\\]]*(\\\\[[^\\\\[\\\\]]+\\\\][^\\\\[\\\\]]*)*$'))").message("filters.names must be glob patterns such as trainer-*: every '[' needs its ']'"))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[^{}]*(\\\\{[^{}]*\\\\}[^{}]*)*$'))").message("filters.names must be glob patterns such as trainer-*: every '{' needs its '}', and they do not nest"))]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,

    /// Keep machines in one of these states, for example `Running` or `Stopped` (case is
    /// ignored).
    #[x_kube(validation = Rule::new("self.all(s, s.matches('^[A-Za-z][A-Za-z0-9 ]*$'))").message("filters.states must be machine states such as Running or Stopped"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 32)))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
}

/// What the last listing found and what the discovery did about it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompShareDiscoveryStatus {
    /// The `metadata.generation` of the spec the last listing answered. 0 until the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` and `Synced` (the last listing succeeded: every matching machine has its resource,
    /// clashes aside), `Reconciling` (the last listing failed in a way that may pass: tried again
    /// at the next interval) and `Stalled` (a person must act: credentials, permissions). Until
    /// the first listing of a spec, `observedGeneration` is behind: in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Matching machines in the last successful listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_found: Option<i64>,

    /// The resources this discovery keeps now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_managed: Option<i64>,

    /// Resources created so far (a running total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_created: Option<i64>,

    /// Resources removed so far, their machines gone for longer than the grace period (a running
    /// total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_removed: Option<i64>,

    /// When the machines were last listed, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_list_time: Option<Time>,

    /// How the last listing went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_list_result: Option<ListResult>,

    /// Matching machines left alone because a resource this discovery did not create already
    /// names them (or holds the name it would give), sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub clashes: Vec<Clash>,
}

/// How a listing went.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResult {
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// The cloud's RetCode, when it answered with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret_code: Option<i64>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A machine the discovery left alone: another resource has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clash {
    /// The machine's id.
    pub uhost_id: String,
    /// The resource, not created by this discovery, that names the machine (or holds the name
    /// the discovery would give it).
    pub resource: String,
}
