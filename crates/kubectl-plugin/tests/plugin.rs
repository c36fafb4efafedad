//! `kubectl-compshare`, the real binary, against the test bed's control plane, the simulator and
//! the operator: `ssh` with a recording stand-in for ssh (the password reaches it through
//! SSH_ASKPASS only, once, and nowhere else), its refusals, `refresh`, `pause` and `resume` as the
//! operator sees them, and `import` printing what `compshare-operator import` prints.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compshare_operator::resource::{InstanceResource, PAUSED_ANNOTATION, REFRESH_ANNOTATION};
use compshare_test_support::*;
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(30);
/// The password of [`running`] instances, as the API sends it (Base64).
const PASSWORD_BASE64: &str = "c2VjcmV0LXBhc3N3b3JkLTQy";

/// How a run of the plugin ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The plugin with the bed's kubeconfig, an empty TMPDIR of the test's own (`tmp`), and ssh
/// replaced by `ssh` when given.
fn plugin(bed: &Bed, tmp: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-compshare"));
    command
        .args(args)
        .env("KUBECONFIG", bed.control_plane.kubeconfig_path())
        .env("TMPDIR", tmp)
        .env_remove("KUBECTL_COMPSHARE_SSH")
        .env_remove("KUBERNETES_SERVICE_HOST");
    command
}

async fn run(mut command: Command) -> Run {
    // The simulator answers on this test's runtime: the process is waited for on another thread.
    let output = tokio::task::spawn_blocking(move || command.output().expect("run the plugin"))
        .await
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A stand-in for ssh that records into `record` its arguments and environment, then does what
/// ssh does with SSH_ASKPASS (runs it with the prompt as its argument and reads its output) for a
/// password prompt, the same prompt again (a refused password), and a key's passphrase; it exits
/// with 7 so that the test sees ssh's exit code passed on.
fn stand_in(dir: &Path, record: &Path) -> std::path::PathBuf {
    let script = dir.join("ssh");
    let r = record.display();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
printf '%s\n' "$@" > {r}/argv
env > {r}/env
"$SSH_ASKPASS" "root@1.2.3.4's password: " > {r}/askpass 2> {r}/askpass.err; echo $? > {r}/askpass.code
"$SSH_ASKPASS" "root@1.2.3.4's password: " > {r}/again 2> {r}/again.err; echo $? > {r}/again.code
"$SSH_ASKPASS" "Enter passphrase for key '/root/.ssh/id_ed25519': " > {r}/passphrase 2>/dev/null; echo $? > {r}/passphrase.code
exit 7
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(&path));
        } else {
            all.push(path);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_hands_the_password_to_ssh_through_askpass_only() {
    let bed = Bed::new("plugin-ssh", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    let mut s = spec("uhost-a");
    s["writeConnectionSecretToRef"] = json!({"name": "a-ssh"});
    bed.create("a", s).await;
    let operator = bed.operator().start().await;
    bed.wait_for("a", "running with its connection Secret", SETTLE, |o| {
        maintains_secret("a-ssh")(o) && state(o) == Some("Running")
    })
    .await;

    let work = tempfile::tempdir().unwrap();
    let (tmp, record) = (work.path().join("tmp"), work.path().join("record"));
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(&record).unwrap();
    let ssh = stand_in(work.path(), &record);
    let mut command = plugin(
        &bed,
        &tmp,
        &[
            "ssh",
            "a",
            "-n",
            &bed.namespace,
            "--",
            "-L",
            "8888:localhost:8888",
            "nvidia-smi",
        ],
    );
    command.env("KUBECTL_COMPSHARE_SSH", &ssh);
    let run = run(command).await;

    assert_eq!(run.code, Some(7), "ssh's exit code: {}", run.stderr);
    assert_eq!(
        read(&record, "argv"),
        "-p\n60022\nroot@1.2.3.4\n-L\n8888:localhost:8888\nnvidia-smi\n"
    );
    // The password arrived through askpass, once: a second prompt gets nothing.
    assert_eq!(
        read(&record, "askpass.code"),
        "0\n",
        "{}",
        read(&record, "askpass.err")
    );
    assert_eq!(read(&record, "askpass"), format!("{PASSWORD}\n"));
    assert_ne!(read(&record, "again.code"), "0\n");
    assert_eq!(read(&record, "again"), "");
    assert!(read(&record, "again.err").contains("handed to ssh once already"));
    // A key's passphrase is not the machine's password.
    assert_ne!(read(&record, "passphrase.code"), "0\n");
    assert_eq!(read(&record, "passphrase"), "");

    let env = read(&record, "env");
    assert!(env.contains("SSH_ASKPASS_REQUIRE=force\n"), "{env}");
    assert!(
        env.contains(&format!(
            "SSH_ASKPASS={}\n",
            env!("CARGO_BIN_EXE_kubectl-compshare")
        )),
        "{env}"
    );
    // Nowhere but in askpass's answer: not in ssh's arguments or environment, not in the plugin's
    // output, not in any file left behind in its TMPDIR (which holds nothing at all).
    let left: Vec<_> = files(&tmp);
    for (place, text) in [
        ("ssh's arguments", read(&record, "argv")),
        ("ssh's environment", env),
        ("the plugin's stdout", run.stdout),
        ("the plugin's stderr", run.stderr),
    ] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(PASSWORD_BASE64),
            "the password is in {place}"
        );
    }
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_refuses_with_what_to_do() {
    let mut stopped = running("uhost-b", "1.2.3.5");
    stopped["State"] = json!("Stopped");
    let bed = Bed::new(
        "plugin-refusals",
        vec![running("uhost-a", "1.2.3.4"), stopped],
    )
    .await;
    bed.credentials("keys").await;
    bed.create("no-secret", spec("uhost-a")).await;
    let mut s = spec("uhost-b");
    s["writeConnectionSecretToRef"] = json!({"name": "b-ssh"});
    bed.create("stopped", s).await;
    let _operator = bed.operator().start().await;
    bed.wait_for("no-secret", "running", SETTLE, |o| {
        state(o) == Some("Running")
    })
    .await;
    bed.wait_for("stopped", "stopped with its Secret", SETTLE, |o| {
        maintains_secret("b-ssh")(o) && state(o) == Some("Stopped")
    })
    .await;

    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let ssh = stand_in(work.path(), &record);
    let ns = bed.namespace.as_str();
    let refused = async |args: &[&str], expected: &str| {
        let mut command = plugin(&bed, work.path(), args);
        command.env("KUBECTL_COMPSHARE_SSH", &ssh);
        let run = run(command).await;
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "{args:?}: {:?} lacks {expected:?}",
            run.stderr
        );
    };
    refused(
        &["ssh", "no-secret", "-n", ns],
        "has no connection Secret, where the operator keeps the machine's password: ask for one with spec.writeConnectionSecretToRef",
    )
    .await;
    refused(&["ssh", "stopped", "-n", ns], "is \"Stopped\", not Running").await;
    refused(
        &["ssh", "nothing", "-n", ns],
        &format!("CompShareInstance \"nothing\" not found in namespace \"{ns}\""),
    )
    .await;
    refused(
        &[
            "ssh",
            "a",
            "-n",
            ns,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        "reading --kubeconfig /nonexistent/kubeconfig",
    )
    .await;
    let mut command = plugin(&bed, work.path(), &["pause", "a", "-n", ns]);
    command.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let run = run(command).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no kubeconfig"), "{}", run.stderr);
    assert!(!record.join("argv").exists(), "ssh was run after a refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_pause_and_resume_reach_the_operator() {
    let bed = Bed::new("plugin-annotations", vec![running("uhost-a", "1.2.3.4")]).await;
    bed.credentials("keys").await;
    let mut slow = spec("uhost-a");
    slow["pollInterval"] = json!("1h");
    bed.create("a", slow).await;
    let operator = bed.operator().start().await;
    bed.wait_for("a", "synced", SETTLE, is_synced).await;
    let tmp = tempfile::tempdir().unwrap();
    let ns = bed.namespace.as_str();
    let ok = async |args: &[&str]| {
        let run = run(plugin(&bed, tmp.path(), args)).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        run.stdout
    };

    // Refresh: an hourly resource sees a change at once, and --wait returns when it has.
    bed.set_instance("uhost-a", json!({"State": "Stopped"}))
        .await;
    let out = ok(&["refresh", "a", "-n", ns, "--wait", "--timeout", "20s"]).await;
    assert!(
        out.contains("compshareinstance/a refreshed: state Stopped"),
        "{out}"
    );
    let a = bed.get("a").await;
    let requested = a.annotation(REFRESH_ANNOTATION).expect("the annotation");
    requested
        .parse::<jiff::Timestamp>()
        .expect("an RFC 3339 time");
    assert_eq!(
        a.status.as_ref().unwrap().last_handled_refresh.as_deref(),
        Some(requested)
    );
    let managers: Vec<_> = a
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.as_deref())
        .collect();
    assert!(managers.contains(&"kubectl-compshare"), "{managers:?}");

    // Pause: the operator says so; a refresh cannot be waited for meanwhile.
    assert_eq!(
        ok(&["pause", "a", "-n", ns]).await,
        "compshareinstance/a paused\n"
    );
    assert_eq!(
        bed.get("a").await.annotation(PAUSED_ANNOTATION),
        Some("true")
    );
    bed.wait_for("a", "paused", SETTLE, |o| {
        condition(o, "Paused") == Some(("True", "PausedByAnnotation"))
    })
    .await;
    let run = run(plugin(
        &bed,
        tmp.path(),
        &["refresh", "a", "-n", ns, "--wait"],
    ))
    .await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("is paused"), "{}", run.stderr);

    // Resume: the annotation goes and so does the condition.
    bed.set_instance("uhost-a", json!({"State": "Running"}))
        .await;
    assert_eq!(
        ok(&["resume", "a", "-n", ns]).await,
        "compshareinstance/a resumed\n"
    );
    assert_eq!(bed.get("a").await.annotation(PAUSED_ANNOTATION), None);
    let resumed = bed
        .wait_for("a", "resumed", SETTLE, |o| {
            condition(o, "Paused").is_none() && state(o) == Some("Running")
        })
        .await;
    assert_eq!(condition(&resumed, "Running"), Some(("True", "Running")));
    operator.assert_no_failed_reconciles().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_prints_what_the_operator_prints() {
    let bed = Bed::new(
        "plugin-import",
        vec![running("uhost-a", "1.2.3.4"), running("uhost-b", "1.2.3.5")],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    for format in ["yaml", "json"] {
        let flags = [
            "import",
            "--endpoint",
            &bed.simulator.endpoint(),
            "--allow-insecure-http",
            "--region",
            "cn-wlcb",
            "--namespace",
            "ml-team",
            "--credentials-ref",
            "keys",
            "-o",
            format,
        ]
        .map(str::to_owned);
        let mut outputs = Vec::new();
        for mut command in [
            Command::new(operator_binary()),
            plugin(&bed, tmp.path(), &[]),
        ] {
            command
                .args(&flags)
                .env("COMPSHARE_PUBLIC_KEY", PUBLIC_KEY)
                .env("COMPSHARE_PRIVATE_KEY", PRIVATE_KEY);
            let run = run(command).await;
            assert_eq!(run.code, Some(0), "{}", run.stderr);
            outputs.push(run.stdout);
        }
        assert!(outputs[0].contains("uhost-a") && outputs[0].contains("uhost-b"));
        assert_eq!(outputs[0], outputs[1], "-o {format}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_kubectl-compshare"))
        .arg("version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("kubectl-compshare {}\n", env!("CARGO_PKG_VERSION"))
    );
}
