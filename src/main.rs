use clap::Parser;
use compshare_operator::cli::{Cli, Command};
use compshare_operator::simulator::{self, Fixture};
use compshare_operator::{operator, resource, shutdown, telemetry};

// mimalloc returns freed memory to the system promptly; with the system allocator, the peak of a
// large initial list stays resident (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // A sparse heap on transparent huge pages costs up to 2 MiB per touched region: at 10,000
    // resources that was a third of the operator's memory (BENCHMARKS.md). The operator gains
    // nothing from huge pages, so it opts out for itself; the result is ignored on kernels
    // without the flag.
    // SAFETY: a plain prctl on this process, before any thread starts.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
