//! The fixture: accounts and the instances they own, from YAML (or JSON, which is YAML too), and
//! the simulator's settings (zones, transition times, capacity).
//!
//! ```yaml
//! accounts:
//!   - publicKey: "..."
//!     privateKey: "..."
//!     projects: [{projectId: org-abc, name: default, default: true}]  # optional
//!     instanceQuota: 5         # optional, default 100
//!     inArrears: false         # optional: true refuses creates and starts (226601)
//! zones: [{region: cn-wlcb, zone: cn-wlcb-01, describe: 华北二A}]     # optional
//! transitions: {createMs: 3000, startMs: 2000, stopMs: 2000, rebootMs: 2000}  # optional
//! capacity: [{zone: cn-wlcb-01, gpuType: "4090", gpus: 8}]         # optional: unlimited
//! instances:
//!   - UHostId: uhost-aaaa
//!     Region: cn-wlcb          # required
//!     ProjectId: org-abc       # optional: the owner's default project
//!     Owner: "<publicKey>"     # optional when there is exactly one account
//!     State: Running
//!     # ...any other UHostSet field, in the vendor's PascalCase
//! ```

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::accounts::{Account, Accounts, Project};
use super::inventory::{InstanceError, Inventory, StoredInstance};
use super::lifecycle::Transitions;
use super::shape::{self, UHOST_ID};
use super::zones::{Capacity, ZoneEntry, Zones};

const EMBEDDED_DEFAULT: &str = include_str!("default-fixture.yaml");

/// Why a fixture cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fixture does not parse: {0}")]
    Syntax(String),
    #[error("accounts[{index}]: {problem}")]
    Account {
        index: usize,
        problem: AccountProblem,
    },
    #[error("zones[{index}]: {problem}")]
    Zone { index: usize, problem: String },
    #[error("instances[{index}] ({id}): {problem}")]
    Instance {
        index: usize,
        /// The instance's `UHostId`, or `?` when it has none.
        id: String,
        problem: InstanceError,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountProblem {
    #[error("publicKey must not be empty")]
    EmptyPublicKey,
    #[error("privateKey must not be empty")]
    EmptyPrivateKey,
    #[error("publicKey {0:?} is used by an earlier account")]
    DuplicatePublicKey(String),
    #[error("projectId must not be empty")]
    EmptyProjectId,
    #[error("projectId {0:?} appears twice")]
    DuplicateProject(String),
    #[error("more than one project is marked default")]
    SeveralDefaultProjects,
}

/// A validated fixture, ready to serve.
#[derive(Debug)]
pub struct Fixture {
    pub(super) accounts: Accounts,
    pub(super) inventory: Inventory,
    pub(super) zones: Zones,
    pub(super) transitions: Transitions,
    pub(super) capacity: Vec<Capacity>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FixtureFile {
    #[serde(default)]
    accounts: Vec<AccountEntry>,
    /// The whole list when given; else two zones per region of the instances, and cn-wlcb's.
    #[serde(default)]
    zones: Option<Vec<ZoneEntry>>,
    #[serde(default)]
    transitions: Transitions,
    #[serde(default)]
    capacity: Vec<Capacity>,
    #[serde(default)]
    instances: Vec<Value>,
}

/// A fixture built in code (tests, benchmarks), checked like a file when built.
///
/// ```
/// use compshare_simulator::Fixture;
/// use serde_json::json;
///
/// let fixture = Fixture::builder()
///     .account("my-public-key", "my-private-key")
///     .instance(json!({"UHostId": "uhost-aaaa", "Region": "cn-wlcb", "State": "Running"}))
///     .build()
///     .expect("a valid fixture");
/// # drop(fixture);
/// ```
#[derive(Default)]
pub struct FixtureBuilder {
    file: FixtureFile,
}

impl FixtureBuilder {
    /// An account (in its default project).
    pub fn account(mut self, public_key: &str, private_key: &str) -> Self {
        self.file.accounts.push(AccountEntry {
            public_key: public_key.to_owned(),
            private_key: private_key.to_owned(),
            projects: Vec::new(),
            instance_quota: None,
            in_arrears: false,
        });
        self
    }

    /// A project of the account added last; the first one given is its default.
    pub fn project(mut self, project_id: &str) -> Self {
        if let Some(account) = self.file.accounts.last_mut() {
            let default = account.projects.is_empty();
            account.projects.push(ProjectEntry {
                project_id: project_id.to_owned(),
                name: None,
                default,
            });
        }
        self
    }

    /// The instance quota of the account added last (default 100).
    pub fn instance_quota(mut self, quota: u32) -> Self {
        if let Some(account) = self.file.accounts.last_mut() {
            account.instance_quota = Some(quota);
        }
        self
    }

    /// Puts the account added last in arrears: creates and starts are refused (226601).
    pub fn in_arrears(mut self) -> Self {
        if let Some(account) = self.file.accounts.last_mut() {
            account.in_arrears = true;
        }
        self
    }

    /// A zone; once one is given, the fixture's zones are exactly those given.
    pub fn zone(mut self, region: &str, zone: &str) -> Self {
        self.file
            .zones
            .get_or_insert_with(Vec::new)
            .push(ZoneEntry {
                region: region.to_owned(),
                zone: zone.to_owned(),
                describe: None,
            });
        self
    }

    /// How long transitions take (default 3 s to create, 2 s to start, stop or reboot).
    pub fn transitions(mut self, transitions: Transitions) -> Self {
        self.file.transitions = transitions;
        self
    }

    /// The GPUs of `gpu_type` that `zone` has (default: unlimited).
    pub fn capacity(mut self, zone: &str, gpu_type: &str, gpus: u64) -> Self {
        self.file.capacity.push(Capacity {
            zone: zone.to_owned(),
            gpu_type: gpu_type.to_owned(),
            gpus,
        });
        self
    }

    /// An instance: `UHostSet` fields in the vendor's PascalCase, plus `Region` (required),
    /// `Owner` (an account's public key; optional with one account) and `ProjectId`.
    pub fn instance(mut self, fields: Value) -> Self {
        self.file.instances.push(fields);
        self
    }

    pub fn instances(mut self, instances: impl IntoIterator<Item = Value>) -> Self {
        self.file.instances.extend(instances);
        self
    }

    pub fn build(self) -> Result<Fixture, FixtureError> {
        Fixture::from_file(self.file)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AccountEntry {
    public_key: String,
    private_key: String,
    #[serde(default)]
    projects: Vec<ProjectEntry>,
    #[serde(default)]
    instance_quota: Option<u32>,
    #[serde(default)]
    in_arrears: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProjectEntry {
    project_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    default: bool,
}

impl Fixture {
    pub fn builder() -> FixtureBuilder {
        FixtureBuilder::default()
    }

    pub fn from_yaml(text: &str) -> Result<Fixture, FixtureError> {
        let file: FixtureFile = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| FixtureError::Syntax(e.to_string()))?;
        Fixture::from_file(file)
    }

    fn from_file(file: FixtureFile) -> Result<Fixture, FixtureError> {
        let mut accounts = Accounts::default();
        for (index, entry) in file.accounts.into_iter().enumerate() {
            let account = entry
                .into_account()
                .map_err(|problem| FixtureError::Account { index, problem })?;
            accounts
                .add(account)
                .map_err(|taken| FixtureError::Account {
                    index,
                    problem: AccountProblem::DuplicatePublicKey(taken.public_key),
                })?;
        }
        let now = shape::unix_now();
        let mut inventory = Inventory::default();
        for (index, fields) in file.instances.into_iter().enumerate() {
            let id = fields
                .get(UHOST_ID)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            let Value::Object(mut fields) = fields else {
                return Err(FixtureError::Instance {
                    index,
                    id,
                    problem: InstanceError::NotAnObject,
                });
            };
            shape::fill_defaults(&mut fields, now);
            StoredInstance::place(fields, &accounts)
                .and_then(|instance| inventory.add(instance))
                .map_err(|problem| FixtureError::Instance { index, id, problem })?;
        }
        let zones = match file.zones {
            Some(entries) => Zones::listed(entries)
                .map_err(|(index, problem)| FixtureError::Zone { index, problem })?,
            None => Zones::default_for(inventory.iter().map(|i| i.region.as_str())),
        };
        Ok(Fixture {
            accounts,
            inventory,
            zones,
            transitions: file.transitions,
            capacity: file.capacity,
        })
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Fixture, FixtureError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.to_owned(),
            source,
        })?;
        Fixture::from_yaml(&text)
    }

    /// One demo account (`compshare-demo-public-key` / `compshare-demo-private-key`) and a handful
    /// of instances in `cn-wlcb` in the states an operator must handle.
    pub fn embedded_default() -> Fixture {
        Fixture::from_yaml(EMBEDDED_DEFAULT).expect("the embedded default fixture is valid")
    }
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // The vendor's answers say `IsExpire: No`; YAML 1.1 would read that as `false`.
        strict_booleans: true,
        // A fixture is a trusted local file that may hold tens of thousands of instances (the
        // operator's benchmark serves 10,000): the defaults guard against hostile input instead.
        budget: serde_saphyr::budget! {
            max_events: 100_000_000,
            max_nodes: 50_000_000,
        },
    }
}

impl AccountEntry {
    fn into_account(self) -> Result<Account, AccountProblem> {
        if self.public_key.is_empty() {
            return Err(AccountProblem::EmptyPublicKey);
        }
        if self.private_key.is_empty() {
            return Err(AccountProblem::EmptyPrivateKey);
        }
        let mut projects: Vec<Project> = Vec::with_capacity(self.projects.len());
        for entry in self.projects {
            if entry.project_id.is_empty() {
                return Err(AccountProblem::EmptyProjectId);
            }
            if projects.iter().any(|p| p.id == entry.project_id) {
                return Err(AccountProblem::DuplicateProject(entry.project_id));
            }
            if entry.default && projects.iter().any(|p| p.is_default) {
                return Err(AccountProblem::SeveralDefaultProjects);
            }
            projects.push(Project {
                name: entry.name.unwrap_or_else(|| entry.project_id.clone()),
                id: entry.project_id,
                is_default: entry.default,
            });
        }
        let account = Account::new(
            self.public_key,
            SecretString::from(self.private_key),
            projects,
        );
        if let Some(quota) = self.instance_quota {
            account.set_instance_quota(quota);
        }
        account.set_in_arrears(self.in_arrears);
        Ok(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn instance_error(yaml: &str) -> (usize, String, InstanceError) {
        match Fixture::from_yaml(yaml).unwrap_err() {
            FixtureError::Instance { index, id, problem } => (index, id, problem),
            other => panic!("expected an instance error, got {other}"),
        }
    }

    fn account_error(yaml: &str) -> (usize, AccountProblem) {
        match Fixture::from_yaml(yaml).unwrap_err() {
            FixtureError::Account { index, problem } => (index, problem),
            other => panic!("expected an account error, got {other}"),
        }
    }

    const ONE_ACCOUNT: &str = "accounts: [{publicKey: pub, privateKey: priv}]\n";

    #[test]
    fn the_embedded_default_fixture_is_valid_and_varied() {
        let fixture = Fixture::embedded_default();
        let account = fixture.accounts.get("compshare-demo-public-key").unwrap();
        use secrecy::ExposeSecret as _;
        assert_eq!(
            account.private_key.expose_secret(),
            "compshare-demo-private-key"
        );
        let instances: Vec<_> = fixture.inventory.iter().collect();
        let states: HashSet<&str> = instances
            .iter()
            .filter_map(|i| i.fields["State"].as_str())
            .collect();
        for state in ["Running", "Stopped", "Starting", "Install Fail"] {
            assert!(states.contains(state), "no {state} instance");
        }
        assert!(instances.iter().any(|i| i.region != "cn-wlcb"));
        assert!(instances.iter().any(|i| {
            i.fields["InstanceType"] == "Container" && i.fields["IPSet"] == Value::Array(vec![])
        }));
        assert!(instances.iter().any(|i| {
            i.fields["IPSet"]
                .as_array()
                .is_some_and(|ips| ips.iter().any(|ip| ip["Type"] == "Internation"))
        }));
    }

    #[test]
    fn yaml_keeps_the_vendors_strings_and_fills_defaults() {
        let fixture = Fixture::from_yaml(&format!(
            "{ONE_ACCOUNT}instances:\n  - {{UHostId: uhost-1, Region: cn-wlcb, IsExpire: No, AutoRenew: Yes, Memory: 32768, InstancePrice: 2.5, Custom: {{a: 1}}}}\n"
        ))
        .unwrap();
        let fields = &fixture.inventory.get("uhost-1").unwrap().fields;
        assert_eq!(fields["IsExpire"], "No");
        assert_eq!(fields["AutoRenew"], "Yes");
        assert_eq!(fields["Memory"], 32768);
        assert_eq!(fields["InstancePrice"], 2.5);
        assert_eq!(fields["Custom"], serde_json::json!({"a": 1}));
        assert_eq!(fields["Zone"], "cn-wlcb-01");
        assert_eq!(fields["IsSpot"], false);
    }

    #[test]
    fn json_is_a_fixture_too() {
        let fixture = Fixture::from_yaml(
            r#"{"accounts": [{"publicKey": "pub", "privateKey": "priv", "projects": [{"projectId": "org-1", "default": true}]}],
                "instances": [{"UHostId": "uhost-1", "Region": "cn-wlcb", "ProjectId": "org-1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            fixture.inventory.get("uhost-1").unwrap().project_id,
            "org-1"
        );
        assert_eq!(
            fixture.accounts.get("pub").unwrap().projects()[0].name,
            "org-1"
        );
    }

    #[test]
    fn instances_are_validated_with_their_position() {
        let (index, id, error) = instance_error(&format!(
            "{ONE_ACCOUNT}instances: [{{UHostId: uhost-1, Region: r}}, {{UHostId: uhost-1, Region: r}}]"
        ));
        assert_eq!((index, id.as_str()), (1, "uhost-1"));
        assert_eq!(error, InstanceError::Duplicate("uhost-1".into()));

        let (index, id, error) =
            instance_error(&format!("{ONE_ACCOUNT}instances: [{{UHostId: uhost-1}}]"));
        assert_eq!((index, id.as_str()), (0, "uhost-1"));
        assert_eq!(error, InstanceError::Missing("Region"));

        let (_, id, error) = instance_error(&format!("{ONE_ACCOUNT}instances: [{{Region: r}}]"));
        assert_eq!(id, "?");
        assert_eq!(error, InstanceError::Missing("UHostId"));

        let (_, _, error) = instance_error(&format!(
            "{ONE_ACCOUNT}instances: [{{UHostId: uhost-1, Region: r, Owner: nobody}}]"
        ));
        assert_eq!(error, InstanceError::UnknownOwner("nobody".into()));

        let (_, _, error) = instance_error(
            "accounts: [{publicKey: a, privateKey: x}, {publicKey: b, privateKey: y}]\ninstances: [{UHostId: uhost-1, Region: r}]",
        );
        assert_eq!(error, InstanceError::OwnerRequired);
    }

    #[test]
    fn accounts_are_validated() {
        assert_eq!(
            account_error(
                "accounts: [{publicKey: a, privateKey: x}, {publicKey: a, privateKey: y}]"
            ),
            (1, AccountProblem::DuplicatePublicKey("a".into()))
        );
        assert_eq!(
            account_error("accounts: [{publicKey: '', privateKey: x}]"),
            (0, AccountProblem::EmptyPublicKey)
        );
        assert_eq!(
            account_error("accounts: [{publicKey: a, privateKey: ''}]"),
            (0, AccountProblem::EmptyPrivateKey)
        );
        assert_eq!(
            account_error(
                "accounts: [{publicKey: a, privateKey: x, projects: [{projectId: p}, {projectId: p}]}]"
            ),
            (0, AccountProblem::DuplicateProject("p".into()))
        );
        assert_eq!(
            account_error(
                "accounts: [{publicKey: a, privateKey: x, projects: [{projectId: p, default: true}, {projectId: q, default: true}]}]"
            ),
            (0, AccountProblem::SeveralDefaultProjects)
        );
    }

    #[test]
    fn syntax_and_shape_errors_say_where() {
        let error = Fixture::from_yaml("accounts: [{publicKey: a, privateKey: x, colour: red}]")
            .unwrap_err();
        assert!(
            matches!(&error, FixtureError::Syntax(m) if m.contains("colour")),
            "{error}"
        );
        assert!(matches!(
            Fixture::from_yaml("instances: [1, 2]"),
            Err(FixtureError::Instance {
                index: 0,
                problem: InstanceError::NotAnObject,
                ..
            })
        ));
        assert!(matches!(
            Fixture::from_yaml("accounts: [{publicKey: a"),
            Err(FixtureError::Syntax(_))
        ));
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let error = Fixture::load("/nonexistent/fixture.yaml").unwrap_err();
        assert!(matches!(error, FixtureError::Read { .. }));
        assert!(error.to_string().contains("/nonexistent/fixture.yaml"));
    }

    #[test]
    fn an_empty_fixture_is_valid() {
        let fixture = Fixture::from_yaml("{}").unwrap();
        assert_eq!(fixture.inventory.len(), 0);
        assert_eq!(fixture.transitions, Transitions::default());
        assert_eq!(fixture.zones, Zones::default_for([]));
        assert!(fixture.capacity.is_empty());
    }

    #[test]
    fn settings_and_account_limits_are_read() {
        let fixture = Fixture::from_yaml(
            "accounts: [{publicKey: pub, privateKey: priv, instanceQuota: 5, inArrears: true}]\n\
             zones: [{region: cn-wlcb, zone: cn-wlcb-01, describe: 华北二A}]\n\
             transitions: {createMs: 10, stopMs: 20}\n\
             capacity: [{zone: cn-wlcb-01, gpuType: '4090', gpus: 8}]\n",
        )
        .unwrap();
        let account = fixture.accounts.get("pub").unwrap();
        assert_eq!(account.instance_quota(), 5);
        assert!(account.in_arrears());
        assert!(fixture.zones.contains("cn-wlcb", "cn-wlcb-01"));
        assert!(!fixture.zones.contains("cn-wlcb", "cn-wlcb-02"));
        assert_eq!(
            fixture.transitions,
            Transitions {
                create_ms: 10,
                stop_ms: 20,
                ..Transitions::default()
            }
        );
        assert_eq!(fixture.capacity[0].gpus, 8);
        assert!(matches!(
            Fixture::from_yaml("zones: [{region: r, zone: z}, {region: r, zone: z}]"),
            Err(FixtureError::Zone { index: 1, .. })
        ));
        assert!(matches!(
            Fixture::from_yaml("transitions: {createMS: 1}"),
            Err(FixtureError::Syntax(_))
        ));
    }

    #[test]
    fn default_zones_follow_the_instances_regions() {
        let fixture = Fixture::embedded_default();
        for (region, zone) in [
            ("cn-wlcb", "cn-wlcb-01"),
            ("cn-wlcb", "cn-wlcb-02"),
            ("cn-sh2", "cn-sh2-01"),
            ("cn-sh2", "cn-sh2-02"),
        ] {
            assert!(fixture.zones.contains(region, zone), "{zone}");
        }
    }

    #[test]
    fn the_builder_sets_limits_on_the_last_account_and_settings() {
        let fixture = Fixture::builder()
            .account("a", "x")
            .account("b", "y")
            .instance_quota(2)
            .in_arrears()
            .zone("cn-wlcb", "cn-wlcb-03")
            .transitions(Transitions::uniform(0))
            .capacity("cn-wlcb-03", "A800", 0)
            .build()
            .unwrap();
        assert_eq!(fixture.accounts.get("a").unwrap().instance_quota(), 100);
        assert_eq!(fixture.accounts.get("b").unwrap().instance_quota(), 2);
        assert!(fixture.accounts.get("b").unwrap().in_arrears());
        assert!(fixture.zones.contains("cn-wlcb", "cn-wlcb-03"));
        assert_eq!(fixture.transitions, Transitions::uniform(0));
        assert_eq!(fixture.capacity.len(), 1);
    }
}
