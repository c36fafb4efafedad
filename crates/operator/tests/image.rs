//! The container image hack/image.sh builds (an OCI image layout tarball, named by
//! $COMPSHARE_IMAGE; hack/test.sh builds it and sets it): its blobs are what their digests say,
//! its config runs what the chart's Deployment expects as the user the chart expects, its one layer
//! holds exactly the binary, the CA roots, the nonroot user and /tmp, the binary is static and
//! runs, and the Dockerfile describes the same image.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use compshare_test_support::chart::render;
use compshare_test_support::repo_file;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A tar archive's regular files by name.
fn files(archive: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
    }
    files
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(&Sha256::digest(data)[..]))
}

/// The blob a descriptor points at, checked against the descriptor's digest, size and type.
fn blob<'a>(
    layout: &'a HashMap<String, Vec<u8>>,
    descriptor: &Value,
    media_type: &str,
) -> &'a [u8] {
    assert_eq!(descriptor["mediaType"], media_type);
    let digest = descriptor["digest"].as_str().unwrap();
    let name = format!("blobs/{}", digest.replace(':', "/"));
    let data = layout
        .get(&name)
        .unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(descriptor["size"], data.len());
    data
}

/// What the Dockerfile's final stage says with `instruction` (the rest of its line).
fn dockerfile(instruction: &str) -> Vec<String> {
    let text = repo_file("Dockerfile");
    let stage = &text[text.rfind("\nFROM ").expect("a FROM line") + 1..];
    stage
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{instruction} ")))
        .map(|rest| rest.trim().to_owned())
        .collect()
}

/// Fails unless `binary` is a static x86-64 ELF executable: no program interpreter (no dynamic
/// loader) and, if it is position-independent (static-pie has a dynamic section to relocate
/// itself), no shared library it needs.
fn assert_static_elf(binary: &[u8]) {
    let u16_at = |at: usize| u16::from_le_bytes(binary[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(binary[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(binary[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(&binary[..4], b"\x7fELF");
    assert_eq!((binary[4], binary[5]), (2, 1), "64-bit little-endian");
    assert_eq!(u16_at(0x12), 62, "x86-64");
    let (table, entry_size, entries) = (u64_at(0x20), u16_at(0x36) as usize, u16_at(0x38));
    for header in (0..entries as usize).map(|i| table + i * entry_size) {
        match u32_at(header) {
            3 => panic!("the binary has a program interpreter (PT_INTERP): it is not static"),
            2 => {
                let (offset, size) = (u64_at(header + 8), u64_at(header + 0x20));
                for tag in (offset..offset + size).step_by(16).map(u64_at) {
                    assert_ne!(tag, 1, "the binary needs a shared library (DT_NEEDED)");
                    if tag == 0 {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn the_image_runs_what_the_chart_expects() {
    let path = PathBuf::from(std::env::var_os("COMPSHARE_IMAGE").expect(
        "COMPSHARE_IMAGE names the image tarball: run hack/test.sh, or \
         `export COMPSHARE_IMAGE=$(bash hack/image.sh)` before cargo test",
    ));
    let tarball = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout = files(&tarball);

    // Every blob is what its name says; oci-layout and index.json are where tools look.
    for (name, data) in &layout {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(data), format!("sha256:{hex}"), "{name}");
        }
    }
    let json_file = |name: &str| -> Value {
        serde_json::from_slice(
            layout
                .get(name)
                .unwrap_or_else(|| panic!("{name} is missing")),
        )
        .unwrap()
    };
    assert_eq!(
        json_file("oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    assert_eq!(
        layout.len(),
        2 + 3,
        "oci-layout, index.json, manifest, config, layer"
    );

    // The chart's Deployment, as rendered by default.
    let docs = render("ops", &[]).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let chart_image = container["image"].as_str().unwrap();

    // The index names the image as the chart's default image (`ctr images import` takes
    // io.containerd.image.name; the OCI annotation is the tag).
    let index = json_file("index.json");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let annotations = &manifests[0]["annotations"];
    let name = annotations["io.containerd.image.name"].as_str().unwrap();
    assert!(
        name.ends_with(&format!("/{chart_image}")),
        "{name} is not {chart_image}"
    );
    let tag = chart_image.rsplit(':').next().unwrap();
    assert_eq!(annotations["org.opencontainers.image.ref.name"], tag);
    assert_eq!(
        manifests[0]["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );

    let manifest: Value = serde_json::from_slice(blob(&layout, &manifests[0], MANIFEST)).unwrap();
    let config: Value = serde_json::from_slice(blob(
        &layout,
        &manifest["config"],
        "application/vnd.oci.image.config.v1+json",
    ))
    .unwrap();
    assert_eq!(
        (&config["os"], &config["architecture"]),
        (&json!("linux"), &json!("amd64"))
    );

    // Run as the chart runs it: the image's entrypoint (the chart sets no command) with the
    // chart's arguments, which are also the image's default command; as the chart's user.
    let run = &config["config"];
    assert!(container.get("command").is_none(), "{container}");
    assert_eq!(run["Cmd"], container["args"]);
    let user = format!(
        "{}:{}",
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    );
    assert_eq!(run["User"], user);
    let entrypoint: Vec<String> = serde_json::from_value(run["Entrypoint"].clone()).unwrap();
    assert_eq!(entrypoint.len(), 1);
    let port = container["ports"][0]["containerPort"].to_string();
    assert_eq!(run["ExposedPorts"], json!({format!("{port}/tcp"): {}}));
    // rustls finds the CA roots at their Debian path: no environment is needed.
    assert!(run.get("Env").is_none(), "{run}");
    let labels = &run["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.version"], tag);
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );

    // The Dockerfile describes the same image.
    assert_eq!(dockerfile("FROM"), ["scratch"]);
    assert_eq!(dockerfile("USER"), [user.as_str()]);
    assert_eq!(dockerfile("ENTRYPOINT"), [run["Entrypoint"].to_string()]);
    assert_eq!(dockerfile("CMD"), [run["Cmd"].to_string()]);
    assert_eq!(dockerfile("EXPOSE"), [port.as_str()]);
    let copies = dockerfile("COPY");
    for destination in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/",
        "/tmp",
        entrypoint[0].as_str(),
    ] {
        assert!(
            copies
                .iter()
                .any(|copy| copy.ends_with(&format!(" {destination}"))),
            "the Dockerfile copies nothing to {destination}: {copies:?}"
        );
    }

    // The one layer: exactly these entries, owned by root, in order, at one time.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let compressed = blob(&layout, &layers[0], LAYER);
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], json!([sha256(&layer)]));
    let binary_name = entrypoint[0].trim_start_matches('/');
    let expected: BTreeMap<&str, u32> = BTreeMap::from([
        (binary_name, 0o755),
        ("etc/", 0o755),
        ("etc/group", 0o644),
        ("etc/passwd", 0o644),
        ("etc/ssl/", 0o755),
        ("etc/ssl/certs/", 0o755),
        ("etc/ssl/certs/ca-certificates.crt", 0o644),
        ("tmp/", 0o1777),
    ]);
    let mut entries = Vec::new();
    let mut mtimes = Vec::new();
    for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "{name}"
        );
        assert_eq!(header.entry_type().is_dir(), name.ends_with('/'), "{name}");
        mtimes.push(header.mtime().unwrap());
        entries.push((name, header.mode().unwrap()));
    }
    let expected: Vec<(String, u32)> = expected
        .into_iter()
        .map(|(n, m)| (n.to_owned(), m))
        .collect();
    assert_eq!(entries, expected, "(sorted, as reproducibility needs)");
    mtimes.dedup();
    assert_eq!(mtimes.len(), 1, "one fixed time for every entry");

    let rootfs = files(&layer);
    let (uid, gid) = user.split_once(':').unwrap();
    let passwd = String::from_utf8_lossy(&rootfs["etc/passwd"]).into_owned();
    assert!(passwd.contains(&format!(":x:{uid}:{gid}:")), "{passwd}");
    let group = String::from_utf8_lossy(&rootfs["etc/group"]).into_owned();
    assert!(group.contains(&format!(":x:{gid}:")), "{group}");
    let roots = String::from_utf8_lossy(&rootfs["etc/ssl/certs/ca-certificates.crt"]).into_owned();
    assert!(roots.matches("-----BEGIN CERTIFICATE-----").count() > 100);

    // The binary is static and runs.
    let binary = &rootfs[binary_name];
    assert_static_elf(binary);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("compshare-operator");
    std::fs::write(&copy, binary).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let version = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}
