//! The operator's one cache of `CompShareInstance`s. The controller's watch fills it; discovery
//! reads it and is told when one of its own resources changes. One watch and one store, not one
//! per controller: at 10,000 resources a second cache of every instance cost about 2.8 KiB per
//! resource (BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use tokio::sync::mpsc;

use crate::resource::{
    CREATE_PENDING_ANNOTATION, CREATED_ID_ANNOTATION, CompShareDiscovery, CompShareInstance,
    DISCOVERY_LABEL, MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION, REFRESH_ANNOTATION,
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
    pub(crate) writer: reflector::store::Writer<CompShareInstance>,
    pub(crate) store: Store<CompShareInstance>,
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
    pub(crate) fn touched(&self, o: &CompShareInstance) {
        if let Some(owner) = discovery_of(o) {
            // Discovery has stopped (its receiver is gone) only when the operation is ending.
            let _ = self.owners.send(owner);
        }
    }
}

/// What discovery reads.
pub(crate) struct Reader {
    /// Every `CompShareInstance` in the watched namespaces.
    pub(crate) store: Store<CompShareInstance>,
    /// Whether the store holds the first complete list.
    pub(crate) ready: Arc<AtomicBool>,
    /// The discoveries whose resources changed.
    pub(crate) changed: mpsc::UnboundedReceiver<ObjectRef<CompShareDiscovery>>,
}

/// The discovery that created `o`, by its label and controller owner reference.
fn discovery_of(o: &CompShareInstance) -> Option<ObjectRef<CompShareDiscovery>> {
    o.labels().get(DISCOVERY_LABEL)?;
    let owner = o
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == "CompShareDiscovery")?;
    Some(ObjectRef::new(&owner.name).within(&o.namespace()?))
}

/// Drops from cached objects what neither controller reads: managed fields (the bulk of each
/// object), labels other than discovery's, and annotations other than the operator's own
/// (`kubectl apply` keeps a whole copy of the object in one). At 10,000 resources this is most of
/// the cache.
pub(crate) fn keep_what_is_read(o: &mut CompShareInstance) {
    let meta = &mut o.metadata;
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

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
        let own = instance(&[(DISCOVERY_LABEL, "account")], "CompShareDiscovery");
        assert_eq!(
            discovery_of(&own),
            Some(ObjectRef::new("account").within("ns"))
        );
        let unlabelled = instance(&[], "CompShareDiscovery");
        assert_eq!(discovery_of(&unlabelled), None);
        let other_owner = instance(&[(DISCOVERY_LABEL, "account")], "Deployment");
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
        keep_what_is_read(&mut o);
        assert_eq!(o.labels().keys().collect::<Vec<_>>(), [DISCOVERY_LABEL]);
        assert_eq!(
            o.annotations().keys().collect::<Vec<_>>(),
            [MISSING_SINCE_ANNOTATION, PAUSED_ANNOTATION]
        );
        assert!(o.owner_references().len() == 1);
    }
}
