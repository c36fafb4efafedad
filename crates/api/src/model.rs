//! The parts of `DescribeCompShareInstance` answers the operator reads.
//!
//! Only stable facts are read: volatile fields (`UpdateTime`, `MonitorMessages`, prices) change
//! without the instance changing, so leaving them out makes "did the instance change?" a plain
//! equality test and keeps memory small. Text fields are `CompactString`s: the poller keeps one
//! instance per watched resource, and most of these values (zones, states, GPU models) fit inline
//! without an allocation.
//!
//! The envelope is strict (`UHostSet` must be a list, `TotalCount` a number), but each element is
//! read on its own and each of its fields on its own: numbers are read leniently (older answers
//! send some as strings), unknown fields are ignored, an optional field of an unexpected shape is
//! left out (and named in [`Instance::dropped_fields`]), and an element that cannot be read at all
//! is set aside as an [`UnreadableElement`] instead of failing the whole answer, so one odd
//! instance cannot blind every resource of its account.

use std::net::IpAddr;

use compact_str::CompactString;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::lenient::{self, Fields};

/// The states an instance passes through on its way somewhere.
pub const MOVING_STATES: [&str; 6] = [
    "Initializing",
    "Install",
    "Starting",
    "Stopping",
    "Rebooting",
    "Resizing",
];
pub const RUNNING: &str = "Running";
pub const STOPPED: &str = "Stopped";
pub const INSTALL_FAILED: &str = "Install Fail";

/// Where an instance's state (`State`, an open set) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `Running`.
    Running,
    /// `Stopped`.
    Stopped,
    /// On its way somewhere: one of [`MOVING_STATES`].
    Moving,
    /// `Install Fail`.
    InstallFailed,
    /// `""`: the API could not read the state.
    Unreadable,
    /// A state this crate does not know: not assumed settled.
    Unfamiliar,
}

impl Phase {
    pub fn of(state: &str) -> Phase {
        match state {
            RUNNING => Phase::Running,
            STOPPED => Phase::Stopped,
            INSTALL_FAILED => Phase::InstallFailed,
            "" => Phase::Unreadable,
            s if MOVING_STATES.contains(&s) => Phase::Moving,
            _ => Phase::Unfamiliar,
        }
    }
}

/// One element of `UHostSet`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance {
    pub u_host_id: CompactString,
    pub name: CompactString,
    /// Verbatim: an open set (`Running`, `Install Fail`, `""` when unreadable, and future values).
    pub state: CompactString,
    pub zone: CompactString,
    pub region: CompactString,
    pub machine_type: CompactString,
    pub cpu: Option<i64>,
    /// MiB (the API says MB; 65536 is a 64 GiB machine).
    pub memory: Option<i64>,
    pub gpu: Option<i64>,
    pub gpu_type: CompactString,
    pub graphics_memory: Option<GraphicsMemory>,
    pub charge_type: CompactString,
    /// Unix seconds.
    pub create_time: Option<i64>,
    /// Unix seconds.
    pub expire_time: Option<i64>,
    /// `Yes` / `No`.
    pub is_expire: CompactString,
    /// `Yes` / `No`.
    pub auto_renew: CompactString,
    pub is_spot: Option<bool>,
    pub comp_share_image_id: CompactString,
    pub comp_share_image_name: CompactString,
    pub comp_share_image_type: CompactString,
    /// `UHost` or `Container`.
    pub instance_type: CompactString,
    pub os_name: CompactString,
    pub os_type: CompactString,
    /// Base64 in the answer; never shown, logged or put in status.
    pub password: Option<Password>,
    pub ssh_login_command: CompactString,
    pub ip_set: Vec<IpInfo>,
    pub softwares: Vec<Software>,
    /// Free text a creator may leave on the machine (`CreateCompShareInstance`'s `Remark`).
    pub remark: CompactString,
    /// The business group.
    pub tag: CompactString,
    /// When a scheduled stop is due (Unix seconds); `None` or 0 when none is.
    pub stop_scheduler_time: Option<i64>,
    /// Fields of this element that had a shape the operator cannot read, left out.
    pub dropped_fields: Vec<&'static str>,
}

/// An element of `UHostSet` that cannot be used: not an object, no readable `UHostId`, or a
/// `State` that is not text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableElement {
    /// Its `UHostId`, when that much could be read.
    pub id: Option<CompactString>,
    /// What is wrong with it, naming the field.
    pub problem: String,
}

impl Instance {
    /// Reads one element of `UHostSet`.
    pub fn read(element: &Value) -> Result<Instance, UnreadableElement> {
        let unreadable = |id: Option<&CompactString>, problem: String| UnreadableElement {
            id: id.cloned(),
            problem,
        };
        let Some(map) = element.as_object() else {
            return Err(unreadable(
                None,
                format!("an element of UHostSet is {}, not an object", kind(element)),
            ));
        };
        let mut f = Fields::new(map);
        let id = match f.get("UHostId") {
            None => {
                return Err(unreadable(
                    None,
                    "an element of UHostSet has no UHostId".into(),
                ));
            }
            Some(v) => match lenient::string(v) {
                Some(id) if !id.is_empty() => id,
                _ => {
                    return Err(unreadable(
                        None,
                        format!("an element of UHostSet has a UHostId that is {}", kind(v)),
                    ));
                }
            },
        };
        // Absent like the API's "" (the state could not be read); any other shape is not a state.
        let state = match f.get("State") {
            None => CompactString::default(),
            Some(v) => lenient::string(v).ok_or_else(|| {
                unreadable(
                    Some(&id),
                    format!("the answer for {id} has a State that is {}", kind(v)),
                )
            })?,
        };
        // Read apart from the rest so that the text passes straight into its secret box.
        let password = match f.get("Password") {
            None => None,
            Some(Value::String(base64)) => Some(Password::from(base64.as_str())),
            Some(_) => {
                f.dropped.push("Password");
                None
            }
        };
        let mut instance = Instance {
            name: f.string("Name"),
            zone: f.string("Zone"),
            region: f.string("Region"),
            machine_type: f.string("MachineType"),
            cpu: f.int("CPU"),
            memory: f.int("Memory"),
            gpu: f.int("GPU"),
            gpu_type: f.string("GpuType"),
            graphics_memory: f.object("GraphicsMemory", |g| GraphicsMemory {
                value: g.float("Value"),
            }),
            charge_type: f.string("ChargeType"),
            create_time: f.int("CreateTime"),
            expire_time: f.int("ExpireTime"),
            is_expire: f.string("IsExpire"),
            auto_renew: f.string("AutoRenew"),
            is_spot: f.bool("IsSpot"),
            comp_share_image_id: f.string("CompShareImageId"),
            comp_share_image_name: f.string("CompShareImageName"),
            comp_share_image_type: f.string("CompShareImageType"),
            instance_type: f.string("InstanceType"),
            os_name: f.string("OsName"),
            os_type: f.string("OsType"),
            password,
            ssh_login_command: f.string("SshLoginCommand"),
            ip_set: f.list("IPSet", |ip| IpInfo {
                ip: ip.string("IP"),
                r#type: ip.string("Type"),
                vpc_id: ip.string("VPCId"),
            }),
            softwares: f.list("Softwares", |s| Software {
                name: s.string("Name"),
                url: s.string("URL"),
            }),
            remark: f.string("Remark"),
            tag: f.string("Tag"),
            stop_scheduler_time: f.int("StopSchedulerTime").filter(|t| *t > 0),
            u_host_id: id,
            state,
            dropped_fields: Vec::new(),
        };
        instance.dropped_fields = f.dropped;
        Ok(instance)
    }
}

impl Instance {
    /// The element of `UHostSet` that [`Instance::read`] reads back as this instance (all but
    /// [`Instance::dropped_fields`], which name what the original element had and this one
    /// lacks): for keeping instances compactly, as text. It holds the password as the answer
    /// did, so it is never logged or shown.
    pub fn to_element(&self) -> Value {
        // Destructured in full, so that a new field cannot be left out of the round trip.
        let Instance {
            u_host_id,
            name,
            state,
            zone,
            region,
            machine_type,
            cpu,
            memory,
            gpu,
            gpu_type,
            graphics_memory,
            charge_type,
            create_time,
            expire_time,
            is_expire,
            auto_renew,
            is_spot,
            comp_share_image_id,
            comp_share_image_name,
            comp_share_image_type,
            instance_type,
            os_name,
            os_type,
            password,
            ssh_login_command,
            ip_set,
            softwares,
            remark,
            tag,
            stop_scheduler_time,
            dropped_fields: _,
        } = self;
        let mut element = Map::new();
        let mut text = |name: &str, value: &CompactString| {
            if !value.is_empty() {
                element.insert(name.to_owned(), Value::from(value.as_str()));
            }
        };
        text("UHostId", u_host_id);
        text("Name", name);
        text("State", state);
        text("Zone", zone);
        text("Region", region);
        text("MachineType", machine_type);
        text("GpuType", gpu_type);
        text("ChargeType", charge_type);
        text("IsExpire", is_expire);
        text("AutoRenew", auto_renew);
        text("CompShareImageId", comp_share_image_id);
        text("CompShareImageName", comp_share_image_name);
        text("CompShareImageType", comp_share_image_type);
        text("InstanceType", instance_type);
        text("OsName", os_name);
        text("OsType", os_type);
        text("SshLoginCommand", ssh_login_command);
        text("Remark", remark);
        text("Tag", tag);
        let numbers = [
            ("CPU", cpu),
            ("Memory", memory),
            ("GPU", gpu),
            ("CreateTime", create_time),
            ("ExpireTime", expire_time),
            ("StopSchedulerTime", stop_scheduler_time),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                element.insert(name.to_owned(), Value::from(*value));
            }
        }
        if let Some(GraphicsMemory { value }) = graphics_memory {
            let value = value.map_or(Value::Null, Value::from);
            element.insert("GraphicsMemory".to_owned(), json!({ "Value": value }));
        }
        if let Some(spot) = is_spot {
            element.insert("IsSpot".to_owned(), Value::from(*spot));
        }
        if let Some(Password(base64)) = password {
            element.insert("Password".to_owned(), base64.expose_secret().into());
        }
        let ips = ip_set.iter().map(|IpInfo { ip, r#type, vpc_id }| {
            json!({ "IP": ip.as_str(), "Type": r#type.as_str(), "VPCId": vpc_id.as_str() })
        });
        element.insert("IPSet".to_owned(), ips.collect());
        if !softwares.is_empty() {
            let softwares = softwares.iter().map(
                |Software { name, url }| json!({ "Name": name.as_str(), "URL": url.as_str() }),
            );
            element.insert("Softwares".to_owned(), softwares.collect());
        }
        Value::Object(element)
    }
}

/// How a JSON value is shaped, for messages (never its content).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphicsMemory {
    /// GB per card.
    pub value: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub ip: CompactString,
    /// `Internation` (sic) and `Bgp` are public, `Private` is internal.
    pub r#type: CompactString,
    /// The VPC (`uvnet-…`) the address is in; empty when the answer names none.
    pub vpc_id: CompactString,
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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Software {
    pub name: CompactString,
    pub url: CompactString,
}

/// The instance's login password as the API sends it (Base64). Its `Debug` output is redacted.
#[derive(Clone, Debug)]
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
#[derive(Debug, Default)]
pub struct DescribeResponse {
    pub total_count: Option<i64>,
    /// The elements that could be read.
    pub u_host_set: Vec<Instance>,
    /// The elements that could not.
    pub unreadable: Vec<UnreadableElement>,
}

impl DescribeResponse {
    fn read(answer: &Value) -> Result<Self, String> {
        let answer = answer
            .as_object()
            .ok_or("the answer is not a JSON object")?;
        let total_count = match answer.get("TotalCount").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => lenient::int(v).ok_or_else(|| format!("TotalCount is {}", kind(v)))?,
        };
        let set = match answer.get("UHostSet") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(set)) => set.as_slice(),
            Some(other) => return Err(format!("UHostSet is {}, not a list", kind(other))),
        };
        let mut response = DescribeResponse {
            total_count,
            ..DescribeResponse::default()
        };
        for element in set {
            match Instance::read(element) {
                Ok(instance) => response.u_host_set.push(instance),
                Err(unreadable) => response.unreadable.push(unreadable),
            }
        }
        Ok(response)
    }
}

impl<'de> Deserialize<'de> for DescribeResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DescribeResponse::read(&Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
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
        let i = Instance::read(&answer).unwrap();
        assert!(i.dropped_fields.is_empty());
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
        let i = Instance::read(&json!({
            "UHostId": "uhost-1", "Memory": "32768", "CPU": "8", "GPU": 2.0, "CreateTime": "",
            "IsSpot": "true", "GraphicsMemory": {"Value": "24", "Rate": 1}, "IPSet": null,
            "Softwares": [{"Name": "JupyterLab", "URL": "https://x", "Port": 8888}],
            "MonitorMessages": {"CPU": 3}, "SomethingNew": [1, 2, 3], "Name": null,
        }))
        .unwrap();
        assert!(i.dropped_fields.is_empty(), "{:?}", i.dropped_fields);
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

    /// Every field the operator reads, with a value of the right shape.
    fn complete() -> Value {
        json!({
            "UHostId": "uhost-1", "Name": "trainer", "State": "Running", "Zone": "cn-wlcb-01",
            "Region": "cn-wlcb", "MachineType": "G", "CPU": 16, "Memory": 65536, "GPU": 2,
            "GpuType": "4090", "GraphicsMemory": {"Value": 24}, "ChargeType": "Month",
            "CreateTime": 1712563200, "ExpireTime": 1715155200, "IsExpire": "No",
            "AutoRenew": "Yes", "IsSpot": false, "CompShareImageId": "compshareImage-1",
            "CompShareImageName": "PyTorch", "CompShareImageType": "System",
            "InstanceType": "UHost", "OsName": "Ubuntu", "OsType": "Linux",
            "Password": "dWNsb3VkLmNu", "SshLoginCommand": "ssh root@1.2.3.4 -p 22",
            "IPSet": [{"IP": "1.2.3.4", "Type": "Bgp", "VPCId": "uvnet-1"}],
            "Softwares": [{"Name": "JupyterLab", "URL": "https://1.2.3.4:8888"}],
        })
    }

    #[test]
    fn one_odd_optional_field_is_left_out_and_named_and_the_rest_is_read() {
        let mut odd = complete();
        odd["Softwares"] = json!(["JupyterLab"]);
        let i = Instance::read(&odd).unwrap();
        assert_eq!(i.dropped_fields, ["Softwares"]);
        assert!(i.softwares.is_empty());
        assert_eq!((i.state.as_str(), i.cpu), ("Running", Some(16)));
        assert_eq!(
            (i.ip_set[0].ip.as_str(), i.ip_set[0].vpc_id.as_str()),
            ("1.2.3.4", "uvnet-1")
        );
    }

    #[test]
    fn every_optional_field_of_an_unexpected_shape_is_left_out_alone() {
        let baseline = Instance::read(&complete()).unwrap();
        assert!(baseline.dropped_fields.is_empty());
        let fields: Vec<String> = complete().as_object().unwrap().keys().cloned().collect();
        for field in fields
            .iter()
            .filter(|f| !["UHostId", "State"].contains(&f.as_str()))
        {
            // A shape no reader accepts where this field is expected: an object for scalars, a
            // string for lists and objects.
            let odd_value = match complete()[field.as_str()] {
                Value::Array(_) | Value::Object(_) => json!("surprise"),
                _ => json!({"surprise": true}),
            };
            let mut odd = complete();
            odd[field.as_str()] = odd_value;
            let i = Instance::read(&odd).unwrap_or_else(|e| panic!("{field}: {e:?}"));
            assert_eq!(i.dropped_fields, [field.as_str()], "{field}");
            assert_eq!(i.state, "Running", "{field}");
            assert_eq!(i.u_host_id, "uhost-1", "{field}");
        }
    }

    #[test]
    fn an_element_without_a_readable_id_or_state_is_unreadable_and_says_why() {
        let mut no_id = complete();
        no_id.as_object_mut().unwrap().remove("UHostId");
        let mut object_id = complete();
        object_id["UHostId"] = json!({"id": 1});
        let mut odd_state = complete();
        odd_state["State"] = json!(["Running"]);
        let cases = [
            (json!("uhost-1"), None, "is a string, not an object"),
            (no_id, None, "has no UHostId"),
            (object_id, None, "UHostId that is an object"),
            (odd_state, Some("uhost-1"), "State that is a list"),
        ];
        for (element, id, problem) in cases {
            let e = Instance::read(&element).unwrap_err();
            assert_eq!(e.id.as_deref(), id);
            assert!(e.problem.contains(problem), "{}", e.problem);
        }
        // An absent State is the API's "": unreadable, not malformed.
        let mut no_state = complete();
        no_state.as_object_mut().unwrap().remove("State");
        assert_eq!(Instance::read(&no_state).unwrap().state, "");
    }

    #[test]
    fn the_envelope_is_strict_and_each_element_stands_alone() {
        let answer = json!({"RetCode": 0, "TotalCount": "3", "UHostSet": [
            complete(), 7, {"UHostId": "uhost-2", "State": {"x": 1}},
        ]});
        let r: DescribeResponse = serde_json::from_value(answer).unwrap();
        assert_eq!(r.total_count, Some(3));
        assert_eq!(r.u_host_set.len(), 1);
        assert_eq!(r.unreadable.len(), 2);
        assert_eq!(r.unreadable[1].id.as_deref(), Some("uhost-2"));
        for bad in [
            json!({"UHostSet": "oops"}),
            json!({"UHostSet": {"uhost-1": {}}}),
            json!({"TotalCount": [1], "UHostSet": []}),
            json!([]),
        ] {
            assert!(serde_json::from_value::<DescribeResponse>(bad).is_err());
        }
    }

    #[test]
    fn ip_types_map_to_reach() {
        let ip = |ip: &str, t: &str| IpInfo {
            ip: ip.into(),
            r#type: t.into(),
            ..IpInfo::default()
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
    /// Every field set to something other than its default, so that a field missed by
    /// `to_element` or read back differently fails the round trip.
    fn fully_populated() -> Instance {
        Instance {
            u_host_id: "uhost-1".into(),
            name: "n".into(),
            state: "Install Fail".into(),
            zone: "cn-wlcb-01".into(),
            region: "cn-wlcb".into(),
            machine_type: "G".into(),
            cpu: Some(16),
            memory: Some(65536),
            gpu: Some(2),
            gpu_type: "4090".into(),
            graphics_memory: Some(GraphicsMemory { value: Some(0.1) }),
            charge_type: "Spot".into(),
            create_time: Some(1_712_563_200),
            expire_time: Some(1_715_155_200),
            is_expire: "No".into(),
            auto_renew: "Yes".into(),
            is_spot: Some(true),
            comp_share_image_id: "compshareImage-1".into(),
            comp_share_image_name: "PyTorch 2.1".into(),
            comp_share_image_type: "System".into(),
            instance_type: "Container".into(),
            os_name: "Ubuntu 22.04".into(),
            os_type: "Linux".into(),
            password: Some(Password::from("dWNsb3VkLmNu")),
            ssh_login_command: "ssh root@117.50.0.1 -p 22".into(),
            ip_set: vec![IpInfo {
                ip: "10.0.0.1".into(),
                r#type: "Private".into(),
                vpc_id: "uvnet-1".into(),
            }],
            softwares: vec![Software {
                name: "JupyterLab".into(),
                url: "http://117.50.0.1:8888".into(),
            }],
            remark: "a remark with \"quotes\" and 中文".into(),
            tag: "Default".into(),
            stop_scheduler_time: Some(1_715_000_000),
            dropped_fields: Vec::new(),
        }
    }

    #[test]
    fn an_element_written_from_an_instance_reads_back_as_it() {
        let full = fully_populated();
        let partial = Instance {
            graphics_memory: Some(GraphicsMemory { value: None }),
            ..Instance::read(&json!({"UHostId": "uhost-2"})).unwrap()
        };
        for instance in [full, partial] {
            let element = instance.to_element();
            assert_eq!(Instance::read(&element).unwrap(), instance, "{element}");
            // As text, too (floats included).
            let text = serde_json::to_vec(&element).unwrap();
            let reread = serde_json::from_slice::<Value>(&text).unwrap();
            assert_eq!(Instance::read(&reread).unwrap(), instance);
        }
    }
}
