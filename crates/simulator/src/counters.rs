//! Call counters, for tests and benchmarks to assert on: how many calls, of which action, by which
//! key, with which result, and how many instance ids were asked for.

use std::collections::BTreeMap;

use compshare_api::MUTATING_ACTIONS;
use serde::{Deserialize, Serialize};

/// Stands for the action or public key of a call that did not carry one.
pub(super) const MISSING: &str = "(missing)";

/// The calls the simulator answered since its start or the last reset, as
/// `GET /_simulator/counters` shows them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    total: u64,
    by_action: BTreeMap<String, Tally>,
    by_public_key: BTreeMap<String, Tally>,
    /// `UHostIds.N` parameters summed over the `DescribeCompShareInstance` calls that got past
    /// verification: with batching, far fewer calls than ids.
    ids_requested: u64,
    /// Verified `DescribeCompShareInstance` calls that named no ids: listings (one per page),
    /// told apart from the calls that ask for machines by id.
    #[serde(default)]
    listings: u64,
}

/// Calls of one action or key, in all and by result.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub total: u64,
    /// By `"<RetCode>"`, `"http_<status>"`, `"dropped"`, `"malformed"`, `"html"` or
    /// `"oversized"`.
    pub by_result: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, result: &str) {
        self.total += 1;
        *self.by_result.entry(result.to_owned()).or_default() += 1;
    }
}

impl Counters {
    /// Every call.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Calls of `action`, whatever their result.
    pub fn calls(&self, action: &str) -> u64 {
        self.by_action.get(action).map_or(0, |t| t.total)
    }

    /// Calls of the actions that change machines (`compshare_api::MUTATING_ACTIONS`), whatever
    /// their result: what a test asserts an observer never makes, or a manager makes once.
    pub fn mutating_calls(&self) -> u64 {
        MUTATING_ACTIONS
            .iter()
            .map(|action| self.calls(action))
            .sum()
    }

    /// Calls of `action` by result.
    pub fn action(&self, action: &str) -> Tally {
        self.by_action.get(action).cloned().unwrap_or_default()
    }

    /// Calls signed with `public_key` by result.
    pub fn public_key(&self, public_key: &str) -> Tally {
        self.by_public_key
            .get(public_key)
            .cloned()
            .unwrap_or_default()
    }

    /// Instance ids asked for by verified `DescribeCompShareInstance` calls.
    pub fn ids_requested(&self) -> u64 {
        self.ids_requested
    }

    /// Verified `DescribeCompShareInstance` calls that named no ids: the pages of listings.
    pub fn listings(&self) -> u64 {
        self.listings
    }

    pub(super) fn record(
        &mut self,
        action: Option<&str>,
        public_key: Option<&str>,
        result: &str,
        ids_requested: usize,
        listing: bool,
    ) {
        self.total += 1;
        self.ids_requested += ids_requested as u64;
        self.listings += u64::from(listing);
        self.by_action
            .entry(action.unwrap_or(MISSING).to_owned())
            .or_default()
            .add(result);
        self.by_public_key
            .entry(public_key.unwrap_or(MISSING).to_owned())
            .or_default()
            .add(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_by_action_key_and_result() {
        let mut counters = Counters::default();
        counters.record(
            Some("DescribeCompShareInstance"),
            Some("pub"),
            "0",
            100,
            false,
        );
        counters.record(Some("DescribeCompShareInstance"), Some("pub"), "0", 0, true);
        counters.record(
            Some("DescribeCompShareInstance"),
            Some("pub"),
            "0",
            50,
            false,
        );
        counters.record(
            Some("DescribeCompShareInstance"),
            Some("pub"),
            "http_503",
            0,
            false,
        );
        counters.record(None, None, "160", 0, false);
        assert_eq!(
            serde_json::to_value(&counters).unwrap(),
            json!({
                "total": 5,
                "idsRequested": 150,
                "listings": 1,
                "byAction": {
                    "DescribeCompShareInstance": {"total": 4, "byResult": {"0": 3, "http_503": 1}},
                    "(missing)": {"total": 1, "byResult": {"160": 1}},
                },
                "byPublicKey": {
                    "pub": {"total": 4, "byResult": {"0": 3, "http_503": 1}},
                    "(missing)": {"total": 1, "byResult": {"160": 1}},
                },
            })
        );
        assert_eq!(counters.mutating_calls(), 0);
        assert_eq!(counters.listings(), 1);
    }

    #[test]
    fn mutating_calls_sum_the_actions_that_change_machines() {
        let mut counters = Counters::default();
        counters.record(Some("CreateCompShareInstance"), Some("pub"), "0", 0, false);
        counters.record(Some("StopCompShareInstance"), Some("pub"), "8040", 0, false);
        counters.record(
            Some("DeleteCompShareStopScheduler"),
            Some("pub"),
            "dropped",
            0,
            false,
        );
        counters.record(
            Some("DescribeCompShareInstance"),
            Some("pub"),
            "0",
            1,
            false,
        );
        counters.record(
            Some("DescribeCompShareSupportZone"),
            Some("pub"),
            "0",
            0,
            false,
        );
        assert_eq!(counters.mutating_calls(), 3);
    }
}
