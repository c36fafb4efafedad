//! The command line: `run` (the controller), `crd` (print the CRDs) and `import` (manifests for an
//! account's machines; its flags live with it in `import`). Every `run` flag can also be set by
//! environment, as the Helm chart does. (The simulator is a binary of its own,
//! `compshare-simulator`.)

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use compshare_api::ClientConfig;

use crate::import::ImportArgs;
use crate::reconciler::credentials::{AllowedNamespaces, SecretName};
use crate::reconciler::privileges::Grants;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "compshare-operator",
    version,
    about = "CompShare GPU instances as Kubernetes resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the controller (uses the kubeconfig or the in-cluster configuration, like kubectl).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (CompShareInstance, CompShareDiscovery) as YAML.
    Crd,
    /// List every machine of an account and print observe-only CompShareInstance manifests for
    /// them (or write them into a directory), ready to commit.
    Import(Box<ImportArgs>),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "COMPSHARE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Watch only the CompShareInstances and CompShareDiscoveries whose labels match this
    /// selector, for example `sharding.fluxcd.io/key=shard-1` (Flux's sharding convention): one
    /// deployment per shard, each observing whole poll groups. Default: every resource.
    #[arg(long, env = "COMPSHARE_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,

    /// The operator's default credentials: a Secret NAMESPACE/NAME with `publicKey` and
    /// `privateKey`, used by resources without `spec.credentialsRef` in allowed namespaces.
    #[arg(long, env = "COMPSHARE_DEFAULT_CREDENTIALS_SECRET")]
    pub default_credentials_secret: Option<SecretName>,

    /// Namespaces allowed to use the default credentials: a comma-separated list, or `*` for all.
    #[arg(
        long,
        env = "COMPSHARE_DEFAULT_CREDENTIALS_NAMESPACES",
        default_value = ""
    )]
    pub default_credentials_namespaces: AllowedNamespaces,

    /// What namespaces may do with the default credentials beyond observing:
    /// `NAMESPACE=PRIVILEGE[@SCOPE]`, comma-separated, with PRIVILEGE `connection` (read a machine's
    /// password into a connection Secret) or `manage` (also change machines), and SCOPE `all` (the
    /// default), `own` (machines the namespace created), `project:ID` or `tag:TAG`; `*` for every
    /// allowed namespace.
    #[arg(long, env = "COMPSHARE_DEFAULT_CREDENTIALS_GRANTS", default_value = "")]
    pub default_credentials_grants: Grants,

    /// Namespaces where resources may manage machines (`managementPolicy: Manage`: create, start,
    /// stop, release; this spends money): a comma-separated list, or `*` for all. Default: none,
    /// so the operator only observes.
    #[arg(long, env = "COMPSHARE_MANAGEMENT_NAMESPACES", default_value = "")]
    pub management_namespaces: AllowedNamespaces,

    #[command(flatten)]
    pub api: ApiArgs,

    /// Poll interval of resources without `spec.pollInterval` (10s to 24h).
    #[arg(long, env = "COMPSHARE_DEFAULT_POLL_INTERVAL", default_value = "60s", value_parser = poll_interval)]
    pub default_poll_interval: Duration,

    /// Most API calls per minute per account (all regions and projects together, retries included).
    #[arg(
        long,
        env = "COMPSHARE_ACCOUNT_CALLS_PER_MINUTE",
        default_value = "300"
    )]
    pub account_calls_per_minute: NonZeroU32,

    /// API calls an account may make at once after a quiet period.
    #[arg(long, env = "COMPSHARE_ACCOUNT_BURST", default_value = "20")]
    pub account_burst: NonZeroU32,

    /// First backoff after a throttled or transient failure (doubles, with jitter, up to the max).
    #[arg(long, env = "COMPSHARE_MIN_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_backoff: Duration,

    /// Longest backoff (before jitter, which adds up to the same again).
    #[arg(long, env = "COMPSHARE_MAX_BACKOFF", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// How long new resources and refresh requests wait to share one call.
    #[arg(long, env = "COMPSHARE_BATCH_WINDOW", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub batch_window: Duration,

    /// Reconciliations at once.
    #[arg(long, env = "COMPSHARE_CONCURRENCY", default_value = "16")]
    pub concurrency: u16,

    /// How often the credentials Secrets in use are read again; when one changed (a rotated key),
    /// every resource is reconciled again.
    #[arg(long, env = "COMPSHARE_CREDENTIALS_RECHECK", default_value = "5m", value_parser = humantime::parse_duration)]
    pub credentials_recheck: Duration,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "COMPSHARE_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "COMPSHARE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Comparison mode, for benchmarks only: one Describe call per resource per interval, the way
    /// every peer operator polls, instead of pages of up to 100 ids.
    #[arg(long, env = "COMPSHARE_PER_OBJECT_POLLING")]
    pub per_object_polling: bool,

    /// This operator's name in events and in the leader election (the chart sets the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Elect a leader among replicas on a coordination.k8s.io Lease; only the leader polls and
    /// writes. `false` only for a single replica that must not need Lease permissions.
    #[arg(long, env = "COMPSHARE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the Lease (default: the pod's namespace, else the watched namespace, else
    /// `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(
        long,
        env = "COMPSHARE_LEASE_NAME",
        default_value = "compshare-operator"
    )]
    pub lease_name: String,

    /// How long the lease holds without renewal: the longest a dead leader delays a takeover.
    #[arg(long, env = "COMPSHARE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How long before the lease expires the leader renews it.
    #[arg(long, env = "COMPSHARE_LEASE_RENEW_BEFORE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_renew_before: Duration,
}

/// Where the CompShare API is and how long a call may take: the same flags for every command that
/// calls it, so that `run` and `import` cannot drift apart.
#[derive(Debug, Args)]
pub(crate) struct ApiArgs {
    /// The CompShare API endpoint.
    #[arg(long, env = "COMPSHARE_ENDPOINT", default_value = compshare_api::DEFAULT_ENDPOINT)]
    pub endpoint: String,

    /// Accept a plain-HTTP endpoint (the simulator). Never for the real API.
    #[arg(long, env = "COMPSHARE_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,

    /// Timeout of one API call.
    #[arg(long, env = "COMPSHARE_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

impl From<ApiArgs> for ClientConfig {
    fn from(args: ApiArgs) -> Self {
        ClientConfig {
            endpoint: args.endpoint,
            timeout: args.request_timeout,
            allow_insecure_http: args.allow_insecure_http,
        }
    }
}

fn poll_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    let (min, max) = (
        crate::resource::MIN_POLL_INTERVAL,
        crate::resource::MAX_POLL_INTERVAL,
    );
    if d < min || d > max {
        return Err(format!("must be between {min:?} and {max:?}"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn poll_interval_bounds() {
        assert!(poll_interval("9s").is_err());
        assert!(poll_interval("25h").is_err());
        assert_eq!(poll_interval("1h30m"), Ok(Duration::from_secs(5400)));
    }
}
