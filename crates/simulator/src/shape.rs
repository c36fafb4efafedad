//! The full shape of a `UHostSet` element, as the vendor's page for `DescribeCompShareInstance`
//! lists it and as the official Go SDK models it (`CompShareInstanceSet` in ucloud-sdk-go's
//! `services/ucompshare/models.go`, every field not marked deprecated), with a plausible default
//! for every field a fixture leaves out.
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
/// Business group; a request filter (`Tag`) matches it. `Default` unless the fixture says otherwise,
/// as for machines made without one.
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
            json!({"CpuUsageRate": "0%", "MemUsageRate": "0%", "GpuInfo": []}),
        ),
        // The Go SDK's model has these too.
        ("CompShareImageBillId", json!("")),
        ("CpuArch", json!("x86_64")),
        ("PostPayPowerOffBillingResource", json!([])),
        ("StopSchedulerTime", json!(0)),
        (TAG, json!("Default")),
        ("WithoutGpuSpec", json!({"Cpu": 0, "Gpu": 0, "Memory": 0})),
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

    /// Every field of the official Go SDK's `CompShareInstanceSet` not marked deprecated
    /// (ucloud-sdk-go `services/ucompshare/models.go`), in its order, with the JSON kind of its Go
    /// type: a client decoding into that struct finds each field, and finds it decodable.
    const SDK_FIELDS: &[(&str, Kind)] = &[
        ("AutoRenew", Kind::Str),
        ("CPU", Kind::Num),
        ("ChargeType", Kind::Str),
        ("CompShareImageBillId", Kind::Str),
        ("CompShareImageId", Kind::Str),
        ("CompShareImageName", Kind::Str),
        ("CompShareImageOwnerAlias", Kind::Str),
        ("CompShareImagePrice", Kind::Num),
        ("CompShareImageStatus", Kind::Str),
        ("CompShareImageType", Kind::Str),
        ("CpuArch", Kind::Str),
        ("CpuPlatform", Kind::Str),
        ("CreateTime", Kind::Num),
        ("DiscountType", Kind::Num),
        ("DiskPriceInfo", Kind::List),
        ("DiskSet", Kind::List),
        ("ExpireTime", Kind::Num),
        ("GPU", Kind::Num),
        ("GpuType", Kind::Str),
        ("GraphicsMemory", Kind::Obj),
        ("IPSet", Kind::List),
        ("InstancePrice", Kind::Num),
        ("InstanceType", Kind::Str),
        ("IsExpire", Kind::Str),
        ("MachineType", Kind::Str),
        ("Memory", Kind::Num),
        ("MonitorMessages", Kind::Obj),
        ("Name", Kind::Str),
        ("OsName", Kind::Str),
        ("OsType", Kind::Str),
        ("Password", Kind::Str),
        ("PostPayPowerOffBillingResource", Kind::List),
        ("ReleaseTime", Kind::Num),
        ("Remark", Kind::Str),
        ("Softwares", Kind::List),
        ("SshLoginCommand", Kind::Str),
        ("StartTime", Kind::Num),
        ("State", Kind::Str),
        ("StopSchedulerTime", Kind::Num),
        ("StopTime", Kind::Num),
        ("SupportWithoutGpuStart", Kind::Bool),
        ("Tag", Kind::Str),
        ("TotalDiskSpace", Kind::Num),
        ("UHostId", Kind::Str),
        ("UpdateTime", Kind::Num),
        ("WithoutGpuSpec", Kind::Obj),
        ("Zone", Kind::Str),
    ];

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Str,
        Num,
        Bool,
        List,
        Obj,
    }

    fn kind(value: &Value) -> Option<Kind> {
        match value {
            Value::String(_) => Some(Kind::Str),
            Value::Number(_) => Some(Kind::Num),
            Value::Bool(_) => Some(Kind::Bool),
            Value::Array(_) => Some(Kind::List),
            Value::Object(_) => Some(Kind::Obj),
            Value::Null => None,
        }
    }

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
        for (field, expected) in SDK_FIELDS {
            assert_eq!(
                instance.get(*field).and_then(kind),
                Some(*expected),
                "{field}: not the SDK's type"
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
