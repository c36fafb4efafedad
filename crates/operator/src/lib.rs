//! compshare-operator: CompShare GPU instances as Kubernetes resources.
//!
//! The public surface is the resource ([`resource`]: the `CompShareInstance` types and the CRD)
//! and the command line ([`Cli`], [`main`]). Inside, each module keeps to its room:
//!
//! - `poller`: batched, budgeted observation of instances; knows nothing of Kubernetes.
//! - `reconciler`: turns observations into status, conditions, events and connection Secrets,
//!   from its own compact cache of the resources (`reconciler::cache`) and work queue
//!   (`reconciler::queue`); `reconciler::discovery` keeps one observe-only resource per machine a
//!   `CompShareDiscovery` lists.
//! - `leadership`: the leader election on a Lease.
//! - `operator`: wires the CompShare client (`compshare-api`), the poller, the controller and the
//!   HTTP endpoints together, from the configuration the command line gives (`config`).
//! - `import`: the `import` command, manifests for an account's existing machines (its listing
//!   and manifests are discovery's too).
//! - `packing`: values kept for every resource (a cached status, an observed instance), packed.
//! - `metrics`, `server`, `telemetry`, `shutdown`: what every run needs around it.

#[cfg(test)]
mod allocations;
mod cli;
mod config;
mod import;
mod leadership;
mod metrics;
mod operator;
mod packing;
mod poller;
mod reconciler;
pub mod resource;
mod server;
mod shutdown;
mod telemetry;

pub use cli::Cli;
/// `import`'s flags, for other command lines to offer the same command (`kubectl compshare import`).
pub use import::ImportArgs;

/// The metrics exposition with a sample of every family, for the test that the chart's alerts and
/// dashboard query only metrics the operator exports.
#[doc(hidden)]
pub fn metrics_exposition_example() -> String {
    metrics::example_exposition()
}

/// Runs a parsed command line to its end.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Run(args) => {
            telemetry::init(args.log_format);
            let config = config::Config::from(*args);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(operator::run(config))
        }
        cli::Command::Crd => {
            print!("{}", resource::crds_yaml());
            Ok(())
        }
        cli::Command::Import(args) => import(*args),
    }
}

/// Runs `import` to its end, logging to stderr: `compshare-operator import`, and
/// `kubectl compshare import` with the same flags and the same output.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    telemetry::init(telemetry::LogFormat::Text);
    // One call at a time: a runtime on this thread is all it needs.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(import::run(args))
}

/// For the fuzz targets (`cargo fuzz` builds with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::sync::Arc;

    use crate::poller::{Observation, Outcome};
    use crate::reconciler::status::{Inputs, Management, Situation, desired};
    use crate::resource::{CompShareInstance, CompShareInstanceStatus};

    /// The status the operator writes for `resource` when an answer holds `instance`.
    pub fn status_for(
        resource: &CompShareInstance,
        instance: compshare_api::Instance,
    ) -> CompShareInstanceStatus {
        let observation = Observation {
            instance: Some(Arc::new(instance)),
            outcome: Outcome::Found,
            refresh: None,
            generation: resource.metadata.generation.unwrap_or_default(),
        };
        desired(Inputs {
            resource,
            situation: Situation::Watched(Some(&observation)),
            connection_problem: None,
            connection_secret: None,
            management: Management::default(),
            now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        })
    }
}
