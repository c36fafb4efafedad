//! Who may do what with the operator's default credentials.
//!
//! The default credentials reach every machine of one account, from every namespace the
//! administrator allowed to use them. Observing a machine's state is all those namespaces get;
//! reading a machine's password into a connection Secret (`connection`) and changing a machine
//! (`manage`, which includes `connection`) take an explicit grant, optionally limited to the
//! machines the namespace itself created (`own`: the mark the operator leaves in `Remark`), to a
//! CompShare project, or to a business group (`Tag`). A namespace with its own credentials Secret
//! acts as that account and needs no grant.
//!
//! Grants are given as `--default-credentials-grants NAMESPACE=PRIVILEGE[@SCOPE],...`, for
//! example `ml-team=manage@own,ops=connection@tag:shared,batch=manage@project:org-abc`; `*` as
//! the namespace grants every allowed namespace.

use std::fmt;
use std::str::FromStr;

use super::reasons::Reason;
use super::status::Problem;

/// What a namespace may do beyond observing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Privilege {
    /// Read a machine's password into a connection Secret.
    Connection,
    /// Change a machine: create, start, stop, schedule a stop, release. Includes `Connection`.
    Manage,
}

impl Privilege {
    fn name(self) -> &'static str {
        match self {
            Privilege::Connection => "connection",
            Privilege::Manage => "manage",
        }
    }
}

/// Which machines a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    /// Machines the namespace created through the operator.
    Own,
    Project(String),
    Tag(String),
}

/// One grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// A namespace, or `*`.
    namespace: String,
    privilege: Privilege,
    scope: Scope,
}

/// Every grant the administrator gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Grants(Vec<Grant>);

/// What is known of a machine, for a scope to be checked against.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Machine<'a> {
    /// The project it is looked up in (the spec's, or the account's default: `None`).
    pub(crate) project_id: Option<&'a str>,
    pub(crate) tag: Option<&'a str>,
    pub(crate) remark: Option<&'a str>,
    /// A machine the resource is about to create: it will be the namespace's own.
    pub(crate) to_be_created: bool,
}

impl Grants {
    /// Whether `namespace` may exercise `privilege` on `machine` with the default credentials;
    /// a problem naming what is missing when not.
    pub(crate) fn check(
        &self,
        namespace: &str,
        privilege: Privilege,
        machine: Machine<'_>,
    ) -> Result<(), Problem> {
        let applicable: Vec<&Grant> = self
            .0
            .iter()
            .filter(|g| g.namespace == "*" || g.namespace == namespace)
            .filter(|g| g.privilege >= privilege)
            .collect();
        if applicable
            .iter()
            .any(|g| g.scope.covers(namespace, machine))
        {
            return Ok(());
        }
        let message = if applicable.is_empty() {
            format!(
                "namespace {namespace} uses the operator's default credentials and has no `{}` grant; the operator's administrator can give one (--default-credentials-grants {namespace}={}), or use a credentials Secret of this namespace (spec.credentialsRef)",
                privilege.name(),
                privilege.name()
            )
        } else {
            let scopes: Vec<String> = applicable.iter().map(|g| g.scope.to_string()).collect();
            format!(
                "namespace {namespace} may use the `{}` privilege of the operator's default credentials only on {}; this machine is not one of them",
                privilege.name(),
                scopes.join(" or ")
            )
        };
        Err(Problem {
            reason: Reason::PrivilegeNotGranted,
            message,
        })
    }
}

impl Scope {
    fn covers(&self, namespace: &str, machine: Machine<'_>) -> bool {
        match self {
            Scope::All => true,
            Scope::Own => {
                machine.to_be_created
                    || machine
                        .remark
                        .and_then(super::manage::namespace_of_mark)
                        .is_some_and(|ns| ns == namespace)
            }
            Scope::Project(project) => machine.project_id == Some(project.as_str()),
            Scope::Tag(tag) => !machine.to_be_created && machine.tag == Some(tag.as_str()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("every machine"),
            Scope::Own => f.write_str("the machines this namespace created"),
            Scope::Project(p) => write!(f, "the machines of project {p}"),
            Scope::Tag(t) => write!(f, "the machines tagged {t}"),
        }
    }
}

impl FromStr for Grants {
    type Err = String;

    /// `NAMESPACE=PRIVILEGE[@SCOPE]`, comma-separated; empty: no grants.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|grant| {
                let (namespace, rest) = grant
                    .split_once('=')
                    .ok_or_else(|| format!("{grant:?} is not NAMESPACE=PRIVILEGE[@SCOPE]"))?;
                let (privilege, scope) = match rest.split_once('@') {
                    Some((p, s)) => (p, Some(s)),
                    None => (rest, None),
                };
                let privilege = match privilege {
                    "connection" => Privilege::Connection,
                    "manage" => Privilege::Manage,
                    other => {
                        return Err(format!(
                            "{grant:?}: privilege {other:?} is neither connection nor manage"
                        ));
                    }
                };
                let scope = match scope {
                    None | Some("all") => Scope::All,
                    Some("own") => Scope::Own,
                    Some(s) => match s.split_once(':') {
                        Some(("project", p)) if !p.is_empty() => Scope::Project(p.to_owned()),
                        Some(("tag", t)) if !t.is_empty() => Scope::Tag(t.to_owned()),
                        _ => {
                            return Err(format!(
                                "{grant:?}: scope {s:?} is none of all, own, project:ID, tag:TAG"
                            ));
                        }
                    },
                };
                if namespace.is_empty() {
                    return Err(format!("{grant:?}: no namespace"));
                }
                Ok(Grant {
                    namespace: namespace.to_owned(),
                    privilege,
                    scope,
                })
            })
            .collect::<Result<_, _>>()
            .map(Grants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(s: &str) -> Grants {
        s.parse().unwrap()
    }

    #[test]
    fn grants_parse_and_bad_ones_say_why() {
        assert_eq!(grants(""), Grants::default());
        let g = grants("ml=manage@own, ops=connection@tag:shared,*=connection@project:org-1");
        assert_eq!(g.0.len(), 3);
        assert_eq!(g.0[0].scope, Scope::Own);
        assert_eq!(g.0[2].namespace, "*");
        for bad in [
            "ml",
            "ml=root",
            "ml=manage@mine",
            "ml=manage@tag:",
            "=manage",
        ] {
            assert!(bad.parse::<Grants>().is_err(), "{bad}");
        }
    }

    #[test]
    fn observing_needs_nothing_and_the_rest_needs_a_grant_in_scope() {
        let none = Grants::default();
        let theirs = Machine {
            remark: Some(&super::super::manage::mark_text("team-b", "b", "uid-b")),
            ..Machine::default()
        };
        let refused = none
            .check("team-a", Privilege::Connection, theirs)
            .unwrap_err();
        assert_eq!(refused.reason, Reason::PrivilegeNotGranted);
        assert!(
            refused.message.contains("no `connection` grant"),
            "{}",
            refused.message
        );

        let own = grants("team-a=manage@own");
        assert!(own.check("team-a", Privilege::Manage, theirs).is_err());
        assert!(own.check("team-a", Privilege::Connection, theirs).is_err());
        let mine = Machine {
            remark: Some(&super::super::manage::mark_text("team-a", "a", "uid-a")),
            ..Machine::default()
        };
        assert!(own.check("team-a", Privilege::Manage, mine).is_ok());
        // `manage` includes `connection`; `connection` does not include `manage`.
        assert!(own.check("team-a", Privilege::Connection, mine).is_ok());
        let connection = grants("team-a=connection");
        assert!(
            connection
                .check("team-a", Privilege::Connection, theirs)
                .is_ok()
        );
        assert!(connection.check("team-a", Privilege::Manage, mine).is_err());
        // A machine about to be created is the namespace's own, and has no tag yet.
        let new = Machine {
            to_be_created: true,
            ..Machine::default()
        };
        assert!(own.check("team-a", Privilege::Manage, new).is_ok());
        assert!(
            grants("team-a=manage@tag:x")
                .check("team-a", Privilege::Manage, new)
                .is_err()
        );
        let project = grants("*=manage@project:org-1");
        let in_project = Machine {
            project_id: Some("org-1"),
            ..Machine::default()
        };
        assert!(
            project
                .check("anyone", Privilege::Manage, in_project)
                .is_ok()
        );
        let message = project
            .check("anyone", Privilege::Manage, theirs)
            .unwrap_err()
            .message;
        assert!(
            message.contains("the machines of project org-1"),
            "{message}"
        );
    }
}
