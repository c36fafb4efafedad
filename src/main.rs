use clap::Parser;
use compshare_operator::cli::{Cli, Command};
use compshare_operator::{operator, resource, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            telemetry::init(args.log_format);
            operator::run(args).await
        }
        Command::Crd => {
            print!("{}", resource::crd_yaml());
            Ok(())
        }
    }
}
