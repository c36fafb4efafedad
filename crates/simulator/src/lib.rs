//! A strict stand-in for the CompShare API gateway, for tests, benchmarks and pipelines.
//!
//! Strict means: a client that works against the simulator should work against the real gateway.
//! It serves the API the way the gateway does, checks what the gateway checks, and can misbehave
//! the ways a real network and gateway do.
//!
//! # The API, at `/`
//!
//! - `POST /` with a form body (what both official SDKs send; the Go SDK also puts `?Action=X` in
//!   the query string), `POST /` with a JSON body (flattened as [`signing::flatten`] does), or
//!   `GET /?...`. Query and body parameters are merged; the body wins on a name in both.
//! - Every answer is HTTP 200 with `{"Action": "<Action>Response", "RetCode": n, ...}` (a
//!   `Message` when `RetCode` is not 0) and an `X-UCLOUD-REQUEST-UUID` header; every other path
//!   is a 404 and other methods a 405, as from any web gateway.
//! - Checks, in the gateway's order: `Action` missing → 160; `Signature` missing → 170;
//!   `PublicKey` missing or unknown → 172; signature wrong → 171 `Signature VerifyAC Error`
//!   (recomputed with [`signing::signature`]); action unknown → 161.
//! - `DescribeCompShareInstance`: `Region` required (210); `Limit` 0–100, default 20, and the
//!   default applies when asking by id as well; at most 100 `UHostIds.N`; `Offset` not beyond the
//!   total; non-integers → 230. Only the caller's instances in the asked region and project (the
//!   default project when `ProjectId` is left out; an unknown project → 292) are visible, filtered
//!   by `Zone`, `UHostIds`, `Tag`, `VPCId` and `SubnetId` (these two match `IPSet` entries),
//!   listed in a stable order. `UDiskIdForAttachment` is accepted and not simulated.
//! - `GetProjectList`: the caller's projects.
//!
//! Instances are served in the full shape of the vendor's page, defaults filled in for whatever
//! the fixture leaves out (see [`Fixture`]).
//!
//! # The admin interface, under `/_simulator/`
//!
//! The gateway serves its API at `/` only, so this prefix cannot collide with it. It has no
//! authentication: never expose a simulator beyond the machine or pod that tests with it.
//!
//! - `GET /_simulator/instances`, `GET /_simulator/instances/{id}`: instances as a fixture writes
//!   them (served fields plus `Owner` and `ProjectId`).
//! - `POST /_simulator/instances`: add one (fixture shape) → 201, 409 when the id exists.
//! - `PATCH /_simulator/instances/{id}`: JSON merge patch → 200 with the result, 404 when absent.
//! - `DELETE /_simulator/instances/{id}` → 204, 404 when absent.
//! - `POST /_simulator/faults` inject one → 201; `GET /_simulator/faults` the active ones;
//!   `DELETE /_simulator/faults` clear all → 204.
//! - `GET /_simulator/counters`, `POST /_simulator/counters/reset` → 204.
//!
//! Malformed admin requests get 400, invalid ones 422, each with `{"error": "..."}`.
//!
//! # Faults
//!
//! A fault: `{"kind": K, "count": N?, "durationMs": N?, "action": A?, "publicKey": P?,
//! "latencyMs": N?, ...}` with K one of `latency` (needs `latencyMs`), `http` (`status`, 400–599),
//! `retcode` (`retCode`, `message`?), `throttle` (RetCode 153), `malformed` (HTTP 200, a body that
//! is not JSON), `drop` (the connection closes with no answer), `omit` (`ids`: left out of
//! `UHostSet`, and of `TotalCount`, even when asked for by id) and `retcode-as-string` (a
//! successful answer with `"RetCode": "0"` and the numbers older answers quote as strings). See
//! the `faults` module for how several combine.
//!
//! `latency`, `http`, `drop`, `malformed` and `throttle` act after the request is parsed and
//! *before* its signature is checked. Timeouts, 5xx pages, resets and truncated bodies come from
//! the load balancers and proxies in front of the gateway, which know nothing of signatures; a
//! rate limiter is there to shed load, so it answers before spending work on verification. A
//! client must therefore cope with them on any request, even a badly signed one. `retcode`, `omit`
//! and `retcode-as-string` are the service behind the gateway answering, so they hit verified
//! calls only: a badly signed request still gets 171.
//!
//! # Counters
//!
//! `{"total", "byAction": {A: {"total", "byResult": {R: n}}}, "byPublicKey": {...},
//! "idsRequested"}` with results `"<RetCode>"`, `"http_<status>"`, `"dropped"` and `"malformed"`.
//!
//! [`signing::flatten`]: compshare_api::signing::flatten
//! [`signing::signature`]: compshare_api::signing::signature

mod accounts;
mod actions;
mod admin;
mod counters;
mod envelope;
mod faults;
mod fixture;
mod gateway;
mod inventory;
mod params;
mod server;
mod shape;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;

use compshare_api::REQUEST_ID_HEADER;

pub use admin::{AdminClient, AdminClientError};
pub use counters::{Counters, Tally};
pub use fixture::{AccountProblem, Fixture, FixtureBuilder, FixtureError};
pub use inventory::InstanceError;
pub use server::{Simulator, SimulatorHandle, serve};

/// Where the admin interface lives.
pub const ADMIN_PREFIX: &str = "/_simulator";

/// State shared by every connection. Each part has its own lock, held only for in-memory work.
struct Shared {
    accounts: accounts::Accounts,
    inventory: RwLock<inventory::Inventory>,
    faults: Mutex<faults::FaultBook>,
    counters: Mutex<Counters>,
}

impl Shared {
    fn new(fixture: Fixture) -> Shared {
        Shared {
            accounts: fixture.accounts,
            inventory: RwLock::new(fixture.inventory),
            faults: Mutex::default(),
            counters: Mutex::default(),
        }
    }
}

// A panic while holding a lock leaves consistent data here (no multi-step updates), so a
// poisoned lock is used as it is rather than taking the whole simulator down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The id of one request, sent back in `X-UCLOUD-REQUEST-UUID` and logged.
#[derive(Clone, Debug)]
struct RequestId(String);

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(gateway::handle).post(gateway::handle))
        .nest(ADMIN_PREFIX, admin::router())
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .layer(middleware::from_fn(stamp_request_id))
        .with_state(shared)
}

async fn stamp_request_id(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(REQUEST_ID_HEADER.as_bytes()),
        HeaderValue::from_str(&id),
    ) {
        response.headers_mut().insert(name, value);
    }
    response
}
