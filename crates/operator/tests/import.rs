//! `compshare-operator import`, the real binary against the simulator and the test bed's real
//! apiserver: 250 machines in two regions (more than one page in each) become manifests the
//! apiserver accepts, the same bytes every time; filters, bad keys, throttling, an empty account,
//! a directory with a kustomization that a rerun prunes of gone machines' files (and only those),
//! and keys from a Secret, a key file or the environment.

use std::collections::BTreeSet;
use std::process::Command;

use compshare_operator::resource::{CompShareInstance, DeletionPolicy, ManagementPolicy};
use compshare_test_support::{Bed, PRIVATE_KEY, PUBLIC_KEY, operator_binary};
use serde_json::{Value, json};

const WLCB: &str = "cn-wlcb";
const SH2: &str = "cn-sh2";
/// 130 machines in cn-wlcb and 120 in cn-sh2: two pages in each.
const MACHINES: usize = 250;
const IN_WLCB: usize = 130;

/// One machine of the fixture, as the test expects it back.
struct Machine {
    id: String,
    name: String,
    region: &'static str,
    zone: String,
    state: &'static str,
    tag: &'static str,
    gpu_type: &'static str,
    /// The VPC of its private address; `None`: no address at all (as containers often have).
    vpc: Option<&'static str>,
}

impl Machine {
    /// The resource name `import` must give it: the name made DNS-1123, then the id after
    /// `uhost-`; the id alone for a name with nothing usable in it.
    fn expected_name(&self) -> String {
        let suffix = self.id.strip_prefix("uhost-").unwrap();
        if self.name == "推理机" {
            self.id.clone()
        } else {
            format!("{}-{suffix}", self.name.to_lowercase().replace(' ', "-"))
        }
    }
}

/// The fixture's machines: every tenth is called `trainer` (one name, many machines), every
/// tenth another has a name with no Latin letter; a third are stopped, a quarter in business group
/// `ml`, a fifth A800s; zones alternate; of every seven, one has no address, three are in VPC
/// `uvnet-a` and three in `uvnet-b`.
fn machines() -> Vec<Machine> {
    (0..MACHINES)
        .map(|i| {
            let region = if i < IN_WLCB { WLCB } else { SH2 };
            Machine {
                id: format!("uhost-{:08x}", 0x1000 + i * 7919),
                name: match i % 10 {
                    0 => "trainer".to_owned(),
                    1 => "推理机".to_owned(),
                    _ => format!("Worker {i:03}"),
                },
                region,
                zone: format!("{region}-0{}", 1 + i % 2),
                state: if i % 3 == 0 { "Stopped" } else { "Running" },
                tag: if i % 4 == 0 { "ml" } else { "Default" },
                gpu_type: if i % 5 == 0 { "A800" } else { "4090" },
                vpc: match i % 7 {
                    0 => None,
                    1..=3 => Some("uvnet-a"),
                    _ => Some("uvnet-b"),
                },
            }
        })
        .collect()
}

async fn bed(name: &str) -> Bed {
    let instances = machines()
        .into_iter()
        .map(|m| {
            let ip_set: Vec<Value> = m
                .vpc
                .iter()
                .map(|vpc| json!({"IP": "10.9.0.4", "Type": "Private", "VPCId": vpc, "SubnetId": "subnet-1"}))
                .collect();
            json!({
                "UHostId": m.id, "Name": m.name, "Region": m.region, "Zone": m.zone,
                "State": m.state, "Tag": m.tag, "GpuType": m.gpu_type, "IPSet": ip_set,
            })
        })
        .collect();
    Bed::new(name, instances).await
}

/// How a run of `import` ended.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn manifests(&self) -> Vec<CompShareInstance> {
        assert!(self.ok, "import failed: {}", self.stderr);
        documents(&self.stdout)
    }

    fn ids(&self) -> BTreeSet<String> {
        self.manifests()
            .into_iter()
            .map(|m| m.spec.uhost_id.unwrap())
            .collect()
    }
}

fn documents(yaml: &str) -> Vec<CompShareInstance> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

/// `compshare-operator import` against the bed's simulator and cluster, with the test account's
/// keys in the environment.
fn import(bed: &Bed) -> Command {
    let mut command = Command::new(operator_binary());
    command
        .arg("import")
        .args(["--endpoint", &bed.simulator.endpoint()])
        .arg("--allow-insecure-http")
        .env("KUBECONFIG", bed.control_plane.kubeconfig_path())
        .env("RUST_LOG", "info")
        .env("COMPSHARE_PUBLIC_KEY", PUBLIC_KEY)
        .env("COMPSHARE_PRIVATE_KEY", PRIVATE_KEY)
        .env_remove("COMPSHARE_ENDPOINT")
        .env_remove("COMPSHARE_REQUEST_TIMEOUT");
    command
}

async fn run(mut command: Command) -> Run {
    // The simulator answers on this test's runtime: the process is waited for on another thread.
    let output = tokio::task::spawn_blocking(move || command.output().expect("run import"))
        .await
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

async fn import_with(bed: &Bed, args: &[&str]) -> Run {
    let mut command = import(bed);
    command.args(args);
    run(command).await
}

fn label<'a>(m: &'a CompShareInstance, key: &str) -> &'a str {
    m.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_machine_of_both_regions_becomes_a_manifest_the_apiserver_accepts() {
    let bed = bed("import-all").await;
    let first = import_with(&bed, &["--credentials-ref", "keys"]).await;
    let manifests = first.manifests();
    assert_eq!(manifests.len(), MACHINES, "{}", first.stderr);

    // Regions from DescribeCompShareSupportZone, then ⌈n/100⌉ pages per region.
    let counters = bed.counters().await;
    assert_eq!(counters.calls("DescribeCompShareSupportZone"), 1);
    assert_eq!(counters.calls("DescribeCompShareInstance"), 4);

    let expected = machines();
    let mut names: Vec<String> = expected.iter().map(Machine::expected_name).collect();
    names.sort();
    let got: Vec<String> = manifests
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(got, names, "sorted by name, named as expected");
    assert!(got.contains(&"trainer-00001000".to_owned()), "{got:?}");
    assert!(got.contains(&"worker-002-00004dde".to_owned()), "{got:?}");

    for machine in &expected {
        let m = manifests
            .iter()
            .find(|m| m.spec.uhost_id.as_deref() == Some(&machine.id))
            .unwrap_or_else(|| panic!("no manifest for {}", machine.id));
        assert_eq!(m.metadata.name.as_deref(), Some(&*machine.expected_name()));
        assert_eq!(m.metadata.namespace, None);
        assert_eq!(m.spec.region, machine.region);
        assert_eq!(m.spec.zone.as_deref(), Some(&*machine.zone));
        assert_eq!(m.spec.project_id, None);
        assert_eq!(m.spec.credentials_ref.as_ref().unwrap().name, "keys");
        assert_eq!(m.spec.management_policy, Some(ManagementPolicy::Observe));
        assert_eq!(m.spec.deletion_policy, Some(DeletionPolicy::Orphan));
        assert_eq!(m.spec.machine, None);
        assert_eq!(label(m, "compshare.ucloud.cn/region"), machine.region);
        assert_eq!(label(m, "compshare.ucloud.cn/zone"), machine.zone);
        assert_eq!(label(m, "compshare.ucloud.cn/gpu-type"), machine.gpu_type);
    }

    // The same account gives the same bytes.
    let second = import_with(&bed, &["--credentials-ref", "keys"]).await;
    assert!(second.ok, "{}", second.stderr);
    assert!(first.stdout == second.stdout, "two runs differ");

    // JSON: one v1 List of the same resources.
    let json = import_with(&bed, &["--credentials-ref", "keys", "-o", "json"]).await;
    assert!(json.ok, "{}", json.stderr);
    let list: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("v1"), Some("List"))
    );
    let items: Vec<CompShareInstance> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(items, manifests);

    // The real apiserver takes them, admission rules and all.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, &first.stdout).unwrap();
    bed.kubectl(&["create", "-f", file.to_str().unwrap()]);
    let stored = bed
        .instances()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(stored.len(), MACHINES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_keep_exactly_the_machines_they_name() {
    let bed = bed("import-filters").await;
    let all = machines();
    let ids = |keep: &dyn Fn(&Machine) -> bool| -> BTreeSet<String> {
        all.iter()
            .filter(|m| keep(m))
            .map(|m| m.id.clone())
            .collect()
    };
    let cases: [(&[&str], BTreeSet<String>); 9] = [
        (&["--region", SH2], ids(&|m| m.region == SH2)),
        (&["--zone", "cn-wlcb-02"], ids(&|m| m.zone == "cn-wlcb-02")),
        (
            &["--zone", "cn-wlcb-02", "--zone", "cn-sh2-01"],
            ids(&|m| m.zone == "cn-wlcb-02" || m.zone == "cn-sh2-01"),
        ),
        (&["--tag", "ml"], ids(&|m| m.tag == "ml")),
        (&["--name", "train*"], ids(&|m| m.name == "trainer")),
        (&["--state", "stopped"], ids(&|m| m.state == "Stopped")),
        (&["--vpc", "uvnet-b"], ids(&|m| m.vpc == Some("uvnet-b"))),
        // Machines without an address are in neither.
        (
            &["--vpc", "uvnet-a", "--vpc", "uvnet-b"],
            ids(&|m| m.vpc.is_some()),
        ),
        (
            &[
                "--region", WLCB, "--state", "Running", "--tag", "ml", "--name", "Worker *",
                "--vpc", "uvnet-a",
            ],
            ids(&|m| {
                m.region == WLCB
                    && m.state == "Running"
                    && m.tag == "ml"
                    && m.name.starts_with("Worker")
                    && m.vpc == Some("uvnet-a")
            }),
        ),
    ];
    for (args, expected) in cases {
        assert!(
            !expected.is_empty(),
            "{args:?} keeps nothing in this fixture"
        );
        assert_eq!(import_with(&bed, args).await.ids(), expected, "{args:?}");
    }

    // With --region given, the zones are not asked for.
    bed.reset_counters().await;
    import_with(&bed, &["--region", SH2]).await.manifests();
    assert_eq!(
        bed.counters().await.calls("DescribeCompShareSupportZone"),
        0
    );

    let bad = import_with(&bed, &["--name", "trainer[", "--region", SH2]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("--name"), "{}", bad.stderr);
    let empty = import_with(&bed, &["--vpc", "", "--region", SH2]).await;
    assert!(!empty.ok);
    assert!(empty.stderr.contains("--vpc"), "{}", empty.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_fail_clearly_without_showing_the_private_key() {
    let bed = bed("import-bad-keys").await;
    let wrong_private = "wrong-private-key-never-shown-42";
    for (public, private, code) in [
        (PUBLIC_KEY, wrong_private, "RetCode 171"),
        ("unknown-public-key", wrong_private, "RetCode 172"),
    ] {
        let mut command = import(&bed);
        command
            .env("COMPSHARE_PUBLIC_KEY", public)
            .env("COMPSHARE_PRIVATE_KEY", private);
        let outcome = run(command).await;
        assert!(!outcome.ok, "{public}: accepted");
        assert!(outcome.stdout.is_empty(), "{}", outcome.stdout);
        for expected in [code, "rejected the key pair", "COMPSHARE_PUBLIC_KEY"] {
            assert!(
                outcome.stderr.contains(expected),
                "{expected}: {}",
                outcome.stderr
            );
        }
        assert!(!outcome.stderr.contains(private), "{}", outcome.stderr);
    }

    // From a key file, the message names the file.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys.yaml");
    std::fs::write(
        &key_file,
        format!("publicKey: {PUBLIC_KEY}\nprivateKey: {wrong_private}\n"),
    )
    .unwrap();
    let outcome = import_with(&bed, &["--key-file", key_file.to_str().unwrap()]).await;
    assert!(!outcome.ok);
    assert!(outcome.stderr.contains("key file"), "{}", outcome.stderr);
    assert!(
        !outcome.stderr.contains(wrong_private),
        "{}",
        outcome.stderr
    );

    // A key file that is not one says so, without quoting it.
    std::fs::write(&key_file, format!("publicKey: [{wrong_private}\n")).unwrap();
    let outcome = import_with(&bed, &["--key-file", key_file.to_str().unwrap()]).await;
    assert!(!outcome.ok);
    assert!(
        outcome.stderr.contains("is not YAML or JSON"),
        "{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains(wrong_private),
        "{}",
        outcome.stderr
    );

    // No keys at all: what to pass.
    let mut command = import(&bed);
    command
        .env_remove("COMPSHARE_PUBLIC_KEY")
        .env_remove("COMPSHARE_PRIVATE_KEY");
    let outcome = run(command).await;
    assert!(!outcome.ok);
    assert!(
        outcome.stderr.contains("no credentials"),
        "{}",
        outcome.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out() {
    let bed = bed("import-throttled").await;
    let calm = import_with(&bed, &[]).await;
    assert!(calm.ok, "{}", calm.stderr);

    bed.inject(json!({"kind": "throttle", "count": 3, "action": "DescribeCompShareInstance"}))
        .await;
    bed.inject(json!({"kind": "throttle", "count": 1, "action": "DescribeCompShareSupportZone"}))
        .await;
    bed.reset_counters().await;
    let throttled = import_with(&bed, &[]).await;
    assert!(throttled.ok, "{}", throttled.stderr);
    assert!(
        calm.stdout == throttled.stdout,
        "throttling changed the output"
    );
    assert!(
        throttled.stderr.contains("trying again"),
        "{}",
        throttled.stderr
    );
    let counters = bed.counters().await;
    assert_eq!(counters.calls("DescribeCompShareInstance"), 4 + 3);
    assert_eq!(counters.calls("DescribeCompShareSupportZone"), 1 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_account_prints_nothing_and_says_so() {
    let bed = Bed::new("import-empty", Vec::new()).await;
    let yaml = import_with(&bed, &[]).await;
    assert!(yaml.ok, "{}", yaml.stderr);
    assert_eq!(yaml.stdout, "");
    assert!(
        yaml.stderr.contains("no machine to import"),
        "{}",
        yaml.stderr
    );

    let json = import_with(&bed, &["-o", "json"]).await;
    assert!(json.ok, "{}", json.stderr);
    let list: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        list,
        json!({"apiVersion": "v1", "kind": "List", "items": []})
    );
}

/// The file names in `dir` but the record and the kustomization, sorted.
fn manifest_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f != "kustomization.yaml" && f != ".compshare-import")
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_with_a_kustomization_from_a_key_file() {
    let bed = bed("import-out-dir").await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys.json");
    std::fs::write(
        &key_file,
        json!({"publicKey": PUBLIC_KEY, "privateKey": PRIVATE_KEY}).to_string(),
    )
    .unwrap();
    let out = dir.path().join("machines");
    let command = || {
        let mut command = import(&bed);
        command
            .env_remove("COMPSHARE_PUBLIC_KEY")
            .env_remove("COMPSHARE_PRIVATE_KEY")
            .args(["--key-file", key_file.to_str().unwrap()])
            .args(["--out-dir", out.to_str().unwrap(), "--kustomization"])
            .args(["--namespace", &bed.namespace, "--credentials-ref", "keys"]);
        command
    };
    let outcome = run(command()).await;
    assert!(outcome.ok, "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty(), "{}", outcome.stdout);

    let files = manifest_files(&out);
    assert_eq!(files.len(), MACHINES);
    let expected: BTreeSet<String> = machines()
        .iter()
        .map(|m| format!("{}.yaml", m.expected_name()))
        .collect();
    assert_eq!(files.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for file in &files {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        let [m] = <[CompShareInstance; 1]>::try_from(documents(&text)).unwrap();
        assert_eq!(format!("{}.yaml", m.metadata.name.unwrap()), *file);
        assert_eq!(m.metadata.namespace.as_deref(), Some(&*bed.namespace));
    }
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(out.join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(kustomization["kind"], "Kustomization");
    assert_eq!(kustomization["resources"], json!(files));

    // kubectl builds the kustomization and the apiserver accepts every resource (dry run).
    let applied = bed.kubectl(&["apply", "--dry-run=server", "-k", out.to_str().unwrap()]);
    assert_eq!(applied.lines().count(), MACHINES, "{applied}");

    // A machine released since: the scheduled rerun into the same directory drops its file, and
    // leaves alone the files it did not write, even ones that look like its own.
    let released = &machines()[42];
    bed.simulator_admin
        .remove_instance(&released.id)
        .await
        .unwrap();
    std::fs::write(out.join("README.md"), "the team's notes").unwrap();
    std::fs::write(out.join("hand-written.yaml"), "kind: CompShareInstance\n").unwrap();
    let rerun = run(command()).await;
    assert!(rerun.ok, "{}", rerun.stderr);
    let after = manifest_files(&out);
    let mut expected_after: Vec<String> = files
        .iter()
        .filter(|f| **f != format!("{}.yaml", released.expected_name()))
        .cloned()
        .chain(["README.md".to_owned(), "hand-written.yaml".to_owned()])
        .collect();
    expected_after.sort();
    assert_eq!(after, expected_after);
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(out.join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        kustomization["resources"].as_array().unwrap().len(),
        MACHINES - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_secret_in_the_cluster() {
    let bed = bed("import-secret").await;
    bed.credentials("compshare-keys").await;
    let secret = format!("{}/compshare-keys", bed.namespace);
    let mut command = import(&bed);
    command
        .env_remove("COMPSHARE_PUBLIC_KEY")
        .env_remove("COMPSHARE_PRIVATE_KEY")
        .args(["--credentials-secret", &secret, "--region", SH2])
        .args(["--namespace", &bed.namespace]);
    let outcome = run(command).await;
    let manifests = outcome.manifests();
    assert_eq!(manifests.len(), MACHINES - IN_WLCB);
    for m in &manifests {
        // The Secret's name is the default credentialsRef.
        assert_eq!(
            m.spec.credentials_ref.as_ref().unwrap().name,
            "compshare-keys"
        );
        assert_eq!(m.metadata.namespace.as_deref(), Some(&*bed.namespace));
    }
    assert!(!outcome.stderr.contains(PRIVATE_KEY));

    let missing = import_with(
        &bed,
        &["--credentials-secret", &format!("{}/nope", bed.namespace)],
    )
    .await;
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
}
