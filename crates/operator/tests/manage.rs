//! Managing machines against a real kube-apiserver and the simulator: the walk-through (create,
//! wait, SSH details, stop, scheduled stop, delete) with the machines counted at the simulator,
//! the administrator's switch, and what admission refuses. The worst moments (crashes, lost
//! answers, refused writes) are in `manage_faults.rs`.

use std::time::Duration;

use compshare_operator::resource::{
    CREATE_PENDING_ANNOTATION, CREATED_ID_ANNOTATION, CompShareInstance,
};
use compshare_test_support::chart;
use compshare_test_support::*;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(45);

fn last_action(o: &CompShareInstance) -> Option<(String, String)> {
    let a = o.status.as_ref()?.last_action.as_ref()?;
    Some((a.action.to_string(), a.result.to_string()))
}

async fn patch_spec(bed: &Bed, name: &str, spec: Value) {
    bed.instances()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
        .expect("patch the spec");
}

async fn wait_gone(bed: &Bed, name: &str, timeout: Duration) {
    poll_until(timeout, async || {
        match bed.instances().get_opt(name).await.expect("get") {
            None => Ok(()),
            Some(o) => Err(o),
        }
    })
    .await
    .unwrap_or_else(|o| {
        panic!(
            "{name} is still there after {timeout:?}: {}",
            serde_json::to_string_pretty(&o).unwrap()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_stop_schedule_and_delete_leave_no_machine() {
    let bed = Bed::with_fixture("walkthrough", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    let mut spec = machine_spec();
    spec["writeConnectionSecretToRef"] = json!({"name": "trainer-ssh"});
    let created = bed.create("trainer", spec).await;
    let uid = created.uid().unwrap();
    let operator = bed.manager().start().await;

    // Created once, observed, Running, and its SSH details in the connection Secret.
    let o = bed
        .wait_for("trainer", "running", SETTLE, |o| {
            condition(o, "Running") == Some(("True", "Running"))
                && condition(o, "Ready").is_some_and(|(s, _)| s == "True")
                && o.status
                    .as_ref()
                    .is_some_and(|s| s.connection_secret_name.is_some())
        })
        .await;
    let machines = bed.machines_of(&uid).await;
    assert_eq!(machines.len(), 1, "one machine for the resource");
    let id = machines[0]["UHostId"].as_str().unwrap();
    assert_eq!(
        o.annotations()
            .get(CREATED_ID_ANNOTATION)
            .map(String::as_str),
        Some(id)
    );
    assert!(!o.annotations().contains_key(CREATE_PENDING_ANNOTATION));
    let status = o.status.as_ref().unwrap();
    assert_eq!(status.uhost_id.as_deref(), Some(id));
    assert_eq!(last_action(&o), Some(("Create".into(), "Succeeded".into())));
    assert!(
        o.finalizers()
            .iter()
            .any(|f| f == "compshare.ucloud.cn/release")
    );
    assert_eq!(
        machines[0]["Remark"].as_str().unwrap(),
        format!("compshare-operator {}/trainer uid={uid}", bed.namespace)
    );
    let secret = bed.secrets().get("trainer-ssh").await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(
        data["password"].0,
        MACHINE_PASSWORD.as_bytes(),
        "the password from its Secret"
    );
    let ssh = String::from_utf8(data["sshCommand"].0.clone()).unwrap();
    assert!(ssh.starts_with("ssh root@117.50."), "{ssh}");
    // The password reaches the machine Base64-encoded, as the API wants it, and nothing else.
    assert_eq!(
        machines[0]["Password"].as_str(),
        Some("bWFjaGluZS1wYXNzd29yZC00Mg==")
    );

    // Stopped on purpose: Ready (settled), not Running.
    patch_spec(&bed, "trainer", json!({"powerState": "Stopped"})).await;
    let o = bed
        .wait_for("trainer", "stopped and settled", SETTLE, |o| {
            state(o) == Some("Stopped")
                && condition(o, "Ready").is_some_and(|(s, _)| s == "True")
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await;
    assert_eq!(condition(&o, "Running").map(|c| c.0), Some("False"));
    assert_eq!(last_action(&o), Some(("Stop".into(), "Succeeded".into())));
    // kubectl waits for Ready on the settled, stopped machine and returns at once.
    bed.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "csinst/trainer",
        "--timeout=5s",
    ]);

    // Running again, with a stop scheduled an hour ahead; then the schedule cancelled.
    let at = jiff::Timestamp::now().as_second() + 3600;
    let at_text = jiff::Timestamp::from_second(at).unwrap().to_string();
    patch_spec(
        &bed,
        "trainer",
        json!({"powerState": "Running", "stopAt": at_text}),
    )
    .await;
    let o = bed
        .wait_for("trainer", "running with a scheduled stop", SETTLE, |o| {
            state(o) == Some("Running")
                && o.status
                    .as_ref()
                    .and_then(|s| s.scheduled_stop.as_ref())
                    .is_some_and(|t| t.0.as_second() == at)
        })
        .await;
    assert_eq!(condition(&o, "Ready").map(|c| c.0), Some("True"));
    patch_spec(&bed, "trainer", json!({"stopAt": null})).await;
    bed.wait_for("trainer", "without a scheduled stop", SETTLE, |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.scheduled_stop.is_none())
    })
    .await;
    let counters = bed.counters().await;
    for action in [
        "CreateCompShareInstance",
        "StopCompShareInstance",
        "StartCompShareInstance",
        "UpdateCompShareStopScheduler",
        "DeleteCompShareStopScheduler",
    ] {
        assert_eq!(counters.calls(action), 1, "{action}: exactly one call");
    }
    let reasons = bed.event_reasons("trainer").await;
    for reason in [
        "MachineCreated",
        "StopRequested",
        "StartRequested",
        "StopScheduled",
        "ScheduledStopCancelled",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    // Deleted while Running: stopped, terminated, then the resource goes; no machine is left.
    bed.instances()
        .delete("trainer", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&bed, "trainer", SETTLE).await;
    assert_eq!(bed.machine_count().await, 0, "no machine is left");
    let counters = bed.counters().await;
    assert_eq!(counters.calls("StopCompShareInstance"), 2);
    assert_eq!(counters.calls("TerminateCompShareInstance"), 1);
    assert_eq!(counters.calls("CreateCompShareInstance"), 1);
    operator.assert_no_failed_reconciles().await;
    let logs = operator.logs();
    assert!(
        !logs.contains(MACHINE_PASSWORD),
        "the password is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_machine_is_powered_and_orphaned_by_default() {
    let fixture = managed_fixture()
        .instance(
            json!({"UHostId": "uhost-adopted", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "ProjectId": PROJECT_ID, "State": "Running", "GPU": 1, "GpuType": "4090"}),
        )
        .build()
        .unwrap();
    let bed = Bed::with_fixture("adopt", fixture).await;
    bed.manage().await;
    bed.create(
        "adopted",
        json!({"uhostId": "uhost-adopted", "region": "cn-wlcb", "projectId": PROJECT_ID,
            "credentialsRef": {"name": "keys"}, "managementPolicy": "Manage", "powerState": "Stopped"}),
    )
    .await;
    let _operator = bed.manager().start().await;
    let o = bed
        .wait_for("adopted", "stopped as asked", SETTLE, |o| {
            state(o) == Some("Stopped") && condition(o, "Ready").is_some_and(|(s, _)| s == "True")
        })
        .await;
    assert!(o.finalizers().is_empty(), "Orphan by default: no finalizer");
    bed.instances()
        .delete("adopted", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&bed, "adopted", SETTLE).await;
    assert_eq!(bed.machine_count().await, 1, "an orphaned machine stays");
    assert_eq!(bed.counters().await.calls("TerminateCompShareInstance"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_administrators_switch_nothing_is_called() {
    let fixture = managed_fixture()
        .instance(
            json!({"UHostId": "uhost-1", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "State": "Running"}),
        )
        .build()
        .unwrap();
    // Observe-only bed: its end checks that no state-changing call was made.
    let bed = Bed::with_fixture("not-allowed", fixture).await;
    bed.credentials("keys").await;
    bed.secret(MACHINE_PASSWORD_SECRET, &[("password", MACHINE_PASSWORD)])
        .await;
    bed.create("create", machine_spec()).await;
    bed.create(
        "stop",
        json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {"name": "keys"},
            "managementPolicy": "Manage", "powerState": "Stopped"}),
    )
    .await;
    // An observer of the same machine next to them is unaffected.
    bed.create(
        "observer",
        json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {"name": "keys"}}),
    )
    .await;
    let _operator = bed.operator().start().await;
    for name in ["create", "stop"] {
        let o = bed
            .wait_for(name, "stalled", SETTLE, |o| {
                condition(o, "Stalled") == Some(("True", "ManagementNotAllowed"))
            })
            .await;
        assert!(
            message(&o, "Stalled").contains("--management-namespaces"),
            "{}",
            message(&o, "Stalled")
        );
        assert_eq!(condition(&o, "Ready").map(|c| c.0), Some("False"));
    }
    bed.wait_for("observer", "running", SETTLE, |o| {
        state(o) == Some("Running")
    })
    .await;
    assert_eq!(bed.machine_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_specs_are_checked_at_admission() {
    let bed = Bed::new("manage-admission", vec![]).await;
    let with = |change: Value| {
        let mut spec = machine_spec();
        merge(&mut spec, change);
        spec
    };
    let cases = [
        (
            with(json!({"uhostId": "uhost-1"})),
            "set spec.uhostId (a machine that exists) or spec.machine (a machine to create), not both",
        ),
        (
            json!({"region": "cn-wlcb"}),
            "set spec.uhostId (a machine that exists) or spec.machine",
        ),
        (
            with(json!({"managementPolicy": null})),
            "spec.machine creates a machine, which spends money: it needs spec.managementPolicy: Manage",
        ),
        (
            with(json!({"managementPolicy": "Observe"})),
            "it needs spec.managementPolicy: Manage",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "powerState": "Stopped"}),
            "spec.powerState starts and stops the machine: it needs spec.managementPolicy: Manage",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "deletionPolicy": "Delete"}),
            "spec.deletionPolicy: Delete releases the machine: it needs spec.managementPolicy: Manage",
        ),
        (
            with(json!({"zone": null})),
            "spec.zone is needed to create a machine",
        ),
        (
            with(json!({"machine": {"disks": [
                {"boot": true, "type": "CLOUD_SSD", "sizeGB": 200},
                {"boot": true, "type": "CLOUD_SSD", "sizeGB": 100}]}})),
            "machine.disks must have exactly one boot disk (boot: true)",
        ),
        (
            with(json!({"machine": {"disks": [{"type": "CLOUD_SSD", "sizeGB": 200}]}})),
            "machine.disks must have exactly one boot disk (boot: true)",
        ),
        (
            with(json!({"machine": {"memoryMB": 65000}})),
            "machine.memoryMB must be a multiple of 1024",
        ),
        (
            with(json!({"machine": {"gpu": 11}})),
            "spec.machine.gpu: Invalid value: 11: spec.machine.gpu in body should be less than or equal to 10",
        ),
        (
            with(json!({"machine": {"gpu": 0}})),
            "spec.machine.gpu in body should be greater than or equal to 1",
        ),
        (
            with(json!({"machine": {"gpuType": "4090 Ti"}})),
            "gpuType must be a CompShare GPU type such as 4090 or A800",
        ),
        (
            with(json!({"machine": {"quantity": 2}})),
            "machine.quantity (months or days) goes with chargeType Month or Day",
        ),
        (
            with(json!({"stopAt": "2030-01-01T00:00:00Z", "projectId": null})),
            "spec.stopAt needs spec.projectId",
        ),
        (
            with(json!({"stopAt": "2030-01-01T00:00:00Z", "machine": {"chargeType": "Spot"}})),
            "spec.stopAt is not available for Spot machines",
        ),
        (
            with(json!({"machine": {"passwordSecretRef": {"name": "Not_A_Name"}}})),
            "must be a valid Secret name",
        ),
        (
            with(json!({"powerState": "Off"})),
            "spec.powerState: Unsupported value: \"Off\"",
        ),
    ];
    bed.assert_refused(cases).await;

    // Once created, the machine cannot change or go, nor an id be added.
    bed.create("good", machine_spec()).await;
    let refused = [
        (
            json!({"spec": {"machine": {"gpu": 2}}}),
            "spec.machine is immutable: create another CompShareInstance for another machine",
        ),
        (
            json!({"spec": {"machine": null, "uhostId": "uhost-1"}}),
            "spec.machine cannot be added or removed",
        ),
        (
            json!({"spec": {"uhostId": "uhost-1"}}),
            "set spec.uhostId (a machine that exists) or spec.machine",
        ),
    ];
    for (patch, expected) in refused {
        let error = bed
            .instances()
            .patch("good", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err(&format!("{patch} must be refused"));
        assert!(error.to_string().contains(expected), "{patch}: {error}");
    }
    patch_spec(
        &bed,
        "good",
        json!({"powerState": "Stopped", "deletionPolicy": "Orphan"}),
    )
    .await;
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_default_credentials_a_namespace_acts_only_as_granted_and_with_the_charts_rbac() {
    // A machine another namespace created through the operator (its mark says so).
    let fixture = managed_fixture()
        .instance(
            json!({"UHostId": "uhost-of-b", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "ProjectId": PROJECT_ID, "State": "Running",
            "Remark": "compshare-operator team-b/trainer uid=0c9e2f4a",
            "SshLoginCommand": "ssh root@117.50.9.9 -p 22",
            "Password": "Yi1zLXNlY3JldA=="}),
        )
        .build()
        .unwrap();
    let bed = Bed::with_fixture("grants", fixture).await;
    bed.manage().await;
    let ns = bed.namespace.clone();
    let kubeconfig = chart::install(
        &bed,
        &ns,
        &[
            &format!("watchNamespace={ns}"),
            "defaultCredentials.existingSecret=default-keys",
            &format!("defaultCredentials.allowedNamespaces={{{ns}}}"),
            &format!("defaultCredentials.grants={{{ns}=manage@own}}"),
            &format!("management.allowedNamespaces={{{ns}}}"),
        ],
    )
    .await;
    bed.credentials("default-keys").await;
    let operator_with = |grants: String| {
        chart::as_installed(&bed, &kubeconfig, &ns)
            .arg("--default-credentials-secret")
            .arg(format!("{ns}/default-keys"))
            .arg("--default-credentials-namespaces")
            .arg(ns.clone())
            .arg("--management-namespaces")
            .arg(ns.clone())
            .arg("--default-credentials-grants")
            .arg(grants)
    };

    // With the default credentials (no credentialsRef): its own machine, and B's.
    let mut own = machine_spec();
    own.as_object_mut().unwrap().remove("credentialsRef");
    let uid = bed.create("mine", own).await.uid().unwrap();
    bed.create(
        "peek",
        json!({"uhostId": "uhost-of-b", "region": "cn-wlcb", "projectId": PROJECT_ID,
            "writeConnectionSecretToRef": {"name": "peek-ssh"}}),
    )
    .await;
    bed.create(
        "stopper",
        json!({"uhostId": "uhost-of-b", "region": "cn-wlcb", "projectId": PROJECT_ID,
            "managementPolicy": "Manage", "powerState": "Stopped"}),
    )
    .await;
    let operator = operator_with(format!("{ns}=manage@own")).start().await;

    // `manage@own`: it creates its own machine…
    bed.wait_for("mine", "running", SETTLE, |o| {
        condition(o, "Running") == Some(("True", "Running"))
    })
    .await;
    assert_eq!(bed.machines_of(&uid).await.len(), 1);
    // …but gets neither the password of B's machine nor a stop of it.
    for name in ["peek", "stopper"] {
        let o = bed
            .wait_for(name, "refused", SETTLE, |o| {
                condition(o, "Stalled") == Some(("True", "PrivilegeNotGranted"))
            })
            .await;
        let text = message(&o, "Stalled");
        assert!(
            text.contains("machines this namespace created"),
            "{name}: {text}"
        );
    }
    assert!(bed.secrets().get_opt("peek-ssh").await.unwrap().is_none());
    // Observing is not refused: B's machine is still seen as it is.
    assert_eq!(state(&bed.get("stopper").await), Some("Running"));
    assert_eq!(bed.counters().await.calls("StopCompShareInstance"), 0);

    // Its own machine is released with the chart's RBAC (finalizer, annotations).
    bed.instances()
        .delete("mine", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&bed, "mine", SETTLE).await;
    assert!(bed.machines_of(&uid).await.is_empty());
    operator.stop();
    bed.reset_counters().await;

    // Granted `manage` on every machine: the password, and the stop.
    let operator = operator_with(format!("{ns}=manage")).start().await;
    bed.wait_for(
        "peek",
        "holding the password",
        SETTLE,
        maintains_secret("peek-ssh"),
    )
    .await;
    let secret = bed.secrets().get("peek-ssh").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"b-s-secret");
    bed.wait_for("stopper", "stopped", SETTLE, |o| {
        state(o) == Some("Stopped")
    })
    .await;
    assert_eq!(bed.counters().await.calls("StopCompShareInstance"), 1);
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_cannot_happen_stalls_until_a_person_lets_go() {
    let bed = Bed::with_fixture("let-go", managed_fixture().build().unwrap()).await;
    bed.manage().await;
    bed.credentials("gone-keys").await;
    let mut spec = machine_spec();
    spec["credentialsRef"] = json!({"name": "gone-keys"});
    let uid = bed.create("trainer", spec).await.uid().unwrap();
    let _operator = bed.manager().start().await;
    bed.wait_for("trainer", "running", SETTLE, |o| {
        condition(o, "Running") == Some(("True", "Running"))
    })
    .await;
    // The credentials go, then the resource is deleted: the machine cannot be released.
    bed.secrets()
        .delete("gone-keys", &DeleteParams::default())
        .await
        .unwrap();
    bed.instances()
        .delete("trainer", &DeleteParams::default())
        .await
        .unwrap();
    let o = bed
        .wait_for("trainer", "blocked", SETTLE, |o| {
            condition(o, "Stalled") == Some(("True", "ReleaseBlocked"))
        })
        .await;
    let text = message(&o, "Stalled");
    assert!(
        text.contains("gone-keys") && text.contains("spec.deletionPolicy: Orphan"),
        "{text}"
    );
    assert_eq!(bed.machines_of(&uid).await.len(), 1);
    // A person decides to keep the machine: the resource goes, the machine stays.
    patch_spec(&bed, "trainer", json!({"deletionPolicy": "Orphan"})).await;
    wait_gone(&bed, "trainer", SETTLE).await;
    assert_eq!(bed.machines_of(&uid).await.len(), 1);
    assert_eq!(bed.counters().await.calls("TerminateCompShareInstance"), 0);
}
