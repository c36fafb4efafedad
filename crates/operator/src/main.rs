//! The `compshare-operator` binary: the allocator and the process-wide settings, then the command
//! line (`compshare_operator::main`).

use clap::Parser;
use compshare_operator::Cli;

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
    compshare_operator::main(Cli::parse())
}
