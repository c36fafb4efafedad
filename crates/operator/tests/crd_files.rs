//! `crds/` and the chart's `crds/` hold exactly what `compshare-operator crd` prints, so the CRD a
//! user installs is the one the code was built against. After changing the API types, regenerate
//! with `cargo run -- crd > crds/compshareinstances.compshare.ucloud.cn.yaml` and copy it to
//! `charts/compshare-operator/crds/`.

const FILE: &str = "compshareinstances.compshare.ucloud.cn.yaml";

#[test]
fn committed_crds_match_the_generated_crd() {
    let generated = compshare_operator::resource::crd_yaml();
    for dir in ["crds", "charts/compshare-operator/crds"] {
        let path = format!("{dir}/{FILE}");
        assert!(
            compshare_test_support::repo_file(&path) == generated,
            "{path} differs from `compshare-operator crd`; regenerate it"
        );
    }
}

#[test]
fn the_crd_command_prints_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_compshare-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        compshare_operator::resource::crd_yaml()
    );
}
