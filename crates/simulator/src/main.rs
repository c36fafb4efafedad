//! `compshare-simulator`: serves a simulated CompShare API gateway (and its admin interface under
//! `/_simulator/`) until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use compshare_simulator::Fixture;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "compshare-simulator",
    version,
    about = "A strict stand-in for the CompShare API gateway, for tests and pipelines"
)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "COMPSHARE_SIMULATOR_LISTEN",
        default_value = "127.0.0.1:8480"
    )]
    listen: SocketAddr,

    /// YAML or JSON fixture; without it, a built-in demo account and instances.
    #[arg(long, env = "COMPSHARE_SIMULATOR_FIXTURE")]
    fixture: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Levels from RUST_LOG (default info), to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let fixture = match args.fixture {
        Some(path) => Fixture::load(path)?,
        None => Fixture::embedded_default(),
    };
    compshare_simulator::serve(args.listen, fixture, stopped()).await?;
    Ok(())
}

/// Resolves on the first SIGTERM or Ctrl-C.
async fn stopped() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { terminate.as_mut()?.recv().await } => {}
    }
}
