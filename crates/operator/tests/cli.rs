//! What the command line refuses before anything starts.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    // Whatever it refuses, it must refuse before reaching for a cluster.
    run_with_kubeconfig(args, Path::new("/nonexistent/kubeconfig"))
}

fn run_with_kubeconfig(args: &[&str], kubeconfig: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_compshare-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("COMPSHARE_ALLOW_INSECURE_HTTP")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_plain_http_endpoint_needs_an_explicit_flag() {
    let (ok, text) = run(&["run", "--endpoint", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(
        text.contains("uses plain HTTP; pass --allow-insecure-http"),
        "{text}"
    );

    // With the flag it goes on (and stops at the missing kubeconfig), warning first.
    let (ok, text) = run(&[
        "run",
        "--endpoint",
        "http://127.0.0.1:9",
        "--allow-insecure-http",
    ]);
    assert!(!ok);
    assert!(
        text.contains("CompShare endpoint uses plain HTTP"),
        "{text}"
    );
    assert!(text.contains("no Kubernetes configuration"), "{text}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    for (args, expected) in [
        (
            &["run", "--default-poll-interval", "5s"][..],
            "must be between",
        ),
        (
            &["run", "--endpoint", "ftp://example.com"][..],
            "is not an http(s) URL",
        ),
        (
            &["run", "--default-credentials-secret", "no-namespace"][..],
            "is not NAMESPACE/NAME",
        ),
        (
            &["run", "--account-calls-per-minute", "0"][..],
            "invalid value",
        ),
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?} accepted");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

#[test]
fn a_taken_metrics_port_stops_it_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // A kubeconfig that loads (nothing is contacted before the port is bound).
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\n",
    )
    .unwrap();
    let (ok, text) = run_with_kubeconfig(&["run", "--metrics-address", &address], &kubeconfig);
    assert!(!ok);
    assert!(text.contains(&format!("listening on {address}")), "{text}");
}
