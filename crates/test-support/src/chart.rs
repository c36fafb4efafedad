//! The Helm chart as the tests use it: rendered by the test bed's `helm`, installed on the test
//! control plane, and the operator run as its Deployment would run it (with its ServiceAccount).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Bed, Namespace, OperatorBuilder, repo_root};

pub const RELEASE: &str = "cs";
/// The name the chart gives its objects for release `cs`: the ServiceAccount and the Lease.
pub const FULLNAME: &str = "cs-compshare-operator";

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/compshare-operator")
}

pub fn helm(args: &[&str]) -> std::process::Output {
    let helm = compshare_testbed::binaries().unwrap().join("helm");
    Command::new(helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("compshare-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("compshare-helm-config"),
        )
        .output()
        .expect("run helm")
}

/// `helm template` with `--set` values; the documents as JSON.
pub fn render(namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = helm(&args);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    Ok(text
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect())
}

/// Installs what the chart renders (its Deployment stays without pods: this control plane has no
/// scheduler or kubelet) and returns a kubeconfig for its ServiceAccount.
pub async fn install(bed: &Namespace, release_namespace: &str, sets: &[&str]) -> PathBuf {
    let docs = render(release_namespace, sets).unwrap();
    let manifest: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
        .collect();
    let file = std::env::temp_dir().join(format!("{release_namespace}-chart.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let output =
        bed.control_plane
            .kubectl(["apply", "--server-side", "-f", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    bed.control_plane
        .service_account_kubeconfig(release_namespace, FULLNAME)
        .await
        .unwrap()
}

/// The operator as the chart's Deployment runs it: with its ServiceAccount, and its Lease in the
/// release namespace.
pub fn as_installed(bed: &Bed, kubeconfig: &Path, release_namespace: &str) -> OperatorBuilder {
    bed.operator()
        .kubeconfig(kubeconfig)
        .arg("--leader-election-namespace")
        .arg(release_namespace)
        .arg("--lease-name")
        .arg(FULLNAME)
}
