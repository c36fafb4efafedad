//! Several replicas: exactly one polls the cloud, another takes over within the lease duration when
//! the leader dies or stops (a stopping leader releases the lease and exits cleanly), and statuses
//! stay fresh.

use std::time::{Duration, Instant};

use compshare_test_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

const POLL: Duration = Duration::from_secs(10);

async fn holder(bed: &Bed) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &bed.namespace);
    leases
        .get_opt("compshare-operator")
        .await
        .unwrap()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

fn replica(bed: &Bed, name: &str) -> OperatorBuilder {
    bed.operator().arg("--pod-name").arg(name).short_lease()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_and_another_takes_over() {
    let instances = (0..150)
        .map(|i| running(&format!("uhost-{i:03}"), &format!("10.0.0.{}", i + 1)))
        .collect();
    let bed = Bed::new("ha", instances).await;
    bed.credentials("keys").await;
    for i in 0..150 {
        bed.create(&format!("gpu-{i:03}"), spec(&format!("uhost-{i:03}")))
            .await;
    }
    let first = replica(&bed, "replica-a").start().await;
    first
        .wait_until_leading_is(true, Duration::from_secs(10))
        .await;
    let second = replica(&bed, "replica-b").start().await;
    bed.wait_for("gpu-149", "synced", Duration::from_secs(30), is_synced)
        .await;
    assert_eq!(holder(&bed).await.as_deref(), Some("replica-a"));
    assert_eq!(second.metric("compshare_leader").await, 0.0, "b waits");

    // Exactly one replica polls: two pages per interval, as for one operator.
    tokio::time::sleep(POLL).await;
    bed.reset_counters().await;
    tokio::time::sleep(POLL * 2).await;
    let calls = bed.describe_calls().await;
    assert!(calls.abs_diff(4) <= 1, "{calls} calls in two intervals");

    // The leader dies: the other takes over once the lease expires, and observes.
    first.kill();
    let takeover = second
        .wait_until_leading_is(true, SHORT_LEASE + Duration::from_secs(10))
        .await;
    eprintln!("takeover after the leader was killed: {takeover:?}");
    assert!(
        takeover <= SHORT_LEASE + Duration::from_secs(4),
        "took over after {takeover:?}"
    );
    assert_eq!(holder(&bed).await.as_deref(), Some("replica-b"));
    let changed = Instant::now();
    bed.set_instance("uhost-042", json!({"State": "Stopped"}))
        .await;
    bed.wait_for("gpu-042", "Stopped", POLL + Duration::from_secs(5), |o| {
        state(o) == Some("Stopped")
    })
    .await;
    assert!(changed.elapsed() <= POLL + Duration::from_secs(3));

    // A clean stop (SIGTERM) ends the process successfully and releases the lease; a waiting
    // replica sees the Lease freed and takes it at once, not when the old lease would expire.
    let third = replica(&bed, "replica-c").start().await;
    let status = second.stop().expect("b exited");
    assert!(status.success(), "b exited with {status}");
    assert_ne!(
        holder(&bed).await.as_deref(),
        Some("replica-b"),
        "b released the lease"
    );
    let takeover = third
        .wait_until_leading_is(true, Duration::from_secs(3))
        .await;
    eprintln!("takeover after the leader stopped: {takeover:?}");
    assert_eq!(holder(&bed).await.as_deref(), Some("replica-c"));
}

/// Another replica holding the Lease: it renews every second, as a live holder does, until
/// aborted.
fn usurp_lease(bed: &Bed) -> tokio::task::JoinHandle<()> {
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &bed.namespace);
    tokio::spawn(async move {
        loop {
            let now =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
            leases
                .patch(
                    "compshare-operator",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {
                        "holderIdentity": "usurper",
                        "renewTime": now,
                        "leaseDurationSeconds": SHORT_LEASE.as_secs(),
                    }})),
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// A leader whose lease is taken (another replica holds it, for instance after a long partition)
/// stops polling at once and waits, in the same process, to lead again; it must neither keep
/// polling beside the new holder nor need a restart to take part again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_polling_and_waits_to_lead_again() {
    let bed = Bed::new("lost-lease", vec![running("uhost-1", "10.0.0.1")]).await;
    bed.credentials("keys").await;
    bed.create("gpu-1", spec("uhost-1")).await;
    let mut leader = replica(&bed, "replica-a").start().await;
    leader
        .wait_until_leading_is(true, Duration::from_secs(10))
        .await;
    bed.wait_for("gpu-1", "synced", Duration::from_secs(30), is_synced)
        .await;

    let usurper = usurp_lease(&bed);
    let stepped_down = leader
        .wait_until_leading_is(false, Duration::from_secs(10))
        .await;
    eprintln!("stopped leading {stepped_down:?} after its lease was taken");
    bed.reset_counters().await;
    tokio::time::sleep(POLL + Duration::from_secs(2)).await;
    assert_eq!(
        bed.describe_calls().await,
        0,
        "a replica that does not lead polls:\n{}",
        leader.logs()
    );
    assert!(leader.is_running(), "it exited:\n{}", leader.logs());
    assert!(leader.healthy().await);
    assert_eq!(holder(&bed).await.as_deref(), Some("usurper"));

    // The other holder goes and its lease runs out: this replica leads again and observes again.
    usurper.abort();
    let retaken = leader
        .wait_until_leading_is(true, SHORT_LEASE + Duration::from_secs(10))
        .await;
    eprintln!("led again {retaken:?} after the other holder stopped renewing");
    assert_eq!(holder(&bed).await.as_deref(), Some("replica-a"));
    bed.set_instance("uhost-1", json!({"State": "Stopped"}))
        .await;
    bed.wait_for("gpu-1", "Stopped", POLL + Duration::from_secs(5), |o| {
        state(o) == Some("Stopped") && is_synced(o)
    })
    .await;
    let status = leader.stop().expect("exited");
    assert!(status.success(), "exited with {status}");
}
