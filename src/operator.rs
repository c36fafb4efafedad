//! `compshare-operator run`: wires the CompShare client, the poller, the controller and the HTTP
//! endpoints together, and stops them all on SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;

use crate::cli::RunArgs;
use crate::compshare::client::MAX_IDS_PER_CALL;
use crate::compshare::{self, ClientConfig};
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

    let metrics = Arc::new(Metrics::new());
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
    metrics.set_gauge_source(Arc::new(poller.clone()));

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

    let shutdown = shutdown::signal().shared();
    let ready = Arc::new(AtomicBool::new(false));
    let ctx = Arc::new(Context::new(kube, poller, metrics.clone(), settings));
    let http = tokio::spawn(server::serve(
        args.metrics_address,
        metrics,
        ready.clone(),
        shutdown.clone(),
    ));
    reconciler::run(ctx, changes, ready, shutdown).await;
    http.await?.context("metrics server")?;
    tracing::info!("stopped");
    Ok(())
}
