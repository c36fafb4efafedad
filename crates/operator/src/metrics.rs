//! Prometheus metrics (`compshare_…`). Counters and histograms are updated where things happen;
//! gauges about the poller (instances by state, seconds since each group's last success) and
//! about the resources (how many are stalled) are read from them at scrape time, so they can never
//! drift from the truth.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use compshare_api::CallError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub action: &'static str,
    /// RetCode, `http_<status>`, `timeout`, `transport` or `malformed`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteLabels {
    /// `status`, `event` or `secret`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefreshLabels {
    /// `immediate`, `deferred` or `merged`.
    pub handling: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackoffLabels {
    /// `throttled` or `transient`.
    pub reason: &'static str,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    gauge_source: GaugeSlot,
    stalled_source: StalledSlot,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub cloud_calls: Family<CallLabels, Counter>,
    pub cloud_call_duration: Family<ActionLabels, Histogram>,
    pub cloud_backoffs: Family<BackoffLabels, Counter>,
    pub cloud_backoff_seconds: Histogram,
    pub budget_wait_seconds: Histogram,
    pub kube_writes: Family<WriteLabels, Counter>,
    pub kube_write_refusals: Family<WriteLabels, Counter>,
    pub refreshes: Family<RefreshLabels, Counter>,
    pub leader: Gauge,
    /// The configured per-account budget, so that alerts compare the call rate with it.
    pub budget_calls_per_minute: Gauge,
}

/// A source of gauges read at scrape time (the poller).
pub(crate) trait GaugeSource: fmt::Debug + Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The watched resources, read at scrape time: how many are stalled (a person must act).
pub(crate) trait StalledSource: fmt::Debug + Send + Sync + 'static {
    /// Resources whose `Stalled` condition is true, by its reason.
    fn stalled_by_reason(&self) -> Vec<(String, i64)>;
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Watched resources by the instance state last observed (`Unknown` before the first).
    pub instances_by_state: Vec<(String, i64)>,
    pub groups: Vec<GroupSnapshot>,
}

#[derive(Clone, Debug)]
pub(crate) struct GroupSnapshot {
    pub region: String,
    pub project: String,
    /// A short, non-reversible tag of the account's public key.
    pub account: String,
    pub members: i64,
    /// Time since the group's last successful call, or since it was created before the first:
    /// a group that never succeeds grows stale like one that stopped succeeding.
    pub since_last_success: Duration,
    /// The shortest poll interval of its members, within which a healthy group calls at least
    /// once; `None` while it has none.
    pub interval: Option<Duration>,
    /// Whether a listing (discovery's) observes the members now, instead of calls by id.
    pub listed: bool,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("compshare");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations of CompShareInstance resources, by result",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconciliation",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let cloud_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "cloud_calls",
            "CompShare API calls, by action and result code (RetCode, http_<status>, timeout, transport, malformed)",
            cloud_calls.clone(),
        );
        let cloud_call_duration = Family::<ActionLabels, Histogram>::new_with_constructor(
            call_duration_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "cloud_call_duration",
            "Latency of CompShare API calls",
            Unit::Seconds,
            cloud_call_duration.clone(),
        );
        let cloud_backoffs = Family::<BackoffLabels, Counter>::default();
        registry.register(
            "cloud_backoffs",
            "Backoffs after throttled (RetCode 153, HTTP 429) or transient failures",
            cloud_backoffs.clone(),
        );
        let cloud_backoff_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register_with_unit(
            "cloud_backoff",
            "Backoff delays chosen after failed calls",
            Unit::Seconds,
            cloud_backoff_seconds.clone(),
        );
        let budget_wait_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register_with_unit(
            "cloud_budget_wait",
            "Time calls waited for the per-account call budget",
            Unit::Seconds,
            budget_wait_seconds.clone(),
        );
        let kube_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "kube_writes",
            "Writes to the Kubernetes API, by kind (status, event, secret)",
            kube_writes.clone(),
        );
        let kube_write_refusals = Family::<WriteLabels, Counter>::default();
        registry.register(
            "kube_write_refusals",
            "Writes the Kubernetes API refused (admission, validation, size), by kind; each is retried every 10 s and shown in the resource's Stalled condition",
            kube_write_refusals.clone(),
        );
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "refresh_requests",
            "Refresh requests (the refresh-requested-at annotation), by how they were handled: immediate, deferred (one per resource per 10 s), merged (into a waiting one, or into the next regular poll beyond the namespace's share of the account's budget)",
            refreshes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads (polls and writes); 0 while it waits for the lease",
            leader.clone(),
        );
        let budget_calls_per_minute = Gauge::default();
        registry.register(
            "account_budget_calls_per_minute",
            "The configured call budget of each account (all its regions and projects, retries included)",
            budget_calls_per_minute.clone(),
        );
        let gauge_source = GaugeSlot::default();
        let stalled_source = StalledSlot::default();
        registry.register_collector(Box::new(GaugeCollector {
            poller: gauge_source.clone(),
            stalled: stalled_source.clone(),
        }));
        Metrics {
            registry,
            gauge_source,
            stalled_source,
            reconciles,
            reconcile_duration,
            cloud_calls,
            cloud_call_duration,
            cloud_backoffs,
            cloud_backoff_seconds,
            budget_wait_seconds,
            kube_writes,
            kube_write_refusals,
            refreshes,
            leader,
            budget_calls_per_minute,
        }
    }

    /// Sets (or, with `None`, clears) the source of scrape-time gauges: the poller while this
    /// replica leads. Without one those gauges are absent. Clearing matters: a kept source would
    /// keep a finished term's poller alive.
    pub(crate) fn set_gauge_source(&self, source: Option<Arc<dyn GaugeSource>>) {
        *self
            .gauge_source
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = source;
    }

    /// Sets (or clears) the source of the stalled gauge: the controller's cache of resources while
    /// this replica leads. Without one the gauge is absent.
    pub(crate) fn set_stalled_source(&self, source: Option<Arc<dyn StalledSource>>) {
        *self
            .stalled_source
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = source;
    }

    pub(crate) fn record_call(
        &self,
        action: &'static str,
        elapsed: Duration,
        result: Result<(), &CallError>,
    ) {
        let code = match result {
            Ok(()) => "0".to_owned(),
            Err(e) => e.code_label(),
        };
        self.cloud_calls
            .get_or_create(&CallLabels { action, code })
            .inc();
        self.cloud_call_duration
            .get_or_create(&ActionLabels { action })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn record_write(&self, kind: &'static str) {
        self.kube_writes.get_or_create(&WriteLabels { kind }).inc();
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The exposition with every family holding a sample, for checks of what the chart's alerts and
/// dashboard query (the `alerts` test): the names come from this registry, not from a list.
pub(crate) fn example_exposition() -> String {
    #[derive(Debug)]
    struct Example;
    impl GaugeSource for Example {
        fn snapshot(&self) -> Snapshot {
            Snapshot {
                instances_by_state: vec![("Running".into(), 3), ("Install Fail".into(), 1)],
                groups: vec![GroupSnapshot {
                    region: "cn-wlcb".into(),
                    project: "".into(),
                    account: "1a2b3c4d".into(),
                    members: 4,
                    since_last_success: Duration::from_millis(1500),
                    interval: Some(Duration::from_secs(60)),
                    listed: true,
                }],
            }
        }
    }
    impl StalledSource for Example {
        fn stalled_by_reason(&self) -> Vec<(String, i64)> {
            vec![("NotFound".into(), 1)]
        }
    }

    let metrics = Metrics::new();
    metrics.set_gauge_source(Some(Arc::new(Example)));
    metrics.set_stalled_source(Some(Arc::new(Example)));
    metrics
        .reconciles
        .get_or_create(&ResultLabels { result: "success" })
        .inc();
    metrics.reconcile_duration.observe(0.01);
    metrics.record_call(
        "DescribeCompShareInstance",
        Duration::from_millis(20),
        Ok(()),
    );
    metrics.record_call(
        "DescribeCompShareInstance",
        Duration::from_millis(20),
        Err(&CallError::Api {
            code: 153,
            message: "slow down".into(),
        }),
    );
    metrics
        .cloud_backoffs
        .get_or_create(&BackoffLabels {
            reason: "throttled",
        })
        .inc();
    metrics.cloud_backoff_seconds.observe(1.0);
    metrics.budget_wait_seconds.observe(0.1);
    metrics.record_write("status");
    metrics
        .kube_write_refusals
        .get_or_create(&WriteLabels { kind: "status" })
        .inc();
    metrics
        .refreshes
        .get_or_create(&RefreshLabels {
            handling: "immediate",
        })
        .inc();
    metrics.leader.set(1);
    metrics.budget_calls_per_minute.set(300);
    metrics.encode()
}

fn call_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The poller of the current term as leader, if any.
type GaugeSlot = Arc<RwLock<Option<Arc<dyn GaugeSource>>>>;

/// The resources of the current term as leader, if any.
type StalledSlot = Arc<RwLock<Option<Arc<dyn StalledSource>>>>;

#[derive(Debug)]
struct GaugeCollector {
    poller: GaugeSlot,
    stalled: StalledSlot,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    region: String,
    project: String,
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    #[prometheus(flatten)]
    group: GroupLabels,
    source: &'static str,
}

impl Collector for GaugeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stalled = self
            .stalled
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(source) = stalled {
            let by_reason = Family::<ReasonLabels, Gauge>::default();
            for (reason, count) in source.stalled_by_reason() {
                by_reason.get_or_create(&ReasonLabels { reason }).set(count);
            }
            by_reason.encode(encoder.encode_descriptor(
                "instances_stalled",
                "Watched CompShareInstance resources whose Stalled condition is true (a person must act), by its reason",
                None,
                by_reason.metric_type(),
            )?)?;
        }
        let Some(source) = self
            .poller
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let snapshot = source.snapshot();

        let by_state = Family::<StateLabels, Gauge>::default();
        for (state, count) in snapshot.instances_by_state {
            by_state.get_or_create(&StateLabels { state }).set(count);
        }
        by_state.encode(encoder.encode_descriptor(
            "instances",
            "Watched CompShareInstance resources by the instance state last observed",
            None,
            by_state.metric_type(),
        )?)?;

        let members = Family::<GroupLabels, Gauge>::default();
        let staleness = Family::<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let sources = Family::<SourceLabels, Gauge>::default();
        let intervals = Family::<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for group in snapshot.groups {
            let labels = GroupLabels {
                region: group.region,
                project: group.project,
                account: group.account,
            };
            members.get_or_create(&labels).set(group.members);
            staleness
                .get_or_create(&labels)
                .set(group.since_last_success.as_secs_f64());
            if let Some(interval) = group.interval {
                intervals.get_or_create(&labels).set(interval.as_secs_f64());
            }
            for (source, on) in [("listing", group.listed), ("ids", !group.listed)] {
                sources
                    .get_or_create(&SourceLabels {
                        group: labels.clone(),
                        source,
                    })
                    .set(i64::from(on));
            }
        }
        members.encode(encoder.encode_descriptor(
            "poll_group_instances",
            "Instances watched by each poll group (one per account, region and project)",
            None,
            members.metric_type(),
        )?)?;
        staleness.encode(encoder.encode_descriptor(
            "poll_group_seconds_since_success",
            "Seconds since each poll group's last successful call (since its creation before the first)",
            None,
            staleness.metric_type(),
        )?)?;
        sources.encode(encoder.encode_descriptor(
            "poll_group_source",
            "How each poll group observes its instances now: 1 for `listing` (discovery's listing of the whole region answers for them, no calls of the group's own) or `ids` (the group asks for them by id)",
            None,
            sources.metric_type(),
        )?)?;
        intervals.encode(encoder.encode_descriptor(
            "poll_group_interval_seconds",
            "The shortest poll interval of each poll group's members: a healthy group succeeds at least this often",
            None,
            intervals.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_prometheus_naming() {
        let text = example_exposition();
        for line in [
            r#"compshare_cloud_calls_total{action="DescribeCompShareInstance",code="0"} 1"#,
            r#"compshare_cloud_calls_total{action="DescribeCompShareInstance",code="153"} 1"#,
            r#"compshare_cloud_call_duration_seconds_count{action="DescribeCompShareInstance"} 2"#,
            r#"compshare_kube_writes_total{kind="status"} 1"#,
            r#"compshare_instances{state="Install Fail"} 1"#,
            r#"compshare_instances_stalled{reason="NotFound"} 1"#,
            r#"compshare_poll_group_seconds_since_success{region="cn-wlcb",project="",account="1a2b3c4d"} 1.5"#,
            r#"compshare_poll_group_source{region="cn-wlcb",project="",account="1a2b3c4d",source="listing"} 1"#,
            r#"compshare_poll_group_source{region="cn-wlcb",project="",account="1a2b3c4d",source="ids"} 0"#,
            r#"compshare_poll_group_interval_seconds{region="cn-wlcb",project="",account="1a2b3c4d"} 60.0"#,
            "compshare_account_budget_calls_per_minute 300",
            "# TYPE compshare_reconcile_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// The example is what the chart's alerts are checked against: a family without a sample
    /// there would make a rule using it look like a typo.
    #[test]
    fn the_example_exposition_has_a_sample_of_every_family() {
        let text = example_exposition();
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            let sampled = text.lines().filter(|l| !l.starts_with('#')).any(|l| {
                let sample = l.split(['{', ' ']).next().unwrap();
                ["", "_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample == format!("{name}{suffix}"))
            });
            assert!(sampled, "no sample of {name} in\n{text}");
        }
    }

    #[test]
    fn without_a_leader_term_the_scrape_time_gauges_are_absent() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(!text.contains("compshare_instances"), "{text}");
        assert!(!text.contains("compshare_poll_group"), "{text}");
        assert!(text.contains("compshare_leader 0"), "{text}");
    }
}
