use clap::Parser;
use compshare_operator::cli::{Cli, Command};
use compshare_operator::simulator::{self, Fixture};
use compshare_operator::{operator, resource, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            telemetry::init(args.log_format);
            operator::run(args).await
        }
        Command::Crd => {
            print!("{}", resource::crd_yaml());
            Ok(())
        }
        Command::Simulate(args) => {
            telemetry::init(args.log_format);
            let fixture = match args.fixture {
                Some(path) => Fixture::load(path)?,
                None => Fixture::embedded_default(),
            };
            simulator::serve(args.listen, fixture, shutdown::signal()).await?;
            Ok(())
        }
    }
}
