//! A real Kubernetes control plane for the operator's integration tests and quick start:
//! etcd, kube-apiserver (RBAC enforced, service account tokens) and optionally
//! kube-controller-manager (garbage collection), on loopback ports, in a directory of its own.
//!
//! An integration-test binary shares one control plane among its tests, each working in its own
//! namespace:
//!
//! ```no_run
//! # async fn example() -> Result<(), compshare_testbed::Error> {
//! use compshare_testbed::ControlPlane;
//!
//! let control_plane = ControlPlane::shared();
//! let namespace = control_plane.create_namespace("reconcile").await?;
//! let client = control_plane.client().await;
//! # Ok(()) }
//! ```
//!
//! Children are tied to the test process: they die with it, even when it is killed. Logs are in
//! [`ControlPlane::dir`]; set `COMPSHARE_TESTBED_KEEP=1` to keep that directory after the stop.

mod control_plane;
mod kubeconfig;
mod node;
mod process;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

pub use control_plane::{ControlPlane, Options};
pub use kubeconfig::client_from_kubeconfig;
pub use node::missing_prerequisites as node_missing_prerequisites;
pub use process::Daemon;

/// A process of the control plane, or of its node ([`Options::node`]), in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Containerd,
    Kubelet,
    KubeProxy,
    Scheduler,
}

impl Component {
    fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Containerd => "containerd",
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
            Component::Scheduler => "kube-scheduler",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot get the control plane binaries: {0}")]
    Binaries(String),
    #[error("{} is not empty, and a control plane needs a directory of its own", .0.display())]
    DirectoryNotEmpty(PathBuf),
    /// A component exited or did not get ready in time.
    #[error("{component} {problem}\n--- last lines of the {component} log ---\n{log_tail}")]
    Component {
        component: Component,
        problem: String,
        log_tail: String,
    },
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate the service account signing key: {0}")]
    SigningKey(#[from] rcgen::Error),
    #[error("unusable kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the TokenRequest for ServiceAccount {0} returned no token")]
    NoToken(String),
    /// The node cannot run on this machine, or could not be set up.
    #[error("the test bed's node: {0}")]
    Node(String),
}

/// Names the action that failed, since a bare [`io::Error`] does not say which file it was about.
trait IoContext<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            action: action(),
            source,
        })
    }
}

/// The directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` and `kubectl`:
/// `$COMPSHARE_TESTBED_BIN` if set, else what `testbed/build.sh` builds (cached after the first
/// build, so this takes milliseconds).
pub fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("COMPSHARE_TESTBED_BIN") {
        return Ok(dir.into());
    }
    // Control planes starting in parallel must not run concurrent builds into the same cache.
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = &*built {
        return Ok(dir.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh");
    // The build's progress goes to stderr, where it is visible during a first, long build.
    let output = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| Error::Binaries(format!("cannot run {}: {error}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Binaries(format!(
            "{} failed ({}); its output is above",
            script.display(),
            output.status
        )));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    *built = Some(dir.clone());
    Ok(dir)
}
