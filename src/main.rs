use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use compshare_operator::simulator::{self, Fixture};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a simulated CompShare API gateway (admin interface under /_simulator/).
    Simulate {
        #[arg(
            long,
            env = "COMPSHARE_SIMULATOR_LISTEN",
            default_value = "127.0.0.1:8480"
        )]
        listen: SocketAddr,
        /// YAML or JSON fixture; without it, a built-in demo account and instances.
        #[arg(long, env = "COMPSHARE_SIMULATOR_FIXTURE")]
        fixture: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Simulate { listen, fixture } => {
            let fixture = match fixture {
                Some(path) => Fixture::load(path)?,
                None => Fixture::embedded_default(),
            };
            simulator::serve(listen, fixture, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
    }
    Ok(())
}
