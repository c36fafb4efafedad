//! Past one replica: two operators, each watching one shard (`--watch-label-selector
//! sharding.fluxcd.io/key=…`, Flux's convention) over the same account and region, the real
//! operator against the simulator and the test bed's apiserver. Each shard batches its own
//! members (⌈members/100⌉ calls), no instance is asked for by both, moving a resource's label
//! moves it to the other shard, a discovery's resources follow its shard, and a selector the
//! apiserver refuses stops the operator with a message.

use std::time::Duration;

use compshare_test_support::{Bed, Operator, poll_until, running, spec, state};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const SHARD: &str = "sharding.fluxcd.io/key";
const POLL: Duration = Duration::from_secs(10);
/// Members of shard a and of shard b.
const IN_A: usize = 120;
const IN_B: usize = 80;

fn name(i: usize) -> String {
    format!("gpu-{i:04}")
}

fn machine(i: usize) -> String {
    format!("uhost-{i:04}")
}

async fn shard_operator(bed: &Bed, shard: &str) -> Operator {
    bed.operator()
        .arg("--watch-label-selector")
        .arg(format!("{SHARD}={shard}"))
        .arg("--lease-name")
        .arg(format!("compshare-operator-{shard}"))
        .arg("--default-poll-interval")
        .arg(format!("{}s", POLL.as_secs()))
        .start()
        .await
}

/// Describe calls an operator made, from its own metrics.
async fn calls(operator: &Operator) -> f64 {
    operator
        .metric(r#"compshare_cloud_calls_total{action="DescribeCompShareInstance",code="0"}"#)
        .await
}

async fn members(operator: &Operator) -> f64 {
    let metrics = operator.metrics().await;
    metrics
        .lines()
        .filter(|l| l.starts_with("compshare_poll_group_instances{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_share_an_account_without_observing_anything_twice() {
    let n = IN_A + IN_B;
    let bed = Bed::new(
        "sharding",
        (0..n)
            .map(|i| running(&machine(i), &format!("10.2.{}.{}", i / 200, i % 200 + 1)))
            .collect(),
    )
    .await;
    bed.credentials("keys").await;
    for i in 0..n {
        let created = bed.create(&name(i), spec(&machine(i))).await;
        let shard = if i < IN_A { "a" } else { "b" };
        let patch = json!({"metadata": {"labels": {SHARD: shard}}});
        bed.instances()
            .patch(
                &created.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    // One resource in no shard: nobody observes it.
    bed.create("unsharded", spec(&machine(0))).await;

    let a = shard_operator(&bed, "a").await;
    let b = shard_operator(&bed, "b").await;
    bed.wait_all_synced(
        [0, IN_A - 1, IN_A, n - 1].map(name),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(members(&a).await, IN_A as f64);
    assert_eq!(members(&b).await, IN_B as f64);
    let unsharded = bed.get("unsharded").await;
    assert!(
        unsharded
            .status
            .as_ref()
            .is_none_or(|s| s.conditions.is_empty() && s.state.is_none()),
        "a resource outside every shard is left alone: {:?}",
        unsharded.status
    );

    // Counted over whole intervals: each shard batches its own members, and no instance is asked
    // for by both (every id once per interval).
    tokio::time::sleep(POLL).await;
    bed.reset_counters().await;
    let (a0, b0) = (calls(&a).await, calls(&b).await);
    let intervals = 3;
    tokio::time::sleep(POLL * intervals).await;
    let (a_calls, b_calls) = (calls(&a).await - a0, calls(&b).await - b0);
    let per = |members: usize| (members.div_ceil(100) * intervals as usize) as f64;
    assert!(
        (a_calls - per(IN_A)).abs() <= 1.0,
        "shard a: {a_calls} calls in {intervals} intervals"
    );
    assert!(
        (b_calls - per(IN_B)).abs() <= 1.0,
        "shard b: {b_calls} calls in {intervals} intervals"
    );
    let counters = bed.counters().await;
    let ids = counters.ids_requested();
    let expected = (n * intervals as usize) as u64;
    assert!(
        ids <= expected + 100 && ids + 100 >= expected,
        "every id once per interval, not twice: {ids} ids in {intervals} intervals"
    );

    // Moving the label moves the resource: shard b observes it, shard a lets it go.
    let moved = name(0);
    let patch = json!({"metadata": {"labels": {SHARD: "b"}}});
    bed.instances()
        .patch(&moved, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    poll_until(Duration::from_secs(20), async || {
        let (in_a, in_b) = (members(&a).await, members(&b).await);
        if (in_a, in_b) == ((IN_A - 1) as f64, (IN_B + 1) as f64) {
            Ok(())
        } else {
            Err((in_a, in_b))
        }
    })
    .await
    .unwrap_or_else(|m| panic!("members after the move: {m:?}"));
    bed.set_instance(&machine(0), json!({"State": "Stopped"}))
        .await;
    bed.wait_for(&moved, "shown stopped by shard b", POLL * 3, |r| {
        state(r) == Some("Stopped")
    })
    .await;

    a.assert_no_failed_reconciles().await;
    b.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_the_apiserver_refuses_stops_the_operator_with_a_message() {
    let bed = Bed::new("sharding-bad-selector", Vec::new()).await;
    let output = std::process::Command::new(compshare_test_support::operator_binary())
        .args([
            "run",
            "--endpoint",
            "http://127.0.0.1:1",
            "--allow-insecure-http",
        ])
        .args(["--namespace", &bed.namespace])
        .args(["--watch-label-selector", "sharding.fluxcd.io/key in"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .env("KUBECONFIG", bed.control_plane.kubeconfig_path())
        .env_remove("COMPSHARE_WATCH_NAMESPACE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--watch-label-selector") && stderr.contains("is not a label selector"),
        "{stderr}"
    );
}
