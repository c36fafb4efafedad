//! `crds/` and the chart's `crds/` hold exactly what `compshare-operator crd` prints, so the CRDs a
//! user installs are the ones the code was built against. After changing the API types,
//! regenerate each file from `compshare_operator::resource::crd_files()` (the `crd` command prints
//! them all, one YAML document each, in that order) into `crds/` and
//! `charts/compshare-operator/crds/`.

#[test]
fn committed_crds_match_the_generated_crds() {
    let files = compshare_operator::resource::crd_files();
    assert_eq!(files.len(), 2, "CompShareInstance and CompShareDiscovery");
    for (file, generated) in files {
        for dir in ["crds", "charts/compshare-operator/crds"] {
            let path = format!("{dir}/{file}");
            assert!(
                compshare_test_support::repo_file(&path) == generated,
                "{path} differs from `compshare-operator crd`; regenerate it"
            );
        }
    }
}

#[test]
fn the_crd_command_prints_them() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_compshare-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        compshare_operator::resource::crds_yaml()
    );
}
