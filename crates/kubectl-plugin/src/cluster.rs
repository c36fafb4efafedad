//! Which cluster and namespace a command talks to, found as kubectl finds them (`--kubeconfig`,
//! else `KUBECONFIG`, else `~/.kube/config`, else the pod's service account; `--context`;
//! `-n/--namespace`, else the context's namespace), and the apiserver's refusals turned into
//! messages that name the object and the namespace.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Args;
use compshare_operator::resource::CompShareInstance;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Config};

/// kubectl's flags for choosing the cluster and the namespace.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The namespace of the resource (default: the context's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// The kubeconfig file to use (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
}

/// A resource named on the command line, and where it is.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The CompShareInstance's name.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// A client for the chosen cluster, and the namespace commands act in.
pub(crate) struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
}

impl Cluster {
    pub(crate) async fn connect(args: &ClusterArgs) -> anyhow::Result<Cluster> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let loaded = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        };
        let config = match loaded {
            Ok(config) => config,
            // No kubeconfig at all: in a pod, its service account, as kubectl does.
            Err(e) if is_missing(&e) && args.context.is_none() => {
                Config::incluster().map_err(|_| {
                    anyhow!(
                        "no kubeconfig: set KUBECONFIG, pass --kubeconfig PATH, or create ~/.kube/config"
                    )
                })?
            }
            Err(e) => return Err(anyhow!(e).context("loading the kubeconfig")),
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("configuring the client")?;
        Ok(Cluster { client, namespace })
    }

    pub(crate) fn instances(&self) -> Api<CompShareInstance> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A failed request about `kind` `name`, as a message a person can act on.
    pub(crate) fn explain(&self, error: kube::Error, kind: &str, name: &str) -> anyhow::Error {
        let namespace = &self.namespace;
        match error {
            kube::Error::Api(status) if status.code == 404 => {
                // Without details naming the object, the type itself is unknown to the apiserver.
                if status.details.as_ref().is_some_and(|d| d.name == name) {
                    anyhow!("{kind} {name:?} not found in namespace {namespace:?}")
                } else {
                    anyhow!(
                        "the cluster does not serve {kind}: is compshare-operator's CRD installed? ({})",
                        status.message
                    )
                }
            }
            kube::Error::Api(status) if status.code == 403 => anyhow!(
                "forbidden: {} (your kubeconfig's user may not do this in namespace {namespace:?})",
                status.message
            ),
            kube::Error::Api(status) if status.code == 401 => anyhow!(
                "unauthorized: the cluster did not accept your kubeconfig's credentials ({})",
                status.message
            ),
            other => anyhow!(other).context(format!("{kind} {name:?} in namespace {namespace:?}")),
        }
    }
}

/// Whether loading failed because there is no kubeconfig file at all.
fn is_missing(error: &KubeconfigError) -> bool {
    match error {
        KubeconfigError::FindPath => true,
        KubeconfigError::ReadConfig(io, _) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}
