//! The run arguments turned into typed configurations, once: the CompShare client's, the poller's,
//! the controller's and the leader election's. The knobs that are not flags are named here, with
//! why they have their values.

use std::net::SocketAddr;
use std::time::Duration;

use compshare_api::{ClientConfig, MAX_IDS_PER_CALL};

use crate::cli::RunArgs;
use crate::leadership::LeaseSettings;
use crate::poller::{BudgetConfig, PollerConfig, ScheduleConfig};
use crate::reconciler::Settings;
use crate::reconciler::credentials::CredentialsPolicy;

/// The most a poll slot fires early, so that groups started together drift apart (bounded
/// further to a tenth of the slot spacing).
const SLOT_JITTER: Duration = Duration::from_secs(2);
/// How long one read of a credentials Secret serves every resource that names it.
const CREDENTIALS_CACHE_TTL: Duration = Duration::from_secs(30);
/// When a reconciliation that failed (the apiserver refused or could not be reached) is tried
/// again, jittered.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

/// Everything `run` needs, from the command line.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) client: ClientConfig,
    pub(crate) poller: PollerConfig,
    pub(crate) reconciler: Settings,
    /// `None` when leader election is off.
    pub(crate) lease: Option<LeaseSettings>,
    pub(crate) metrics_address: SocketAddr,
    /// The comparison mode of the benchmarks (one call per resource per interval).
    pub(crate) per_object_polling: bool,
}

impl From<RunArgs> for Config {
    fn from(args: RunArgs) -> Self {
        // Destructured once: a flag added to `RunArgs` and used nowhere fails to compile here.
        let RunArgs {
            namespace,
            watch_label_selector,
            default_credentials_secret,
            default_credentials_namespaces,
            default_credentials_grants,
            management_namespaces,
            api,
            default_poll_interval,
            account_calls_per_minute,
            account_burst,
            min_backoff,
            max_backoff,
            batch_window,
            concurrency,
            credentials_recheck,
            metrics_address,
            log_format: _,
            per_object_polling,
            pod_name,
            leader_election,
            leader_election_namespace,
            lease_name,
            lease_duration,
            lease_renew_before,
        } = args;
        let lease = leader_election.then(|| LeaseSettings {
            namespace: leader_election_namespace
                .or_else(|| namespace.clone())
                .unwrap_or_else(|| "default".to_owned()),
            name: lease_name,
            identity: pod_name.clone().unwrap_or_else(|| {
                let host =
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "compshare-operator".into());
                format!("{host}-{}", uuid::Uuid::new_v4().simple())
            }),
            duration: lease_duration,
            renew_before: lease_renew_before,
        });
        Config {
            client: ClientConfig::from(api),
            poller: PollerConfig {
                budget: BudgetConfig {
                    calls_per_minute: account_calls_per_minute,
                    burst: account_burst,
                },
                schedule: ScheduleConfig {
                    page_size: if per_object_polling {
                        1
                    } else {
                        MAX_IDS_PER_CALL
                    },
                    urgent_window: batch_window,
                    max_jitter: SLOT_JITTER,
                },
                min_backoff,
                max_backoff,
            },
            reconciler: Settings {
                namespace,
                label_selector: watch_label_selector,
                default_poll_interval,
                concurrency,
                credentials_recheck,
                credentials: CredentialsPolicy {
                    default_secret: default_credentials_secret,
                    default_namespaces: default_credentials_namespaces,
                    cache_ttl: CREDENTIALS_CACHE_TTL,
                },
                reporter_instance: pod_name,
                retry_after_error: RETRY_AFTER_ERROR,
                management_namespaces,
                grants: default_credentials_grants,
            },
            lease,
            metrics_address,
            per_object_polling,
        }
    }
}
