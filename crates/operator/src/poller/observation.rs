//! What the poller knows about one watched instance.

use std::sync::Arc;

use compshare_api::{CallError, Instance};

/// The latest observation of one watched resource's instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation {
    /// The instance as last seen. Kept when a later call fails or no longer finds it, so nothing
    /// known is lost on a bad answer.
    pub instance: Option<Arc<Instance>>,
    /// What the latest call said.
    pub outcome: Outcome,
    /// The latest refresh request (annotation value) that an observation has answered.
    pub refresh: Option<String>,
    /// The resource generation the latest call was made for.
    pub generation: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The instance was in the answer.
    Found,
    /// The call succeeded but the instance was not in the answer: it was deleted or never existed
    /// (the API has no "not found" code; the vendor's CLI and Terraform provider read it this way).
    NotFound,
    /// The instance exists, but not in the zone the resource names.
    ZoneMismatch { actual: String },
    /// The call failed.
    Failed(CallError),
}
