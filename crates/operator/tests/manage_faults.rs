//! The worst moments of managing machines, made to happen for real, with the machines counted at
//! the simulator each time: the operator killed while a create's answer is on its way, a create's
//! answer lost, the apiserver refusing the write that records a created machine, a deletion with
//! a restart in the middle; and the cloud's refusals (the operation lock, capacity, arrears, the
//! account's quota).

use std::time::Duration;

use compshare_operator::resource::{CREATED_ID_ANNOTATION, CompShareInstance, REFRESH_ANNOTATION};
use compshare_simulator::{Capacity, Transitions};
use compshare_test_support::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(45);
const CREATE: &str = "CreateCompShareInstance";

/// Whether the resource's machine is known and running.
fn running(o: &CompShareInstance) -> bool {
    condition(o, "Running") == Some(("True", "Running"))
}

/// The machine the resource recorded, and the machines bearing its mark.
async fn one_machine(bed: &Bed, name: &str) -> String {
    let o = bed.get(name).await;
    let machines = bed.machines_of(&o.uid().unwrap()).await;
    assert_eq!(
        machines.len(),
        1,
        "exactly one machine for {name}: {machines:?}"
    );
    let id = machines[0]["UHostId"].as_str().unwrap().to_owned();
    assert_eq!(
        o.annotations().get(CREATED_ID_ANNOTATION),
        Some(&id),
        "the recorded id is that machine's"
    );
    assert_eq!(
        bed.simulator.lifetime_counters().calls(CREATE),
        1,
        "one create in all"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_create_answer_is_on_its_way_makes_one_machine() {
    let bed = Bed::with_fixture("crash-create", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    // The create is carried out, and its answer held back for longer than the test waits.
    bed.inject(
        json!({"kind": "latency", "action": CREATE, "stage": "after-action",
        "latencyMs": 60000, "count": 1}),
    )
    .await;
    let uid = bed.create("trainer", machine_spec()).await.uid().unwrap();
    let operator = bed.manager().start().await;
    bed.until_machine_of(&uid, SETTLE).await;
    // Killed before the answer arrives: nothing but the intent is recorded.
    operator.kill();
    let o = bed.get("trainer").await;
    assert!(!o.annotations().contains_key(CREATED_ID_ANNOTATION));

    let operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    one_machine(&bed, "trainer").await;
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_is_resolved_by_the_mark_not_by_a_second_create() {
    let bed = Bed::with_fixture("lost-create", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    bed.inject(json!({"kind": "drop", "action": CREATE, "stage": "after-action", "count": 1}))
        .await;
    bed.create("trainer", machine_spec()).await;
    let _operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    one_machine(&bed, "trainer").await;
    let counters = bed.counters().await;
    assert_eq!(counters.action(CREATE).by_result.get("dropped"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_lost_before_the_gateway_is_asked_again_once_nothing_bears_the_mark() {
    let bed = Bed::with_fixture("lost-before", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    // The connection drops before the create is carried out: nothing is made, and the operator
    // cannot know it.
    bed.inject(json!({"kind": "drop", "action": CREATE, "count": 1}))
        .await;
    let uid = bed.create("trainer", machine_spec()).await.uid().unwrap();
    let _operator = bed.manager().start().await;
    let o = bed
        .wait_for("trainer", "looking for its machine", SETTLE, |o| {
            condition(o, "Reconciling") == Some(("True", "CreateOutcomeUnknown"))
        })
        .await;
    assert!(bed.machines_of(&uid).await.is_empty());
    let a = o.status.as_ref().unwrap().last_action.as_ref().unwrap();
    assert_eq!(
        (a.action.as_str(), a.result.as_str()),
        ("Create", "Unknown")
    );
    // Only after the settle window (2 minutes) with nothing bearing the mark is it asked again.
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(bed.simulator.lifetime_counters().calls(CREATE), 1);
    bed.wait_for("trainer", "running", Duration::from_secs(90), running)
        .await;
    assert_eq!(bed.machines_of(&uid).await.len(), 1);
    assert_eq!(bed.simulator.lifetime_counters().calls(CREATE), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_after_the_create_makes_no_second_machine() {
    let bed = Bed::with_fixture("refused-id", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    // The apiserver refuses any update of the resource that records a created id.
    let name = format!("refuse-created-id-{}", bed.namespace);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["compshare.ucloud.cn"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["compshareinstances"],
            }]},
            "validations": [{
                "expression": format!("!has(object.metadata.annotations) || !('{CREATED_ID_ANNOTATION}' in object.metadata.annotations)"),
                "message": "this test refuses the created id",
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": bed.namespace,
            }}},
        },
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(bed.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(bed.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The policy is in force once a direct write of the annotation is refused.
    bed.create(
        "probe",
        json!({"uhostId": "uhost-probe", "region": "cn-wlcb"}),
    )
    .await;
    poll_until(SETTLE, async || {
        let patch = json!({"metadata": {"annotations": {CREATED_ID_ANNOTATION: "x"}}});
        match bed
            .instances()
            .patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(_) => Ok(()),
            Ok(_) => Err(()),
        }
    })
    .await
    .expect("the policy takes effect");

    let uid = bed.create("trainer", machine_spec()).await.uid().unwrap();
    let operator = bed.manager().start().await;
    // Created; the id cannot be recorded; the operator keeps finding its machine by the mark,
    // for two of its retries, and never creates another.
    bed.until_machine_of(&uid, SETTLE).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(bed.machines_of(&uid).await.len(), 1);
    assert_eq!(bed.simulator.lifetime_counters().calls(CREATE), 1);
    assert!(
        operator.failed_reconciles().await >= 2.0,
        "the write was retried"
    );

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    bed.wait_for("trainer", "running", Duration::from_secs(60), running)
        .await;
    one_machine(&bed, "trainer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_wipe_forgets_nothing() {
    let bed = Bed::with_fixture("status-wipe", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    bed.create("trainer", machine_spec()).await;
    let _operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    let id = one_machine(&bed, "trainer").await;
    // Someone (a backup restore, a hand) replaces the status with nothing.
    bed.instances()
        .patch_status(
            "trainer",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": null})),
        )
        .await
        .unwrap();
    bed.annotate("trainer", REFRESH_ANNOTATION, Some("after-wipe"))
        .await;
    let o = bed
        .wait_for("trainer", "observed again", SETTLE, |o| {
            running(o)
                && o.status
                    .as_ref()
                    .and_then(|s| s.last_handled_refresh.as_deref())
                    == Some("after-wipe")
        })
        .await;
    assert_eq!(o.status.unwrap().uhost_id.as_deref(), Some(id.as_str()));
    one_machine(&bed, "trainer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_machine_with_a_restart_in_the_middle_leaves_none() {
    let bed = Bed::with_fixture("delete-restart", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    bed.create("trainer", machine_spec()).await;
    let operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    let id = one_machine(&bed, "trainer").await;
    // A slow stop, to restart the operator while the machine is stopping.
    bed.simulator_admin
        .set_transitions(Transitions {
            stop_ms: 8000,
            ..Transitions::uniform(1000)
        })
        .await
        .unwrap();
    bed.instances()
        .delete("trainer", &DeleteParams::default())
        .await
        .unwrap();
    poll_until(SETTLE, async || {
        let machine = bed.simulator_admin.instance(&id).await.unwrap().unwrap();
        if machine["State"] == "Stopping" {
            Ok(())
        } else {
            Err(())
        }
    })
    .await
    .expect("the machine is being stopped");
    let o = bed.get("trainer").await;
    assert_eq!(condition(&o, "Reconciling"), Some(("True", "Releasing")));
    operator.kill();

    let _operator = bed.manager().start().await;
    poll_until(SETTLE, async || {
        match bed.instances().get_opt("trainer").await.unwrap() {
            None => Ok(()),
            Some(_) => Err(()),
        }
    })
    .await
    .expect("the resource goes once its machine is released");
    assert_eq!(bed.machine_count().await, 0, "no machine is left");
    let counters = bed.simulator.lifetime_counters();
    assert_eq!(counters.calls("StopCompShareInstance"), 1);
    assert_eq!(counters.calls("TerminateCompShareInstance"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_machine_is_waited_for_not_hammered() {
    let bed = Bed::with_fixture("lock", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    bed.create("trainer", machine_spec()).await;
    let _operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    let id = one_machine(&bed, "trainer").await;
    bed.simulator_admin
        .lock_instance(&id, Duration::from_secs(10))
        .await
        .unwrap();
    bed.reset_counters().await;
    let patch = json!({"spec": {"powerState": "Stopped"}});
    bed.instances()
        .patch("trainer", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let o = bed
        .wait_for("trainer", "waiting for the lock", SETTLE, |o| {
            condition(o, "Reconciling") == Some(("True", "InstanceLocked"))
        })
        .await;
    assert!(
        message(&o, "Reconciling").contains("InstanceOperationInProgress"),
        "{}",
        message(&o, "Reconciling")
    );
    assert_eq!(condition(&o, "Ready").map(|c| c.0), Some("False"));
    let a = o.status.as_ref().unwrap().last_action.as_ref().unwrap();
    assert_eq!((a.action.as_str(), a.result.as_str()), ("Stop", "Failed"));
    assert!(a.ret_code.is_some());
    // The lock lapses after 10 s; the next try (30 s after the refused one) stops it.
    bed.wait_for("trainer", "stopped", Duration::from_secs(60), |o| {
        state(o) == Some("Stopped") && condition(o, "Ready").is_some_and(|(s, _)| s == "True")
    })
    .await;
    let stops = bed.counters().await.calls("StopCompShareInstance");
    assert_eq!(stops, 2, "one refused by the lock, one that worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_waits_and_arrears_or_quota_stall_without_a_machine() {
    let fixture = managed_fixture()
        .capacity("cn-wlcb-01", "4090", 0)
        .build()
        .unwrap();
    let bed = Bed::with_fixture("refusals", fixture).await;
    bed.manage().await;
    let uid = bed.create("trainer", machine_spec()).await.uid().unwrap();
    let _operator = bed.manager().start().await;

    // 226604: the zone has no 4090 left; the operator waits and tries again.
    let o = bed
        .wait_for("trainer", "waiting for capacity", SETTLE, |o| {
            condition(o, "Reconciling") == Some(("True", "WaitingForCapacity"))
        })
        .await;
    assert!(
        message(&o, "Reconciling").contains("226604"),
        "{}",
        message(&o, "Reconciling")
    );
    assert!(bed.machines_of(&uid).await.is_empty());

    // 226601: in arrears; a person must act.
    bed.simulator_admin
        .patch_account(PUBLIC_KEY, json!({"inArrears": true}))
        .await
        .unwrap();
    bed.simulator_admin
        .set_capacity(&[Capacity {
            zone: "cn-wlcb-01".into(),
            gpu_type: "4090".into(),
            gpus: 8,
        }])
        .await
        .unwrap();
    // A refresh tries again at once.
    bed.annotate("trainer", REFRESH_ANNOTATION, Some("1")).await;
    let o = bed
        .wait_for("trainer", "stalled on arrears", SETTLE, |o| {
            condition(o, "Stalled") == Some(("True", "AccountBlocked"))
        })
        .await;
    assert!(
        message(&o, "Stalled").contains("226601"),
        "{}",
        message(&o, "Stalled")
    );

    // At its quota (226607): the same.
    bed.simulator_admin
        .patch_account(PUBLIC_KEY, json!({"inArrears": false, "instanceQuota": 0}))
        .await
        .unwrap();
    bed.annotate("trainer", REFRESH_ANNOTATION, Some("2")).await;
    let o = bed
        .wait_for("trainer", "stalled on its quota", SETTLE, |o| {
            condition(o, "Stalled") == Some(("True", "AccountBlocked"))
                && message(o, "Stalled").contains("226607")
        })
        .await;
    assert_eq!(condition(&o, "Ready").map(|c| c.0), Some("False"));
    assert!(bed.machines_of(&uid).await.is_empty());

    // Fixed: created, once.
    bed.simulator_admin
        .patch_account(PUBLIC_KEY, json!({"instanceQuota": 10}))
        .await
        .unwrap();
    bed.annotate("trainer", REFRESH_ANNOTATION, Some("3")).await;
    bed.wait_for("trainer", "running", SETTLE, running).await;
    one_machine_after_refusals(&bed, &uid).await;
}

/// Exactly one machine for the resource, after creates the cloud refused.
async fn one_machine_after_refusals(bed: &Bed, uid: &str) {
    assert_eq!(bed.machines_of(uid).await.len(), 1);
    let creates = bed.simulator.lifetime_counters().action(CREATE);
    assert_eq!(creates.by_result.get("0"), Some(&1), "{creates:?}");
}
