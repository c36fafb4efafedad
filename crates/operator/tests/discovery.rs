//! In-cluster discovery, the real operator against the simulator and the test bed's real
//! apiserver: a `CompShareDiscovery` over 250 machines in two regions keeps one observe-only
//! resource per machine (named and labelled as `import` names them, owned by the discovery), a
//! machine added appears, a machine removed is marked, shown NotFound and removed after the grace
//! period (not before), a hand-written resource is left alone and reported, each listing costs
//! ⌈machines/100⌉ calls per region and is the observation of the resources (no call by id beside
//! it), the grace period's clock survives an operator restart,
//! deleting the discovery deletes its resources (not the machines), bad keys show in the
//! conditions, a VPC filter keeps the machines of its VPCs, and admission refuses bad specs. Discovery only reads: every bed asserts that no state-changing call reached the
//! simulator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use compshare_operator::resource::{
    CompShareDiscovery, CompShareInstance, DeletionPolicy, ManagementPolicy,
};
use compshare_test_support::{Bed, condition, poll_until, state};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

const WLCB: &str = "cn-wlcb";
const SH2: &str = "cn-sh2";
/// 130 machines in cn-wlcb and 120 in cn-sh2: two pages in each.
const MACHINES: usize = 250;
const IN_WLCB: usize = 130;
const DISCOVERY: &str = "account";
const LABEL: &str = "compshare.ucloud.cn/discovery";
const MISSING_SINCE: &str = "compshare.ucloud.cn/missing-since";
const GRACE: Duration = Duration::from_secs(3);

/// The fixture's machines, as the simulator holds them: `Worker NNN`, a third stopped, zones
/// alternating, every fifth an A800.
fn machines() -> Vec<Value> {
    (0..MACHINES)
        .map(|i| {
            let region = if i < IN_WLCB { WLCB } else { SH2 };
            json!({
                "UHostId": format!("uhost-{:08x}", 0x1000 + i * 7919),
                "Name": format!("Worker {i:03}"),
                "Region": region,
                "Zone": format!("{region}-0{}", 1 + i % 2),
                "State": if i % 3 == 0 { "Stopped" } else { "Running" },
                "GpuType": if i % 5 == 0 { "A800" } else { "4090" },
            })
        })
        .collect()
}

fn id(machine: &Value) -> &str {
    machine["UHostId"].as_str().unwrap()
}

/// The name `import` (and so discovery) gives a machine.
fn expected_name(machine: &Value) -> String {
    let suffix = id(machine).strip_prefix("uhost-").unwrap();
    let name = machine["Name"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .replace(' ', "-");
    format!("{name}-{suffix}")
}

fn discoveries(bed: &Bed) -> Api<CompShareDiscovery> {
    Api::namespaced(bed.client.clone(), &bed.namespace)
}

async fn create_discovery(bed: &Bed, name: &str, spec: Value) {
    let object: CompShareDiscovery = serde_json::from_value(json!({
        "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareDiscovery",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    discoveries(bed)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

/// Waits until the discovery `name` satisfies `check`, panicking with its status after `timeout`.
async fn wait_discovery(
    bed: &Bed,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&CompShareDiscovery) -> bool,
) -> CompShareDiscovery {
    poll_until(timeout, async || {
        let current = discoveries(bed).get(name).await.expect("get the discovery");
        if check(&current) {
            Ok(current)
        } else {
            Err(current)
        }
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "{name}: not {what} after {timeout:?}; status: {}",
            serde_json::to_string_pretty(&last.status).unwrap()
        )
    })
}

/// Waits until the discovery has listed `count` times after the listing at `since` (its
/// `lastListTime`); returns the last one's time.
async fn listed(bed: &Bed, since: Option<Time>, count: usize) -> Option<Time> {
    let last_listed =
        |d: &CompShareDiscovery| d.status.as_ref().and_then(|s| s.last_list_time.clone());
    let mut seen = since;
    for _ in 0..count {
        let d = wait_discovery(
            bed,
            DISCOVERY,
            "listed again",
            Duration::from_secs(15),
            |d| last_listed(d) != seen,
        )
        .await;
        seen = last_listed(&d);
    }
    seen
}

/// The discovery's `lastListTime` now.
async fn last_list_time(bed: &Bed) -> Option<Time> {
    let d = discoveries(bed).get(DISCOVERY).await.unwrap();
    d.status.and_then(|s| s.last_list_time)
}

fn discovery_condition<'a>(d: &'a CompShareDiscovery, type_: &str) -> Option<(&'a str, &'a str)> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The resources the discovery created, by machine id.
async fn discovered(bed: &Bed) -> BTreeMap<String, CompShareInstance> {
    bed.instances()
        .list(&ListParams::default().labels(&format!("{LABEL}={DISCOVERY}")))
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|r| (r.spec.uhost_id.clone().unwrap(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_resource_per_machine_kept_in_step_with_the_account() {
    let fixture = machines();
    let bed = Bed::new("discovery", fixture.clone()).await;
    bed.credentials("keys").await;
    // A hand-written resource for one machine, before the discovery exists.
    let hand_written = &fixture[7];
    bed.create(
        "hand-written",
        json!({"uhostId": id(hand_written), "region": WLCB, "credentialsRef": {"name": "keys"}}),
    )
    .await;
    // Resources observe once (the refresh a vanished machine gets aside): every Describe-by-id
    // later in the test would be one of theirs.
    let _operator = bed
        .operator()
        .arg("--default-poll-interval")
        .arg("24h")
        .start()
        .await;
    create_discovery(
        &bed,
        DISCOVERY,
        json!({
            "credentialsRef": {"name": "keys"},
            "pollInterval": "10s",
            "gracePeriod": format!("{}s", GRACE.as_secs()),
        }),
    )
    .await;

    // Every machine but the hand-written one's gets a resource, which observes it.
    let started = Instant::now();
    let d = wait_discovery(&bed, DISCOVERY, "listed", Duration::from_secs(60), |d| {
        d.status.as_ref().and_then(|s| s.resources_managed) == Some(MACHINES as i64 - 1)
    })
    .await;
    let status = d.status.as_ref().unwrap();
    assert_eq!(status.machines_found, Some(MACHINES as i64));
    assert_eq!(status.resources_created, Some(MACHINES as i64 - 1));
    assert_eq!(status.resources_removed, Some(0));
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(
        status.last_list_result.as_ref().unwrap().result,
        "Succeeded"
    );
    assert!(status.last_list_time.is_some());
    assert_eq!(status.clashes.len(), 1, "{:?}", status.clashes);
    assert_eq!(status.clashes[0].uhost_id, id(hand_written));
    assert_eq!(status.clashes[0].resource, "hand-written");
    assert_eq!(discovery_condition(&d, "Ready"), Some(("True", "Observed")));
    assert_eq!(
        discovery_condition(&d, "Synced"),
        Some(("True", "Observed"))
    );
    assert_eq!(discovery_condition(&d, "Stalled"), None);

    let all_synced = poll_until(Duration::from_secs(90), async || {
        let resources = discovered(&bed).await;
        let synced = resources
            .values()
            .filter(|r| condition(r, "Synced").is_some_and(|(s, _)| s == "True"))
            .count();
        if synced == MACHINES - 1 {
            Ok(resources)
        } else {
            Err(synced)
        }
    })
    .await
    .unwrap_or_else(|synced| panic!("{synced} of {} resources synced", MACHINES - 1));
    eprintln!(
        "{} resources synced after {:?}",
        MACHINES - 1,
        started.elapsed()
    );
    let uid = d.uid().unwrap();
    for machine in &fixture {
        if id(machine) == id(hand_written) {
            assert!(!all_synced.contains_key(id(machine)));
            continue;
        }
        let r = &all_synced[id(machine)];
        assert_eq!(r.name_any(), expected_name(machine));
        assert_eq!(r.spec.region, machine["Region"].as_str().unwrap());
        assert_eq!(r.spec.zone.as_deref(), machine["Zone"].as_str());
        assert_eq!(r.spec.credentials_ref.as_ref().unwrap().name, "keys");
        assert_eq!(r.spec.management_policy, Some(ManagementPolicy::Observe));
        assert_eq!(r.spec.deletion_policy, Some(DeletionPolicy::Orphan));
        assert_eq!(state(r), machine["State"].as_str());
        let labels = r.labels();
        assert_eq!(
            labels["compshare.ucloud.cn/region"],
            machine["Region"].as_str().unwrap()
        );
        assert_eq!(
            labels["compshare.ucloud.cn/zone"],
            machine["Zone"].as_str().unwrap()
        );
        assert_eq!(
            labels["compshare.ucloud.cn/gpu-type"],
            machine["GpuType"].as_str().unwrap()
        );
        assert_eq!(labels[LABEL], DISCOVERY);
        let [owner] = r.owner_references() else {
            panic!("{}: {:?}", r.name_any(), r.owner_references())
        };
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("CompShareDiscovery", DISCOVERY, uid.as_str(), Some(true))
        );
    }
    // The hand-written resource is as its author left it.
    let hand = bed.get("hand-written").await;
    assert!(hand.owner_references().is_empty());
    assert!(hand.labels().get(LABEL).is_none());
    assert!(hand.annotations().get(MISSING_SINCE).is_none());

    // One listing costs ⌈130/100⌉ + ⌈120/100⌉ = 4 calls, told apart from Describe-by-id calls by
    // their shape (no ids); the regions were asked for once and are reused. Counted between two
    // listings the discovery reports.
    let first = listed(&bed, last_list_time(&bed).await, 1).await;
    bed.reset_counters().await;
    listed(&bed, first, 1).await;
    let counters = bed.counters().await;
    assert_eq!(counters.listings(), 4, "{counters:?}");
    assert_eq!(
        counters.calls("DescribeCompShareInstance"),
        4,
        "no Describe-by-id either: resources observe once a day here; {counters:?}"
    );
    assert_eq!(counters.calls("DescribeCompShareSupportZone"), 0);

    // A machine made in the console appears.
    let added = json!({
        "UHostId": "uhost-added01", "Name": "Late Arrival", "Region": SH2, "Zone": "cn-sh2-01",
        "State": "Running", "GpuType": "4090",
    });
    bed.simulator_admin
        .add_instance(added.clone())
        .await
        .unwrap();
    let name = expected_name(&added);
    bed.wait_for(&name, "created and synced", Duration::from_secs(30), |r| {
        state(r) == Some("Running")
    })
    .await;

    // A machine released in the console: its resource is marked, shows NotFound, and goes after
    // the grace period, not before.
    let gone = &fixture[20];
    let gone_name = expected_name(gone);
    bed.simulator_admin.remove_instance(id(gone)).await.unwrap();
    let marked = bed
        .wait_for(&gone_name, "marked missing", Duration::from_secs(20), |r| {
            r.annotations().contains_key(MISSING_SINCE)
        })
        .await;
    let since: jiff::Timestamp = marked.annotations()[MISSING_SINCE].parse().unwrap();
    let mut seen_not_found = false;
    let removed_at = poll_until(Duration::from_secs(30), async || {
        match bed.instances().get_opt(&gone_name).await.unwrap() {
            None => Ok(jiff::Timestamp::now()),
            Some(r) => {
                seen_not_found |= condition(&r, "Stalled") == Some(("True", "NotFound"));
                Err(())
            }
        }
    })
    .await
    .expect("the vanished machine's resource is removed");
    assert!(seen_not_found, "never shown NotFound before its removal");
    // The mark is to the second; the listing that missed it came up to a second after it.
    let kept = removed_at.duration_since(since);
    assert!(
        kept >= jiff::SignedDuration::try_from(GRACE).unwrap() - jiff::SignedDuration::from_secs(1),
        "removed {kept:?} after it was first missed"
    );
    let d = wait_discovery(
        &bed,
        DISCOVERY,
        "counting the removal",
        Duration::from_secs(15),
        |d| d.status.as_ref().and_then(|s| s.resources_removed) == Some(1),
    )
    .await;
    let status = d.status.unwrap();
    assert_eq!(status.resources_created, Some(MACHINES as i64));
    assert_eq!(status.machines_found, Some(MACHINES as i64));
    assert_eq!(status.resources_managed, Some(MACHINES as i64 - 1));
    assert!(
        bed.instances()
            .get_opt("hand-written")
            .await
            .unwrap()
            .is_some()
    );

    // One event per reconciliation that created or removed resources, not one per resource.
    let reasons = bed.event_reasons(DISCOVERY).await;
    let count = |reason: &str| reasons.iter().filter(|r| *r == reason).count();
    assert!(count("DiscoveredResourcesCreated") >= 2, "{reasons:?}");
    assert!(count("DiscoveredResourcesCreated") < 10, "{reasons:?}");
    assert_eq!(count("DiscoveredResourcesRemoved"), 1, "{reasons:?}");
    // What kubectl shows.
    let table = bed.kubectl(&["get", "csd"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "MACHINES", "RESOURCES", "LAST-LIST", "AGE"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], [DISCOVERY, "True", "250", "249"], "{table}");
}

/// The listing is the observation: once every resource has its first observation, resources
/// polling as often as the discovery lists cost no call of their own. An account of M machines
/// costs ⌈M/100⌉ calls per region per interval in all, and a machine that changes shows in its
/// resource from the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_of_a_listed_account_take_their_observations_from_the_listing() {
    let fixture = machines();
    let bed = Bed::new("discovery-listing", fixture.clone()).await;
    bed.credentials("keys").await;
    let operator = bed
        .operator()
        .arg("--default-poll-interval")
        .arg("10s")
        .start()
        .await;
    create_discovery(
        &bed,
        DISCOVERY,
        json!({"credentialsRef": {"name": "keys"}, "pollInterval": "10s"}),
    )
    .await;
    poll_until(Duration::from_secs(90), async || {
        let synced = discovered(&bed)
            .await
            .values()
            .filter(|r| condition(r, "Synced").is_some_and(|(s, _)| s == "True"))
            .count();
        if synced == MACHINES {
            Ok(())
        } else {
            Err(synced)
        }
    })
    .await
    .unwrap_or_else(|synced| panic!("{synced} of {MACHINES} resources synced"));

    // Counted between two listings the discovery reports, after one that found every resource
    // observed: each listing is ⌈130/100⌉ + ⌈120/100⌉ = 4 calls, and nothing else is asked.
    let seen = listed(&bed, last_list_time(&bed).await, 2).await;
    bed.reset_counters().await;
    listed(&bed, seen, 2).await;
    let counters = bed.counters().await;
    assert_eq!(counters.listings(), 8, "{counters:?}");
    assert_eq!(
        counters.calls("DescribeCompShareInstance"),
        8,
        "no Describe-by-id beside the listings; {counters:?}"
    );
    let metrics = operator.metrics().await;
    let listed = metrics
        .lines()
        .filter(|l| {
            l.starts_with("compshare_poll_group_source{") && l.ends_with(r#"source="listing"} 1"#)
        })
        .count();
    assert_eq!(
        listed, 2,
        "both regions' groups observe by listing:\n{metrics}"
    );

    // A machine stopped in the console shows stopped, from a listing.
    let running = fixture
        .iter()
        .find(|m| m["State"] == "Running")
        .expect("a running machine");
    bed.reset_counters().await;
    bed.set_instance(id(running), json!({"State": "Stopped"}))
        .await;
    bed.wait_for(
        &expected_name(running),
        "shown stopped",
        Duration::from_secs(30),
        |r| state(r) == Some("Stopped"),
    )
    .await;
    let counters = bed.counters().await;
    assert_eq!(
        counters.calls("DescribeCompShareInstance"),
        counters.listings(),
        "seen through the listing, not asked for by id; {counters:?}"
    );
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_survives_a_restart_and_deleting_the_discovery_deletes_its_resources() {
    let fixture: Vec<Value> = machines().into_iter().take(3).collect();
    let bed = Bed::new("discovery-restart", fixture.clone()).await;
    bed.credentials("keys").await;
    let operator = bed.operator().start().await;
    create_discovery(
        &bed,
        DISCOVERY,
        json!({"credentialsRef": {"name": "keys"}, "regions": [WLCB], "pollInterval": "10s", "gracePeriod": "20s"}),
    )
    .await;
    wait_discovery(&bed, DISCOVERY, "listed", Duration::from_secs(30), |d| {
        d.status.as_ref().and_then(|s| s.resources_managed) == Some(3)
    })
    .await;
    let gone = &fixture[1];
    let gone_name = expected_name(gone);
    bed.simulator_admin.remove_instance(id(gone)).await.unwrap();
    let marked = bed
        .wait_for(&gone_name, "marked missing", Duration::from_secs(20), |r| {
            r.annotations().contains_key(MISSING_SINCE)
        })
        .await;
    let mark = marked.annotations()[MISSING_SINCE].clone();
    let since: jiff::Timestamp = mark.parse().unwrap();

    // A new operator process continues the clock from the annotation, neither resetting it nor
    // removing the resource at once.
    operator.stop();
    let _operator = bed.operator().start().await;
    let removed_at = poll_until(Duration::from_secs(40), async || {
        match bed.instances().get_opt(&gone_name).await.unwrap() {
            None => Ok(jiff::Timestamp::now()),
            Some(r) => {
                assert_eq!(r.annotations()[MISSING_SINCE], mark, "the mark changed");
                Err(())
            }
        }
    })
    .await
    .expect("removed after the grace period");
    let kept = removed_at.duration_since(since);
    assert!(
        kept >= jiff::SignedDuration::from_secs(19) && kept < jiff::SignedDuration::from_secs(35),
        "removed {kept:?} after it was first missed"
    );
    let d = wait_discovery(&bed, DISCOVERY, "counting", Duration::from_secs(15), |d| {
        d.status.as_ref().and_then(|s| s.resources_removed) == Some(1)
    })
    .await;
    // The totals continue from the stored status.
    assert_eq!(d.status.unwrap().resources_created, Some(3));

    // Deleting the discovery deletes its resources (garbage collection); the machines stay.
    discoveries(&bed)
        .delete(DISCOVERY, &Default::default())
        .await
        .unwrap();
    poll_until(Duration::from_secs(30), async || {
        let left = bed
            .instances()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        if left == 0 { Ok(()) } else { Err(left) }
    })
    .await
    .unwrap_or_else(|left| panic!("{left} resources left after the discovery was deleted"));
    assert_eq!(bed.machine_count().await, 2);
}

/// `filters.vpcs` keeps the machines with an address in one of the VPCs, read from the listing's
/// `IPSet` (the listing itself is not narrowed: it is every resource's observation); a machine
/// moved out of the VPC no longer matches and is marked like a vanished one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpc_filter_keeps_the_machines_of_its_vpcs() {
    let vpc_of = |i: usize| match i % 3 {
        0 => None,
        1 => Some("uvnet-a"),
        _ => Some("uvnet-b"),
    };
    let fixture: Vec<Value> = machines()
        .into_iter()
        .take(9)
        .enumerate()
        .map(|(i, mut machine)| {
            machine["IPSet"] = json!(vpc_of(i).map_or(Vec::new(), |vpc| vec![
                json!({"IP": "10.9.0.4", "Type": "Private", "VPCId": vpc, "SubnetId": "subnet-1"})
            ]));
            machine
        })
        .collect();
    let in_a: BTreeMap<String, String> = fixture
        .iter()
        .enumerate()
        .filter(|(i, _)| vpc_of(*i) == Some("uvnet-a"))
        .map(|(_, m)| (id(m).to_owned(), expected_name(m)))
        .collect();
    let bed = Bed::new("discovery-vpc", fixture.clone()).await;
    bed.credentials("keys").await;
    let _operator = bed.operator().start().await;
    create_discovery(
        &bed,
        DISCOVERY,
        json!({
            "credentialsRef": {"name": "keys"}, "regions": [WLCB], "pollInterval": "10s",
            "filters": {"vpcs": ["uvnet-a"]},
        }),
    )
    .await;
    let d = wait_discovery(&bed, DISCOVERY, "listed", Duration::from_secs(30), |d| {
        d.status.as_ref().and_then(|s| s.resources_managed) == Some(in_a.len() as i64)
    })
    .await;
    assert_eq!(d.status.unwrap().machines_found, Some(in_a.len() as i64));
    let found: BTreeMap<String, String> = discovered(&bed)
        .await
        .into_iter()
        .map(|(id, r)| (id, r.name_any()))
        .collect();
    assert_eq!(found, in_a);

    // One machine moves to another VPC: no longer matching, its resource is marked missing.
    let (moved, moved_name) = in_a.first_key_value().unwrap();
    bed.set_instance(
        moved,
        json!({"IPSet": [{"IP": "10.9.0.4", "Type": "Private", "VPCId": "uvnet-b", "SubnetId": "subnet-1"}]}),
    )
    .await;
    bed.wait_for(moved_name, "marked missing", Duration::from_secs(30), |r| {
        r.annotations().contains_key(MISSING_SINCE)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_missing_credentials_show_in_the_conditions_and_change_nothing() {
    let fixture: Vec<Value> = machines().into_iter().take(3).collect();
    let bed = Bed::new("discovery-bad-keys", fixture).await;
    bed.secret(
        "wrong",
        &[
            ("publicKey", compshare_test_support::PUBLIC_KEY),
            ("privateKey", "wrong-private-key"),
        ],
    )
    .await;
    let _operator = bed.operator().start().await;
    create_discovery(
        &bed,
        "wrong-keys",
        json!({"credentialsRef": {"name": "wrong"}, "regions": [WLCB]}),
    )
    .await;
    // No credentialsRef, and the operator has no default credentials.
    create_discovery(&bed, "no-keys", json!({"regions": [WLCB]})).await;

    let d = wait_discovery(&bed, "wrong-keys", "failed", Duration::from_secs(30), |d| {
        discovery_condition(d, "Synced").is_some_and(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(
        discovery_condition(&d, "Synced"),
        Some(("False", "CredentialsRejected"))
    );
    assert_eq!(
        discovery_condition(&d, "Stalled"),
        Some(("True", "CredentialsRejected"))
    );
    assert_eq!(discovery_condition(&d, "Ready").unwrap().0, "False");
    let result = d.status.as_ref().unwrap().last_list_result.clone().unwrap();
    assert_eq!(result.result, "Failed");
    assert_eq!(result.ret_code, Some(171));
    assert!(result.message.unwrap().contains("RetCode 171"));
    let message = &d.status.as_ref().unwrap().conditions[0].message;
    assert!(!message.contains("wrong-private-key"), "{message}");

    let d = wait_discovery(&bed, "no-keys", "stalled", Duration::from_secs(30), |d| {
        discovery_condition(d, "Stalled").is_some()
    })
    .await;
    assert_eq!(
        discovery_condition(&d, "Stalled"),
        Some(("True", "CredentialsMissing"))
    );
    assert!(discovered(&bed).await.is_empty());
    assert!(
        bed.instances()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_bad_specs_with_clear_messages() {
    let bed = Bed::new("discovery-admission", Vec::new()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        bed.client.clone(),
        &bed.namespace,
        &CompShareDiscovery::api_resource(),
    );
    let long_name = "d".repeat(64);
    let cases: [(&str, Value, &str); 8] = [
        (
            "a",
            json!({"pollInterval": "5s"}),
            "pollInterval must be between 10s and 24h",
        ),
        (
            "b",
            json!({"pollInterval": "often"}),
            "pollInterval must be a duration",
        ),
        (
            "c",
            json!({"gracePeriod": "1000h"}),
            "gracePeriod must be at most 720h",
        ),
        (
            "d",
            json!({"regions": ["CN WLCB"]}),
            "regions must be CompShare regions",
        ),
        (
            "e",
            json!({"regions": [WLCB, WLCB]}),
            "regions must not repeat",
        ),
        (
            "f",
            json!({"filters": {"names": ["trainer-[0-9"]}}),
            "every '[' needs its ']'",
        ),
        (
            "g",
            json!({"filters": {"vpcs": ["uvnet 1"]}}),
            "filters.vpcs must be CompShare VPC ids",
        ),
        (&long_name, json!({}), "at most 63 characters"),
    ];
    for (name, spec, expected) in cases {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareDiscovery",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        let error = api
            .create(&PostParams::default(), &object)
            .await
            .expect_err(&format!("{spec} must be refused"));
        assert!(
            error.to_string().contains(expected),
            "{spec}: {error} lacks {expected:?}"
        );
    }
    // A good one is taken, with the in-progress status default.
    create_discovery(
        &bed,
        "good",
        json!({"regions": [WLCB], "filters": {"names": ["trainer-*", "{a,b}?"], "states": ["Running"], "vpcs": ["uvnet-abc123"]}, "gracePeriod": "0s"}),
    )
    .await;
    let d = discoveries(&bed).get("good").await.unwrap();
    assert_eq!(d.status.unwrap().observed_generation, Some(0));

    // Every example the README points at passes the same admission, as kubectl sends it.
    let examples = compshare_test_support::repo_root().join("examples");
    let examples = examples.to_str().expect("a UTF-8 path");
    let applied = bed.kubectl(&["apply", "--dry-run=server", "-f", examples]);
    for kind in ["compsharediscovery", "compshareinstance"] {
        assert!(applied.contains(kind), "{applied}");
    }
}
