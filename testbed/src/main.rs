//! Runs a control plane outside of tests, for the quick start and for poking at the operator.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use compshare_testbed::{ControlPlane, Options};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "A local Kubernetes control plane for the CompShare operator")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Start etcd and kube-apiserver, print `export KUBECONFIG=...`, and run until Ctrl-C or
    /// SIGTERM.
    Up {
        /// The control plane's directory (kubeconfig, logs, data): must be empty or absent, and
        /// is removed at the stop. Default: a new temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also run kube-controller-manager (garbage collection, namespace deletion).
        #[arg(long)]
        controller_manager: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Commands::Up {
            dir,
            controller_manager,
        } => up(Options {
            controller_manager,
            dir,
            ..Options::default()
        }),
    }
}

fn up(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Listening before the start means a signal during the start still ends in a clean stop.
    let (mut terminate, mut interrupt) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let control_plane = ControlPlane::start(options).context("cannot start the control plane")?;
    let kubeconfig = control_plane.kubeconfig_path();
    let kubeconfig = kubeconfig
        .to_str()
        .context("the kubeconfig path is not UTF-8")?;
    // The only line on stdout, so that scripts can eval it.
    println!("export KUBECONFIG={}", shlex::try_quote(kubeconfig)?);
    eprintln!(
        "compshare-testbed: control plane at {}, logs in {}; Ctrl-C stops it",
        control_plane.server_url(),
        control_plane.dir().display()
    );
    runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    });
    eprintln!("compshare-testbed: stopping");
    control_plane.stop();
    Ok(())
}
