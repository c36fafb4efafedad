//! A real node on this machine beside the control plane: containerd (Debian's), kubelet,
//! kube-proxy and kube-scheduler (built by build.sh like the control plane), so that a chart's
//! Deployment runs as it would on a cluster. What it takes, and the rules it follows, are in
//! `../shared/docs/real-node.md`; in short:
//!
//! - every address stays inside the machine: pods and Services get ranges from 198.18.0.0/15
//!   (reserved for network tests), pods have no default route and nothing is masqueraded out;
//! - the node changes machine-wide state (iptables, sysctls, cgroups, mounts, network namespaces,
//!   a bridge), so there is one per machine, guarded by a lock, and [`Machine`] saves that state
//!   before the start and restores it at the stop, also after a run that was killed (the next
//!   start finds the saved state and cleans up first).
//!
//! Needs root and Debian's `containerd`, `runc`, `containernetworking-plugins`, `iptables` and
//! `busybox-static` (for the pod sandbox's "pause" image); [`missing_prerequisites`] says which
//! are absent.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, IoContext};

/// The node's name, and the `system:node:<name>` user the kubelet authenticates as.
pub(crate) const NODE_NAME: &str = "compshare-testbed-node";
/// Pod addresses (the bridge holds the first one).
pub(crate) const POD_RANGE: &str = "198.18.0.0/24";
const POD_GATEWAY: &str = "198.18.0.1";
/// Service addresses; the first one is the `kubernetes` Service's.
pub(crate) const SERVICE_RANGE: &str = "198.19.0.0/24";
/// The bridge pods attach to, removed at the stop.
const BRIDGE: &str = "cstb0";
/// The CNI network's name (also the prefix of libcni's cached results).
const NETWORK: &str = "compshare-testbed";
/// The pod sandbox image, built from busybox-static and imported at the start.
const PAUSE_IMAGE: &str = "docker.io/compshare-testbed/pause:1";
const BUSYBOX: &str = "/bin/busybox";
/// The kubelet's and kube-proxy's health ports (machine-wide; hence one node per machine).
const KUBELET_HEALTHZ_PORT: u16 = 10248;
const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;

/// Machine-wide state saved before the start and restored at the stop.
const MACHINE_STATE: &str = "/run/compshare-testbed-node";
/// Held (flock) while a node runs: one per machine.
const MACHINE_LOCK: &str = "/run/compshare-testbed-node.lock";
/// Set by the kubelet (vm.*, kernel.*), the bridge (ip_forward) and kube-proxy.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
];
const IPTABLES: &[&str] = &["iptables", "ip6tables"];
const IPTABLES_TABLES: &[&str] = &["filter", "nat", "mangle", "raw"];
/// Where the container runtime mounts pod network namespaces (containerd 1.6: not configurable).
const NETNS_DIR: &str = "/run/netns";
/// libcni's cache of attachment results.
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// The kubelet links every container's log here (not configurable).
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
/// What marks paths this test bed owns, in mounts and the runtime's shims' arguments.
const OWNED_MARK: &str = "/compshare-testbed-";

const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What is missing for a node on this machine, in words a person can act on; empty when nothing.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (the kubelet and containerd need it)".to_owned());
    }
    for (program, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("iptables-save", "iptables"),
        ("ip", "iproute2"),
    ] {
        if which(program).is_none() {
            missing.push(format!("{program}: apt-get install {package}"));
        }
    }
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new("/usr/lib/cni").join(plugin).exists() {
            missing.push(format!(
                "/usr/lib/cni/{plugin}: apt-get install containernetworking-plugins"
            ));
        }
    }
    if !Path::new(BUSYBOX).exists() {
        missing.push(format!("{BUSYBOX}: apt-get install busybox-static"));
    }
    missing
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// The machine's own IPv4 address (the first global one): the kubelet's node address, and where
/// kube-apiserver listens so that pods reach it through the `kubernetes` Service.
pub(crate) fn machine_address() -> Result<Ipv4Addr, Error> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .context(|| "run `ip -4 addr`".into())?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip_while(|field| *field != "inet");
            fields.nth(1)?.split('/').next()?.parse().ok()
        })
        .next()
        .ok_or_else(|| Error::Node("this machine has no global IPv4 address".into()))
}

/// The node's files, all inside the control plane's directory.
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) address: Ipv4Addr,
}

impl Paths {
    pub(crate) fn new(control_plane_dir: &Path, address: Ipv4Addr) -> Self {
        Paths {
            dir: control_plane_dir.join("node"),
            address,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }

    pub(crate) fn kubelet_client_ca(&self) -> PathBuf {
        self.path("kubelet-client-ca.crt")
    }

    pub(crate) fn kubeconfig(&self, user: &str) -> PathBuf {
        self.path(&format!("{user}.kubeconfig"))
    }

    /// Writes the configuration files of containerd, the CNI network, the kubelet and
    /// kube-proxy, and the pause image.
    pub(crate) fn write_configuration(&self) -> Result<(), Error> {
        for sub in ["containerd", "cni/net.d", "kubelet", "pod-logs"] {
            let dir = self.path(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .context(|| format!("create {}", dir.display()))?;
        }
        // The control plane's directory is a private temporary one; containers' processes that
        // run as other users traverse it to reach their root filesystems.
        let mut ancestor = Some(self.dir.as_path());
        while let Some(dir) = ancestor.filter(|dir| dir.to_string_lossy().contains(OWNED_MARK)) {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .context(|| format!("open up {}", dir.display()))?;
            ancestor = dir.parent();
        }
        let dir = self.dir.display();
        let address = self.address;
        write(
            &self.path("containerd/config.toml"),
            format!(
                r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
# /opt/containerd and snapshotters this machine has no use for.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd as PID 1.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni/net.d"
"#,
                socket = self.containerd_socket().display(),
            ),
        )?;
        // No default route in pods: they reach this machine's address (the apiserver, a
        // simulator) and Services, nothing beyond.
        write(
            &self.path("cni/net.d/10-compshare-testbed.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": NETWORK,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": true,
                        "ipMasq": false,
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_RANGE, "gateway": POD_GATEWAY}]],
                            "routes": [{"dst": format!("{address}/32")}, {"dst": SERVICE_RANGE}],
                            "dataDir": format!("{dir}/cni/ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            })
            .to_string(),
        )?;
        write(
            &self.path("kubelet/config.yaml"),
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host is cgroup v1 (hybrid), without systemd, with swap.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
address: {address}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {KUBELET_HEALTHZ_PORT}
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {dir}/pod-logs
# Only kube-apiserver, with its client certificate, may use the kubelet's API.
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {client_ca}
authorization:
  mode: AlwaysAllow
# A busy shared disk must not put the node under DiskPressure.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
                socket = self.containerd_socket().display(),
                client_ca = self.kubelet_client_ca().display(),
            ),
        )?;
        write(
            &self.path("kube-proxy.yaml"),
            format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_RANGE}
clientConnection:
  kubeconfig: {kubeconfig}
healthzBindAddress: 127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["{address}/32"]
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
# Works with iptables 1.8.9 (nf_tables) here; no route_localnet.
iptables:
  localhostNodePorts: false
"#,
                kubeconfig = self.kubeconfig("kube-proxy").display(),
            ),
        )?;
        write_pause_image(&self.path("pause.tar"))
    }

    /// The command line of a node component.
    pub(crate) fn command(&self, component: crate::Component, bin_dir: &Path) -> Command {
        use crate::Component;
        let path = |name: &str| self.path(name).into_os_string();
        let mut command = match component {
            // Debian's, on the PATH.
            Component::Containerd => Command::new(component.binary()),
            _ => Command::new(bin_dir.join(component.binary())),
        };
        match component {
            Component::Containerd => command.arg("--config").arg(path("containerd/config.toml")),
            Component::Kubelet => command
                .arg("--config")
                .arg(path("kubelet/config.yaml"))
                .arg("--kubeconfig")
                .arg(self.kubeconfig("kubelet"))
                .arg("--root-dir")
                .arg(path("kubelet"))
                .arg(format!("--hostname-override={NODE_NAME}"))
                .arg(format!("--node-ip={}", self.address)),
            Component::KubeProxy => command.arg("--config").arg(path("kube-proxy.yaml")),
            Component::Scheduler => command
                .arg("--kubeconfig")
                .arg(self.kubeconfig("kube-scheduler"))
                .args([
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    // Any free port; nothing here reads the scheduler's health.
                    "--secure-port=0",
                ]),
            other => unreachable!("{other} is not a node component"),
        };
        command
    }

    /// Imports the pause image into containerd's `k8s.io` namespace.
    pub(crate) fn import_pause_image(&self) -> Result<(), String> {
        let image = self.path("pause.tar");
        ctr(
            &self.containerd_socket(),
            &["images".as_ref(), "import".as_ref(), image.as_os_str()],
        )
    }
}

/// Whether the containerd socket answers.
pub(crate) fn containerd_serves(socket: &Path) -> Result<(), String> {
    ctr(socket, &["version".as_ref()])
}

/// Runs `ctr` against the containerd at `socket`, in the CRI's `k8s.io` namespace.
fn ctr(socket: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ctr: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ctr {}: {}",
            args.iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `GET http://127.0.0.1:<port>/healthz` answers 200: the kubelet's and kube-proxy's readiness
/// (kube-proxy's once it has written its rules).
pub(crate) fn healthy(component: crate::Component) -> Result<(), String> {
    let port = match component {
        crate::Component::Kubelet => KUBELET_HEALTHZ_PORT,
        crate::Component::KubeProxy => KUBE_PROXY_HEALTHZ_PORT,
        other => unreachable!("{other} has no health port here"),
    };
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(|error| format!("connect to port {port}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|error| error.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|error| error.to_string())?;
    match answer.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "/healthz answered: {}",
            answer.lines().next().unwrap_or("")
        )),
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    fs::write(path, contents).context(|| format!("write {}", path.display()))
}

/// A docker-archive tarball of the pod sandbox image: busybox-static sleeping until killed (the
/// runtime stops sandboxes with SIGKILL), nothing else.
fn write_pause_image(path: &Path) -> Result<(), Error> {
    use sha2::{Digest, Sha256};
    let busybox = fs::read(BUSYBOX).context(|| format!("read {BUSYBOX}"))?;
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    // busybox runs the applet its name says.
    layer
        .append_data(&mut header, "sleep", busybox.as_slice())
        .and_then(|()| layer.finish())
        .context(|| "assemble the pause image's layer".into())?;
    let layer = layer
        .into_inner()
        .context(|| "assemble the pause image's layer".into())?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [PAUSE_IMAGE.trim_start_matches("docker.io/")],
        "Layers": ["layer.tar"],
    }])
    .to_string();
    let mut archive =
        tar::Builder::new(File::create(path).context(|| format!("create {}", path.display()))?);
    for (name, contents) in [
        ("config.json", config.as_bytes()),
        ("layer.tar", layer.as_slice()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, contents)
            .context(|| format!("write {}", path.display()))?;
    }
    archive
        .finish()
        .context(|| format!("write {}", path.display()))
}

/// This machine while a node runs on it: holds the one-node-per-machine lock, and restores what
/// the node changed when released (or dropped), including after a previous run that was killed.
pub(crate) struct Machine {
    _lock: File,
    released: std::sync::Mutex<bool>,
}

impl Machine {
    /// Takes the lock, cleans up after a previous run that did not, and saves the state to
    /// restore.
    pub(crate) fn take() -> Result<Machine, Error> {
        let lock = File::create(MACHINE_LOCK).context(|| format!("create {MACHINE_LOCK}"))?;
        // SAFETY: a plain syscall on a descriptor we own.
        if unsafe {
            use std::os::fd::AsRawFd;
            libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
        } != 0
        {
            return Err(Error::Node(
                "another test bed node runs on this machine (one per machine: its ports, \
                 cgroups and iptables are machine-wide)"
                    .into(),
            ));
        }
        let state = Path::new(MACHINE_STATE);
        if state.exists() {
            eprintln!(
                "compshare-testbed: a previous node was not torn down; restoring the machine \
                 from {MACHINE_STATE}"
            );
            restore(state);
        }
        save(state)?;
        Ok(Machine {
            _lock: lock,
            released: std::sync::Mutex::new(false),
        })
    }

    /// Restores the machine (once). The node's processes must have stopped.
    pub(crate) fn release(&self) {
        let mut released = self
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*released {
            restore(Path::new(MACHINE_STATE));
            *released = true;
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.release();
    }
}

fn save(state: &Path) -> Result<(), Error> {
    let temporary = state.with_extension("tmp");
    let _ = fs::remove_dir_all(&temporary);
    fs::create_dir_all(&temporary).context(|| format!("create {}", temporary.display()))?;
    let sysctls: BTreeMap<&str, String> = SYSCTLS
        .iter()
        .filter_map(|name| {
            let value = fs::read_to_string(Path::new("/proc/sys").join(name)).ok()?;
            Some((*name, value.trim().to_owned()))
        })
        .collect();
    write(
        &temporary.join("sysctls.json"),
        serde_json::to_string(&sysctls).expect("strings serialize"),
    )?;
    for program in IPTABLES {
        let output = Command::new(format!("{program}-save"))
            .output()
            .context(|| format!("run {program}-save"))?;
        if !output.status.success() {
            return Err(Error::Node(format!(
                "{program}-save failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        write(&temporary.join(program), output.stdout)?;
    }
    let netns: Vec<String> = list_dir(Path::new(NETNS_DIR));
    write(
        &temporary.join("netns.json"),
        serde_json::to_string(&netns).expect("strings serialize"),
    )?;
    fs::rename(&temporary, state).context(|| format!("write {}", state.display()))
}

/// Undoes what a node did to the machine, as far as it can; reports what it could not.
fn restore(state: &Path) {
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(what);

    // Containers outlive the kubelet and containerd: their shims are daemons of their own.
    kill_owned_shims();
    if let Err(error) = empty_cgroups("kubepods") {
        problem(error);
    }
    unmount_owned(&mut problem);

    let netns_before: Vec<String> = fs::read_to_string(state.join("netns.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    for name in list_dir(Path::new(NETNS_DIR)) {
        if name.starts_with("cni-") && !netns_before.contains(&name) {
            let path = Path::new(NETNS_DIR).join(&name);
            unmount(&path, &mut problem);
            let _ = fs::remove_file(&path);
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        run(&mut problem, "ip", &["link", "delete", BRIDGE]);
    }

    for program in IPTABLES {
        let Ok(saved) = fs::read(state.join(program)) else {
            continue;
        };
        // iptables-restore replaces only the tables it is given: flush and delete the chains of
        // every table first, so that a table the node created is emptied too.
        for table in IPTABLES_TABLES {
            let _ = Command::new(program).args(["-t", table, "-F"]).output();
            let _ = Command::new(program).args(["-t", table, "-X"]).output();
        }
        let restored = Command::new(format!("{program}-restore"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().expect("piped").write_all(&saved)?;
                child.wait()
            });
        if !matches!(&restored, Ok(status) if status.success()) {
            problem(format!("{program}-restore: {restored:?}"));
        }
    }

    let sysctls: BTreeMap<String, String> = fs::read_to_string(state.join("sysctls.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    for (name, value) in sysctls {
        let path = Path::new("/proc/sys").join(&name);
        if fs::read_to_string(&path).is_ok_and(|now| now.trim() != value)
            && let Err(error) = fs::write(&path, &value)
        {
            problem(format!("restore {name}={value}: {error}"));
        }
    }

    for name in list_dir(Path::new(CNI_RESULTS)) {
        if name.starts_with(NETWORK) {
            let _ = fs::remove_file(Path::new(CNI_RESULTS).join(name));
        }
    }
    for name in list_dir(Path::new(CONTAINER_LOG_LINKS)) {
        let link = Path::new(CONTAINER_LOG_LINKS).join(&name);
        if fs::read_link(&link).is_ok_and(|target| target.to_string_lossy().contains(OWNED_MARK)) {
            let _ = fs::remove_file(link);
        }
    }

    if problems.is_empty() {
        let _ = fs::remove_dir_all(state);
    } else {
        // Kept, so that the next start tries again.
        eprintln!(
            "compshare-testbed: could not restore everything the node changed:\n  {}",
            problems.join("\n  ")
        );
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn run(problem: &mut impl FnMut(String), program: &str, args: &[&str]) {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => problem(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => problem(format!("{program}: {error}")),
    }
}

/// SIGKILLs containerd's shims that serve a test bed's containerd.
fn kill_owned_shims() {
    for pid in list_dir(Path::new("/proc"))
        .iter()
        .filter_map(|name| name.parse::<libc::pid_t>().ok())
    {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|program| program.contains("containerd-shim"));
        if is_shim && args.iter().any(|arg| arg.contains(OWNED_MARK)) {
            // SAFETY: a plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Kills every process in the cgroup `name` of every hierarchy, then removes it, innermost
/// first.
fn empty_cgroups(name: &str) -> Result<(), String> {
    let roots: Vec<PathBuf> = list_dir(Path::new("/sys/fs/cgroup"))
        .into_iter()
        .map(|hierarchy| Path::new("/sys/fs/cgroup").join(hierarchy).join(name))
        .filter(|root| root.is_dir())
        .collect();
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    loop {
        let mut groups = Vec::new();
        for root in &roots {
            collect_dirs(root, &mut groups);
        }
        // Deepest first.
        groups.sort_by_key(|group| std::cmp::Reverse(group.components().count()));
        let mut busy = false;
        for group in &groups {
            for pid in fs::read_to_string(group.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|pid| pid.parse::<libc::pid_t>().ok())
            {
                busy = true;
                // SAFETY: a plain syscall.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = fs::remove_dir(group);
        }
        if !roots.iter().any(|root| root.exists()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "cgroups {name} still exist after {}s (busy: {busy})",
                TEARDOWN_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn collect_dirs(dir: &Path, into: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    into.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                collect_dirs(&entry.path(), into);
            }
        }
    }
}

/// Lazily unmounts every mount below a test bed's directory, innermost (latest) first.
fn unmount_owned(problem: &mut impl FnMut(String)) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.contains(OWNED_MARK))
        .map(unescape_mount_point)
        .collect();
    points.reverse();
    for point in points {
        unmount(Path::new(&point), problem);
    }
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mount_point(point: &str) -> String {
    let mut out = String::with_capacity(point.len());
    let mut chars = point.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let octal: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&octal, 8) {
                out.push(char::from(byte));
                continue;
            }
            out.push(c);
            out.push_str(&octal);
        } else {
            out.push(c);
        }
    }
    out
}

fn unmount(path: &Path, problem: &mut impl FnMut(String)) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a plain syscall with a NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let error = io::Error::last_os_error();
        // Not mounted (any more): a parent's lazy unmount took it along.
        if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            problem(format!("unmount {}: {error}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(
            unescape_mount_point(r"/tmp/a\040b\011c\134d"),
            "/tmp/a b\tc\\d"
        );
        assert_eq!(unescape_mount_point("/run/netns/cni-1"), "/run/netns/cni-1");
    }
}
