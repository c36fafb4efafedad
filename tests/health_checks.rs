//! The Argo CD health script and the Flux health expressions shipped in `integrations/`, run the way
//! those tools run them (Lua 5.1 as in gopher-lua; CEL with the object's fields as variables), over
//! the statuses the operator writes.

use std::path::Path;

use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason,
        "message": format!("{type_} {status}: {reason}"),
        "lastTransitionTime": "2026-11-26T10:00:00Z", "observedGeneration": 1,
    })
}

/// A CompShareInstance at generation 1 with the given status (`None`: no status yet).
fn instance(status: Option<Value>) -> Value {
    let mut o = json!({
        "apiVersion": "compshare.ucloud.cn/v1alpha1",
        "kind": "CompShareInstance",
        "metadata": {"name": "gpu", "namespace": "team", "generation": 1},
        "spec": {"uhostId": "uhost-1", "region": "cn-wlcb"},
    });
    if let Some(status) = status {
        o["status"] = status;
    }
    o
}

fn with_conditions(state: Option<&str>, conditions: &[Value]) -> Value {
    let mut status = json!({"observedGeneration": 1, "conditions": conditions});
    if let Some(state) = state {
        status["state"] = json!(state);
    }
    instance(Some(status))
}

/// The cases and what each tool must say: (name, object, Argo CD status, Flux verdict).
fn cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let healthy = [
        condition("Ready", "True", "Running"),
        condition("Synced", "True", "Observed"),
    ];
    let mut new_generation = with_conditions(Some("Running"), &healthy);
    new_generation["metadata"]["generation"] = json!(2);
    vec![
        ("no status yet", instance(None), "Progressing", "inProgress"),
        (
            "awaiting the first observation",
            with_conditions(
                None,
                &[
                    condition("Ready", "Unknown", "AwaitingFirstObservation"),
                    condition("Synced", "Unknown", "AwaitingFirstObservation"),
                    condition("Reconciling", "True", "AwaitingFirstObservation"),
                ],
            ),
            "Progressing",
            "inProgress",
        ),
        (
            "running",
            with_conditions(Some("Running"), &healthy),
            "Healthy",
            "current",
        ),
        (
            "spec changed, not yet observed",
            new_generation,
            "Progressing",
            "inProgress",
        ),
        (
            "starting",
            with_conditions(
                Some("Starting"),
                &[
                    condition("Ready", "False", "Starting"),
                    condition("Synced", "True", "Observed"),
                    condition("Reconciling", "True", "Starting"),
                ],
            ),
            "Progressing",
            "inProgress",
        ),
        (
            "stopped on purpose",
            with_conditions(
                Some("Stopped"),
                &[
                    condition("Ready", "False", "Stopped"),
                    condition("Synced", "True", "Observed"),
                ],
            ),
            "Suspended",
            "inProgress",
        ),
        (
            "deleted in the cloud",
            with_conditions(
                Some("Running"),
                &[
                    condition("Ready", "False", "NotFound"),
                    condition("Synced", "True", "Observed"),
                    condition("Stalled", "True", "NotFound"),
                ],
            ),
            "Degraded",
            "failed",
        ),
        (
            "install failed",
            with_conditions(
                Some("Install Fail"),
                &[
                    condition("Ready", "False", "InstallFailed"),
                    condition("Synced", "True", "Observed"),
                    condition("Stalled", "True", "InstallFailed"),
                ],
            ),
            "Degraded",
            "failed",
        ),
        (
            "observation failing (throttled), last known Running",
            with_conditions(
                Some("Running"),
                &[
                    condition("Ready", "True", "Running"),
                    condition("Synced", "False", "Throttled"),
                ],
            ),
            "Degraded",
            "current",
        ),
        (
            "credentials missing",
            with_conditions(
                None,
                &[
                    condition("Ready", "False", "CredentialsMissing"),
                    condition("Synced", "False", "CredentialsMissing"),
                    condition("Stalled", "True", "CredentialsMissing"),
                ],
            ),
            "Degraded",
            "failed",
        ),
        (
            "paused",
            with_conditions(
                Some("Running"),
                &[
                    condition("Ready", "True", "Running"),
                    condition("Synced", "True", "Observed"),
                    condition("Paused", "True", "PausedByAnnotation"),
                ],
            ),
            "Suspended",
            "current",
        ),
    ]
}

fn argocd_health(script: &str, object: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    use mlua::serde::SerializeOptions;
    let lua = mlua::Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).unwrap();
    lua.globals().set("obj", obj).unwrap();
    let hs: mlua::Table = lua.load(script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

#[test]
fn argocd_health_script() {
    let script = repo_file("integrations/argocd/health.lua");
    for (name, object, expected, _) in cases() {
        let (status, message) = argocd_health(&script, &object);
        assert_eq!(status, expected, "{name}");
        assert!(!message.is_empty(), "{name}: empty message");
    }
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

/// Flux's verdict: failed, then current, then in progress, as kustomize-controller evaluates them.
fn flux_verdict(exprs: &Value, object: &Value) -> &'static str {
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
    if holds("failed") {
        "failed"
    } else if holds("inProgress") {
        "inProgress"
    } else if holds("current") {
        "current"
    } else {
        "inProgress"
    }
}

#[test]
fn flux_health_expressions() {
    let kustomization: Value =
        serde_saphyr::from_str(&repo_file("integrations/flux/kustomization-health.yaml")).unwrap();
    let exprs = &kustomization["spec"]["healthCheckExprs"][0];
    assert_eq!(exprs["kind"], "CompShareInstance");
    assert_eq!(exprs["apiVersion"], "compshare.ucloud.cn/v1alpha1");
    for (name, object, _, expected) in cases() {
        assert_eq!(flux_verdict(exprs, &object), expected, "{name}");
    }
}
