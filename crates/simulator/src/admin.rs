//! The admin interface under `/_simulator/`: instances (and their operation locks), faults,
//! counters, transition times, capacity and account limits, JSON in and out; its routes and
//! [`AdminClient`], the typed client tests and benchmarks drive it with, side by side so that the
//! protocol lives in one place.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::accounts::Account;
use super::counters::Counters;
use super::faults::{FaultSpec, FaultView};
use super::inventory::{InstanceError, Inventory, StoredInstance};
use super::lifecycle::{self, LOCK_TTL, Transitions};
use super::shape::{self, UHOST_ID, UPDATE_TIME};
use super::zones::Capacity;
use super::{Shared, lock, read, write};

pub(super) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/instances", get(list_instances).post(add_instance))
        .route(
            "/instances/{id}",
            get(get_instance)
                .patch(patch_instance)
                .delete(delete_instance),
        )
        .route(
            "/instances/{id}/lock",
            get(get_lock).post(set_lock).delete(clear_lock),
        )
        .route(
            "/faults",
            get(list_faults).post(inject_fault).delete(clear_faults),
        )
        .route("/counters", get(counters))
        .route("/counters/reset", post(reset_counters))
        .route("/transitions", get(get_transitions).put(put_transitions))
        .route("/capacity", get(get_capacity).put(put_capacity))
        .route(
            "/accounts/{public_key}",
            get(get_account).patch(patch_account),
        )
}

/// An admin request that cannot be carried out, answered as `{"error": "..."}`.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<InstanceError> for AdminError {
    fn from(error: InstanceError) -> Self {
        let status = match error {
            InstanceError::Duplicate(_) => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        AdminError(status, error.to_string())
    }
}

fn not_found(id: &str) -> AdminError {
    AdminError(StatusCode::NOT_FOUND, format!("no instance {id}"))
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError(StatusCode::UNPROCESSABLE_ENTITY, message.into())
}

/// The inventory, write-locked and brought to `now`.
fn settled(shared: &Shared, now: Instant) -> std::sync::RwLockWriteGuard<'_, Inventory> {
    let transitions = shared.transitions();
    let mut inventory = write(&shared.inventory);
    inventory.settle(now, &shared.clock, &transitions);
    inventory
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| AdminError(StatusCode::BAD_REQUEST, e.to_string()))
}

fn into_object(value: Value) -> Result<Map<String, Value>, InstanceError> {
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(InstanceError::NotAnObject),
    }
}

async fn list_instances(State(shared): State<Arc<Shared>>) -> Json<Vec<Map<String, Value>>> {
    shared.settle();
    Json(
        read(&shared.inventory)
            .iter()
            .map(|i| i.admin_view())
            .collect(),
    )
}

async fn get_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Map<String, Value>>, AdminError> {
    shared.settle();
    let inventory = read(&shared.inventory);
    let instance = inventory.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(instance.admin_view()))
}

/// Adds an instance written like a fixture's: missing fields get their defaults.
async fn add_instance(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Map<String, Value>>), AdminError> {
    let mut fields = into_object(parse_json(&body)?)?;
    shape::fill_defaults(&mut fields, shape::unix_now());
    let instance = StoredInstance::place(fields, &shared.accounts)?;
    let view = instance.admin_view();
    write(&shared.inventory).add(instance)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Applies a JSON merge patch (RFC 7386) to the instance as the admin interface shows it: `null`
/// removes a field, so it is then missing from answers too. `UpdateTime` moves to now unless the
/// patch sets it, as the real `UpdateTime` moves with every change.
///
/// A transition under way is kept unless the patch sets `State` (the admin decides the state
/// then); the lock and the scheduled stop are kept, except that a patch naming
/// `SchedulerStopTime` or `StopSchedulerTime` schedules a stop at that Unix second (0 clears it),
/// without the API's five minutes' lead.
async fn patch_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Map<String, Value>>, AdminError> {
    let patch: Value = parse_json(&body)?;
    let mut inventory = settled(&shared, Instant::now());
    let current = inventory.get(&id).ok_or_else(|| not_found(&id))?;
    let mut patched = Value::Object(current.admin_view());
    merge_patch(&mut patched, &patch);
    let mut fields = into_object(patched)?;
    if patch.get(UPDATE_TIME).is_none() {
        fields.insert(UPDATE_TIME.to_owned(), json!(shape::unix_now()));
    }
    if let Some(new_id) = fields.get(UHOST_ID).and_then(Value::as_str)
        && new_id != id
    {
        return Err(InstanceError::IdChanged {
            from: id,
            to: new_id.to_owned(),
        }
        .into());
    }
    let mut instance = StoredInstance::place(fields, &shared.accounts)?;
    instance.sim = current.sim.clone();
    if patch.get("State").is_some() {
        instance.sim.drop_transition();
    }
    match lifecycle::scheduled_stop_in_patch(&patch) {
        Some(at) if at > 0 => {
            lifecycle::schedule_stop(&mut instance.fields, &mut instance.sim, at, &shared.clock)
        }
        Some(_) => lifecycle::clear_scheduled_stop(&mut instance.fields, &mut instance.sim),
        None => {}
    }
    let view = instance.admin_view();
    // The instance was there a moment ago and the write lock has been held since.
    if !inventory.replace(instance) {
        return Err(not_found(&id));
    }
    Ok(Json(view))
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above")
    };
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            merge_patch(target.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

async fn delete_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if write(&shared.inventory).remove(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

/// `{"locked": bool, "remainingMs": n}` (no `remainingMs` when unlocked).
fn lock_view(remaining: Option<Duration>) -> Json<Value> {
    Json(match remaining {
        Some(left) => json!({"locked": true, "remainingMs": left.as_millis() as u64}),
        None => json!({"locked": false}),
    })
}

async fn get_lock(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let now = Instant::now();
    let inventory = settled(&shared, now);
    let instance = inventory.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(lock_view(instance.sim.lock_remaining(now)))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LockRequest {
    ttl_ms: Option<u64>,
}

/// Locks an instance as an operation in progress would, for `ttlMs` (default the documented 10
/// minutes): until then every action on it is refused with `InstanceOperationInProgress`.
async fn set_lock(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let request: LockRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LockRequest::default()
    } else {
        parse_json(&body)?
    };
    let ttl = request.ttl_ms.map_or(LOCK_TTL, Duration::from_millis);
    if ttl.is_zero() {
        return Err(invalid("ttlMs must be at least 1 (DELETE releases a lock)"));
    }
    let now = Instant::now();
    settled(&shared, now)
        .update(&id, |instance| instance.sim.lock_for(now, ttl))
        .ok_or_else(|| not_found(&id))?;
    Ok(lock_view(Some(ttl)))
}

/// Releases the lock, whoever holds it; a transition under way still ends on time.
async fn clear_lock(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    settled(&shared, Instant::now())
        .update(&id, |instance| instance.sim.lock = None)
        .ok_or_else(|| not_found(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_transitions(State(shared): State<Arc<Shared>>) -> Json<Transitions> {
    Json(shared.transitions())
}

/// Sets every transition's time (a field left out takes its default). Transitions under way keep
/// the end they had.
async fn put_transitions(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Transitions>, AdminError> {
    let transitions: Transitions = parse_json(&body)?;
    lock(&shared.settings).transitions = transitions;
    Ok(Json(transitions))
}

async fn get_capacity(State(shared): State<Arc<Shared>>) -> Json<Vec<Capacity>> {
    Json(lock(&shared.settings).capacity.clone())
}

/// Replaces the whole capacity table (`[]`: unlimited everywhere).
async fn put_capacity(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Vec<Capacity>>, AdminError> {
    let capacity: Vec<Capacity> = parse_json(&body)?;
    lock(&shared.settings).capacity = capacity.clone();
    Ok(Json(capacity))
}

fn account_view(shared: &Shared, account: &Account) -> Json<Value> {
    Json(json!({
        "publicKey": account.public_key,
        "instanceQuota": account.instance_quota(),
        "inArrears": account.in_arrears(),
        "instances": read(&shared.inventory).owned_by(&account.public_key),
    }))
}

fn account<'a>(shared: &'a Shared, public_key: &str) -> Result<&'a Account, AdminError> {
    shared.accounts.get(public_key).ok_or_else(|| {
        AdminError(
            StatusCode::NOT_FOUND,
            format!("no account with public key {public_key}"),
        )
    })
}

async fn get_account(
    State(shared): State<Arc<Shared>>,
    Path(public_key): Path<String>,
) -> Result<Json<Value>, AdminError> {
    Ok(account_view(&shared, account(&shared, &public_key)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AccountPatch {
    instance_quota: Option<u32>,
    in_arrears: Option<bool>,
}

/// Changes an account's limits: `{"instanceQuota": n, "inArrears": bool}`, either or both.
async fn patch_account(
    State(shared): State<Arc<Shared>>,
    Path(public_key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let patch: AccountPatch = parse_json(&body)?;
    let account = account(&shared, &public_key)?;
    if let Some(quota) = patch.instance_quota {
        account.set_instance_quota(quota);
    }
    if let Some(in_arrears) = patch.in_arrears {
        account.set_in_arrears(in_arrears);
    }
    Ok(account_view(&shared, account))
}

async fn inject_fault(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<(StatusCode, Json<FaultView>), AdminError> {
    let spec: FaultSpec = parse_json(&body)?;
    let view = lock(&shared.faults)
        .inject(spec, Instant::now())
        .map_err(|e| AdminError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Vec<FaultView>> {
    Json(lock(&shared.faults).list(Instant::now()))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.faults).clear();
    StatusCode::NO_CONTENT
}

async fn counters(State(shared): State<Arc<Shared>>) -> Response {
    Json(&*lock(&shared.counters)).into_response()
}

async fn reset_counters(State(shared): State<Arc<Shared>>) -> StatusCode {
    *lock(&shared.counters) = Default::default();
    StatusCode::NO_CONTENT
}

/// A client of a simulator's admin interface.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    /// `<endpoint>/_simulator`.
    base: String,
}

/// An admin request the simulator refused, or could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("the simulator answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("cannot reach the simulator: {0}")]
    Unreachable(#[from] reqwest::Error),
}

impl AdminClient {
    /// A client of the simulator serving at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> Self {
        // reqwest needs a process-wide rustls provider; installing it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        AdminClient {
            http: reqwest::Client::new(),
            base: format!("{}{}", endpoint.trim_end_matches('/'), super::ADMIN_PREFIX),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<T>, AdminClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(AdminClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(if bytes.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&bytes).map_err(|e| AdminClientError::Refused {
                    status: status.as_u16(),
                    message: format!("an answer that is not the expected JSON: {e}"),
                })?,
            )
        })
    }

    /// Every instance, as a fixture writes it.
    pub async fn instances(&self) -> Result<Vec<Map<String, Value>>, AdminClientError> {
        Ok(self
            .send(reqwest::Method::GET, "/instances", None)
            .await?
            .unwrap_or_default())
    }

    /// One instance, if it exists.
    pub async fn instance(&self, id: &str) -> Result<Option<Map<String, Value>>, AdminClientError> {
        match self
            .send(reqwest::Method::GET, &format!("/instances/{id}"), None)
            .await
        {
            Err(AdminClientError::Refused { status: 404, .. }) => Ok(None),
            other => other,
        }
    }

    /// Adds an instance written like a fixture's; missing fields get their defaults. Returns it
    /// as stored.
    pub async fn add_instance(
        &self,
        fields: Value,
    ) -> Result<Map<String, Value>, AdminClientError> {
        Ok(self
            .send(reqwest::Method::POST, "/instances", Some(fields))
            .await?
            .unwrap_or_default())
    }

    /// Changes an instance by a JSON merge patch, e.g. `{"State": "Stopped"}`. Returns it as
    /// stored.
    pub async fn patch_instance(
        &self,
        id: &str,
        patch: Value,
    ) -> Result<Map<String, Value>, AdminClientError> {
        Ok(self
            .send(
                reqwest::Method::PATCH,
                &format!("/instances/{id}"),
                Some(patch),
            )
            .await?
            .unwrap_or_default())
    }

    pub async fn remove_instance(&self, id: &str) -> Result<(), AdminClientError> {
        self.send::<Value>(reqwest::Method::DELETE, &format!("/instances/{id}"), None)
            .await
            .map(drop)
    }

    /// Injects a fault (`{"kind": …}`, as the module documentation of the crate lists them).
    pub async fn inject(&self, fault: Value) -> Result<(), AdminClientError> {
        self.send::<Value>(reqwest::Method::POST, "/faults", Some(fault))
            .await
            .map(drop)
    }

    /// The active faults, each with how much of it is left.
    pub async fn faults(&self) -> Result<Vec<Value>, AdminClientError> {
        Ok(self
            .send(reqwest::Method::GET, "/faults", None)
            .await?
            .unwrap_or_default())
    }

    pub async fn clear_faults(&self) -> Result<(), AdminClientError> {
        self.send::<Value>(reqwest::Method::DELETE, "/faults", None)
            .await
            .map(drop)
    }

    pub async fn counters(&self) -> Result<Counters, AdminClientError> {
        Ok(self
            .send(reqwest::Method::GET, "/counters", None)
            .await?
            .unwrap_or_default())
    }

    pub async fn reset_counters(&self) -> Result<(), AdminClientError> {
        self.send::<Value>(reqwest::Method::POST, "/counters/reset", None)
            .await
            .map(drop)
    }

    /// Locks an instance for `ttl`, as an operation in progress would: every action on it is
    /// refused with `InstanceOperationInProgress` until the lock expires or is released.
    pub async fn lock_instance(&self, id: &str, ttl: Duration) -> Result<(), AdminClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.send::<Value>(
            reqwest::Method::POST,
            &format!("/instances/{id}/lock"),
            Some(json!({"ttlMs": ttl_ms})),
        )
        .await
        .map(drop)
    }

    /// Releases an instance's lock, whoever took it.
    pub async fn unlock_instance(&self, id: &str) -> Result<(), AdminClientError> {
        self.send::<Value>(
            reqwest::Method::DELETE,
            &format!("/instances/{id}/lock"),
            None,
        )
        .await
        .map(drop)
    }

    /// How long the instance's lock still holds; `None` when it is not locked.
    pub async fn instance_lock(&self, id: &str) -> Result<Option<Duration>, AdminClientError> {
        let view: Option<Value> = self
            .send(reqwest::Method::GET, &format!("/instances/{id}/lock"), None)
            .await?;
        Ok(view
            .and_then(|v| v["remainingMs"].as_u64())
            .map(Duration::from_millis))
    }

    /// How long each transition takes.
    pub async fn transitions(&self) -> Result<Transitions, AdminClientError> {
        Ok(self
            .send(reqwest::Method::GET, "/transitions", None)
            .await?
            .unwrap_or_default())
    }

    /// Sets how long each transition takes (those under way keep their end).
    pub async fn set_transitions(&self, transitions: Transitions) -> Result<(), AdminClientError> {
        self.send::<Value>(
            reqwest::Method::PUT,
            "/transitions",
            Some(json!(transitions)),
        )
        .await
        .map(drop)
    }

    /// The capacity table: GPUs per zone and type (absent: unlimited).
    pub async fn capacity(&self) -> Result<Vec<Capacity>, AdminClientError> {
        Ok(self
            .send(reqwest::Method::GET, "/capacity", None)
            .await?
            .unwrap_or_default())
    }

    /// Replaces the capacity table.
    pub async fn set_capacity(&self, capacity: &[Capacity]) -> Result<(), AdminClientError> {
        self.send::<Value>(reqwest::Method::PUT, "/capacity", Some(json!(capacity)))
            .await
            .map(drop)
    }

    /// An account's limits: `{"publicKey", "instanceQuota", "inArrears", "instances"}`.
    pub async fn account(&self, public_key: &str) -> Result<Value, AdminClientError> {
        Ok(self
            .send(
                reqwest::Method::GET,
                &format!("/accounts/{public_key}"),
                None,
            )
            .await?
            .unwrap_or_default())
    }

    /// Changes an account's limits, e.g. `{"inArrears": true}` or `{"instanceQuota": 1}`.
    /// Returns them as they now are.
    pub async fn patch_account(
        &self,
        public_key: &str,
        patch: Value,
    ) -> Result<Value, AdminClientError> {
        Ok(self
            .send(
                reqwest::Method::PATCH,
                &format!("/accounts/{public_key}"),
                Some(patch),
            )
            .await?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "list": [3], "new": {"x": null, "y": 2}}),
        );
        assert_eq!(
            target,
            json!({"a": "z", "c": {"d": "e", "h": 1}, "list": [3], "new": {"y": 2}})
        );
        let mut target = json!({"a": 1});
        merge_patch(&mut target, &json!(["not", "an", "object"]));
        assert_eq!(target, json!(["not", "an", "object"]));
    }
}
