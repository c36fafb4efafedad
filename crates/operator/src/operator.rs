//! `compshare-operator run`: wires the CompShare client, the poller, the controller and the HTTP
//! endpoints together, takes part in the leader election, and stops everything on SIGTERM or
//! Ctrl-C (releasing the lease, so another replica takes over at once).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::Either;
use kube::Api;
use kube::api::ListParams;

use crate::config::Config;
use crate::leadership::{Leadership, LeaseSettings};
use crate::metrics::Metrics;
use crate::poller::Poller;
use crate::reconciler::{self, Context, Settings};
use crate::resource::CompShareInstance;
use crate::server::{self, Readiness};
use crate::shutdown;

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let cloud = compshare_api::Client::new(&config.client)?;
    let kube = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    check_label_selector(&kube, &config.reconciler).await?;
    if config.per_object_polling {
        tracing::warn!(
            "per-object polling: one API call per resource per interval (comparison mode)"
        );
    }
    tracing::info!(
        endpoint = %config.client.endpoint,
        namespace = config.reconciler.namespace.as_deref().unwrap_or("(all)"),
        default_poll_interval = ?config.reconciler.default_poll_interval,
        "starting compshare-operator"
    );

    let metrics = Arc::new(Metrics::new());
    metrics
        .budget_calls_per_minute
        .set(config.poller.budget.calls_per_minute.get().into());
    let shutdown = shutdown::signal().shared();
    let readiness = Readiness::default();
    // The endpoints stop with the operation, whether it was asked to or failed: a process that
    // no longer reconciles must exit rather than keep answering its probes.
    let (operation_ended, ended) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind(config.metrics_address)
        .await
        .with_context(|| format!("listening on {}", config.metrics_address))?;
    let http = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        futures::future::select(shutdown.clone(), ended).map(|_| ()),
    ));
    let parts = Parts {
        cloud,
        kube,
        metrics,
        readiness,
    };
    let outcome = match &config.lease {
        Some(lease) => lead(&config, lease, parts, shutdown).await,
        None => operate(&config, parts, shutdown).await,
    };
    drop(operation_ended);
    http.await?.context("metrics server")?;
    tracing::info!("stopped");
    outcome
}

/// Refuses a `--watch-label-selector` the apiserver does not accept, with its reason, rather than
/// retrying a watch that can never start. (Any other error is left to the watch, which retries.)
async fn check_label_selector(kube: &kube::Client, settings: &Settings) -> anyhow::Result<()> {
    let Some(selector) = &settings.label_selector else {
        return Ok(());
    };
    let api: Api<CompShareInstance> = match &settings.namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    match api
        .list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 400 => anyhow::bail!(
            "--watch-label-selector {selector:?} is not a label selector the apiserver accepts: {}",
            status.message
        ),
        _ => Ok(()),
    }
}

/// What the controller is built from.
#[derive(Clone)]
struct Parts {
    cloud: compshare_api::Client,
    kube: kube::Client,
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Waits to lead, operates while leading, and releases the lease on shutdown. A replica that
/// stops leading (its lease was taken, or it could not renew it in time because it is cut off
/// from the apiserver) stops polling and waits to lead again, keeping its process.
async fn lead(
    config: &Config,
    lease: &LeaseSettings,
    parts: Parts,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + Unpin + 'static,
) -> anyhow::Result<()> {
    let mut leadership = Leadership::join(parts.kube.clone(), lease)
        .await
        .with_context(|| {
            format!(
                "joining the leader election on Lease {}/{}",
                lease.namespace, lease.name
            )
        })?;
    loop {
        parts.readiness.set(true);
        tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting to lead");
        tokio::select! {
            () = shutdown.clone() => break,
            () = leadership.acquired() => {}
        }
        tracing::info!(identity = %lease.identity, "leading");
        parts.readiness.set(false);
        let stop = futures::future::select(shutdown.clone(), Box::pin(leadership.lost()));
        let operated = operate(config, parts.clone(), stop.map(|_| ())).await;
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
    config: &Config,
    parts: Parts,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Parts {
        cloud,
        kube,
        metrics,
        readiness,
    } = parts;
    let (poller, changes) = Poller::new(cloud.clone(), config.poller, metrics.clone());
    metrics.set_gauge_source(Some(Arc::new(poller.clone())));
    metrics.leader.set(1);
    let ctx = Arc::new(Context::new(
        kube,
        cloud,
        poller.clone(),
        metrics.clone(),
        config.reconciler.clone(),
    ));
    let stop = stop.shared();
    // Discovery runs beside the controller, under the same leadership, reads the controller's
    // cache of resources, and stops with it.
    let (filler, reader) = reconciler::cache::instances();
    let discovery = tokio::spawn(reconciler::discovery::run(
        ctx.clone(),
        reader,
        stop.clone(),
    ));
    let controller = std::pin::pin!(reconciler::run(
        ctx,
        filler,
        changes,
        readiness,
        stop.clone()
    ));
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
    if stop.peek().is_none() {
        discovery.abort();
    }
    // Ended, or aborted along with a controller that ended on its own (an error below).
    let _ = discovery.await;
    anyhow::ensure!(
        stop.peek().is_some(),
        "the controller stopped without being asked to"
    );
    Ok(())
}
