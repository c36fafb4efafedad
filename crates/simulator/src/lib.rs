//! A strict stand-in for the CompShare API gateway, for tests, benchmarks and pipelines.
//!
//! Strict means: a client that works against the simulator should work against the real gateway.
//! It serves the API the way the gateway does, checks what the gateway checks (for the actions
//! that change machines, too: preconditions, the operation lock, quotas, capacity), and can
//! misbehave the ways a real network and gateway do.
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
//! - `DescribeCompShareSupportZone`: `ZoneInfo: [{Region, Zone, RegionId, ZoneId, Describe}]`,
//!   every zone the simulator knows (`Region` required, as the page says, but not a filter: the
//!   page's example lists two regions). The ids are the simulator's own numbers.
//!
//! Instances are served in the full shape of the vendor's page, defaults filled in for whatever
//! the fixture leaves out (see [`Fixture`]).
//!
//! # Changing machines
//!
//! The actions of `compshare_api::MUTATING_ACTIONS`, each on the caller's own instances in the
//! asked region, zone and project (the default project without `ProjectId`; an unknown one →
//! 292). Checks run in this order: parameters (210 missing, 230 invalid), project, the instance,
//! its lock, its state, then the account and the zone's capacity.
//!
//! - `CreateCompShareInstance`: `Region`, `Zone` (one of the region's zones, see below),
//!   `GpuType` (the page's twelve types), `GPU` (1 to 8, or 10 for a 4090), `CPU` and `Memory`
//!   (MB, a multiple of 1024) within the type's maxima, `CompShareImageId`, `Disks.N.{IsBoot,
//!   Type, Size}` with exactly one boot disk (`CLOUD_RSSD` on A800 only), `MachineType` (`G`
//!   only), `ChargeType` (`Month` by default, `Day`, `Dynamic`, `Postpay`, `Spot`; no `Spot` for
//!   4090_48G, A800, H20, P40, 2080), `Quantity` (≥ 1), `Name` (≤ 63 characters of letters,
//!   digits and `_.,:-`; `host` by default), `Remark`, `Password` (Base64, stored as sent),
//!   `MinimalCpuPlatform` (`Auto`, `Intel/…`, `Amd/…`; no AMD for the Intel-only types),
//!   `MaxCount` (≤ 100, the simulator's bound), `SecurityGroupId`, `EnableUS3`. Answers
//!   `UHostIds`; each machine appears at once, `Initializing`, owned by the caller, with a public
//!   `Bgp` address (117.50.200.0–249.255), a private one (10.60.x.y), `SshLoginCommand ssh
//!   root@<public> -p 22` and its disks, and is `Running` after `createMs`.
//! - `StartCompShareInstance` (from `Stopped`; `WithoutGpu` accepted) → `Starting` → `Running`;
//!   `StopCompShareInstance` (from `Running`) → `Stopping` → `Stopped`;
//!   `RebootCompShareInstance` (from `Running`) → `Rebooting` → `Running`. Each answers
//!   `UHostId`.
//! - `TerminateCompShareInstance` (from `Stopped`; `ReleaseUDisk` accepted): the instance is
//!   gone; answers `UHostId` and `InRecycle: "Yes"`.
//! - `UpdateCompShareStopScheduler` (`ProjectId` required, as the pages say; the time as
//!   `SchedulerStopTime` or, as the official SDKs send it, `StopTime`; at least 300 s ahead, not
//!   for Spot (`ChargeType: Spot` or `IsSpot`): 230): sets `SchedulerStopTime` and
//!   `StopSchedulerTime`; when the time comes, a `Running` instance stops as by
//!   `StopCompShareInstance` (one in a transition stops when it ends; one not running drops it).
//!   `DeleteCompShareStopScheduler` (`Zone` optional, `ProjectId` required) clears it.
//!
//! Refusals, where the documentation gives no code the simulator's guesses: an unknown instance,
//! or another account's, project's, region's or zone's → 8039 `UHost [id] not found`; the
//! instance locked → 8040 `InstanceOperationInProgress: …`; the wrong state → 8041 `UHost [id]
//! is Stopped: StopCompShareInstance needs it Running`. From the documentation: in arrears →
//! 226601 (creates and starts); at the instance quota → 226607 (the simulator's code for a limit
//! the documentation states without one); no capacity → 226604 `Insufficient resources: …`.
//!
//! **The operation lock.** Every changing action is refused while the instance's lock holds. An
//! action with a transition (create, start, stop, reboot, a scheduled stop) takes it, with the
//! documented 10-minute TTL, and releases it when the transition ends; the scheduler actions
//! take none. The admin interface can set one for any TTL.
//!
//! **Accounts, zones, capacity.** A fixture account may have `instanceQuota` (default 100: all
//! its instances, every region and project, count) and `inArrears`. The zones are the fixture's
//! `zones`, or else `<region>-01` and `-02` for each region of its instances and for cn-wlcb.
//! `capacity: [{zone, gpuType, gpus}]` limits the GPUs of a type in a zone: every instance
//! there holds its `GPU`s unless `Stopped`, so creates and starts (not `WithoutGpu`) can find
//! none left; without an entry, capacity is unlimited.
//!
//! **Time.** Transitions take the fixture's `transitions: {createMs, startMs, stopMs, rebootMs}`
//! (default 3000, 2000, 2000, 2000; [`Transitions`]). Nothing runs in the background: whoever
//! reads or writes the inventory first brings every instance to where it is by then, dated when
//! each step happened, on `tokio::time` (so a test with paused time drives it). Fixture states
//! are static: only the actions start transitions.
//!
//! An action is carried out synchronously once the call is verified: a client that goes away
//! afterwards cannot undo it (the `after-action` fault stage relies on that).
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
//!   Setting `State` ends a transition under way (and releases its lock); setting
//!   `SchedulerStopTime` or `StopSchedulerTime` schedules a stop at that Unix second, however
//!   soon (0 clears it).
//! - `DELETE /_simulator/instances/{id}` → 204, 404 when absent.
//! - `GET|POST|DELETE /_simulator/instances/{id}/lock`: `{"locked", "remainingMs"}`; lock it for
//!   `{"ttlMs": N}` (default 600000); release it → 204.
//! - `POST /_simulator/faults` inject one → 201; `GET /_simulator/faults` the active ones;
//!   `DELETE /_simulator/faults` clear all → 204.
//! - `GET /_simulator/counters`, `POST /_simulator/counters/reset` → 204.
//! - `GET|PUT /_simulator/transitions`: `{createMs, startMs, stopMs, rebootMs}` (a field left out
//!   of a `PUT` takes its default; transitions under way keep their end).
//! - `GET|PUT /_simulator/capacity`: the whole `[{zone, gpuType, gpus}]` table.
//! - `GET|PATCH /_simulator/accounts/{publicKey}`: `{"instanceQuota", "inArrears"}` (and
//!   `instances`, the count).
//!
//! Malformed admin requests get 400, invalid ones 422, each with `{"error": "..."}`.
//!
//! # Faults
//!
//! A fault: `{"kind": K, "count": N?, "durationMs": N?, "action": A?, "publicKey": P?,
//! "latencyMs": N?, "stage": S?, ...}` with K one of `latency` (needs `latencyMs`), `http`
//! (`status`, 400–599), `retcode` (`retCode`, `message`?), `throttle` (RetCode 153), `malformed`
//! (HTTP 200, a body that is not JSON), `drop` (the connection closes with no answer), `omit`
//! (`ids`: left out of `UHostSet`, and of `TotalCount`, even when asked for by id) and
//! `retcode-as-string` (a successful answer with `"RetCode": "0"` and the numbers older answers
//! quote as strings). See the `faults` module for how several combine. Faults match every action,
//! the changing ones too.
//!
//! `latency`, `http`, `drop`, `malformed` and `throttle` act after the request is parsed and
//! *before* its signature is checked. Timeouts, 5xx pages, resets and truncated bodies come from
//! the load balancers and proxies in front of the gateway, which know nothing of signatures; a
//! rate limiter is there to shed load, so it answers before spending work on verification. A
//! client must therefore cope with them on any request, even a badly signed one. `retcode`, `omit`
//! and `retcode-as-string` are the service behind the gateway answering, so they hit verified
//! calls only: a badly signed request still gets 171. Either way the action is not carried out.
//!
//! `"stage": "after-action"` (for `latency` and `drop`) acts once the action has been carried
//! out: the answer comes `latencyMs` late, or the connection closes, and what the call changed
//! stays changed: a crash test's lost answer to a create that happened.
//!
//! # Counters
//!
//! `{"total", "byAction": {A: {"total", "byResult": {R: n}}}, "byPublicKey": {...},
//! "idsRequested", "listings"}` with results `"<RetCode>"`, `"http_<status>"`, `"dropped"` and
//! `"malformed"`; [`Counters::mutating_calls`] sums the changing actions, and
//! [`Counters::listings`] counts the `DescribeCompShareInstance` calls that named no ids (the
//! pages of a listing), apart from those asking for machines by id. A call is counted before an
//! after-action delay, so a caller that gives up has still been counted.
//!
//! [`signing::flatten`]: compshare_api::signing::flatten
//! [`signing::signature`]: compshare_api::signing::signature

mod accounts;
mod actions;
mod admin;
mod clock;
mod counters;
mod create;
mod envelope;
mod faults;
mod fixture;
mod gateway;
mod inventory;
mod lifecycle;
mod params;
mod server;
mod shape;
mod zones;

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
pub use lifecycle::Transitions;
pub use server::{Simulator, SimulatorHandle, serve};
pub use zones::Capacity;

/// Where the admin interface lives.
pub const ADMIN_PREFIX: &str = "/_simulator";

/// State shared by every connection. Each part has its own lock, held only for in-memory work
/// (never two at once, except `settings` copied out before `inventory` is taken).
struct Shared {
    accounts: accounts::Accounts,
    inventory: RwLock<inventory::Inventory>,
    zones: zones::Zones,
    settings: Mutex<Settings>,
    faults: Mutex<faults::FaultBook>,
    counters: Mutex<Counters>,
    /// The same, never reset: what a test checks at its end, whatever it reset meanwhile.
    lifetime_counters: Mutex<Counters>,
    clock: clock::Clock,
}

/// What the admin interface may change while serving, beside instances and faults.
#[derive(Clone, Debug)]
struct Settings {
    transitions: Transitions,
    capacity: Vec<Capacity>,
}

impl Shared {
    fn new(fixture: Fixture) -> Shared {
        Shared {
            accounts: fixture.accounts,
            inventory: RwLock::new(fixture.inventory),
            zones: fixture.zones,
            settings: Mutex::new(Settings {
                transitions: fixture.transitions,
                capacity: fixture.capacity,
            }),
            faults: Mutex::default(),
            counters: Mutex::default(),
            lifetime_counters: Mutex::default(),
            clock: clock::Clock::start(),
        }
    }

    fn transitions(&self) -> Transitions {
        lock(&self.settings).transitions
    }

    /// Brings the inventory to now (see the `lifecycle` module); the write lock is taken only when
    /// something has come due.
    fn settle(&self) {
        let now = tokio::time::Instant::now();
        if read(&self.inventory).is_due(now) {
            let transitions = self.transitions();
            write(&self.inventory).settle(now, &self.clock, &transitions);
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
