//! What each GitOps tool says of a `CompShareInstance`, in every situation, is exactly the table in
//! the README ("What each tool reports"). The objects are real: made by the operator from the
//! simulator on a real kube-apiserver, or taken as a watcher sees them (the create response, the
//! watch's ADDED event, a spec edit's response). The verdicts are the tools' own: `kubectl wait`
//! (the test bed's kubectl), kstatus (`sigs.k8s.io/cli-utils`), Argo CD (its `util/lua` VM over the
//! shipped `health.lua`) and Flux (its CEL status reader over the shipped `healthCheckExprs`), run
//! by the test bed's `gitops-verdicts`. The same script under Lua 5.1 and the same expressions under
//! another CEL implementation must agree.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use compshare_operator::resource::{CompShareInstance, PAUSED_ANNOTATION, REFRESH_ANNOTATION};
use compshare_simulator::Fixture;
use compshare_test_support::*;
use futures::TryStreamExt;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(30);
const THROTTLED_KEY: &str = "throttled-public-key";

/// One row of the README's table: what each tool reports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Verdicts {
    wait_ready: String,
    wait_running: String,
    kstatus: String,
    argocd: String,
    flux: String,
}

/// An object to judge, and the README row it belongs to. `live` objects are also judged by
/// `kubectl wait`, which reads the object on the apiserver.
struct Case {
    situation: &'static str,
    object: Value,
    live: Option<String>,
}

/// The README's table, by situation.
fn readme_table() -> BTreeMap<String, Verdicts> {
    let readme = repo_file("README.md");
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| Situation |"));
    let header = lines.next().expect("the README has the table of verdicts");
    let columns: Vec<String> = cells(header);
    assert_eq!(
        columns,
        [
            "Situation",
            "status.state",
            "kubectl wait --for=condition=Ready",
            "kubectl wait --for=condition=Running",
            "kstatus (Flux, kpt, Config Sync)",
            "Argo CD",
            "Flux healthCheckExprs",
        ],
        "the table's columns"
    );
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let c = cells(line);
            (
                c[0].clone(),
                Verdicts {
                    wait_ready: c[2].clone(),
                    wait_running: c[3].clone(),
                    kstatus: c[4].clone(),
                    argocd: c[5].clone(),
                    flux: c[6].clone(),
                },
            )
        })
        .collect()
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().replace('`', ""))
        .collect()
}

fn instance(id: &str, state: &str) -> Value {
    let mut i = running(id, "117.50.1.2");
    i["State"] = json!(state);
    i
}

/// The states the simulator serves, by the README's situation (and resource name).
const STATES: [(&str, &str, &str); 10] = [
    ("Running", "running", "Running"),
    ("Starting", "starting", "Starting"),
    ("Install", "install", "Install"),
    ("Stopping", "stopping", "Stopping"),
    ("Stopped", "stopped", "Stopped"),
    ("Rebooting", "rebooting", "Rebooting"),
    ("Resizing", "resizing", "Resizing"),
    ("Install Fail", "install-fail", "Install Fail"),
    ("state unreadable", "unreadable", ""),
    (
        "a state this operator does not know",
        "unfamiliar",
        "Hibernating",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_reads_every_state_as_the_readme_says() {
    let table = readme_table();
    let mut instances: Vec<Value> = STATES
        .iter()
        .map(|(_, name, state)| {
            let mut i = instance(&format!("uhost-{name}"), state);
            i["Owner"] = json!(PUBLIC_KEY);
            i
        })
        .collect();
    for name in ["paused", "edited", "locked", "release"] {
        let mut i = instance(&format!("uhost-{name}"), "Running");
        i["Owner"] = json!(PUBLIC_KEY);
        instances.push(i);
    }
    let mut purpose = instance("uhost-purpose", "Stopped");
    purpose["Owner"] = json!(PUBLIC_KEY);
    instances.push(purpose);
    let mut throttled = instance("uhost-throttled", "Running");
    throttled["Owner"] = json!(THROTTLED_KEY);
    instances.push(throttled);
    let fixture = Fixture::builder()
        .account(PUBLIC_KEY, PRIVATE_KEY)
        .project(PROJECT_ID)
        .account(THROTTLED_KEY, PRIVATE_KEY)
        .capacity("cn-wlcb-02", "4090", 0)
        .instances(instances)
        .build()
        .unwrap();
    let bed = Bed::with_fixture("verdicts", fixture).await;
    bed.credentials("keys").await;
    bed.secret(
        "throttled-keys",
        &[("publicKey", THROTTLED_KEY), ("privateKey", PRIVATE_KEY)],
    )
    .await;
    bed.secret(
        "wrong-keys",
        &[
            ("publicKey", PUBLIC_KEY),
            ("privateKey", "not-the-private-key"),
        ],
    )
    .await;

    let mut observed = Vec::new();
    for (situation, name, _) in STATES {
        bed.create(name, spec(&format!("uhost-{name}"))).await;
        observed.push((situation, name));
    }
    for name in ["paused", "edited"] {
        bed.create(name, spec(&format!("uhost-{name}"))).await;
    }
    bed.create("not-found", spec("uhost-gone")).await;
    let mut rejected = spec("uhost-running");
    rejected["credentialsRef"]["name"] = json!("wrong-keys");
    bed.create("rejected", rejected).await;
    let mut throttled = spec("uhost-throttled");
    throttled["credentialsRef"]["name"] = json!("throttled-keys");
    bed.create("throttled", throttled).await;
    observed.extend([
        ("NotFound", "not-found"),
        ("credentials rejected", "rejected"),
    ]);

    let operator = bed
        .operator()
        .arg("--management-namespaces")
        .arg(bed.namespace.clone())
        .start()
        .await;
    let names: Vec<&str> = observed
        .iter()
        .map(|(_, n)| *n)
        .chain(["paused", "edited", "throttled"])
        .collect();
    for name in &names {
        bed.wait_for(name, "observed", SETTLE, answered).await;
    }
    // A new resource costs one status write, its first observation, as the apiserver counts.
    assert_eq!(
        apiserver_writes(&bed.client, "compshareinstances", Some("status")).await,
        names.len() as f64,
        "status writes for {} new resources",
        names.len()
    );
    // Throttled after a good observation: a passing failure.
    bed.inject(json!({"kind": "throttle", "publicKey": THROTTLED_KEY}))
        .await;
    bed.annotate("throttled", REFRESH_ANNOTATION, Some("now"))
        .await;
    bed.wait_for("throttled", "throttled", SETTLE, |o| {
        condition(o, "Synced") == Some(("False", "Throttled"))
    })
    .await;
    bed.annotate("paused", PAUSED_ANNOTATION, Some("true"))
        .await;
    bed.wait_for("paused", "paused", SETTLE, |o| {
        condition(o, "Paused").is_some()
    })
    .await;
    // Managed machines: stopped on purpose; asked to stop while another operation holds it;
    // being created in a zone without capacity; deleted, with its credentials gone.
    bed.allow_state_changes();
    bed.secret(MACHINE_PASSWORD_SECRET, &[("password", MACHINE_PASSWORD)])
        .await;
    bed.credentials("release-keys").await;
    bed.simulator_admin
        .lock_instance("uhost-locked", Duration::from_secs(600))
        .await
        .unwrap();
    let managed = |id: &str, change: Value| {
        let mut spec = spec(id);
        spec["managementPolicy"] = json!("Manage");
        for (k, v) in change.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    bed.create(
        "purpose",
        managed("uhost-purpose", json!({"powerState": "Stopped"})),
    )
    .await;
    bed.create(
        "asked-to-stop",
        managed("uhost-locked", json!({"powerState": "Stopped"})),
    )
    .await;
    let mut creating = machine_spec();
    creating["zone"] = json!("cn-wlcb-02");
    bed.create("creating", creating).await;
    bed.create(
        "release-blocked",
        managed(
            "uhost-release",
            json!({"deletionPolicy": "Delete", "credentialsRef": {"name": "release-keys"}}),
        ),
    )
    .await;
    bed.wait_for("purpose", "settled", SETTLE, |o| {
        answered(o) && condition(o, "Ready").is_some_and(|(s, _)| s == "True")
    })
    .await;
    bed.wait_for("asked-to-stop", "locked", SETTLE, |o| {
        condition(o, "Reconciling") == Some(("True", "InstanceLocked"))
    })
    .await;
    bed.wait_for("creating", "waiting for capacity", SETTLE, |o| {
        condition(o, "Reconciling") == Some(("True", "WaitingForCapacity"))
    })
    .await;
    bed.wait_for("release-blocked", "observed", SETTLE, |o| {
        answered(o)
            && !o
                .metadata
                .finalizers
                .as_deref()
                .unwrap_or_default()
                .is_empty()
    })
    .await;
    bed.secrets()
        .delete("release-keys", &Default::default())
        .await
        .unwrap();
    bed.instances()
        .delete("release-blocked", &Default::default())
        .await
        .unwrap();
    bed.wait_for("release-blocked", "blocked", SETTLE, |o| {
        condition(o, "Stalled") == Some(("True", "ReleaseBlocked"))
    })
    .await;

    // From here on, nothing changes the objects: what watchers see of a new resource and of a
    // spec edit stays what they see until an operator observes them.
    assert_eq!(operator.stop().map(|s| s.success()), Some(true));

    let edited = bed
        .instances()
        .patch(
            "edited",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pollInterval": "20s"}})),
        )
        .await
        .unwrap();
    let (created, added) = create_while_watching(&bed, "fresh").await;

    let mut cases: Vec<Case> = observed
        .into_iter()
        .chain([
            ("throttled (transient), last seen Running", "throttled"),
            ("paused, last seen Running", "paused"),
            ("spec edited, not observed yet", "edited"),
            ("just created", "fresh"),
            ("stopped on purpose (powerState: Stopped)", "purpose"),
            (
                "asked to stop, the machine locked by another operation",
                "asked-to-stop",
            ),
            ("being created, waiting for capacity", "creating"),
            ("deleted, its machine cannot be released", "release-blocked"),
        ])
        .map(|(situation, name)| Case {
            situation,
            object: Value::Null,
            live: Some(name.to_owned()),
        })
        .collect();
    for case in &mut cases {
        let name = case.live.as_deref().unwrap();
        case.object = serde_json::to_value(bed.get(name).await).unwrap();
    }
    cases.push(Case {
        situation: "spec edited, not observed yet",
        object: serde_json::to_value(&edited).unwrap(),
        live: None,
    });
    cases.push(Case {
        situation: "just created",
        object: serde_json::to_value(&created).unwrap(),
        live: None,
    });
    cases.push(Case {
        situation: "just created",
        object: serde_json::to_value(&added).unwrap(),
        live: None,
    });

    let tools = tool_verdicts(&cases.iter().map(|c| &c.object).collect::<Vec<_>>());
    let script = repo_file("integrations/argocd/health.lua");
    let exprs = flux_exprs();
    let mut failures = Vec::new();
    let mut judged = std::collections::BTreeSet::new();
    for (case, (kstatus, argocd, flux)) in cases.iter().zip(tools) {
        let expected = table
            .get(case.situation)
            .unwrap_or_else(|| panic!("the README's table has no row {:?}", case.situation));
        judged.insert(case.situation);
        let mut check = |tool: &str, got: &str, want: &str| {
            if got != want {
                failures.push(format!(
                    "{} ({}): {tool} says {got}, the README says {want}",
                    case.situation,
                    if case.live.is_some() {
                        "live object"
                    } else {
                        "as a watcher saw it"
                    }
                ));
            }
        };
        check("kstatus", &kstatus, &expected.kstatus);
        check("Argo CD", &argocd, &expected.argocd);
        check("Flux", &flux, &expected.flux);
        check(
            "Argo CD's script under Lua 5.1",
            &lua51_health(&script, &case.object),
            &expected.argocd,
        );
        check(
            "Flux's expressions under cel-rust",
            &cel_rust_verdict(&exprs, &case.object),
            &expected.flux,
        );
        if let Some(name) = &case.live {
            check(
                "kubectl wait --for=condition=Ready",
                &kubectl_wait(&bed, name, "Ready"),
                &expected.wait_ready,
            );
            check(
                "kubectl wait --for=condition=Running",
                &kubectl_wait(&bed, name, "Running"),
                &expected.wait_running,
            );
        }
    }
    let unjudged: Vec<&String> = table
        .keys()
        .filter(|s| !judged.contains(s.as_str()))
        .collect();
    assert!(unjudged.is_empty(), "rows no test judges: {unjudged:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The operator has answered the resource's generation.
fn answered(o: &CompShareInstance) -> bool {
    o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
}

/// Creates `name` while a watch is open; the create response and the watch's ADDED event.
async fn create_while_watching(bed: &Bed, name: &str) -> (CompShareInstance, CompShareInstance) {
    let api = bed.instances();
    let list = api.list(&Default::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let watch = api
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &version,
        )
        .await
        .unwrap();
    let object: CompShareInstance = serde_json::from_value(json!({
        "apiVersion": "compshare.ucloud.cn/v1alpha1", "kind": "CompShareInstance",
        "metadata": {"name": name}, "spec": spec("uhost-running"),
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    let mut watch = std::pin::pin!(watch);
    let added = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watch.try_next().await.unwrap() {
            if let WatchEvent::Added(o) = event {
                return o;
            }
        }
        panic!("the watch ended without an ADDED event");
    })
    .await
    .expect("an ADDED event");
    (created, added)
}

/// `kubectl wait --timeout=0s`: "returns" when the condition holds now, "waits" otherwise.
fn kubectl_wait(bed: &Bed, name: &str, condition: &str) -> String {
    let output = bed.control_plane.kubectl([
        "--namespace",
        &bed.namespace,
        "wait",
        &format!("--for=condition={condition}"),
        "--timeout=0s",
        &format!("compshareinstance/{name}"),
    ]);
    if output.status.success() {
        "returns".to_owned()
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // With --timeout=0s kubectl checks once: "condition not met".
        assert!(
            stderr.contains("condition not met") || stderr.contains("timed out"),
            "kubectl wait failed otherwise than by waiting: {stderr}"
        );
        "waits".to_owned()
    }
}

/// (kstatus, Argo CD, Flux) for each object, from the tools' own code.
fn tool_verdicts(objects: &[&Value]) -> Vec<(String, String, String)> {
    let bin = compshare_testbed::binaries().expect("the test bed's binaries");
    let root = repo_root();
    let mut child = Command::new(bin.join("gitops-verdicts"))
        .arg("--argocd-script")
        .arg(root.join("integrations/argocd/health.lua"))
        .arg("--flux-kustomization")
        .arg(root.join("integrations/flux/kustomization-health.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gitops-verdicts");
    let mut stdin = child.stdin.take().unwrap();
    for object in objects {
        writeln!(stdin, "{object}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "gitops-verdicts: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<(String, String, String)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let status = |tool: &str| {
                assert!(v[tool]["error"].is_null(), "{tool}: {}", v[tool]);
                v[tool]["status"].as_str().unwrap().to_owned()
            };
            (status("kstatus"), status("argocd"), status("flux"))
        })
        .collect();
    assert_eq!(verdicts.len(), objects.len());
    verdicts
}

/// The shipped script under Lua 5.1 (mlua), with the object as Argo CD hands it over.
fn lua51_health(script: &str, object: &Value) -> String {
    use mlua::LuaSerdeExt;
    use mlua::serde::SerializeOptions;
    let lua = mlua::Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).unwrap();
    lua.globals().set("obj", obj).unwrap();
    let hs: mlua::Table = lua.load(script).eval().unwrap();
    let message: String = hs.get("message").unwrap();
    assert!(!message.is_empty(), "an empty message");
    hs.get("status").unwrap()
}

fn flux_exprs() -> Value {
    let kustomization: Value =
        serde_saphyr::from_str(&repo_file("integrations/flux/kustomization-health.yaml")).unwrap();
    let exprs = kustomization["spec"]["healthCheckExprs"][0].clone();
    assert_eq!(exprs["kind"], "CompShareInstance");
    assert_eq!(exprs["apiVersion"], "compshare.ucloud.cn/v1alpha1");
    exprs
}

/// The expressions under cel-rust, in Flux's order: the generation, then inProgress, failed and
/// current; in progress when none holds.
fn cel_rust_verdict(exprs: &Value, object: &Value) -> String {
    let generation = &object["metadata"]["generation"];
    let observed = &object["status"]["observedGeneration"];
    if observed.is_i64() && observed != generation {
        return "InProgress".to_owned();
    }
    let mut context = cel::Context::default();
    for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
        let value = object.get(field).cloned().unwrap_or_else(|| json!({}));
        context.add_variable(field, value).unwrap();
    }
    let holds = |key: &str| {
        let source = exprs[key].as_str().unwrap_or_else(|| panic!("no {key}"));
        let program = cel::Program::compile(source).unwrap_or_else(|e| panic!("{key}: {e}"));
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{key} evaluated to {other:?}"),
        }
    };
    let verdict = if holds("inProgress") {
        "InProgress"
    } else if holds("failed") {
        "Failed"
    } else if holds("current") {
        "Current"
    } else {
        "InProgress"
    };
    verdict.to_owned()
}

#[test]
fn argocd_config_map_inlines_the_same_script() {
    let script = repo_file("integrations/argocd/health.lua");
    let cm: Value =
        serde_saphyr::from_str(&repo_file("integrations/argocd/argocd-cm.yaml")).unwrap();
    let inlined =
        cm["data"]["resource.customizations.health.compshare.ucloud.cn_CompShareInstance"]
            .as_str()
            .expect("the health key");
    assert_eq!(inlined, script);
}
