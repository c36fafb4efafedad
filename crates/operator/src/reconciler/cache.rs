//! The operator's one cache of `CompShareInstance`s. The controller's watch fills it; discovery
//! reads it and is told when one of its own resources changes. One watch and one store, not one
//! per controller: at 10,000 resources a second cache of every instance cost about 2.8 KiB per
//! resource (BENCHMARKS.md).
//!
//! The cache holds each resource as a [`CachedInstance`]: what the controllers read of its
//! metadata, the machine id its spec names, and its spec and status packed ([`crate::packing`]:
//! 78 bytes for the status of a running machine). Spec and status are read only when the
//! resource is reconciled, which in steady state is rarely; packing them, rather than dropping
//! them and reading them back from the apiserver, keeps a reconciliation free of reads (issue 14,
//! BENCHMARKS.md Memory).

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use compact_str::CompactString;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::status;
use crate::packing::{Pack, Packed};
use crate::resource::{
    CREATE_PENDING_ANNOTATION, CREATED_ID_ANNOTATION, CompShareDiscovery, CompShareInstance,
    CompShareInstanceSpec, CompShareInstanceStatus, DISCOVERY_LABEL, InstanceResource,
    MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION, REFRESH_ANNOTATION,
};

/// Creates the cache: the side the controller's watch fills, and the side discovery reads.
pub(crate) fn instances() -> (Filler, Reader) {
    let (store, writer) = reflector::store();
    let ready = Arc::new(AtomicBool::new(false));
    let (owners, changed) = mpsc::unbounded_channel();
    (
        Filler {
            writer,
            store: store.clone(),
            notify: Notify {
                ready: ready.clone(),
                owners,
            },
        },
        Reader {
            store,
            ready,
            changed,
        },
    )
}

/// What the controller's watch writes to.
pub(crate) struct Filler {
    pub(crate) writer: reflector::store::Writer<CachedInstance>,
    pub(crate) store: Store<CachedInstance>,
    pub(crate) notify: Notify,
}

/// What the controller's watch tells discovery.
pub(crate) struct Notify {
    ready: Arc<AtomicBool>,
    /// Unbounded so that the watch never waits for discovery.
    owners: mpsc::UnboundedSender<ObjectRef<CompShareDiscovery>>,
}

impl Notify {
    /// After the first complete list.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Tells discovery that `o` changed or went, if a discovery created it.
    pub(crate) fn touched(&self, o: &CachedInstance) {
        if let Some(owner) = discovery_of(o) {
            // Discovery has stopped (its receiver is gone) only when the operation is ending.
            let _ = self.owners.send(owner);
        }
    }
}

/// What discovery reads.
pub(crate) struct Reader {
    /// Every `CompShareInstance` in the watched namespaces.
    pub(crate) store: Store<CachedInstance>,
    /// Whether the store holds the first complete list.
    pub(crate) ready: Arc<AtomicBool>,
    /// The discoveries whose resources changed.
    pub(crate) changed: mpsc::UnboundedReceiver<ObjectRef<CompShareDiscovery>>,
}

/// The discovery that created `o`, by its label and controller owner reference.
fn discovery_of(o: &CachedInstance) -> Option<ObjectRef<CompShareDiscovery>> {
    o.labels().get(DISCOVERY_LABEL)?;
    let owner = o
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "CompShareDiscovery")?;
    Some(ObjectRef::new(&owner.name).within(&o.namespace()?))
}

/// A `CompShareInstance` as the cache keeps it. The watch deserializes each listed or watched
/// resource into one directly, one at a time, so a page of whole resources is never held.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "CompShareInstance")]
pub(crate) struct CachedInstance {
    /// Without what neither controller reads (`keep_what_is_read`).
    pub(crate) metadata: ObjectMeta,
    /// `spec.uhostId`, which discovery reads of every resource at every listing.
    named_id: Option<CompactString>,
    /// The rest of the spec is read only by a reconciliation.
    spec: Packed<CompShareInstanceSpec>,
    status: Option<Packed<CompShareInstanceStatus>>,
    /// The reason of a True `Stalled` condition, which the stalled gauge counts over the whole
    /// cache at every scrape (`StalledResources`), without unpacking each status.
    stalled: Option<CompactString>,
    /// A digest of what decides whether a new version is worth a reconciliation
    /// ([`reconcile_inputs`]).
    inputs: u64,
    /// Whether this version's inputs differ from those of the version the cache held before it
    /// ([`mark_changes`]); true for a resource the cache did not hold.
    changed: bool,
}

impl From<CompShareInstance> for CachedInstance {
    fn from(mut o: CompShareInstance) -> Self {
        keep_what_is_read(&mut o.metadata);
        let stalled = status::condition(o.status.as_ref(), status::STALLED)
            .filter(|c| c.status == status::TRUE)
            .map(|c| CompactString::from(c.reason.as_str()));
        let mut cached = CachedInstance {
            metadata: o.metadata,
            named_id: o.spec.uhost_id.as_deref().map(CompactString::from),
            spec: Packed::pack(&o.spec),
            status: o.status.as_ref().map(Packed::pack),
            stalled,
            inputs: 0,
            changed: true,
        };
        cached.inputs = reconcile_inputs(&cached);
        cached
    }
}

/// What decides whether a watch event is worth a reconciliation: the spec's generation, the
/// annotations the operator reads, deletion and finalizers, and which resource it is (a resource
/// deleted and made again under its name is another). Not the status: the operator's own writes
/// need no reconciliation.
fn reconcile_inputs(o: &CachedInstance) -> u64 {
    let mut h = DefaultHasher::new();
    o.metadata.uid.hash(&mut h);
    o.metadata.generation.hash(&mut h);
    o.is_paused().hash(&mut h);
    o.refresh_request().hash(&mut h);
    o.metadata.deletion_timestamp.is_some().hash(&mut h);
    o.machine_id().hash(&mut h);
    o.annotation(CREATE_PENDING_ANNOTATION).hash(&mut h);
    o.metadata.finalizers.hash(&mut h);
    h.finish()
}

/// Marks each resource `event` applies with whether its inputs changed against the version the
/// cache holds, before the reflector replaces that version: the controller reconciles only the
/// marked ones (`CachedInstance::changed`). This is kube-runtime's `predicate_filter` without its
/// own map of every resource's name, namespace and uid beside the cache (about 250 bytes per
/// resource at 100,000).
pub(crate) fn mark_changes(store: &Store<CachedInstance>, event: &mut Event<CachedInstance>) {
    if let Event::Apply(o) | Event::InitApply(o) = event {
        o.changed = store
            .get(&ObjectRef::from(&*o))
            .is_none_or(|cached| cached.inputs != o.inputs);
    }
}

impl CachedInstance {
    /// The resource, spec and status unpacked: what a reconciliation works from.
    pub(crate) fn unpack(&self) -> CompShareInstance {
        CompShareInstance {
            metadata: self.metadata.clone(),
            spec: self.spec.unpack(),
            status: self.status.as_ref().map(Packed::unpack),
        }
    }

    /// Whether this version changed what a reconciliation reads ([`mark_changes`]).
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// The reason the resource is stalled, if its status says it is.
    pub(crate) fn stalled(&self) -> Option<&str> {
        self.stalled.as_deref()
    }
}

impl kube::Resource for CachedInstance {
    type DynamicType = ();
    type Scope = <CompShareInstance as kube::Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        CompShareInstance::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        CompShareInstance::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        CompShareInstance::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        CompShareInstance::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl InstanceResource for CachedInstance {
    fn named_id(&self) -> Option<&str> {
        self.named_id.as_deref()
    }
}

/// Drops from cached metadata what neither controller reads: managed fields (the bulk of each
/// object), labels other than discovery's, and annotations other than the operator's own
/// (`kubectl apply` keeps a whole copy of the object in one).
fn keep_what_is_read(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(labels) = &mut meta.labels {
        labels.retain(|k, _| k == DISCOVERY_LABEL);
    }
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| {
            [
                PAUSED_ANNOTATION,
                REFRESH_ANNOTATION,
                CREATED_ID_ANNOTATION,
                CREATE_PENDING_ANNOTATION,
                MISSING_SINCE_ANNOTATION,
            ]
            .contains(&k.as_str())
        });
    }
}

/// A spec packs against the spec of a machine the operator creates and manages, which names most
/// fields a spec has. A unit test keeps the dictionary current.
impl Pack for CompShareInstanceSpec {
    const DICTIONARY: &'static [u8] = include_bytes!("spec_dictionary.json");

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a spec serializes")
    }

    fn from_json(json: &[u8]) -> Self {
        serde_json::from_slice(json).expect("a packed spec deserializes")
    }
}

/// A status packs against the status of a running machine as the operator writes it: most of a
/// status is field names, condition types and messages that every status shares. A unit test
/// keeps the dictionary current.
impl Pack for CompShareInstanceStatus {
    const DICTIONARY: &'static [u8] = include_bytes!("status_dictionary.json");

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status serializes")
    }

    fn from_json(json: &[u8]) -> Self {
        serde_json::from_slice(json).expect("a packed status deserializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};

    fn instance(labels: &[(&str, &str)], owner_kind: &str) -> CompShareInstance {
        let mut o = CompShareInstance::new("m", Default::default());
        o.metadata.namespace = Some("ns".into());
        o.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        o.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "compshare.ucloud.cn/v1alpha1".into(),
            kind: owner_kind.into(),
            name: "account".into(),
            uid: "u".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        o
    }

    #[test]
    fn a_discovery_is_told_only_about_its_own_resources() {
        let cached = |labels, owner| CachedInstance::from(instance(labels, owner));
        let own = cached(&[(DISCOVERY_LABEL, "account")], "CompShareDiscovery");
        assert_eq!(
            discovery_of(&own),
            Some(ObjectRef::new("account").within("ns"))
        );
        let unlabelled = cached(&[], "CompShareDiscovery");
        assert_eq!(discovery_of(&unlabelled), None);
        let other_owner = cached(&[(DISCOVERY_LABEL, "account")], "Deployment");
        assert_eq!(discovery_of(&other_owner), None);
    }

    #[test]
    fn the_cache_keeps_what_either_controller_reads() {
        let mut o = instance(&[(DISCOVERY_LABEL, "account"), ("team", "ml")], "X");
        o.metadata.annotations = Some(
            [
                (MISSING_SINCE_ANNOTATION, "2026-12-02T00:00:00Z"),
                (PAUSED_ANNOTATION, "true"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let o = CachedInstance::from(o);
        assert_eq!(o.labels().keys().collect::<Vec<_>>(), [DISCOVERY_LABEL]);
        assert_eq!(
            o.annotations().keys().collect::<Vec<_>>(),
            [MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION]
        );
        assert!(o.owner_references().len() == 1);
        assert!(o.is_paused());
    }

    #[test]
    fn a_reconciliation_gets_back_the_spec_and_status_the_apiserver_sent() {
        let mut status = status::tests::of_a_running_machine();
        let mut o = instance(&[], "X");
        o.spec = serde_json::from_slice(CompShareInstanceSpec::DICTIONARY).expect("a spec");
        o.spec.uhost_id = Some("uhost-9c8d7e6f".into());
        o.status = Some(status.clone());
        let cached = CachedInstance::from(o.clone());
        assert_eq!(cached.unpack().spec, o.spec);
        assert_eq!(cached.machine_id(), o.machine_id());
        assert_eq!(cached.unpack().status, Some(status.clone()));
        assert_eq!(cached.stalled(), None);

        // Another status, unlike the dictionary, comes back as it was too; `Stalled` is kept
        // beside it for the stalled gauge.
        status.conditions.push(Condition {
            type_: status::STALLED.into(),
            status: status::TRUE.into(),
            reason: "CredentialsRejected".into(),
            message: "The cloud rejects the key pair: 签名错误".into(),
            observed_generation: Some(1),
            last_transition_time: status.conditions[0].last_transition_time.clone(),
        });
        status.state = Some("一个未知的状态".into());
        o.status = Some(status.clone());
        let cached = CachedInstance::from(o.clone());
        assert_eq!(cached.unpack().status, Some(status));
        assert_eq!(cached.stalled(), Some("CredentialsRejected"));

        // None, and the CRD's default, which every new resource has until its first write.
        o.status = None;
        assert_eq!(CachedInstance::from(o.clone()).unpack().status, None);
        o.status = Some(crate::resource::initial_status());
        assert_eq!(
            CachedInstance::from(o).unpack().status,
            Some(crate::resource::initial_status())
        );
    }

    #[test]
    fn only_a_change_of_what_a_reconciliation_reads_is_marked() {
        let (store, mut writer) = reflector::store();
        let mut o = instance(&[], "X");
        o.metadata.uid = Some("u1".into());
        o.metadata.generation = Some(1);
        let mut marked = |o: &CompShareInstance| {
            let mut event = Event::Apply(CachedInstance::from(o.clone()));
            mark_changes(&store, &mut event);
            writer.apply_watcher_event(&event);
            let Event::Apply(o) = event else {
                unreachable!()
            };
            o.changed()
        };
        // New to the cache.
        assert!(marked(&o));
        // The operator's own status write.
        o.status = Some(status::tests::of_a_running_machine());
        assert!(!marked(&o));
        // A label nobody reads, then annotations the operator reads, a new spec, deletion.
        o.metadata.labels = Some([("team".to_owned(), "ml".to_owned())].into());
        assert!(!marked(&o));
        o.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert!(marked(&o));
        o.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REFRESH_ANNOTATION.to_owned(), "now".to_owned());
        assert!(marked(&o));
        o.metadata.generation = Some(2);
        assert!(marked(&o));
        o.metadata.finalizers = Some(vec!["compshare.ucloud.cn/release".to_owned()]);
        assert!(marked(&o));
        o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        assert!(marked(&o));
        assert!(!marked(&o));
        // Another resource under the same name.
        o.metadata.uid = Some("u2".into());
        assert!(marked(&o));
    }

    /// The status dictionary is the status the operator now writes for a running machine.
    #[test]
    fn the_status_dictionary_is_a_current_status() {
        crate::packing::assert_dictionary_current(
            &status::tests::of_a_running_machine(),
            "src/reconciler/status_dictionary.json",
        );
    }

    /// The spec dictionary is the spec of a machine the operator created and manages: the id it
    /// got, and what it was made from (the README's managed machine).
    #[test]
    fn the_spec_dictionary_is_a_current_spec() {
        let spec: CompShareInstanceSpec = serde_json::from_value(serde_json::json!({
            "uhostId": "uhost-3f5a1c2d", "managementPolicy": "Manage",
            "region": "cn-wlcb", "zone": "cn-wlcb-01",
            "credentialsRef": {"name": "compshare-credentials"}, "pollInterval": "10s",
            "machine": {
                "gpuType": "4090", "gpu": 1, "cpu": 16, "memoryMB": 65536,
                "imageId": "compshareImage-2a4b6c8d",
                "disks": [{"boot": true, "type": "CLOUD_SSD", "sizeGB": 200}],
                "passwordSecretRef": {"name": "trainer-password"},
            },
            "powerState": "Running", "writeConnectionSecretToRef": {"name": "trainer-ssh"},
        }))
        .expect("a spec");
        crate::packing::assert_dictionary_current(&spec, "src/reconciler/spec_dictionary.json");
    }

    /// A resource as the apiserver lists it in the scale benchmark (BENCHMARKS.md): its spec,
    /// the managed fields of its creator and of the operator's status writes, and the status the
    /// operator writes for a running machine (its own id, address and times). As JSON, which the
    /// watch deserializes.
    fn listed(i: usize) -> Vec<u8> {
        let time = time(i);
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "compshare.ucloud.cn/v1alpha1",
            "kind": "CompShareInstance",
            "metadata": {
                "name": format!("instance-{i:05}"),
                "namespace": "scale-1733127480",
                "uid": uuid::Uuid::new_v4().to_string(),
                "resourceVersion": format!("{}", 100_000 + i),
                "generation": 1,
                "creationTimestamp": time,
                "managedFields": [
                    {
                        "manager": "scale", "operation": "Update",
                        "apiVersion": "compshare.ucloud.cn/v1alpha1", "time": time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {".": {}, "f:credentialsRef": {".": {}, "f:name": {}},
                            "f:pollInterval": {}, "f:region": {}, "f:uhostId": {}}},
                    },
                    {
                        "manager": "compshare-operator", "operation": "Apply",
                        "apiVersion": "compshare.ucloud.cn/v1alpha1", "time": time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:state": {}, "f:conditions": {}}},
                        "subresource": "status",
                    },
                ],
            },
            "spec": {
                "uhostId": format!("uhost-{i:08}"), "region": "cn-wlcb",
                "credentialsRef": {"name": "keys-0"}, "pollInterval": "10s",
            },
            "status": status_of(i),
        }))
        .expect("the resource serializes")
    }

    fn time(i: usize) -> String {
        format!("2026-12-02T08:{:02}:{:02}Z", i / 60 % 60, i % 60)
    }

    /// The status of running machine number `i`: its own id and times.
    fn status_of(i: usize) -> serde_json::Value {
        let mut status = serde_json::to_value(status::tests::of_a_running_machine())
            .expect("the status serializes");
        status["uhostId"] = serde_json::json!(format!("uhost-{i:08}"));
        for condition in status["conditions"].as_array_mut().expect("conditions") {
            condition["lastTransitionTime"] = serde_json::json!(time(i));
        }
        status
    }

    /// The bytes the cache holds per resource: each deserialized as the watch does and kept by a
    /// reflector's store (its map, key and `Arc`).
    fn bytes_per_cached_resource<K>() -> isize
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + 'static,
    {
        const N: usize = 1000;
        let listed: Vec<Vec<u8>> = (0..N).map(listed).collect();
        let (store, mut writer) = reflector::store::<K>();
        let before = crate::allocations::held();
        for json in &listed {
            let o: K = serde_json::from_slice(json).expect("a resource");
            writer.apply_watcher_event(&Event::Apply(o));
        }
        let held = crate::allocations::held() - before;
        assert_eq!(store.state().len(), N);
        held / N as isize
    }

    /// What one cached resource costs, deterministically (run with `--nocapture` to see the
    /// figures; BENCHMARKS.md, Memory). The bound keeps it from growing back unnoticed.
    #[test]
    fn a_cached_resource_costs_what_the_reconciler_reads() {
        let whole = bytes_per_cached_resource::<CompShareInstance>();
        let cached = bytes_per_cached_resource::<CachedInstance>();
        let status: CompShareInstanceStatus =
            serde_json::from_value(status_of(7)).expect("a status");
        let packed = Packed::pack(&status).len();
        println!(
            "bytes per cached resource: {whole} whole, {cached} as cached; a packed status {packed}"
        );
        println!(
            "inline: {} per cached resource ({} whole), of which metadata {}, spec {}",
            size_of::<CachedInstance>(),
            size_of::<CompShareInstance>(),
            size_of::<ObjectMeta>(),
            size_of::<CompShareInstanceSpec>(),
        );
        assert!(cached < 1_000, "{cached} bytes per cached resource");
        assert!(packed < 200, "a packed status of {packed} bytes");
    }
}
