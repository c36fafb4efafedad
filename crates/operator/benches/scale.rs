//! Scale benchmark: the operator against a real kube-apiserver and etcd (the test bed) and the
//! simulator, at N resources, side by side with the per-object polling every peer operator does.
//!
//! For each scenario (N, accounts × regions, mode) and run, on a fresh control plane: create N
//! resources with simulator instances behind them, start the operator, and measure
//! - the time until every resource is `Synced=True` with the right state;
//! - in steady state: cloud calls per poll interval (the simulator's counters), status writes and
//!   events per interval (the operator's metrics, and the apiserver's own as a check), CPU seconds
//!   per interval;
//! - resident memory of the operator, peak and steady;
//! - the time from a state change in the simulator to that resource's status (median and p99);
//! - a restart, as a rollout does it (SIGTERM, a fresh process with the same arguments): the time
//!   until the new process has observed every resource once, the status writes and events from
//!   the restart on (the design: none), calls per interval after it, and its peak memory.
//!
//! The discovery scenario (`--discovery-sizes`) starts from M machines and no resources: one
//! `CompShareDiscovery` makes a resource for each, and the listing is their observation; beside
//! them, a few hand-written resources of another account that no listing covers. It measures the
//! time until every machine has a synced resource, cloud calls per interval (the design:
//! ⌈M/100⌉ listings per region and nothing by id for the discovered resources, one call by id for
//! the few) and which way each poll group observes (`compshare_poll_group_source`).
//!
//! ```text
//! cargo bench --bench scale                      # the full benchmark; writes BENCHMARKS.md
//! cargo bench --bench scale -- --sizes 1000 --runs 1 --modes batched
//! cargo bench --bench scale -- --sizes --spread-sizes --discovery-sizes 1000 --runs 1
//! cargo bench --bench scale -- --smoke           # N = 100 once; fails if a target is missed
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use compshare_api::DESCRIBE_ACTION;
use compshare_operator::resource::{CompShareDiscovery, CompShareInstance};
use compshare_simulator::{AdminClient, Fixture, Simulator, SimulatorHandle};
use compshare_test_support::{Operator, OperatorBuilder, apiserver_writes, poll_until};
use compshare_testbed::{Component, ControlPlane, Options};
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(about = "Scale benchmark of compshare-operator")]
struct Args {
    /// Numbers of resources, one account and region (none: `--sizes` alone).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000", num_args = 0..)]
    sizes: Vec<usize>,
    /// Numbers of resources spread over 3 accounts × 2 regions (none: `--spread-sizes` alone).
    #[arg(long, value_delimiter = ',', default_value = "1000", num_args = 0..)]
    spread_sizes: Vec<usize>,
    /// Runs of each scenario (medians are reported).
    #[arg(long, default_value = "3")]
    runs: usize,
    /// The resources' poll interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Steady-state intervals measured.
    #[arg(long, default_value = "3")]
    steady_intervals: u32,
    /// State changes timed for the change-to-status latency.
    #[arg(long, default_value = "200")]
    changes: usize,
    #[arg(long, value_delimiter = ',', default_value = "batched,per-object")]
    modes: Vec<Mode>,
    /// Numbers of machines for the discovery scenario: spread over 2 regions, one
    /// `CompShareDiscovery` listing them every poll interval (none: `--discovery-sizes` alone).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000", num_args = 0..)]
    discovery_sizes: Vec<usize>,
    /// Where to write the report (Markdown). By default the repository's BENCHMARKS.md: `cargo
    /// bench` runs a benchmark in its crate's directory, not where it was typed.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../BENCHMARKS.md"))]
    output: PathBuf,
    /// N = 100 once, batched only, no report; exits non-zero when calls per interval exceed
    /// ⌈N/100⌉ (in steady state or after a restart), a new resource costs more than one status
    /// write, or anything is written in steady state or from a restart on.
    #[arg(long)]
    smoke: bool,
    /// Extra environment of the operator, KEY=VALUE (for experiments such as allocator settings).
    #[arg(long)]
    operator_env: Vec<String>,
    /// Run the operator under this program (e.g. `heaptrack`), split on spaces.
    #[arg(long)]
    operator_wrapper: Option<String>,
    /// Keep everything running this long after the measurements (to inspect the operator by hand).
    #[arg(long, value_parser = humantime::parse_duration)]
    hold: Option<Duration>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Batched,
    PerObject,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Batched => "batched",
            Mode::PerObject => "per-object",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    n: usize,
    accounts: usize,
    regions: usize,
    mode: Mode,
}

impl Scenario {
    fn groups(&self) -> usize {
        self.accounts * self.regions
    }

    /// Calls per interval the design promises: ⌈n/100⌉ per group; one per resource per object.
    fn expected_calls(&self) -> f64 {
        match self.mode {
            Mode::PerObject => self.n as f64,
            Mode::Batched => (0..self.groups())
                .map(|g| members_of_group(self.n, self.groups(), g).div_ceil(100))
                .sum::<usize>() as f64,
        }
    }
}

fn members_of_group(n: usize, groups: usize, g: usize) -> usize {
    n / groups + usize::from(g < n % groups)
}

#[derive(Clone, Debug, Default)]
struct Measurement {
    sync_seconds: f64,
    calls_per_interval: f64,
    /// Status writes and events per interval in steady state.
    steady_writes: Writes,
    cpu_sync_seconds: f64,
    cpu_per_interval: f64,
    rss_peak_mib: f64,
    rss_steady_mib: f64,
    latency_median: f64,
    latency_p99: f64,
    latency_max: f64,
    /// Status writes during the sync, as the apiserver counts them: one per new resource (its
    /// first observation).
    sync_status_writes: f64,
    /// Status writes per second the apiserver takes from a plain client (server-side apply, 16 at
    /// once, as the operator writes): the ceiling of any operator's sync rate on this machine.
    apiserver_write_rate: f64,
    /// A restart of the operator over the synced resources, measured after everything above.
    restart: Restart,
    /// What the test bed's apiserver and etcd cost beside the operator.
    control_plane: ControlPlaneCost,
}

/// CPU seconds and resident memory of the apiserver and of etcd, which hold and serve the N
/// resources whatever the operator does: what a cluster pays for them beside the operator.
#[derive(Clone, Debug, Default)]
struct ControlPlaneCost {
    /// During the sync, and per interval in steady state: apiserver, etcd.
    cpu_sync_seconds: [f64; 2],
    cpu_per_interval: [f64; 2],
    /// `VmRSS` at the end of the steady window, MiB: apiserver, etcd.
    rss_mib: [f64; 2],
}

/// Status writes and events in a window, by the operator's count (`compshare_kube_writes_total`)
/// and the apiserver's (`apiserver_request_total`, the check on the first).
#[derive(Clone, Debug, Default)]
struct Writes {
    operator_status: f64,
    operator_events: f64,
    apiserver_status: f64,
    apiserver_events: f64,
}

impl Writes {
    /// Those between two snapshots, per interval of a window of `intervals` (1: the total).
    fn between(before: &Snapshot, after: &Snapshot, intervals: u32) -> Writes {
        let per = |f: fn(&Snapshot) -> f64| per_interval(f(before), f(after), intervals);
        Writes {
            operator_status: per(|s| s.operator_status),
            operator_events: per(|s| s.operator_events),
            apiserver_status: per(|s| s.apiserver_status),
            apiserver_events: per(|s| s.apiserver_events),
        }
    }

    /// Each count's median over the runs.
    fn median<'a>(runs: impl Iterator<Item = &'a Writes> + Clone) -> Writes {
        let m = |f: fn(&Writes) -> f64| median(runs.clone().map(f));
        Writes {
            operator_status: m(|w| w.operator_status),
            operator_events: m(|w| w.operator_events),
            apiserver_status: m(|w| w.apiserver_status),
            apiserver_events: m(|w| w.apiserver_events),
        }
    }

    /// Each count with what it counts, for the smoke run's verdicts.
    fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("status writes (operator)", self.operator_status),
            ("events (operator)", self.operator_events),
            ("status writes (apiserver)", self.apiserver_status),
            ("events (apiserver)", self.apiserver_events),
        ]
    }
}

/// What a restart of the operator over N synced resources costs, the way a rollout restarts it
/// (SIGTERM, then a fresh process with the same arguments). The design: the new process observes
/// every resource once, at ⌈N/100⌉ calls per group, finds nothing changed, and writes nothing.
#[derive(Clone, Debug, Default)]
struct Restart {
    /// From the new process's start until its first sweep (every resource observed once, see
    /// [`first_sweep`]).
    sweep_seconds: f64,
    /// `DescribeCompShareInstance` calls of the new process until its first sweep.
    sweep_calls: f64,
    /// Status writes and events in all, from the SIGTERM to the old process through the first
    /// sweep, one settling interval and the steady intervals after it (design: none).
    writes: Writes,
    /// Calls per interval over those steady intervals.
    calls_per_interval: f64,
    /// Peak resident memory (`VmHWM`) of the new process right after its first sweep: its
    /// startup peak, with every resource listed and observed and nothing to write.
    rss_peak_mib: f64,
}

const REGIONS: [&str; 2] = ["cn-wlcb", "cn-sh2"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let mut scenarios = Vec::new();
    if args.smoke {
        scenarios.push(Scenario {
            n: 100,
            accounts: 1,
            regions: 1,
            mode: Mode::Batched,
        });
    } else {
        for mode in &args.modes {
            for &n in &args.sizes {
                scenarios.push(Scenario {
                    n,
                    accounts: 1,
                    regions: 1,
                    mode: *mode,
                });
            }
            for &n in &args.spread_sizes {
                scenarios.push(Scenario {
                    n,
                    accounts: 3,
                    regions: 2,
                    mode: *mode,
                });
            }
        }
    }
    let runs = if args.smoke { 1 } else { args.runs };

    let mut results: Vec<(Scenario, Vec<Measurement>)> = Vec::new();
    for scenario in scenarios {
        let mut measurements = Vec::new();
        for run in 1..=runs {
            eprintln!(
                "== N={} groups={} mode={} run {run}/{runs}",
                scenario.n,
                scenario.groups(),
                scenario.mode.name()
            );
            let m = run_scenario(scenario, &args).await;
            eprintln!("   {m:?}");
            measurements.push(m);
        }
        results.push((scenario, measurements));
    }
    let discovery_sizes: &[usize] = if args.smoke {
        &[]
    } else {
        &args.discovery_sizes
    };
    let mut discovered: Vec<(usize, Vec<DiscoveryMeasurement>)> = Vec::new();
    for &m in discovery_sizes {
        let mut measurements = Vec::new();
        for run in 1..=runs {
            eprintln!("== discovery M={m} run {run}/{runs}");
            let measured = run_discovery(m, &args).await;
            eprintln!("   {measured:?}");
            measurements.push(measured);
        }
        discovered.push((m, measurements));
    }

    if args.smoke {
        let (scenario, measurements) = &results[0];
        let m = &measurements[0];
        let mut failures = quiet_failures(
            scenario,
            args.steady_intervals,
            m.calls_per_interval,
            (&m.steady_writes, "per interval"),
            "in steady state",
        );
        if m.sync_status_writes != scenario.n as f64 {
            failures.push(format!(
                "{} status writes to sync {} new resources, not one each",
                m.sync_status_writes, scenario.n
            ));
        }
        failures.extend(quiet_failures(
            scenario,
            args.steady_intervals,
            m.restart.calls_per_interval,
            (&m.restart.writes, "in all"),
            "after the restart",
        ));
        println!("{}", table(&results, args.interval));
        if !failures.is_empty() {
            eprintln!("smoke benchmark failed:\n- {}", failures.join("\n- "));
            std::process::exit(1);
        }
        eprintln!("smoke benchmark passed");
        return;
    }

    let report = report(&results, &discovered, &args);
    println!("{report}");
    // The analysis below the marker is written by people; a new run replaces only the figures.
    let analysis = std::fs::read_to_string(&args.output)
        .ok()
        .and_then(|old| old.find(ANALYSIS_MARKER).map(|at| old[at..].to_owned()))
        .unwrap_or_default();
    std::fs::write(&args.output, report + &analysis).expect("write the report");
}

/// The smoke run's verdicts on a window in which nothing changes at the cloud (steady state, a
/// restart): more cloud calls per interval than the design's ⌈N/100⌉ per group, or any status
/// write or event, by the operator's count or the apiserver's, fails it. `writes` come with what
/// they are (per interval, in all), and `window` says which window it was.
fn quiet_failures(
    scenario: &Scenario,
    intervals: u32,
    calls_per_interval: f64,
    (writes, writes_are): (&Writes, &str),
    window: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    // Counting whole intervals can catch one slot early at the window's edge.
    let allowed = scenario.expected_calls() + 1.0 / f64::from(intervals);
    if calls_per_interval > allowed + 1e-9 {
        failures.push(format!(
            "{calls_per_interval} cloud calls per interval {window}, more than ⌈N/100⌉ = {}",
            scenario.expected_calls()
        ));
    }
    for (what, value) in writes.named() {
        if value != 0.0 {
            failures.push(format!("{value} {what} {writes_are} {window}"));
        }
    }
    failures
}

/// Where the generated part of the report ends and the hand-written analysis begins.
const ANALYSIS_MARKER: &str =
    "<!-- analysis: kept by the benchmark when it rewrites the figures -->";

async fn run_scenario(scenario: Scenario, args: &Args) -> Measurement {
    let interval = args.interval;
    let (control_plane, client, namespace) = cluster().await;
    let api: Api<CompShareInstance> = Api::namespaced(client.clone(), &namespace);

    // The simulator, with N running instances spread over the groups.
    let accounts = accounts(scenario.accounts);
    let group_of = |i: usize| {
        (
            i % scenario.accounts,
            (i / scenario.accounts) % scenario.regions,
        )
    };
    let instances: Vec<Value> = (0..scenario.n)
        .map(|i| {
            let (account, region) = group_of(i);
            let mut instance = machine(i);
            instance["Region"] = json!(REGIONS[region]);
            instance["Owner"] = json!(accounts[account].0);
            instance
        })
        .collect();
    let (simulator, admin) = simulator(&accounts, instances).await;
    create_secrets(&client, &namespace, &accounts).await;
    let interval_text = duration_text(interval);
    create_all(
        &api,
        (0..scenario.n).map(|i| {
            let (account, region) = group_of(i);
            serde_json::from_value(json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
                "metadata": {"name": name(i)},
                "spec": {
                    "uhostId": uhost(i), "region": REGIONS[region],
                    "credentialsRef": {"name": format!("keys-{account}")},
                    "pollInterval": interval_text,
                },
            }))
            .unwrap()
        }),
    )
    .await;

    let apiserver_write_rate = apiserver_write_rate(&control_plane, scenario.n.min(2000)).await;
    let tracker = Tracker::start(
        api.clone(),
        (0..scenario.n).map(|i| (name(i), "Running".to_owned())),
    );
    let logs = tempfile::tempdir().unwrap();
    admin.reset_counters().await.unwrap();
    // The same command line for the first process and the restarted one.
    let builder = || {
        let builder = operator(args, &simulator, &control_plane, logs.path(), &namespace);
        match scenario.mode {
            Mode::PerObject => builder.arg("--per-object-polling"),
            Mode::Batched => builder,
        }
    };
    let writes_before = apiserver_writes(&client, "compshareinstances", Some("status")).await;
    let control_plane_pids = [Component::ApiServer, Component::Etcd]
        .map(|c| control_plane.pid(c).expect("the control plane runs"));
    let control_plane_before = control_plane_pids.map(cpu_seconds);
    let started = Instant::now();
    let operator = builder().start().await;
    eprintln!("   operator pid {}", operator.pid());
    // 10 minutes, or longer where the apiserver cannot take the writes faster than 100 a second
    // (at 100,000 it took 160 to 192 a second beside the operator: 5 ms per resource was too close).
    let sync_timeout = Duration::from_secs(600).max(Duration::from_millis(10 * scenario.n as u64));
    tracker.wait_all(sync_timeout).await;
    let sync_seconds = started.elapsed().as_secs_f64();
    let cpu_sync = cpu_seconds(operator.pid());
    let control_plane_sync = control_plane_pids.map(cpu_seconds);
    let sync_status_writes =
        apiserver_writes(&client, "compshareinstances", Some("status")).await - writes_before;

    let (before, after) =
        Snapshot::steady_state(&admin, &operator, &client, interval, args.steady_intervals).await;
    let (rss_peak, rss_steady) = memory_mib(operator.pid());
    // Over the steady window and the settling interval before it.
    let control_plane_steady = control_plane_pids.map(cpu_seconds);
    let control_plane_cost = ControlPlaneCost {
        cpu_sync_seconds: [0, 1].map(|i| control_plane_sync[i] - control_plane_before[i]),
        cpu_per_interval: [0, 1].map(|i| {
            per_interval(
                control_plane_sync[i],
                control_plane_steady[i],
                args.steady_intervals + 1,
            )
        }),
        rss_mib: control_plane_pids.map(|pid| memory_mib(pid).1),
    };

    // Change-to-status latency: flip instances to Stopped at random moments over two intervals.
    let changes = args.changes.min(scenario.n);
    let mut changed_at = HashMap::new();
    let spacing = (interval * 2) / changes.max(1) as u32;
    for c in 0..changes {
        let i = c * scenario.n / changes;
        tracker.expect(&name(i), "Stopped");
        changed_at.insert(name(i), Instant::now());
        admin
            .patch_instance(&uhost(i), json!({"State": "Stopped"}))
            .await
            .unwrap();
        tokio::time::sleep(spacing.mul_f64(rand_unit() * 2.0)).await;
    }
    tracker
        .wait_all(interval * 4 + Duration::from_secs(30))
        .await;
    let mut latencies: Vec<f64> = changed_at
        .iter()
        .map(|(name, at)| {
            tracker
                .reached(name)
                .expect("reached")
                .duration_since(*at)
                .as_secs_f64()
        })
        .collect();
    latencies.sort_by(f64::total_cmp);

    let (operator, restart) = restart(operator, builder(), &admin, &client, scenario.n, args).await;
    hold_then_stop(args, operator, simulator, control_plane).await;

    let intervals = args.steady_intervals;
    Measurement {
        sync_seconds,
        calls_per_interval: per_interval(before.calls, after.calls, intervals),
        steady_writes: Writes::between(&before, &after, intervals),
        cpu_sync_seconds: cpu_sync,
        cpu_per_interval: per_interval(before.cpu, after.cpu, intervals),
        rss_peak_mib: rss_peak,
        rss_steady_mib: rss_steady,
        latency_median: percentile(&latencies, 0.5),
        latency_p99: percentile(&latencies, 0.99),
        latency_max: latencies.last().copied().unwrap_or(0.0),
        sync_status_writes,
        apiserver_write_rate,
        restart,
        control_plane: control_plane_cost,
    }
}

/// Restarts the operator as a rollout does: SIGTERM to `old`, waiting until it has exited, then a
/// fresh process from `builder` (the same command line) over the `n` synced resources. Returns the
/// new process, and what the restart cost ([`Restart`]).
async fn restart(
    old: Operator,
    builder: OperatorBuilder,
    admin: &AdminClient,
    client: &kube::Client,
    n: usize,
    args: &Args,
) -> (Operator, Restart) {
    // Writes count from before the SIGTERM: what the old process writes as it stops is the
    // rollout's too (the apiserver counts those; the operator's counters are the new process's,
    // which starts from none, as a snapshot without an operator says).
    let stopping = Snapshot::take(admin, None, client).await;
    let exit = tokio::task::spawn_blocking(move || old.stop())
        .await
        .unwrap();
    eprintln!("   operator stopped ({exit:?}), restarting");
    // Calls count from its exit: the new process's only.
    let stopped = Snapshot::take(admin, None, client).await;
    let started = Instant::now();
    let operator = builder.start().await;
    eprintln!("   operator pid {}", operator.pid());
    first_sweep(&operator, n, Duration::from_secs(600)).await;
    let sweep_seconds = started.elapsed().as_secs_f64();
    let swept = Snapshot::take(admin, Some(&operator), client).await;
    let (rss_peak_mib, _) = memory_mib(operator.pid());
    let (before, after) = Snapshot::steady_state(
        admin,
        &operator,
        client,
        args.interval,
        args.steady_intervals,
    )
    .await;
    let restart = Restart {
        sweep_seconds,
        sweep_calls: swept.calls - stopped.calls,
        writes: Writes::between(&stopping, &after, 1),
        calls_per_interval: per_interval(before.calls, after.calls, args.steady_intervals),
        rss_peak_mib,
    };
    (operator, restart)
}

/// Waits until `operator` has observed each of the `n` resources once since it started (its first
/// sweep); panics with its logs after `timeout`.
///
/// The definition is the operator's own: `compshare_instances` counts the resources its poller
/// watches by the instance state last observed, `Unknown` before the first observation (a call by
/// id, or a listing, that answered for it). A fresh process starts with none observed, so the
/// sweep is done when the gauge counts all `n` and none of them `Unknown`. (Every instance of the
/// benchmark exists: a missing one would stay `Unknown`.) Counting calls at the simulator would not
/// say which resources were answered, and a sweep may take more than ⌈N/100⌉ calls when the
/// resources reach the poller in several batches.
async fn first_sweep(operator: &Operator, n: usize, timeout: Duration) {
    let swept = poll_until(timeout, async || {
        let metrics = operator.metrics().await;
        let (mut watched, mut unknown) = (0.0, 0.0);
        for line in metrics.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some(labels) = series.strip_prefix("compshare_instances{") else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            watched += value;
            if labels == "state=\"Unknown\"}" {
                unknown += value;
            }
        }
        (watched == n as f64 && unknown == 0.0)
            .then_some(())
            .ok_or((watched, unknown))
    })
    .await;
    if let Err((watched, unknown)) = swept {
        panic!(
            "no first sweep after {timeout:?}: {watched} resources watched, {unknown} of them \
             not observed yet\n{}",
            operator.logs()
        );
    }
}

/// A fresh control plane with the CRDs, a client, and a namespace to work in.
async fn cluster() -> (ControlPlane, kube::Client, String) {
    let control_plane = tokio::task::spawn_blocking(|| ControlPlane::start(Options::default()))
        .await
        .unwrap()
        .expect("a control plane");
    compshare_test_support::install_crd(&control_plane).await;
    let client = control_plane.client().await;
    let namespace = control_plane.create_namespace("scale").await.unwrap();
    (control_plane, client, namespace)
}

/// The key pairs of `count` accounts.
fn accounts(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|a| {
            (
                format!("bench-public-{a}"),
                format!("bench-private-{a}-0123456789"),
            )
        })
        .collect()
}

/// Running machine number `i`, in cn-wlcb, of the first account.
fn machine(i: usize) -> Value {
    compshare_test_support::running(
        &uhost(i),
        &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
    )
}

/// A simulator of these accounts holding `instances`, and its admin interface.
async fn simulator(
    accounts: &[(String, String)],
    instances: Vec<Value>,
) -> (SimulatorHandle, AdminClient) {
    let fixture = accounts
        .iter()
        .fold(Fixture::builder(), |f, (public, private)| {
            f.account(public, private)
        })
        .instances(instances)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let simulator = Simulator::start(listener, fixture);
    let admin = AdminClient::new(&simulator.endpoint());
    (simulator, admin)
}

/// One credentials Secret per account, `keys-<account>`.
async fn create_secrets(client: &kube::Client, namespace: &str, accounts: &[(String, String)]) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), namespace);
    for (a, (public, private)) in accounts.iter().enumerate() {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("keys-{a}")},
            "stringData": {"publicKey": public, "privateKey": private},
        }))
        .unwrap();
        secrets
            .patch(
                &format!("keys-{a}"),
                &PatchParams::apply("bench"),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }
}

/// The operator as every scenario runs it: no rate limit of its own in the way, and the
/// wrapper and environment asked for.
fn operator(
    args: &Args,
    simulator: &SimulatorHandle,
    control_plane: &ControlPlane,
    logs: &std::path::Path,
    namespace: &str,
) -> OperatorBuilder {
    let mut builder = OperatorBuilder::new(
        &simulator.endpoint(),
        &control_plane.kubeconfig_path(),
        logs,
    )
    .namespace(namespace)
    .log_filter("info")
    .arg("--account-calls-per-minute")
    .arg("1000000")
    .arg("--account-burst")
    .arg("100000");
    if let Some(wrapper) = &args.operator_wrapper {
        let words: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
        builder = builder.wrapper(&words);
    }
    for pair in &args.operator_env {
        let (key, value) = pair.split_once('=').expect("--operator-env KEY=VALUE");
        builder = builder.env(key, value);
    }
    builder
}

/// Keeps everything running for `--hold`, then stops the operator, the simulator and the
/// control plane.
async fn hold_then_stop(
    args: &Args,
    operator: Operator,
    simulator: SimulatorHandle,
    control_plane: ControlPlane,
) {
    if let Some(hold) = args.hold {
        eprintln!(
            "   holding for {hold:?}; KUBECONFIG={}",
            control_plane.kubeconfig_path().display()
        );
        tokio::time::sleep(hold).await;
    }
    drop(operator);
    drop(simulator);
    tokio::task::spawn_blocking(move || control_plane.stop())
        .await
        .unwrap();
}

/// A duration as the CRDs take it: `10s`, `1m30s`.
fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// What the discovery scenario measures.
#[derive(Clone, Debug, Default)]
struct DiscoveryMeasurement {
    /// From the discovery's creation until every machine has a resource that is `Synced=True`
    /// and shows the machine's state.
    sync_seconds: f64,
    /// `DescribeCompShareInstance` calls per interval in steady state, all of them...
    calls_per_interval: f64,
    /// ...and those that were listings (no `UHostIds`): the rest asked by id (the hand-written
    /// resources' group).
    listings_per_interval: f64,
    /// Poll groups observing from the listing, and by id (`compshare_poll_group_source`), at the
    /// end of the steady window.
    groups_listing: f64,
    groups_ids: f64,
    status_writes_per_interval: f64,
    cpu_per_interval: f64,
    rss_peak_mib: f64,
    rss_steady_mib: f64,
}

/// The machines of the discovery scenario per region: `m` spread over [`REGIONS`].
fn discovery_split(m: usize) -> impl Iterator<Item = usize> {
    (0..REGIONS.len()).map(move |r| members_of_group(m, REGIONS.len(), r))
}

/// Calls per interval the design promises for `m` machines: ⌈machines/100⌉ per region.
fn discovery_expected_calls(m: usize) -> usize {
    discovery_split(m).map(|n| n.div_ceil(100)).sum()
}

/// Resources written by hand in the discovery scenario, for machines of a second account that no
/// discovery lists: their poll group has no listing to observe from and asks by id, the other
/// branch of the per-group choice, at ⌈10/100⌉ = 1 call per interval.
const WATCHED_BY_ID: usize = 10;

/// M machines over two regions and no resource; the operator and one `CompShareDiscovery` listing
/// every `--interval`, the resources it creates polling at the same interval (the operator's
/// default), so that the listing is their only observation. Beside them, [`WATCHED_BY_ID`]
/// hand-written resources of another account in one region, observed by id.
async fn run_discovery(m: usize, args: &Args) -> DiscoveryMeasurement {
    let interval = args.interval;
    let (control_plane, client, namespace) = cluster().await;
    let api: Api<CompShareInstance> = Api::namespaced(client.clone(), &namespace);
    let accounts = accounts(2);
    // The listed account's machines are named by their ids (the console's default), so that each
    // resource is named by its id; the second account's follow them.
    let instances: Vec<Value> = (0..m + WATCHED_BY_ID)
        .map(|i| {
            let listed = i < m;
            let mut instance = machine(i);
            instance["Name"] = json!(uhost(i));
            // The second account's all in one region: one group.
            instance["Region"] = json!(REGIONS[if listed { i % REGIONS.len() } else { 0 }]);
            instance["Owner"] = json!(accounts[usize::from(!listed)].0);
            instance
        })
        .collect();
    let (simulator, admin) = simulator(&accounts, instances).await;
    create_secrets(&client, &namespace, &accounts).await;
    create_all(
        &api,
        (m..m + WATCHED_BY_ID).map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
                "metadata": {"name": name(i)},
                "spec": {
                    "uhostId": uhost(i), "region": REGIONS[0],
                    "credentialsRef": {"name": "keys-1"},
                },
            }))
            .unwrap()
        }),
    )
    .await;

    let tracker = Tracker::start(
        api,
        (0..m)
            .map(uhost)
            .chain((m..m + WATCHED_BY_ID).map(name))
            .map(|resource| (resource, "Running".to_owned())),
    );
    let logs = tempfile::tempdir().unwrap();
    let operator = operator(args, &simulator, &control_plane, logs.path(), &namespace)
        .arg("--default-poll-interval")
        .arg(duration_text(interval))
        .start()
        .await;
    eprintln!("   operator pid {}", operator.pid());
    admin.reset_counters().await.unwrap();
    let discovery: CompShareDiscovery = serde_json::from_value(json!({
        "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareDiscovery",
        "metadata": {"name": "account"},
        "spec": {
            "credentialsRef": {"name": "keys-0"},
            "regions": REGIONS,
            "pollInterval": duration_text(interval),
        },
    }))
    .unwrap();
    let started = Instant::now();
    Api::<CompShareDiscovery>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &discovery)
        .await
        .expect("create the discovery");
    tracker.wait_all(Duration::from_secs(1200)).await;
    let sync_seconds = started.elapsed().as_secs_f64();

    let (before, after) =
        Snapshot::steady_state(&admin, &operator, &client, interval, args.steady_intervals).await;
    let intervals = args.steady_intervals;
    let (rss_peak, rss_steady) = memory_mib(operator.pid());
    let metrics = operator.metrics().await;
    let groups = |source: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("compshare_poll_group_source{")
                    && l.ends_with(&format!("source=\"{source}\"}} 1"))
            })
            .count() as f64
    };
    let (groups_listing, groups_ids) = (groups("listing"), groups("ids"));
    hold_then_stop(args, operator, simulator, control_plane).await;

    DiscoveryMeasurement {
        sync_seconds,
        calls_per_interval: per_interval(before.calls, after.calls, intervals),
        listings_per_interval: per_interval(before.listings, after.listings, intervals),
        groups_listing,
        groups_ids,
        status_writes_per_interval: per_interval(
            before.apiserver_status,
            after.apiserver_status,
            intervals,
        ),
        cpu_per_interval: per_interval(before.cpu, after.cpu, intervals),
        rss_peak_mib: rss_peak,
        rss_steady_mib: rss_steady,
    }
}

/// Writes one status to each of `count` fresh resources, 16 at once, as fast as the apiserver takes
/// them; returns writes per second.
async fn apiserver_write_rate(control_plane: &ControlPlane, count: usize) -> f64 {
    let namespace = control_plane.create_namespace("ceiling").await.unwrap();
    let api: Api<CompShareInstance> = Api::namespaced(control_plane.client().await, &namespace);
    create_all(
        &api,
        (0..count).map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
                "metadata": {"name": name(i)},
                "spec": {"uhostId": uhost(i), "region": "cn-wlcb"},
            }))
            .unwrap()
        }),
    )
    .await;
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let status = json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
                "status": {"state": "Running", "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Running",
                    "message": "The instance is Running", "observedGeneration": 1,
                    "lastTransitionTime": "2026-11-26T00:00:00Z",
                }]},
            });
            async move {
                api.patch_status(
                    &name(i),
                    &PatchParams::apply("ceiling").force(),
                    &Patch::Apply(&status),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .expect("write the statuses");
    count as f64 / started.elapsed().as_secs_f64()
}

/// Creates the objects, 32 at once.
async fn create_all(
    api: &Api<CompShareInstance>,
    objects: impl Iterator<Item = CompShareInstance>,
) {
    futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .expect("create the resources");
}

fn name(i: usize) -> String {
    format!("gpu-{i:05}")
}

fn uhost(i: usize) -> String {
    format!("uhost-{i:05}")
}

fn rand_unit() -> f64 {
    use rand::Rng;
    rand::rng().random_range(0.0..1.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Follows the resources' status through a watch and records when each first shows the expected
/// state while `Synced=True`.
struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    changed: Arc<Notify>,
}

#[derive(Default)]
struct TrackerState {
    /// What each resource should show, and when it first did (since it was expected).
    expected: HashMap<String, (String, Option<Instant>)>,
    /// The latest state seen of each synced resource.
    seen: HashMap<String, String>,
}

impl Tracker {
    fn start(
        api: Api<CompShareInstance>,
        expected: impl Iterator<Item = (String, String)>,
    ) -> Tracker {
        let state = Arc::new(Mutex::new(TrackerState {
            expected: expected.map(|(n, s)| (n, (s, None))).collect(),
            seen: HashMap::new(),
        }));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(o)) = events.next().await {
                let Some(status) = &o.status else { continue };
                let synced = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Synced" && c.status == "True");
                let (Some(name), Some(observed)) = (o.metadata.name.clone(), status.state.clone())
                else {
                    continue;
                };
                if !synced {
                    continue;
                }
                let mut state = s.lock().unwrap();
                if let Some((want, reached)) = state.expected.get_mut(&name)
                    && *want == observed
                    && reached.is_none()
                {
                    *reached = Some(Instant::now());
                }
                state.seen.insert(name, observed.to_string());
                drop(state);
                c.notify_waiters();
            }
        });
        Tracker { state, changed }
    }

    fn expect(&self, name: &str, state: &str) {
        let mut s = self.state.lock().unwrap();
        let reached = (s.seen.get(name).map(String::as_str) == Some(state)).then(Instant::now);
        s.expected
            .insert(name.to_owned(), (state.to_owned(), reached));
    }

    fn reached(&self, name: &str) -> Option<Instant> {
        self.state.lock().unwrap().expected.get(name)?.1
    }

    async fn wait_all(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let missing = {
                let s = self.state.lock().unwrap();
                s.expected.values().filter(|(_, r)| r.is_none()).count()
            };
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} resources did not reach their state in {timeout:?}"
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

/// Counters read before and after the steady-state window.
struct Snapshot {
    calls: f64,
    /// Of the calls, listings (`DescribeCompShareInstance` without ids).
    listings: f64,
    operator_status: f64,
    operator_events: f64,
    apiserver_status: f64,
    apiserver_events: f64,
    cpu: f64,
}

impl Snapshot {
    /// The steady-state window: settles one interval, then takes a snapshot before and after
    /// `intervals` whole intervals.
    async fn steady_state(
        admin: &AdminClient,
        operator: &Operator,
        client: &kube::Client,
        interval: Duration,
        intervals: u32,
    ) -> (Snapshot, Snapshot) {
        tokio::time::sleep(interval).await;
        let before = Snapshot::take(admin, Some(operator), client).await;
        tokio::time::sleep(interval * intervals).await;
        let after = Snapshot::take(admin, Some(operator), client).await;
        (before, after)
    }

    /// The counters now; without an operator, its own are zero (as a process about to start has
    /// them).
    async fn take(
        admin: &AdminClient,
        operator: Option<&Operator>,
        client: &kube::Client,
    ) -> Snapshot {
        let counters = admin.counters().await.unwrap();
        let written = async |kind: &str| match operator {
            Some(operator) => {
                let series = format!("compshare_kube_writes_total{{kind=\"{kind}\"}}");
                operator.metric(&series).await
            }
            None => 0.0,
        };
        Snapshot {
            calls: counters.calls(DESCRIBE_ACTION) as f64,
            listings: counters.listings() as f64,
            operator_status: written("status").await,
            operator_events: written("event").await,
            apiserver_status: apiserver_writes(client, "compshareinstances", Some("status")).await,
            apiserver_events: apiserver_writes(client, "events", None).await,
            cpu: operator.map_or(0.0, |o| cpu_seconds(o.pid())),
        }
    }
}

/// The change of a counter between two snapshots, per interval of a window of `intervals`.
fn per_interval(before: f64, after: f64, intervals: u32) -> f64 {
    (after - before) / f64::from(intervals)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: a plain sysconf query.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// (peak, current) resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0)
}

/// The simulator's admin interface.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn medians(ms: &[Measurement]) -> Measurement {
    let m = |f: fn(&Measurement) -> f64| median(ms.iter().map(f));
    let m_at = |f: fn(&Measurement) -> [f64; 2], i: usize| median(ms.iter().map(|x| f(x)[i]));
    Measurement {
        sync_seconds: m(|x| x.sync_seconds),
        calls_per_interval: m(|x| x.calls_per_interval),
        steady_writes: Writes::median(ms.iter().map(|x| &x.steady_writes)),
        cpu_sync_seconds: m(|x| x.cpu_sync_seconds),
        cpu_per_interval: m(|x| x.cpu_per_interval),
        rss_peak_mib: m(|x| x.rss_peak_mib),
        rss_steady_mib: m(|x| x.rss_steady_mib),
        latency_median: m(|x| x.latency_median),
        latency_p99: m(|x| x.latency_p99),
        latency_max: m(|x| x.latency_max),
        sync_status_writes: m(|x| x.sync_status_writes),
        apiserver_write_rate: m(|x| x.apiserver_write_rate),
        restart: Restart {
            sweep_seconds: m(|x| x.restart.sweep_seconds),
            sweep_calls: m(|x| x.restart.sweep_calls),
            writes: Writes::median(ms.iter().map(|x| &x.restart.writes)),
            calls_per_interval: m(|x| x.restart.calls_per_interval),
            rss_peak_mib: m(|x| x.restart.rss_peak_mib),
        },
        control_plane: ControlPlaneCost {
            cpu_sync_seconds: [0, 1].map(|i| m_at(|x| x.control_plane.cpu_sync_seconds, i)),
            cpu_per_interval: [0, 1].map(|i| m_at(|x| x.control_plane.cpu_per_interval, i)),
            rss_mib: [0, 1].map(|i| m_at(|x| x.control_plane.rss_mib, i)),
        },
    }
}

fn table(results: &[(Scenario, Vec<Measurement>)], interval: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| N | groups | mode | runs | time to sync (s) | calls / interval (design) | status writes / interval (operator, apiserver) | events / interval (operator, apiserver) | RSS peak / steady (MiB) | CPU s: sync, per interval | change → status (s): median, p99, max | status writes during sync, per s (apiserver ceiling) | restart: first sweep (s), calls to it | restart: status writes (operator, apiserver) | restart: events (operator, apiserver) | restart: calls / interval (design) | restart: RSS peak after the first sweep (MiB) |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (s, ms) in results {
        let m = medians(ms);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} ({}) | {}, {} | {}, {} | {:.1} / {:.1} | {:.2}, {:.3} | {:.2}, {:.2}, {:.2} | {}, {:.0}/s ({:.0}/s) | {:.1}, {} | {}, {} | {}, {} | {:.1} ({}) | {:.1} |",
            s.n,
            s.groups(),
            s.mode.name(),
            ms.len(),
            m.sync_seconds,
            m.calls_per_interval,
            s.expected_calls(),
            m.steady_writes.operator_status,
            m.steady_writes.apiserver_status,
            m.steady_writes.operator_events,
            m.steady_writes.apiserver_events,
            m.rss_peak_mib,
            m.rss_steady_mib,
            m.cpu_sync_seconds,
            m.cpu_per_interval,
            m.latency_median,
            m.latency_p99,
            m.latency_max,
            m.sync_status_writes,
            m.sync_status_writes / m.sync_seconds,
            m.apiserver_write_rate,
            m.restart.sweep_seconds,
            m.restart.sweep_calls,
            m.restart.writes.operator_status,
            m.restart.writes.apiserver_status,
            m.restart.writes.operator_events,
            m.restart.writes.apiserver_events,
            m.restart.calls_per_interval,
            s.expected_calls(),
            m.restart.rss_peak_mib,
        );
    }
    let _ = writeln!(
        out,
        "\nPoll interval {}; medians over the runs.",
        humantime::format_duration(interval)
    );
    out
}

/// What the apiserver and etcd cost beside the operator, per scenario.
fn control_plane_table(results: &[(Scenario, Vec<Measurement>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| N | groups | mode | apiserver: CPU s during the sync, per interval; RSS (MiB) | etcd: CPU s during the sync, per interval; RSS (MiB) |"
    );
    let _ = writeln!(out, "|---:|---:|---|---:|---:|");
    for (s, ms) in results {
        let c = medians(ms).control_plane;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1}, {:.3}; {:.0} | {:.1}, {:.3}; {:.0} |",
            s.n,
            s.groups(),
            s.mode.name(),
            c.cpu_sync_seconds[0],
            c.cpu_per_interval[0],
            c.rss_mib[0],
            c.cpu_sync_seconds[1],
            c.cpu_per_interval[1],
            c.rss_mib[1],
        );
    }
    out
}

fn discovery_table(results: &[(usize, Vec<DiscoveryMeasurement>)], interval: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| M machines (per region) | runs | time until every machine has a synced resource (s) | calls / interval: listings (design: ⌈M/100⌉ per region), by id (design: 1) | poll groups observing from the listing / by id (design: 2 / 1) | status writes / interval | RSS peak / steady (MiB) | CPU s per interval |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (m, ms) in results {
        let median_of = |f: fn(&DiscoveryMeasurement) -> f64| median(ms.iter().map(f));
        let split: Vec<String> = discovery_split(*m).map(|n| n.to_string()).collect();
        let _ = writeln!(
            out,
            "| {m} ({}) | {} | {:.1} | {:.1} ({}), {:.1} | {} / {} | {} | {:.1} / {:.1} | {:.3} |",
            split.join(" + "),
            ms.len(),
            median_of(|x| x.sync_seconds),
            median_of(|x| x.listings_per_interval),
            discovery_expected_calls(*m),
            median_of(|x| x.calls_per_interval - x.listings_per_interval),
            median_of(|x| x.groups_listing),
            median_of(|x| x.groups_ids),
            median_of(|x| x.status_writes_per_interval),
            median_of(|x| x.rss_peak_mib),
            median_of(|x| x.rss_steady_mib),
            median_of(|x| x.cpu_per_interval),
        );
    }
    let _ = writeln!(
        out,
        "\nOne `CompShareDiscovery` over {} (its `pollInterval` and the resources' poll interval \
         {}), and {WATCHED_BY_ID} hand-written resources of another account that no listing \
         covers; medians over the runs.",
        REGIONS.join(" and "),
        humantime::format_duration(interval)
    );
    out
}

fn ratios(results: &[(Scenario, Vec<Measurement>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| N | groups | calls / interval | time to sync | RSS peak | RSS steady | CPU per interval | change → status p99 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (s, ms) in results.iter().filter(|(s, _)| s.mode == Mode::PerObject) {
        let Some((_, batched)) = results
            .iter()
            .find(|(b, _)| b.mode == Mode::Batched && b.n == s.n && b.groups() == s.groups())
        else {
            continue;
        };
        let (p, b) = (medians(ms), medians(batched));
        let ratio = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.1}×", x / y)
            } else {
                "–".to_owned()
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.n,
            s.groups(),
            ratio(p.calls_per_interval, b.calls_per_interval),
            ratio(p.sync_seconds, b.sync_seconds),
            ratio(p.rss_peak_mib, b.rss_peak_mib),
            ratio(p.rss_steady_mib, b.rss_steady_mib),
            ratio(p.cpu_per_interval, b.cpu_per_interval),
            ratio(p.latency_p99, b.latency_p99),
        );
    }
    out
}

fn report(
    results: &[(Scenario, Vec<Measurement>)],
    discovered: &[(usize, Vec<DiscoveryMeasurement>)],
    args: &Args,
) -> String {
    let machine = machine_description();
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC");
    let command = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# Benchmarks\n\n\
         Generated by `cargo bench --bench scale{}{command}` ([crates/operator/benches/scale.rs](crates/operator/benches/scale.rs)) on {date}.\n\n\
         Machine: {machine}.\n\n\
         Each run starts a fresh control plane (etcd and kube-apiserver of the test bed), creates N\n\
         resources with simulator instances behind them, starts the operator (release build), and\n\
         measures: time until every resource is `Synced=True` with the right state; in steady state\n\
         (after one settling interval, over {} intervals) cloud calls (the simulator's counters),\n\
         status writes and events (the operator's `compshare_kube_writes_total`, and the\n\
         apiserver's `apiserver_request_total` as a check) and CPU seconds of the operator; its\n\
         resident memory (peak: `VmHWM`, steady: `VmRSS`); and the time from a state change in\n\
         the simulator to the resource's status, over {} changes spread over two intervals. Then\n\
         the operator is restarted as a rollout does it (SIGTERM, a fresh process with the same\n\
         arguments): the time from the new process's start until it has observed every resource\n\
         once (its `compshare_instances` gauge counts none `Unknown`) and the calls until then;\n\
         status writes and events in all from the SIGTERM through that first sweep, one settling\n\
         interval and {} more (the design: none); calls per interval over those {}; and the new\n\
         process's `VmHWM` right after its first sweep.\n\
         `per-object` is the comparison mode (`--per-object-polling`): one call per resource per\n\
         interval, as every peer operator polls.\n\n\
         ## Results\n\n{}\n\
         ## What the apiserver and etcd cost beside the operator\n\n\
         The test bed's kube-apiserver and etcd, which hold and serve the N resources whatever\n\
         the operator does: CPU seconds from the operator's start until every resource is\n\
         synced, and per interval over the settling interval and the steady window; resident\n\
         memory (`VmRSS`) at its end.\n\n{}\n\
         ## Per-object mode relative to batched (same machine, same runs)\n\n{}\n{}",
        if command.is_empty() { "" } else { " -- " },
        args.steady_intervals,
        args.changes,
        args.steady_intervals,
        args.steady_intervals,
        table(results, args.interval),
        control_plane_table(results),
        ratios(results),
        discovery_report(discovered, args.interval),
    )
}

/// The discovery section of the report, when the scenario ran.
fn discovery_report(
    discovered: &[(usize, Vec<DiscoveryMeasurement>)],
    interval: Duration,
) -> String {
    if discovered.is_empty() {
        return String::new();
    }
    format!(
        "## Discovery\n\n\
         M machines and no resources; one `CompShareDiscovery` creates a resource per machine, and\n\
         its listing is their observation. Beside them, a few hand-written resources of another\n\
         account, which no listing covers: their group asks by id. Time from the discovery's\n\
         creation until every machine has a `Synced=True` resource showing its state; in steady\n\
         state, `DescribeCompShareInstance` calls per interval at the simulator (listings, and\n\
         calls by id), status writes (the apiserver's count), and which way each poll group\n\
         observes (`compshare_poll_group_source`).\n\n{}\n",
        discovery_table(discovered, interval)
    )
}

fn machine_description() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB, Linux")
}
