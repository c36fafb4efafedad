//! The operator's one cache of `CompShareInstance`s. The controller's watch fills it; discovery
//! reads it and is told when one of its own resources changes. One watch and one store, not one
//! per controller: at 10,000 resources a second cache of every instance cost about 2.8 KiB per
//! resource (BENCHMARKS.md).
//!
//! The cache holds each resource as a [`CachedInstance`]: its namespace and name, what the
//! controllers read of every resource at every event or listing (its machine id, whether it is
//! being deleted, the discovery that made it, the reason it is stalled, a digest of what decides a
//! reconciliation), and its metadata, spec and status packed ([`crate::packing`]: 78 bytes for
//! the status of a running machine). Those are read only when the resource is reconciled, which
//! in steady state is rarely; packing them, rather than dropping them and reading them back from
//! the apiserver, keeps a reconciliation free of reads.
//!
//! The watch is kube-runtime's; the [`Store`] is the operator's own and applies the watch's
//! events as kube-runtime's reflector does. The reflector's store holds objects that hand out a
//! whole `ObjectMeta` (360 bytes before any of its strings) and keys each by an `ObjectRef` with
//! its own copies of the name, namespace, uid and resource version: about half of what a cached
//! resource cost (issue 14, BENCHMARKS.md Memory).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use compact_str::CompactString;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::status;
use crate::metrics::StalledSource;
use crate::packing::{Pack, Packed};
use crate::poller::{Key, ResourceKey};
use crate::resource::{
    CREATE_PENDING_ANNOTATION, CREATED_ID_ANNOTATION, CompShareDiscovery, CompShareInstance,
    CompShareInstanceSpec, CompShareInstanceStatus, DISCOVERY_LABEL, InstanceResource,
    MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION, REFRESH_ANNOTATION,
};

/// Creates the cache: the side the controller's watch fills, and the side discovery reads.
pub(crate) fn instances() -> (Filler, Reader) {
    let store = Store::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (owners, changed) = mpsc::unbounded_channel();
    (
        Filler {
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
    pub(crate) store: Store,
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
        if let Some(owner) = o.discovery() {
            // Discovery has stopped (its receiver is gone) only when the operation is ending.
            let _ = self.owners.send(owner);
        }
    }
}

/// What discovery reads.
pub(crate) struct Reader {
    /// Every `CompShareInstance` in the watched namespaces.
    pub(crate) store: Store,
    /// Whether the store holds the first complete list.
    pub(crate) ready: Arc<AtomicBool>,
    /// The discoveries whose resources changed.
    pub(crate) changed: mpsc::UnboundedReceiver<ObjectRef<CompShareDiscovery>>,
}

/// The cached resources, by namespace and name. Cheap to clone: every clone is the same store.
#[derive(Clone, Default)]
pub(crate) struct Store(Arc<RwLock<Tables>>);

#[derive(Default)]
struct Tables {
    live: HashSet<Entry>,
    /// A (re-)list on its way: it replaces `live` once complete, so that resources deleted while
    /// the watch was down go, and readers never see half a list.
    listing: Option<HashSet<Entry>>,
}

/// A cached resource in a table, found by its key (the key is the resource's own: no copy).
struct Entry(Arc<CachedInstance>);

impl Borrow<ResourceKey> for Entry {
    fn borrow(&self) -> &ResourceKey {
        &self.0.key
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the key hashes, as `Borrow` requires.
        self.0.key.hash(state);
    }
}

impl Store {
    fn tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.0.read().expect("cache lock")
    }

    pub(crate) fn get(&self, key: &ResourceKey) -> Option<Arc<CachedInstance>> {
        Some(self.tables().live.get(key)?.0.clone())
    }

    pub(crate) fn contains(&self, key: &ResourceKey) -> bool {
        self.tables().live.contains(key)
    }

    /// Every resource's key.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.tables().live.iter().map(|e| e.0.key.clone()).collect()
    }

    /// Every resource of `namespace`.
    pub(crate) fn in_namespace(&self, namespace: &str) -> Vec<Arc<CachedInstance>> {
        self.tables()
            .live
            .iter()
            .filter(|e| e.0.key.namespace == namespace)
            .map(|e| e.0.clone())
            .collect()
    }

    /// Applies what the watch saw, as kube-runtime's reflector does, and returns it with each
    /// resource as the cache keeps it, marked with whether it changed what a reconciliation
    /// reads ([`CachedInstance::changed`]) against the version the cache held.
    pub(crate) fn apply(&self, event: Event<WatchedInstance>) -> Event<Arc<CachedInstance>> {
        let mut tables = self.0.write().expect("cache lock");
        let tables = &mut *tables;
        match event {
            Event::Apply(o) => {
                let o = tables.mark(o);
                tables.live.replace(Entry(o.clone()));
                Event::Apply(o)
            }
            Event::Delete(o) => {
                let o = Arc::new(CachedInstance::from(o));
                tables.live.remove(&*o.key);
                Event::Delete(o)
            }
            Event::Init => {
                tables.listing = Some(HashSet::new());
                Event::Init
            }
            Event::InitApply(o) => {
                let o = tables.mark(o);
                tables
                    .listing
                    .get_or_insert_default()
                    .replace(Entry(o.clone()));
                Event::InitApply(o)
            }
            Event::InitDone => {
                if let Some(listed) = tables.listing.take() {
                    tables.live = listed;
                }
                Event::InitDone
            }
        }
    }
}

impl Tables {
    /// `o` as the cache keeps it, marked changed unless the cache holds the same inputs for it.
    /// A resource the cache holds keeps its key: the poller shares it.
    fn mark(&self, o: WatchedInstance) -> Arc<CachedInstance> {
        let mut o = CachedInstance::from(o);
        match self.live.get(&*o.key) {
            Some(cached) => {
                o.changed = cached.0.inputs != o.inputs;
                o.key = cached.0.key.clone();
            }
            None => o.changed = true,
        }
        Arc::new(o)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The stalled gauge counts over the whole cache at every scrape, without unpacking a status.
impl StalledSource for Store {
    fn stalled_by_reason(&self) -> Vec<(String, i64)> {
        let mut by_reason = BTreeMap::<String, i64>::new();
        for entry in &self.tables().live {
            if let Some(reason) = &entry.0.stalled {
                *by_reason.entry(reason.to_string()).or_default() += 1;
            }
        }
        by_reason.into_iter().collect()
    }
}

/// A `CompShareInstance` as the watch reads it. The watch deserializes each listed or watched
/// resource into one directly, one at a time, so a page of whole resources is never held; the
/// store keeps it as a [`CachedInstance`]. (The watch reads each one's resource version from its
/// metadata, so this one keeps it whole.)
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "CompShareInstance")]
pub(crate) struct WatchedInstance {
    /// Without what neither controller reads (`keep_what_is_read`).
    metadata: ObjectMeta,
    /// `spec.uhostId`.
    named_id: Option<CompactString>,
    spec: Packed<CompShareInstanceSpec>,
    status: Option<Packed<CompShareInstanceStatus>>,
    /// The reason of a True `Stalled` condition.
    stalled: Option<CompactString>,
}

impl From<CompShareInstance> for WatchedInstance {
    fn from(mut o: CompShareInstance) -> Self {
        keep_what_is_read(&mut o.metadata);
        let stalled = status::condition(o.status.as_ref(), status::STALLED)
            .filter(|c| c.status == status::TRUE)
            .map(|c| CompactString::from(c.reason.as_str()));
        WatchedInstance {
            metadata: o.metadata,
            named_id: o.spec.uhost_id.as_deref().map(CompactString::from),
            spec: Packed::pack(&o.spec),
            status: o.status.as_ref().map(Packed::pack),
            stalled,
        }
    }
}

impl kube::Resource for WatchedInstance {
    type DynamicType = ();
    type Scope = <CompShareInstance as kube::Resource>::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        CompShareInstance::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        CompShareInstance::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        CompShareInstance::version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        CompShareInstance::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl InstanceResource for WatchedInstance {
    fn named_id(&self) -> Option<&str> {
        self.named_id.as_deref()
    }
}

/// A `CompShareInstance` as the cache keeps it.
#[derive(Debug)]
pub(crate) struct CachedInstance {
    /// Shared with the poller, which names its members by it.
    key: Key,
    /// The machine's id, as the spec names it or the operator created it.
    machine_id: Option<CompactString>,
    deleting: bool,
    /// The discovery that made it, if one did.
    made_by: Option<Box<Maker>>,
    /// When a discovery's listing first missed its machine (its annotation).
    missing_since: Option<Box<str>>,
    /// The reason of a True `Stalled` condition, which the stalled gauge counts.
    stalled: Option<CompactString>,
    /// A digest of what decides whether a new version is worth a reconciliation
    /// ([`reconcile_inputs`]).
    inputs: u64,
    /// Whether this version's inputs differ from those of the version the cache held before it
    /// ([`Store::apply`]); true for a resource the cache did not hold.
    changed: bool,
    /// Without its namespace and name, which are the key's.
    metadata: Packed<ObjectMeta>,
    spec: Packed<CompShareInstanceSpec>,
    status: Option<Packed<CompShareInstanceStatus>>,
}

/// The discovery that made a resource: its controller owner, and the discovery label.
#[derive(Debug)]
struct Maker {
    name: CompactString,
    uid: CompactString,
    /// The label's value, if the resource has it.
    label: Option<CompactString>,
}

impl From<WatchedInstance> for CachedInstance {
    fn from(o: WatchedInstance) -> Self {
        let inputs = reconcile_inputs(&o);
        let WatchedInstance {
            mut metadata,
            named_id,
            spec,
            status,
            stalled,
        } = o;
        let key = Arc::new(ResourceKey {
            namespace: metadata.namespace.take().unwrap_or_default(),
            name: metadata.name.take().unwrap_or_default(),
        });
        let annotation = |name: &str| metadata.annotations.as_ref()?.get(name);
        let made_by = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "CompShareDiscovery")
            .map(|owner| {
                Box::new(Maker {
                    name: owner.name.as_str().into(),
                    uid: owner.uid.as_str().into(),
                    label: metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(DISCOVERY_LABEL))
                        .map(|l| l.as_str().into()),
                })
            });
        CachedInstance {
            machine_id: named_id.or_else(|| annotation(CREATED_ID_ANNOTATION).map(Into::into)),
            missing_since: annotation(MISSING_SINCE_ANNOTATION).map(|s| s.as_str().into()),
            deleting: metadata.deletion_timestamp.is_some(),
            made_by,
            stalled,
            inputs,
            changed: true,
            metadata: Packed::pack(&metadata),
            spec,
            status,
            key,
        }
    }
}

impl From<CompShareInstance> for CachedInstance {
    fn from(o: CompShareInstance) -> Self {
        CachedInstance::from(WatchedInstance::from(o))
    }
}

impl CachedInstance {
    /// The resource, unpacked: what a reconciliation works from.
    pub(crate) fn unpack(&self) -> CompShareInstance {
        CompShareInstance {
            metadata: self.metadata(),
            spec: self.spec.unpack(),
            status: self.status.as_ref().map(Packed::unpack),
        }
    }

    /// Its metadata, unpacked (as the cache keeps it: `keep_what_is_read`).
    pub(crate) fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(self.key.namespace.clone()),
            name: Some(self.key.name.clone()),
            ..self.metadata.unpack()
        }
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn machine_id(&self) -> Option<&str> {
        self.machine_id.as_deref()
    }

    pub(crate) fn is_deleting(&self) -> bool {
        self.deleting
    }

    pub(crate) fn missing_since(&self) -> Option<&str> {
        self.missing_since.as_deref()
    }

    /// Whether the discovery named `name`, with `uid`, made it: its controller owner reference
    /// and label say so.
    pub(crate) fn made_by(&self, name: &str, uid: &str) -> bool {
        self.made_by
            .as_ref()
            .is_some_and(|m| m.uid == uid && m.label.as_deref() == Some(name))
    }

    /// The discovery that made it, by its label and controller owner reference.
    fn discovery(&self) -> Option<ObjectRef<CompShareDiscovery>> {
        let maker = self.made_by.as_ref().filter(|m| m.label.is_some())?;
        Some(ObjectRef::new(&maker.name).within(&self.key.namespace))
    }

    /// Whether this version changed what a reconciliation reads.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// The reason the resource is stalled, if its status says it is.
    #[cfg(test)]
    pub(crate) fn stalled(&self) -> Option<&str> {
        self.stalled.as_deref()
    }
}

/// What decides whether a watch event is worth a reconciliation: the spec's generation, the
/// annotations the operator reads, deletion and finalizers, and which resource it is (a resource
/// deleted and made again under its name is another). Not the status: the operator's own writes
/// need no reconciliation.
fn reconcile_inputs(o: &WatchedInstance) -> u64 {
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

/// Metadata packs against that of a machine the operator created and manages, without its
/// namespace and name (the cache's key). A unit test keeps the dictionary current.
impl Pack for ObjectMeta {
    const DICTIONARY: &'static [u8] = include_bytes!("metadata_dictionary.json");

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata serializes")
    }

    fn from_json(json: &[u8]) -> Self {
        serde_json::from_slice(json).expect("packed metadata deserializes")
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
    use kube::ResourceExt;

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
            own.discovery(),
            Some(ObjectRef::new("account").within("ns"))
        );
        assert!(own.made_by("account", "u"));
        assert!(!own.made_by("account", "another uid"));
        let unlabelled = cached(&[], "CompShareDiscovery");
        assert_eq!(unlabelled.discovery(), None);
        assert!(!unlabelled.made_by("account", "u"));
        let other_owner = cached(&[(DISCOVERY_LABEL, "account")], "Deployment");
        assert_eq!(other_owner.discovery(), None);
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
        o.metadata.uid = Some("4f9c2a1e-0b7d-4c3e-9a55-2d8e6f1b3c70".into());
        let cached = CachedInstance::from(o.clone());
        assert_eq!(cached.missing_since(), Some("2026-12-02T00:00:00Z"));
        let kept = cached.unpack();
        assert_eq!(kept.labels().keys().collect::<Vec<_>>(), [DISCOVERY_LABEL]);
        assert_eq!(
            kept.annotations().keys().collect::<Vec<_>>(),
            [MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION]
        );
        assert_eq!(kept.owner_references(), o.owner_references());
        assert!(kept.is_paused());
        // What the reconciler reads of the metadata, the namespace and name from the key.
        assert_eq!(
            (kept.namespace(), kept.name_any(), kept.uid()),
            (o.namespace(), o.name_any(), o.uid())
        );
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
        let store = Store::default();
        let mut o = instance(&[], "X");
        o.metadata.uid = Some("u1".into());
        o.metadata.generation = Some(1);
        let marked = |o: &CompShareInstance| {
            let Event::Apply(o) = store.apply(Event::Apply(o.clone().into())) else {
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

    /// The metadata dictionary is what the cache keeps of the metadata of a machine the
    /// operator created and manages (the README's), without its namespace and name.
    #[test]
    fn the_metadata_dictionary_is_current_metadata() {
        let mut o = CompShareInstance::new("trainer", Default::default());
        o.metadata = serde_json::from_value(serde_json::json!({
            "uid": "4f9c2a1e-0b7d-4c3e-9a55-2d8e6f1b3c70", "resourceVersion": "1234567",
            "generation": 1, "creationTimestamp": "2026-12-02T08:00:00Z",
            "finalizers": ["compshare.ucloud.cn/release"],
            "annotations": {CREATED_ID_ANNOTATION: "uhost-3f5a1c2d"},
        }))
        .expect("metadata");
        let cached = CachedInstance::from(o);
        crate::packing::assert_dictionary_current(
            &cached.metadata.unpack(),
            "src/reconciler/metadata_dictionary.json",
        );
    }

    /// A (re-)list replaces what the cache holds once it is complete, as kube-runtime's
    /// reflector does: until then readers see the resources as they were, and a resource deleted
    /// while the watch was down goes with it.
    #[test]
    fn a_list_replaces_the_cache_when_complete() {
        let store = Store::default();
        let named = |name: &str| {
            let mut o = instance(&[], "X");
            o.metadata.name = Some(name.into());
            WatchedInstance::from(o)
        };
        let key = |name: &str| ResourceKey {
            namespace: "ns".into(),
            name: name.into(),
        };
        store.apply(Event::Apply(named("kept")));
        store.apply(Event::Apply(named("deleted while down")));
        store.apply(Event::Init);
        let Event::InitApply(relisted) = store.apply(Event::InitApply(named("kept"))) else {
            unreachable!()
        };
        assert!(!relisted.changed(), "the same inputs as the cached version");
        assert!(
            store.contains(&key("deleted while down")),
            "not before the list is complete"
        );
        store.apply(Event::InitApply(named("new")));
        assert!(!store.contains(&key("new")));
        store.apply(Event::InitDone);
        let keys = || {
            let mut keys: Vec<ResourceKey> = store.keys().iter().map(|k| (**k).clone()).collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(), [key("kept"), key("new")]);
        store.apply(Event::Delete(named("new")));
        assert_eq!(keys(), [key("kept")]);
        assert_eq!(store.in_namespace("ns").len(), 1);
        assert!(store.in_namespace("another").is_empty());
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

    /// The bytes held per resource by `keep`, which takes 1,000 resources as the watch lists them
    /// (JSON) and keeps them as a cache does.
    fn bytes_per_resource<T>(keep: impl FnOnce(&[Vec<u8>]) -> T) -> isize {
        const N: usize = 1000;
        let listed: Vec<Vec<u8>> = (0..N).map(listed).collect();
        let before = crate::allocations::held();
        let kept = keep(&listed);
        let held = crate::allocations::held() - before;
        drop(kept);
        held / N as isize
    }

    /// As kube-runtime's reflector keeps whole resources (its map, key and `Arc`), for comparison.
    fn in_a_reflector(listed: &[Vec<u8>]) -> kube::runtime::reflector::Store<CompShareInstance> {
        let (store, mut writer) = kube::runtime::reflector::store();
        for json in listed {
            let o: CompShareInstance = serde_json::from_slice(json).expect("a resource");
            writer.apply_watcher_event(&Event::Apply(o));
        }
        assert_eq!(store.state().len(), listed.len());
        store
    }

    /// As the operator's cache keeps them.
    fn in_the_cache(listed: &[Vec<u8>]) -> Store {
        let store = Store::default();
        for json in listed {
            let o: WatchedInstance = serde_json::from_slice(json).expect("a resource");
            store.apply(Event::Apply(o));
        }
        assert_eq!(store.keys().len(), listed.len());
        store
    }

    /// What one cached resource costs, deterministically (run with `--nocapture` to see the
    /// figures; BENCHMARKS.md, Memory). The bound keeps it from growing back unnoticed.
    #[test]
    fn a_cached_resource_costs_what_the_reconciler_reads() {
        let whole = bytes_per_resource(in_a_reflector);
        let cached = bytes_per_resource(in_the_cache);
        let status: CompShareInstanceStatus =
            serde_json::from_value(status_of(7)).expect("a status");
        let packed = Packed::pack(&status).len();
        println!(
            "bytes per cached resource: {whole} whole, {cached} as cached; a packed status {packed}"
        );
        println!(
            "inline: {} per cached resource, {} per whole one (of which metadata {})",
            size_of::<CachedInstance>(),
            size_of::<CompShareInstance>(),
            size_of::<ObjectMeta>(),
        );
        assert!(cached < 600, "{cached} bytes per cached resource");
        assert!(packed < 200, "a packed status of {packed} bytes");
    }
}
