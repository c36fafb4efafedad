use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::node::{self, Machine, NODE_NAME};
use crate::process::{Processes, component_error};
use crate::{Component, Error, IoContext, kubeconfig};

/// How long a component may take to get ready. Generous because tests start control planes in
/// parallel on small machines; an unloaded kube-apiserver is ready in about 3 seconds.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Requested lifetime of ServiceAccount tokens: longer than any test run.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 24 * 60 * 60;

/// Answered once kube-apiserver serves, has created the default namespace and has bootstrapped
/// RBAC (the last two are what tests and the operator's own RBAC build on).
const SERVING_PROBES: &[&str] = &[
    "/readyz",
    "/api/v1/namespaces/default",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:discovery",
];
/// Created by the controller manager's serviceaccount controller once its controllers run.
const CONTROLLER_MANAGER_PROBES: &[&str] = &["/api/v1/namespaces/default/serviceaccounts/default"];

const ADMIN: &str = "admin";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

// Files in the control plane's directory.
const ETCD_DATA: &str = "etcd";
const CERT_DIR: &str = "certs";
/// Where kube-apiserver writes its self-signed serving certificate (the `apiserver` pair in
/// `--cert-dir`).
const SERVING_CERT: &str = "certs/apiserver.crt";
/// The serving CA alone, for kube-controller-manager's `--root-ca-file`, which puts it into
/// ServiceAccount token Secrets.
const CA_CERT: &str = "ca.crt";
const TOKENS: &str = "tokens.csv";
const SIGNING_KEY: &str = "service-account.key";
/// The public half, separately: `--service-account-key-file` takes ECDSA keys only as public keys
/// or SEC1, not as the PKCS#8 that the private key is in.
const VERIFICATION_KEY: &str = "service-account.pub";
const ADMIN_KUBECONFIG: &str = "kubeconfig";
/// kube-apiserver's client certificate for the kubelet's API (logs, exec), and its key.
const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";
/// The users the node's components authenticate as (tokens; bound by the apiserver's bootstrap
/// RBAC policy and, for the kubelet, the Node authorizer).
const NODE_USERS: &[(&str, &str)] = &[
    ("kubelet", "system:nodes"),
    ("kube-proxy", ""),
    ("kube-scheduler", ""),
];
const KUBECTL_CACHE: &str = "kubectl-cache";

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also run kube-controller-manager, for garbage collection of owned objects, namespace
    /// deletion and ServiceAccount tokens.
    pub controller_manager: bool,
    /// The control plane's directory (state, logs, kubeconfigs). It must be empty or absent. Like
    /// the default, a new temporary directory, it is removed at the stop unless
    /// `COMPSHARE_TESTBED_KEEP=1`.
    pub dir: Option<PathBuf>,
    /// Where the binaries are. Default: [`binaries()`](crate::binaries).
    pub bin_dir: Option<PathBuf>,
    /// Also run a real node on this machine (containerd, kubelet, kube-proxy, kube-scheduler,
    /// and kube-controller-manager with all its controllers), so that Deployments run. Needs root
    /// and Debian packages ([`node_missing_prerequisites`](crate::node_missing_prerequisites));
    /// one per machine. kube-apiserver then listens on the machine's own address, which pods
    /// reach through the `kubernetes` Service. Everything it changes on the machine is restored
    /// at the stop.
    pub node: bool,
}

/// etcd, kube-apiserver and optionally kube-controller-manager, running until this is dropped.
///
/// The processes do not belong to any thread or async runtime, so one control plane can serve
/// many tests, each with its own runtime; [`client`](Self::client) makes a client for the
/// caller's runtime.
pub struct ControlPlane {
    // Dropped in this order: the processes stop, the machine is restored (mounts below the
    // directory are gone), then the directory is removed.
    processes: Mutex<Processes>,
    machine: Option<Machine>,
    layout: Layout,
    ca_pem: String,
    kube_config: kube::Config,
}

impl ControlPlane {
    /// Starts a control plane and waits until it is ready. This takes a few seconds; it blocks,
    /// which is fine in a test, also in an async one.
    pub fn start(options: Options) -> Result<Self, Error> {
        let bin_dir = match options.bin_dir {
            Some(dir) => dir,
            None => crate::binaries()?,
        };
        let node = if options.node {
            Some(node::machine_address()?)
        } else {
            None
        };
        let dir = OwnedDir::create(options.dir)?;
        let layout = Layout {
            node: node.map(|address| node::Paths::new(&dir.0, address)),
            dir,
            bin_dir,
            ports: Ports::pick().context(|| "find free ports".into())?,
        };
        // Before anything runs: it cleans up after a killed run, then saves the machine's state.
        let machine = match &layout.node {
            Some(_) => Some(Machine::take()?),
            None => None,
        };
        let admin_token = random_token();
        let mut tokens = format!("{admin_token},{ADMIN},{ADMIN},\"system:masters\"\n");
        let mut node_tokens = Vec::new();
        if let Some(node) = &layout.node {
            node.write_configuration()?;
            layout.write_kubelet_client_certificates(node)?;
            for (user, group) in NODE_USERS {
                let name = match *user {
                    "kubelet" => format!("system:node:{NODE_NAME}"),
                    other => format!("system:{other}"),
                };
                let token = random_token();
                tokens.push_str(&format!("{token},{name},{name},\"{group}\"\n"));
                node_tokens.push((node.kubeconfig(user), name, token));
            }
        }
        layout.write(TOKENS, tokens)?;
        let signing_key = rcgen::KeyPair::generate()?;
        layout.write(SIGNING_KEY, signing_key.serialize_pem())?;
        layout.write(VERIFICATION_KEY, signing_key.public_key_pem())?;

        // Declared after `layout` and `machine`, so dropped before them when the start fails:
        // the processes stop before the machine is restored and their directory is removed.
        let processes = Mutex::new(Processes::default());
        launch(
            &processes,
            &layout,
            &[Component::Etcd, Component::ApiServer],
        )?;
        let (ca_pem, kube_config) = block_on(async || {
            let serving_cert = layout.path(SERVING_CERT);
            let ca_pem = wait_for(
                &processes,
                &layout,
                Component::ApiServer,
                "write its serving certificate",
                async || read_serving_ca(&serving_cert),
            )
            .await?;
            let kubeconfig = kubeconfig::write(
                &layout.path(ADMIN_KUBECONFIG),
                &layout.server_url(),
                &ca_pem,
                ADMIN,
                admin_token,
            )?;
            for (path, user, token) in node_tokens {
                kubeconfig::write(&path, &layout.server_url(), &ca_pem, &user, token)?;
            }
            Ok((ca_pem, kubeconfig::config(kubeconfig).await?))
        })?;
        layout.write(CA_CERT, &ca_pem)?;

        let control_plane = ControlPlane {
            processes,
            machine,
            layout,
            ca_pem,
            kube_config,
        };
        control_plane.wait_until_serving()?;
        if options.controller_manager || options.node {
            control_plane.start_controller_manager()?;
        }
        if options.node {
            control_plane.start_node()?;
        }
        Ok(control_plane)
    }

    /// The control plane of this test process, with the controller manager, started by the first
    /// caller. Give each test its own namespace ([`create_namespace`](Self::create_namespace)).
    ///
    /// It is stopped and its directory removed when the process exits; when the process is
    /// killed, its children die with it.
    ///
    /// # Panics
    ///
    /// If it does not start, in every test that asks for it.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(control_plane)) = SHARED.get() {
                control_plane.shut_down();
            }
        }
        let started = SHARED.get_or_init(|| {
            let started = ControlPlane::start(Options {
                controller_manager: true,
                ..Options::default()
            });
            if started.is_ok() {
                // Statics are never dropped; without this its directory would outlive the run.
                // SAFETY: registers a plain function; failure only means the directory is left.
                unsafe { libc::atexit(stop_shared) };
            }
            started.map_err(|error| error.to_string())
        });
        match started {
            Ok(control_plane) => control_plane,
            Err(error) => panic!("the shared control plane did not start: {error}"),
        }
    }

    /// The admin kubeconfig (a token in group `system:masters`, server certificate verified).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.layout.path(ADMIN_KUBECONFIG)
    }

    /// `https://<address>:<port>` of kube-apiserver: 127.0.0.1, or the machine's own address
    /// with a node.
    pub fn server_url(&self) -> String {
        self.layout.server_url()
    }

    /// Where the binaries are, `kubectl` among them.
    pub fn bin_dir(&self) -> &Path {
        &self.layout.bin_dir
    }

    /// With a node ([`Options::node`]): the machine address the apiserver and the node use
    /// (pods reach it, and servers a test starts on it), and containerd's socket (for `ctr
    /// --address`, or `CONTAINERD_ADDRESS`).
    pub fn node(&self) -> Option<(Ipv4Addr, PathBuf)> {
        self.layout
            .node
            .as_ref()
            .map(|node| (node.address, node.containerd_socket()))
    }

    /// The control plane's directory: state, kubeconfigs, and the components' logs
    /// (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`, and a node's).
    pub fn dir(&self) -> &Path {
        &self.layout.dir.0
    }

    /// A new admin client. It belongs to the caller's runtime; don't keep it across tests.
    pub async fn client(&self) -> Client {
        Client::try_from(self.kube_config.clone())
            .expect("the kubeconfig that served the readiness checks makes a client")
    }

    /// Runs kubectl as the admin and waits for it.
    ///
    /// # Panics
    ///
    /// If kubectl cannot be started.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(self.layout.bin_dir.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig_path())
            // Ports are reused between control planes; a shared discovery cache would mix them up.
            .env("KUBECACHEDIR", self.layout.path(KUBECTL_CACHE))
            .output()
            .unwrap_or_else(|error| panic!("cannot run kubectl: {error}"))
    }

    /// Writes a kubeconfig that authenticates as the ServiceAccount `namespace/name` (which must
    /// exist), with a token from the TokenRequest API, and returns its path. It can do exactly
    /// what RBAC grants that ServiceAccount.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        let service_accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = service_accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .map(|status| status.token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Error::NoToken(format!("{namespace}/{name}")))?;
        // Namespace names cannot contain dots, so this file name is unique per ServiceAccount.
        let path = self.layout.path(&format!("{namespace}.{name}.kubeconfig"));
        kubeconfig::write(
            &path,
            &self.layout.server_url(),
            &self.ca_pem,
            &format!("system:serviceaccount:{namespace}:{name}"),
            token,
        )?;
        Ok(path)
    }

    /// Creates a namespace named `<prefix>-<random suffix>` and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, Error> {
        let namespaces: Api<Namespace> = Api::all(self.client().await);
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Ok(namespaces
            .create(&PostParams::default(), &namespace)
            .await?
            .name_any())
    }

    /// The process id of `component`, while it runs (for measuring what it costs).
    pub fn pid(&self, component: Component) -> Option<u32> {
        self.lock().pid(component)
    }

    /// Stops kube-apiserver and etcd, keeping their data; clients see connections refused until
    /// [`start_apiserver`](Self::start_apiserver).
    pub fn stop_apiserver(&self) {
        self.lock().stop(&[Component::ApiServer, Component::Etcd]);
    }

    /// Starts kube-apiserver and etcd again, on the same ports with the same data and
    /// certificates, and waits until they serve.
    pub fn start_apiserver(&self) -> Result<(), Error> {
        launch(
            &self.processes,
            &self.layout,
            &[Component::Etcd, Component::ApiServer],
        )?;
        self.wait_until_serving()
    }

    /// [`stop_apiserver`](Self::stop_apiserver), then [`start_apiserver`](Self::start_apiserver).
    pub fn restart_apiserver(&self) -> Result<(), Error> {
        self.stop_apiserver();
        self.start_apiserver()
    }

    /// Stops every component (SIGTERM, then SIGKILL after a grace period) and removes the
    /// directory unless `COMPSHARE_TESTBED_KEEP=1`. Dropping does the same.
    pub fn stop(self) {
        drop(self);
    }

    fn shut_down(&self) {
        self.lock().stop_everything();
        if let Some(machine) = &self.machine {
            machine.release();
        }
        self.layout.dir.remove();
    }

    /// containerd (with the pause image), the kubelet (until its Node is Ready), kube-proxy
    /// (until it has written its rules) and kube-scheduler.
    fn start_node(&self) -> Result<(), Error> {
        let node = self.layout.node.as_ref().expect("only with a node");
        let wait = |component, goal: &str, check: &(dyn Fn() -> Result<(), String> + Sync)| {
            block_on(async || {
                wait_for(&self.processes, &self.layout, component, goal, async || {
                    check()
                })
                .await
            })
        };
        launch(&self.processes, &self.layout, &[Component::Containerd])?;
        let socket = node.containerd_socket();
        wait(Component::Containerd, "serve", &|| {
            node::containerd_serves(&socket)
        })?;
        node.import_pause_image().map_err(Error::Node)?;
        launch(&self.processes, &self.layout, &[Component::Kubelet])?;
        block_on(async || {
            let nodes: Api<Node> = Api::all(self.client().await);
            wait_for(
                &self.processes,
                &self.layout,
                Component::Kubelet,
                "register a Ready node",
                async || node_ready(&nodes).await,
            )
            .await
        })?;
        launch(&self.processes, &self.layout, &[Component::KubeProxy])?;
        wait(Component::KubeProxy, "write its rules", &|| {
            node::healthy(Component::KubeProxy)
        })?;
        launch(&self.processes, &self.layout, &[Component::Scheduler])?;
        Ok(())
    }

    fn start_controller_manager(&self) -> Result<(), Error> {
        launch(
            &self.processes,
            &self.layout,
            &[Component::ControllerManager],
        )?;
        self.wait_for_probes(Component::ControllerManager, CONTROLLER_MANAGER_PROBES)
    }

    fn wait_until_serving(&self) -> Result<(), Error> {
        self.wait_for_probes(Component::ApiServer, SERVING_PROBES)
    }

    fn wait_for_probes(&self, component: Component, paths: &[&str]) -> Result<(), Error> {
        block_on(async || {
            let client = self.client().await;
            wait_for(
                &self.processes,
                &self.layout,
                component,
                "get ready",
                async || probe(&client, paths).await,
            )
            .await
        })
    }

    fn lock(&self) -> MutexGuard<'_, Processes> {
        lock(&self.processes)
    }
}

fn lock(processes: &Mutex<Processes>) -> MutexGuard<'_, Processes> {
    // A panicking test must not take the control plane down for the others.
    processes.lock().unwrap_or_else(PoisonError::into_inner)
}

fn launch(
    processes: &Mutex<Processes>,
    layout: &Layout,
    components: &[Component],
) -> Result<(), Error> {
    let mut processes = lock(processes);
    for &component in components {
        processes.launch(component, layout.command(component), &layout.log(component))?;
    }
    Ok(())
}

/// Retries `attempt` until it succeeds, failing early with the log of any component that exits
/// meanwhile, and with the log of `component` when it takes too long.
async fn wait_for<T>(
    processes: &Mutex<Processes>,
    layout: &Layout,
    component: Component,
    goal: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, Error> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        lock(processes).ensure_running()?;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                let problem = format!(
                    "did not {goal} within {}s; last attempt: {last}",
                    START_TIMEOUT.as_secs()
                );
                return Err(component_error(component, &layout.log(component), problem));
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

async fn node_ready(nodes: &Api<Node>) -> Result<(), String> {
    let node = nodes
        .get_opt(NODE_NAME)
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("no Node {NODE_NAME} yet"))?;
    let ready = node
        .status
        .and_then(|status| status.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|condition| condition.type_ == "Ready");
    match ready {
        Some(condition) if condition.status == "True" => Ok(()),
        Some(condition) => Err(format!(
            "Node {NODE_NAME} is not Ready: {}",
            condition.message.unwrap_or_default()
        )),
        None => Err(format!("Node {NODE_NAME} reports no Ready condition yet")),
    }
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn probe(client: &Client, paths: &[&str]) -> Result<(), String> {
    for path in paths {
        let request = http::Request::get(*path)
            .body(Vec::new())
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(PROBE_TIMEOUT, client.request_text(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("GET {path}: {error}")),
            Err(_) => return Err(format!("GET {path}: no answer within {PROBE_TIMEOUT:?}")),
        }
    }
    Ok(())
}

/// The CA of kube-apiserver's self-signed serving certificate. With `--cert-dir` and no
/// `--tls-cert-file`, kube-apiserver generates a CA and a serving certificate signed by it, and
/// writes both to `apiserver.crt`, serving certificate first (`GenerateSelfSignedCertKey` in
/// k8s.io/client-go/util/cert). It reuses that pair when restarted on the same directory.
fn read_serving_ca(cert_file: &Path) -> Result<String, String> {
    let bundle =
        fs::read(cert_file).map_err(|error| format!("{}: {error}", cert_file.display()))?;
    let blocks =
        pem::parse_many(&bundle).map_err(|error| format!("{}: {error}", cert_file.display()))?;
    match blocks.as_slice() {
        [_serving, ca] => Ok(pem::encode_config(
            ca,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )),
        // Read while kube-apiserver was still writing it.
        _ => Err(format!(
            "{} does not hold a certificate and its CA yet",
            cert_file.display()
        )),
    }
}

/// Runs `task` on a runtime of its own in a thread of its own, so that it works from plain
/// threads and from inside a test's runtime (where blocking on another runtime panics), and
/// nothing it creates is tied to a test's runtime.
fn block_on<T: Send>(task: impl AsyncFnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context(|| "start a Tokio runtime".into())?;
                runtime.block_on(task())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where a control plane's files are and how its components reach each other.
struct Layout {
    dir: OwnedDir,
    bin_dir: PathBuf,
    ports: Ports,
    node: Option<node::Paths>,
}

impl Layout {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn log(&self, component: Component) -> PathBuf {
        self.path(&format!("{component}.log"))
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<(), Error> {
        let path = self.path(name);
        fs::write(&path, contents).context(|| format!("write {}", path.display()))
    }

    fn server_url(&self) -> String {
        format!("https://{}:{}", self.address(), self.ports.apiserver)
    }

    /// Where kube-apiserver listens: loopback, or with a node the machine's address (a node's
    /// address cannot be loopback, and pods reach the apiserver there).
    fn address(&self) -> Ipv4Addr {
        self.node
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |node| node.address)
    }

    /// A CA for the kubelet's API, and kube-apiserver's client certificate signed by it (in
    /// `system:masters`, which the kubelet's AlwaysAllow authorization does not need but logs).
    fn write_kubelet_client_certificates(&self, node: &node::Paths) -> Result<(), Error> {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            "compshare-testbed-kubelet-client-ca",
        );
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate()?)?;
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        client
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = rcgen::KeyPair::generate()?;
        let client = client.signed_by(&client_key, &ca)?;
        let ca_path = node.kubelet_client_ca();
        fs::write(&ca_path, ca.pem()).context(|| format!("write {}", ca_path.display()))?;
        self.write(KUBELET_CLIENT_CERT, client.pem())?;
        self.write(KUBELET_CLIENT_KEY, client_key.serialize_pem())
    }

    fn command(&self, component: Component) -> Command {
        if let Some(node) = &self.node
            && component > Component::ControllerManager
        {
            return node.command(component, &self.bin_dir);
        }
        let mut command = Command::new(self.bin_dir.join(component.binary()));
        let path_flag = |flag: &str, name: &str| {
            let mut arg = OsString::from(format!("--{flag}="));
            arg.push(self.path(name));
            arg
        };
        let Ports {
            etcd_client,
            etcd_peer,
            apiserver,
        } = self.ports;
        match component {
            Component::Etcd => command
                .args([
                    "--name=testbed".to_owned(),
                    format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                    format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                    format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                    format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                    format!("--initial-cluster=testbed=http://127.0.0.1:{etcd_peer}"),
                    // The data is thrown away after the test; fsync would dominate write latency.
                    "--unsafe-no-fsync".to_owned(),
                    "--log-level=warn".to_owned(),
                ])
                .arg(path_flag("data-dir", ETCD_DATA)),
            Component::ApiServer => {
                let address = self.address();
                command
                    .args([
                        format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                        format!("--bind-address={address}"),
                        format!("--secure-port={apiserver}"),
                        // Without it, kube-apiserver advertises the host's default-route address,
                        // which a sandbox may not have. Its self-signed serving certificate
                        // names this address and the `kubernetes` Service's.
                        format!("--advertise-address={address}"),
                        format!(
                            "--authorization-mode={}",
                            if self.node.is_some() {
                                "Node,RBAC"
                            } else {
                                "RBAC"
                            }
                        ),
                        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                        format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
                        format!(
                            "--service-cluster-ip-range={}",
                            if self.node.is_some() {
                                node::SERVICE_RANGE
                            } else {
                                "10.0.0.0/24"
                            }
                        ),
                        // Nothing to be fair about with a handful of test clients; saves start
                        // time.
                        "--enable-priority-and-fairness=false".to_owned(),
                        "--profiling=false".to_owned(),
                    ])
                    .args([
                        path_flag("cert-dir", CERT_DIR),
                        path_flag("token-auth-file", TOKENS),
                        path_flag("service-account-key-file", VERIFICATION_KEY),
                        path_flag("service-account-signing-key-file", SIGNING_KEY),
                    ]);
                if self.node.is_some() {
                    // The default endpoint reconciler publishes the machine's address as the
                    // `kubernetes` Service's endpoint; the kubelet's API is reached by address
                    // (there is no DNS for the node's name).
                    command
                        .args([
                            "--allow-privileged=true",
                            "--kubelet-preferred-address-types=InternalIP,Hostname",
                        ])
                        .arg(path_flag("kubelet-client-certificate", KUBELET_CLIENT_CERT))
                        .arg(path_flag("kubelet-client-key", KUBELET_CLIENT_KEY))
                } else {
                    // Endpoints must not hold loopback addresses, and nothing routes to the
                    // `kubernetes` Service here anyway.
                    command.arg("--endpoint-reconciler-type=none")
                }
            }
            Component::ControllerManager => {
                command
                    .args([
                        "--leader-elect=false",
                        // Readiness is observed through the API; no port to pick.
                        "--secure-port=0",
                    ])
                    .args([
                        path_flag("kubeconfig", ADMIN_KUBECONFIG),
                        path_flag("service-account-private-key-file", SIGNING_KEY),
                        path_flag("root-ca-file", CA_CERT),
                    ]);
                // With a node, every default controller: Deployments, ReplicaSets, endpoints,
                // the `kube-root-ca.crt` ConfigMaps pods mount, node lifecycle.
                if self.node.is_none() {
                    command.arg(
                        "--controllers=garbage-collector-controller,namespace-controller,\
                         serviceaccount-controller,serviceaccount-token-controller,\
                         clusterrole-aggregation-controller",
                    )
                } else {
                    &mut command
                }
            }
            node_component => unreachable!("{node_component} runs only with a node"),
        };
        command
    }
}

#[derive(Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

impl Ports {
    /// Ports that are free now. The listeners are held until all are picked, so they differ.
    fn pick() -> io::Result<Self> {
        let listen = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
        let (etcd_client, etcd_peer, apiserver) = (listen()?, listen()?, listen()?);
        Ok(Ports {
            etcd_client: etcd_client.local_addr()?.port(),
            etcd_peer: etcd_peer.local_addr()?.port(),
            apiserver: apiserver.local_addr()?.port(),
        })
    }
}

/// The control plane's directory, removed on drop unless `COMPSHARE_TESTBED_KEEP=1`.
struct OwnedDir(PathBuf);

impl OwnedDir {
    fn create(requested: Option<PathBuf>) -> Result<Self, Error> {
        let Some(dir) = requested else {
            let dir = tempfile::Builder::new()
                .prefix("compshare-testbed-")
                .tempdir()
                .context(|| "create a temporary directory".into())?;
            return Ok(OwnedDir(dir.keep()));
        };
        // The components run with other working directories than a relative path assumes.
        let dir = std::path::absolute(&dir).context(|| format!("resolve {}", dir.display()))?;
        fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let mut entries = fs::read_dir(&dir).context(|| format!("read {}", dir.display()))?;
        if entries.next().is_some() {
            return Err(Error::DirectoryNotEmpty(dir));
        }
        Ok(OwnedDir(dir))
    }

    fn remove(&self) {
        if std::env::var_os("COMPSHARE_TESTBED_KEEP").is_some_and(|keep| keep == "1") {
            eprintln!("compshare-testbed: kept {}", self.0.display());
        } else if let Err(error) = fs::remove_dir_all(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            eprintln!(
                "compshare-testbed: cannot remove {}: {error}",
                self.0.display()
            );
        }
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        self.remove();
    }
}
