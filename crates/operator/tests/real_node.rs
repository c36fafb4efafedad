//! The chart on a real node, installed as the README installs it: the test bed runs a node on
//! this machine (containerd, runc and CNI plugins from Debian; kubelet, kube-proxy and
//! kube-scheduler built like the control plane), the README's marked install blocks run
//! verbatim (only the API endpoint points at the simulator, and its keys are filled in), and
//! then: resources get status from the simulator through the pods, the pods run with the chart's
//! security settings, metrics and probes answer through the Service, `helm upgrade` and the
//! deletion of the leader pod hand the Lease over without a gap longer than the lease, and
//! `helm uninstall` leaves nothing behind but the CRDs and what the user made. The machine is
//! restored afterwards, which the test checks too.
//!
//! Needs root, Debian's containerd, runc, containernetworking-plugins, iptables and
//! busybox-static (`.ci/run` installs them), and the image tarball in `$COMPSHARE_IMAGE`
//! (`hack/test.sh` builds it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use compshare_simulator::{AdminClient, Simulator, SimulatorHandle};
use compshare_test_support::{PRIVATE_KEY, PUBLIC_KEY, fixture, poll_until, repo_file, repo_root};
use compshare_testbed::{ControlPlane, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};

const RELEASE_NAMESPACE: &str = "compshare-system";
/// The chart's objects for release `compshare` (the README's).
const FULLNAME: &str = "compshare-compshare-operator";
/// The release's pods.
const SELECTOR: &str = "app.kubernetes.io/instance=compshare";
/// The chart's default `leaderElection.leaseDuration`.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The machine the README's example resource names.
const README_MACHINE: &str = "uhost-xxxxxxxx";
const IMAGE: &str = "docker.io/library/compshare-operator:0.1.0";
const UPGRADED_TAG: &str = "0.1.0-upgraded";
/// The README's image path, replaced by `$COMPSHARE_IMAGE` when that is elsewhere.
const README_IMAGE_PATH: &str = "target/image/compshare-operator.tar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_install_runs_on_a_real_node() {
    let missing = compshare_testbed::node_missing_prerequisites();
    assert!(
        missing.is_empty(),
        "a real node cannot run on this machine; missing:\n  {}",
        missing.join("\n  ")
    );
    let image = std::env::var("COMPSHARE_IMAGE").expect(
        "COMPSHARE_IMAGE names the image tarball: run hack/test.sh, or \
         `export COMPSHARE_IMAGE=$(bash hack/image.sh)` before cargo test",
    );
    let machine_before = MachineState::read();

    let control_plane = ControlPlane::start(Options {
        node: true,
        ..Options::default()
    })
    .unwrap_or_else(|error| panic!("the node did not start: {error}"));
    let (address, containerd) = control_plane.node().expect("a node");
    // Reachable from the pods: the machine's address, like the apiserver.
    let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
    let mut machine = compshare_test_support::running(README_MACHINE, "203.0.113.7");
    machine["Name"] = json!("trainer");
    let simulator = Simulator::start(listener, fixture(vec![machine]));
    let shell = Shell {
        control_plane: &control_plane,
        containerd: &containerd,
    };
    let client = control_plane.client().await;

    let objects_before = shell.objects();
    shell.kubectl(&["create", "namespace", "ml-team"]);

    // The README, as written.
    shell.run(&readme_block("load").replace(README_IMAGE_PATH, &image));
    let install = readme_block("install")
        .replace("<public key>", PUBLIC_KEY)
        .replace("<private key>", PRIVATE_KEY)
        .replace(
            "helm install compshare charts/compshare-operator",
            &format!(
                "helm install compshare charts/compshare-operator \
                 --set compshare.endpoint={} --set compshare.allowInsecureHttp=true",
                simulator.endpoint()
            ),
        );
    assert_ne!(
        install,
        readme_block("install"),
        "the helm install line moved"
    );
    shell.run(&install);
    shell.apply(&readme_block("resource"));
    shell.run(&readme_block("wait"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let running = operator_pods(&pods).await;
    assert_eq!(running.len(), 2, "two replicas: {running:?}");
    pods_run_with_the_charts_security_settings(&running);
    metrics_and_probes_answer_through_the_service(&client).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let leader = holder(&leases).await.expect("a leader");
    assert!(
        running.contains(&leader),
        "{leader} leads, not a pod of the release"
    );

    // An upgrade to another image (the same bytes under a new tag) rolls both pods.
    shell.run(&format!(
        "ctr -n k8s.io images tag {IMAGE} {}",
        IMAGE.replace("0.1.0", UPGRADED_TAG)
    ));
    let watch = LeaseWatch::start(leases.clone());
    shell.run(&format!(
        "helm upgrade compshare charts/compshare-operator -n {RELEASE_NAMESPACE} --reuse-values \
         --set image.tag={UPGRADED_TAG} --wait"
    ));
    let upgraded = poll_until(Duration::from_secs(120), async || {
        let now = operator_pods(&pods).await;
        if now.len() == 2 && now.iter().all(|pod| !running.contains(pod)) {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await
    .unwrap_or_else(|pods| panic!("the upgrade did not replace both pods: {pods:?}"));
    let new_leader = poll_until(Duration::from_secs(60), async || {
        holder(&leases)
            .await
            .filter(|holder| upgraded.contains(holder))
            .ok_or(())
    })
    .await
    .expect("a pod of the upgrade leads");
    watch
        .assert_no_gap_longer_than_the_lease("helm upgrade")
        .await;
    status_still_flows(&simulator, &shell, "Stopped").await;

    // Deleting the leader hands over.
    let watch = LeaseWatch::start(leases.clone());
    pods.delete(&new_leader, &DeleteParams::default())
        .await
        .unwrap();
    poll_until(LEASE_DURATION * 2, async || {
        holder(&leases)
            .await
            .filter(|holder| *holder != new_leader)
            .ok_or(())
    })
    .await
    .expect("another pod takes over from the deleted leader");
    watch
        .assert_no_gap_longer_than_the_lease("deleting the leader")
        .await;
    status_still_flows(&simulator, &shell, "Running").await;

    // Uninstall: the user's resource goes first (it is theirs to delete), then the release.
    shell.kubectl(&["delete", "compshareinstance", "trainer", "-n", "ml-team"]);
    shell.run(&format!(
        "helm uninstall compshare -n {RELEASE_NAMESPACE} --wait"
    ));
    poll_until(Duration::from_secs(60), async || {
        let left = pods.list(&ListParams::default().labels(SELECTOR)).await;
        match left.unwrap().items.is_empty() {
            true => Ok(()),
            false => Err(()),
        }
    })
    .await
    .expect("the release's pods are gone");
    let left: BTreeSet<String> = shell
        .objects()
        .difference(&objects_before)
        .cloned()
        .collect();
    let expected: BTreeSet<String> = [
        // The CRDs (Helm never deletes them) and what the README's user made.
        "CustomResourceDefinition//compshareinstances.compshare.ucloud.cn",
        "CustomResourceDefinition//compsharediscoveries.compshare.ucloud.cn",
        // kube-apiserver's own registration of the CRDs' group, which goes with them.
        "APIService//v1alpha1.compshare.ucloud.cn",
        "Namespace//compshare-system",
        "Namespace//ml-team",
        "Secret/compshare-system/compshare-credentials",
        // What Kubernetes puts in every namespace.
        "ServiceAccount/compshare-system/default",
        "ServiceAccount/ml-team/default",
        "ConfigMap/compshare-system/kube-root-ca.crt",
        "ConfigMap/ml-team/kube-root-ca.crt",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(left, expected, "helm uninstall left other objects behind");

    control_plane.stop();
    drop(simulator);
    let machine_after = MachineState::read();
    machine_before.assert_restored(&machine_after);
}

/// A fenced block of the README, found by the `<!-- real-node: NAME -->` comment before it.
fn readme_block(name: &str) -> String {
    let readme = repo_file("README.md");
    let marker = format!("<!-- real-node: {name} -->\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?}"))
        + marker.len();
    let block = &readme[start..];
    let body = block
        .split_once('\n')
        .expect("a fence line after the marker")
        .1;
    body[..body.find("\n```").expect("a closing fence")].to_owned() + "\n"
}

/// Runs commands as the README's user: in the repository, with the test bed's kubectl and helm
/// on the PATH, the admin kubeconfig, and the node's containerd for `ctr`.
struct Shell<'a> {
    control_plane: &'a ControlPlane,
    containerd: &'a Path,
}

impl Shell<'_> {
    fn command(&self, program: &str) -> Command {
        let path = std::env::join_paths(
            std::iter::once(self.control_plane.bin_dir().to_owned()).chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
        )
        .unwrap();
        let helm_home = self.control_plane.dir().join("helm");
        let mut command = Command::new(program);
        command
            .current_dir(repo_root())
            .env("PATH", path)
            .env("KUBECONFIG", self.control_plane.kubeconfig_path())
            .env("CONTAINERD_ADDRESS", self.containerd)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"));
        command
    }

    /// A script, under `bash -euo pipefail`. Its output is not shown when it succeeds, as it may
    /// hold keys.
    fn run(&self, script: &str) {
        let output = self
            .command("bash")
            .args(["-euo", "pipefail", "-c", script])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "a step failed ({}):\n{}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.diagnostics(),
        );
    }

    /// The release's pods, their events and the end of their logs (the operator logs no
    /// secrets).
    fn diagnostics(&self) -> String {
        [
            vec!["get", "pods", "-A", "-o", "wide"],
            vec!["get", "events", "-n", RELEASE_NAMESPACE],
            vec![
                "logs",
                "-n",
                RELEASE_NAMESPACE,
                "-l",
                SELECTOR,
                "--tail=20",
                "--prefix",
            ],
        ]
        .iter()
        .map(|args| {
            let output = self.command("kubectl").args(args).output().unwrap();
            format!(
                "--- kubectl {} ---\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .collect()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let output = self.command("kubectl").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn apply(&self, manifest: &str) {
        let file = self.control_plane.dir().join("readme-manifest.yaml");
        std::fs::write(&file, manifest).unwrap();
        self.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    }

    /// `Kind/namespace/name` of every object of every listable type, but for those that come and
    /// go on their own (events, the node's heartbeats and endpoints).
    fn objects(&self) -> BTreeSet<String> {
        let types = self.kubectl(&["api-resources", "--verbs=list", "-o", "name"]);
        let types: Vec<&str> = types
            .lines()
            .filter(|kind| {
                !matches!(
                    *kind,
                    "events" | "events.events.k8s.io" | "endpoints" | "nodes"
                ) && !kind.starts_with("endpointslices")
                    && !kind.ends_with(".metrics.k8s.io")
            })
            .collect();
        let list: Value =
            serde_json::from_str(&self.kubectl(&["get", &types.join(","), "-A", "-o", "json"]))
                .unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| {
                // The node's heartbeat Lease.
                item["metadata"]["namespace"] != "kube-node-lease"
            })
            .map(|item| {
                format!(
                    "{}/{}/{}",
                    item["kind"].as_str().unwrap(),
                    item["metadata"]["namespace"].as_str().unwrap_or(""),
                    item["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }
}

/// The names of the release's running pods.
async fn operator_pods(pods: &Api<Pod>) -> Vec<String> {
    pods.list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap()
        .into_iter()
        .filter(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|pod| pod.metadata.name)
        .collect()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(FULLNAME)
        .await
        .unwrap()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
        .filter(|holder| !holder.is_empty())
}

/// Samples the Lease every 100 ms, keeping the longest time it was not held (no holder, or a
/// holder whose renewal had expired by the sample's time).
struct LeaseWatch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Duration>,
}

impl LeaseWatch {
    fn start(leases: Api<Lease>) -> LeaseWatch {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut longest, mut unheld_since) = (Duration::ZERO, None::<Instant>);
            loop {
                let lease = leases.get(FULLNAME).await.unwrap();
                let spec = lease.spec.unwrap_or_default();
                let held = spec.holder_identity.is_some_and(|h| !h.is_empty())
                    && spec.renew_time.is_some_and(|renewed| {
                        let expiry = renewed.0
                            + jiff::SignedDuration::from_secs(i64::from(
                                spec.lease_duration_seconds.unwrap_or(0),
                            ));
                        expiry > jiff::Timestamp::now()
                    });
                match (held, unheld_since) {
                    (true, Some(since)) => {
                        longest = longest.max(since.elapsed());
                        unheld_since = None;
                    }
                    (false, None) => unheld_since = Some(Instant::now()),
                    _ => {}
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            longest.max(unheld_since.map_or(Duration::ZERO, |since| since.elapsed()))
        });
        LeaseWatch { stop, task }
    }

    /// Stops sampling; fails if the Lease was unheld for longer than the lease during `what`.
    async fn assert_no_gap_longer_than_the_lease(self, what: &str) {
        let _ = self.stop.send(());
        let gap = self.task.await.unwrap();
        eprintln!("{what}: the Lease was unheld for at most {gap:?}");
        assert!(
            gap <= LEASE_DURATION,
            "{what} left the Lease unheld for {gap:?}, longer than the lease ({LEASE_DURATION:?})"
        );
    }
}

/// A change at the simulator reaches the resource's status: the current leader observes.
async fn status_still_flows(simulator: &SimulatorHandle, shell: &Shell<'_>, state: &str) {
    AdminClient::new(&simulator.endpoint())
        .patch_instance(README_MACHINE, json!({"State": state}))
        .await
        .unwrap();
    let condition = format!("jsonpath={{.status.state}}={state}");
    shell.kubectl(&[
        "wait",
        &format!("--for={condition}"),
        "compshareinstance/trainer",
        "-n",
        "ml-team",
        "--timeout=180s",
    ]);
}

/// Each operator process, as the host sees it: uid and gid 65532, no capabilities, no new
/// privileges, a seccomp filter, a read-only root.
fn pods_run_with_the_charts_security_settings(pods: &[String]) {
    let processes: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(b"/compshare-operator\0run"))
        })
        .collect();
    assert_eq!(
        processes.len(),
        pods.len(),
        "one operator process per pod: {processes:?}"
    );
    for pid in processes {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(field("Uid"), "65532 65532 65532 65532");
        assert_eq!(field("Gid"), "65532 65532 65532 65532");
        assert_eq!(field("CapEff"), "0000000000000000");
        assert_eq!(field("CapPrm"), "0000000000000000");
        assert_eq!(field("NoNewPrivs"), "1");
        assert_eq!(field("Seccomp"), "2", "the runtime's seccomp filter");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mounts
            .lines()
            .find(|line| line.split_whitespace().nth(4) == Some("/"))
            .expect("a root mount");
        let options = root.split_whitespace().nth(5).unwrap();
        assert!(
            options.split(',').any(|option| option == "ro"),
            "the root is mounted {options}"
        );
    }
}

/// GET on the Service's cluster IP from this machine, through kube-proxy's rules.
async fn metrics_and_probes_answer_through_the_service(client: &kube::Client) {
    let services: Api<Service> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let service = services.get(&format!("{FULLNAME}-metrics")).await.unwrap();
    let spec = service.spec.unwrap();
    let ip = spec.cluster_ip.unwrap();
    let port = spec.ports.unwrap()[0].port;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("http://{ip}:{port}{path}");
        let response = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        if path == "/metrics" {
            let body = response.text().await.unwrap();
            assert!(
                body.contains("compshare_leader "),
                "GET {url} is not the operator's metrics:\n{body}"
            );
        }
    }
}

/// What a node changes on the machine, read before and after.
#[derive(Debug, PartialEq)]
struct MachineState {
    /// iptables-save and ip6tables-save, without counters and comments.
    rules: String,
    sysctls: Vec<(String, String)>,
    mounts: Vec<String>,
    links: Vec<String>,
    netns: Vec<String>,
    kubepods_cgroups: Vec<String>,
}

impl MachineState {
    fn read() -> MachineState {
        let rules = ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|program| {
                let output = Command::new(program).output().unwrap();
                let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|line| !line.starts_with('#'))
                    .map(|line| match line.strip_prefix(':') {
                        // `:CHAIN POLICY [packets:bytes]`
                        Some(chain) => chain
                            .rsplit_once(' ')
                            .map_or(line, |(head, _)| head)
                            .to_owned(),
                        None => line.to_owned(),
                    })
                    .collect();
                without_empty_tables(&lines).join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let sysctls = [
            "vm/overcommit_memory",
            "kernel/panic",
            "kernel/panic_on_oops",
            "net/ipv4/ip_forward",
        ]
        .iter()
        .map(|name| {
            let value =
                std::fs::read_to_string(Path::new("/proc/sys").join(name)).unwrap_or_default();
            (name.to_string(), value.trim().to_owned())
        })
        .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|point| point.contains("compshare-testbed") || point.starts_with("/run/netns"))
            .map(str::to_owned)
            .collect();
        let names = |dir: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let kubepods_cgroups = names("/sys/fs/cgroup")
            .into_iter()
            .filter(|hierarchy| {
                Path::new("/sys/fs/cgroup")
                    .join(hierarchy)
                    .join("kubepods")
                    .exists()
            })
            .collect();
        MachineState {
            rules,
            sysctls,
            mounts,
            links: names("/sys/class/net"),
            netns: names("/run/netns"),
            kubepods_cgroups,
        }
    }

    fn assert_restored(&self, after: &MachineState) {
        assert_eq!(self.sysctls, after.sysctls, "sysctls");
        assert_eq!(self.mounts, after.mounts, "mounts");
        assert_eq!(self.links, after.links, "network interfaces");
        assert_eq!(self.netns, after.netns, "network namespaces");
        assert_eq!(self.kubepods_cgroups, after.kubepods_cgroups, "cgroups");
        assert_eq!(self.rules, after.rules, "iptables rules");
    }
}

/// `iptables-save`'s tables (as `read` strips them: `CHAIN POLICY`, rules) without those that
/// hold nothing: only built-in chains, each accepting. With the nf_tables backend a table exists
/// once anything has used it, and iptables cannot delete one; an empty one filters nothing, as no
/// table does. On a machine that had no table before the node, its teardown leaves such ones.
fn without_empty_tables(lines: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut table: Vec<&String> = Vec::new();
    for line in lines {
        table.push(line);
        if line == "COMMIT" {
            let empty = table
                .get(1..table.len() - 1)
                .unwrap_or_default()
                .iter()
                .all(|l| !l.starts_with('-') && l.ends_with(" ACCEPT"));
            if !empty {
                kept.extend(table.iter().map(|l| (*l).clone()));
            }
            table.clear();
        }
    }
    kept.extend(table.into_iter().cloned());
    kept
}
