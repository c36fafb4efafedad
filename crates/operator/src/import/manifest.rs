//! The pure half of `import`: which machines to keep (filters), what each resource is called
//! (naming), the `CompShareInstance` for each, and the text that is printed or written. No I/O,
//! so that every rule here is unit-tested, and the same machines always give the same bytes.
//! In-cluster discovery (`reconciler::discovery`) uses the same filters, names, labels and
//! manifests, so that a discovered resource is the one `import` would have printed.

use std::collections::BTreeMap;

use clap::ValueEnum;
use compshare_api::Instance;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use serde_json::json;

use crate::resource::{
    CompShareInstance, CompShareInstanceSpec, DeletionPolicy, ManagementPolicy, SecretRef,
};

pub(crate) const REGION_LABEL: &str = "compshare.ucloud.cn/region";
pub(crate) const ZONE_LABEL: &str = "compshare.ucloud.cn/zone";
pub(crate) const GPU_TYPE_LABEL: &str = "compshare.ucloud.cn/gpu-type";

/// A DNS-1123 label's length: the strictest bound any tool puts on a resource name.
const MAX_NAME: usize = 63;
/// A label value's length.
const MAX_LABEL_VALUE: usize = 63;
/// Ids start with this; only the rest is appended to a name, as the tie-breaker.
const ID_PREFIX: &str = "uhost-";

/// Which machines to keep. Within one kind, any value matches; across kinds, all must.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub zones: Vec<String>,
    pub tags: Vec<String>,
    /// VPC ids (`uvnet-…`): a machine is in a VPC when one of its addresses (`IPSet`) is. Matched
    /// here rather than sent as the request's `VPCId`, so that one listing of a region serves
    /// every filter and stays the observation of every machine in it (`Group::apply_listing`).
    /// A machine without addresses (a container, often) is in no VPC.
    pub vpcs: Vec<String>,
    /// `None`: every name.
    pub names: Option<GlobSet>,
    /// Compared ignoring ASCII case (`running` finds `Running`).
    pub states: Vec<String>,
}

impl Filters {
    /// The name patterns as one set: glob syntax (`*`, `?`, `[…]`, `{a,b}`), matched against the
    /// machine's whole name, case-sensitively as the console shows it.
    pub(crate) fn name_patterns(patterns: &[String]) -> Result<Option<GlobSet>, globset::Error> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            set.add(Glob::new(pattern)?);
        }
        set.build().map(Some)
    }

    pub(crate) fn keeps(&self, instance: &Instance) -> bool {
        let any =
            |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
        any(&self.zones, &instance.zone)
            && any(&self.tags, &instance.tag)
            && (self.vpcs.is_empty()
                || instance.ip_set.iter().any(|ip| any(&self.vpcs, &ip.vpc_id)))
            && self
                .names
                .as_ref()
                .is_none_or(|names| names.is_match(instance.name.as_str()))
            && (self.states.is_empty()
                || self
                    .states
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&instance.state)))
    }
}

/// What every manifest shares: where it goes and which credentials it names.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub namespace: Option<String>,
    pub project_id: Option<String>,
    /// The Secret `spec.credentialsRef` names; `None` leaves it out (the operator's default
    /// credentials, where its administrator allows them).
    pub credentials_ref: Option<String>,
}

/// The resource name for a machine: its name made DNS-1123 (lowercase; anything but letters and
/// digits becomes `-`; runs of `-` and the ends trimmed) and bounded, then always the id after
/// `uhost-`. Always, not only on a clash: a colleague's later machine of the same name must not
/// rename a resource that is already committed. A machine without a usable name (empty, all
/// non-Latin, or just its id, which is the console's default) gets its id alone.
pub(crate) fn resource_name(instance: &Instance) -> String {
    let id = dns_label(&instance.u_host_id);
    let suffix = id.strip_prefix(ID_PREFIX).unwrap_or(&id);
    let name = dns_label(&instance.name);
    if name.is_empty() || name == id || suffix.is_empty() {
        return prefix_trimmed(&id, MAX_NAME).to_owned();
    }
    let room = MAX_NAME.saturating_sub(suffix.len() + 1);
    match prefix_trimmed(&name, room) {
        "" => prefix_trimmed(&id, MAX_NAME).to_owned(),
        base => format!("{base}-{suffix}"),
    }
}

/// `text` as a DNS-1123 label's characters: lowercase ASCII letters, digits and single `-`s
/// between them.
fn dns_label(text: &str) -> String {
    let mut label = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.trim_end_matches('-').to_owned()
}

/// At most `max` bytes of an ASCII label, never ending in `-`.
fn prefix_trimmed(label: &str, max: usize) -> &str {
    label[..label.len().min(max)].trim_end_matches('-')
}

/// `value` as a label value: letters, digits, `-`, `_` and `.`, starting and ending with a letter
/// or digit, at most 63 characters; anything else becomes `-`.
fn label_value(value: &str) -> String {
    let safe: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL_VALUE)
        .collect();
    safe.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The observe-only resource for a machine, from the operator's own types, so that it is always
/// what the CRD accepts. `deletionPolicy: Orphan` is written out although it is the default for
/// a machine named by id: a committed file that later gains `managementPolicy: Manage` must
/// still never release a machine that was only ever imported.
pub(crate) fn manifest(instance: &Instance, settings: &Settings) -> CompShareInstance {
    let spec = CompShareInstanceSpec {
        uhost_id: Some(instance.u_host_id.to_string()),
        region: instance.region.to_string(),
        zone: (!instance.zone.is_empty()).then(|| instance.zone.to_string()),
        project_id: settings.project_id.clone(),
        credentials_ref: settings
            .credentials_ref
            .clone()
            .map(|name| SecretRef { name }),
        management_policy: Some(ManagementPolicy::Observe),
        deletion_policy: Some(DeletionPolicy::Orphan),
        ..CompShareInstanceSpec::default()
    };
    let mut resource = CompShareInstance::new(&resource_name(instance), spec);
    resource.metadata.namespace = settings.namespace.clone();
    let labels: BTreeMap<String, String> = [
        (REGION_LABEL, &instance.region),
        (ZONE_LABEL, &instance.zone),
        (GPU_TYPE_LABEL, &instance.gpu_type),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), label_value(value)))
    .filter(|(_, value)| !value.is_empty())
    .collect();
    resource.metadata.labels = Some(labels);
    resource
}

/// The resources for `instances` that pass `filters`, sorted by name (then id, should two names
/// ever meet), so that the output does not depend on the order the API listed them in.
pub(super) fn manifests<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    filters: &Filters,
    settings: &Settings,
) -> Vec<CompShareInstance> {
    let mut resources: Vec<CompShareInstance> = instances
        .into_iter()
        .filter(|i| filters.keeps(i))
        .map(|i| manifest(i, settings))
        .collect();
    resources.sort_by(|a, b| {
        (&a.metadata.name, &a.spec.uhost_id).cmp(&(&b.metadata.name, &b.spec.uhost_id))
    });
    resources
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// YAML documents separated by `---`.
    Yaml,
    /// One `v1` `List`.
    Json,
}

impl Format {
    pub(super) fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// All resources as one text: YAML documents separated by `---` (nothing for none), or a `v1`
/// `List` (empty for none, so that a consumer always gets valid JSON).
pub(super) fn render_all(resources: &[CompShareInstance], format: Format) -> String {
    match format {
        Format::Yaml => resources
            .iter()
            .map(|r| render_one(r, format))
            .collect::<Vec<_>>()
            .join("---\n"),
        Format::Json => pretty_json(&json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": resources,
        })),
    }
}

/// One resource, as its own file.
pub(super) fn render_one(resource: &CompShareInstance, format: Format) -> String {
    match format {
        Format::Yaml => serde_saphyr::to_string(resource).expect("a resource serializes"),
        Format::Json => pretty_json(resource),
    }
}

fn pretty_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("a resource serializes") + "\n"
}

/// A `kustomization.yaml` listing `files` (in the order given).
pub(super) fn kustomization(files: &[String]) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Kustomization<'a> {
        api_version: &'a str,
        kind: &'a str,
        resources: &'a [String],
    }
    serde_saphyr::to_string(&Kustomization {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        resources: files,
    })
    .expect("a kustomization serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use compshare_api::IpInfo;

    fn machine(id: &str, name: &str) -> Instance {
        Instance {
            u_host_id: id.into(),
            name: name.into(),
            state: "Running".into(),
            region: "cn-wlcb".into(),
            zone: "cn-wlcb-01".into(),
            gpu_type: "4090".into(),
            tag: "Default".into(),
            ..Instance::default()
        }
    }

    #[test]
    fn names_are_dns_labels_with_the_id_always_appended() {
        let cases = [
            ("uhost-abc123", "trainer-4090", "trainer-4090-abc123"),
            ("uhost-abc123", "Trainer 4090", "trainer-4090-abc123"),
            (
                "uhost-abc123",
                "--LLaMA__fine.tune!!",
                "llama-fine-tune-abc123",
            ),
            ("uhost-abc123", "训练机 A", "a-abc123"),
            // No usable name: the id alone.
            ("uhost-abc123", "", "uhost-abc123"),
            ("uhost-abc123", "训练机", "uhost-abc123"),
            ("uhost-abc123", "uhost-abc123", "uhost-abc123"),
            // An id of another shape is appended whole.
            ("host_7", "gpu", "gpu-host-7"),
        ];
        for (id, name, expected) in cases {
            assert_eq!(resource_name(&machine(id, name)), expected, "{name:?}");
        }
    }

    #[test]
    fn two_machines_of_one_name_keep_apart_and_long_names_are_bounded() {
        let a = resource_name(&machine("uhost-aaaa1111", "trainer"));
        let b = resource_name(&machine("uhost-bbbb2222", "trainer"));
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("trainer-aaaa1111", "trainer-bbbb2222")
        );

        let long = resource_name(&machine("uhost-abc123", &format!("{}-x", "a".repeat(70))));
        assert_eq!(long.len(), MAX_NAME);
        assert!(long.ends_with("a-abc123"), "{long}");
        // A cut that would end in '-' does not.
        let cut = resource_name(&machine(
            "uhost-abc123",
            &format!("{}-bbbb", "a".repeat(55)),
        ));
        assert_eq!(cut, format!("{}-abc123", "a".repeat(55)));
    }

    #[test]
    fn label_values_are_made_safe() {
        assert_eq!(label_value("4090_48G"), "4090_48G");
        assert_eq!(label_value("RTX 4090"), "RTX-4090");
        assert_eq!(label_value("(A800)"), "A800");
        assert_eq!(label_value(&"x".repeat(80)).len(), MAX_LABEL_VALUE);
        assert_eq!(label_value("—"), "");
    }

    #[test]
    fn filters_combine_kinds_and_accept_any_value_of_one_kind() {
        let mut m = machine("uhost-1", "trainer-4090");
        m.tag = "ml".into();
        let filters = |f: Filters| f.keeps(&m);
        assert!(filters(Filters::default()));
        assert!(filters(Filters {
            zones: vec!["cn-wlcb-02".into(), "cn-wlcb-01".into()],
            states: vec!["running".into()],
            ..Filters::default()
        }));
        assert!(!filters(Filters {
            zones: vec!["cn-wlcb-01".into()],
            tags: vec!["Default".into()],
            ..Filters::default()
        }));
        let names = |patterns: &[&str]| Filters {
            names: Filters::name_patterns(
                &patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
            )
            .unwrap(),
            ..Filters::default()
        };
        assert!(filters(names(&["trainer-*"])));
        assert!(filters(names(&["x*", "*-4090"])));
        assert!(!filters(names(&["Trainer*"])));
        assert!(!filters(names(&["trainer"])));
        assert!(Filters::name_patterns(&["[".to_owned()]).is_err());
    }

    #[test]
    fn a_vpc_filter_keeps_machines_with_an_address_in_one_of_the_vpcs() {
        let ip = |vpc: &str| IpInfo {
            ip: "10.0.0.1".into(),
            r#type: "Private".into(),
            vpc_id: vpc.into(),
        };
        let vpcs = |wanted: &[&str]| Filters {
            vpcs: wanted.iter().map(|v| (*v).to_owned()).collect(),
            ..Filters::default()
        };
        let mut m = machine("uhost-1", "trainer");
        m.ip_set = vec![ip(""), ip("uvnet-2")];
        assert!(vpcs(&["uvnet-1", "uvnet-2"]).keeps(&m));
        assert!(!vpcs(&["uvnet-1"]).keeps(&m));
        // An address that names no VPC is in none, not in every one.
        m.ip_set = vec![ip("")];
        assert!(!vpcs(&["uvnet-1"]).keeps(&m));
        assert!(vpcs(&[]).keeps(&m));
        // A machine without addresses passes only when no VPC is asked for.
        m.ip_set.clear();
        assert!(!vpcs(&["uvnet-1"]).keeps(&m));
    }

    #[test]
    fn a_manifest_is_observe_only_and_says_where_the_machine_is() {
        let settings = Settings {
            namespace: Some("ml-team".into()),
            project_id: Some("org-abc".into()),
            credentials_ref: Some("compshare-keys".into()),
        };
        let resource = manifest(&machine("uhost-abc123", "trainer"), &settings);
        let value = serde_json::to_value(&resource).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "compshare.ucloud.cn/v1alpha1",
                "kind": "CompShareInstance",
                "metadata": {
                    "name": "trainer-abc123",
                    "namespace": "ml-team",
                    "labels": {
                        "compshare.ucloud.cn/gpu-type": "4090",
                        "compshare.ucloud.cn/region": "cn-wlcb",
                        "compshare.ucloud.cn/zone": "cn-wlcb-01",
                    },
                },
                "spec": {
                    "uhostId": "uhost-abc123",
                    "region": "cn-wlcb",
                    "zone": "cn-wlcb-01",
                    "projectId": "org-abc",
                    "credentialsRef": {"name": "compshare-keys"},
                    "managementPolicy": "Observe",
                    "deletionPolicy": "Orphan",
                },
            })
        );
        // Without a namespace, project or credentials, none is written.
        let bare = serde_json::to_value(manifest(
            &machine("uhost-abc123", "trainer"),
            &Settings::default(),
        ))
        .unwrap();
        assert!(bare["metadata"].get("namespace").is_none());
        assert!(bare["spec"].get("projectId").is_none());
        assert!(bare["spec"].get("credentialsRef").is_none());
    }

    #[test]
    fn output_is_sorted_and_the_same_whatever_order_the_api_listed() {
        let listed = [
            machine("uhost-3", "b"),
            machine("uhost-1", "a"),
            machine("uhost-2", "a"),
        ];
        let forward = manifests(&listed, &Filters::default(), &Settings::default());
        let backward = manifests(
            listed.iter().rev(),
            &Filters::default(),
            &Settings::default(),
        );
        let names: Vec<_> = forward
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a-1", "a-2", "b-3"]);
        for format in [Format::Yaml, Format::Json] {
            assert_eq!(render_all(&forward, format), render_all(&backward, format));
        }
        let yaml = render_all(&forward, Format::Yaml);
        assert_eq!(yaml.matches("\n---\n").count(), 2, "{yaml}");
        assert!(
            yaml.starts_with("apiVersion: compshare.ucloud.cn/v1alpha1\n"),
            "{yaml}"
        );
    }

    #[test]
    fn no_machines_print_nothing_or_an_empty_list() {
        assert_eq!(render_all(&[], Format::Yaml), "");
        let list: serde_json::Value = serde_json::from_str(&render_all(&[], Format::Json)).unwrap();
        assert_eq!(
            list,
            json!({"apiVersion": "v1", "kind": "List", "items": []})
        );
    }

    #[test]
    fn a_kustomization_lists_the_files() {
        let text = kustomization(&["a-1.yaml".into(), "b-2.yaml".into()]);
        assert_eq!(
            text,
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- a-1.yaml\n- b-2.yaml\n"
        );
    }

    #[test]
    fn the_yaml_is_what_the_readme_shows() {
        let settings = Settings {
            namespace: Some("ml-team".into()),
            project_id: None,
            credentials_ref: Some("compshare-credentials".into()),
        };
        let yaml = render_one(
            &manifest(&machine("uhost-abc123", "Trainer 4090"), &settings),
            Format::Yaml,
        );
        let readme = include_str!("../../../../README.md");
        assert!(readme.contains(&format!("```yaml\n{yaml}```")), "{yaml}");
    }
}
