//! The control plane against itself: what the operator's tests rely on.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compshare_testbed::{Component, ControlPlane, Error, Options, client_from_kubeconfig};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

/// Polls `condition` until it holds, for things the control plane does asynchronously.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ConfigMap::default()
    }
}

#[test]
fn kubectl_reaches_the_control_plane() {
    let output = ControlPlane::shared().kubectl(["get", "namespaces", "-o", "name"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.lines().any(|line| line == "namespace/default"),
        "{stdout}"
    );
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let control_plane = ControlPlane::shared();
    let namespace = control_plane.create_namespace("rbac").await.unwrap();
    let admin = control_plane.client().await;
    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &service_account)
        .await
        .unwrap();
    let kubeconfig = control_plane
        .service_account_kubeconfig(&namespace, "reader")
        .await
        .unwrap();
    let reader: Api<Secret> = Api::namespaced(
        client_from_kubeconfig(&kubeconfig).await.unwrap(),
        &namespace,
    );

    match reader.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert!(status.is_forbidden(), "{status:?}"),
        other => panic!("listing secrets without a RoleBinding must be forbidden: {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("secret-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader-reads-secrets".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "secret-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(namespace.clone()),
            ..Subject::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin, &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The authorizer sees new bindings through an informer, a moment later.
    eventually(
        "the RoleBinding lets the ServiceAccount list secrets",
        async || reader.list(&ListParams::default()).await.is_ok(),
    )
    .await;
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_deleted_owners() {
    let control_plane = ControlPlane::shared();
    let namespace = control_plane.create_namespace("gc").await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(control_plane.client().await, &namespace);
    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner", &[]))
        .await
        .unwrap();
    let mut dependent = config_map("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap(),
        ..OwnerReference::default()
    }]);
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the garbage collector deletes the dependent", async || {
        config_maps.get_opt("dependent").await.unwrap().is_none()
    })
    .await;
}

#[test]
fn restart_keeps_data_and_credentials() {
    let control_plane = ControlPlane::start(Options::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config_maps = |client: Client| Api::<ConfigMap>::namespaced(client, "default");
    runtime.block_on(async {
        config_maps(control_plane.client().await)
            .create(
                &PostParams::default(),
                &config_map("survivor", &[("key", "value")]),
            )
            .await
            .unwrap();
    });

    control_plane.restart_apiserver().unwrap();

    runtime.block_on(async {
        let survivor = config_maps(control_plane.client().await)
            .get("survivor")
            .await
            .unwrap();
        assert_eq!(survivor.data.unwrap()["key"], "value");
    });
    // The same CA and token still work: kubeconfigs handed out before the restart stay valid.
    let output = control_plane.kubectl(["get", "configmap", "survivor"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn control_plane_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits, so this is what would kill the
    // components if they were forked from the caller's thread.
    let control_plane = std::thread::spawn(|| ControlPlane::start(Options::default()).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let output = control_plane.kubectl(["get", "namespace", "default"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Set for the child test process of [`children_die_with_the_process`].
const HOLD_ENV: &str = "COMPSHARE_TESTBED_HOLD_UNTIL_KILLED";
const READY: &str = "control plane ready in";

#[test]
#[ignore = "run by children_die_with_the_process in a process of its own"]
fn hold_a_control_plane_until_killed() {
    if std::env::var_os(HOLD_ENV).is_none() {
        return;
    }
    let control_plane = ControlPlane::start(Options::default()).unwrap();
    println!("{READY} {}", control_plane.dir().display());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn children_die_with_the_process() {
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "hold_a_control_plane_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = BufReader::new(holder.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix(READY)
                .map(|dir| PathBuf::from(dir.trim()))
        })
        .expect("the holder process starts a control plane");
    let components = children_of(holder.id());
    assert_eq!(
        components.len(),
        2,
        "etcd and kube-apiserver: {components:?}"
    );

    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while components.iter().any(|&pid| is_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "components outlived their parent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nobody was left to remove it.
    fs::remove_dir_all(dir).unwrap();
}

fn children_of(parent: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

fn is_alive(pid: u32) -> bool {
    // Killed children of a killed parent may linger as zombies until init reaps them.
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// State and parent pid, from /proc/<pid>/stat: `pid (comm) state ppid ...`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

#[test]
fn failed_start_reports_the_component_log() {
    let bin_dir = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let path = bin_dir.path().join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("etcd", "exec sleep 60");
    script(
        "kube-apiserver",
        "echo 'cannot listen: address already in use' >&2; exit 1",
    );

    let error = match ControlPlane::start(Options {
        bin_dir: Some(bin_dir.path().to_owned()),
        ..Options::default()
    }) {
        Ok(_) => panic!("a control plane whose kube-apiserver exits must not start"),
        Err(error) => error,
    };
    match &error {
        Error::Component {
            component: Component::ApiServer,
            log_tail,
            ..
        } => assert!(log_tail.contains("address already in use"), "{error}"),
        other => panic!("unexpected error: {other}"),
    }
    assert!(error.to_string().contains("address already in use"));
}
