//! The Helm chart: it lints and renders as documented, and the operator works with exactly the
//! RBAC it grants (running as the chart's ServiceAccount against the real apiserver), across
//! namespaces, with default credentials allowed in some namespaces only.
//!
//! A test binary of its own: the operator here watches every namespace.

use std::time::Duration;

use compshare_test_support::chart::{FULLNAME, as_installed, chart_dir, helm, install, render};
use compshare_test_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

/// `Kind/name` of each document, sorted (helm orders them by kind for installation).
fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn the_chart_lints_and_renders_as_documented() {
    let output = helm(&["lint", "--strict", chart_dir().to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let docs = render("ops", &[]).unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole/cs-compshare-operator",
            "ClusterRoleBinding/cs-compshare-operator",
            "Deployment/cs-compshare-operator",
            "Lease/cs-compshare-operator",
            "Role/cs-compshare-operator-leader-election",
            "RoleBinding/cs-compshare-operator-leader-election",
            "Service/cs-compshare-operator-metrics",
            "ServiceAccount/cs-compshare-operator",
        ]
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(container["image"], "compshare-operator:0.1.0");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    let rules = &docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap()["rules"];
    let secrets = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["secrets"]))
        .unwrap();
    assert_eq!(
        secrets["verbs"],
        json!(["get", "create", "patch", "delete"]),
        "never list or watch Secrets"
    );

    // The resource itself: read, and patched only for a managed machine's finalizer and
    // annotations (never updated, created or deleted).
    let resources = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["compshareinstances"]))
        .unwrap();
    assert_eq!(resources["verbs"], json!(["get", "list", "watch", "patch"]));
    // Discovery: its own objects read and their status written; CompShareInstances also created
    // and deleted (only those a discovery owns, which the operator checks), never updated.
    let verbs_of = |resource: &str| -> Vec<Value> {
        rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"] == json!([resource]))
            .flat_map(|r| r["verbs"].as_array().unwrap().clone())
            .collect()
    };
    assert_eq!(
        verbs_of("compsharediscoveries"),
        json!(["get", "list", "watch"]).as_array().unwrap().clone()
    );
    assert_eq!(
        verbs_of("compsharediscoveries/status"),
        json!(["patch"]).as_array().unwrap().clone()
    );
    assert_eq!(
        verbs_of("compshareinstances"),
        json!(["get", "list", "watch", "patch", "create", "delete"])
            .as_array()
            .unwrap()
            .clone()
    );
    // Management is off unless namespaces are listed; grants go with default credentials.
    let env = |docs: &[Value]| -> Vec<(String, String)> {
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    assert!(
        !env(&docs)
            .iter()
            .any(|(k, _)| k == "COMPSHARE_MANAGEMENT_NAMESPACES"),
        "no management by default"
    );
    let managed = render(
        "ops",
        &[
            "management.allowedNamespaces={ml,batch}",
            "defaultCredentials.existingSecret=keys",
            "defaultCredentials.allowedNamespaces={ml}",
            "defaultCredentials.grants={ml=manage@own,ops=connection}",
        ],
    )
    .unwrap();
    let managed = env(&managed);
    for (key, value) in [
        ("COMPSHARE_MANAGEMENT_NAMESPACES", "ml,batch"),
        (
            "COMPSHARE_DEFAULT_CREDENTIALS_GRANTS",
            "ml=manage@own,ops=connection",
        ),
    ] {
        assert!(
            managed.contains(&(key.to_owned(), value.to_owned())),
            "{key}={value} in {managed:?}"
        );
    }

    // A shard observes the resources labelled with its key (Flux's convention), or any selector.
    let sharded = env(&render("ops", &["shard=gpu-a"]).unwrap());
    assert!(
        sharded.contains(&(
            "COMPSHARE_WATCH_LABEL_SELECTOR".to_owned(),
            "sharding.fluxcd.io/key=gpu-a".to_owned()
        )),
        "{sharded:?}"
    );
    let selected = env(&render("ops", &["watchLabelSelector=team in (ml)"]).unwrap());
    assert!(
        selected.contains(&(
            "COMPSHARE_WATCH_LABEL_SELECTOR".to_owned(),
            "team in (ml)".to_owned()
        )),
        "{selected:?}"
    );
    assert!(
        !env(&docs)
            .iter()
            .any(|(k, _)| k == "COMPSHARE_WATCH_LABEL_SELECTOR"),
        "every resource by default"
    );
    let error = render("ops", &["shard=a", "watchLabelSelector=x=y"]).unwrap_err();
    assert!(error.contains("shard or watchLabelSelector"), "{error}");

    // Scoped to one namespace, every grant is a Role there; default credentials add a Role
    // for that one Secret in the release namespace.
    let docs = render(
        "ops",
        &[
            "watchNamespace=team",
            "defaultCredentials.existingSecret=keys",
            "metrics.serviceMonitor.enabled=true",
        ],
    )
    .unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "Deployment/cs-compshare-operator",
            "Lease/cs-compshare-operator",
            "Role/cs-compshare-operator",
            "Role/cs-compshare-operator-default-credentials",
            "Role/cs-compshare-operator-leader-election",
            "RoleBinding/cs-compshare-operator",
            "RoleBinding/cs-compshare-operator-default-credentials",
            "RoleBinding/cs-compshare-operator-leader-election",
            "Service/cs-compshare-operator-metrics",
            "ServiceAccount/cs-compshare-operator",
            "ServiceMonitor/cs-compshare-operator",
        ]
    );
    let role = docs
        .iter()
        .find(|d| {
            d["metadata"]["name"] == "cs-compshare-operator-default-credentials"
                && d["kind"] == "Role"
        })
        .unwrap();
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(role["rules"][0]["resourceNames"], json!(["keys"]));

    // Several replicas elect a leader, and keep one through voluntary disruptions.
    let docs = render("ops", &["replicaCount=2"]).unwrap();
    assert!(kinds(&docs).contains(&"PodDisruptionBudget/cs-compshare-operator".to_owned()));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env.iter().any(|e| e["name"] == "POD_NAMESPACE"));
    assert!(
        env.iter()
            .any(|e| e["name"] == "COMPSHARE_LEASE_NAME" && e["value"] == FULLNAME)
    );
    // The Lease is the only one the operator may touch, but for creating it.
    let role = docs
        .iter()
        .find(|d| {
            d["metadata"]["name"] == "cs-compshare-operator-leader-election" && d["kind"] == "Role"
        })
        .unwrap();
    assert_eq!(role["rules"][0]["verbs"], json!(["create"]));
    assert_eq!(role["rules"][1]["resourceNames"], json!([FULLNAME]));

    // Mistakes fail at install time with a message.
    let error = render("ops", &["replicaCount=2", "leaderElection.enabled=false"]).unwrap_err();
    assert!(error.contains("leaderElection.enabled"), "{error}");
    let error = render("ops", &["defaultCredentials.create=true"]).unwrap_err();
    assert!(
        error.contains("defaultCredentials.publicKey is required"),
        "{error}"
    );
    let docs = render(
        "ops",
        &[
            "defaultCredentials.create=true",
            "defaultCredentials.publicKey=p",
            "defaultCredentials.privateKey=k",
        ],
    )
    .unwrap();
    assert!(kinds(&docs).contains(&"Secret/cs-compshare-operator-default-credentials".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_charts_rbac_and_keeps_namespaces_apart() {
    let bed = Bed::new(
        "ops",
        vec![running("uhost-a", "1.2.3.4"), running("uhost-b", "1.2.3.5")],
    )
    .await;
    let cp = bed.control_plane;
    let team_a = cp.create_namespace("team-a").await.unwrap();
    let team_b = cp.create_namespace("team-b").await.unwrap();
    let kubeconfig = install(
        &bed,
        &bed.namespace,
        &[
            "defaultCredentials.existingSecret=default-keys",
            &format!("defaultCredentials.allowedNamespaces={{{team_a}}}"),
        ],
    )
    .await;
    bed.credentials("default-keys").await;
    let (a, b) = (bed.view(&team_a), bed.view(&team_b));
    a.credentials("keys").await;

    // Team A: default credentials allowed; its own Secret; a connection Secret.
    a.create(
        "default",
        json!({"uhostId": "uhost-a", "region": "cn-wlcb", "pollInterval": "10s"}),
    )
    .await;
    a.create(
        "own",
        json!({
            "uhostId": "uhost-b", "region": "cn-wlcb", "pollInterval": "10s",
            "credentialsRef": {"name": "keys"}, "writeConnectionSecretToRef": {"name": "own-ssh"},
        }),
    )
    .await;
    // Team B: no default credentials, and A's Secret is not B's.
    b.create(
        "default",
        json!({"uhostId": "uhost-a", "region": "cn-wlcb", "pollInterval": "10s"}),
    )
    .await;
    b.create("borrowed", json!({
        "uhostId": "uhost-a", "region": "cn-wlcb", "pollInterval": "10s", "credentialsRef": {"name": "keys"},
    }))
    .await;

    let operator = as_installed(&bed, &kubeconfig, &bed.namespace)
        .cluster_wide()
        .arg("--default-credentials-secret")
        .arg(format!("{}/default-keys", bed.namespace))
        .arg("--default-credentials-namespaces")
        .arg(team_a.clone())
        .start()
        .await;

    let settle = Duration::from_secs(30);
    let o = a.wait_for("default", "synced", settle, is_synced).await;
    assert_eq!(condition(&o, "Ready"), Some(("True", "Running")));
    a.wait_for("own", "synced", settle, is_synced).await;
    a.wait_for(
        "own",
        "holding its Secret",
        settle,
        maintains_secret("own-ssh"),
    )
    .await;
    assert!(a.secrets().get_opt("own-ssh").await.unwrap().is_some());

    let o = b
        .wait_for("default", "refused default credentials", settle, |o| {
            condition(o, "Stalled") == Some(("True", "DefaultCredentialsNotAllowed"))
        })
        .await;
    let text = message(&o, "Stalled");
    assert!(
        text.contains(&format!("namespace {team_b} may not use")),
        "{text}"
    );
    let o = b
        .wait_for("borrowed", "without credentials", settle, |o| {
            condition(o, "Stalled") == Some(("True", "CredentialsMissing"))
        })
        .await;
    let text = message(&o, "Stalled");
    assert_eq!(text, format!("Secret {team_b}/keys does not exist"));

    // Nothing failed for want of a permission.
    let logs = operator.logs();
    assert!(
        !logs.contains("forbidden") && !logs.contains("Forbidden"),
        "{logs}"
    );
    operator.assert_no_failed_reconciles().await;

    // What the chart grants: no listing of Secrets anywhere.
    let as_operator = compshare_testbed::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(as_operator, &team_a);
    let error = secrets
        .list(&ListParams::default())
        .await
        .expect_err("no list on Secrets");
    assert!(error.to_string().contains("forbidden"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_to_one_namespace_the_operator_cannot_read_other_secrets() {
    let bed = Bed::new("scoped", vec![running("uhost-a", "1.2.3.4")]).await;
    let cp = bed.control_plane;
    let release = cp.create_namespace("scoped-ops").await.unwrap();
    let kubeconfig = install(
        &bed,
        &release,
        &[&format!("watchNamespace={}", bed.namespace)],
    )
    .await;
    let ops = bed.view(&release);
    ops.credentials("not-granted").await;
    bed.credentials("keys").await;
    bed.create("a", spec("uhost-a")).await;
    let _operator = as_installed(&bed, &kubeconfig, &release).start().await;
    bed.wait_for("a", "synced", Duration::from_secs(30), is_synced)
        .await;

    let as_operator = compshare_testbed::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let elsewhere: Api<Secret> = Api::namespaced(as_operator.clone(), &release);
    let error = elsewhere
        .get("not-granted")
        .await
        .expect_err("a Secret the chart does not grant");
    assert!(error.to_string().contains("forbidden"), "{error}");
    let here: Api<Secret> = Api::namespaced(as_operator, &bed.namespace);
    here.get("keys")
        .await
        .expect("a Secret in the watched namespace");
}
