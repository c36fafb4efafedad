//! Any bytes as a `DescribeCompShareInstance` answer: parsing never panics; each element is read
//! on its own (an element that cannot be read is set aside with a reason, a field of an odd shape
//! is left out and named); and every instance it yields maps to a bounded status (facts,
//! addresses, SSH, GPU, times) without panicking either.
#![no_main]

use compshare_api::{DescribeResponse, parse_envelope};
use compshare_operator::fuzzing::status_for;
use compshare_operator::resource::{CompShareInstance, CompShareInstanceSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = parse_envelope::<DescribeResponse>(data) else {
        return;
    };
    let mut resource = CompShareInstance::new(
        "fuzz",
        CompShareInstanceSpec {
            uhost_id: Some("uhost-1".into()),
            region: "cn-wlcb".into(),
            zone: Some("cn-wlcb-01".into()),
            ..CompShareInstanceSpec::default()
        },
    );
    resource.metadata.generation = Some(1);
    for unreadable in &answer.unreadable {
        assert!(!unreadable.problem.is_empty(), "an unreadable element says why");
    }
    for instance in answer.u_host_set {
        assert!(!instance.u_host_id.is_empty(), "a read element has its id");
        let status = status_for(&resource, instance);
        // A status must always be serializable for the apiserver, and never too large to store.
        let json = serde_json::to_string(&status).expect("a status serializes");
        assert!(json.len() < 256 << 10, "a status of {} bytes", json.len());
    }
});
