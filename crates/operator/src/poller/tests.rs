//! The poller against the simulator (no Kubernetes): pages of up to 100 ids, one id per machine,
//! backoff on throttling, no retry loop on rejected keys, refreshes spaced, odd answers confined,
//! and nothing lost when the answer leaves an instance out.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compshare_api::{CallError, Client, ClientConfig, Credentials};
use compshare_simulator::{AdminClient, Fixture, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    BudgetConfig, Key, Observation, Outcome, Poller, PollerConfig, ResourceKey, ScheduleConfig,
    Target,
};
use crate::metrics::Metrics;

const PUBLIC_KEY: &str = "poller-public-key";
const PRIVATE_KEY: &str = "poller-private-key";

struct Harness {
    endpoint: String,
    /// What each watched resource asks for, as its reconciliation would tell the poller.
    targets: std::sync::Mutex<std::collections::HashMap<ResourceKey, Target>>,
    /// Kept for its lifetime: the simulator stops when its handle is dropped.
    _simulator: SimulatorHandle,
    poller: Poller,
    changes: UnboundedReceiver<Key>,
    admin: AdminClient,
}

impl Harness {
    async fn start(instances: usize) -> Harness {
        Harness::with_instances(
            (0..instances)
                .map(|i| json!({"UHostId": id(i), "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Running"}))
                .collect(),
        )
        .await
    }

    async fn with_instances(instances: Vec<Value>) -> Harness {
        let fixture = Fixture::builder()
            .account(PUBLIC_KEY, PRIVATE_KEY)
            .instances(instances)
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let simulator = Simulator::start(listener, fixture);
        let client = Client::new(&ClientConfig {
            endpoint: simulator.endpoint(),
            timeout: Duration::from_secs(2),
            allow_insecure_http: true,
        })
        .unwrap();
        let (poller, changes) = Poller::new(
            client,
            PollerConfig {
                budget: BudgetConfig {
                    calls_per_minute: NonZeroU32::new(600).unwrap(),
                    burst: NonZeroU32::new(10).unwrap(),
                },
                schedule: ScheduleConfig {
                    page_size: 100,
                    urgent_window: Duration::from_millis(50),
                    max_jitter: Duration::from_secs(1),
                },
                min_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(4),
            },
            Arc::new(Metrics::new()),
        );
        Harness {
            endpoint: simulator.endpoint(),
            targets: Default::default(),
            admin: AdminClient::new(&simulator.endpoint()),
            _simulator: simulator,
            poller,
            changes,
        }
    }

    /// A client of the simulator, for calls beside the poller's.
    fn client(&self) -> Client {
        Client::new(&ClientConfig {
            endpoint: self.endpoint.clone(),
            timeout: Duration::from_secs(2),
            allow_insecure_http: true,
        })
        .unwrap()
    }

    fn watch(&self, i: usize, private_key: &str) -> ResourceKey {
        self.watch_as(
            &format!("r{i}"),
            &id(i),
            private_key,
            Duration::from_secs(60),
        )
    }

    /// Watches `uhost_id` as resource `ns/name`.
    fn watch_as(
        &self,
        name: &str,
        uhost_id: &str,
        private_key: &str,
        interval: Duration,
    ) -> ResourceKey {
        let key = ResourceKey {
            namespace: "ns".into(),
            name: name.into(),
        };
        let target = Target {
            credentials: Credentials::new(PUBLIC_KEY, private_key),
            region: "cn-wlcb".into(),
            project_id: None,
            uhost_id: uhost_id.into(),
            zone: None,
            interval,
            generation: 1,
            observe_now: false,
        };
        self.poller
            .sync(&Arc::new(key.clone()), Some(target.clone()), None);
        self.targets.lock().unwrap().insert(key.clone(), target);
        key
    }

    /// What a reconciliation tells the poller for `key`, with `refresh`; its observation.
    fn sync(&self, key: &ResourceKey, refresh: Option<&str>) -> Option<Observation> {
        let target = self.targets.lock().unwrap().get(key).cloned();
        self.poller.sync(&Arc::new(key.clone()), target, refresh)
    }

    fn refresh(&self, key: &ResourceKey, token: &str) {
        self.sync(key, Some(token));
    }

    fn observation(&self, key: &ResourceKey) -> Option<Observation> {
        self.sync(key, None)
    }

    /// The resource is no longer to be observed (paused, deleted).
    fn forget(&self, key: &ResourceKey) {
        self.targets.lock().unwrap().remove(key);
        self.poller.sync(&Arc::new(key.clone()), None, None);
    }

    /// Waits for an announced change of `key` whose observation satisfies `condition`.
    async fn until(
        &mut self,
        key: &ResourceKey,
        condition: impl Fn(&Observation) -> bool,
    ) -> Observation {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(o) = self.observation(key)
                && condition(&o)
            {
                return o;
            }
            tokio::time::timeout_at(deadline, self.changes.recv())
                .await
                .unwrap_or_else(|_| panic!("{key}: last observation {:?}", self.observation(key)));
        }
    }

    async fn calls(&self) -> u64 {
        let counters = self.admin.counters().await.unwrap();
        counters.calls(compshare_api::DESCRIBE_ACTION)
    }

    async fn ids_requested(&self) -> u64 {
        self.admin.counters().await.unwrap().ids_requested()
    }
}

fn id(i: usize) -> String {
    format!("uhost-{i:04}")
}

#[tokio::test]
async fn first_observations_come_in_pages_of_100() {
    let mut h = Harness::start(250).await;
    let keys: Vec<ResourceKey> = (0..250).map(|i| h.watch(i, PRIVATE_KEY)).collect();
    for key in &keys {
        h.until(key, |o| o.outcome == Outcome::Found).await;
    }
    assert_eq!(h.calls().await, 3);
    assert_eq!(h.ids_requested().await, 250);
}

#[tokio::test]
async fn throttling_backs_off_exponentially_then_recovers() {
    let mut h = Harness::start(1).await;
    let key = h.watch(0, PRIVATE_KEY);
    h.until(&key, |o| o.outcome == Outcome::Found).await;

    h.admin
        .inject(json!({"kind": "throttle", "durationMs": 6000}))
        .await
        .unwrap();
    h.admin.reset_counters().await.unwrap();
    let start = Instant::now();
    h.refresh(&key, "1");
    let throttled = h
        .until(&key, |o| {
            matches!(o.outcome.failure(), Some(CallError::Api { code: 153, .. }))
        })
        .await;
    assert_eq!(
        throttled.instance.as_ref().unwrap().state,
        "Running",
        "what was known stays"
    );

    let recovered = h.until(&key, |o| o.outcome == Outcome::Found).await;
    let took = start.elapsed();
    assert_eq!(recovered.refresh.as_deref(), Some("1"));
    // Backoffs of 0.5–1 s, 1–2 s, 2–4 s, …: a handful of calls over the 6 s storm (not hundreds),
    // and recovery soon after it ends.
    let calls = h.calls().await;
    assert!((3..=6).contains(&calls), "{calls} calls");
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(14),
        "{took:?}"
    );
}

#[tokio::test]
async fn rejected_keys_are_not_retried_in_a_loop() {
    let mut h = Harness::start(1).await;
    let key = h.watch(0, "not-the-private-key");
    let o = h
        .until(&key, |o| {
            matches!(o.outcome.failure(), Some(CallError::Api { code: 171, .. }))
        })
        .await;
    assert!(o.instance.is_none());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.calls().await,
        1,
        "the next try waits for the poll interval"
    );
}

/// The staleness alert compares the two gauges: a group that never succeeds must grow stale too,
/// and its interval is its members' shortest.
#[tokio::test]
async fn a_group_that_never_succeeds_grows_stale_from_its_creation() {
    use crate::metrics::GaugeSource;

    let mut h = Harness::start(2).await;
    let key = h.watch(0, "not-the-private-key");
    h.watch_as(
        "slow",
        &id(1),
        "not-the-private-key",
        Duration::from_secs(600),
    );
    h.until(&key, |o| matches!(&o.outcome, Outcome::Failed(_)))
        .await;
    let before = h.poller.snapshot().groups[0].since_last_success;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snapshot = h.poller.snapshot();
    let [group] = &snapshot.groups[..] else {
        panic!("one group")
    };
    assert!(group.since_last_success >= before + Duration::from_millis(200));
    assert_eq!(group.interval, Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn an_instance_missing_from_the_answer_is_not_found_and_keeps_what_was_known() {
    let mut h = Harness::start(2).await;
    let gone = h.watch(0, PRIVATE_KEY);
    let kept = h.watch(1, PRIVATE_KEY);
    h.until(&gone, |o| o.outcome == Outcome::Found).await;
    h.until(&kept, |o| o.outcome == Outcome::Found).await;

    h.admin
        .inject(json!({"kind": "omit", "ids": [id(0)]}))
        .await
        .unwrap();
    h.refresh(&gone, "1");
    h.refresh(&kept, "1");
    let o = h.until(&gone, |o| o.outcome == Outcome::NotFound).await;
    assert_eq!(o.instance.as_ref().unwrap().u_host_id, id(0));
    let o = h.until(&kept, |o| o.refresh.as_deref() == Some("1")).await;
    assert_eq!(o.outcome, Outcome::Found);
}

#[tokio::test]
async fn forgetting_the_last_member_stops_its_group() {
    let mut h = Harness::start(1).await;
    let key = h.watch(0, PRIVATE_KEY);
    h.until(&key, |o| o.outcome == Outcome::Found).await;
    h.forget(&key);
    assert!(h.observation(&key).is_none());
    h.admin.reset_counters().await.unwrap();
    h.refresh(&key, "after");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.calls().await, 0);
}

#[tokio::test]
async fn a_stopped_poller_forgets_everything_and_observes_nothing_more() {
    let mut h = Harness::start(2).await;
    let first = h.watch(0, PRIVATE_KEY);
    h.until(&first, |o| o.outcome == Outcome::Found).await;
    assert_eq!(h.calls().await, 1);

    h.poller.stop();
    assert!(h.observation(&first).is_none());
    // A new resource would be observed at once; a reconcile still finishing after the stop must
    // not start polling again.
    let second = h.watch(1, PRIVATE_KEY);
    h.refresh(&first, "after-stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.calls().await, 1);
    assert!(h.observation(&second).is_none());
}

#[tokio::test]
async fn resources_naming_one_machine_ask_for_it_once_per_interval() {
    let mut h = Harness::start(1).await;
    let interval = Duration::from_secs(2);
    let keys: Vec<ResourceKey> = (0..300)
        .map(|n| h.watch_as(&format!("same-{n}"), &id(0), PRIVATE_KEY, interval))
        .collect();
    for key in &keys {
        h.until(key, |o| o.outcome == Outcome::Found).await;
    }
    h.admin.reset_counters().await.unwrap();
    tokio::time::sleep(interval * 3).await;
    let (calls, ids) = (h.calls().await, h.ids_requested().await);
    // One id in one call per interval: 3 (at most one more at the window's edge), where a
    // schedule by resource made 9 calls asking for the id 300 times each interval.
    assert!((2..=4).contains(&calls), "{calls} calls");
    assert_eq!(ids, calls, "one id per call");
}

#[tokio::test]
async fn a_refresh_storm_on_one_resource_costs_one_call_per_spacing_and_the_last_value_wins() {
    let mut h = Harness::start(1).await;
    let key = h.watch(0, PRIVATE_KEY);
    h.until(&key, |o| o.outcome == Outcome::Found).await;
    h.admin.reset_counters().await.unwrap();
    let start = Instant::now();
    for n in 0..200 {
        h.refresh(&key, &format!("storm-{n}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first went out at once; the rest merged into one more, 10 s after the first.
    let last = h
        .until(&key, |o| o.refresh.as_deref() == Some("storm-199"))
        .await;
    assert_eq!(last.outcome, Outcome::Found);
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(h.calls().await, 2);
}

#[tokio::test]
async fn an_element_that_cannot_be_read_marks_only_its_own_resource() {
    let odd_software = json!({"UHostId": id(0), "Region": "cn-wlcb", "State": "Running", "Softwares": ["JupyterLab"]});
    let odd_state = json!({"UHostId": id(1), "Region": "cn-wlcb", "State": {"Code": 1}});
    let fine = json!({"UHostId": id(2), "Region": "cn-wlcb", "State": "Stopped"});
    let mut h = Harness::with_instances(vec![odd_software, odd_state, fine]).await;
    let keys: Vec<ResourceKey> = (0..3).map(|i| h.watch(i, PRIVATE_KEY)).collect();
    let o = h.until(&keys[0], |o| o.outcome == Outcome::Found).await;
    let instance = o.instance.as_ref().unwrap();
    assert_eq!(instance.dropped_fields, ["Softwares"]);
    assert_eq!(instance.state, "Running");
    let o = h
        .until(&keys[1], |o| matches!(o.outcome, Outcome::Failed(_)))
        .await;
    let Some(CallError::Malformed(problem)) = o.outcome.failure() else {
        panic!("{:?}", o.outcome);
    };
    assert!(
        problem.contains(&id(1)) && problem.contains("State"),
        "{problem}"
    );
    let o = h.until(&keys[2], |o| o.outcome == Outcome::Found).await;
    assert_eq!(o.instance.as_ref().unwrap().state, "Stopped");
    // One call served all three, and nothing backs off: the group is healthy.
    assert_eq!(h.calls().await, 1);
}

#[tokio::test]
async fn a_moving_instance_is_polled_fast_until_it_settles() {
    let mut h = Harness::start(2).await;
    let moving = h.watch(0, PRIVATE_KEY);
    let settled = h.watch(1, PRIVATE_KEY);
    h.until(&moving, |o| o.outcome == Outcome::Found).await;
    h.until(&settled, |o| o.outcome == Outcome::Found).await;

    h.admin
        .patch_instance(&id(0), json!({"State": "Stopping"}))
        .await
        .unwrap();
    // What the operator does after asking for a stop: observe now.
    let mut hurry = h.targets.lock().unwrap().get(&moving).cloned().unwrap();
    hurry.observe_now = true;
    h.poller.sync(&Arc::new(moving.clone()), Some(hurry), None);
    h.until(&moving, |o| {
        o.instance.as_ref().is_some_and(|i| i.state == "Stopping")
    })
    .await;
    h.admin.reset_counters().await.unwrap();
    h.admin
        .patch_instance(&id(0), json!({"State": "Stopped"}))
        .await
        .unwrap();
    // Seen within a few seconds, not at the 60 s interval.
    let start = Instant::now();
    h.until(&moving, |o| {
        o.instance.as_ref().is_some_and(|i| i.state == "Stopped")
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // Settled: back to its interval (no call for the next several seconds), and the settled
    // instance was never asked for more often than its own.
    h.admin.reset_counters().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.calls().await, 0);
}

#[tokio::test]
async fn a_listing_observes_the_group_and_holds_its_calls() {
    let mut h = Harness::start(150).await;
    let keys: Vec<ResourceKey> = (0..150)
        .map(|i| {
            h.watch_as(
                &format!("r{i}"),
                &id(i),
                PRIVATE_KEY,
                Duration::from_secs(4),
            )
        })
        .collect();
    for key in &keys {
        h.until(key, |o| o.outcome == Outcome::Found).await;
    }
    // A listing of the region, as discovery makes it: machine 0 stopped, machine 1 gone.
    h.admin
        .patch_instance(&id(0), json!({"State": "Stopped"}))
        .await
        .unwrap();
    h.admin.remove_instance(&id(1)).await.unwrap();
    let client = h.client();
    let credentials = Credentials::new(PUBLIC_KEY, PRIVATE_KEY);
    let listing = crate::import::Lister {
        client: &client,
        credentials: &credentials,
        retries: 0,
        metrics: None,
    };
    let started = Instant::now();
    // Listed every 3 s, more often than the members' 4 s interval: their calls are held.
    h.admin.reset_counters().await.unwrap();
    let mut listings = 0;
    while started.elapsed() < Duration::from_secs(9) {
        let listed = listing.list("cn-wlcb", None).await.unwrap();
        assert!(listed.complete);
        h.poller
            .observe_listing(&credentials, "cn-wlcb", None, &listed.machines);
        listings += 2; // ⌈149/100⌉ calls
        if listings == 2 {
            let o = h
                .until(&keys[0], |o| {
                    o.instance.as_ref().is_some_and(|i| i.state == "Stopped")
                })
                .await;
            assert_eq!(o.outcome, Outcome::Found);
            let o = h.until(&keys[1], |o| o.outcome == Outcome::NotFound).await;
            assert_eq!(
                o.instance.as_ref().unwrap().u_host_id,
                id(1),
                "kept what was known"
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(
        h.calls().await,
        listings,
        "no call by id beside the listings"
    );
    assert_eq!(h.ids_requested().await, 0);

    // Without listings the group asks by id again, within the hold.
    h.admin.reset_counters().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        h.ids_requested().await >= 149,
        "{}",
        h.ids_requested().await
    );
}
