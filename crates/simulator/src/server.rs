//! Serving: one hyper connection per accepted socket, so that a handler can have its connection
//! closed without an answer (the `drop` fault), and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;

use super::counters::Counters;
use super::fixture::Fixture;
use super::{Shared, router};

/// How long a shutdown waits for calls in flight (a `latency` fault may hold one) before cutting
/// their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Lets a handler close its connection without answering. Every request carries one in its
/// extensions.
#[derive(Clone, Debug, Default)]
pub(super) struct ConnectionControl(Arc<Notify>);

impl ConnectionControl {
    /// Asks the connection's task to close the socket; the caller's future is dropped with it.
    pub(crate) fn drop_connection(&self) {
        self.0.notify_one();
    }

    async fn dropped(&self) {
        self.0.notified().await;
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Serves `fixture` on `listener`, on the current tokio runtime, until the handle is shut down
    /// or dropped.
    pub fn start(listener: TcpListener, fixture: Fixture) -> SimulatorHandle {
        let addr = listener
            .local_addr()
            .expect("a bound TCP listener has a local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = Arc::new(Shared::new(fixture));
        let task = tokio::spawn(run(listener, shared.clone(), async {
            // A dropped handle stops the simulator too.
            let _ = stopped.await;
        }));
        SimulatorHandle {
            addr,
            stop,
            task,
            shared,
        }
    }
}

/// A running simulator. Dropping it stops the simulator without waiting.
#[must_use = "dropping the handle stops the simulator"]
pub struct SimulatorHandle {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a client, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call answered since the start, whatever the counters' resets: what a test checks
    /// at its end (no state-changing call from resources that only observe, say).
    pub fn lifetime_counters(&self) -> Counters {
        super::lock(&self.shared.lifetime_counters).clone()
    }

    /// Stops accepting connections, lets calls in flight finish (for a few seconds at most) and
    /// returns when everything is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the simulator task failed");
        }
    }
}

/// Serves `fixture` on `addr` until `shutdown` completes: the `compshare-simulator` binary.
pub async fn serve(
    addr: SocketAddr,
    fixture: Fixture,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "CompShare simulator listening");
    run(listener, Arc::new(Shared::new(fixture)), shutdown).await;
    Ok(())
}

async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let app = router(shared);
    let (stopping, stop_requested) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, app.clone(), stop_requested.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "closing connections still busy after the drain timeout"
        );
    }
    // Dropping the set aborts whatever is left.
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    mut stop_requested: watch::Receiver<bool>,
) {
    // Answers are written in one go; Nagle's algorithm would only delay keep-alive calls.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let control = ConnectionControl::default();
    let service = app.map_request({
        let control = control.clone();
        move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(control.clone());
            request
        }
    });
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            // Returning drops the connection: the socket closes with no answer.
            () = control.dropped() => return,
            // An error means the server loop is gone, which is a stop request too.
            _ = stop_requested.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
