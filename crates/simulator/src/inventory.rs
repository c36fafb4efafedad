//! The simulated instances: indexed by id, listed in a stable order, filtered and paged the way
//! `DescribeCompShareInstance` does, and settled in time order (see the `lifecycle` module).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::accounts::Accounts;
use super::clock::Clock;
use super::lifecycle::{self, Sim, Transitions};
use super::shape::{IP_SET, OWNER, PROJECT_ID, REGION, TAG, UHOST_ID, ZONE};

/// Why an instance (from a fixture or the admin interface) cannot be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstanceError {
    #[error("an instance must be a mapping of UHostSet fields")]
    NotAnObject,
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0} must be a non-empty string")]
    NotAString(&'static str),
    #[error("an instance with UHostId {0} already exists")]
    Duplicate(String),
    #[error("Owner {0:?} is not the public key of any account")]
    UnknownOwner(String),
    #[error("Owner (a public key) is required unless there is exactly one account")]
    OwnerRequired,
    #[error("ProjectId {project:?} is not a project of account {owner:?}")]
    UnknownProject { project: String, owner: String },
    #[error("UHostId cannot be changed (from {from} to {to})")]
    IdChanged { from: String, to: String },
}

/// One instance: the fields served in `UHostSet`, plus where it lives and what is due to it.
#[derive(Clone, Debug)]
pub(super) struct StoredInstance {
    pub id: String,
    pub owner: String,
    pub project_id: String,
    pub region: String,
    zone: Option<String>,
    tag: Option<String>,
    vpc_ids: Vec<String>,
    subnet_ids: Vec<String>,
    /// Exactly what `UHostSet` carries for this instance.
    pub fields: Map<String, Value>,
    /// Its transition, lock and scheduled stop.
    pub sim: Sim,
}

impl StoredInstance {
    /// Validates placement (`UHostId`, `Region`, `Owner`, `ProjectId`) and indexes the filterable
    /// fields. `Owner` and `ProjectId` are taken out of the served fields; any other field is
    /// served as given, however odd, so fixtures can reproduce odd answers.
    pub(crate) fn place(
        mut fields: Map<String, Value>,
        accounts: &Accounts,
    ) -> Result<Self, InstanceError> {
        let id = required_string(&fields, UHOST_ID)?;
        let region = required_string(&fields, REGION)?;
        let owner = match fields.remove(OWNER) {
            None | Some(Value::Null) => accounts.sole().ok_or(InstanceError::OwnerRequired)?,
            Some(Value::String(key)) => {
                accounts.get(&key).ok_or(InstanceError::UnknownOwner(key))?
            }
            Some(_) => return Err(InstanceError::NotAString(OWNER)),
        };
        let project_id = match fields.remove(PROJECT_ID) {
            None | Some(Value::Null) => owner.default_project().id.clone(),
            Some(Value::String(project)) if owner.project(&project).is_some() => project,
            Some(Value::String(project)) => {
                return Err(InstanceError::UnknownProject {
                    project,
                    owner: owner.public_key.clone(),
                });
            }
            Some(_) => return Err(InstanceError::NotAString(PROJECT_ID)),
        };
        let (vpc_ids, subnet_ids) = networks(&fields);
        Ok(StoredInstance {
            id,
            owner: owner.public_key.clone(),
            project_id,
            region,
            zone: string_field(&fields, ZONE),
            tag: string_field(&fields, TAG),
            vpc_ids,
            subnet_ids,
            fields,
            sim: Sim::default(),
        })
    }

    pub(crate) fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    pub(crate) fn gpu_type(&self) -> Option<&str> {
        self.fields.get("GpuType").and_then(Value::as_str)
    }

    /// The GPUs it holds (`GPU`), 0 when unreadable.
    pub(crate) fn gpus(&self) -> u64 {
        self.fields.get("GPU").and_then(Value::as_u64).unwrap_or(0)
    }

    /// Whether it holds its GPUs: every state but `Stopped` does.
    fn holds_gpus(&self) -> bool {
        lifecycle::state(&self.fields) != lifecycle::STOPPED
    }

    /// The instance as a fixture or the admin interface writes it: the served fields plus `Owner`
    /// and `ProjectId`.
    pub(crate) fn admin_view(&self) -> Map<String, Value> {
        let mut view = self.fields.clone();
        view.insert(OWNER.to_owned(), Value::String(self.owner.clone()));
        view.insert(
            PROJECT_ID.to_owned(),
            Value::String(self.project_id.clone()),
        );
        view
    }

    fn matches(&self, query: &Query<'_>) -> bool {
        self.owner == query.owner
            && self.project_id == query.project_id
            && self.region == query.region
            && matches_optional(self.zone.as_deref(), query.zone)
            && matches_optional(self.tag.as_deref(), query.tag)
            && query
                .vpc_id
                .is_none_or(|v| self.vpc_ids.iter().any(|id| id == v))
            && query
                .subnet_id
                .is_none_or(|s| self.subnet_ids.iter().any(|id| id == s))
            && !query.hidden.contains(&self.id)
    }
}

fn matches_optional(value: Option<&str>, wanted: Option<&str>) -> bool {
    wanted.is_none_or(|w| value == Some(w))
}

fn required_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<String, InstanceError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(InstanceError::Missing(name)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(InstanceError::NotAString(name)),
    }
}

fn string_field(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The VPC and subnet ids of the instance's `IPSet` entries, which the `VPCId` and `SubnetId`
/// filters match.
fn networks(fields: &Map<String, Value>) -> (Vec<String>, Vec<String>) {
    let entries = fields
        .get(IP_SET)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ids = |field: &str| {
        entries
            .iter()
            .filter_map(|entry| entry.get(field).and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    };
    (ids("VPCId"), ids("SubnetId"))
}

/// One `DescribeCompShareInstance` selection. `None` filters match everything.
#[derive(Debug)]
pub(super) struct Query<'a> {
    pub owner: &'a str,
    pub project_id: &'a str,
    pub region: &'a str,
    pub zone: Option<&'a str>,
    /// `None`: every instance; `Some`: only these ids.
    pub ids: Option<&'a [String]>,
    pub tag: Option<&'a str>,
    pub vpc_id: Option<&'a str>,
    pub subnet_id: Option<&'a str>,
    /// Ids the gateway behaves as if it could not see (the `omit` fault).
    pub hidden: &'a HashSet<String>,
    pub offset: usize,
    pub limit: usize,
}

/// One page of a selection.
#[derive(Debug)]
pub(super) struct Page {
    /// How many instances the selection holds before paging.
    pub total: usize,
    pub instances: Vec<Arc<StoredInstance>>,
}

/// All instances. Each has a sequence number, fixed when it is added, that orders every listing:
/// paging through a changing inventory stays stable.
#[derive(Debug, Default)]
pub(super) struct Inventory {
    by_seq: BTreeMap<u64, Arc<StoredInstance>>,
    seq_by_id: HashMap<String, u64>,
    next_seq: u64,
    /// When each instance with something due next needs settling, earliest first: settling costs
    /// nothing while nothing is due, however many instances there are.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Instances `CreateCompShareInstance` has made: numbers their addresses.
    created: u64,
}

impl Inventory {
    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(crate) fn add(&mut self, instance: StoredInstance) -> Result<(), InstanceError> {
        if self.seq_by_id.contains_key(&instance.id) {
            return Err(InstanceError::Duplicate(instance.id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_by_id.insert(instance.id.clone(), seq);
        self.index_deadline(seq, None, instance.sim.deadline());
        self.by_seq.insert(seq, Arc::new(instance));
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<StoredInstance>> {
        self.seq_by_id.get(id).and_then(|seq| self.by_seq.get(seq))
    }

    /// Puts `instance` in the place of the one with the same id; false when there is none.
    pub(crate) fn replace(&mut self, instance: StoredInstance) -> bool {
        let Some(&seq) = self.seq_by_id.get(&instance.id) else {
            return false;
        };
        let new = instance.sim.deadline();
        let old = self.by_seq.insert(seq, Arc::new(instance));
        self.index_deadline(seq, old.and_then(|i| i.sim.deadline()), new);
        true
    }

    /// Changes the instance `id` in place; `None` when there is none.
    pub(crate) fn update<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut StoredInstance) -> R,
    ) -> Option<R> {
        let seq = *self.seq_by_id.get(id)?;
        let instance = Arc::make_mut(self.by_seq.get_mut(&seq)?);
        let old = instance.sim.deadline();
        let result = change(instance);
        let new = instance.sim.deadline();
        self.index_deadline(seq, old, new);
        Some(result)
    }

    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(seq) = self.seq_by_id.remove(id) else {
            return false;
        };
        let removed = self.by_seq.remove(&seq);
        let old = removed.as_ref().and_then(|i| i.sim.deadline());
        self.index_deadline(seq, old, None);
        removed.is_some()
    }

    fn index_deadline(&mut self, seq: u64, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.deadlines.remove(&(at, seq));
        }
        if let Some(at) = new {
            self.deadlines.insert((at, seq));
        }
    }

    /// Whether something has come due by `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.deadlines.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Brings every instance with something due by `now` to where it is then.
    pub(crate) fn settle(&mut self, now: Instant, clock: &Clock, transitions: &Transitions) {
        while let Some(&(at, seq)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, seq));
            let Some(entry) = self.by_seq.get_mut(&seq) else {
                continue;
            };
            let instance = Arc::make_mut(entry);
            lifecycle::settle(
                &mut instance.fields,
                &mut instance.sim,
                now,
                clock,
                transitions,
            );
            if let Some(next) = instance.sim.deadline() {
                self.deadlines.insert((next, seq));
            }
        }
    }

    /// How many instances `owner` (a public key) has, in every region and project.
    pub(crate) fn owned_by(&self, owner: &str) -> usize {
        self.by_seq.values().filter(|i| i.owner == owner).count()
    }

    /// The GPUs of `gpu_type` held in `zone`, by every account's instances.
    pub(crate) fn gpus_in_use(&self, zone: &str, gpu_type: &str) -> u64 {
        self.by_seq
            .values()
            .filter(|i| i.zone() == Some(zone) && i.gpu_type() == Some(gpu_type) && i.holds_gpus())
            .map(|i| i.gpus())
            .sum()
    }

    /// A fresh `uhost-` and eight hex digits.
    pub(crate) fn new_id(&self) -> String {
        loop {
            let id = format!("uhost-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            if !self.seq_by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// A number for the next instance a create makes, never given before.
    pub(crate) fn next_serial(&mut self) -> u64 {
        self.created += 1;
        self.created - 1
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<StoredInstance>> {
        self.by_seq.values()
    }

    /// Selects, counts and pages. Asking by id costs a lookup per id, not a scan, since that is
    /// how an operator polls.
    pub(crate) fn query(&self, query: &Query<'_>) -> Page {
        let mut page = Page {
            total: 0,
            instances: Vec::with_capacity(query.limit.min(self.len())),
        };
        let mut take = |instance: &Arc<StoredInstance>| {
            if !instance.matches(query) {
                return;
            }
            if page.total >= query.offset && page.instances.len() < query.limit {
                page.instances.push(Arc::clone(instance));
            }
            page.total += 1;
        };
        match query.ids {
            None => self.by_seq.values().for_each(&mut take),
            Some(ids) => {
                let mut seqs: Vec<u64> = ids
                    .iter()
                    .filter_map(|id| self.seq_by_id.get(id).copied())
                    .collect();
                seqs.sort_unstable();
                seqs.dedup();
                seqs.iter().map(|seq| &self.by_seq[seq]).for_each(&mut take);
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Account, Project};
    use secrecy::SecretString;
    use serde_json::json;

    fn accounts() -> Accounts {
        let mut accounts = Accounts::default();
        for (key, projects) in [("pub-a", vec!["org-a", "org-a2"]), ("pub-b", vec!["org-b"])] {
            let projects = projects
                .into_iter()
                .enumerate()
                .map(|(i, id)| Project {
                    id: id.into(),
                    name: id.into(),
                    is_default: i == 0,
                })
                .collect();
            accounts
                .add(Account::new(key.into(), SecretString::from("x"), projects))
                .unwrap();
        }
        accounts
    }

    fn place(value: Value) -> Result<StoredInstance, InstanceError> {
        let Value::Object(fields) = value else {
            panic!("test instance is not an object")
        };
        StoredInstance::place(fields, &accounts())
    }

    fn inventory(values: Vec<Value>) -> Inventory {
        let mut inventory = Inventory::default();
        for value in values {
            inventory.add(place(value).unwrap()).unwrap();
        }
        inventory
    }

    fn instance(id: &str, extra: Value) -> Value {
        let mut value =
            json!({"UHostId": id, "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "Owner": "pub-a"});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        value
    }

    fn query<'a>(hidden: &'a HashSet<String>) -> Query<'a> {
        Query {
            owner: "pub-a",
            project_id: "org-a",
            region: "cn-wlcb",
            zone: None,
            ids: None,
            tag: None,
            vpc_id: None,
            subnet_id: None,
            hidden,
            offset: 0,
            limit: 100,
        }
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.instances.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn placement_is_validated() {
        assert_eq!(
            place(json!({"Region": "cn-wlcb", "Owner": "pub-a"})).unwrap_err(),
            InstanceError::Missing("UHostId")
        );
        assert_eq!(
            place(json!({"UHostId": "uhost-1", "Owner": "pub-a"})).unwrap_err(),
            InstanceError::Missing("Region")
        );
        assert_eq!(
            place(json!({"UHostId": "uhost-1", "Region": 7, "Owner": "pub-a"})).unwrap_err(),
            InstanceError::NotAString("Region")
        );
        assert_eq!(
            place(json!({"UHostId": "uhost-1", "Region": "cn-wlcb"})).unwrap_err(),
            InstanceError::OwnerRequired
        );
        assert_eq!(
            place(instance("uhost-1", json!({"Owner": "pub-x"}))).unwrap_err(),
            InstanceError::UnknownOwner("pub-x".into())
        );
        assert_eq!(
            place(instance("uhost-1", json!({"ProjectId": "org-b"}))).unwrap_err(),
            InstanceError::UnknownProject {
                project: "org-b".into(),
                owner: "pub-a".into()
            }
        );
    }

    #[test]
    fn owner_and_project_are_placement_not_served_fields() {
        let placed = place(instance("uhost-1", json!({"Extra": 1}))).unwrap();
        assert_eq!(placed.project_id, "org-a");
        assert!(!placed.fields.contains_key(OWNER));
        assert!(!placed.fields.contains_key(PROJECT_ID));
        assert_eq!(placed.fields["Extra"], 1);
        let view = placed.admin_view();
        assert_eq!(view[OWNER], "pub-a");
        assert_eq!(view[PROJECT_ID], "org-a");
    }

    #[test]
    fn ids_are_unique_and_order_is_insertion_order() {
        let mut inv = inventory(vec![
            instance("uhost-c", json!({})),
            instance("uhost-a", json!({})),
            instance("uhost-b", json!({})),
        ]);
        assert_eq!(
            inv.add(place(instance("uhost-a", json!({}))).unwrap()),
            Err(InstanceError::Duplicate("uhost-a".into()))
        );
        let hidden = HashSet::new();
        assert_eq!(
            ids(&inv.query(&query(&hidden))),
            ["uhost-c", "uhost-a", "uhost-b"]
        );
        // Replacing keeps the place; removing and adding again goes to the end.
        assert!(inv.replace(place(instance("uhost-c", json!({"State": "Stopped"}))).unwrap()));
        assert!(inv.remove("uhost-a"));
        assert!(!inv.remove("uhost-a"));
        inv.add(place(instance("uhost-a", json!({}))).unwrap())
            .unwrap();
        assert_eq!(
            ids(&inv.query(&query(&hidden))),
            ["uhost-c", "uhost-b", "uhost-a"]
        );
        assert_eq!(inv.get("uhost-c").unwrap().fields["State"], "Stopped");
        assert!(!inv.replace(place(instance("uhost-z", json!({}))).unwrap()));
    }

    #[test]
    fn filters_select_by_owner_project_region_zone_tag_and_network() {
        let inv = inventory(vec![
            instance(
                "uhost-1",
                json!({"Tag": "train", "IPSet": [{"IP": "10.0.0.1", "VPCId": "uvnet-1", "SubnetId": "subnet-1"}]}),
            ),
            instance(
                "uhost-2",
                json!({"Zone": "cn-wlcb-02", "IPSet": [{"VPCId": "uvnet-2", "SubnetId": "subnet-2"}]}),
            ),
            instance("uhost-3", json!({"Region": "cn-sh2", "Zone": "cn-sh2-01"})),
            instance("uhost-4", json!({"Owner": "pub-b"})),
            instance("uhost-5", json!({"ProjectId": "org-a2"})),
        ]);
        let hidden = HashSet::new();
        let base = || query(&hidden);
        assert_eq!(ids(&inv.query(&base())), ["uhost-1", "uhost-2"]);
        assert_eq!(
            ids(&inv.query(&Query {
                zone: Some("cn-wlcb-02"),
                ..base()
            })),
            ["uhost-2"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                tag: Some("train"),
                ..base()
            })),
            ["uhost-1"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                vpc_id: Some("uvnet-2"),
                ..base()
            })),
            ["uhost-2"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                subnet_id: Some("subnet-1"),
                ..base()
            })),
            ["uhost-1"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                region: "cn-sh2",
                ..base()
            })),
            ["uhost-3"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                project_id: "org-a2",
                ..base()
            })),
            ["uhost-5"]
        );
        assert_eq!(
            ids(&inv.query(&Query {
                owner: "pub-b",
                project_id: "org-b",
                ..base()
            })),
            ["uhost-4"]
        );
        // Asking by id never reveals another account's, region's or project's instance.
        let wanted: Vec<String> = (1..=5).map(|i| format!("uhost-{i}")).collect();
        assert_eq!(
            ids(&inv.query(&Query {
                ids: Some(&wanted),
                ..base()
            })),
            ["uhost-1", "uhost-2"]
        );
    }

    #[test]
    fn asking_by_id_returns_those_ids_in_listing_order_once_each() {
        let inv = inventory(
            (0..10)
                .map(|i| instance(&format!("uhost-{i}"), json!({})))
                .collect(),
        );
        let hidden: HashSet<String> = ["uhost-3".to_owned()].into();
        let wanted: Vec<String> = ["uhost-7", "uhost-3", "uhost-1", "uhost-7", "uhost-missing"]
            .map(String::from)
            .to_vec();
        let page = inv.query(&Query {
            ids: Some(&wanted),
            ..query(&hidden)
        });
        assert_eq!(ids(&page), ["uhost-1", "uhost-7"]);
        assert_eq!(page.total, 2);
    }

    #[test]
    fn only_what_has_come_due_is_settled_and_the_index_follows_every_change() {
        use crate::lifecycle::{Transition, begin};
        use std::time::Duration;
        let t0 = Instant::now();
        let clock = Clock::anchored(t0, 1_700_000_000_000);
        let transitions = Transitions::uniform(1000);
        let mut inv = inventory(
            (0..4)
                .map(|i| instance(&format!("uhost-{i}"), json!({"State": "Running"})))
                .collect(),
        );
        assert!(!inv.is_due(t0 + Duration::from_secs(3600)));
        let stop_at = |inv: &mut Inventory, id: &str, offset_ms: u64| {
            inv.update(id, |i| {
                begin(
                    &mut i.fields,
                    &mut i.sim,
                    Transition::Stop,
                    t0 + Duration::from_millis(offset_ms),
                    &clock,
                    &transitions,
                )
            })
            .unwrap()
        };
        stop_at(&mut inv, "uhost-0", 0);
        stop_at(&mut inv, "uhost-1", 500);
        stop_at(&mut inv, "uhost-2", 5000);
        assert_eq!(inv.deadlines.len(), 3);
        assert!(!inv.is_due(t0 + Duration::from_millis(999)));
        assert!(inv.is_due(t0 + Duration::from_millis(1000)));
        inv.settle(t0 + Duration::from_millis(1500), &clock, &transitions);
        let state = |inv: &Inventory, id: &str| inv.get(id).unwrap().fields["State"].clone();
        assert_eq!(state(&inv, "uhost-0"), "Stopped");
        assert_eq!(state(&inv, "uhost-1"), "Stopped");
        assert_eq!(state(&inv, "uhost-2"), "Stopping");
        assert_eq!(inv.deadlines.len(), 1);
        // A replaced instance keeps no stale deadline; a removed one leaves none.
        let mut replaced = (**inv.get("uhost-2").unwrap()).clone();
        replaced.sim = Sim::default();
        assert!(inv.replace(replaced));
        assert!(inv.deadlines.is_empty());
        stop_at(&mut inv, "uhost-3", 0);
        assert!(inv.remove("uhost-3"));
        assert!(inv.deadlines.is_empty());
        assert!(!inv.is_due(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn ownership_and_gpus_in_use_are_counted() {
        let inv = inventory(vec![
            instance(
                "uhost-1",
                json!({"GPU": 2, "GpuType": "4090", "State": "Running"}),
            ),
            instance(
                "uhost-2",
                json!({"GPU": 1, "GpuType": "4090", "State": "Stopped"}),
            ),
            instance(
                "uhost-3",
                json!({"GPU": 4, "GpuType": "A800", "State": "Running"}),
            ),
            instance(
                "uhost-4",
                json!({"GPU": 1, "GpuType": "4090", "Owner": "pub-b", "State": "Starting"}),
            ),
            instance(
                "uhost-5",
                json!({"GPU": 8, "GpuType": "4090", "Zone": "cn-wlcb-02"}),
            ),
        ]);
        assert_eq!(inv.owned_by("pub-a"), 4);
        assert_eq!(inv.owned_by("pub-b"), 1);
        assert_eq!(inv.gpus_in_use("cn-wlcb-01", "4090"), 3);
        assert_eq!(inv.gpus_in_use("cn-wlcb-01", "A800"), 4);
        assert_eq!(inv.gpus_in_use("cn-wlcb-02", "4090"), 8);
        assert_eq!(inv.gpus_in_use("cn-wlcb-03", "4090"), 0);
        let id = inv.new_id();
        assert!(id.starts_with("uhost-") && id.len() == 14, "{id}");
    }

    #[test]
    fn paging_counts_everything_and_returns_one_window() {
        let inv = inventory(
            (0..25)
                .map(|i| instance(&format!("uhost-{i:02}"), json!({})))
                .collect(),
        );
        let hidden = HashSet::new();
        let page = inv.query(&Query {
            offset: 20,
            limit: 10,
            ..query(&hidden)
        });
        assert_eq!(page.total, 25);
        assert_eq!(
            ids(&page),
            ["uhost-20", "uhost-21", "uhost-22", "uhost-23", "uhost-24"]
        );
        let page = inv.query(&Query {
            offset: 0,
            limit: 0,
            ..query(&hidden)
        });
        assert_eq!((page.total, page.instances.len()), (25, 0));
        let page = inv.query(&Query {
            offset: 30,
            limit: 10,
            ..query(&hidden)
        });
        assert_eq!((page.total, page.instances.len()), (25, 0));
    }
}
