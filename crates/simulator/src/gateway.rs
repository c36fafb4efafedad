//! The API at `/`: parameters in, faults, verification in the gateway's order, the action,
//! after-action faults, the envelope out; every call counted and logged.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value};
use tokio::time::Instant;

use compshare_api::signing::{self, PUBLIC_KEY, Params, SIGNATURE};

use super::accounts::{Account, Accounts};
use super::actions::{self, Action, ApiError, World};
use super::counters::MISSING;
use super::envelope;
use super::faults::{Answer, Call, Phase, Taken};
use super::params;
use super::server::ConnectionControl;
use super::{RequestId, Shared, lock, read, write};

const ACTION: &str = "Action";
/// The throttling code and the kind of message the gateway sends with it.
const THROTTLED: (i64, &str) = (153, "Request too frequent, please try again later");

/// What became of one call.
struct Outcome {
    /// The counters' label: `"<RetCode>"`, `"http_<status>"`, `"dropped"`, `"malformed"`,
    /// `"html"` or `"oversized"`.
    result: String,
    /// `None`: close the connection without answering.
    response: Option<Response>,
    ids_requested: usize,
    /// A `DescribeCompShareInstance` that named no ids: a listing, page by page.
    listing: bool,
    /// How long to hold the answer once the call is counted (an after-action `latency` fault).
    delay_after: Duration,
}

impl Outcome {
    fn success(response: Response) -> Outcome {
        Outcome {
            result: "0".to_owned(),
            response: Some(response),
            ids_requested: 0,
            listing: false,
            delay_after: Duration::ZERO,
        }
    }

    fn api(action: Option<&str>, error: ApiError) -> Outcome {
        Outcome {
            result: error.code.to_string(),
            response: Some(envelope::error(action, error.code, &error.message)),
            ids_requested: 0,
            listing: false,
            delay_after: Duration::ZERO,
        }
    }

    /// A 200 answer that is not the envelope, counted as `result`.
    fn broken(result: &str, response: Response) -> Outcome {
        Outcome {
            result: result.to_owned(),
            response: Some(response),
            ids_requested: 0,
            listing: false,
            delay_after: Duration::ZERO,
        }
    }

    fn http(status: u16, response: Response) -> Outcome {
        Outcome {
            result: format!("http_{status}"),
            response: Some(response),
            ids_requested: 0,
            listing: false,
            delay_after: Duration::ZERO,
        }
    }

    fn fault(action: Option<&str>, answer: Answer) -> Outcome {
        match answer {
            Answer::Http(status) => Outcome::http(status, envelope::http_error(status)),
            Answer::Throttle => Outcome::api(action, ApiError::new(THROTTLED.0, THROTTLED.1)),
            Answer::RetCode { code, message } => Outcome::api(action, ApiError::new(code, message)),
            Answer::Redirect { status, location } => {
                Outcome::http(status, envelope::redirect(status, &location))
            }
            Answer::Malformed => Outcome::broken("malformed", envelope::malformed(action)),
            Answer::Html => Outcome::broken("html", envelope::html_page()),
            Answer::Oversized(bytes) => {
                Outcome::broken("oversized", envelope::oversized(action, bytes))
            }
            Answer::Drop => Outcome {
                result: "dropped".to_owned(),
                response: None,
                ids_requested: 0,
                listing: false,
                delay_after: Duration::ZERO,
            },
        }
    }
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(request_id): Extension<RequestId>,
    Extension(connection): Extension<ConnectionControl>,
    request: Request<Body>,
) -> Response {
    let (params, outcome) = match params::read(request).await {
        Ok(params) => {
            let outcome = answer(&shared, &params).await;
            (params, outcome)
        }
        Err(error) => {
            let response = (StatusCode::BAD_REQUEST, error.to_string()).into_response();
            (Params::new(), Outcome::http(400, response))
        }
    };
    let call = call_of(&params);
    for counters in [&shared.counters, &shared.lifetime_counters] {
        lock(counters).record(
            call.action,
            call.public_key,
            &outcome.result,
            outcome.ids_requested,
            outcome.listing,
        );
    }
    tracing::debug!(
        request_id = %request_id.0,
        action = call.action.unwrap_or(MISSING),
        result = %outcome.result,
        "CompShare API call"
    );
    // Counted first: a caller that gives up during this delay has still made the call.
    if !outcome.delay_after.is_zero() {
        tokio::time::sleep(outcome.delay_after).await;
    }
    match outcome.response {
        Some(response) => response,
        None => {
            connection.drop_connection();
            // The connection task drops this future together with the connection.
            std::future::pending().await
        }
    }
}

fn call_of(params: &Params) -> Call<'_> {
    Call {
        action: non_empty(params, ACTION),
        public_key: non_empty(params, PUBLIC_KEY),
    }
}

fn non_empty<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

async fn answer(shared: &Shared, params: &Params) -> Outcome {
    let call = call_of(params);
    let taken = take_faults(shared, &call, Phase::BeforeVerification).await;
    if let Some(answer) = taken.answer {
        return Outcome::fault(call.action, answer);
    }
    let (account, action) = match verify(&shared.accounts, params, &call) {
        Ok(verified) => verified,
        Err(error) => return Outcome::api(call.action, error),
    };
    let taken = take_faults(shared, &call, Phase::AfterVerification).await;
    if let Some(answer) = taken.answer {
        return Outcome::fault(call.action, answer);
    }
    let outcome = act(shared, account, action, params, &taken);
    // The action is done (and, if it changed anything, for good): from here on only its answer
    // can be lost or delayed.
    let after = lock(&shared.faults).take(&call, Phase::AfterAction, Instant::now());
    match after.answer {
        Some(Answer::Drop) => Outcome {
            delay_after: after.delay,
            ..Outcome::fault(call.action, Answer::Drop)
        },
        _ => Outcome {
            delay_after: after.delay,
            ..outcome
        },
    }
}

/// Runs a verified call's action. Synchronous: no await between the action's checks and its
/// change, so a call that got this far cannot be cut off half done.
fn act(
    shared: &Shared,
    account: &Account,
    action: Action,
    params: &Params,
    taken: &Taken,
) -> Outcome {
    let name = action.name();
    let numbers_as_strings = taken.numbers_as_strings;
    let answer = |result: Result<Map<String, Value>, ApiError>| match result {
        Ok(fields) => Outcome::success(envelope::fields(name, &fields, numbers_as_strings)),
        Err(error) => Outcome::api(Some(name), error),
    };
    match action {
        Action::DescribeInstances => {
            shared.settle();
            let page = actions::describe(&read(&shared.inventory), account, params, &taken.hidden);
            let outcome = match page {
                Ok(page) => Outcome::success(envelope::instances(name, &page, numbers_as_strings)),
                Err(error) => Outcome::api(Some(name), error),
            };
            let ids_requested = actions::requested_ids(params).count();
            Outcome {
                ids_requested,
                listing: ids_requested == 0,
                ..outcome
            }
        }
        Action::GetProjectList => {
            Outcome::success(envelope::projects(name, account, numbers_as_strings))
        }
        Action::SupportZones => answer(actions::support_zones(&shared.zones, params)),
        Action::Create
        | Action::Start
        | Action::Stop
        | Action::Reboot
        | Action::Terminate
        | Action::UpdateStopScheduler
        | Action::DeleteStopScheduler => {
            let settings = lock(&shared.settings).clone();
            let now = Instant::now();
            let mut inventory = write(&shared.inventory);
            inventory.settle(now, &shared.clock, &settings.transitions);
            let mut world = World {
                inventory: &mut inventory,
                accounts: &shared.accounts,
                zones: &shared.zones,
                capacity: &settings.capacity,
                transitions: settings.transitions,
                clock: shared.clock,
                now,
            };
            answer(actions::change(&mut world, account, action, params))
        }
    }
}

/// Takes the faults of `phase` and waits out their delay.
async fn take_faults(shared: &Shared, call: &Call<'_>, phase: Phase) -> Taken {
    let taken = lock(&shared.faults).take(call, phase, Instant::now());
    if !taken.delay.is_zero() {
        tokio::time::sleep(taken.delay).await;
    }
    taken
}

/// The gateway's checks, in its order: action named, signature present, key known, signature
/// right, action known.
fn verify<'a>(
    accounts: &'a Accounts,
    params: &Params,
    call: &Call<'_>,
) -> Result<(&'a Account, Action), ApiError> {
    let action = call
        .action
        .ok_or_else(|| ApiError::new(160, "Missing Action"))?;
    let signature =
        non_empty(params, SIGNATURE).ok_or_else(|| ApiError::new(170, "Missing Signature"))?;
    let account = call
        .public_key
        .and_then(|key| accounts.get(key))
        .ok_or_else(|| ApiError::new(172, "User not found: the PublicKey does not exist"))?;
    // `signing::signature` leaves `Signature` itself out of the signed input.
    if signing::signature(params, account.private_key.expose_secret()) != signature {
        return Err(ApiError::new(171, "Signature VerifyAC Error"));
    }
    let action = Action::from_name(action)
        .ok_or_else(|| ApiError::new(161, format!("Action [{action}] does not exist")))?;
    Ok((account, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    fn accounts() -> Accounts {
        Fixture::from_yaml("accounts: [{publicKey: pub, privateKey: priv}]")
            .unwrap()
            .accounts
    }

    fn signed(pairs: &[(&str, &str)], public_key: &str, private_key: &str) -> Params {
        let mut params: Params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        signing::sign(&mut params, public_key, private_key);
        params
    }

    fn code(params: &Params) -> Result<Action, i64> {
        let accounts = accounts();
        verify(&accounts, params, &call_of(params))
            .map(|(_, action)| action)
            .map_err(|e| e.code)
    }

    #[test]
    fn verification_follows_the_gateways_order() {
        assert_eq!(
            code(&signed(&[("Action", "GetProjectList")], "pub", "priv")),
            Ok(Action::GetProjectList)
        );
        // No action beats everything else.
        assert_eq!(code(&Params::new()), Err(160));
        assert_eq!(code(&signed(&[("Action", "")], "nobody", "x")), Err(160));
        let mut unsigned = signed(&[("Action", "GetProjectList")], "nobody", "x");
        unsigned.remove(SIGNATURE);
        assert_eq!(code(&unsigned), Err(170));
        // An unknown key beats a wrong signature.
        assert_eq!(
            code(&signed(&[("Action", "GetProjectList")], "nobody", "x")),
            Err(172)
        );
        let mut keyless = signed(&[("Action", "GetProjectList")], "pub", "priv");
        keyless.remove(PUBLIC_KEY);
        assert_eq!(code(&keyless), Err(172));
        assert_eq!(
            code(&signed(&[("Action", "GetProjectList")], "pub", "wrong")),
            Err(171)
        );
        // A wrong signature beats an unknown action: only signed callers learn what exists.
        assert_eq!(
            code(&signed(&[("Action", "Nope")], "pub", "wrong")),
            Err(171)
        );
        assert_eq!(
            code(&signed(&[("Action", "Nope")], "pub", "priv")),
            Err(161)
        );
    }

    #[test]
    fn a_tampered_parameter_breaks_the_signature() {
        let mut params = signed(
            &[
                ("Action", "DescribeCompShareInstance"),
                ("Region", "cn-wlcb"),
            ],
            "pub",
            "priv",
        );
        params.insert("Region".into(), "cn-sh2".into());
        assert_eq!(code(&params), Err(171));
    }
}
