//! `compshare-operator run`: wires the CompShare client, the poller, the controller and the HTTP
//! endpoints together, takes part in the leader election, and stops everything on SIGTERM or
//! Ctrl-C (releasing the lease, so another replica takes over at once).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::Either;

use crate::cli::RunArgs;
use crate::compshare::client::MAX_IDS_PER_CALL;
use crate::compshare::{self, ClientConfig};
use crate::leadership::{Leadership, LeaseSettings};
use crate::metrics::Metrics;
use crate::poller::{BudgetConfig, Poller, PollerConfig, ScheduleConfig};
use crate::reconciler::credentials::CredentialsPolicy;
use crate::reconciler::{self, Context, Settings};
use crate::{server, shutdown};

pub async fn run(args: Box<RunArgs>) -> anyhow::Result<()> {
    let cloud = compshare::Client::new(&ClientConfig {
        endpoint: args.endpoint.clone(),
        timeout: args.request_timeout,
        allow_insecure_http: args.allow_insecure_http,
    })?;
    let kube = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    if args.per_object_polling {
        tracing::warn!(
            "per-object polling: one API call per resource per interval (comparison mode)"
        );
    }
    tracing::info!(
        endpoint = %args.endpoint,
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        default_poll_interval = ?args.default_poll_interval,
        "starting compshare-operator"
    );

    let metrics = Arc::new(Metrics::new());
    let shutdown = shutdown::signal().shared();
    let ready = Arc::new(AtomicBool::new(false));
    // The endpoints stop with the operation, whether it was asked to or failed: a process that
    // no longer reconciles must exit rather than keep answering its probes.
    let (operation_ended, ended) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .with_context(|| format!("listening on {}", args.metrics_address))?;
    let http = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        futures::future::select(shutdown.clone(), ended).map(|_| ()),
    ));
    let parts = Parts {
        cloud,
        kube,
        metrics,
        ready,
    };
    let outcome = if args.leader_election {
        lead(&args, parts, shutdown).await
    } else {
        operate(&args, parts, shutdown).await
    };
    drop(operation_ended);
    http.await?.context("metrics server")?;
    tracing::info!("stopped");
    outcome
}

/// What the controller is built from.
#[derive(Clone)]
struct Parts {
    cloud: compshare::Client,
    kube: kube::Client,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// Waits to lead, operates while leading, and releases the lease on shutdown. A replica that
/// stops leading (its lease was taken, or it could not renew it in time because it is cut off
/// from the apiserver) stops polling and waits to lead again, keeping its process.
async fn lead(
    args: &RunArgs,
    parts: Parts,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + Unpin + 'static,
) -> anyhow::Result<()> {
    let lease = LeaseSettings {
        namespace: args
            .leader_election_namespace
            .clone()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".to_owned()),
        name: args.lease_name.clone(),
        identity: args.pod_name.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "compshare-operator".into());
            format!("{host}-{}", uuid::Uuid::new_v4().simple())
        }),
        duration: args.lease_duration,
        renew_before: args.lease_renew_before,
    };
    let mut leadership = Leadership::join(parts.kube.clone(), &lease)
        .await
        .with_context(|| {
            format!(
                "joining the leader election on Lease {}/{}",
                lease.namespace, lease.name
            )
        })?;
    loop {
        // A standby replica is healthy and ready: waiting is all it has to do.
        parts.ready.store(true, Ordering::Release);
        tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting to lead");
        tokio::select! {
            () = shutdown.clone() => break,
            () = leadership.acquired() => {}
        }
        tracing::info!(identity = %lease.identity, "leading");
        parts.ready.store(false, Ordering::Release);
        let stop = futures::future::select(shutdown.clone(), Box::pin(leadership.lost()));
        let operated = operate(args, parts.clone(), stop.map(|_| ())).await;
        if operated.is_err() || shutdown.clone().now_or_never().is_some() {
            leadership.release().await;
            return operated;
        }
        tracing::warn!(identity = %lease.identity, "stopped leading: the lease was taken or could not be renewed in time");
    }
    leadership.release().await;
    Ok(())
}

/// Runs the poller and the controller until `stop` resolves. A controller that ends on its own
/// is an error: the process must not live on (healthy to its probes) without reconciling.
async fn operate(
    args: &RunArgs,
    parts: Parts,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Parts {
        cloud,
        kube,
        metrics,
        ready,
    } = parts;
    let (poller, changes) = Poller::new(
        cloud,
        PollerConfig {
            budget: BudgetConfig {
                calls_per_minute: args.account_calls_per_minute,
                burst: args.account_burst,
            },
            schedule: ScheduleConfig {
                page_size: if args.per_object_polling {
                    1
                } else {
                    MAX_IDS_PER_CALL
                },
                urgent_window: args.batch_window,
                max_jitter: Duration::from_secs(2),
            },
            min_backoff: args.min_backoff,
            max_backoff: args.max_backoff,
        },
        metrics.clone(),
    );
    metrics.set_gauge_source(Some(Arc::new(poller.clone())));
    metrics.leader.set(1);
    let settings = Settings {
        namespace: args.namespace.clone(),
        default_poll_interval: args.default_poll_interval,
        concurrency: args.concurrency,
        credentials_recheck: args.credentials_recheck,
        credentials: CredentialsPolicy {
            default_secret: args.default_credentials_secret.clone(),
            default_namespaces: args.default_credentials_namespaces.clone(),
            cache_ttl: Duration::from_secs(30),
        },
        reporter_instance: args.pod_name.clone(),
    };
    let ctx = Arc::new(Context::new(
        kube,
        poller.clone(),
        metrics.clone(),
        settings,
    ));
    let stop = stop.shared();
    let controller = std::pin::pin!(reconciler::run(ctx, changes, ready, stop.clone()));
    let finishing = match futures::future::select(controller, stop.clone()).await {
        Either::Left(((), _)) => None,
        Either::Right(((), controller)) => Some(controller),
    };
    // Polling stops as soon as this replica is told to stop, not when the reconciles in flight
    // are done: one cut off from the apiserver may take a while, and another replica may be
    // leading by then.
    poller.stop();
    metrics.set_gauge_source(None);
    metrics.leader.set(0);
    if let Some(controller) = finishing {
        controller.await;
    }
    anyhow::ensure!(
        stop.peek().is_some(),
        "the controller stopped without being asked to"
    );
    Ok(())
}
