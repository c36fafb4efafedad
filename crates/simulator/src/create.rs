//! `CreateCompShareInstance`: its parameters checked as the vendor's page states them (GPU types
//! and their limits, disks, charge types, name, password), and the instance it makes.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use compshare_api::signing::Params;

use super::actions::{ApiError, boolean, positive, required, text};

/// The page's default name.
const DEFAULT_NAME: &str = "host";
const MAX_NAME_CHARS: usize = 63;
/// `MaxCount` has no documented bound; the simulator's, so that a typo cannot make millions.
const MAX_COUNT: u64 = 100;
const CHARGE_TYPES: [&str; 5] = ["Month", "Day", "Dynamic", "Postpay", "Spot"];
const DISK_TYPES: [&str; 5] = [
    "CLOUD_SSD",
    "CLOUD_RSSD",
    "CLOUD_NORMAL",
    "LOCAL_NORMAL",
    "LOCAL_SSD",
];
/// "`CLOUD_RSSD` 磁盘类型仅 A800 机型支持".
const RSSD_ONLY_ON: &str = "A800";
const DAY_SECS: i64 = 24 * 3600;

/// One row of the page's GPU table.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GpuType {
    pub name: &'static str,
    /// Per card, GB (`GraphicsMemory.Value`).
    memory_gb: u32,
    max_gpus: u64,
    max_cpu: u64,
    max_memory_gb: u64,
    /// "支持抢占式".
    spot: bool,
    /// "部分 GPU 型号仅支持 Intel 平台".
    intel_only: bool,
}

const fn gpu(
    name: &'static str,
    memory_gb: u32,
    max_gpus: u64,
    max_cpu: u64,
    max_memory_gb: u64,
    spot: bool,
    intel_only: bool,
) -> GpuType {
    GpuType {
        name,
        memory_gb,
        max_gpus,
        max_cpu,
        max_memory_gb,
        spot,
        intel_only,
    }
}

/// The page's "GPU 类型列表" (the 5090's memory, "—" there, is its public figure).
const GPU_TYPES: [GpuType; 12] = [
    gpu("4090", 24, 10, 140, 680, true, false),
    gpu("4090_48G", 48, 8, 124, 940, false, true),
    gpu("5090", 32, 8, 124, 940, true, false),
    gpu("A100", 80, 8, 124, 1024, true, true),
    gpu("A800", 80, 8, 124, 1800, false, true),
    gpu("H20", 96, 8, 188, 1800, false, true),
    gpu("3090", 24, 8, 124, 450, true, false),
    gpu("3080Ti", 12, 8, 12, 125, true, true),
    gpu("2080Ti", 11, 8, 48, 192, true, true),
    gpu("2080", 11, 8, 92, 334, false, true),
    gpu("P40", 24, 8, 48, 502, false, true),
    gpu("V100S", 32, 8, 92, 576, true, true),
];

/// One disk of the request.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DiskSpec {
    pub boot: bool,
    pub kind: String,
    pub size_gb: u64,
}

/// A checked `CreateCompShareInstance` request.
#[derive(Debug)]
pub(super) struct CreateSpec {
    pub region: String,
    pub zone: String,
    pub project_id: Option<String>,
    pub gpu_type: &'static GpuType,
    pub gpus: u64,
    pub cpu: u64,
    pub memory_mb: u64,
    pub image_id: String,
    /// The boot disk first.
    pub disks: Vec<DiskSpec>,
    pub charge_type: &'static str,
    pub quantity: u64,
    pub name: String,
    pub remark: String,
    /// Base64, as sent.
    pub password: Option<String>,
    pub cpu_platform: String,
    /// How many machines (`MaxCount`).
    pub count: u64,
}

/// Checks every parameter, in the page's order; the first problem is the answer.
pub(super) fn parse(params: &Params) -> Result<CreateSpec, ApiError> {
    let region = required(params, "Region")?.to_owned();
    let zone = required(params, "Zone")?.to_owned();
    let project_id = text(params, "ProjectId").map(str::to_owned);
    let gpu_type = gpu_type(required(params, "GpuType")?)?;
    let gpus = required_positive(params, "GPU")?;
    if gpus > gpu_type.max_gpus {
        return Err(ApiError::invalid_param(
            "GPU",
            format!(
                "{gpus} GPUs asked for, a {} machine has 1 to {}",
                gpu_type.name, gpu_type.max_gpus
            ),
        ));
    }
    let cpu = required_positive(params, "CPU")?;
    if cpu > gpu_type.max_cpu {
        return Err(ApiError::invalid_param(
            "CPU",
            format!(
                "{cpu} cores asked for, a {} machine has at most {}",
                gpu_type.name, gpu_type.max_cpu
            ),
        ));
    }
    let memory_mb = required_positive(params, "Memory")?;
    if memory_mb % 1024 != 0 {
        return Err(ApiError::invalid_param(
            "Memory",
            format!("{memory_mb} MB is not a multiple of 1024"),
        ));
    }
    if memory_mb > gpu_type.max_memory_gb * 1024 {
        return Err(ApiError::invalid_param(
            "Memory",
            format!(
                "{memory_mb} MB asked for, a {} machine has at most {} GB",
                gpu_type.name, gpu_type.max_memory_gb
            ),
        ));
    }
    match text(params, "MachineType") {
        None | Some("G") => {}
        Some(other) => {
            return Err(ApiError::invalid_param(
                "MachineType",
                format!("{other:?}: only G (GPU) is offered"),
            ));
        }
    }
    let cpu_platform = cpu_platform(text(params, "MinimalCpuPlatform"), gpu_type)?;
    let image_id = required(params, "CompShareImageId")?.to_owned();
    let disks = disks(params, gpu_type)?;
    let charge_type = charge_type(text(params, "ChargeType"), gpu_type)?;
    let quantity = positive(params, "Quantity")?.unwrap_or(1);
    let name = name(text(params, "Name"))?;
    let remark = text(params, "Remark").unwrap_or("").to_owned();
    let password = match text(params, "Password") {
        None => None,
        Some(encoded) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(plain) if !plain.is_empty() => Some(encoded.to_owned()),
            _ => {
                return Err(ApiError::invalid_param(
                    "Password",
                    "not Base64 (the password must be sent Base64-encoded)",
                ));
            }
        },
    };
    let count = positive(params, "MaxCount")?.unwrap_or(1);
    if count > MAX_COUNT {
        return Err(ApiError::invalid_param(
            "MaxCount",
            format!("{count} machines asked for, at most {MAX_COUNT} at once"),
        ));
    }
    boolean(params, "EnableUS3")?;
    Ok(CreateSpec {
        region,
        zone,
        project_id,
        gpu_type,
        gpus,
        cpu,
        memory_mb,
        image_id,
        disks,
        charge_type,
        quantity,
        name,
        remark,
        password,
        cpu_platform,
        count,
    })
}

fn required_positive(params: &Params, name: &str) -> Result<u64, ApiError> {
    positive(params, name)?.ok_or_else(|| ApiError::missing_param(name))
}

fn gpu_type(name: &str) -> Result<&'static GpuType, ApiError> {
    GPU_TYPES.iter().find(|t| t.name == name).ok_or_else(|| {
        let known: Vec<&str> = GPU_TYPES.iter().map(|t| t.name).collect();
        ApiError::invalid_param(
            "GpuType",
            format!("{name:?} is not a GPU type (one of {})", known.join(", ")),
        )
    })
}

/// The `CpuPlatform` the machine gets: `Auto` (or nothing) picks AMD where the type allows it.
fn cpu_platform(asked: Option<&str>, gpu_type: &GpuType) -> Result<String, ApiError> {
    let invalid = |why: String| ApiError::invalid_param("MinimalCpuPlatform", why);
    let intel = || "Intel/Cascadelake".to_owned();
    let amd = || "Amd/Epyc2".to_owned();
    match asked {
        None | Some("Auto") if gpu_type.intel_only => Ok(intel()),
        None | Some("Auto") => Ok(amd()),
        Some("Intel/Auto") => Ok(intel()),
        Some(platform) if platform.starts_with("Amd/") && gpu_type.intel_only => Err(invalid(
            format!("{platform}: {} machines are Intel only", gpu_type.name),
        )),
        Some("Amd/Auto") => Ok(amd()),
        Some(platform) if platform.starts_with("Intel/") || platform.starts_with("Amd/") => {
            Ok(platform.to_owned())
        }
        Some(other) => Err(invalid(format!(
            "{other:?}: Auto, Intel/Auto, Amd/Auto or a named Intel/ or Amd/ platform"
        ))),
    }
}

fn charge_type(asked: Option<&str>, gpu_type: &GpuType) -> Result<&'static str, ApiError> {
    let Some(asked) = asked else {
        return Ok(CHARGE_TYPES[0]);
    };
    let charge_type = CHARGE_TYPES
        .into_iter()
        .find(|t| *t == asked)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "ChargeType",
                format!("{asked:?} is not one of {}", CHARGE_TYPES.join(", ")),
            )
        })?;
    if charge_type == "Spot" && !gpu_type.spot {
        return Err(ApiError::invalid_param(
            "ChargeType",
            format!("Spot is not offered for {} machines", gpu_type.name),
        ));
    }
    Ok(charge_type)
}

fn name(asked: Option<&str>) -> Result<String, ApiError> {
    let Some(name) = asked else {
        return Ok(DEFAULT_NAME.to_owned());
    };
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(ApiError::invalid_param(
            "Name",
            format!("{chars} characters, at most {MAX_NAME_CHARS}"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "_.,:-".contains(*c)))
    {
        return Err(ApiError::invalid_param(
            "Name",
            format!("{bad:?} is not allowed (letters, digits, Chinese characters and _ . , : -)"),
        ));
    }
    Ok(name.to_owned())
}

/// `Disks.N.IsBoot`, `Disks.N.Type`, `Disks.N.Size`: each disk complete, exactly one boot disk.
fn disks(params: &Params, gpu_type: &GpuType) -> Result<Vec<DiskSpec>, ApiError> {
    let mut indices = BTreeSet::new();
    for name in params.keys() {
        if let Some((index, _field)) = name
            .strip_prefix("Disks.")
            .and_then(|rest| rest.split_once('.'))
            && let Ok(index) = index.parse::<usize>()
        {
            indices.insert(index);
        }
    }
    if indices.is_empty() {
        return Err(ApiError::missing_param("Disks (at least the boot disk)"));
    }
    let mut disks = Vec::with_capacity(indices.len());
    for index in indices {
        let field = |f: &str| format!("Disks.{index}.{f}");
        let boot = boolean(params, &field("IsBoot"))?
            .ok_or_else(|| ApiError::missing_param(&field("IsBoot")))?;
        let kind = required(params, &field("Type"))?;
        if !DISK_TYPES.contains(&kind) {
            return Err(ApiError::invalid_param(
                &field("Type"),
                format!("{kind:?} is not one of {}", DISK_TYPES.join(", ")),
            ));
        }
        if kind == "CLOUD_RSSD" && gpu_type.name != RSSD_ONLY_ON {
            return Err(ApiError::invalid_param(
                &field("Type"),
                format!("CLOUD_RSSD is offered on {RSSD_ONLY_ON} machines only"),
            ));
        }
        let size_gb = required_positive(params, &field("Size"))?;
        disks.push(DiskSpec {
            boot,
            kind: kind.to_owned(),
            size_gb,
        });
    }
    let boot_disks = disks.iter().filter(|d| d.boot).count();
    if boot_disks != 1 {
        return Err(ApiError::invalid_param(
            "Disks",
            format!("exactly one disk must be the boot disk (IsBoot true), {boot_disks} are"),
        ));
    }
    disks.sort_by_key(|d| !d.boot);
    Ok(disks)
}

/// Where a new machine lives and how it is reached.
#[derive(Debug)]
pub(super) struct Placement<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub project_id: &'a str,
    /// Numbers the machine's addresses: distinct for each machine the simulator makes.
    pub serial: u64,
    /// Unix seconds.
    pub now: i64,
}

/// The new machine's fields (before `Initializing` is set and the defaults are filled): what was
/// asked for, addresses from the simulator's ranges (public 117.50.200.0–117.50.249.255 as
/// `Bgp`, private 10.60.100.0–10.60.249.255), a login command and a disk set.
pub(super) fn instance_fields(spec: &CreateSpec, at: &Placement<'_>) -> Map<String, Value> {
    let n = at.serial;
    let public_ip = format!("117.50.{}.{}", 200 + (n / 254) % 50, n % 254 + 1);
    let private_ip = format!("10.60.{}.{}", 100 + (n / 254) % 150, n % 254 + 1);
    let network = short_digest(&format!("{}/{}/{}", at.owner, at.project_id, spec.region));
    let mac = format!(
        "52:54:00:{:02X}:{:02X}:{:02X}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    );
    let disks: Vec<Value> = spec
        .disks
        .iter()
        .enumerate()
        .map(|(i, disk)| {
            json!({
                "DiskId": format!("bsi-{}", short_digest(&format!("{}/{i}", at.id))),
                "DiskType": disk.kind,
                "Drive": format!("vd{}", char::from(b'a' + (i % 26) as u8)),
                "Size": disk.size_gb,
                "IsBoot": if disk.boot { "True" } else { "False" },
                "Encrypted": "False",
                "Name": if disk.boot { "system".to_owned() } else { format!("data-{i}") },
            })
        })
        .collect();
    let mut fields = json!({
        "UHostId": at.id,
        "Owner": at.owner,
        "ProjectId": at.project_id,
        "Name": spec.name,
        "Remark": spec.remark,
        "Region": spec.region,
        "Zone": spec.zone,
        "MachineType": "G",
        "CPU": spec.cpu,
        "Memory": spec.memory_mb,
        "GPU": spec.gpus,
        "GpuType": spec.gpu_type.name,
        "GraphicsMemory": {"Value": spec.gpu_type.memory_gb, "Rate": 1},
        "CpuPlatform": spec.cpu_platform,
        "ChargeType": spec.charge_type,
        "IsSpot": spec.charge_type == "Spot",
        "CompShareImageId": spec.image_id,
        "CreateTime": at.now,
        "StartTime": at.now,
        "UpdateTime": at.now,
        "SshLoginCommand": format!("ssh root@{public_ip} -p 22"),
        "IPSet": [
            {"IP": public_ip, "Type": "Bgp", "IPMode": "IPv4",
             "IPId": format!("eip-{}", short_digest(&format!("{}/eip", at.id))),
             "Bandwidth": 100, "Weight": 50, "Default": "true", "Mac": "",
             "VPCId": "", "SubnetId": "", "NetworkInterfaceId": ""},
            {"IP": private_ip, "Type": "Private", "IPMode": "IPv4", "IPId": "",
             "Bandwidth": 0, "Weight": 0, "Default": "", "Mac": mac,
             "VPCId": format!("uvnet-{network}"), "SubnetId": format!("subnet-{network}"),
             "NetworkInterfaceId": ""},
        ],
        "DiskSet": disks,
        "TotalDiskSpace": spec.disks.iter().map(|d| d.size_gb).sum::<u64>(),
    });
    let fields = fields.as_object_mut().expect("built as an object");
    if let Some(password) = &spec.password {
        fields.insert("Password".to_owned(), json!(password));
    }
    match spec.charge_type {
        "Month" => {
            fields.insert(
                "ExpireTime".to_owned(),
                json!(at.now + 30 * DAY_SECS * spec.quantity as i64),
            );
        }
        "Day" => {
            fields.insert(
                "ExpireTime".to_owned(),
                json!(at.now + DAY_SECS * spec.quantity as i64),
            );
        }
        _ => {}
    }
    std::mem::take(fields)
}

/// Eight hex digits standing for `text`.
fn short_digest(text: &str) -> String {
    hex::encode(&Sha1::digest(text.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page's Python example, as the SDK sends it.
    fn example() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Region", "cn-wlcb"),
            ("Zone", "cn-wlcb-01"),
            ("MachineType", "G"),
            ("CompShareImageId", "compshareImage-xxxx"),
            ("GPU", "1"),
            ("GpuType", "4090"),
            ("CPU", "16"),
            ("Memory", "65536"),
            ("ChargeType", "Dynamic"),
            ("Name", "my-instance"),
            ("Disks.0.IsBoot", "true"),
            ("Disks.0.Size", "200"),
            ("Disks.0.Type", "CLOUD_SSD"),
        ]
    }

    fn with(changes: &[(&'static str, &'static str)]) -> Params {
        let mut params: Params = example()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (k, v) in changes {
            if v.is_empty() {
                params.remove(*k);
            } else {
                params.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        params
    }

    fn error(changes: &[(&'static str, &'static str)]) -> ApiError {
        parse(&with(changes)).unwrap_err()
    }

    #[test]
    fn the_pages_example_is_accepted_with_its_defaults() {
        let spec = parse(&with(&[])).unwrap();
        assert_eq!(spec.gpu_type.name, "4090");
        assert_eq!((spec.gpus, spec.cpu, spec.memory_mb), (1, 16, 65536));
        assert_eq!(spec.charge_type, "Dynamic");
        assert_eq!(spec.name, "my-instance");
        assert_eq!(spec.count, 1);
        assert_eq!(spec.cpu_platform, "Amd/Epyc2");
        assert_eq!(
            spec.disks,
            [DiskSpec {
                boot: true,
                kind: "CLOUD_SSD".into(),
                size_gb: 200
            }]
        );
        let spec = parse(&with(&[
            ("ChargeType", ""),
            ("Name", ""),
            ("MachineType", ""),
        ]))
        .unwrap();
        assert_eq!(spec.charge_type, "Month");
        assert_eq!(spec.name, "host");
    }

    #[test]
    fn required_parameters_are_named() {
        for name in [
            "Region",
            "Zone",
            "GpuType",
            "GPU",
            "CPU",
            "Memory",
            "CompShareImageId",
        ] {
            assert_eq!(
                error(&[(name, "")]),
                ApiError::new(210, format!("Missing params: {name}"))
            );
        }
        let no_disks = error(&[
            ("Disks.0.IsBoot", ""),
            ("Disks.0.Size", ""),
            ("Disks.0.Type", ""),
        ]);
        assert_eq!(no_disks.code, 210);
        assert!(no_disks.message.contains("Disks"), "{}", no_disks.message);
        assert_eq!(
            error(&[("Disks.1.IsBoot", "false"), ("Disks.1.Size", "100")]),
            ApiError::new(210, "Missing params: Disks.1.Type")
        );
    }

    #[test]
    fn gpu_cpu_and_memory_follow_the_gpu_table() {
        assert!(parse(&with(&[("GPU", "10")])).is_ok());
        assert_eq!(
            error(&[("GPU", "11")]).message,
            "Params [GPU] not available: 11 GPUs asked for, a 4090 machine has 1 to 10"
        );
        assert!(parse(&with(&[("GpuType", "A800"), ("GPU", "8")])).is_ok());
        assert_eq!(error(&[("GpuType", "A800"), ("GPU", "9")]).code, 230);
        assert_eq!(error(&[("GPU", "0")]).code, 230);
        assert_eq!(error(&[("GPU", "one")]).code, 230);
        let unknown = error(&[("GpuType", "4080")]);
        assert_eq!(unknown.code, 230);
        assert!(
            unknown
                .message
                .contains("\"4080\" is not a GPU type (one of 4090, 4090_48G")
        );
        assert_eq!(
            error(&[("GpuType", "3080Ti"), ("CPU", "16")]).message,
            "Params [CPU] not available: 16 cores asked for, a 3080Ti machine has at most 12"
        );
        assert_eq!(
            error(&[("Memory", "65000")]).message,
            "Params [Memory] not available: 65000 MB is not a multiple of 1024"
        );
        assert_eq!(error(&[("Memory", "697344")]).code, 230);
        assert!(parse(&with(&[("Memory", "696320")])).is_ok());
    }

    #[test]
    fn disks_need_exactly_one_boot_disk_of_a_known_type() {
        let two_boot = error(&[
            ("Disks.1.IsBoot", "True"),
            ("Disks.1.Size", "100"),
            ("Disks.1.Type", "CLOUD_SSD"),
        ]);
        assert_eq!(
            two_boot.message,
            "Params [Disks] not available: exactly one disk must be the boot disk (IsBoot true), 2 are"
        );
        assert_eq!(
            error(&[("Disks.0.IsBoot", "false")]).message,
            "Params [Disks] not available: exactly one disk must be the boot disk (IsBoot true), 0 are"
        );
        assert_eq!(error(&[("Disks.0.IsBoot", "yes")]).code, 230);
        assert_eq!(error(&[("Disks.0.Type", "SSD")]).code, 230);
        assert_eq!(error(&[("Disks.0.Size", "0")]).code, 230);
        assert_eq!(
            error(&[("Disks.0.Type", "CLOUD_RSSD")]).message,
            "Params [Disks.0.Type] not available: CLOUD_RSSD is offered on A800 machines only"
        );
        assert!(
            parse(&with(&[
                ("GpuType", "A800"),
                ("Disks.0.Type", "CLOUD_RSSD")
            ]))
            .is_ok()
        );
        // A data disk listed first still comes after the boot disk.
        let spec = parse(&with(&[
            ("Disks.0.IsBoot", "False"),
            ("Disks.1.IsBoot", "TRUE"),
            ("Disks.1.Size", "50"),
            ("Disks.1.Type", "CLOUD_NORMAL"),
        ]))
        .unwrap();
        assert!(spec.disks[0].boot);
        assert_eq!(spec.disks[0].size_gb, 50);
    }

    #[test]
    fn charge_types_and_spot_follow_the_page() {
        for charge in CHARGE_TYPES {
            assert!(parse(&with(&[("ChargeType", charge)])).is_ok(), "{charge}");
        }
        assert_eq!(error(&[("ChargeType", "Hourly")]).code, 230);
        for gpu in ["4090_48G", "A800", "H20", "P40", "2080"] {
            let refused = error(&[("GpuType", gpu), ("ChargeType", "Spot")]);
            assert_eq!(
                refused.message,
                format!(
                    "Params [ChargeType] not available: Spot is not offered for {gpu} machines"
                )
            );
        }
        assert!(parse(&with(&[("GpuType", "A100"), ("ChargeType", "Spot")])).is_ok());
        assert_eq!(error(&[("Quantity", "0")]).code, 230);
        assert_eq!(parse(&with(&[("Quantity", "3")])).unwrap().quantity, 3);
    }

    #[test]
    fn name_machine_type_platform_password_and_count_are_checked() {
        let long: &'static str = "n".repeat(64).leak();
        assert_eq!(
            error(&[("Name", long)]).message,
            "Params [Name] not available: 64 characters, at most 63"
        );
        assert!(parse(&with(&[("Name", &long[..63])])).is_ok());
        assert!(parse(&with(&[("Name", "训练_v1.2,a:b-c")])).is_ok());
        assert_eq!(error(&[("Name", "a/b")]).code, 230);
        assert_eq!(error(&[("MachineType", "N")]).code, 230);
        assert_eq!(
            parse(&with(&[("GpuType", "A800")])).unwrap().cpu_platform,
            "Intel/Cascadelake"
        );
        assert_eq!(
            error(&[("GpuType", "A800"), ("MinimalCpuPlatform", "Amd/Auto")]).message,
            "Params [MinimalCpuPlatform] not available: Amd/Auto: A800 machines are Intel only"
        );
        assert_eq!(error(&[("MinimalCpuPlatform", "Arm")]).code, 230);
        assert_eq!(
            parse(&with(&[("MinimalCpuPlatform", "Intel/IceLake")]))
                .unwrap()
                .cpu_platform,
            "Intel/IceLake"
        );
        assert_eq!(
            parse(&with(&[("Password", "dWNsb3VkLmNu")]))
                .unwrap()
                .password
                .as_deref(),
            Some("dWNsb3VkLmNu")
        );
        assert_eq!(
            error(&[("Password", "not base64!")]).message,
            "Params [Password] not available: not Base64 (the password must be sent Base64-encoded)"
        );
        assert_eq!(parse(&with(&[("MaxCount", "3")])).unwrap().count, 3);
        assert_eq!(error(&[("MaxCount", "101")]).code, 230);
        assert_eq!(error(&[("EnableUS3", "maybe")]).code, 230);
    }

    #[test]
    fn a_new_machine_has_what_was_asked_for_addresses_and_a_login() {
        let spec = parse(&with(&[
            ("Remark", "owner=k8s:uid-1"),
            ("Password", "dWNsb3VkLmNu"),
            ("ChargeType", "Day"),
            ("Quantity", "2"),
            ("Disks.1.IsBoot", "false"),
            ("Disks.1.Size", "500"),
            ("Disks.1.Type", "CLOUD_SSD"),
        ]))
        .unwrap();
        let fields = instance_fields(
            &spec,
            &Placement {
                id: "uhost-0a1b2c3d",
                owner: "pub",
                project_id: "org-1",
                serial: 255,
                now: 1_700_000_000,
            },
        );
        assert_eq!(fields["UHostId"], "uhost-0a1b2c3d");
        assert_eq!(fields["Owner"], "pub");
        assert_eq!(fields["ProjectId"], "org-1");
        assert_eq!(fields["Remark"], "owner=k8s:uid-1");
        assert_eq!(fields["Password"], "dWNsb3VkLmNu");
        assert_eq!(fields["GpuType"], "4090");
        assert_eq!(fields["GraphicsMemory"], json!({"Value": 24, "Rate": 1}));
        assert_eq!(fields["IsSpot"], false);
        assert_eq!(fields["ExpireTime"], 1_700_000_000 + 2 * DAY_SECS);
        assert_eq!(fields["IPSet"][0]["IP"], "117.50.201.2");
        assert_eq!(fields["IPSet"][0]["Type"], "Bgp");
        assert_eq!(fields["IPSet"][1]["IP"], "10.60.101.2");
        assert_eq!(fields["IPSet"][1]["Type"], "Private");
        assert_eq!(fields["SshLoginCommand"], "ssh root@117.50.201.2 -p 22");
        assert_eq!(fields["DiskSet"][0]["IsBoot"], "True");
        assert_eq!(fields["DiskSet"][1]["Drive"], "vdb");
        assert_eq!(fields["TotalDiskSpace"], 700);
    }
}
