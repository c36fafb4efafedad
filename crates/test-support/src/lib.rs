//! What the integration tests of compshare-operator and its benchmark share: a namespace on the
//! test bed's real control plane, a simulator with a fixture of the test's own (driven through its
//! typed admin client), and the operator binary started as a process against both.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use compshare_operator::resource::CompShareInstance;
use compshare_simulator::{AdminClient, Counters, Fixture, Simulator, SimulatorHandle};
use compshare_testbed::{ControlPlane, Daemon};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

pub mod chart;

/// The key pair of the account every test fixture holds.
pub const PUBLIC_KEY: &str = "test-public-key";
pub const PRIVATE_KEY: &str = "test-private-key-0123456789abcdef";

/// One test's world: its namespace (the operations on which it offers through [`Namespace`]),
/// its simulator, a place for logs.
///
/// A bed is observe-only unless the test says otherwise ([`Bed::allow_state_changes`]): when it is
/// dropped at the end of a passing test, its simulator must have received no state-changing call
/// (create, start, stop, terminate, …) in its whole life.
pub struct Bed {
    namespace: Namespace,
    pub simulator: SimulatorHandle,
    logs: tempfile::TempDir,
    state_changes_allowed: std::sync::atomic::AtomicBool,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking()
            || self
                .state_changes_allowed
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let calls = self.simulator.lifetime_counters().mutating_calls();
        assert_eq!(
            calls, 0,
            "{}: an observe-only test made {calls} state-changing calls",
            self.namespace.namespace
        );
    }
}

impl std::ops::Deref for Bed {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}

/// A namespace of the control plane, and the test's simulator.
pub struct Namespace {
    pub control_plane: &'static ControlPlane,
    pub namespace: String,
    pub client: kube::Client,
    /// The simulator's admin interface.
    pub simulator_admin: AdminClient,
}

impl Bed {
    /// A fresh namespace on this binary's shared control plane (with the CRD installed) and a
    /// simulator serving `instances` for the test account.
    pub async fn new(name: &str, instances: Vec<Value>) -> Bed {
        Bed::with_fixture(name, fixture(instances)).await
    }

    /// Like [`Bed::new`], with a fixture of the test's own (several accounts, say).
    pub async fn with_fixture(name: &str, fixture: Fixture) -> Bed {
        let control_plane = ControlPlane::shared();
        install_crd(control_plane).await;
        let namespace = control_plane
            .create_namespace(name)
            .await
            .expect("namespace");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let simulator = Simulator::start(listener, fixture);
        Bed {
            namespace: Namespace {
                control_plane,
                namespace,
                client: control_plane.client().await,
                simulator_admin: AdminClient::new(&simulator.endpoint()),
            },
            simulator,
            logs: tempfile::Builder::new()
                .prefix(&format!("{name}-logs-"))
                .tempdir()
                .unwrap(),
            state_changes_allowed: false.into(),
        }
    }

    /// This test manages machines: state-changing calls are expected.
    pub fn allow_state_changes(&self) {
        self.state_changes_allowed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The same helpers for another namespace.
    pub fn view(&self, namespace: &str) -> Namespace {
        Namespace {
            control_plane: self.control_plane,
            namespace: namespace.to_owned(),
            client: self.client.clone(),
            simulator_admin: self.simulator_admin.clone(),
        }
    }

    /// The operator for this namespace, against this simulator.
    pub fn operator(&self) -> OperatorBuilder {
        OperatorBuilder::new(
            &self.simulator.endpoint(),
            &self.control_plane.kubeconfig_path(),
            self.logs.path(),
        )
        .namespace(&self.namespace.namespace)
    }
}

impl Namespace {
    pub fn instances(&self) -> Api<CompShareInstance> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A credentials Secret with the test account's keys.
    pub async fn credentials(&self, name: &str) {
        self.secret(
            name,
            &[("publicKey", PUBLIC_KEY), ("privateKey", PRIVATE_KEY)],
        )
        .await;
    }

    pub async fn secret(&self, name: &str, entries: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name}, "stringData": data,
        }))
        .unwrap();
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("secret");
    }

    /// Creates a CompShareInstance with this spec.
    pub async fn create(&self, name: &str, spec: Value) -> CompShareInstance {
        let object: CompShareInstance = serde_json::from_value(json!({
            "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.instances()
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// Creates each spec as an untyped resource (the typed spec cannot hold most bad input) and
    /// asserts that admission refuses it with a message containing the expected text.
    pub async fn assert_refused<'a>(&self, cases: impl IntoIterator<Item = (Value, &'a str)>) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &CompShareInstance::api_resource(),
        );
        for (i, (spec, expected)) in cases.into_iter().enumerate() {
            let object = serde_json::from_value(json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
                "metadata": {"name": format!("bad-{i}")}, "spec": spec,
            }))
            .unwrap();
            let error = api
                .create(&PostParams::default(), &object)
                .await
                .expect_err(&format!("{spec} must be rejected"));
            assert!(
                error.to_string().contains(expected),
                "{spec}: {error} lacks {expected:?}"
            );
        }
    }

    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.instances()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    pub async fn get(&self, name: &str) -> CompShareInstance {
        self.instances().get(name).await.expect("get")
    }

    /// Waits until `name` satisfies `condition`, panicking with its last status after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&CompShareInstance) -> bool,
    ) -> CompShareInstance {
        poll_until(timeout, async || {
            match self.instances().get_opt(name).await.expect("get") {
                Some(current) if condition(&current) => Ok(current),
                current => Err(current),
            }
        })
        .await
        .unwrap_or_else(|last| {
            panic!(
                "{name}: not {what} after {timeout:?}; status: {}",
                serde_json::to_string_pretty(&last.and_then(|c| c.status)).unwrap()
            )
        })
    }

    /// Waits until every one of `names` is `Synced=True`.
    pub async fn wait_all_synced(
        &self,
        names: impl IntoIterator<Item = String>,
        timeout: Duration,
    ) {
        for name in names {
            self.wait_for(&name, "synced", timeout, is_synced).await;
        }
    }

    /// Events about `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Waits until the reasons of the events about `name` are exactly `expected`. The operator
    /// publishes an event after the status write that caused it, so a test that has just seen
    /// the status must give the event a moment to arrive.
    pub async fn wait_for_event_reasons(&self, name: &str, expected: &[&str], timeout: Duration) {
        poll_until(timeout, async || {
            let reasons = self.event_reasons(name).await;
            if reasons == expected {
                Ok(())
            } else {
                Err(reasons)
            }
        })
        .await
        .unwrap_or_else(|reasons| {
            panic!("{name}: events {reasons:?} after {timeout:?}, expected {expected:?}")
        });
    }

    /// Changes a simulated instance by a JSON merge patch, e.g. `{"State": "Stopped"}`.
    pub async fn set_instance(&self, id: &str, patch: Value) {
        self.simulator_admin
            .patch_instance(id, patch)
            .await
            .unwrap_or_else(|e| panic!("patch {id}: {e}"));
    }

    pub async fn inject(&self, fault: Value) {
        self.simulator_admin
            .inject(fault)
            .await
            .unwrap_or_else(|e| panic!("inject a fault: {e}"));
    }

    pub async fn clear_faults(&self) {
        self.simulator_admin
            .clear_faults()
            .await
            .expect("clear the faults");
    }

    /// The simulator's counters since the last reset.
    pub async fn counters(&self) -> Counters {
        self.simulator_admin.counters().await.expect("counters")
    }

    /// Describe calls the simulator answered since the last reset, whatever their result.
    pub async fn describe_calls(&self) -> u64 {
        self.counters().await.calls(compshare_api::DESCRIBE_ACTION)
    }

    pub async fn reset_counters(&self) {
        self.simulator_admin
            .reset_counters()
            .await
            .expect("reset the counters");
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["--namespace", &self.namespace];
        all.extend_from_slice(args);
        let output = self.control_plane.kubectl(&all);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

/// The project of the account that manages machines ([`managed_fixture`]).
pub const PROJECT_ID: &str = "org-test";
/// The login password a created machine gets, from the Secret [`Bed::manage`] makes.
pub const MACHINE_PASSWORD: &str = "machine-password-42";
/// The Secret holding [`MACHINE_PASSWORD`].
pub const MACHINE_PASSWORD_SECRET: &str = "machine-password";

/// A fixture for managing machines: the test account, in project [`PROJECT_ID`], with no
/// instances and transitions of one second.
pub fn managed_fixture() -> compshare_simulator::FixtureBuilder {
    Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .project(PROJECT_ID)
        .transitions(compshare_simulator::Transitions::uniform(1000))
}

/// A spec creating a 4090 machine in cn-wlcb-01 with the namespace's credentials Secret `keys`
/// and the password Secret, kept Running.
pub fn machine_spec() -> Value {
    json!({
        "managementPolicy": "Manage",
        "region": "cn-wlcb",
        "zone": "cn-wlcb-01",
        "projectId": PROJECT_ID,
        "credentialsRef": {"name": "keys"},
        "machine": {
            "gpuType": "4090", "gpu": 1, "cpu": 16, "memoryMB": 65536,
            "imageId": "compshareImage-test",
            "disks": [{"boot": true, "type": "CLOUD_SSD", "sizeGB": 200}],
            "passwordSecretRef": {"name": MACHINE_PASSWORD_SECRET},
        },
        "powerState": "Running",
    })
}

impl Bed {
    /// Prepares this bed for managing machines: state-changing calls are expected, and the
    /// credentials Secret `keys` and the password Secret exist.
    pub async fn manage(&self) {
        self.allow_state_changes();
        self.credentials("keys").await;
        self.secret(MACHINE_PASSWORD_SECRET, &[("password", MACHINE_PASSWORD)])
            .await;
    }

    /// The operator, allowed to manage machines in this namespace.
    pub fn manager(&self) -> OperatorBuilder {
        self.operator()
            .arg("--management-namespaces")
            .arg(self.namespace.namespace.clone())
    }
}

impl Namespace {
    /// The simulator's machines bearing the mark of the resource with `uid` (its `Remark`).
    pub async fn machines_of(&self, uid: &str) -> Vec<serde_json::Map<String, Value>> {
        self.simulator_admin
            .instances()
            .await
            .expect("instances")
            .into_iter()
            .filter(|i| {
                i.get("Remark")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.ends_with(&format!(" uid={uid}")))
            })
            .collect()
    }

    /// Waits until the simulator holds a machine bearing the mark of the resource with `uid`.
    pub async fn until_machine_of(&self, uid: &str, timeout: Duration) {
        poll_until(timeout, async || {
            if self.machines_of(uid).await.is_empty() {
                Err(())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_or_else(|()| panic!("no machine of {uid} reached the simulator in {timeout:?}"));
    }

    /// The simulator's machines, all of them.
    pub async fn machine_count(&self) -> usize {
        self.simulator_admin
            .instances()
            .await
            .expect("instances")
            .len()
    }
}

/// A fixture with the test account and `instances` (fixture shape: the API's field names).
pub fn fixture(instances: Vec<Value>) -> Fixture {
    Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .instances(instances)
        .build()
        .expect("test fixture")
}

/// A file of the repository (the chart, the integrations, the README), read.
pub fn repo_file(path: &str) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support is two levels below the root")
        .to_owned()
}

/// The operator binary Cargo built beside the running test or benchmark (cargo builds a package's
/// binaries for its integration tests and benchmarks, into the directory above theirs). Another
/// package's tests (the kubectl plugin's) do not get it from cargo: it is built for them on first
/// use, by the cargo that built the test, into the same directory.
pub fn operator_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let test = std::env::current_exe().expect("the running test's path");
            let profile = test
                .parent()
                .and_then(Path::parent)
                .expect("tests run from <target>/<profile>/deps");
            let binary = profile.join("compshare-operator");
            if !binary.exists() {
                build_operator(profile);
            }
            assert!(binary.exists(), "{} is not built", binary.display());
            binary
        })
        .clone()
}

/// `cargo build` of the operator binary into `profile` (`<target>/<profile>`).
fn build_operator(profile: &Path) {
    let name = profile
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let target = profile.parent().expect("<target>/<profile>");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--package",
            "compshare-operator",
            "--bin",
            "compshare-operator",
        ])
        .args(["--profile", if name == "debug" { "dev" } else { name }])
        .arg("--target-dir")
        .arg(target)
        .current_dir(repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of compshare-operator failed");
}

/// A running instance with a public address and an SSH command on port 60022.
pub fn running(id: &str, ip: &str) -> Value {
    json!({
        "UHostId": id, "Name": format!("name-{id}"), "State": "Running",
        "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "InstanceType": "UHost",
        "CPU": 16, "Memory": 65536, "GPU": 2, "GpuType": "4090",
        "GraphicsMemory": {"Value": 24, "Rate": 1},
        "Password": "c2VjcmV0LXBhc3N3b3JkLTQy", // "secret-password-42"
        "SshLoginCommand": format!("ssh root@{ip} -p 60022"),
        "IPSet": [
            {"IP": ip, "Type": "Internation"},
            {"IP": "10.9.0.4", "Type": "Private"},
        ],
    })
}

/// Calls `probe` every 100 ms until it gives `Ok`; once `timeout` has passed, gives its last
/// `Err` back instead, for the caller to say what did not happen.
pub async fn poll_until<T, E>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(done) => return Ok(done),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The leader's lease in tests that fail over (`OperatorBuilder::short_lease`).
pub const SHORT_LEASE: Duration = Duration::from_secs(6);

/// The decoded password of [`running`] instances.
pub const PASSWORD: &str = "secret-password-42";

/// A spec for `id` with the test credentials Secret `keys`.
pub fn spec(id: &str) -> Value {
    json!({"uhostId": id, "region": "cn-wlcb", "credentialsRef": {"name": "keys"}, "pollInterval": "10s"})
}

pub fn condition<'a>(o: &'a CompShareInstance, type_: &str) -> Option<(&'a str, &'a str)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

pub fn message<'a>(o: &'a CompShareInstance, type_: &str) -> &'a str {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map_or("", |c| c.message.as_str())
}

/// Whether the operator reports maintaining connection Secret `name` for `o`.
pub fn maintains_secret(name: &str) -> impl Fn(&CompShareInstance) -> bool + '_ {
    move |o| {
        o.status
            .as_ref()
            .and_then(|s| s.connection_secret_name.as_deref())
            == Some(name)
    }
}

pub fn is_synced(o: &CompShareInstance) -> bool {
    condition(o, "Synced").is_some_and(|(s, _)| s == "True")
}

pub fn state(o: &CompShareInstance) -> Option<&str> {
    o.status.as_ref()?.state.as_deref()
}

/// Writes (POST, PUT, PATCH, APPLY, DELETE) the apiserver has served so far for `resource` (and
/// `subresource`, or the resource itself), by its own `apiserver_request_total`: the count the
/// operator's metrics cannot fake. (A server-side apply is counted as verb APPLY, not PATCH.)
pub async fn apiserver_writes(
    client: &kube::Client,
    resource: &str,
    subresource: Option<&str>,
) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = client
        .request_text(request)
        .await
        .expect("apiserver metrics");
    let resource = format!("resource=\"{resource}\"");
    let subresource = format!("subresource=\"{}\"", subresource.unwrap_or(""));
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(&resource) && l.contains(&subresource))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
                .iter()
                .any(|verb| l.contains(&format!("verb=\"{verb}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Applies the CRDs (CompShareInstance, CompShareDiscovery) and waits until the apiserver serves
/// them.
pub async fn install_crd(control_plane: &ControlPlane) {
    let client = control_plane.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in [
        compshare_operator::resource::crd(),
        compshare_operator::resource::discovery_crd(),
    ] {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the CRD is accepted");
        let established = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(crds.clone(), &name, established),
        )
        .await
        .expect("the CRD is established in time")
        .expect("watching the CRD");
    }
}

/// The operator binary, to be started against a simulator and a control plane.
pub struct OperatorBuilder {
    endpoint: String,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    namespace: Option<String>,
    log_filter: String,
}

impl OperatorBuilder {
    /// Watching every namespace, logging into `log_dir`.
    pub fn new(endpoint: &str, kubeconfig: &Path, log_dir: &Path) -> Self {
        OperatorBuilder {
            endpoint: endpoint.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            log_dir: log_dir.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            namespace: None,
            log_filter: "info,compshare_operator=debug".to_owned(),
        }
    }

    /// `RUST_LOG` for the operator (default: debug for the operator, info for the rest).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_owned();
        self
    }

    /// Watches only `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Runs the operator under another program (a profiler): `wrapper… compshare-operator run …`.
    pub fn wrapper(mut self, command: &[String]) -> Self {
        self.wrapper = command.to_vec();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// A lease of `SHORT_LEASE`, renewed 2 s before it expires, so that failovers fit in a test.
    pub fn short_lease(self) -> Self {
        self.arg("--lease-duration")
            .arg(format!("{}s", SHORT_LEASE.as_secs()))
            .arg("--lease-renew-before")
            .arg("2s")
    }

    /// Runs as someone else (a ServiceAccount's kubeconfig).
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = path.to_owned();
        self
    }

    /// Watches every namespace (only in a test binary of its own: it would reconcile other
    /// tests' resources).
    pub fn cluster_wide(mut self) -> Self {
        self.namespace = None;
        self
    }

    /// Starts the operator and waits until it is ready (a standby replica is ready at once).
    pub async fn start(self) -> Operator {
        let metrics = free_port();
        let log = self
            .log_dir
            .join(format!("operator-{}.log", metrics.port()));
        let binary = operator_binary();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .arg("run")
            .args(["--endpoint", &self.endpoint])
            .arg("--allow-insecure-http")
            .args(["--metrics-address", &metrics.to_string()])
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("COMPSHARE_WATCH_NAMESPACE");
        if let Some(namespace) = &self.namespace {
            command.args(["--namespace", namespace]);
        }
        let daemon = Daemon::spawn(command, &log).expect("start the operator");
        let mut operator = Operator {
            daemon,
            metrics,
            http: reqwest::Client::new(),
        };
        operator.wait_ready().await;
        operator
    }
}

/// The operator binary, running.
pub struct Operator {
    daemon: Daemon,
    metrics: SocketAddr,
    http: reqwest::Client,
}

impl Operator {
    async fn wait_ready(&mut self) {
        let url = format!("http://{}/readyz", self.metrics);
        // `Ok(false)`: it exited, so there is nothing to wait for.
        let ready = poll_until(Duration::from_secs(60), async || {
            if !self.is_running() {
                return Ok(false);
            }
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(true),
                _ => Err(()),
            }
        })
        .await;
        match ready {
            Ok(true) => {}
            Ok(false) => panic!("the operator exited:\n{}", self.logs()),
            Err(()) => panic!("the operator is not ready:\n{}", self.logs()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// SIGTERM, as Kubernetes stops a pod; how it exited.
    pub fn stop(self) -> Option<std::process::ExitStatus> {
        self.daemon.stop()
    }

    /// SIGKILL, as a crash or a lost node would end it.
    pub fn kill(self) {
        self.daemon.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.daemon.log()).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        self.http
            .get(&url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap()
    }

    /// The value of one series, e.g. `compshare_kube_writes_total{kind="status"}`; 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    /// Reconciliations that ended in an error so far.
    pub async fn failed_reconciles(&self) -> f64 {
        self.metric("compshare_reconciles_total{result=\"error\"}")
            .await
    }

    /// Asserts that no reconciliation failed, showing the operator's logs when one did.
    pub async fn assert_no_failed_reconciles(&self) {
        assert_eq!(self.failed_reconciles().await, 0.0, "{}", self.logs());
    }

    /// Status, event and Secret writes so far.
    pub async fn writes(&self) -> f64 {
        let mut total = 0.0;
        for kind in ["status", "event", "secret"] {
            total += self
                .metric(&format!("compshare_kube_writes_total{{kind=\"{kind}\"}}"))
                .await;
        }
        total
    }

    /// Waits until the `compshare_leader` gauge says whether this replica leads, panicking with
    /// its logs after `within`; returns how long that took.
    pub async fn wait_until_leading_is(&self, leading: bool, within: Duration) -> Duration {
        let started = Instant::now();
        let expected = if leading { 1.0 } else { 0.0 };
        poll_until(within, async || {
            let gauge = self.metric("compshare_leader").await;
            (gauge == expected).then_some(()).ok_or(())
        })
        .await
        .unwrap_or_else(|()| {
            panic!(
                "compshare_leader is not {expected} after {within:?}:\n{}",
                self.logs()
            )
        });
        started.elapsed()
    }

    pub async fn healthy(&self) -> bool {
        let url = format!("http://{}/healthz", self.metrics);
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
