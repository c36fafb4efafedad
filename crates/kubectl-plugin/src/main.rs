//! `kubectl compshare` (the binary `kubectl-compshare`, which kubectl finds on the PATH): the
//! command line and what each command does with the cluster. `ssh` lives in `ssh`, the
//! cluster connection and its errors in `cluster`; `import` is compshare-operator's own.

mod cluster;
mod ssh;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use compshare_operator::ImportArgs;
use compshare_operator::resource::{
    CompShareInstance, InstanceResource, PAUSED_ANNOTATION, REFRESH_ANNOTATION,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::json;

use cluster::{Cluster, Target};

/// The field manager of every write, so that `kubectl get -o yaml --show-managed-fields` says who
/// set an annotation.
const FIELD_MANAGER: &str = "kubectl-compshare";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-compshare",
    bin_name = "kubectl compshare",
    version,
    about = "CompShare GPU machines (CompShareInstance resources) from kubectl"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to the machine with ssh, with the password from its connection Secret (the
    /// password is never on the command line, in the environment or in a file).
    Ssh(ssh::SshArgs),
    /// Ask the operator for an immediate observation of the machine.
    Refresh(RefreshArgs),
    /// Stop the operator polling the resource (the annotation compshare.ucloud.cn/paused).
    Pause(Target),
    /// Let the operator poll the resource again.
    Resume(Target),
    /// List every machine of an account and print observe-only CompShareInstance manifests for
    /// them: `compshare-operator import`, with the same flags and output.
    Import(Box<ImportArgs>),
    /// Print the plugin's version.
    Version,
}

#[derive(Debug, Args)]
struct RefreshArgs {
    #[command(flatten)]
    target: Target,
    /// Wait until the operator has handled the refresh (status.lastHandledRefresh).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wait")]
    timeout: Duration,
}

fn main() -> ExitCode {
    // ssh runs this very binary as its SSH_ASKPASS program, with the prompt as the only argument.
    if let Some(code) = ssh::askpass_mode() {
        return code;
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Ssh(args) => ssh::run(args),
        Command::Refresh(args) => on_runtime(refresh(args)).map(|()| ExitCode::SUCCESS),
        Command::Pause(target) => on_runtime(set_paused(target, true)).map(|()| ExitCode::SUCCESS),
        Command::Resume(target) => {
            on_runtime(set_paused(target, false)).map(|()| ExitCode::SUCCESS)
        }
        Command::Import(args) => compshare_operator::import(*args).map(|()| ExitCode::SUCCESS),
        Command::Version => {
            println!("kubectl-compshare {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

/// One request at a time: a runtime on this thread is all a command needs.
fn on_runtime<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// Sets the refresh annotation to the time now (the operator takes any new value as a request;
/// milliseconds keep two requests within a second apart) and, with `--wait`, waits until the
/// operator records that value as handled.
async fn refresh(args: RefreshArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.target.cluster).await?;
    let value = format!("{:.3}", jiff::Timestamp::now());
    let updated = annotate(
        &cluster,
        &args.target.name,
        REFRESH_ANNOTATION,
        Some(&value),
    )
    .await?;
    println!(
        "compshareinstance/{} refresh requested ({value})",
        args.target.name
    );
    if !args.wait {
        return Ok(());
    }
    if updated.is_paused() {
        bail!(
            "CompShareInstance {} in namespace {} is paused: the refresh is handled once it is resumed (kubectl compshare resume {})",
            args.target.name,
            cluster.namespace,
            args.target.name
        );
    }
    let handled = {
        let value = value.clone();
        move |o: Option<&CompShareInstance>| {
            o.and_then(|o| o.status.as_ref())
                .and_then(|s| s.last_handled_refresh.as_deref())
                == Some(value.as_str())
        }
    };
    let observed = tokio::time::timeout(
        args.timeout,
        await_condition(cluster.instances(), &args.target.name, handled),
    )
    .await;
    let Ok(observed) = observed else {
        bail!(
            "the operator did not handle the refresh within {}: is it running and watching namespace {}? (a namespace's refreshes beyond its share of the account's budget wait for the next regular poll)",
            humantime::format_duration(args.timeout),
            cluster.namespace
        );
    };
    let observed = observed.map_err(|e| anyhow::anyhow!("watching for the refresh: {e}"))?;
    let state = observed
        .as_ref()
        .and_then(|o| o.status.as_ref())
        .and_then(|s| s.state.as_deref())
        .unwrap_or("unknown");
    println!(
        "compshareinstance/{} refreshed: state {state}",
        args.target.name
    );
    Ok(())
}

/// Sets the pause annotation to `"true"` (the one value the operator takes as paused) or removes
/// it.
async fn set_paused(target: Target, paused: bool) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&target.cluster).await?;
    annotate(
        &cluster,
        &target.name,
        PAUSED_ANNOTATION,
        paused.then_some("true"),
    )
    .await?;
    let done = if paused { "paused" } else { "resumed" };
    println!("compshareinstance/{} {done}", target.name);
    Ok(())
}

/// A JSON merge patch of one annotation (`None` removes it): it touches nothing else, and needs
/// only `patch` on the resource.
async fn annotate(
    cluster: &Cluster,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<CompShareInstance> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    cluster
        .instances()
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.explain(e, "CompShareInstance", name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
