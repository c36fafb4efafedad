//! The simulator, started in-process, seen through the project's own client, raw HTTP and the
//! vendor's official Python SDK.

use std::process::Command;
use std::time::Duration;

use compshare_api::signing::{self, Params};
use compshare_api::{
    CREATE_ACTION, DESCRIBE_ACTION, OPERATION_IN_PROGRESS, REQUEST_ID_HEADER, STOP_ACTION,
    SUPPORT_ZONE_ACTION, TERMINATE_ACTION,
};
use compshare_api::{
    CallError, Client, ClientConfig, CreateRequest, Credentials, DescribeRequest, DescribeResponse,
    Disk, Disposition, InstanceRef,
};
use compshare_simulator::{
    AdminClient, AdminClientError, Capacity, Fixture, FixtureBuilder, Simulator, SimulatorHandle,
    Transitions,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const PUBLIC_KEY: &str = "test-public-key";
const PRIVATE_KEY: &str = "test-private-key";
const DEMO_PUBLIC_KEY: &str = "compshare-demo-public-key";
const DEMO_PRIVATE_KEY: &str = "compshare-demo-private-key";

/// `count` instances `uhost-00000`… in cn-wlcb, all Running, owned by the test account.
fn fixture(count: usize) -> Fixture {
    let instances: Vec<Value> = (0..count)
        .map(|i| json!({"UHostId": id(i), "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Running"}))
        .collect();
    Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .instances(instances)
        .build()
        .unwrap()
}

fn id(i: usize) -> String {
    format!("uhost-{i:05}")
}

struct Harness {
    sim: SimulatorHandle,
    client: Client,
    /// For requests to the gateway that the project's client would not send.
    http: reqwest::Client,
    admin: AdminClient,
}

impl Harness {
    async fn start(fixture: Fixture) -> Harness {
        Harness::with_timeout(fixture, Duration::from_secs(5)).await
    }

    async fn with_timeout(fixture: Fixture, timeout: Duration) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(listener, fixture);
        let client = Client::new(&ClientConfig {
            endpoint: sim.endpoint(),
            timeout,
            allow_insecure_http: true,
        })
        .unwrap();
        // The project's client has installed the process-wide TLS provider reqwest needs.
        let http = reqwest::Client::new();
        let admin = AdminClient::new(&sim.endpoint());
        Harness {
            sim,
            client,
            http,
            admin,
        }
    }

    async fn describe(&self, request: DescribeRequest) -> Result<DescribeResponse, CallError> {
        self.describe_as(&Credentials::new(PUBLIC_KEY, PRIVATE_KEY), request)
            .await
    }

    async fn describe_as(
        &self,
        credentials: &Credentials,
        request: DescribeRequest,
    ) -> Result<DescribeResponse, CallError> {
        self.client.describe(credentials, &request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.endpoint())
    }

    async fn inject(&self, fault: Value) {
        self.admin.inject(fault).await.unwrap();
    }
}

fn wlcb() -> DescribeRequest {
    DescribeRequest {
        region: "cn-wlcb".into(),
        limit: Some(100),
        ..DescribeRequest::default()
    }
}

fn by_ids(ids: &[String]) -> DescribeRequest {
    DescribeRequest {
        uhost_ids: ids.to_vec(),
        ..wlcb()
    }
}

fn ids_of(response: &DescribeResponse) -> Vec<String> {
    response
        .u_host_set
        .iter()
        .map(|i| i.u_host_id.to_string())
        .collect()
}

fn api_code(result: Result<DescribeResponse, CallError>) -> i64 {
    match result {
        Err(CallError::Api { code, .. }) => code,
        other => panic!("expected a RetCode error, got {other:?}"),
    }
}

#[tokio::test]
async fn pages_through_more_than_100_instances() {
    let h = Harness::start(fixture(250)).await;
    let mut seen = Vec::new();
    for (offset, expected) in [(0, 100), (100, 100), (200, 50)] {
        let page = h
            .describe(DescribeRequest {
                offset: Some(offset),
                ..wlcb()
            })
            .await
            .unwrap();
        assert_eq!(page.total_count, Some(250));
        assert_eq!(page.u_host_set.len(), expected, "offset {offset}");
        seen.extend(ids_of(&page));
    }
    assert_eq!(seen, (0..250).map(id).collect::<Vec<_>>());
    let at_end = h
        .describe(DescribeRequest {
            offset: Some(250),
            ..wlcb()
        })
        .await
        .unwrap();
    assert!(at_end.u_host_set.is_empty());

    let past_end = h.describe(DescribeRequest {
        offset: Some(251),
        ..wlcb()
    });
    assert_eq!(api_code(past_end.await), 230);
    let too_many = h.describe(DescribeRequest {
        limit: Some(101),
        ..wlcb()
    });
    assert_eq!(api_code(too_many.await), 230);
    let ids: Vec<String> = (0..101).map(id).collect();
    assert_eq!(api_code(h.describe(by_ids(&ids)).await), 230);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn asking_by_id_returns_exactly_those_instances() {
    let h = Harness::start(fixture(250)).await;
    let wanted: Vec<String> = [7, 180, 3, 249].into_iter().map(id).collect();
    let mut asked = wanted.clone();
    asked.push("uhost-nonexistent".into());
    let answer = h.describe(by_ids(&asked)).await.unwrap();
    let mut got = ids_of(&answer);
    got.sort();
    let mut expected = wanted;
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(answer.total_count, Some(4));

    // Without a Limit the default of 20 applies to id queries too.
    let thirty: Vec<String> = (0..30).map(id).collect();
    let answer = h
        .describe(DescribeRequest {
            limit: None,
            ..by_ids(&thirty)
        })
        .await
        .unwrap();
    assert_eq!(
        (answer.u_host_set.len(), answer.total_count),
        (20, Some(30))
    );
}

#[tokio::test]
async fn wrong_or_unknown_keys_are_rejected() {
    let h = Harness::start(fixture(1)).await;
    let wrong_private = h
        .describe_as(&Credentials::new(PUBLIC_KEY, "not-the-key"), wlcb())
        .await;
    assert_eq!(
        wrong_private.unwrap_err(),
        CallError::Api {
            code: 171,
            message: "Signature VerifyAC Error".into()
        }
    );
    let unknown = h
        .describe_as(&Credentials::new("nobody", PRIVATE_KEY), wlcb())
        .await;
    assert_eq!(api_code(unknown), 172);
}

#[tokio::test]
async fn instances_come_in_the_full_shape_and_only_to_their_owner() {
    let fixture = Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .account("other", "other-private")
        .instance(json!({"UHostId": "uhost-mine", "Region": "cn-wlcb", "Owner": PUBLIC_KEY}))
        .instance(json!({"UHostId": "uhost-theirs", "Region": "cn-wlcb", "Owner": "other"}))
        .build()
        .unwrap();
    let h = Harness::start(fixture).await;
    let ids = ["uhost-mine".to_owned(), "uhost-theirs".to_owned()];
    let answer = h.describe(by_ids(&ids)).await.unwrap();
    assert_eq!(ids_of(&answer), ["uhost-mine"]);
    let other = Credentials::new("other", "other-private");
    let answer = h.describe_as(&other, by_ids(&ids)).await.unwrap();
    assert_eq!(ids_of(&answer), ["uhost-theirs"]);

    let raw = signed_call(
        &h,
        json!({"Action": "DescribeCompShareInstance", "Region": "cn-wlcb"}),
    )
    .await;
    let element = raw["UHostSet"][0].as_object().unwrap();
    for field in [
        "IPSet",
        "DiskSet",
        "Softwares",
        "GraphicsMemory",
        "MonitorMessages",
        "IsSpot",
        "UpdateTime",
        "InstancePrice",
        // The Go SDK's CompShareInstanceSet has these beside the page's fields.
        "CompShareImageBillId",
        "CpuArch",
        "PostPayPowerOffBillingResource",
        "StopSchedulerTime",
        "Tag",
        "WithoutGpuSpec",
    ] {
        assert!(element.contains_key(field), "{field} missing");
    }
    assert!(!element.contains_key("Owner"));
    assert!(!element.contains_key("ProjectId"));
}

/// Signs `params` with the test account and sends them the way the SDKs do, returning the JSON.
async fn signed_call(h: &Harness, params: Value) -> Value {
    let mut form: Params = signing::flatten(params.as_object().unwrap());
    signing::sign(&mut form, PUBLIC_KEY, PRIVATE_KEY);
    let response = h.http.post(h.url("/")).form(&form).send().await.unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn get_json_and_form_requests_are_all_served_with_a_request_id() {
    let h = Harness::start(fixture(3)).await;
    let mut params: Params = signing::flatten(
        json!({"Action": "DescribeCompShareInstance", "Region": "cn-wlcb", "UHostIds": [id(1)]})
            .as_object()
            .unwrap(),
    );
    signing::sign(&mut params, PUBLIC_KEY, PRIVATE_KEY);

    let get = h.http.get(h.url("/")).query(&params).send().await.unwrap();
    assert!(get.headers().contains_key(REQUEST_ID_HEADER));
    let get: Value = serde_json::from_slice(&get.bytes().await.unwrap()).unwrap();
    assert_eq!(get["RetCode"], 0, "{get}");
    assert_eq!(get["UHostSet"][0]["UHostId"], id(1));

    let json_body: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let posted = h
        .http
        .post(h.url("/?Action=DescribeCompShareInstance"))
        .header("content-type", "application/json")
        .body(Value::Object(json_body).to_string())
        .send()
        .await
        .unwrap();
    let posted: Value = serde_json::from_slice(&posted.bytes().await.unwrap()).unwrap();
    assert_eq!(posted["TotalCount"], 1, "{posted}");

    let missing_action = h
        .http
        .post(h.url("/"))
        .form(&[("Region", "cn-wlcb")])
        .send()
        .await
        .unwrap();
    let missing_action: Value =
        serde_json::from_slice(&missing_action.bytes().await.unwrap()).unwrap();
    assert_eq!(missing_action["RetCode"], 160);

    let elsewhere = h.http.post(h.url("/v1/describe")).send().await.unwrap();
    assert_eq!(elsewhere.status().as_u16(), 404);
    assert!(elsewhere.headers().contains_key(REQUEST_ID_HEADER));
}

#[tokio::test]
async fn get_project_list_names_the_default_project() {
    let h = Harness::start(fixture(0)).await;
    let answer = signed_call(&h, json!({"Action": "GetProjectList"})).await;
    assert_eq!(answer["RetCode"], 0);
    assert_eq!(answer["ProjectSet"][0]["IsDefault"], true);
    let unknown = signed_call(&h, json!({"Action": "DeleteEverything"})).await;
    assert_eq!(unknown["RetCode"], 161);
}

#[tokio::test]
async fn throttling_and_retcode_faults_come_back_as_api_errors() {
    let h = Harness::start(fixture(3)).await;
    h.inject(json!({"kind": "throttle", "count": 1})).await;
    assert_eq!(api_code(h.describe(wlcb()).await), 153);
    h.inject(
        json!({"kind": "retcode", "retCode": 150, "message": "Service unavailable", "count": 1}),
    )
    .await;
    assert_eq!(
        h.describe(wlcb()).await.unwrap_err(),
        CallError::Api {
            code: 150,
            message: "Service unavailable".into()
        }
    );
    h.inject(json!({"kind": "retcode", "retCode": 2000, "count": 1}))
        .await;
    assert_eq!(api_code(h.describe(wlcb()).await), 2000);
    assert!(h.describe(wlcb()).await.is_ok());

    // Throttling comes before verification: even a badly signed call is throttled.
    h.inject(json!({"kind": "throttle", "count": 1})).await;
    let bad = Credentials::new(PUBLIC_KEY, "wrong");
    assert_eq!(api_code(h.describe_as(&bad, wlcb()).await), 153);
    // A RetCode fault comes after it: the bad signature is reported, and the fault is kept.
    h.inject(json!({"kind": "retcode", "retCode": 150, "count": 1}))
        .await;
    assert_eq!(api_code(h.describe_as(&bad, wlcb()).await), 171);
    assert_eq!(api_code(h.describe(wlcb()).await), 150);
}

#[tokio::test]
async fn transport_faults_come_back_as_transport_errors() {
    let h = Harness::with_timeout(fixture(3), Duration::from_millis(300)).await;
    h.inject(json!({"kind": "http", "status": 503, "count": 1}))
        .await;
    assert_eq!(
        h.describe(wlcb()).await.unwrap_err(),
        CallError::Http { status: 503 }
    );
    h.inject(json!({"kind": "malformed", "count": 1})).await;
    assert!(matches!(
        h.describe(wlcb()).await,
        Err(CallError::Malformed(_))
    ));
    h.inject(json!({"kind": "drop", "count": 1})).await;
    assert!(matches!(
        h.describe(wlcb()).await,
        Err(CallError::Transport(_))
    ));
    h.inject(json!({"kind": "latency", "latencyMs": 1000, "count": 1}))
        .await;
    assert!(matches!(
        h.describe(wlcb()).await,
        Err(CallError::Timeout(_))
    ));
    // A short delay and then an answer.
    h.inject(json!({"kind": "latency", "latencyMs": 50, "count": 1}))
        .await;
    assert!(h.describe(wlcb()).await.is_ok());
    h.inject(json!({"kind": "http", "status": 502, "latencyMs": 50, "count": 1}))
        .await;
    assert_eq!(
        h.describe(wlcb()).await.unwrap_err(),
        CallError::Http { status: 502 }
    );
    assert!(h.describe(wlcb()).await.is_ok());
}

#[tokio::test]
async fn omit_hides_instances_even_when_asked_for() {
    let h = Harness::start(fixture(5)).await;
    h.inject(json!({"kind": "omit", "ids": [id(1), id(3)], "count": 1}))
        .await;
    let asked: Vec<String> = (0..5).map(id).collect();
    let answer = h.describe(by_ids(&asked)).await.unwrap();
    assert_eq!(ids_of(&answer), [id(0), id(2), id(4)]);
    let answer = h.describe(by_ids(&asked)).await.unwrap();
    assert_eq!(answer.u_host_set.len(), 5);
}

#[tokio::test]
async fn quoted_numbers_are_still_a_success() {
    let h = Harness::start(fixture(2)).await;
    h.inject(json!({"kind": "retcode-as-string", "count": 1}))
        .await;
    let raw = signed_call(
        &h,
        json!({"Action": "DescribeCompShareInstance", "Region": "cn-wlcb"}),
    )
    .await;
    assert_eq!(raw["RetCode"], "0");
    assert_eq!(raw["TotalCount"], "2");
    assert!(raw["UHostSet"][0]["Memory"].is_string());

    h.inject(json!({"kind": "retcode-as-string", "count": 1}))
        .await;
    let answer = h.describe(wlcb()).await.unwrap();
    assert_eq!(answer.total_count, Some(2));
    assert_eq!(answer.u_host_set[0].memory, Some(65536));
}

#[tokio::test]
async fn count_and_duration_limited_faults_end() {
    let h = Harness::start(fixture(1)).await;
    h.inject(json!({"kind": "throttle", "count": 2})).await;
    assert_eq!(api_code(h.describe(wlcb()).await), 153);
    assert_eq!(api_code(h.describe(wlcb()).await), 153);
    assert!(h.describe(wlcb()).await.is_ok());

    h.inject(json!({"kind": "http", "status": 503, "durationMs": 300}))
        .await;
    assert!(h.describe(wlcb()).await.is_err());
    assert!(h.describe(wlcb()).await.is_err());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(h.describe(wlcb()).await.is_ok());

    // Faults can target an action and a key; clearing ends them all.
    h.inject(json!({"kind": "throttle", "publicKey": "someone-else"}))
        .await;
    h.inject(json!({"kind": "throttle", "action": "GetProjectList"}))
        .await;
    assert!(h.describe(wlcb()).await.is_ok());
    assert_eq!(h.admin.faults().await.unwrap().len(), 2);
    h.admin.clear_faults().await.unwrap();
    assert!(h.admin.faults().await.unwrap().is_empty());

    let refused = h
        .admin
        .inject(json!({"kind": "latency"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, AdminClientError::Refused { status: 422, message } if message.contains("latencyMs")),
        "{refused}"
    );
}

/// The status an admin request was refused with.
fn refused_with<T: std::fmt::Debug>(result: Result<T, AdminClientError>) -> u16 {
    match result {
        Err(AdminClientError::Refused { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn admin_changes_what_the_api_serves() {
    let h = Harness::start(fixture(2)).await;
    let first = [id(0)];

    let patched = h
        .admin
        .patch_instance(
            &id(0),
            json!({"State": "Stopped", "IPSet": [{"IP": "117.50.1.2", "Type": "Internation"}]}),
        )
        .await
        .unwrap();
    assert_eq!(patched["State"], "Stopped");
    let answer = h.describe(by_ids(&first)).await.unwrap();
    assert_eq!(answer.u_host_set[0].state, "Stopped");
    assert_eq!(answer.u_host_set[0].ip_set[0].ip, "117.50.1.2");
    let none = h
        .admin
        .patch_instance("uhost-none", json!({"State": "Stopped"}))
        .await;
    assert_eq!(refused_with(none), 404);

    let new = json!({"UHostId": "uhost-new", "Region": "cn-wlcb", "State": "Starting"});
    let added = h.admin.add_instance(new.clone()).await.unwrap();
    assert_eq!(added["IsSpot"], false);
    assert_eq!(refused_with(h.admin.add_instance(new).await), 409);
    let answer = h.describe(by_ids(&["uhost-new".into()])).await.unwrap();
    assert_eq!(answer.u_host_set[0].state, "Starting");
    let invalid = h.admin.add_instance(json!({"UHostId": "uhost-x"})).await;
    assert_eq!(refused_with(invalid), 422);

    h.admin.remove_instance("uhost-new").await.unwrap();
    assert_eq!(
        refused_with(h.admin.remove_instance("uhost-new").await),
        404
    );
    let answer = h.describe(by_ids(&["uhost-new".into()])).await.unwrap();
    assert!(answer.u_host_set.is_empty());

    assert_eq!(h.admin.instances().await.unwrap().len(), 2);
    let one = h.admin.instance(&id(1)).await.unwrap().unwrap();
    assert_eq!(one["Owner"], PUBLIC_KEY);
    assert_eq!(h.admin.instance("uhost-none").await.unwrap(), None);
}

#[tokio::test]
async fn counters_count_calls_by_action_key_and_result() {
    let h = Harness::start(fixture(3)).await;
    let ids: Vec<String> = (0..3).map(id).collect();
    h.describe(by_ids(&ids)).await.unwrap();
    h.describe(by_ids(&ids[..1])).await.unwrap();
    h.inject(json!({"kind": "http", "status": 503, "count": 1}))
        .await;
    h.describe(wlcb()).await.unwrap_err();
    h.inject(json!({"kind": "drop", "count": 1})).await;
    h.describe(wlcb()).await.unwrap_err();
    h.describe_as(&Credentials::new(PUBLIC_KEY, "wrong"), wlcb())
        .await
        .unwrap_err();

    let counters = h.admin.counters().await.unwrap();
    assert_eq!(counters.total(), 5);
    assert_eq!(counters.ids_requested(), 4);
    let describe = counters.action(DESCRIBE_ACTION);
    assert_eq!(describe.total, 5);
    assert_eq!(
        describe.by_result,
        [("0", 2), ("171", 1), ("dropped", 1), ("http_503", 1)]
            .map(|(r, n)| (r.to_owned(), n))
            .into()
    );
    assert_eq!(counters.public_key(PUBLIC_KEY).total, 5);

    h.admin.reset_counters().await.unwrap();
    assert_eq!(h.admin.counters().await.unwrap().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_many_concurrent_pollers_of_a_large_inventory() {
    let h = Harness::start(fixture(10_000)).await;
    let mut calls = tokio::task::JoinSet::new();
    for batch in 0..100 {
        let client = h.client.clone();
        calls.spawn(async move {
            let ids: Vec<String> = (batch * 100..(batch + 1) * 100).map(id).collect();
            let credentials = Credentials::new(PUBLIC_KEY, PRIVATE_KEY);
            let answer = client.describe(&credentials, &by_ids(&ids)).await.unwrap();
            assert_eq!(ids_of(&answer), ids);
        });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap();
    }
    let counters = h.admin.counters().await.unwrap();
    assert_eq!(counters.action(DESCRIBE_ACTION).by_result["0"], 100);
    assert_eq!(counters.ids_requested(), 10_000);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = Harness::start(fixture(1)).await;
    assert!(h.describe(wlcb()).await.is_ok());
    let Harness { sim, client, .. } = h;
    sim.shutdown().await;
    let after = client
        .describe(&Credentials::new(PUBLIC_KEY, PRIVATE_KEY), &wlcb())
        .await;
    // Refused (nothing listens), or broken if a kept-alive connection was tried first.
    assert!(
        matches!(
            after,
            Err(CallError::Unreachable(_) | CallError::Transport(_))
        ),
        "{after:?}"
    );
}

/// The interpreter of the virtual environment with the official SDK. Without it the test fails
/// rather than skips: a skipped compatibility check looks like a passed one.
fn sdk_python() -> String {
    std::env::var("COMPSHARE_SDK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "COMPSHARE_SDK_PYTHON is not set. This test checks the simulator against UCloud's \
             official Python SDK; create its virtual environment and point the variable at its \
             interpreter with:\n\n    export COMPSHARE_SDK_PYTHON=$(bash hack/sdk-venv.sh)\n"
        )
    })
}

/// Calls `action` through the official Python SDK (`tests/sdk/describe.py`) with the demo account.
async fn python_sdk(
    python: &str,
    endpoint: &str,
    private_key: &str,
    action: &str,
    params: Value,
) -> Value {
    python_sdk_in(python, endpoint, private_key, action, params, None).await
}

/// Like [`python_sdk`], with the client's project set (the typed scheduler calls require one).
/// `action` may be an API action (sent with `invoke`) or a typed method of the SDK.
async fn python_sdk_in(
    python: &str,
    endpoint: &str,
    private_key: &str,
    action: &str,
    params: Value,
    project: Option<&str>,
) -> Value {
    let args = [python, endpoint, private_key, action].map(str::to_owned);
    let project = project.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let [python, endpoint, private_key, action] = args;
        run_sdk_script(
            &python,
            &endpoint,
            &private_key,
            &action,
            params,
            project.as_deref(),
        )
    })
    .await
    .unwrap()
}

fn run_sdk_script(
    python: &str,
    endpoint: &str,
    private_key: &str,
    action: &str,
    params: Value,
    project: Option<&str>,
) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/describe.py");
    let params = params.to_string();
    let mut args = vec![
        script,
        endpoint,
        DEMO_PUBLIC_KEY,
        private_key,
        action,
        &params,
    ];
    args.extend(project);
    let output = Command::new(python)
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the SDK script printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test]
async fn the_official_python_sdk_sees_what_the_client_sees() {
    let python = sdk_python();
    let h = Harness::start(Fixture::embedded_default()).await;
    let endpoint = h.sim.endpoint();
    let demo = Credentials::new(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY);
    let ids = vec![
        "uhost-9c0d1e2f".to_owned(),
        "uhost-1a2b3c4d".to_owned(),
        "uhost-2c3d4e5f".to_owned(),
    ];
    let cases = [
        (
            json!({"Region": "cn-wlcb", "Limit": 100, "Offset": 0}),
            wlcb(),
        ),
        (
            json!({"Region": "cn-wlcb", "Limit": 2, "Offset": 1}),
            DescribeRequest {
                limit: Some(2),
                offset: Some(1),
                ..wlcb()
            },
        ),
        (
            json!({"Region": "cn-wlcb", "Limit": 100, "UHostIds": ids}),
            by_ids(&ids),
        ),
    ];
    for (sdk_params, request) in cases {
        let sdk = python_sdk(
            &python,
            &endpoint,
            DEMO_PRIVATE_KEY,
            "DescribeCompShareInstance",
            sdk_params.clone(),
        )
        .await;
        let sdk = &sdk["response"];
        let ours = h.describe_as(&demo, request).await.unwrap();
        assert_eq!(
            sdk["TotalCount"],
            json!(ours.total_count.unwrap()),
            "{sdk_params}"
        );
        let sdk_instances: Vec<(String, String)> = sdk["UHostSet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["UHostId"].as_str().unwrap().to_owned(),
                    i["State"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let our_instances: Vec<(String, String)> = ours
            .u_host_set
            .iter()
            .map(|i| (i.u_host_id.to_string(), i.state.to_string()))
            .collect();
        assert_eq!(sdk_instances, our_instances, "{sdk_params}");
        assert!(!our_instances.is_empty());
    }

    let projects = python_sdk(
        &python,
        &endpoint,
        DEMO_PRIVATE_KEY,
        "GetProjectList",
        json!({}),
    )
    .await;
    assert_eq!(
        projects["response"]["ProjectSet"],
        json!([{"ProjectId": "org-demo", "ProjectName": "Default", "IsDefault": true}])
    );

    let rejected = python_sdk(
        &python,
        &endpoint,
        "not-the-private-key",
        "DescribeCompShareInstance",
        json!({"Region": "cn-wlcb"}),
    )
    .await;
    assert_eq!(rejected["error"]["type"], "RetCodeException");
    assert_eq!(rejected["error"]["code"], 171);
    assert_eq!(rejected["error"]["message"], "Signature VerifyAC Error");
}

#[tokio::test]
async fn a_redirect_is_reported_as_one_naming_its_location_not_as_rejected_keys() {
    let h = Harness::start(fixture(1)).await;
    h.inject(json!({"kind": "redirect", "status": 301, "location": "https://elsewhere.example/"}))
        .await;
    let error = h.describe(wlcb()).await.unwrap_err();
    assert_eq!(
        error,
        CallError::Redirect {
            status: 301,
            location: "https://elsewhere.example/".into()
        }
    );
    assert_eq!(error.disposition(), Disposition::InvalidRequest);
    assert!(error.to_string().contains("--endpoint"), "{error}");
}

#[tokio::test]
async fn an_html_answer_says_what_came_back() {
    let h = Harness::start(fixture(1)).await;
    h.inject(json!({"kind": "html", "count": 1})).await;
    let Err(CallError::Malformed(message)) = h.describe(wlcb()).await else {
        panic!("an HTML answer is malformed");
    };
    assert!(message.contains("not JSON"), "{message}");
    assert!(message.contains("text/html"), "{message}");
    assert!(message.contains("<!DOCTYPE html>"), "{message}");
    // A JSON answer cut short shows no bytes of its own (it could hold a password).
    h.inject(json!({"kind": "malformed", "count": 1})).await;
    let Err(CallError::Malformed(message)) = h.describe(wlcb()).await else {
        panic!("a cut answer is malformed");
    };
    assert!(!message.contains("UHostId"), "{message}");
}

#[tokio::test]
async fn an_oversized_answer_is_refused_without_reading_it_whole() {
    let h = Harness::start(fixture(1)).await;
    // 64 MiB, streamed: the client stops after its cap (4 MiB).
    h.inject(json!({"kind": "oversized", "bytes": 64u64 << 20, "count": 1}))
        .await;
    let started = std::time::Instant::now();
    let Err(CallError::Malformed(message)) = h.describe(wlcb()).await else {
        panic!("an oversized answer is refused");
    };
    assert!(message.contains("larger than 4 MiB"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The next, normal answer is read as usual.
    assert_eq!(h.describe(wlcb()).await.unwrap().u_host_set.len(), 1);
}

// The lifecycle actions, through the project's own client.

/// One account, `uhost-00000` (Running) and `uhost-00001` (Stopped) in cn-wlcb-01, transitions
/// of 600 ms: short, and long enough for a test to see the state in between on a busy machine.
fn lifecycle_fixture() -> FixtureBuilder {
    Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .transitions(Transitions::uniform(600))
        .instance(json!({"UHostId": id(0), "Owner": PUBLIC_KEY, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Running", "GPU": 2}))
        .instance(json!({"UHostId": id(1), "Owner": PUBLIC_KEY, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Stopped"}))
}

fn credentials() -> Credentials {
    Credentials::new(PUBLIC_KEY, PRIVATE_KEY)
}

fn create_request() -> CreateRequest {
    CreateRequest {
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
        gpu_type: "4090".into(),
        gpu: 1,
        cpu: 16,
        memory_mb: 65536,
        image_id: "compshareImage-ubuntu2204".into(),
        disks: vec![Disk {
            boot: true,
            kind: "CLOUD_SSD".into(),
            size_gb: 100,
        }],
        charge_type: Some("Dynamic".into()),
        name: Some("trainer".into()),
        remark: Some("k8s-uid=0f3c".into()),
        password: Some(SecretString::from("s3cret-Pass")),
        ..CreateRequest::default()
    }
}

fn on(uhost_id: &str) -> InstanceRef {
    InstanceRef {
        region: "cn-wlcb".into(),
        zone: "cn-wlcb-01".into(),
        project_id: None,
        uhost_id: uhost_id.into(),
    }
}

impl Harness {
    /// The instance as `DescribeCompShareInstance` shows it; `None` when it is not there.
    async fn find(&self, uhost_id: &str) -> Option<compshare_api::Instance> {
        self.find_as(&credentials(), uhost_id).await
    }

    async fn find_as(
        &self,
        credentials: &Credentials,
        uhost_id: &str,
    ) -> Option<compshare_api::Instance> {
        let answer = self
            .describe_as(credentials, by_ids(&[uhost_id.to_owned()]))
            .await
            .unwrap();
        answer.u_host_set.into_iter().next()
    }

    async fn state(&self, uhost_id: &str) -> String {
        self.find(uhost_id).await.unwrap().state.to_string()
    }

    /// Polls until the instance is in `state` (within 5 s).
    async fn wait_for(&self, uhost_id: &str, state: &str) {
        self.wait_for_as(&credentials(), uhost_id, state).await;
    }

    async fn wait_for_as(&self, credentials: &Credentials, uhost_id: &str, state: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self
                .find_as(credentials, uhost_id)
                .await
                .unwrap()
                .state
                .to_string();
            if now == state {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{uhost_id} still {now}, not {state}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn error_of<T: std::fmt::Debug>(result: Result<T, CallError>) -> (i64, String) {
    match result {
        Err(CallError::Api { code, message }) => (code, message),
        other => panic!("expected a RetCode error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_created_machine_initializes_runs_stops_and_is_terminated() {
    let h = Harness::start(lifecycle_fixture().build().unwrap()).await;
    let c = credentials();
    let ids = h.client.create(&c, &create_request()).await.unwrap();
    assert_eq!(ids.len(), 1);
    let new = &ids[0];
    assert!(
        new.len() == 14 && new[6..].chars().all(|ch| ch.is_ascii_hexdigit()),
        "{new}"
    );

    // At once, Initializing, with what was asked for.
    let instance = h.find(new).await.unwrap();
    assert_eq!(instance.state, "Initializing");
    assert_eq!(instance.name, "trainer");
    assert_eq!(instance.remark, "k8s-uid=0f3c");
    assert_eq!(
        (instance.gpu, instance.cpu, instance.memory),
        (Some(1), Some(16), Some(65536))
    );
    assert_eq!(instance.gpu_type, "4090");
    assert_eq!(instance.charge_type, "Dynamic");
    assert_eq!(instance.is_spot, Some(false));
    assert_eq!(instance.comp_share_image_id, "compshareImage-ubuntu2204");
    assert_eq!(instance.zone, "cn-wlcb-01");
    let password = instance.password.as_ref().unwrap().decode().unwrap();
    assert_eq!(password.expose_secret(), "s3cret-Pass");
    let types: Vec<&str> = instance
        .ip_set
        .iter()
        .map(|ip| ip.r#type.as_str())
        .collect();
    assert_eq!(types, ["Bgp", "Private"]);
    let public = &instance.ip_set[0].ip;
    assert!(public.starts_with("117.50."), "{public}");
    assert!(instance.ip_set[1].ip.starts_with("10."));
    assert_eq!(
        instance.ssh_login_command,
        format!("ssh root@{public} -p 22")
    );
    let login = compshare_api::parse_login_command(&instance.ssh_login_command).unwrap();
    assert_eq!((login.host.as_str(), login.port), (public.as_str(), 22));

    h.wait_for(new, "Running").await;
    h.client.stop(&c, &on(new)).await.unwrap();
    assert_eq!(h.state(new).await, "Stopping");
    h.wait_for(new, "Stopped").await;
    let in_recycle = h.client.terminate(&c, &on(new), true).await.unwrap();
    assert!(in_recycle);
    assert!(h.find(new).await.is_none());
    assert!(h.admin.instance(new).await.unwrap().is_none());

    // Start and reboot on the fixture's machines.
    h.client.start(&c, &on(&id(1)), false).await.unwrap();
    assert_eq!(h.state(&id(1)).await, "Starting");
    h.wait_for(&id(1), "Running").await;
    h.client.reboot(&c, &on(&id(1))).await.unwrap();
    assert_eq!(h.state(&id(1)).await, "Rebooting");
    h.wait_for(&id(1), "Running").await;

    let counters = h.admin.counters().await.unwrap();
    assert_eq!(counters.mutating_calls(), 5);
    assert_eq!(counters.action(CREATE_ACTION).by_result["0"], 1);
    assert_eq!(counters.calls(TERMINATE_ACTION), 1);
}

#[tokio::test]
async fn a_wrong_state_an_unknown_machine_and_another_accounts_are_refused() {
    let fixture = lifecycle_fixture()
        .account("other", "other-private")
        .instance(json!({"UHostId": "uhost-theirs", "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "Owner": "other", "State": "Stopped"}))
        .build()
        .unwrap();
    let h = Harness::start(fixture).await;
    let c = credentials();
    let (code, message) = error_of(h.client.stop(&c, &on(&id(1))).await);
    assert_eq!(code, 8041);
    assert_eq!(
        message,
        "UHost [uhost-00001] is Stopped: StopCompShareInstance needs it Running"
    );
    let (_, message) = error_of(h.client.terminate(&c, &on(&id(0)), false).await);
    assert!(message.contains("is Running"), "{message}");
    let (_, message) = error_of(h.client.start(&c, &on(&id(0)), false).await);
    assert!(message.contains("needs it Stopped"), "{message}");
    for unknown in ["uhost-theirs", "uhost-nothere"] {
        let (code, message) = error_of(h.client.terminate(&c, &on(unknown), false).await);
        assert_eq!(
            (code, message),
            (8039, format!("UHost [{unknown}] not found"))
        );
    }
    // The wrong zone does not find it either.
    let elsewhere = InstanceRef {
        zone: "cn-wlcb-02".into(),
        ..on(&id(0))
    };
    assert_eq!(error_of(h.client.stop(&c, &elsewhere).await).0, 8039);
    // Nothing changed.
    assert_eq!(h.state(&id(0)).await, "Running");
    assert_eq!(h.state(&id(1)).await, "Stopped");
}

#[tokio::test]
async fn the_operation_lock_refuses_a_second_action_until_it_is_released() {
    let h = Harness::start(lifecycle_fixture().build().unwrap()).await;
    let c = credentials();
    // A long transition holds the lock all along.
    h.admin
        .set_transitions(Transitions {
            stop_ms: 60_000,
            ..Transitions::uniform(600)
        })
        .await
        .unwrap();
    h.client.stop(&c, &on(&id(0))).await.unwrap();
    let refused = h.client.reboot(&c, &on(&id(0))).await.unwrap_err();
    assert!(
        matches!(&refused, CallError::Api { code: 8040, message } if message.starts_with(OPERATION_IN_PROGRESS)),
        "{refused}"
    );
    assert_eq!(refused.disposition(), Disposition::Busy);
    let left = h.admin.instance_lock(&id(0)).await.unwrap().unwrap();
    assert!(left > Duration::from_secs(590), "{left:?}");

    // A lock set through the admin interface, on an idle machine.
    assert_eq!(h.admin.instance_lock(&id(1)).await.unwrap(), None);
    h.admin
        .lock_instance(&id(1), Duration::from_secs(30))
        .await
        .unwrap();
    let (code, message) = error_of(h.client.start(&c, &on(&id(1)), false).await);
    assert_eq!(code, 8040);
    assert!(
        message.starts_with("InstanceOperationInProgress"),
        "{message}"
    );
    h.admin.unlock_instance(&id(1)).await.unwrap();
    h.client.start(&c, &on(&id(1)), false).await.unwrap();
    // The start's own lock goes when it has run.
    h.wait_for(&id(1), "Running").await;
    assert_eq!(h.admin.instance_lock(&id(1)).await.unwrap(), None);
    h.client.stop(&c, &on(&id(1))).await.unwrap();

    // A lock expires at its TTL.
    h.admin
        .lock_instance(&id(1), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.admin.instance_lock(&id(1)).await.unwrap(), None);
    assert_eq!(
        refused_with(
            h.admin
                .lock_instance("uhost-none", Duration::from_secs(1))
                .await
        ),
        404
    );
}

#[tokio::test]
async fn quota_arrears_and_capacity_block_creates() {
    let fixture = lifecycle_fixture().instance_quota(3).build().unwrap();
    let h = Harness::start(fixture).await;
    let c = credentials();
    h.client.create(&c, &create_request()).await.unwrap();
    let refused = h.client.create(&c, &create_request()).await.unwrap_err();
    let (code, message) = error_of(Err::<(), _>(refused.clone()));
    assert_eq!(code, 226607);
    assert_eq!(
        message,
        "Instance quota exceeded: the account has 3 of its 3 instances and asked for 1 more"
    );
    assert_eq!(refused.disposition(), Disposition::AccountBlocked);
    let account = h
        .admin
        .patch_account(PUBLIC_KEY, json!({"instanceQuota": 10, "inArrears": true}))
        .await
        .unwrap();
    assert_eq!(
        account,
        json!({"publicKey": PUBLIC_KEY, "instanceQuota": 10, "inArrears": true, "instances": 3})
    );
    let refused = h.client.create(&c, &create_request()).await.unwrap_err();
    assert_eq!(error_of(Err::<(), _>(refused.clone())).0, 226601);
    assert_eq!(refused.disposition(), Disposition::AccountBlocked);
    assert_eq!(
        error_of(h.client.start(&c, &on(&id(1)), false).await).0,
        226601
    );
    h.admin
        .patch_account(PUBLIC_KEY, json!({"inArrears": false}))
        .await
        .unwrap();

    // uhost-00000 (2) and the new machine (1) hold three 4090s of cn-wlcb-01.
    let capacity = [Capacity {
        zone: "cn-wlcb-01".into(),
        gpu_type: "4090".into(),
        gpus: 3,
    }];
    h.admin.set_capacity(&capacity).await.unwrap();
    assert_eq!(h.admin.capacity().await.unwrap(), capacity);
    let refused = h.client.create(&c, &create_request()).await.unwrap_err();
    let (code, message) = error_of(Err::<(), _>(refused.clone()));
    assert_eq!(code, 226604);
    assert!(message.starts_with("Insufficient resources"), "{message}");
    assert_eq!(refused.disposition(), Disposition::OutOfCapacity);
    // Another zone has no limit.
    let elsewhere = CreateRequest {
        zone: "cn-wlcb-02".into(),
        ..create_request()
    };
    h.client.create(&c, &elsewhere).await.unwrap();
    // An unknown zone, and a refused request, make nothing.
    let nowhere = CreateRequest {
        zone: "cn-wlcb-09".into(),
        ..create_request()
    };
    assert_eq!(error_of(h.client.create(&c, &nowhere).await).0, 230);
    assert_eq!(h.admin.instances().await.unwrap().len(), 4);
    assert_eq!(
        refused_with(h.admin.patch_account("nobody", json!({})).await),
        404
    );
}

#[tokio::test]
async fn create_parameters_are_checked_as_the_page_says() {
    let h = Harness::start(lifecycle_fixture().build().unwrap()).await;
    let c = credentials();
    let cases: [(CreateRequest, i64, &str); 6] = [
        (
            CreateRequest {
                image_id: String::new(),
                ..create_request()
            },
            210,
            "Missing params: CompShareImageId",
        ),
        (
            CreateRequest {
                memory_mb: 1000,
                ..create_request()
            },
            230,
            "Params [Memory] not available: 1000 MB is not a multiple of 1024",
        ),
        (
            CreateRequest {
                disks: vec![],
                ..create_request()
            },
            210,
            "Missing params: Disks (at least the boot disk)",
        ),
        (
            CreateRequest {
                gpu: 11,
                ..create_request()
            },
            230,
            "Params [GPU] not available: 11 GPUs asked for, a 4090 machine has 1 to 10",
        ),
        (
            CreateRequest {
                gpu_type: "A800".into(),
                charge_type: Some("Spot".into()),
                ..create_request()
            },
            230,
            "Params [ChargeType] not available: Spot is not offered for A800 machines",
        ),
        (
            CreateRequest {
                name: Some("x".repeat(64)),
                ..create_request()
            },
            230,
            "Params [Name] not available: 64 characters, at most 63",
        ),
    ];
    for (request, code, message) in cases {
        assert_eq!(
            error_of(h.client.create(&c, &request).await),
            (code, message.to_owned())
        );
    }
    assert_eq!(h.admin.instances().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_scheduled_stop_is_refused_on_spot_and_too_soon_and_stops_the_machine() {
    let h = Harness::start(lifecycle_fixture().build().unwrap()).await;
    let c = credentials();
    let spot = CreateRequest {
        charge_type: Some("Spot".into()),
        ..create_request()
    };
    let spot_id = h.client.create(&c, &spot).await.unwrap().remove(0);
    assert_eq!(h.find(&spot_id).await.unwrap().is_spot, Some(true));
    h.wait_for(&spot_id, "Running").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The pages make ProjectId required for the scheduler: the project's default, named.
    let project = h.admin.instance(&id(0)).await.unwrap().unwrap()["ProjectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_project = |uhost_id: &str| InstanceRef {
        project_id: Some(project.clone()),
        ..on(uhost_id)
    };
    let (code, message) = error_of(
        h.client
            .update_stop_scheduler(&c, &with_project(&spot_id), now + 3600)
            .await,
    );
    assert_eq!(code, 230);
    assert!(message.contains("Spot"), "{message}");
    let (code, message) = error_of(
        h.client
            .update_stop_scheduler(&c, &with_project(&id(0)), now + 60)
            .await,
    );
    assert_eq!(code, 230);
    assert!(message.contains("5 minutes"), "{message}");
    let (code, _) = error_of(
        h.client
            .update_stop_scheduler(&c, &on(&id(0)), now + 3600)
            .await,
    );
    assert_eq!(code, 210);

    h.client
        .update_stop_scheduler(&c, &with_project(&id(0)), now + 3600)
        .await
        .unwrap();
    assert_eq!(
        h.find(&id(0)).await.unwrap().stop_scheduler_time,
        Some(now + 3600)
    );
    h.client
        .delete_stop_scheduler(&c, &with_project(&id(0)))
        .await
        .unwrap();
    // 0 on the wire, which the client reads as none.
    assert_eq!(h.find(&id(0)).await.unwrap().stop_scheduler_time, None);

    // The admin interface schedules one without the five minutes' lead: it fires.
    h.admin
        .patch_instance(&id(0), json!({"SchedulerStopTime": now + 1}))
        .await
        .unwrap();
    h.wait_for(&id(0), "Stopping").await;
    h.wait_for(&id(0), "Stopped").await;
    assert_eq!(h.find(&id(0)).await.unwrap().stop_scheduler_time, None);
}

#[tokio::test]
async fn support_zones_lists_the_fixtures_zones_and_wants_a_region() {
    let fixture = lifecycle_fixture()
        .zone("cn-wlcb", "cn-wlcb-01")
        .zone("cn-sh2", "cn-sh2-02")
        .build()
        .unwrap();
    let h = Harness::start(fixture).await;
    let answer = signed_call(
        &h,
        json!({"Action": SUPPORT_ZONE_ACTION, "Region": "cn-wlcb"}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"Action": "DescribeCompShareSupportZoneResponse", "RetCode": 0, "ZoneInfo": [
            {"Region": "cn-wlcb", "Zone": "cn-wlcb-01", "RegionId": 1000001, "ZoneId": 1001, "Describe": "cn-wlcb-01"},
            {"Region": "cn-sh2", "Zone": "cn-sh2-02", "RegionId": 1000002, "ZoneId": 2001, "Describe": "cn-sh2-02"},
        ]})
    );
    // The page marks Region required (the client sends it).
    let without_region = signed_call(&h, json!({"Action": SUPPORT_ZONE_ACTION})).await;
    assert_eq!(without_region["RetCode"], json!(210));
    assert_eq!(without_region["Message"], json!("Missing params: Region"));
    let zones = h
        .client
        .support_zones(&credentials(), "cn-wlcb")
        .await
        .unwrap();
    assert_eq!(zones.len(), 2);
    // Only the listed zones take machines.
    let elsewhere = CreateRequest {
        zone: "cn-wlcb-02".into(),
        ..create_request()
    };
    assert_eq!(
        error_of(h.client.create(&credentials(), &elsewhere).await).0,
        230
    );
}

#[tokio::test]
async fn an_action_applied_before_its_answer_is_lost_stays_applied() {
    let h = Harness::with_timeout(
        lifecycle_fixture().build().unwrap(),
        Duration::from_millis(300),
    )
    .await;
    let c = credentials();
    // The connection drops after the stop was carried out.
    h.inject(json!({"kind": "drop", "stage": "after-action", "action": STOP_ACTION, "count": 1}))
        .await;
    let lost = h.client.stop(&c, &on(&id(0))).await.unwrap_err();
    assert!(matches!(lost, CallError::Transport(_)), "{lost:?}");
    assert!(lost.may_have_taken_effect());
    assert_eq!(h.state(&id(0)).await, "Stopping");
    // The answer comes after the client gave up: the create happened all the same.
    h.inject(json!({"kind": "latency", "latencyMs": 1000, "stage": "after-action", "action": CREATE_ACTION, "count": 1}))
        .await;
    let late = h.client.create(&c, &create_request()).await.unwrap_err();
    assert!(matches!(late, CallError::Timeout(_)), "{late:?}");
    assert_eq!(h.admin.instances().await.unwrap().len(), 3);
    let counters = h.admin.counters().await.unwrap();
    assert_eq!(counters.action(STOP_ACTION).by_result["dropped"], 1);
    assert_eq!(counters.action(CREATE_ACTION).by_result["0"], 1);

    // A fault before the action: nothing happens.
    h.inject(json!({"kind": "throttle", "action": CREATE_ACTION, "count": 1}))
        .await;
    assert_eq!(
        error_of(h.client.create(&c, &create_request()).await).0,
        153
    );
    h.inject(json!({"kind": "retcode", "retCode": 226606, "message": "account not verified", "action": CREATE_ACTION, "count": 1}))
        .await;
    let refused = h.client.create(&c, &create_request()).await.unwrap_err();
    assert_eq!(refused.disposition(), Disposition::AccountBlocked);
    assert_eq!(h.admin.instances().await.unwrap().len(), 3);
    // Only latency and drop can act after the action.
    let refused = h
        .admin
        .inject(json!({"kind": "throttle", "stage": "after-action"}))
        .await;
    assert_eq!(refused_with(refused), 422);
    h.admin.reset_counters().await.unwrap();
    assert_eq!(h.admin.counters().await.unwrap().mutating_calls(), 0);
}

#[tokio::test]
async fn transitions_are_set_through_the_admin_interface() {
    let h = Harness::start(lifecycle_fixture().build().unwrap()).await;
    assert_eq!(
        h.admin.transitions().await.unwrap(),
        Transitions::uniform(600)
    );
    let slow = Transitions {
        create_ms: 10_000,
        ..Transitions::default()
    };
    h.admin.set_transitions(slow).await.unwrap();
    assert_eq!(h.admin.transitions().await.unwrap(), slow);
    let new = h
        .client
        .create(&credentials(), &create_request())
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.state(&new).await, "Initializing");
    // An admin patch that sets the state ends the transition (and its lock) there.
    h.admin
        .patch_instance(&new, json!({"State": "Running"}))
        .await
        .unwrap();
    assert_eq!(h.admin.instance_lock(&new).await.unwrap(), None);
    h.client.stop(&credentials(), &on(&new)).await.unwrap();

    // Malformed settings are refused (400), invalid ones too (422).
    let put = |path: &str, body: Value| h.http.put(h.url(path)).json(&body).send();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            put("/_simulator/transitions", json!({"createMS": 1}))
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            put("/_simulator/capacity", json!([{"zone": "z"}]))
                .await
                .unwrap()
        ),
        400
    );
    let zero = h
        .http
        .post(h.url(&format!("/_simulator/instances/{new}/lock")))
        .json(&json!({"ttlMs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(zero), 422);
    // No body: the documented ten minutes.
    let default = h
        .http
        .post(h.url(&format!("/_simulator/instances/{}/lock", id(1))))
        .send()
        .await
        .unwrap();
    let default: Value = serde_json::from_slice(&default.bytes().await.unwrap()).unwrap();
    assert_eq!(default, json!({"locked": true, "remainingMs": 600_000}));
}

/// The lifecycle calls of the vendor's pages, made by the official Python SDK: `invoke` as the
/// pages' examples do, and the SDK's typed methods (`create_comp_share_instance`, ...), whose
/// answers it reads with its own schemas.
#[tokio::test]
async fn the_official_python_sdk_manages_machines_as_the_pages_show() {
    let python = sdk_python();
    let h = Harness::start(Fixture::embedded_default()).await;
    // Long enough to see `Stopping` after a Python process has come and gone.
    h.admin
        .set_transitions(Transitions::uniform(1000))
        .await
        .unwrap();
    let endpoint = h.sim.endpoint();
    let demo = Credentials::new(DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY);
    let sdk = |action: &'static str, params: Value| {
        python_sdk_in(
            &python,
            &endpoint,
            DEMO_PRIVATE_KEY,
            action,
            params,
            Some("org-demo"),
        )
    };
    let zone = "cn-wlcb-01";

    // The create page's Python example, verbatim but for the image.
    let page_example = json!({
        "Region": "cn-wlcb",
        "Zone": zone,
        "MachineType": "G",
        "CompShareImageId": "compshareImage-ubuntu2204",
        "GPU": 1,
        "GpuType": "4090",
        "CPU": 16,
        "Memory": 64 * 1024,
        "ChargeType": "Dynamic",
        "Name": "my-instance",
        "Disks": [{"IsBoot": "true", "Size": 200, "Type": "CLOUD_SSD"}],
    });
    let created = sdk("CreateCompShareInstance", page_example.clone()).await;
    let response = &created["response"];
    assert_eq!(
        response["Action"], "CreateCompShareInstanceResponse",
        "{created}"
    );
    assert_eq!(response["RetCode"], 0);
    let first = response["UHostIds"][0].as_str().unwrap().to_owned();
    assert_eq!(response["UHostIds"].as_array().unwrap().len(), 1);
    let instance = h.find_as(&demo, &first).await.unwrap();
    assert_eq!(instance.state, "Initializing");
    assert_eq!(instance.name, "my-instance");
    assert_eq!(instance.memory, Some(65536));

    // The typed method, with a password as the SDK's docs say: Base64.
    let mut typed = page_example.clone();
    typed["Name"] = json!("typed");
    typed["Password"] = json!("UGFzc3dvcmQx");
    typed["Disks"][0]["IsBoot"] = json!(true);
    let created = sdk("create_comp_share_instance", typed).await;
    let second = created["response"]["UHostIds"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let instance = h.find_as(&demo, &second).await.unwrap();
    assert_eq!(
        instance.password.unwrap().decode().unwrap().expose_secret(),
        "Password1"
    );
    // The SDK checks what its schema requires before sending anything.
    let mut no_machine_type = page_example.clone();
    no_machine_type
        .as_object_mut()
        .unwrap()
        .remove("MachineType");
    let refused = sdk("create_comp_share_instance", no_machine_type).await;
    assert_eq!(refused["error"]["type"], "ValidationException", "{refused}");
    // The gateway's own checks come back as RetCode errors.
    let mut bad_disks = page_example.clone();
    bad_disks["Disks"] = json!([{"IsBoot": "false", "Size": 200, "Type": "CLOUD_SSD"}]);
    let refused = sdk("CreateCompShareInstance", bad_disks).await;
    assert_eq!(refused["error"]["code"], 230, "{refused}");

    let zones = sdk("describe_comp_share_support_zone", json!({})).await;
    let zone_info = zones["response"]["ZoneInfo"].as_array().unwrap();
    assert!(
        zone_info.contains(
            &json!({"Region": "cn-wlcb", "Zone": "cn-wlcb-01", "RegionId": 1000002,
                                   "ZoneId": 2001, "Describe": "cn-wlcb-01"})
        ),
        "{zones}"
    );
    assert!(zone_info.iter().any(|z| z["Zone"] == "cn-sh2-02"));

    h.wait_for_as(&demo, &first, "Running").await;
    h.wait_for_as(&demo, &second, "Running").await;
    let target = |id: &str| json!({"Zone": zone, "UHostId": id});

    let stopped = sdk("stop_comp_share_instance", target(&first)).await;
    assert_eq!(stopped["response"], json!({"UHostId": first}));
    assert_eq!(h.find_as(&demo, &first).await.unwrap().state, "Stopping");
    let wrong = sdk("start_comp_share_instance", target(&second)).await;
    assert_eq!(wrong["error"]["type"], "RetCodeException");
    assert_eq!(wrong["error"]["code"], 8041);
    assert_eq!(
        wrong["error"]["message"],
        format!("UHost [{second}] is Running: StartCompShareInstance needs it Stopped")
    );

    // The scheduled stop: the SDK's name for the time is StopTime.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    let scheduled = sdk(
        "update_comp_share_stop_scheduler",
        json!({"Zone": zone, "UHostId": second, "StopTime": at}),
    )
    .await;
    assert_eq!(scheduled["response"], json!({}), "{scheduled}");
    assert_eq!(
        h.find_as(&demo, &second).await.unwrap().stop_scheduler_time,
        Some(at)
    );
    let deleted = sdk(
        "delete_comp_share_stop_scheduler",
        json!({"Zone": zone, "UHostId": second}),
    )
    .await;
    assert_eq!(deleted["response"], json!({}), "{deleted}");
    assert_eq!(
        h.find_as(&demo, &second).await.unwrap().stop_scheduler_time,
        None
    );

    let rebooted = sdk("reboot_comp_share_instance", target(&second)).await;
    assert_eq!(rebooted["response"], json!({"UHostId": second}));
    h.wait_for_as(&demo, &second, "Running").await;

    // The operation lock, as the SDK reports it.
    h.admin
        .lock_instance(&second, Duration::from_secs(60))
        .await
        .unwrap();
    let locked = sdk("stop_comp_share_instance", target(&second)).await;
    assert_eq!(locked["error"]["code"], 8040);
    assert!(
        locked["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(OPERATION_IN_PROGRESS),
        "{locked}"
    );
    h.admin.unlock_instance(&second).await.unwrap();

    // Terminate: the typed method reads UHostId; the raw answer says where the machine went.
    h.wait_for_as(&demo, &first, "Stopped").await;
    let terminated = sdk("terminate_comp_share_instance", target(&first)).await;
    assert_eq!(terminated["response"], json!({"UHostId": first}));
    assert!(h.find_as(&demo, &first).await.is_none());
    let stopped = sdk("StopCompShareInstance", target(&second)).await;
    assert_eq!(stopped["response"]["UHostId"], second.as_str());
    h.wait_for_as(&demo, &second, "Stopped").await;
    let terminated = sdk(
        "TerminateCompShareInstance",
        json!({"Zone": zone, "UHostId": second, "ReleaseUDisk": true}),
    )
    .await;
    assert_eq!(
        terminated["response"],
        json!({"Action": "TerminateCompShareInstanceResponse", "RetCode": 0,
               "UHostId": second, "InRecycle": "Yes"})
    );

    // The fixture's stopped A800 in cn-wlcb-02 starts.
    let started = sdk(
        "start_comp_share_instance",
        json!({"Zone": "cn-wlcb-02", "UHostId": "uhost-9c0d1e2f"}),
    )
    .await;
    assert_eq!(started["response"], json!({"UHostId": "uhost-9c0d1e2f"}));
    h.wait_for_as(&demo, "uhost-9c0d1e2f", "Running").await;

    let counters = h.admin.counters().await.unwrap();
    assert_eq!(counters.calls(CREATE_ACTION), 3);
    // Three creates (one refused) and ten more changes; nothing retried.
    assert_eq!(counters.mutating_calls(), 13);
}
