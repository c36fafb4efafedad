//! Hostile but realistic inputs, against a real kube-apiserver and the simulator: answers of odd
//! shapes, a redirecting or oversized endpoint, a corrected key, edited and deleted connection
//! Secrets, the longest legal names, spec edits that change the lookup, and answers too large
//! for a status. Each test is the regression test of a defect a hostile trial found.

use std::time::{Duration, Instant};

use compshare_test_support::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const POLL: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_odd_instance_marks_only_its_own_resource() {
    let mut odd_field = running("uhost-odd-field", "1.2.3.4");
    odd_field["Softwares"] = json!(["JupyterLab"]);
    let mut odd_state = running("uhost-odd-state", "1.2.3.5");
    odd_state["State"] = json!({"Code": 3});
    let bed = Bed::new(
        "odd",
        vec![odd_field, odd_state, running("uhost-fine", "1.2.3.6")],
    )
    .await;
    bed.credentials("keys").await;
    for (name, id) in [
        ("odd-field", "uhost-odd-field"),
        ("odd-state", "uhost-odd-state"),
        ("fine", "uhost-fine"),
    ] {
        bed.create(name, spec(id)).await;
    }
    let _operator = bed.operator().start().await;

    let fine = bed.wait_for("fine", "synced", SETTLE, is_synced).await;
    assert_eq!(condition(&fine, "Ready"), Some(("True", "Running")));
    // The odd field is left out, named, and the rest of that instance is used.
    let odd = bed.wait_for("odd-field", "synced", SETTLE, is_synced).await;
    assert_eq!(condition(&odd, "Ready"), Some(("True", "Running")));
    assert!(message(&odd, "Synced").ends_with("left out: Softwares"));
    assert_eq!(
        odd.status.as_ref().unwrap().public_ip.as_deref(),
        Some("1.2.3.4")
    );
    // The element that cannot be read marks its own resource only, naming the field.
    let unreadable = bed
        .wait_for("odd-state", "failing", SETTLE, |o| {
            condition(o, "Synced") == Some(("False", "MalformedAnswer"))
        })
        .await;
    let said = message(&unreadable, "Synced");
    assert!(
        said.contains("uhost-odd-state") && said.contains("State"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_endpoint_is_an_http_problem_not_rejected_credentials() {
    let bed = Bed::new("redirect", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    bed.inject(json!({"kind": "redirect", "status": 302, "location": "https://login.example/"}))
        .await;
    bed.create("a", spec("uhost-a")).await;
    let _operator = bed.operator().start().await;
    let a = bed
        .wait_for("a", "stalled", SETTLE, |o| {
            condition(o, "Stalled").is_some()
        })
        .await;
    assert_eq!(condition(&a, "Stalled"), Some(("True", "InvalidRequest")));
    let said = message(&a, "Stalled");
    assert!(
        said.contains("HTTP status 302") && said.contains("https://login.example/"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_private_key_is_noticed_within_the_poll_interval() {
    let bed = Bed::new("corrected", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.secret(
        "keys",
        &[
            ("publicKey", PUBLIC_KEY),
            ("privateKey", "a-wrong-private-key"),
        ],
    )
    .await;
    bed.create("a", spec("uhost-a")).await;
    let _operator = bed.operator().start().await;
    bed.wait_for("a", "rejected", SETTLE, |o| {
        condition(o, "Stalled") == Some(("True", "CredentialsRejected"))
    })
    .await;
    bed.credentials("keys").await;
    let fixed_at = Instant::now();
    bed.wait_for("a", "observed", POLL + Duration::from_secs(5), is_synced)
        .await;
    // Within the resource's poll interval (10 s, ±10 %), not at --credentials-recheck (5 min).
    let took = fixed_at.elapsed();
    println!("a corrected key noticed after {took:?}");
    assert!(took <= POLL + Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_edited_connection_secret_is_restored_within_the_poll_interval() {
    let bed = Bed::new("restored", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    let mut s = spec("uhost-a");
    s["writeConnectionSecretToRef"] = json!({"name": "a-ssh"});
    bed.create("a", s).await;
    let _operator = bed.operator().start().await;
    bed.wait_for("a", "holding a-ssh", SETTLE, maintains_secret("a-ssh"))
        .await;
    let password = |bed: &Bed| {
        let secrets = bed.secrets();
        async move {
            let secret = secrets.get_opt("a-ssh").await.unwrap()?;
            String::from_utf8(secret.data?.get("password")?.0.clone()).ok()
        }
    };

    let edit = json!({"data": {"password": "aGFja2Vk"}}); // "hacked"
    bed.secrets()
        .patch("a-ssh", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    assert_eq!(password(&bed).await.as_deref(), Some("hacked"));
    let restored = poll_until(POLL + Duration::from_secs(3), async || {
        match password(&bed).await {
            Some(p) if p == PASSWORD => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(restored, Ok(()), "the edited Secret was not restored");

    bed.secrets()
        .delete("a-ssh", &DeleteParams::default())
        .await
        .unwrap();
    let restored = poll_until(POLL + Duration::from_secs(3), async || {
        match password(&bed).await {
            Some(p) if p == PASSWORD => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(restored, Ok(()), "the deleted Secret was not restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_connection_secret_is_written_once() {
    // A container without an SSH command or a password: the Secret has nothing to hold.
    let mut bare = running("uhost-bare", "1.2.3.4");
    bare["SshLoginCommand"] = json!("");
    bare["Password"] = json!(null);
    let bed = Bed::new("empty-secret", vec![bare]).await;
    bed.credentials("keys").await;
    let mut s = spec("uhost-bare");
    s["writeConnectionSecretToRef"] = json!({"name": "bare-ssh"});
    bed.create("bare", s).await;
    let operator = bed.operator().start().await;
    bed.wait_for("bare", "holding it", SETTLE, maintains_secret("bare-ssh"))
        .await;
    let secret_writes = "compshare_kube_writes_total{kind=\"secret\"}";
    assert_eq!(operator.metric(secret_writes).await, 1.0);
    // Checked at every poll interval, never rewritten.
    tokio::time::sleep(POLL * 2 + Duration::from_secs(2)).await;
    assert_eq!(operator.metric(secret_writes).await, 1.0);
    // Nor by a restarted operator.
    operator.stop();
    let operator = bed.operator().start().await;
    tokio::time::sleep(POLL + Duration::from_secs(2)).await;
    assert_eq!(operator.metric(secret_writes).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_for_the_longest_legal_names() {
    let bed = Bed::new("long-names", vec![]).await;
    bed.credentials("keys").await;
    let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(longest.len(), 253);
    bed.create(&longest, spec("uhost-gone")).await;
    let _operator = bed.operator().start().await;
    bed.wait_for(&longest, "not found", SETTLE, |o| {
        condition(o, "Stalled") == Some(("True", "NotFound"))
    })
    .await;
    bed.wait_for_event_reasons(&longest, &["NotFound"], Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_edit_drops_the_facts_of_the_old_lookup() {
    let bed = Bed::new("region-edit", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    bed.create("a", spec("uhost-a")).await;
    let _operator = bed.operator().start().await;
    let before = bed.wait_for("a", "synced", SETTLE, is_synced).await;
    assert_eq!(state(&before), Some("Running"));
    let edit = json!({"spec": {"region": "cn-sh2"}});
    bed.instances()
        .patch("a", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let after = bed
        .wait_for("a", "observed in cn-sh2", SETTLE, |o| {
            o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await;
    assert_eq!(condition(&after, "Stalled"), Some(("True", "NotFound")));
    let status = after.status.as_ref().unwrap();
    assert!(
        status.state.is_none() && status.addresses.is_empty() && status.ssh.is_none(),
        "facts of cn-wlcb stayed: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_for_a_status_is_cut_and_stored() {
    let mut huge = running("uhost-huge", "1.2.3.4");
    // About 2 MB in all: under the client's 4 MiB cap, far over what a status should hold.
    huge["Name"] = json!("n".repeat(1 << 20));
    huge["Softwares"] = json!(
        (0..2000)
            .map(|n| json!({"Name": format!("app-{n}"), "URL": format!("https://{}", "u".repeat(500))}))
            .collect::<Vec<_>>()
    );
    let bed = Bed::new("huge", vec![huge]).await;
    bed.credentials("keys").await;
    bed.create("huge", spec("uhost-huge")).await;
    let operator = bed.operator().start().await;
    let huge = bed.wait_for("huge", "synced", SETTLE, is_synced).await;
    let status = huge.status.as_ref().unwrap();
    assert!(
        status
            .instance_name
            .as_ref()
            .unwrap()
            .ends_with("…[truncated]")
    );
    assert_eq!(status.softwares.len(), 32);
    assert!(serde_json::to_string(status).unwrap().len() < 64 << 10);
    // Stored once, not retried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator
            .metric("compshare_kube_writes_total{kind=\"status\"}")
            .await,
        1.0
    );
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_fails_with_a_reason_and_memory_stays_bounded() {
    let bed = Bed::new("oversized", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    bed.create("a", spec("uhost-a")).await;
    let operator = bed.operator().start().await;
    bed.wait_for("a", "synced", SETTLE, is_synced).await;
    // 200 MB, as in the trial (which took the process to 440 MB).
    bed.inject(json!({"kind": "oversized", "bytes": 200u64 << 20}))
        .await;
    bed.annotate("a", "compshare.ucloud.cn/refresh-requested-at", Some("1"))
        .await;
    let failing = bed
        .wait_for("a", "failing", SETTLE, |o| {
            condition(o, "Synced") == Some(("False", "MalformedAnswer"))
        })
        .await;
    assert!(message(&failing, "Synced").contains("larger than 4 MiB"));
    // What was known stays.
    assert_eq!(condition(&failing, "Ready"), Some(("True", "Running")));
    let peak = peak_rss_mib(operator.pid());
    println!("operator peak RSS with a 200 MB answer: {peak:.1} MiB");
    assert!(peak < 80.0, "peak RSS {peak:.1} MiB");
}

/// `VmHWM` of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}
