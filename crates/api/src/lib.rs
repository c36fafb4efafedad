//! A client for the CompShare API (优云智算, UCloud's GPU cloud): request signing, the wire
//! format, typed errors and what to do about each, the answer models, and reading SSH login
//! commands. It knows nothing of Kubernetes; the operator and the simulator both build on it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use compshare_api::{Client, ClientConfig, Credentials, DescribeRequest};
//!
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let simulator = compshare_simulator::Simulator::start(
//! #     listener,
//! #     compshare_simulator::Fixture::embedded_default(),
//! # );
//! # let endpoint = simulator.endpoint();
//! // `https://api.compshare.cn` by default; here a local simulator.
//! let client = Client::new(&ClientConfig {
//!     endpoint,
//!     allow_insecure_http: true,
//!     ..ClientConfig::default()
//! })?;
//! let credentials = Credentials::new("compshare-demo-public-key", "compshare-demo-private-key");
//! let answer = client
//!     .describe(
//!         &credentials,
//!         &DescribeRequest {
//!             region: "cn-wlcb".into(),
//!             limit: Some(100),
//!             ..DescribeRequest::default()
//!         },
//!     )
//!     .await?;
//! for instance in &answer.u_host_set {
//!     println!("{} is {}", instance.u_host_id, instance.state);
//! }
//! # assert!(!answer.u_host_set.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! A failed call is a [`CallError`], whose [`Disposition`] says what the caller should do:
//! back off, retry later, or stop and have a person fix keys, permissions or the request.

mod client;
mod error;
mod lenient;
mod lifecycle;
mod model;
pub mod signing;
mod ssh;

pub use client::{
    Client, ClientConfig, ConfigError, Credentials, DEFAULT_ENDPOINT, DESCRIBE_ACTION,
    DescribeRequest, MAX_ANSWER_BYTES, MAX_IDS_PER_CALL, REQUEST_ID_HEADER, parse_envelope,
};
pub use error::{CallError, Disposition, OPERATION_IN_PROGRESS};
pub use lifecycle::{
    CREATE_ACTION, CreateRequest, DELETE_STOP_SCHEDULER_ACTION, Disk, InstanceRef,
    MUTATING_ACTIONS, REBOOT_ACTION, START_ACTION, STOP_ACTION, SUPPORT_ZONE_ACTION, SupportZone,
    TERMINATE_ACTION, UPDATE_STOP_SCHEDULER_ACTION,
};
pub use model::{
    DescribeResponse, GraphicsMemory, INSTALL_FAILED, Instance, IpInfo, MOVING_STATES, Password,
    Phase, RUNNING, Reach, STOPPED, Software, UnreadableElement,
};
pub use ssh::{SshLogin, parse_login_command};
