//! The full shape of a `UHostSet` element, as the vendor's page for `DescribeCompShareInstance`
//! lists it, with a sensible default for every field a fixture leaves out.
//!
//! Instances are kept as JSON objects in the vendor's PascalCase so that a real answer can be
//! pasted into a fixture as it is; fields given there win over these defaults, and fields the page
//! does not list are served as given.

use serde_json::{Map, Value, json};

/// Who owns an instance (a public key). Placement data for the simulator: never served.
pub(super) const OWNER: &str = "Owner";
/// The project an instance belongs to. The vendor's shape does not list it, so it is placement
/// data for the simulator and never served either (a client must not come to rely on it).
pub(super) const PROJECT_ID: &str = "ProjectId";
pub(super) const UHOST_ID: &str = "UHostId";
pub(super) const REGION: &str = "Region";
pub(super) const ZONE: &str = "Zone";
pub(super) const UPDATE_TIME: &str = "UpdateTime";
/// Business group; a request filter (`Tag`) matches it. Not in the vendor's list of fields, so it
/// gets no default: set it in the fixture to use the filter.
pub(super) const TAG: &str = "Tag";
pub(super) const IP_SET: &str = "IPSet";

/// Fields that older answers send as numeric strings (see `docs/compshare-api.md`); the
/// `retcode-as-string` fault sends them that way.
pub(super) const NUMBERS_SENT_AS_STRINGS: [&str; 3] = ["Memory", "CreateTime", "ExpireTime"];

const THIRTY_DAYS: i64 = 30 * 24 * 3600;

/// Adds every field of the vendor's shape that `instance` lacks. `now` (Unix seconds) dates the
/// instance: created, started and updated now, expiring in thirty days.
pub(super) fn fill_defaults(instance: &mut Map<String, Value>, now: i64) {
    let id = instance.get(UHOST_ID).cloned().unwrap_or(Value::Null);
    let zone = match instance.get(REGION) {
        Some(Value::String(region)) => Value::String(format!("{region}-01")),
        _ => Value::Null,
    };
    let defaults = [
        ("Name", id),
        ("State", json!("Running")),
        ("Zone", zone),
        ("MachineType", json!("G")),
        ("CPU", json!(16)),
        ("Memory", json!(65536)),
        ("GPU", json!(1)),
        ("GpuType", json!("4090")),
        ("CpuPlatform", json!("Amd/Epyc2")),
        ("ChargeType", json!("Dynamic")),
        ("CreateTime", json!(now)),
        ("ExpireTime", json!(now + THIRTY_DAYS)),
        ("IsExpire", json!("No")),
        ("AutoRenew", json!("No")),
        ("IsSpot", json!(false)),
        ("CompShareImageId", json!("compshareImage-ubuntu2204")),
        ("CompShareImageName", json!("Ubuntu 22.04")),
        ("CompShareImageType", json!("System")),
        ("InstanceType", json!("UHost")),
        ("OsName", json!("Ubuntu 22.04 64位")),
        ("OsType", json!("Linux")),
        ("Password", json!("dWNsb3VkLmNu")),
        ("SshLoginCommand", json!("")),
        ("IPSet", json!([])),
        ("DiskSet", json!([])),
        ("Softwares", json!([])),
        ("GraphicsMemory", json!({"Value": 24, "Rate": 1})),
        ("InstancePrice", json!(1.88)),
        ("DiskPrice", json!(0.0)),
        ("TotalDiskSpace", json!(0)),
        ("FileBrowserPassword", json!("")),
        ("CompShareImageStatus", json!("Available")),
        ("CompShareImageOwnerAlias", json!("Official")),
        ("CompShareImageAuthor", json!("")),
        ("BasicImageId", json!("")),
        ("BasicImageName", json!("")),
        ("Remark", json!("")),
        ("SupportWithoutGpuStart", json!(true)),
        ("CompShareImagePrice", json!(0.0)),
        ("DiskPriceInfo", json!([])),
        ("DiscountType", json!(0)),
        ("SchedulerStopTime", json!(0)),
        ("StartTime", json!(now)),
        ("StopTime", json!(0)),
        ("UpdateTime", json!(now)),
        ("ReleaseTime", json!(0)),
        ("AttachUs3Time", json!(0)),
        (
            "MonitorMessages",
            json!({"CpuUsage": 0, "MemoryUsage": 0, "GpuUsage": 0}),
        ),
    ];
    for (field, value) in defaults {
        instance.entry(field).or_insert(value);
    }
}

/// Unix seconds now.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the `UHostSet` element on the vendor's page, in its order.
    const SEED_FIELDS: &[&str] = &[
        "UHostId",
        "Name",
        "State",
        "Zone",
        "Region",
        "MachineType",
        "CPU",
        "Memory",
        "GPU",
        "GpuType",
        "CpuPlatform",
        "ChargeType",
        "CreateTime",
        "ExpireTime",
        "IsExpire",
        "AutoRenew",
        "IsSpot",
        "CompShareImageId",
        "CompShareImageName",
        "CompShareImageType",
        "InstanceType",
        "OsName",
        "OsType",
        "Password",
        "SshLoginCommand",
        "IPSet",
        "DiskSet",
        "Softwares",
        "GraphicsMemory",
        "InstancePrice",
        "DiskPrice",
        "TotalDiskSpace",
        "FileBrowserPassword",
        "CompShareImageStatus",
        "CompShareImageOwnerAlias",
        "CompShareImageAuthor",
        "BasicImageId",
        "BasicImageName",
        "Remark",
        "SupportWithoutGpuStart",
        "CompShareImagePrice",
        "DiskPriceInfo",
        "DiscountType",
        "SchedulerStopTime",
        "StartTime",
        "StopTime",
        "UpdateTime",
        "ReleaseTime",
        "AttachUs3Time",
        "MonitorMessages",
    ];

    fn minimal() -> Map<String, Value> {
        json!({"UHostId": "uhost-1", "Region": "cn-wlcb"})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn every_field_of_the_vendors_shape_gets_a_value() {
        let mut instance = minimal();
        fill_defaults(&mut instance, 1_700_000_000);
        for field in SEED_FIELDS {
            let value = instance.get(*field);
            assert!(
                value.is_some_and(|v| !v.is_null()),
                "{field} has no default"
            );
        }
        assert_eq!(instance["Name"], "uhost-1");
        assert_eq!(instance["Zone"], "cn-wlcb-01");
        assert_eq!(instance["IsSpot"], false);
        assert_eq!(instance["UpdateTime"], 1_700_000_000);
        assert!(instance["GraphicsMemory"]["Value"].is_number());
        assert!(!instance.contains_key(OWNER));
        assert!(!instance.contains_key(PROJECT_ID));
    }

    #[test]
    fn given_fields_win_and_unknown_fields_stay() {
        let mut instance = minimal();
        instance.insert("State".into(), json!("Install Fail"));
        instance.insert("IPSet".into(), Value::Null);
        instance.insert("SomethingNew".into(), json!([1, 2]));
        fill_defaults(&mut instance, 0);
        assert_eq!(instance["State"], "Install Fail");
        assert_eq!(instance["IPSet"], Value::Null);
        assert_eq!(instance["SomethingNew"], json!([1, 2]));
    }
}
