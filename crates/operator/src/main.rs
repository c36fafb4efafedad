//! The `compshare-operator` binary: the allocator and the process-wide settings, then the command
//! line (`compshare_operator::main`).

use clap::Parser;
use compshare_operator::Cli;
use libmimalloc_sys::{mi_option_set, mi_option_t};

// mimalloc returns freed memory to the system promptly; with the system allocator, the peak of a
// large initial list stays resident (BENCHMARKS.md). The crate's `no_thp` feature keeps the
// process off transparent huge pages from mimalloc's first allocation on (before `main`): a
// sparse heap on huge pages costs up to 2 MiB per touched region, and the operator gains nothing
// from them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the bindings name only some options and
/// say to pass the others by number; a test below checks it against the option's default).
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

fn main() -> anyhow::Result<()> {
    // Memory mimalloc no longer uses goes back to the system at once rather than a second later,
    // when it may be reused first: the first sync and a restart's reconciliations free as much
    // as they keep, and with the delay the operator's peak at 10,000 resources was 13 MiB higher
    // after a restart (BENCHMARKS.md). The cost is CPU, mostly during the first sync.
    // SAFETY: sets a number mimalloc reads when it purges; before any other thread starts.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    compshare_operator::main(Cli::parse())
}

#[cfg(test)]
mod tests {
    use libmimalloc_sys::mi_option_get;

    use super::MI_OPTION_PURGE_DELAY;

    #[test]
    fn the_purge_delay_option_is_the_one_whose_default_is_a_second() {
        // mimalloc's default purge delay is 1,000 ms, and no neighbouring option's is.
        // SAFETY: reads an option.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        for neighbour in [MI_OPTION_PURGE_DELAY - 1, MI_OPTION_PURGE_DELAY + 1] {
            // SAFETY: reads an option.
            assert_ne!(unsafe { mi_option_get(neighbour) }, 1000);
        }
    }
}
