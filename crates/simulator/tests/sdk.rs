//! The simulator, started in-process, seen through the project's own client, raw HTTP and the
//! vendor's official Python SDK.

use std::process::Command;
use std::time::Duration;

use compshare_api::signing::{self, Params};
use compshare_api::{
    CallError, Client, ClientConfig, Credentials, DescribeRequest, DescribeResponse, Disposition,
};
use compshare_api::{DESCRIBE_ACTION, REQUEST_ID_HEADER};
use compshare_simulator::{AdminClient, AdminClientError, Fixture, Simulator, SimulatorHandle};
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
    assert!(matches!(after, Err(CallError::Transport(_))), "{after:?}");
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
    let args = [python, endpoint, private_key, action].map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let [python, endpoint, private_key, action] = args;
        run_sdk_script(&python, &endpoint, &private_key, &action, params)
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
) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/describe.py");
    let output = Command::new(python)
        .args([
            script,
            endpoint,
            DEMO_PUBLIC_KEY,
            private_key,
            action,
            &params.to_string(),
        ])
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
