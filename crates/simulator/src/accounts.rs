//! The simulated accounts: key pairs, their projects, and what limits their buying (an instance
//! quota, arrears).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use secrecy::SecretString;
use sha1::{Digest, Sha1};

#[derive(Debug)]
pub(super) struct Project {
    pub id: String,
    pub name: String,
    pub is_default: bool,
}

#[derive(Debug)]
pub(super) struct Account {
    pub public_key: String,
    pub private_key: SecretString,
    /// Never empty; exactly one project is the default.
    projects: Vec<Project>,
    /// How many instances the account may have; the admin interface changes it while serving.
    instance_quota: AtomicU32,
    /// Unpaid orders: creating and starting machines is refused.
    in_arrears: AtomicBool,
}

/// The quota of an account whose fixture entry gives none: the documentation's highest level.
pub(super) const DEFAULT_INSTANCE_QUOTA: u32 = 100;

impl Account {
    /// Builds an account; `projects` must already be validated (unique ids, at most one default).
    /// With no projects the account gets a made-up default project, because every real account
    /// has one; when none is marked default the first one is.
    pub(crate) fn new(
        public_key: String,
        private_key: SecretString,
        mut projects: Vec<Project>,
    ) -> Self {
        if projects.is_empty() {
            projects.push(Project {
                id: made_up_project_id(&public_key),
                name: "Default".to_owned(),
                is_default: true,
            });
        }
        if !projects.iter().any(|p| p.is_default) {
            projects[0].is_default = true;
        }
        Account {
            public_key,
            private_key,
            projects,
            instance_quota: AtomicU32::new(DEFAULT_INSTANCE_QUOTA),
            in_arrears: AtomicBool::new(false),
        }
    }

    pub(crate) fn instance_quota(&self) -> u32 {
        self.instance_quota.load(Ordering::Relaxed)
    }

    pub(crate) fn set_instance_quota(&self, quota: u32) {
        self.instance_quota.store(quota, Ordering::Relaxed);
    }

    pub(crate) fn in_arrears(&self) -> bool {
        self.in_arrears.load(Ordering::Relaxed)
    }

    pub(crate) fn set_in_arrears(&self, in_arrears: bool) {
        self.in_arrears.store(in_arrears, Ordering::Relaxed);
    }

    pub(crate) fn projects(&self) -> &[Project] {
        &self.projects
    }

    pub(crate) fn default_project(&self) -> &Project {
        self.projects
            .iter()
            .find(|p| p.is_default)
            .expect("Account::new guarantees a default project")
    }

    pub(crate) fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }
}

/// Stable across runs, so fixtures and tests can rely on it, and distinct per account.
fn made_up_project_id(public_key: &str) -> String {
    let digest = Sha1::digest(public_key.as_bytes());
    format!("org-{}", &hex::encode(digest)[..8])
}

/// Accounts by public key.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    by_public_key: HashMap<String, Account>,
}

impl Accounts {
    /// Adds an account; returns it back when its public key is already taken.
    pub(crate) fn add(&mut self, account: Account) -> Result<(), Account> {
        if self.by_public_key.contains_key(&account.public_key) {
            return Err(account);
        }
        self.by_public_key
            .insert(account.public_key.clone(), account);
        Ok(())
    }

    pub(crate) fn get(&self, public_key: &str) -> Option<&Account> {
        self.by_public_key.get(public_key)
    }

    /// The only account, when there is exactly one: instances need not name their owner then.
    pub(crate) fn sole(&self) -> Option<&Account> {
        let mut accounts = self.by_public_key.values();
        match (accounts.next(), accounts.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str, is_default: bool) -> Project {
        Project {
            id: id.into(),
            name: id.into(),
            is_default,
        }
    }

    fn account(public_key: &str, projects: Vec<Project>) -> Account {
        Account::new(public_key.into(), SecretString::from("private"), projects)
    }

    #[test]
    fn an_account_without_projects_gets_a_stable_default_project() {
        let a = account("pub-a", vec![]);
        let b = account("pub-b", vec![]);
        assert_eq!(a.projects().len(), 1);
        assert!(a.default_project().id.starts_with("org-"));
        assert_eq!(
            a.default_project().id,
            account("pub-a", vec![]).default_project().id
        );
        assert_ne!(a.default_project().id, b.default_project().id);
    }

    #[test]
    fn the_first_project_is_the_default_when_none_is_marked() {
        let a = account(
            "pub",
            vec![project("org-1", false), project("org-2", false)],
        );
        assert_eq!(a.default_project().id, "org-1");
        let b = account("pub", vec![project("org-1", false), project("org-2", true)]);
        assert_eq!(b.default_project().id, "org-2");
        assert!(b.project("org-1").is_some());
        assert!(b.project("org-3").is_none());
    }

    #[test]
    fn public_keys_are_unique_and_a_sole_account_is_found() {
        let mut accounts = Accounts::default();
        assert!(accounts.sole().is_none());
        accounts.add(account("pub-a", vec![])).unwrap();
        assert_eq!(accounts.sole().unwrap().public_key, "pub-a");
        assert!(accounts.add(account("pub-a", vec![])).is_err());
        accounts.add(account("pub-b", vec![])).unwrap();
        assert!(accounts.sole().is_none());
        assert!(accounts.get("pub-b").is_some());
    }

    #[test]
    fn limits_default_to_the_highest_level_and_change_in_place() {
        let a = account("pub", vec![]);
        assert_eq!(a.instance_quota(), DEFAULT_INSTANCE_QUOTA);
        assert!(!a.in_arrears());
        a.set_instance_quota(1);
        a.set_in_arrears(true);
        assert_eq!(a.instance_quota(), 1);
        assert!(a.in_arrears());
    }
}
