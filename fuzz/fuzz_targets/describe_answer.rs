//! Any bytes as a `DescribeCompShareInstance` answer: parsing never panics; each element is read
//! on its own (an element that cannot be read is set aside with a reason, a field of an odd shape
//! is left out and named); and every instance it yields maps to a bounded status (facts,
//! addresses, SSH, GPU, times) without panicking either.
#![no_main]

use std::sync::Arc;

use compshare_operator::compshare::DescribeResponse;
use compshare_operator::compshare::client::parse_envelope;
use compshare_operator::poller::{Observation, Outcome};
use compshare_operator::reconciler::status::{self, Inputs, Situation};
use compshare_operator::resource::{CompShareInstance, CompShareInstanceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = parse_envelope::<DescribeResponse>(data) else {
        return;
    };
    let resource = CompShareInstance::new(
        "fuzz",
        CompShareInstanceSpec {
            uhost_id: "uhost-1".into(),
            region: "cn-wlcb".into(),
            zone: Some("cn-wlcb-01".into()),
            project_id: None,
            credentials_ref: None,
            poll_interval: None,
            write_connection_secret_to_ref: None,
        },
    );
    let now = Time(jiff::Timestamp::UNIX_EPOCH);
    for unreadable in &answer.unreadable {
        assert!(!unreadable.problem.is_empty(), "an unreadable element says why");
    }
    for instance in answer.u_host_set {
        assert!(!instance.u_host_id.is_empty(), "a read element has its id");
        let observation = Observation {
            instance: Some(Arc::new(instance)),
            outcome: Outcome::Found,
            refresh: None,
            generation: 1,
        };
        let status = status::desired(Inputs {
            resource: &resource,
            situation: Situation::Watched(Some(&observation)),
            connection_problem: None,
            connection_secret: None,
            now: &now,
        });
        // A status must always be serializable for the apiserver, and never too large to store.
        let json = serde_json::to_string(&status).expect("a status serializes");
        assert!(json.len() < 256 << 10, "a status of {} bytes", json.len());
    }
});
