//! The per-account budget of cloud calls: a token bucket shared by every poll group of one account
//! (all its regions and projects), so no mix of resources can spend more than the administrator
//! allowed, retries included.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[derive(Clone, Copy, Debug)]
pub(crate) struct BudgetConfig {
    pub calls_per_minute: NonZeroU32,
    /// Calls that may be made at once after a quiet period (start-up, a burst of new resources).
    pub burst: NonZeroU32,
}

#[derive(Debug)]
pub(super) struct Budget(DefaultDirectRateLimiter);

impl Budget {
    pub(super) fn new(config: BudgetConfig) -> Self {
        let quota = Quota::per_minute(config.calls_per_minute).allow_burst(config.burst);
        Budget(RateLimiter::direct(quota))
    }

    /// Waits until a call may be made and spends it; returns how long that took.
    pub(super) async fn spend(&self) -> Duration {
        let start = tokio::time::Instant::now();
        self.0.until_ready().await;
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_free_then_calls_are_paced() {
        let budget = Budget::new(BudgetConfig {
            calls_per_minute: NonZeroU32::new(600).unwrap(), // one per 100 ms
            burst: NonZeroU32::new(3).unwrap(),
        });
        let start = std::time::Instant::now();
        for _ in 0..3 {
            budget.spend().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        for _ in 0..3 {
            budget.spend().await;
        }
        // Three more calls need three more tokens: ~300 ms (one may already have refilled).
        assert!(start.elapsed() >= Duration::from_millis(190));
    }
}
