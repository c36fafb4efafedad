//! The CompShare API: signing, the wire format, errors and answer shapes. Nothing here knows about
//! Kubernetes; the simulator and the poller both build on it.

pub mod client;
pub mod error;
mod lenient;
pub mod model;
pub mod signing;
pub mod ssh;

pub use client::{Client, ClientConfig, Credentials, DescribeRequest};
pub use error::{CallError, Disposition};
pub use model::{DescribeResponse, Instance};
