//! What the poller knows about one watched instance.

use std::sync::Arc;

use compact_str::CompactString;
use compshare_api::{CallError, Instance};

use crate::packing::{Pack, Packed};

/// The latest observation of one watched resource's instance, as the poller hands it out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation {
    /// The instance as last seen. Kept when a later call fails or no longer finds it, so nothing
    /// known is lost on a bad answer.
    pub instance: Option<Arc<Instance>>,
    /// What the latest call said.
    pub outcome: Outcome,
    /// The latest refresh request (annotation value) that an observation has answered.
    pub refresh: Option<Box<str>>,
    /// The resource generation the latest call was made for.
    pub generation: i64,
}

/// What the poller keeps of a member's latest observation: its instance packed, about a tenth of
/// the bytes of a whole one, which at 100,000 resources is most of the poller's memory. The
/// refresh request it answered is kept by the member apart, as few members are ever refreshed.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub instance: Option<PackedInstance>,
    pub outcome: Outcome,
    pub generation: i64,
}

impl Record {
    /// The observation as the poller hands it out, with the refresh request it answered.
    pub(super) fn unpack(&self, refresh: Option<Box<str>>) -> Observation {
        Observation {
            instance: self.instance.as_ref().map(|i| Arc::new(i.unpack())),
            outcome: self.outcome.clone(),
            refresh,
            generation: self.generation,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The instance was in the answer.
    Found,
    /// The call succeeded but the instance was not in the answer: it was deleted or never existed
    /// (the API has no "not found" code; the vendor's CLI and Terraform provider read it this way).
    NotFound,
    /// The instance exists, but not in the zone the resource names.
    ZoneMismatch { actual: String },
    /// The call failed. Boxed: a record is kept for every member, and failures are rare.
    Failed(Box<CallError>),
}

impl Outcome {
    pub(crate) fn failed(error: CallError) -> Self {
        Outcome::Failed(Box::new(error))
    }

    /// Why the call failed, if it did.
    pub(crate) fn failure(&self) -> Option<&CallError> {
        match self {
            Outcome::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// An instance, packed, with what the poller reads of it on every answer beside. Discovery keeps
/// its listings so, too.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PackedInstance {
    /// For the gauges, and to poll an instance on its way somewhere faster.
    pub state: CompactString,
    /// Fields of the answer's element that the operator could not read
    /// ([`Instance::dropped_fields`]): not in the element the instance packs as.
    pub dropped_fields: Box<[&'static str]>,
    instance: Packed<Instance>,
}

impl PackedInstance {
    pub(crate) fn pack(instance: &Instance) -> Self {
        PackedInstance {
            state: instance.state.clone(),
            dropped_fields: instance.dropped_fields.as_slice().into(),
            instance: Packed::pack(instance),
        }
    }

    pub(crate) fn unpack(&self) -> Instance {
        Instance {
            dropped_fields: self.dropped_fields.to_vec(),
            ..self.instance.unpack()
        }
    }
}

/// An instance packs as the element of the answer it was read from (without what could not be
/// read), against such an element for a machine as the simulator creates it. A unit test keeps
/// the dictionary current.
impl Pack for Instance {
    const DICTIONARY: &'static [u8] = include_bytes!("instance_dictionary.json");

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_element()).expect("an element serializes")
    }

    fn from_json(json: &[u8]) -> Self {
        let element = serde_json::from_slice(json).expect("a packed element parses");
        Instance::read(&element)
            .expect("a packed element reads as the instance it was written from")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A machine as the simulator's `CreateCompShareInstance` makes it
    /// (`compshare-simulator`'s `create.rs`), read as the poller reads it.
    fn created_machine() -> Instance {
        Instance::read(&json!({
            "UHostId": "uhost-3f5a1c2d", "Name": "train-0", "Remark": "",
            "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Running", "MachineType": "G",
            "CPU": 16, "Memory": 65536, "GPU": 1, "GpuType": "4090",
            "GraphicsMemory": {"Value": 24, "Rate": 1}, "CpuPlatform": "Amd/Epyc2",
            "ChargeType": "Dynamic", "IsSpot": false,
            "CompShareImageId": "compshareImage-2bqkvjr4tdzr", "CreateTime": 1_764_662_400,
            "StartTime": 1_764_662_400, "UpdateTime": 1_764_662_400,
            "Password": "dWNsb3VkLmNu", "SshLoginCommand": "ssh root@117.50.201.2 -p 22",
            "IPSet": [
                {"IP": "117.50.201.2", "Type": "Bgp", "IPMode": "IPv4", "VPCId": ""},
                {"IP": "10.60.101.2", "Type": "Private", "IPMode": "IPv4",
                 "VPCId": "uvnet-1a2b3c4d"},
            ],
        }))
        .expect("a created machine reads")
    }

    #[test]
    fn an_instance_unpacks_as_it_was_observed_and_packs_small() {
        let mut instance = created_machine();
        instance.u_host_id = "uhost-9c8d7e6f".into();
        instance.password = Some("c2VjcmV0LXBhc3N3b3JkLTQy".into());
        instance.ssh_login_command = "ssh root@117.50.7.19 -p 22".into();
        instance.ip_set[0].ip = "117.50.7.19".into();
        instance.ip_set[1].ip = "10.60.3.77".into();
        instance.dropped_fields = vec!["Softwares"];
        let packed = PackedInstance::pack(&instance);
        assert_eq!(packed.unpack(), instance);
        assert_eq!(packed.state, "Running");
        assert!(
            packed.instance.len() < 120,
            "an instance packs into {} bytes",
            packed.instance.len()
        );
        println!("an instance packs into {} bytes", packed.instance.len());
        // What might be a secret is not shown.
        assert!(!format!("{packed:?}").contains("c2VjcmV0"));
    }

    /// The dictionary is the element of a machine as the simulator creates one.
    #[test]
    fn the_dictionary_is_a_current_element() {
        crate::packing::assert_dictionary_current(
            &created_machine(),
            "src/poller/instance_dictionary.json",
        );
    }
}
