//! A refresh storm: one namespace changes the refresh annotation of its resources as fast as it
//! can, while another namespace on the same account waits for a change of its own machine. The
//! storm must not spend the account's budget (calls are counted at the simulator), and the other
//! namespace's change must reach status as fast as without it.
//!
//! A test binary of its own: the operator watches every namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use compshare_operator::resource::REFRESH_ANNOTATION;
use compshare_test_support::*;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const REGIONS: [&str; 4] = ["cn-wlcb", "cn-sh2", "cn-bj2", "cn-gd"];
/// The stormy namespace's resources, spread over the regions (one poll group each).
const STORMY: usize = 40;
const STORM: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_cannot_spend_the_account_or_slow_another_namespace() {
    let mut instances: Vec<Value> = (0..STORMY)
        .map(|i| {
            let mut instance = running(&format!("uhost-storm-{i:02}"), "1.2.3.4");
            instance["Region"] = json!(REGIONS[i % REGIONS.len()]);
            instance
        })
        .collect();
    instances.push(running("uhost-calm", "1.2.3.5"));
    let stormy = Bed::with_fixture("stormy", fixture(instances)).await;
    let calm = stormy.view(
        &stormy
            .control_plane
            .create_namespace("calm")
            .await
            .expect("a second namespace"),
    );
    for bed in [&*stormy, &calm] {
        bed.credentials("keys").await;
    }
    for i in 0..STORMY {
        let mut s = spec(&format!("uhost-storm-{i:02}"));
        s["region"] = json!(REGIONS[i % REGIONS.len()]);
        stormy.create(&format!("storm-{i:02}"), s).await;
    }
    calm.create("calm", spec("uhost-calm")).await;
    // The account budget of the trial that found the defect: 300 calls a minute.
    let operator = stormy
        .operator()
        .cluster_wide()
        .arg("--account-calls-per-minute")
        .arg("300")
        .start()
        .await;
    for i in 0..STORMY {
        stormy
            .wait_for(
                &format!("storm-{i:02}"),
                "synced",
                Duration::from_secs(60),
                is_synced,
            )
            .await;
    }
    calm.wait_for("calm", "synced", Duration::from_secs(30), is_synced)
        .await;
    stormy.reset_counters().await;

    // The storm: every resource's annotation rewritten, round after round, for a minute.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let storm = tokio::spawn({
        let api = stormy.instances();
        let (stop, requests) = (stop.clone(), requests.clone());
        async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for i in 0..STORMY {
                    let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: format!("{round}")}}});
                    api.patch(
                        &format!("storm-{i:02}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .expect("annotate");
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    // Meanwhile, the calm namespace's machine stops, three times over; each change must reach
    // status within its poll interval.
    let storm_started = Instant::now();
    let mut latencies = Vec::new();
    for state in ["Stopped", "Running", "Stopped"] {
        tokio::time::sleep(Duration::from_secs(5)).await;
        calm.set_instance("uhost-calm", json!({"State": state}))
            .await;
        let changed = Instant::now();
        calm.wait_for("calm", state, POLL + Duration::from_secs(5), |o| {
            compshare_test_support::state(o) == Some(state)
        })
        .await;
        latencies.push(changed.elapsed());
    }
    let remaining = STORM.saturating_sub(storm_started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    storm.await.unwrap();
    let lasted = storm_started.elapsed();
    let calls = stormy.describe_calls().await;
    let requests = requests.load(Ordering::Relaxed);
    let metrics = operator.metrics().await;
    println!(
        "refresh storm: {requests} annotation changes in {lasted:?}, {calls} Describe calls; \
         the calm namespace's changes reached status in {latencies:?}\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("compshare_refresh_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Regular polling of 41 resources in 5 groups is 5 calls per 10 s: 30 a minute. Refreshes
    // polled right away are capped by the stormy namespace's share: half of 300 a minute, split
    // between the two namespaces on the account, 75. So at most about 105 calls, where the
    // unthrottled storm spent the whole budget (300).
    let minutes = lasted.as_secs_f64() / 60.0;
    assert!(
        (calls as f64) <= 110.0 * minutes,
        "{calls} calls in {lasted:?}"
    );
    assert!(
        requests as f64 > 300.0 * minutes,
        "the storm was too weak: {requests}"
    );
    for latency in &latencies {
        assert!(*latency <= POLL + Duration::from_secs(2), "{latencies:?}");
    }
    // The last value of each resource is the one recorded as handled.
    let last = stormy.get("storm-00").await;
    let wanted = last
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REFRESH_ANNOTATION))
        .cloned();
    stormy
        .wait_for(
            "storm-00",
            "the last refresh handled",
            Duration::from_secs(30),
            |o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.last_handled_refresh.as_deref())
                    .map(str::to_owned)
                    == wanted
            },
        )
        .await;
}
