//! Faults from the cloud, through the simulator's fault injection, against the real control
//! plane: every fault kind, for a number of calls and for a duration, each on an account of its
//! own so that all run at once. The operator keeps running, `Synced` turns False with the cloud's
//! code and message, what was known stays, each transition is written and announced once, and
//! every resource is back to `Synced=True` after the fault.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compshare_operator::resource::{CompShareInstance, CompShareInstanceStatus};
use compshare_simulator::Fixture;
use compshare_test_support::*;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// A fault kind and what the status must say about it.
struct Case {
    name: &'static str,
    fault: Value,
    /// Synced=False with this reason and a message containing this text; `None` when the fault
    /// leaves Synced alone.
    synced: Option<(&'static str, &'static str)>,
    /// Stalled=True with this reason while the fault lasts.
    stalled: Option<&'static str>,
    /// The events the fault and its end cause.
    events: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let failed = &["ObservationFailed", "ObservationRecovered"][..];
    let transient = |name, fault: Value, reason, text| Case {
        name,
        fault,
        synced: Some((reason, text)),
        stalled: None,
        events: failed,
    };
    vec![
        transient(
            "latency",
            json!({"kind": "latency", "latencyMs": 4000}),
            "Timeout",
            "no answer within 2s",
        ),
        transient(
            "http503",
            json!({"kind": "http", "status": 503}),
            "HTTPError",
            "HTTP status 503",
        ),
        transient(
            "drop",
            json!({"kind": "drop"}),
            "Unreachable",
            "transport error",
        ),
        transient(
            "throttle",
            json!({"kind": "throttle"}),
            "Throttled",
            "RetCode 153",
        ),
        transient(
            "rc110",
            json!({"kind": "retcode", "retCode": 110, "message": "timeout"}),
            "CloudError",
            "RetCode 110: timeout",
        ),
        transient(
            "rc130",
            json!({"kind": "retcode", "retCode": 130, "message": "gateway error"}),
            "CloudError",
            "RetCode 130",
        ),
        transient(
            "rc150",
            json!({"kind": "retcode", "retCode": 150, "message": "service unavailable"}),
            "CloudError",
            "RetCode 150",
        ),
        transient(
            "rc8433",
            json!({"kind": "retcode", "retCode": 8433, "message": "service error"}),
            "CloudError",
            "RetCode 8433: service error",
        ),
        transient(
            "malformed",
            json!({"kind": "malformed"}),
            "MalformedAnswer",
            "malformed answer",
        ),
        Case {
            name: "rc171",
            fault: json!({"kind": "retcode", "retCode": 171, "message": "Signature VerifyAC Error"}),
            synced: Some((
                "CredentialsRejected",
                "RetCode 171: Signature VerifyAC Error",
            )),
            stalled: Some("CredentialsRejected"),
            events: failed,
        },
        Case {
            name: "rc172",
            fault: json!({"kind": "retcode", "retCode": 172, "message": "user does not exist"}),
            synced: Some(("CredentialsRejected", "RetCode 172")),
            stalled: Some("CredentialsRejected"),
            events: failed,
        },
        Case {
            name: "omit",
            fault: json!({"kind": "omit"}),
            synced: None,
            stalled: Some("NotFound"),
            events: &["NotFound"],
        },
        Case {
            name: "quoted",
            fault: json!({"kind": "retcode-as-string"}),
            synced: None,
            stalled: None,
            events: &[],
        },
    ]
}

/// Counts the status changes of each resource, as a watch sees them.
#[derive(Clone, Default)]
struct StatusChanges(Arc<Mutex<HashMap<String, Seen>>>);

/// The latest status of a resource, and how many times it changed since the count was reset.
type Seen = (Option<CompShareInstanceStatus>, usize);

impl StatusChanges {
    fn follow(&self, bed: &Bed) {
        let changes = self.clone();
        let mut events = watcher(bed.instances(), watcher::Config::default())
            .applied_objects()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(o)) = events.next().await {
                let o: CompShareInstance = o;
                let mut all = changes.0.lock().unwrap();
                let entry = all.entry(o.metadata.name.clone().unwrap()).or_default();
                if entry.0 != o.status {
                    if entry.0.is_some() {
                        entry.1 += 1;
                    }
                    entry.0 = o.status;
                }
            }
        });
    }

    fn reset(&self) {
        for entry in self.0.lock().unwrap().values_mut() {
            entry.1 = 0;
        }
    }

    fn of(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).map_or(0, |e| e.1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_for_a_count_and_for_a_duration() {
    let cases = cases();
    let scenarios: Vec<(String, usize, Value)> = cases
        .iter()
        .enumerate()
        .flat_map(|(i, case)| {
            [
                (format!("{}-count", case.name), i, json!({"count": 3})),
                (
                    format!("{}-duration", case.name),
                    i,
                    json!({"durationMs": 12000}),
                ),
            ]
        })
        .collect();
    // One account (and instance) per scenario, so faults aimed at its key touch nothing else.
    let fixture = scenarios
        .iter()
        .enumerate()
        .fold(Fixture::builder(), |fixture, (i, (n, _, _))| {
            let mut instance = running(&format!("uhost-{n}"), &format!("117.50.0.{}", i + 1));
            instance["Owner"] = json!(format!("pub-{n}"));
            fixture
                .account(&format!("pub-{n}"), &format!("priv-{n}-secret"))
                .instance(instance)
        })
        .build()
        .unwrap();
    let bed = Bed::with_fixture("faults", fixture).await;
    for (n, _, _) in &scenarios {
        bed.secret(
            &format!("keys-{n}"),
            &[
                ("publicKey", &format!("pub-{n}")),
                ("privateKey", &format!("priv-{n}-secret")),
            ],
        )
        .await;
        let mut s = spec(&format!("uhost-{n}"));
        s["credentialsRef"]["name"] = json!(format!("keys-{n}"));
        bed.create(n, s).await;
    }
    let mut operator = bed
        .operator()
        .arg("--request-timeout")
        .arg("2s")
        .arg("--max-backoff")
        .arg("4s")
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    bed.wait_all_synced(
        scenarios.iter().map(|(n, _, _)| n.clone()),
        Duration::from_secs(30),
    )
    .await;
    let changes = StatusChanges::default();
    changes.follow(&bed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    changes.reset();
    let before: HashMap<String, CompShareInstance> = {
        let mut m = HashMap::new();
        for (n, _, _) in &scenarios {
            m.insert(n.clone(), bed.get(n).await);
        }
        m
    };

    // Inject every fault, then ask for an observation at once.
    for (n, case_index, limit) in &scenarios {
        let case = &cases[*case_index];
        let mut fault = case.fault.clone();
        fault["publicKey"] = json!(format!("pub-{n}"));
        if case.name == "omit" {
            fault["ids"] = json!([format!("uhost-{n}")]);
        }
        for (k, v) in limit.as_object().unwrap() {
            fault[k] = v.clone();
        }
        bed.inject(fault).await;
    }
    for (n, _, _) in &scenarios {
        bed.annotate(n, "compshare.ucloud.cn/refresh-requested-at", Some("fault"))
            .await;
    }

    // While the fault lasts: the cloud's code and message, and nothing known is lost.
    for (n, case_index, _) in &scenarios {
        let case = &cases[*case_index];
        let during = match (case.synced, case.stalled) {
            (Some((reason, _)), _) => {
                bed.wait_for(n, reason, Duration::from_secs(20), |o| {
                    condition(o, "Synced") == Some(("False", reason))
                })
                .await
            }
            (None, Some(reason)) => {
                bed.wait_for(n, reason, Duration::from_secs(20), |o| {
                    condition(o, "Stalled") == Some(("True", reason))
                })
                .await
            }
            (None, None) => {
                bed.wait_for(n, "refreshed", Duration::from_secs(20), |o| {
                    o.status
                        .as_ref()
                        .and_then(|s| s.last_handled_refresh.as_deref())
                        == Some("fault")
                })
                .await
            }
        };
        if let Some((_, text)) = case.synced {
            let message = message(&during, "Synced");
            assert!(message.contains(text), "{n}: {message:?} lacks {text:?}");
        }
        if let Some(reason) = case.stalled {
            assert_eq!(condition(&during, "Stalled"), Some(("True", reason)), "{n}");
        }
        let (was, is) = (
            before[n].status.as_ref().unwrap(),
            during.status.as_ref().unwrap(),
        );
        assert_eq!(
            (&is.state, &is.addresses, &is.ssh, &is.public_ip),
            (&was.state, &was.addresses, &was.ssh, &was.public_ip),
            "{n}: lost what was known"
        );
    }
    assert!(operator.is_running() && operator.healthy().await);

    // After it: every resource is observed again, with each transition written once.
    let recovery = Instant::now();
    for (n, _, _) in &scenarios {
        bed.wait_for(n, "recovered", Duration::from_secs(60), |o| {
            is_synced(o) && condition(o, "Stalled").is_none()
        })
        .await;
    }
    eprintln!(
        "all recovered {:?} after the faults were seen",
        recovery.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (n, case_index, _) in &scenarios {
        let case = &cases[*case_index];
        assert_eq!(bed.event_reasons(n).await, case.events, "{n}: events");
        let expected_writes = if case.events.is_empty() { 1 } else { 2 }; // `quoted` records the refresh only
        assert_eq!(changes.of(n), expected_writes, "{n}: status writes");
    }

    assert!(operator.is_running() && operator.healthy().await);
    operator.assert_no_failed_reconciles().await;
    // Nothing secret in the JSON logs, the metrics, the events or the statuses.
    let mut places = vec![
        ("logs", operator.logs()),
        ("metrics", operator.metrics().await),
    ];
    for (n, _, _) in &scenarios {
        places.push((
            "events",
            serde_json::to_string(&bed.events(n).await).unwrap(),
        ));
        places.push((
            "status",
            serde_json::to_string(&bed.get(n).await.status).unwrap(),
        ));
    }
    for (place, text) in &places {
        for (n, _, _) in &scenarios {
            assert!(
                !text.contains(&format!("priv-{n}-secret")),
                "a private key in the {place}"
            );
        }
        assert!(
            !text.contains(PASSWORD) && !text.contains("c2VjcmV0LXBhc3N3b3JkLTQy"),
            "a password in the {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_write_is_retried_calmly_and_a_deleted_resource_is_let_go() {
    let bed = Bed::new(
        "refused",
        vec![
            running("uhost-a", "1.2.3.4"),
            running("uhost-b", "1.2.3.5"),
            running("uhost-c", "1.2.3.6"),
        ],
    )
    .await;
    bed.credentials("keys").await;
    // An admission policy refuses every status of one resource that carries observed facts.
    let policy = format!("refuse-{}", bed.namespace);
    let manifest = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": ["compshare.ucloud.cn"], "apiVersions": ["v1alpha1"],
                        "operations": ["UPDATE"], "resources": ["compshareinstances/status"],
                    }]},
                    "validations": [{"expression": "object.metadata.name != 'refused' || !has(object.status.state)", "message": "status writes to this resource are refused"}],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy, "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": bed.namespace}}},
                },
            },
        ],
    });
    let file = std::env::temp_dir().join(format!("{policy}.json"));
    std::fs::write(&file, manifest.to_string()).unwrap();
    bed.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    // Policies take a moment to reach the admission chain.
    tokio::time::sleep(Duration::from_secs(3)).await;

    bed.create("refused", spec("uhost-a")).await;
    bed.create("fine", spec("uhost-b")).await;
    let operator = bed.operator().start().await;
    bed.wait_for("fine", "synced", Duration::from_secs(30), is_synced)
        .await;

    // The refusal is said in Stalled (which the policy lets through, carrying no facts), counted,
    // and retried every ~10 s, not in a loop.
    let refused = bed
        .wait_for("refused", "stalled", Duration::from_secs(30), |o| {
            condition(o, "Stalled") == Some(("True", "StatusWriteRefused"))
        })
        .await;
    assert!(message(&refused, "Stalled").contains("status writes to this resource are refused"));
    assert_eq!(refused.status.as_ref().unwrap().state, None);
    let start = operator.failed_reconciles().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let retries = operator.failed_reconciles().await - start;
    assert!(
        (2.0..=5.0).contains(&retries),
        "{retries} failed reconciliations in 30 s"
    );
    let refusals = operator
        .metric("compshare_kube_write_refusals_total{kind=\"status\"}")
        .await;
    assert!(refusals >= retries, "{refusals} refusals counted");
    assert!(
        operator
            .logs()
            .contains("status writes to this resource are refused")
    );

    // Once writes are allowed again, the status arrives and the refusal is gone.
    bed.kubectl(&["delete", "-f", file.to_str().unwrap()]);
    let arrived = bed
        .wait_for("refused", "synced", Duration::from_secs(30), is_synced)
        .await;
    assert_eq!(condition(&arrived, "Stalled"), None);

    // A resource deleted while its change is being handled causes no error loop.
    bed.create("doomed", spec("uhost-c")).await;
    bed.wait_for("doomed", "synced", Duration::from_secs(30), is_synced)
        .await;
    let start = operator.failed_reconciles().await;
    bed.set_instance("uhost-c", json!({"State": "Stopped"}))
        .await;
    bed.annotate(
        "doomed",
        "compshare.ucloud.cn/refresh-requested-at",
        Some("now"),
    )
    .await;
    bed.instances()
        .delete("doomed", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        operator.failed_reconciles().await,
        start,
        "no failed reconciliations for a deleted resource"
    );
    let metrics = operator.metrics().await;
    let group = metrics
        .lines()
        .find(|l| l.starts_with("compshare_poll_group_instances{"))
        .unwrap();
    assert!(
        group.ends_with(" 2"),
        "the deleted resource is no longer polled: {group}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_stays_within_the_accounts_call_budget() {
    // One account in three regions: three poll groups, each backing off on its own, sharing one
    // budget of 12 calls a minute (a burst of 2).
    const REGIONS: [&str; 3] = ["cn-wlcb", "cn-sh2", "hk"];
    let instances = (0..30)
        .map(|i| {
            let mut instance = running(&format!("uhost-{i:02}"), &format!("10.0.0.{}", i + 1));
            instance["Region"] = json!(REGIONS[i % 3]);
            instance
        })
        .collect();
    let bed = Bed::new("storm", instances).await;
    bed.credentials("keys").await;
    for i in 0..30 {
        let mut s = spec(&format!("uhost-{i:02}"));
        s["region"] = json!(REGIONS[i % 3]);
        bed.create(&format!("gpu-{i:02}"), s).await;
    }
    let operator = bed
        .operator()
        .arg("--account-calls-per-minute")
        .arg("12")
        .arg("--account-burst")
        .arg("2")
        .arg("--min-backoff")
        .arg("1s")
        .arg("--max-backoff")
        .arg("2s")
        .start()
        .await;
    bed.wait_all_synced(
        (0..30).map(|i| format!("gpu-{i:02}")),
        Duration::from_secs(60),
    )
    .await;

    // Throttled for 30 s: backing off alone, three groups would retry every 1-4 s (about 40 calls).
    bed.inject(json!({"kind": "throttle", "durationMs": 30000}))
        .await;
    bed.reset_counters().await;
    for i in 0..3 {
        bed.annotate(
            &format!("gpu-{i:02}"),
            "compshare.ucloud.cn/refresh-requested-at",
            Some("storm"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let calls = bed.describe_calls().await;
    eprintln!("calls during the 30 s storm: {calls}");
    // 12 a minute is 6 in 30 s, plus the burst of 2 (and one token refilled at the edge).
    assert!(
        calls <= 9,
        "{calls} calls in a 30 s storm with a budget of 12 a minute"
    );
    assert!(calls >= 3, "{calls}: each group kept trying");
    let backoffs = operator
        .metric("compshare_cloud_backoffs_total{reason=\"throttled\"}")
        .await;
    assert!(backoffs >= 3.0, "{backoffs} throttled backoffs");
    let waited = operator
        .metric("compshare_cloud_budget_wait_seconds_count")
        .await;
    assert!(waited > 0.0);

    // After the storm every resource is observed again.
    bed.wait_all_synced(
        (0..30).map(|i| format!("gpu-{i:02}")),
        Duration::from_secs(60),
    )
    .await;
    assert!(operator.healthy().await);
}
