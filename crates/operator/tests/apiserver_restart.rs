//! The apiserver and etcd stop mid-run, for longer than the leader's lease, and come back: the
//! operator keeps its process, stops polling before its unrenewable lease expires (another
//! replica may lead by then), leads again when the apiserver is back, and converges, with no
//! resource left stale. A binary of its own: it restarts this binary's control plane.

use std::time::{Duration, Instant};

use compshare_test_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_an_apiserver_and_etcd_restart() {
    let instances = (0..20)
        .map(|i| running(&format!("uhost-{i:02}"), &format!("10.0.0.{}", i + 1)))
        .collect();
    let bed = Bed::new("restart", instances).await;
    bed.credentials("keys").await;
    for i in 0..20 {
        bed.create(&format!("gpu-{i:02}"), spec(&format!("uhost-{i:02}")))
            .await;
    }
    // A lease shorter than the outage.
    let mut operator = bed.operator().short_lease().start().await;
    bed.wait_all_synced(
        (0..20).map(|i| format!("gpu-{i:02}")),
        Duration::from_secs(30),
    )
    .await;

    // Down for longer than the lease and a poll interval; the cloud changes meanwhile.
    let control_plane = bed.control_plane;
    let outage = Instant::now();
    tokio::task::spawn_blocking(move || control_plane.stop_apiserver())
        .await
        .unwrap();
    for i in 0..20 {
        bed.set_instance(&format!("uhost-{i:02}"), json!({"State": "Stopped"}))
            .await;
    }
    // Unable to renew its lease, the leader stops polling before the lease expires: by then
    // another replica may lead.
    operator
        .wait_until_leading_is(false, SHORT_LEASE.saturating_sub(outage.elapsed()))
        .await;
    println!(
        "stopped leading {:.1} s into the outage",
        outage.elapsed().as_secs_f64()
    );
    bed.reset_counters().await;
    tokio::time::sleep(Duration::from_secs(25).saturating_sub(outage.elapsed())).await;
    assert_eq!(bed.describe_calls().await, 0, "polled while cut off");
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );
    assert!(operator.healthy().await);
    tokio::task::spawn_blocking(move || control_plane.start_apiserver())
        .await
        .unwrap()
        .expect("the apiserver restarts");

    // It leads again, and every resource converges.
    let restarted = Instant::now();
    for i in 0..20 {
        bed.wait_for(
            &format!("gpu-{i:02}"),
            "Stopped",
            Duration::from_secs(60),
            |o| state(o) == Some("Stopped") && is_synced(o),
        )
        .await;
    }
    println!(
        "all 20 converged {:.1} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    // And it watches again: a change made now arrives too. (Its controller started afresh when it
    // led again, so no watch waits out a reconnect backoff grown during the outage.)
    bed.set_instance("uhost-07", json!({"State": "Running"}))
        .await;
    bed.annotate(
        "gpu-07",
        "compshare.ucloud.cn/refresh-requested-at",
        Some("after-restart"),
    )
    .await;
    let asked = Instant::now();
    bed.wait_for("gpu-07", "Running", Duration::from_secs(20), |o| {
        state(o) == Some("Running")
    })
    .await;
    println!(
        "a change after the restart reached status in {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    assert!(operator.is_running());
}
