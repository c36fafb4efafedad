//! `compshare-operator import`: lists every machine of an account and prints (or writes)
//! observe-only `CompShareInstance` manifests for them, so that bringing an existing account under
//! GitOps needs no ids copied from the console. This module does the I/O: it finds the
//! credentials, asks the API (pages, regions, backoff: [`Lister`]) and writes the output; what the
//! manifests say is decided in `manifest`, without I/O. In-cluster discovery
//! (`reconciler::discovery`) lists with the same [`Lister`] and makes the same manifests.

pub(crate) mod manifest;
mod out_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use compshare_api::{
    CallError, Client, ClientConfig, Credentials, DescribeRequest, Disposition, Instance,
    MAX_IDS_PER_CALL,
};
use serde::Deserialize;

use crate::cli::ApiArgs;
use crate::reconciler::credentials::{SecretName, key_text, read_secret};
use crate::resource::{PRIVATE_KEY_KEY, PUBLIC_KEY_KEY};
use manifest::{Filters, Settings};

pub(crate) use manifest::Format;

/// The region `DescribeCompShareSupportZone` is asked in: it answers every region's zones, but
/// wants a region, and this is the one every account has (CompShare's machines are there).
const HOME_REGION: &str = "cn-wlcb";
/// Environment variables holding a key pair, for use outside a cluster.
const PUBLIC_KEY_ENV: &str = "COMPSHARE_PUBLIC_KEY";
const PRIVATE_KEY_ENV: &str = "COMPSHARE_PRIVATE_KEY";
/// Throttled or transient calls are tried again after 0.5 s, doubling (with jitter) up to 20 s,
/// at most this many times: about a minute and a half of waiting before `import` gives up.
const RETRIES: usize = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(20);

/// The flags of `import` (public so that `kubectl compshare import` offers the very same ones).
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Read the key pair from this Secret (NAMESPACE/NAME, keys `publicKey` and `privateKey`),
    /// using the kubeconfig like kubectl. Without it: --key-file, else the environment
    /// (COMPSHARE_PUBLIC_KEY, COMPSHARE_PRIVATE_KEY).
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "key_file")]
    credentials_secret: Option<SecretName>,

    /// Read the key pair from this file: YAML or JSON with `publicKey` and `privateKey`.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// List this region (repeatable). Default: every region the account has zones in.
    #[arg(long = "region", value_name = "REGION")]
    regions: Vec<String>,

    /// The project (`org-…`) to list, also written into each manifest. Default: the account's
    /// default project, and none in the manifests.
    #[arg(long)]
    project_id: Option<String>,

    /// Keep machines in this zone (repeatable: any of them).
    #[arg(long = "zone", value_name = "ZONE")]
    zones: Vec<String>,

    /// Keep machines of this business group, `Tag` (repeatable: any of them).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Keep machines with an address in this VPC, e.g. uvnet-abc123 (repeatable: any of them).
    #[arg(long = "vpc", value_name = "VPC_ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    vpcs: Vec<String>,

    /// Keep machines whose name matches this glob pattern, e.g. 'trainer-*' (repeatable: any).
    #[arg(long = "name", value_name = "PATTERN")]
    names: Vec<String>,

    /// Keep machines in this state, e.g. Running (repeatable: any; case is ignored).
    #[arg(long = "state", value_name = "STATE")]
    states: Vec<String>,

    /// The Secret each manifest's `spec.credentialsRef` names (in the manifest's namespace).
    /// Default: the name of --credentials-secret; without either, none (the operator's default
    /// credentials, where its administrator allows them).
    #[arg(long, value_name = "NAME")]
    credentials_ref: Option<String>,

    /// Write `metadata.namespace` into each manifest.
    #[arg(long)]
    namespace: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value = "yaml")]
    output: Format,

    /// Write one file per machine (`<name>.yaml`, or `.json`) into this directory instead of
    /// printing. A rerun into the same directory removes the files an earlier run wrote for
    /// machines that are gone (recorded in `.compshare-import`), and no other file.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,

    /// Also write a `kustomization.yaml` listing the files (needs --out-dir).
    #[arg(long, requires = "out_dir")]
    kustomization: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// Runs `import` to its end; an error (bad keys, a region it may not list, a call that kept
/// failing) makes the process exit non-zero.
pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let filters = Filters {
        zones: args.zones,
        tags: args.tags,
        vpcs: args.vpcs,
        names: Filters::name_patterns(&args.names).context("--name")?,
        states: args.states,
    };
    // The endpoint first: a wrong one is refused before a cluster or a file is read.
    let client = Client::new(&ClientConfig::from(args.api))?;
    let (credentials, source) =
        credentials(args.credentials_secret.as_ref(), args.key_file.as_deref()).await?;
    let credentials_ref = args
        .credentials_ref
        .or_else(|| args.credentials_secret.map(|s| s.name));
    if credentials_ref.is_none() {
        tracing::info!(
            "no --credentials-ref: the manifests name no credentials Secret and rely on the operator's default credentials"
        );
    }
    let settings = Settings {
        namespace: args.namespace,
        project_id: args.project_id,
        credentials_ref,
    };
    let lister = Lister {
        client: &client,
        credentials: &credentials,
        retries: RETRIES,
        metrics: None,
    };

    let regions = if args.regions.is_empty() {
        let regions = lister.regions().await.map_err(|f| explain(f, &source))?;
        tracing::info!(?regions, "regions of the account");
        regions
    } else {
        args.regions.into_iter().collect()
    };
    let AccountListing { machines, complete } = lister
        .list_all(&regions, settings.project_id.as_deref())
        .await
        .map_err(|f| explain(f, &source))?;
    let resources = manifest::manifests(machines.values(), &filters, &settings);
    if resources.is_empty() {
        tracing::warn!(
            listed = machines.len(),
            regions = ?regions,
            "no machine to import: the account has none in these regions, or the filters kept none"
        );
    } else {
        tracing::info!(
            listed = machines.len(),
            imported = resources.len(),
            regions = ?regions,
            "machines imported"
        );
    }

    match &args.out_dir {
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(manifest::render_all(&resources, args.output).as_bytes())?;
            out.flush()?;
        }
        Some(dir) => {
            // A machine missing from an incomplete listing may still exist: its file stays.
            if !complete {
                tracing::warn!(
                    "the listing was incomplete (a machine could not be read, or machines came or went while the pages were read): files of machines not listed are kept this time"
                );
            }
            let output = out_dir::Output {
                format: args.output,
                kustomization: args.kustomization,
                prune: complete,
            };
            out_dir::write(dir, &resources, &output)?;
        }
    }
    Ok(())
}

/// The key pair, and where it came from (for messages that tell a person what to check).
async fn credentials(
    secret: Option<&SecretName>,
    key_file: Option<&Path>,
) -> anyhow::Result<(Credentials, String)> {
    if let Some(secret) = secret {
        let kube = kube::Client::try_default()
            .await
            .context("no Kubernetes configuration to read --credentials-secret with")?;
        let credentials = read_secret(&kube, secret)
            .await
            .with_context(|| format!("reading Secret {secret}"))?
            .map_err(|problem| anyhow::anyhow!(problem.message))?;
        return Ok((credentials, format!("Secret {secret}")));
    }
    if let Some(path) = key_file {
        let source = format!("key file {}", path.display());
        return Ok((key_file_credentials(path, &source)?, source));
    }
    let env = |name: &str| std::env::var_os(name).map(|v| v.into_encoded_bytes());
    match (env(PUBLIC_KEY_ENV), env(PRIVATE_KEY_ENV)) {
        (Some(public), Some(private)) => {
            let source = format!("{PUBLIC_KEY_ENV} and {PRIVATE_KEY_ENV}");
            let key = |name, bytes: &[u8]| {
                key_text(name, bytes).map_err(|what| anyhow::anyhow!("{source}: {what}"))
            };
            let credentials = Credentials::new(
                key(PUBLIC_KEY_ENV, &public)?,
                key(PRIVATE_KEY_ENV, &private)?,
            );
            Ok((credentials, source))
        }
        _ => bail!(
            "no credentials: pass --credentials-secret NAMESPACE/NAME or --key-file PATH, or set {PUBLIC_KEY_ENV} and {PRIVATE_KEY_ENV}"
        ),
    }
}

/// A key file: YAML (or JSON) with the Secret's keys, `publicKey` and `privateKey`.
fn key_file_credentials(path: &Path, source: &str) -> anyhow::Result<Credentials> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct KeyFile {
        public_key: String,
        private_key: String,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {source}"))?;
    // The parser's message is not passed on: it may quote the text around an error, which could
    // be the private key.
    let file: KeyFile = serde_saphyr::from_str(&text).map_err(|_| {
        anyhow::anyhow!(
            "{source} is not YAML or JSON with the keys {PUBLIC_KEY_KEY:?} and {PRIVATE_KEY_KEY:?}"
        )
    })?;
    let key = |name, value: &str| {
        key_text(name, value.as_bytes()).map_err(|what| anyhow::anyhow!("{source}: {what}"))
    };
    Ok(Credentials::new(
        key(PUBLIC_KEY_KEY, &file.public_key)?,
        key(PRIVATE_KEY_KEY, &file.private_key)?,
    ))
}

/// A call of the listing that failed for good: waiting could not fix it, or the retries ran out.
#[derive(Debug)]
pub(crate) struct ListFailure {
    pub action: &'static str,
    pub region: String,
    pub error: CallError,
}

/// The machines of one region.
pub(crate) struct RegionListing {
    pub machines: Vec<Instance>,
    /// Whether every machine is surely among them: no element was unreadable and the total did
    /// not change while the pages were read (a machine released meanwhile shifts the offsets, and
    /// one made meanwhile may be missed). Only a complete listing may say a machine is gone.
    pub complete: bool,
}

/// The machines of several regions, keyed by id.
pub(crate) struct AccountListing {
    pub machines: BTreeMap<String, Instance>,
    /// Whether every region's listing was complete (`RegionListing::complete`).
    pub complete: bool,
}

/// Lists an account's machines, waiting out throttling: what `import` prints and what in-cluster
/// discovery (`reconciler::discovery`) keeps resources for.
pub(crate) struct Lister<'a> {
    pub client: &'a Client,
    pub credentials: &'a Credentials,
    /// How many times a throttled or transient call is tried again, after 0.5 s, doubling (with
    /// jitter) up to 20 s.
    pub retries: usize,
    /// Where each call is counted (the operator's metrics), if anywhere.
    pub metrics: Option<&'a crate::metrics::Metrics>,
}

impl Lister<'_> {
    /// Every region the account has a zone in, sorted.
    pub(crate) async fn regions(&self) -> Result<BTreeSet<String>, ListFailure> {
        let zones = self
            .retrying("DescribeCompShareSupportZone", HOME_REGION, || {
                self.client.support_zones(self.credentials, HOME_REGION)
            })
            .await?;
        let regions: BTreeSet<String> = zones.into_iter().map(|z| z.region).collect();
        tracing::debug!(?regions, "regions of the account");
        Ok(regions)
    }

    /// Every machine of `regions` (in `project`), keyed by id: a machine that moved between pages
    /// while they were read is listed once.
    pub(crate) async fn list_all(
        &self,
        regions: &BTreeSet<String>,
        project: Option<&str>,
    ) -> Result<AccountListing, ListFailure> {
        let mut listing = AccountListing {
            machines: BTreeMap::new(),
            complete: true,
        };
        for region in regions {
            let RegionListing { machines, complete } = self.list(region, project).await?;
            listing.complete &= complete;
            for instance in machines {
                listing
                    .machines
                    .insert(instance.u_host_id.to_string(), instance);
            }
        }
        Ok(listing)
    }

    /// Every machine of `region` (in `project`), page by page until `TotalCount` is reached:
    /// ⌈machines/100⌉ calls.
    pub(crate) async fn list(
        &self,
        region: &str,
        project: Option<&str>,
    ) -> Result<RegionListing, ListFailure> {
        let mut machines = Vec::new();
        let mut complete = true;
        loop {
            let request = DescribeRequest {
                region: region.to_owned(),
                project_id: project.map(str::to_owned),
                limit: Some(MAX_IDS_PER_CALL as u32),
                offset: Some(u32::try_from(machines.len()).unwrap_or(u32::MAX)),
                ..DescribeRequest::default()
            };
            let page = self
                .retrying("DescribeCompShareInstance", region, || {
                    self.client.describe(self.credentials, &request)
                })
                .await?;
            let received = page.u_host_set.len() + page.unreadable.len();
            complete &= page.unreadable.is_empty();
            for unreadable in &page.unreadable {
                tracing::warn!(
                    region,
                    id = unreadable.id.as_deref().unwrap_or("?"),
                    problem = %unreadable.problem,
                    "a listed machine cannot be read; it is left out"
                );
            }
            machines.extend(page.u_host_set);
            let total = page.total_count.unwrap_or_default();
            // An empty page ends the listing even short of the total: the total shrank while the
            // pages were read, and asking again would ask for the same empty page.
            if received == 0 || machines.len() as i64 >= total {
                complete &= machines.len() as i64 == total;
                break;
            }
        }
        tracing::debug!(region, machines = machines.len(), complete, "region listed");
        Ok(RegionListing { machines, complete })
    }

    /// `call`, tried again after a growing pause while it fails in a way that waiting can fix.
    async fn retrying<T, F: Future<Output = Result<T, CallError>>>(
        &self,
        action: &'static str,
        region: &str,
        call: impl Fn() -> F,
    ) -> Result<T, ListFailure> {
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF)
            .with_max_delay(LONGEST_BACKOFF)
            .with_max_times(self.retries)
            .with_jitter()
            .build();
        loop {
            let started = std::time::Instant::now();
            let answer = call().await;
            if let Some(metrics) = self.metrics {
                metrics.record_call(action, started.elapsed(), answer.as_ref().map(|_| ()));
            }
            let error = match answer {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            match pauses.next() {
                Some(pause) if error.is_retryable() => {
                    tracing::info!(action, region, %error, ?pause, "trying again after a pause");
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    return Err(ListFailure {
                        action,
                        region: region.to_owned(),
                        error,
                    });
                }
            }
        }
    }
}

/// A failed listing as an error that says what a person should check; `source` is where the keys
/// came from.
fn explain(failure: ListFailure, source: &str) -> anyhow::Error {
    let ListFailure {
        action,
        region,
        error,
    } = failure;
    match error.disposition() {
        Disposition::CredentialsRejected => anyhow::anyhow!(
            "CompShare rejected the key pair ({error}): check that the public and private key in {source} are an API key pair of the account (console: 账户中心 → API 密钥) and that --endpoint is right"
        ),
        Disposition::PermissionDenied => anyhow::anyhow!(
            "{action} in region {region} was refused ({error}): check that the key pair in {source} may list machines there, and --project-id"
        ),
        _ if error.is_retryable() => anyhow::anyhow!(
            "{action} in region {region} kept failing after {RETRIES} retries: {error}"
        ),
        _ => anyhow::anyhow!(
            "{action} in region {region} failed ({error}): check --region, --project-id and --endpoint"
        ),
    }
}
