//! The parts of `DescribeCompShareInstance` answers the operator reads.
//!
//! Only stable facts are deserialized: volatile fields (`UpdateTime`, `MonitorMessages`, prices)
//! change without the instance changing, so leaving them out makes "did the instance change?" a plain
//! equality test and keeps memory small. Text fields are `CompactString`s: the poller keeps one
//! instance per watched resource, and most of these values (zones, states, GPU models) fit inline
//! without an allocation. Unknown fields are ignored, and numbers are read leniently
//! (older answers send some of them as strings).

use std::net::IpAddr;

use compact_str::CompactString;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::lenient;

/// One element of `UHostSet`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct Instance {
    #[serde(deserialize_with = "lenient::string")]
    pub u_host_id: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub name: CompactString,
    /// Verbatim: an open set (`Running`, `Install Fail`, `""` when unreadable, and future values).
    #[serde(deserialize_with = "lenient::string")]
    pub state: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub zone: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub region: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub machine_type: CompactString,
    #[serde(rename = "CPU", deserialize_with = "lenient::opt_i64")]
    pub cpu: Option<i64>,
    /// MiB (the API says MB; 65536 is a 64 GiB machine).
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub memory: Option<i64>,
    #[serde(rename = "GPU", deserialize_with = "lenient::opt_i64")]
    pub gpu: Option<i64>,
    #[serde(deserialize_with = "lenient::string")]
    pub gpu_type: CompactString,
    pub graphics_memory: Option<GraphicsMemory>,
    #[serde(deserialize_with = "lenient::string")]
    pub charge_type: CompactString,
    /// Unix seconds.
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub create_time: Option<i64>,
    /// Unix seconds.
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub expire_time: Option<i64>,
    /// `Yes` / `No`.
    #[serde(deserialize_with = "lenient::string")]
    pub is_expire: CompactString,
    /// `Yes` / `No`.
    #[serde(deserialize_with = "lenient::string")]
    pub auto_renew: CompactString,
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub is_spot: Option<bool>,
    #[serde(deserialize_with = "lenient::string")]
    pub comp_share_image_id: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub comp_share_image_name: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub comp_share_image_type: CompactString,
    /// `UHost` or `Container`.
    #[serde(deserialize_with = "lenient::string")]
    pub instance_type: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub os_name: CompactString,
    #[serde(deserialize_with = "lenient::string")]
    pub os_type: CompactString,
    /// Base64 in the answer; never shown, logged or put in status.
    pub password: Option<Password>,
    #[serde(deserialize_with = "lenient::string")]
    pub ssh_login_command: CompactString,
    #[serde(rename = "IPSet", deserialize_with = "lenient::seq")]
    pub ip_set: Vec<IpInfo>,
    #[serde(deserialize_with = "lenient::seq")]
    pub softwares: Vec<Software>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct GraphicsMemory {
    /// GB per card.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub value: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct IpInfo {
    #[serde(rename = "IP", deserialize_with = "lenient::string")]
    pub ip: CompactString,
    /// `Internation` (sic) and `Bgp` are public, `Private` is internal.
    #[serde(deserialize_with = "lenient::string")]
    pub r#type: String,
}

/// Whether an address is reachable from outside the cloud's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    External,
    Internal,
}

impl IpInfo {
    /// The documented types decide; an unknown type is judged by the address itself, so a new type
    /// name from the API neither hides an address nor publishes a private one.
    pub fn reach(&self) -> Reach {
        match self.r#type.as_str() {
            "Internation" | "Bgp" => Reach::External,
            "Private" => Reach::Internal,
            _ => match self.ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4))
                    if v4.is_private()
                        || v4.is_loopback()
                        || v4.is_link_local()
                        || is_shared_address_space(v4) =>
                {
                    Reach::Internal
                }
                Ok(IpAddr::V6(v6))
                    if v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local() =>
                {
                    Reach::Internal
                }
                _ => Reach::External,
            },
        }
    }
}

/// 100.64.0.0/10 (RFC 6598), the carrier-grade NAT range clouds use inside their networks.
fn is_shared_address_space(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (b & 0xc0) == 64
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "PascalCase")]
pub struct Software {
    #[serde(deserialize_with = "lenient::string")]
    pub name: CompactString,
    #[serde(rename = "URL", deserialize_with = "lenient::string")]
    pub url: CompactString,
}

/// The instance's login password as the API sends it (Base64). Its `Debug` output is redacted.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct Password(SecretString);

impl Password {
    /// The decoded password, or `None` when the API's value is not Base64 of UTF-8 text.
    pub fn decode(&self) -> Option<SecretString> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.0.expose_secret().trim())
            .ok()?;
        String::from_utf8(bytes).ok().map(SecretString::from)
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl From<&str> for Password {
    fn from(base64: &str) -> Self {
        Password(SecretString::from(base64))
    }
}

/// The answer to `DescribeCompShareInstance`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DescribeResponse {
    #[serde(deserialize_with = "lenient::opt_i64")]
    pub total_count: Option<i64>,
    #[serde(deserialize_with = "lenient::seq")]
    pub u_host_set: Vec<Instance>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_seed_pages_example() {
        let answer = json!({
            "UHostId": "uhost-xxxx", "Name": "my-gpu-instance", "State": "Running",
            "Zone": "cn-wlcb-01", "Region": "cn-wlcb", "MachineType": "G", "CPU": 16,
            "Memory": 65536, "GPU": 1, "GpuType": "4090", "CpuPlatform": "Amd/Epyc2",
            "ChargeType": "Month", "CreateTime": 1712563200, "ExpireTime": 1715155200,
            "IsExpire": "No", "IsSpot": false, "CompShareImageId": "compshareImage-xxxx",
            "CompShareImageName": "PyTorch 2.1", "CompShareImageType": "System",
            "InstanceType": "Container", "OsType": "Linux", "Password": "dWNsb3VkLmNu",
            "SshLoginCommand": "ssh root@x.x.x.x -p 60022", "IPSet": [], "DiskSet": [],
            "SupportWithoutGpuStart": true
        });
        let i: Instance = serde_json::from_value(answer).unwrap();
        assert_eq!(i.u_host_id, "uhost-xxxx");
        assert_eq!(i.cpu, Some(16));
        assert_eq!(i.memory, Some(65536));
        assert_eq!(i.is_spot, Some(false));
        assert_eq!(i.instance_type, "Container");
        use secrecy::ExposeSecret as _;
        let password = i.password.as_ref().and_then(Password::decode).unwrap();
        assert_eq!(password.expose_secret(), "ucloud.cn");
    }

    #[test]
    fn numbers_as_strings_nulls_and_unknown_fields_are_accepted() {
        let i: Instance = serde_json::from_value(json!({
            "UHostId": "uhost-1", "Memory": "32768", "CPU": "8", "GPU": 2.0, "CreateTime": "",
            "IsSpot": "true", "GraphicsMemory": {"Value": "24", "Rate": 1}, "IPSet": null,
            "Softwares": [{"Name": "JupyterLab", "URL": "https://x", "Port": 8888}],
            "MonitorMessages": {"CPU": 3}, "SomethingNew": [1, 2, 3], "Name": null,
        }))
        .unwrap();
        assert_eq!(i.memory, Some(32768));
        assert_eq!(i.cpu, Some(8));
        assert_eq!(i.gpu, Some(2));
        assert_eq!(i.create_time, None);
        assert_eq!(i.is_spot, Some(true));
        assert_eq!(i.graphics_memory.unwrap().value, Some(24.0));
        assert!(i.ip_set.is_empty());
        assert_eq!(i.name, "");
        assert_eq!(i.softwares[0].name, "JupyterLab");
    }

    #[test]
    fn ip_types_map_to_reach() {
        let ip = |ip: &str, t: &str| IpInfo {
            ip: ip.into(),
            r#type: t.into(),
        };
        assert_eq!(ip("1.2.3.4", "Internation").reach(), Reach::External);
        assert_eq!(ip("1.2.3.4", "Bgp").reach(), Reach::External);
        assert_eq!(ip("10.9.0.4", "Private").reach(), Reach::Internal);
        // Documented types win over the address's look.
        assert_eq!(ip("10.9.0.4", "Bgp").reach(), Reach::External);
        // Unknown types are judged by the address.
        assert_eq!(ip("192.168.1.1", "Vpc").reach(), Reach::Internal);
        assert_eq!(ip("100.64.0.1", "Cgnat").reach(), Reach::Internal);
        assert_eq!(ip("fd00::1", "Ipv6").reach(), Reach::Internal);
        assert_eq!(ip("8.8.8.8", "Anycast").reach(), Reach::External);
    }

    #[test]
    fn password_debug_is_redacted_and_bad_base64_decodes_to_none() {
        let p = Password::from("c2VjcmV0LXB3");
        assert!(!format!("{p:?}").contains("c2VjcmV0LXB3"));
        assert!(Password::from("not base64!").decode().is_none());
    }
}
