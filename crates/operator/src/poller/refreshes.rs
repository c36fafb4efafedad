//! How refresh requests (the `refresh-requested-at` annotation) turn into calls, so that no one can
//! spend an account's budget by refreshing:
//!
//! - **Per resource**, at most one refresh is polled right away per [`REFRESH_SPACING`]; a newer
//!   request inside that window waits for its end, and requests made meanwhile merge into one
//!   (the last value is the one recorded as handled).
//! - **Per namespace**, refreshes polled right away are limited to a fair share of the account's
//!   budget: half of it (the other half is left to regular polling), split evenly among the
//!   namespaces that have resources on the account. A refresh beyond its namespace's share is
//!   answered by the resource's next regular poll.
//!
//! Pure apart from a lock: time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The least time between two refreshes of one resource that are polled right away.
pub(super) const REFRESH_SPACING: Duration = Duration::from_secs(10);

/// How a refresh request is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handling {
    /// Polled right away (with whatever else is urgent in its group).
    Immediate,
    /// Polled at the end of the resource's refresh spacing; later requests until then merge.
    Deferred,
    /// Merged into a refresh of the resource already waiting, or, over its namespace's share,
    /// answered by the resource's next regular poll.
    Merged,
}

impl Handling {
    pub(super) fn label(self) -> &'static str {
        match self {
            Handling::Immediate => "immediate",
            Handling::Deferred => "deferred",
            Handling::Merged => "merged",
        }
    }
}

/// The namespaces' shares of one account's refreshes.
#[derive(Debug)]
pub(super) struct RefreshShares {
    /// Calls per second the account's budget allows, all namespaces together.
    budget_per_second: f64,
    namespaces: Mutex<HashMap<String, Share>>,
}

#[derive(Debug)]
struct Share {
    /// Resources of this namespace on the account.
    members: usize,
    tokens: f64,
    updated: Option<Instant>,
}

impl RefreshShares {
    pub(super) fn new(calls_per_minute: u32) -> Self {
        RefreshShares {
            budget_per_second: f64::from(calls_per_minute) / 60.0,
            namespaces: Mutex::default(),
        }
    }

    /// A resource of `namespace` joined the account.
    pub(super) fn join(&self, namespace: &str) {
        let mut namespaces = self.namespaces.lock().expect("shares lock");
        namespaces
            .entry(namespace.to_owned())
            .or_insert(Share {
                members: 0,
                // Full: capped to the share's capacity at the first refresh.
                tokens: f64::INFINITY,
                updated: None,
            })
            .members += 1;
    }

    /// A resource of `namespace` left the account.
    pub(super) fn leave(&self, namespace: &str) {
        let mut namespaces = self.namespaces.lock().expect("shares lock");
        if let Some(share) = namespaces.get_mut(namespace) {
            share.members = share.members.saturating_sub(1);
            if share.members == 0 {
                namespaces.remove(namespace);
            }
        }
    }

    /// Whether a refresh of a resource in `namespace` may be polled right away, spending one of
    /// the namespace's tokens if so.
    pub(super) fn admit(&self, namespace: &str, now: Instant) -> bool {
        let mut namespaces = self.namespaces.lock().expect("shares lock");
        let active = namespaces.len().max(1) as f64;
        let Some(share) = namespaces.get_mut(namespace) else {
            return false;
        };
        let rate = self.budget_per_second / 2.0 / active;
        // Up to ten seconds of the share at once, and at least one refresh.
        let capacity = (rate * 10.0).max(1.0);
        if let Some(updated) = share.updated {
            share.tokens += rate * now.saturating_duration_since(updated).as_secs_f64();
        }
        share.tokens = share.tokens.min(capacity);
        share.updated = Some(now);
        if share.tokens >= 1.0 {
            share.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refreshes admitted for `namespace` when asked `tries` times over `span`.
    fn admitted(shares: &RefreshShares, namespace: &str, start: Instant, span: Duration) -> usize {
        let tries = 600;
        (0..tries)
            .filter(|i| shares.admit(namespace, start + span.mul_f64(*i as f64 / tries as f64)))
            .count()
    }

    #[test]
    fn a_namespace_gets_half_the_budget_split_among_the_namespaces() {
        let shares = RefreshShares::new(300); // 5 calls/s: 2.5/s for refreshes
        shares.join("a");
        let start = Instant::now();
        // Alone: 2.5/s over a minute is 150, plus the first bucketful (25).
        let alone = admitted(&shares, "a", start, Duration::from_secs(60));
        assert!((170..=176).contains(&alone), "{alone}");
        shares.join("b");
        shares.join("b");
        shares.join("c");
        // Three namespaces: 0.83/s each.
        let later = start + Duration::from_secs(60);
        let shared = admitted(&shares, "a", later, Duration::from_secs(60));
        assert!((45..=60).contains(&shared), "{shared}");
    }

    #[test]
    fn a_namespace_without_resources_on_the_account_gets_nothing_and_leaving_frees_its_share() {
        let shares = RefreshShares::new(60);
        let now = Instant::now();
        assert!(!shares.admit("nobody", now));
        shares.join("a");
        shares.join("b");
        shares.leave("b");
        shares.leave("b");
        assert!(shares.admit("a", now));
        assert!(!shares.admit("b", now));
    }

    #[test]
    fn a_small_budget_still_admits_one_refresh_at_a_time() {
        let shares = RefreshShares::new(1);
        shares.join("a");
        let now = Instant::now();
        assert!(shares.admit("a", now));
        assert!(!shares.admit("a", now + Duration::from_secs(1)));
        assert!(!shares.admit("a", now + Duration::from_secs(100)));
        // 1/120 per second: the next after two minutes.
        assert!(shares.admit("a", now + Duration::from_secs(121)));
    }
}
