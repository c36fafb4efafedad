//! The apiserver and etcd stop mid-run and come back: the operator keeps its process, resumes
//! watching, and converges, with no resource left stale. A binary of its own: it restarts this
//! binary's control plane.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

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
    let mut operator = bed.operator().start().await;
    bed.wait_all_synced(
        (0..20).map(|i| format!("gpu-{i:02}")),
        Duration::from_secs(30),
    )
    .await;

    // Down for longer than a poll interval; the cloud changes meanwhile.
    let control_plane = bed.control_plane;
    tokio::task::spawn_blocking(move || control_plane.stop_apiserver())
        .await
        .unwrap();
    for i in 0..20 {
        bed.set_instance(&format!("uhost-{i:02}"), json!({"State": "Stopped"}))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
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

    // Every resource converges (the controller's retries carry the pending writes).
    for i in 0..20 {
        bed.wait_for(
            &format!("gpu-{i:02}"),
            "Stopped",
            Duration::from_secs(60),
            |o| state(o) == Some("Stopped") && is_synced(o),
        )
        .await;
    }
    // And it watches again: a change made now arrives too. The watch reconnects on the watcher's
    // backoff (kube-rs's default, like client-go's reflector: 0.8 s doubling to 30 s, with jitter),
    // which grew while the apiserver was down, so the first event can take up to 30 s to arrive.
    bed.set_instance("uhost-07", json!({"State": "Running"}))
        .await;
    bed.annotate(
        "gpu-07",
        "compshare.ucloud.cn/refresh-requested-at",
        Some("after-restart"),
    )
    .await;
    let asked = std::time::Instant::now();
    bed.wait_for("gpu-07", "Running", Duration::from_secs(45), |o| {
        state(o) == Some("Running")
    })
    .await;
    println!(
        "a change after the restart reached status in {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    assert!(operator.is_running());
}
