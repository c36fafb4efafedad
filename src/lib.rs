//! compshare-operator: CompShare GPU instances as Kubernetes resources.
//!
//! - [`resource`]: the `CompShareInstance` API types (the CRD).
//! - [`compshare`]: the CompShare API client (signing, wire, errors); knows nothing of Kubernetes.
//! - [`poller`]: batched, budgeted observation of instances; knows nothing of Kubernetes either.
//! - [`reconciler`]: turns observations into status, conditions, events and connection Secrets.
//! - [`simulator`]: a strict stand-in for the CompShare gateway, for tests and pipelines.

pub mod cli;
pub mod compshare;
pub mod leadership;
pub mod metrics;
pub mod operator;
pub mod poller;
pub mod reconciler;
pub mod resource;
pub mod server;
pub mod shutdown;
pub mod simulator;
pub mod telemetry;
