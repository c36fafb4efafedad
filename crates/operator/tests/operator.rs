//! The operator against a real kube-apiserver and etcd and the CompShare simulator: admission,
//! status, events, batching, quiet steady state, credentials, connection Secrets, annotations and
//! printer columns. Each test has its own namespace, simulator and operator process.

use std::time::{Duration, Instant};

use compshare_test_support::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const POLL: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_with_clear_messages() {
    let bed = Bed::new("admission", vec![]).await;
    let cases = [
        (
            json!({"region": "cn-wlcb"}),
            "set spec.uhostId (a machine that exists) or spec.machine (a machine to create)",
        ),
        (json!({"uhostId": "uhost-1"}), "spec.region: Required value"),
        (json!({"uhostId": "", "region": "cn-wlcb"}), "spec.uhostId"),
        (
            json!({"uhostId": "uhost 1", "region": "cn-wlcb"}),
            "uhostId must be a CompShare instance id",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "CN WLCB"}),
            "region must be a CompShare region such as cn-wlcb",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "5s"}),
            "pollInterval must be between 10s and 24h",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "25h"}),
            "pollInterval must be between 10s and 24h",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "soon"}),
            "pollInterval must be a duration such as 30s, 5m or 1h30m",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {"name": "Not_A_Name"}}),
            "must be a valid Secret name",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "writeConnectionSecretToRef": {"name": "-x"}}),
            "must be a valid Secret name",
        ),
        (
            json!({"uhostId": "u".repeat(65), "region": "cn-wlcb"}),
            "spec.uhostId: Too long: may not be more than 64",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "r".repeat(33)}),
            "spec.region: Too long",
        ),
        (json!({"uhostId": "uhost-1", "region": ""}), "spec.region"),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "zone": "Zone 1"}),
            "zone must be a CompShare zone such as cn-wlcb-01",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "projectId": "org abc"}),
            "projectId must be a CompShare project id",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "1.5h"}),
            "pollInterval must be a duration such as 30s, 5m or 1h30m",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "-10s"}),
            "pollInterval must be a duration such as 30s, 5m or 1h30m",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "9999ms"}),
            "pollInterval must be between 10s and 24h",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {"name": ""}}),
            "spec.credentialsRef.name",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {}}),
            "spec.credentialsRef.name: Required value",
        ),
        (
            json!({"uhostId": "uhost-1", "region": "cn-wlcb", "credentialsRef": {"name": "x".repeat(254)}}),
            "spec.credentialsRef.name: Too long",
        ),
        (
            json!({"uhostId": 42, "region": "cn-wlcb"}),
            "spec.uhostId: Invalid value: \"integer\"",
        ),
    ];
    bed.assert_refused(cases).await;

    bed.create(
        "good",
        json!({"uhostId": "uhost-1", "region": "cn-wlcb", "pollInterval": "1h30m"}),
    )
    .await;
    let api = bed.instances();
    let change = json!({"spec": {"uhostId": "uhost-2"}});
    let error = api
        .patch("good", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("uhostId is immutable");
    assert!(
        error.to_string().contains("uhostId is immutable"),
        "{error}"
    );
    let change = json!({"spec": {"pollInterval": "2h", "zone": "cn-wlcb-01"}});
    api.patch("good", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("other fields may change");
}

/// The operator applies a status on the version of the resource it computed it from (its own
/// later writes aside), so that a reconciliation working from a cache that has not yet seen a
/// newer version, its own last status above all, conflicts and runs again instead of writing
/// over the last call's record. That rests on the apiserver taking `metadata.resourceVersion` in
/// a server-side apply of the status subresource as a precondition, which this checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_applied_on_an_older_version_conflicts() {
    let bed = Bed::new("status-version", vec![]).await;
    let read = bed
        .create("m", json!({"uhostId": "uhost-1", "region": "cn-wlcb"}))
        .await;
    let params = PatchParams::apply("compshare-operator").force();
    let apply = async |version: Option<String>, reason: &str| {
        let status = json!({
            "apiVersion": "compshare.ucloud.cn/v1alpha1",
            "kind": "CompShareInstance",
            "metadata": {"resourceVersion": version},
            "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": reason, "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        });
        bed.instances()
            .patch_status("m", &params, &Patch::Apply(&status))
            .await
    };
    let written = apply(read.metadata.resource_version.clone(), "First")
        .await
        .expect("a status on the version read is applied");
    // The same resource as read before that write: refused, and the first status stays.
    match apply(read.metadata.resource_version.clone(), "Stale").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a status on an older version was not refused: {other:?}"),
    }
    let stored = bed.get("m").await.status.unwrap();
    assert_eq!(stored.conditions[0].reason, "First");
    apply(written.metadata.resource_version, "Second")
        .await
        .expect("a status on the version written is applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_reach_the_right_status_from_the_simulator() {
    let mut container = running("uhost-container", "117.50.45.67");
    container["IPSet"] = json!([]);
    container["InstanceType"] = json!("Container");
    container["SshLoginCommand"] = json!("ssh -p 23 ubuntu@117.50.45.67");
    let mut starting = running("uhost-starting", "1.1.1.3");
    starting["State"] = json!("Starting");
    let mut broken = running("uhost-broken", "1.1.1.4");
    broken["State"] = json!("Install Fail");
    let bed = Bed::new(
        "status",
        vec![
            running("uhost-running", "117.50.1.2"),
            container,
            starting,
            broken,
        ],
    )
    .await;
    bed.credentials("keys").await;
    for (name, id) in [
        ("running", "uhost-running"),
        ("container", "uhost-container"),
        ("starting", "uhost-starting"),
        ("broken", "uhost-broken"),
        ("missing", "uhost-missing"),
    ] {
        bed.create(name, spec(id)).await;
    }
    let _operator = bed.operator().start().await;

    let running = bed.wait_for("running", "synced", SETTLE, is_synced).await;
    let status = running.status.as_ref().unwrap();
    assert_eq!(condition(&running, "Ready"), Some(("True", "Running")));
    assert_eq!(
        condition(&running, "Stalled"),
        None,
        "abnormal-true conditions are absent"
    );
    assert_eq!(condition(&running, "Reconciling"), None);
    assert_eq!(condition(&running, "Paused"), None);
    assert_eq!(status.state.as_deref(), Some("Running"));
    assert_eq!(status.public_ip.as_deref(), Some("117.50.1.2"));
    let ssh = status.ssh.as_ref().unwrap();
    assert_eq!(
        (ssh.host.as_str(), ssh.port, ssh.user.as_deref()),
        ("117.50.1.2", 60022, Some("root"))
    );
    assert_eq!(status.gpu.as_ref().unwrap().summary, "4090×2");
    assert_eq!(status.memory.as_ref().unwrap().0, "64Gi");
    assert_eq!(status.observed_generation, running.metadata.generation);
    assert_eq!(
        serde_json::to_value(&status.addresses).unwrap(),
        json!([
            {"type": "ExternalIP", "address": "117.50.1.2"},
            {"type": "InternalIP", "address": "10.9.0.4"},
        ])
    );

    let container = bed.wait_for("container", "synced", SETTLE, is_synced).await;
    let status = container.status.as_ref().unwrap();
    assert!(status.addresses.is_empty() && status.public_ip.is_none());
    assert_eq!(status.ssh.as_ref().unwrap().address, "117.50.45.67:23");

    let starting = bed.wait_for("starting", "synced", SETTLE, is_synced).await;
    assert_eq!(
        condition(&starting, "Reconciling"),
        Some(("True", "Starting"))
    );
    assert_eq!(condition(&starting, "Ready"), Some(("False", "Starting")));

    let broken = bed.wait_for("broken", "synced", SETTLE, is_synced).await;
    assert_eq!(state(&broken), Some("Install Fail"));
    assert_eq!(
        condition(&broken, "Stalled"),
        Some(("True", "InstallFailed"))
    );

    let missing = bed.wait_for("missing", "synced", SETTLE, is_synced).await;
    assert_eq!(condition(&missing, "Stalled"), Some(("True", "NotFound")));
    assert_eq!(condition(&missing, "Ready"), Some(("False", "NotFound")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_reaches_status_within_the_poll_interval_with_one_event_and_no_other_writes()
{
    let bed = Bed::new(
        "change",
        vec![running("uhost-a", "1.2.3.4"), running("uhost-b", "1.2.3.5")],
    )
    .await;
    bed.credentials("keys").await;
    bed.create("a", spec("uhost-a")).await;
    bed.create("b", spec("uhost-b")).await;
    let operator = bed.operator().start().await;
    bed.wait_for("a", "synced", SETTLE, is_synced).await;
    bed.wait_for("b", "synced", SETTLE, is_synced).await;

    // Steady state: over two poll intervals nothing is written, not even a no-op.
    let before_a = bed.get("a").await;
    let before_b = bed.get("b").await;
    let writes = operator.writes().await;
    tokio::time::sleep(POLL * 2 + Duration::from_secs(1)).await;
    assert_eq!(operator.writes().await, writes, "writes in steady state");
    assert_eq!(
        bed.get("a").await.metadata.resource_version,
        before_a.metadata.resource_version
    );
    assert_eq!(
        bed.get("b").await.metadata.resource_version,
        before_b.metadata.resource_version
    );
    assert!(
        bed.events("a").await.is_empty(),
        "no events without transitions"
    );

    let changed_at = Instant::now();
    bed.set_instance("uhost-a", json!({"State": "Stopped"}))
        .await;
    let stopped = bed
        .wait_for("a", "Stopped", POLL + Duration::from_secs(3), |o| {
            state(o) == Some("Stopped")
        })
        .await;
    let latency = changed_at.elapsed();
    assert!(latency <= POLL + Duration::from_secs(2), "took {latency:?}");
    // Stopped with nothing asking it to run: settled.
    assert_eq!(condition(&stopped, "Ready"), Some(("True", "Stopped")));
    assert_eq!(condition(&stopped, "Running"), Some(("False", "Stopped")));

    // One event, and it stays one; the other resource was not touched.
    tokio::time::sleep(POLL + Duration::from_secs(1)).await;
    assert_eq!(bed.event_reasons("a").await, ["StateChanged"]);
    let event = &bed.events("a").await[0];
    assert_eq!(
        event.note.as_deref(),
        Some("Instance state changed from Running to Stopped")
    );
    assert_eq!(
        bed.get("b").await.metadata.resource_version,
        before_b.metadata.resource_version
    );
    assert_eq!(
        operator.writes().await,
        writes + 2.0,
        "one status write and one event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_resources_in_one_account_and_region_cost_ceil_n_over_100_calls_per_interval() {
    const N: usize = 250;
    let instances = (0..N)
        .map(|i| {
            running(
                &format!("uhost-{i:04}"),
                &format!("10.1.{}.{}", i / 200, i % 200 + 1),
            )
        })
        .collect();
    let bed = Bed::new("batching", instances).await;
    bed.credentials("keys").await;
    for i in 0..N {
        bed.create(&format!("gpu-{i:04}"), spec(&format!("uhost-{i:04}")))
            .await;
    }
    let operator = bed.operator().start().await;
    bed.wait_all_synced(
        [0, N / 2, N - 1].map(|i| format!("gpu-{i:04}")),
        Duration::from_secs(60),
    )
    .await;
    // Settle past the first polls, then count whole intervals.
    tokio::time::sleep(POLL).await;
    bed.reset_counters().await;
    let intervals = 3;
    tokio::time::sleep(POLL * intervals).await;
    let calls = bed.describe_calls().await;
    let per_interval = N.div_ceil(100) as u64; // 3; a peer would make 250
    let expected = per_interval * u64::from(intervals);
    assert!(
        calls.abs_diff(expected) <= 1,
        "{calls} calls in {intervals} intervals, expected {expected}"
    );
    let ids = bed.counters().await.ids_requested();
    assert!(
        ids >= (N as u64) * u64::from(intervals) - 100,
        "every instance polled each interval: {ids} ids"
    );
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains(&format!("compshare_instances{{state=\"Running\"}} {N}")),
        "{metrics}"
    );
    let group = metrics
        .lines()
        .find(|l| l.starts_with("compshare_poll_group_instances{region=\"cn-wlcb\""))
        .expect("the group's gauge");
    assert!(group.ends_with(&format!(" {N}")), "{group}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_stall_with_a_clear_reason_and_no_crash() {
    let bed = Bed::new("credentials", vec![running("uhost-a", "1.2.3.4")]).await;
    let mut operator = bed.operator().start().await;
    let with = |name: &str, secret: &str| {
        let mut s = spec("uhost-a");
        s["credentialsRef"]["name"] = json!(secret);
        (name.to_owned(), s)
    };
    let cases = [
        (with("no-secret", "absent"), "CredentialsMissing", "Secret"),
        (
            with("no-private-key", "half"),
            "CredentialsInvalid",
            "has no key \"privateKey\"",
        ),
        (
            with("empty-key", "empty"),
            "CredentialsInvalid",
            "key \"publicKey\" is empty",
        ),
        (
            with("non-ascii", "accented"),
            "CredentialsInvalid",
            "printable ASCII",
        ),
        (
            with("wrong-private-key", "wrong"),
            "CredentialsRejected",
            "RetCode 171: Signature VerifyAC Error",
        ),
        (
            with("unknown-account", "stranger"),
            "CredentialsRejected",
            "RetCode 172",
        ),
        (
            (
                "no-ref".to_owned(),
                json!({"uhostId": "uhost-a", "region": "cn-wlcb", "pollInterval": "10s"}),
            ),
            "CredentialsMissing",
            "spec.credentialsRef is not set",
        ),
    ];
    bed.secret("half", &[("publicKey", PUBLIC_KEY)]).await;
    bed.secret("empty", &[("publicKey", ""), ("privateKey", PRIVATE_KEY)])
        .await;
    bed.secret(
        "accented",
        &[("publicKey", "clé"), ("privateKey", PRIVATE_KEY)],
    )
    .await;
    bed.secret(
        "wrong",
        &[("publicKey", PUBLIC_KEY), ("privateKey", "not-the-key")],
    )
    .await;
    bed.secret(
        "stranger",
        &[("publicKey", "nobody"), ("privateKey", "nothing")],
    )
    .await;
    for ((name, spec), _, _) in &cases {
        bed.create(name, spec.clone()).await;
    }
    for ((name, _), reason, expected) in &cases {
        let o = bed
            .wait_for(name, reason, SETTLE, |o| {
                condition(o, "Stalled") == Some(("True", reason))
            })
            .await;
        assert_eq!(condition(&o, "Synced").unwrap().0, "False", "{name}");
        let text = message(&o, "Stalled");
        assert!(text.contains(expected), "{name}: {text}");
        assert!(
            !text.contains(PRIVATE_KEY) && !text.contains("not-the-key"),
            "{name}: {text}"
        );
    }
    assert!(operator.is_running() && operator.healthy().await);

    // Rejected keys are not retried in a loop: at most one call per poll interval each.
    bed.reset_counters().await;
    tokio::time::sleep(POLL * 2).await;
    let calls = bed.describe_calls().await;
    assert!(
        calls <= 6,
        "{calls} calls for two rejected key pairs in two intervals"
    );

    // Fixing the Secret recovers within the re-check interval (the poll interval).
    bed.credentials("absent").await;
    bed.wait_for(
        "no-secret",
        "recovered",
        POLL * 2 + Duration::from_secs(5),
        is_synced,
    )
    .await;
    assert!(!operator.logs().contains(PRIVATE_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_secret_is_written_owned_and_holds_the_decoded_password() {
    let bed = Bed::new("connection", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    let mut s = spec("uhost-a");
    s["writeConnectionSecretToRef"] = json!({"name": "a-ssh"});
    let created = bed.create("a", s).await;
    // The most verbose logging there is: the password must not reach it either.
    let operator = bed.operator().log_filter("trace").start().await;
    let a = bed
        .wait_for(
            "a",
            "holding its connection Secret",
            SETTLE,
            maintains_secret("a-ssh"),
        )
        .await;
    let secret = bed.secrets().get("a-ssh").await.unwrap();
    let data = secret.data.clone().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(text("password"), PASSWORD);
    assert_eq!(text("host"), "1.2.3.4");
    assert_eq!(text("port"), "60022");
    assert_eq!(text("username"), "root");
    assert_eq!(text("sshCommand"), "ssh root@1.2.3.4 -p 60022");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CompShareInstance", Some(true))
    );

    // The password goes nowhere else.
    let status = serde_json::to_string(&a.status).unwrap();
    let events = serde_json::to_string(&bed.events("a").await).unwrap();
    for (place, text) in [
        ("status", status),
        ("events", events),
        ("logs", operator.logs()),
        ("metrics", operator.metrics().await),
    ] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("c2VjcmV0LXBhc3N3b3JkLTQy"),
            "password in {place}"
        );
        assert!(!text.contains(PRIVATE_KEY), "private key in {place}");
    }
    assert!(operator.logs().contains("TRACE"), "trace logging was on");

    // A changed password is written once; an unchanged one never again.
    bed.set_instance("uhost-a", json!({"Password": "bmV3LXBhc3N3b3Jk"}))
        .await;
    bed.annotate("a", "compshare.ucloud.cn/refresh-requested-at", Some("1"))
        .await;
    poll_until(Duration::from_secs(10), async || {
        let secret = bed.secrets().get("a-ssh").await.unwrap();
        (secret.data.unwrap()["password"].0 == b"new-password")
            .then_some(())
            .ok_or(())
    })
    .await
    .expect("the new password was not written");

    // A Secret of that name that someone else owns is left alone, and said so.
    bed.secret("taken", &[("note", "not yours")]).await;
    let change = json!({"spec": {"writeConnectionSecretToRef": {"name": "taken"}}});
    bed.instances()
        .patch("a", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    bed.wait_for("a", "in conflict", SETTLE, |o| {
        condition(o, "Stalled") == Some(("True", "ConnectionSecretConflict"))
    })
    .await;
    let taken = bed.secrets().get("taken").await.unwrap();
    assert!(taken.data.unwrap().contains_key("note"));
    // The Secret it no longer maintains is removed.
    assert!(
        bed.secrets().get_opt("a-ssh").await.unwrap().is_none(),
        "the old Secret is removed"
    );

    // Deleting the resource deletes its Secret (the garbage collector honours the owner).
    let change = json!({"spec": {"writeConnectionSecretToRef": {"name": "a-ssh-2"}}});
    bed.instances()
        .patch("a", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    bed.wait_for("a", "holding a-ssh-2", SETTLE, maintains_secret("a-ssh-2"))
        .await;
    bed.instances()
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    poll_until(Duration::from_secs(60), async || {
        let secret = bed.secrets().get_opt("a-ssh-2").await.unwrap();
        secret.is_none().then_some(()).ok_or(())
    })
    .await
    .expect("the garbage collector did not delete the Secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_refresh_annotations() {
    let bed = Bed::new(
        "annotations",
        vec![running("uhost-a", "1.2.3.4"), running("uhost-b", "1.2.3.5")],
    )
    .await;
    bed.credentials("keys").await;
    let mut slow = spec("uhost-a");
    slow["pollInterval"] = json!("1h");
    bed.create("slow", slow).await;
    bed.create("paused", spec("uhost-b")).await;
    let _operator = bed.operator().start().await;
    bed.wait_for("slow", "synced", SETTLE, is_synced).await;
    bed.wait_for("paused", "synced", SETTLE, is_synced).await;

    // Refresh: an hourly resource sees a change at once, once per new value.
    bed.set_instance("uhost-a", json!({"State": "Stopped"}))
        .await;
    bed.reset_counters().await;
    let asked = Instant::now();
    bed.annotate(
        "slow",
        "compshare.ucloud.cn/refresh-requested-at",
        Some("2026-11-26T10:00:00Z"),
    )
    .await;
    let slow = bed
        .wait_for("slow", "refreshed", Duration::from_secs(5), |o| {
            state(o) == Some("Stopped")
        })
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "refresh took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        slow.status
            .as_ref()
            .unwrap()
            .last_handled_refresh
            .as_deref(),
        Some("2026-11-26T10:00:00Z")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bed.describe_calls().await,
        1,
        "one call for one refresh request"
    );

    // Pause: nothing is observed until the annotation goes.
    bed.annotate("paused", "compshare.ucloud.cn/paused", Some("true"))
        .await;
    bed.wait_for("paused", "paused", SETTLE, |o| {
        condition(o, "Paused") == Some(("True", "PausedByAnnotation"))
    })
    .await;
    bed.set_instance("uhost-b", json!({"State": "Stopped"}))
        .await;
    tokio::time::sleep(POLL + Duration::from_secs(2)).await;
    let paused = bed.get("paused").await;
    assert_eq!(
        state(&paused),
        Some("Running"),
        "a paused resource is not observed"
    );
    assert_eq!(condition(&paused, "Reconciling"), None);
    bed.annotate("paused", "compshare.ucloud.cn/paused", None)
        .await;
    let resumed = bed
        .wait_for("paused", "resumed", Duration::from_secs(5), |o| {
            state(o) == Some("Stopped")
        })
        .await;
    assert_eq!(condition(&resumed, "Paused"), None);
    bed.wait_for_event_reasons(
        "paused",
        &["Paused", "Resumed", "StateChanged"],
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_the_columns() {
    let bed = Bed::new("columns", vec![running("uhost-a", "117.50.1.2")]).await;
    bed.credentials("keys").await;
    bed.create("gpu-box", spec("uhost-a")).await;
    let _operator = bed.operator().start().await;
    bed.wait_for("gpu-box", "synced", SETTLE, is_synced).await;

    let table = bed.kubectl(&["get", "compshareinstances"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATE", "READY", "GPU", "PUBLIC-IP", "SSH", "AGE"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "gpu-box",
            "Running",
            "True",
            "4090×2",
            "117.50.1.2",
            "117.50.1.2:60022"
        ]
    );

    let wide = bed.kubectl(&["get", "csinst", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATE",
            "READY",
            "GPU",
            "PUBLIC-IP",
            "SSH",
            "AGE",
            "UHOST-ID",
            "ZONE",
            "INSTANCE",
            "SYNCED",
            "REASON"
        ]
    );
    assert!(
        wide.contains("uhost-a") && wide.contains("cn-wlcb-01") && wide.contains("name-uhost-a")
    );

    let by_category = bed.kubectl(&["get", "compshare"]);
    assert!(by_category.contains("gpu-box"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_within_the_credentials_recheck() {
    let bed = Bed::new("rotation", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    bed.create("a", spec("uhost-a")).await;
    let _operator = bed
        .operator()
        .arg("--credentials-recheck")
        .arg("3s")
        .start()
        .await;
    bed.wait_for("a", "synced", SETTLE, is_synced).await;

    // A wrong key put in the Secret is used (and rejected) without touching the resource...
    bed.secret(
        "keys",
        &[("publicKey", PUBLIC_KEY), ("privateKey", "revoked-key")],
    )
    .await;
    bed.wait_for("a", "using the new key", Duration::from_secs(15), |o| {
        condition(o, "Stalled") == Some(("True", "CredentialsRejected"))
    })
    .await;
    // ...and so is the right one again.
    bed.credentials("keys").await;
    bed.wait_for("a", "recovered", Duration::from_secs(15), is_synced)
        .await;
}
