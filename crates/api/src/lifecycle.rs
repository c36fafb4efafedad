//! The actions that change a machine: create, start, stop, reboot, terminate, and the scheduled
//! stop; and the list of zones. Each is one signed call; none is retried here (a create has no
//! idempotency token: a retried one can make a second billed machine, so whether to try again is
//! the caller's decision, see [`CallError::may_have_taken_effect`]).
//!
//! [`CallError::may_have_taken_effect`]: crate::CallError::may_have_taken_effect

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::client::{Client, Credentials};
use crate::error::CallError;
use crate::lenient::{self, Fields};

pub const CREATE_ACTION: &str = "CreateCompShareInstance";
pub const START_ACTION: &str = "StartCompShareInstance";
pub const STOP_ACTION: &str = "StopCompShareInstance";
pub const REBOOT_ACTION: &str = "RebootCompShareInstance";
pub const TERMINATE_ACTION: &str = "TerminateCompShareInstance";
pub const UPDATE_STOP_SCHEDULER_ACTION: &str = "UpdateCompShareStopScheduler";
pub const DELETE_STOP_SCHEDULER_ACTION: &str = "DeleteCompShareStopScheduler";
pub const SUPPORT_ZONE_ACTION: &str = "DescribeCompShareSupportZone";

/// The actions that change a machine (what a count of mutating calls counts).
pub const MUTATING_ACTIONS: [&str; 7] = [
    CREATE_ACTION,
    START_ACTION,
    STOP_ACTION,
    REBOOT_ACTION,
    TERMINATE_ACTION,
    UPDATE_STOP_SCHEDULER_ACTION,
    DELETE_STOP_SCHEDULER_ACTION,
];

/// One disk of a machine to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The system disk; a machine has exactly one.
    pub boot: bool,
    /// `CLOUD_SSD`, `CLOUD_RSSD` (A800 only), `CLOUD_NORMAL`, `LOCAL_NORMAL` or `LOCAL_SSD`.
    pub kind: String,
    pub size_gb: u32,
}

/// A `CreateCompShareInstance` request.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub region: String,
    pub zone: String,
    pub project_id: Option<String>,
    /// For example `4090`.
    pub gpu_type: String,
    pub gpu: u32,
    pub cpu: u32,
    /// MB, a multiple of 1024.
    pub memory_mb: u64,
    pub image_id: String,
    pub disks: Vec<Disk>,
    /// `G` (the only machine type).
    pub machine_type: Option<String>,
    /// `Month` (the gateway's default), `Day`, `Dynamic`, `Postpay` or `Spot`.
    pub charge_type: Option<String>,
    /// Months or days for `Month` and `Day`.
    pub quantity: Option<u32>,
    /// At most 63 characters.
    pub name: Option<String>,
    /// Returned by `DescribeCompShareInstance`: where a creator leaves its mark.
    pub remark: Option<String>,
    /// The login password, plain (sent Base64-encoded, as the API wants it).
    pub password: Option<SecretString>,
    pub minimal_cpu_platform: Option<String>,
    pub security_group_id: Option<String>,
}

/// The machine an action is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceRef {
    pub region: String,
    pub zone: String,
    pub project_id: Option<String>,
    pub uhost_id: String,
}

/// A zone the account may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportZone {
    pub region: String,
    pub zone: String,
}

impl InstanceRef {
    fn params(&self) -> Map<String, Value> {
        let mut params = Map::new();
        params.insert("Region".into(), json!(self.region));
        params.insert("Zone".into(), json!(self.zone));
        if let Some(project) = &self.project_id {
            params.insert("ProjectId".into(), json!(project));
        }
        params.insert("UHostId".into(), json!(self.uhost_id));
        params
    }
}

/// An answer whose fields are not read.
#[derive(Deserialize)]
struct Ignored {}

impl Client {
    /// Creates a machine; the ids the gateway answers with. Not idempotent: never call it again
    /// for the same machine without first finding out whether this call took effect.
    pub async fn create(
        &self,
        credentials: &Credentials,
        request: &CreateRequest,
    ) -> Result<Vec<String>, CallError> {
        use base64::Engine as _;
        let mut params = Map::new();
        let mut put = |name: &str, value: Value| {
            params.insert(name.to_owned(), value);
        };
        put("Region", json!(request.region));
        put("Zone", json!(request.zone));
        if let Some(project) = &request.project_id {
            put("ProjectId", json!(project));
        }
        put("GpuType", json!(request.gpu_type));
        put("GPU", json!(request.gpu));
        put("CPU", json!(request.cpu));
        put("Memory", json!(request.memory_mb));
        put("CompShareImageId", json!(request.image_id));
        put(
            "Disks",
            Value::Array(
                request
                    .disks
                    .iter()
                    .map(|d| json!({"IsBoot": d.boot, "Type": d.kind, "Size": d.size_gb}))
                    .collect(),
            ),
        );
        for (name, value) in [
            ("MachineType", &request.machine_type),
            ("ChargeType", &request.charge_type),
            ("Name", &request.name),
            ("Remark", &request.remark),
            ("MinimalCpuPlatform", &request.minimal_cpu_platform),
            ("SecurityGroupId", &request.security_group_id),
        ] {
            if let Some(value) = value {
                put(name, json!(value));
            }
        }
        if let Some(quantity) = request.quantity {
            put("Quantity", json!(quantity));
        }
        if let Some(password) = &request.password {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(password.expose_secret().as_bytes());
            put("Password", json!(encoded));
        }
        let answer: Value = self.call(credentials, CREATE_ACTION, params).await?;
        let map = answer.as_object().cloned().unwrap_or_default();
        let ids = Fields::new(&map).list_of_strings("UHostIds");
        if ids.is_empty() {
            return Err(CallError::Malformed(
                "a successful create answered no UHostIds".to_owned(),
            ));
        }
        Ok(ids)
    }

    pub async fn start(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
        without_gpu: bool,
    ) -> Result<(), CallError> {
        let mut params = instance.params();
        params.insert("WithoutGpu".into(), json!(without_gpu));
        self.call::<Ignored>(credentials, START_ACTION, params)
            .await
            .map(drop)
    }

    pub async fn stop(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
    ) -> Result<(), CallError> {
        self.call::<Ignored>(credentials, STOP_ACTION, instance.params())
            .await
            .map(drop)
    }

    pub async fn reboot(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
    ) -> Result<(), CallError> {
        self.call::<Ignored>(credentials, REBOOT_ACTION, instance.params())
            .await
            .map(drop)
    }

    /// Releases a stopped machine (billing stops); its data disks too with `release_disks`.
    /// Whether it went to the recycle bin.
    pub async fn terminate(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
        release_disks: bool,
    ) -> Result<bool, CallError> {
        let mut params = instance.params();
        params.insert("ReleaseUDisk".into(), json!(release_disks));
        let answer: Value = self.call(credentials, TERMINATE_ACTION, params).await?;
        Ok(answer
            .get("InRecycle")
            .and_then(lenient::string)
            .is_some_and(|v| v == "Yes"))
    }

    /// Schedules a stop at `unix_seconds` (at least five minutes ahead; not for Spot machines).
    pub async fn update_stop_scheduler(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
        unix_seconds: i64,
    ) -> Result<(), CallError> {
        let mut params = instance.params();
        params.insert("SchedulerStopTime".into(), json!(unix_seconds));
        self.call::<Ignored>(credentials, UPDATE_STOP_SCHEDULER_ACTION, params)
            .await
            .map(drop)
    }

    pub async fn delete_stop_scheduler(
        &self,
        credentials: &Credentials,
        instance: &InstanceRef,
    ) -> Result<(), CallError> {
        self.call::<Ignored>(credentials, DELETE_STOP_SCHEDULER_ACTION, instance.params())
            .await
            .map(drop)
    }

    /// The zones the account may use, in every region.
    pub async fn support_zones(
        &self,
        credentials: &Credentials,
        region: &str,
    ) -> Result<Vec<SupportZone>, CallError> {
        let mut params = Map::new();
        params.insert("Region".to_owned(), Value::from(region));
        let answer: Value = self.call(credentials, SUPPORT_ZONE_ACTION, params).await?;
        let map = answer.as_object().cloned().unwrap_or_default();
        let mut fields = Fields::new(&map);
        let zones = fields.list("ZoneInfo", |z| SupportZone {
            region: z.string("Region").into(),
            zone: z.string("Zone").into(),
        });
        Ok(zones
            .into_iter()
            .filter(|z| !z.region.is_empty() && !z.zone.is_empty())
            .collect())
    }
}
