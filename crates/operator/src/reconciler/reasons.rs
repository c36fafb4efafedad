//! Every reason the operator writes, in conditions and in events: a public contract (the README's
//! "Conditions" and "Events" sections; a test fails when they and this list disagree). Besides
//! these, `Ready`, `Running` and `Reconciling` carry reasons made from the instance's state (its
//! letters and digits: `Running`, `InstallFail`, `Hibernating2`).

/// A reason of a condition or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// `Synced`: the last call succeeded.
    Observed,
    /// The state could not be read (`""`).
    StateUnknown,
    AwaitingFirstObservation,
    /// `Paused`: the annotation is set.
    PausedByAnnotation,
    /// `Ready`/`Running`/`Synced` of a resource paused before an observation of its spec; also
    /// the event when polling is paused.
    Paused,
    // A call failed, and retrying may cure it.
    Throttled,
    Timeout,
    Unreachable,
    HttpError,
    MalformedAnswer,
    CloudError,
    // A person must act (`Stalled`).
    NotFound,
    InstallFailed,
    ZoneMismatch,
    CredentialsMissing,
    CredentialsInvalid,
    CredentialsForbidden,
    CredentialsRejected,
    DefaultCredentialsNotAllowed,
    PermissionDenied,
    InvalidRequest,
    /// The account may not buy or run machines now (arrears, expiry, verification, quota).
    AccountBlocked,
    ConnectionSecretConflict,
    StatusWriteRefused,
    // Managing machines.
    /// The resource asks for management where the administrator did not allow it.
    ManagementNotAllowed,
    /// The default credentials' grant does not cover what the resource asks.
    PrivilegeNotGranted,
    /// The machine's password Secret cannot be read.
    PasswordSecretMissing,
    /// The machine cannot be released (the resource keeps its finalizer).
    ReleaseBlocked,
    /// The operator is creating the machine.
    Creating,
    /// A create's answer was lost: the machine is looked for by its mark.
    CreateOutcomeUnknown,
    /// The zone has no capacity for the machine: the create is tried again later.
    WaitingForCapacity,
    /// The operator asked CompShare to start the machine (spec.powerState: Running); also an event.
    StartRequested,
    /// The operator asked CompShare to stop the machine (spec.powerState: Stopped, or to release it); also an event.
    StopRequested,
    /// Another operation holds the machine's lock: the operator waits.
    InstanceLocked,
    /// The resource is being deleted and its machine released.
    Releasing,
    /// Event: a machine was created.
    MachineCreated,
    /// Event: CompShare will stop the machine at spec.stopAt.
    StopScheduled,
    /// Event: the scheduled stop was cancelled.
    ScheduledStopCancelled,
    /// Event: the machine is being released.
    TerminateRequested,
    /// Event: a state-changing call failed.
    ActionFailed,
    /// Event: the machine is released and the resource may go.
    Released,
    // Events.
    StateChanged,
    ObservationFailed,
    ObservationRecovered,
    Resumed,
    /// Event: a discovery created resources for machines that appeared.
    DiscoveredResourcesCreated,
    /// Event: a discovery removed resources whose machines were gone for its grace period.
    DiscoveredResourcesRemoved,
}

impl Reason {
    /// Every reason.
    pub(crate) const ALL: [Reason; 47] = [
        Reason::Observed,
        Reason::StateUnknown,
        Reason::AwaitingFirstObservation,
        Reason::PausedByAnnotation,
        Reason::Paused,
        Reason::Throttled,
        Reason::Timeout,
        Reason::Unreachable,
        Reason::HttpError,
        Reason::MalformedAnswer,
        Reason::CloudError,
        Reason::NotFound,
        Reason::InstallFailed,
        Reason::ZoneMismatch,
        Reason::CredentialsMissing,
        Reason::CredentialsInvalid,
        Reason::CredentialsForbidden,
        Reason::CredentialsRejected,
        Reason::DefaultCredentialsNotAllowed,
        Reason::PermissionDenied,
        Reason::InvalidRequest,
        Reason::AccountBlocked,
        Reason::ConnectionSecretConflict,
        Reason::StatusWriteRefused,
        Reason::ManagementNotAllowed,
        Reason::PrivilegeNotGranted,
        Reason::PasswordSecretMissing,
        Reason::ReleaseBlocked,
        Reason::Creating,
        Reason::CreateOutcomeUnknown,
        Reason::WaitingForCapacity,
        Reason::StartRequested,
        Reason::StopRequested,
        Reason::InstanceLocked,
        Reason::Releasing,
        Reason::MachineCreated,
        Reason::StopScheduled,
        Reason::ScheduledStopCancelled,
        Reason::TerminateRequested,
        Reason::ActionFailed,
        Reason::Released,
        Reason::StateChanged,
        Reason::ObservationFailed,
        Reason::ObservationRecovered,
        Reason::Resumed,
        Reason::DiscoveredResourcesCreated,
        Reason::DiscoveredResourcesRemoved,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::Observed => "Observed",
            Reason::StateUnknown => "StateUnknown",
            Reason::AwaitingFirstObservation => "AwaitingFirstObservation",
            Reason::PausedByAnnotation => "PausedByAnnotation",
            Reason::Paused => "Paused",
            Reason::Throttled => "Throttled",
            Reason::Timeout => "Timeout",
            Reason::Unreachable => "Unreachable",
            Reason::HttpError => "HTTPError",
            Reason::MalformedAnswer => "MalformedAnswer",
            Reason::CloudError => "CloudError",
            Reason::NotFound => "NotFound",
            Reason::InstallFailed => "InstallFailed",
            Reason::ZoneMismatch => "ZoneMismatch",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsInvalid => "CredentialsInvalid",
            Reason::CredentialsForbidden => "CredentialsForbidden",
            Reason::CredentialsRejected => "CredentialsRejected",
            Reason::DefaultCredentialsNotAllowed => "DefaultCredentialsNotAllowed",
            Reason::PermissionDenied => "PermissionDenied",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::AccountBlocked => "AccountBlocked",
            Reason::ConnectionSecretConflict => "ConnectionSecretConflict",
            Reason::StatusWriteRefused => "StatusWriteRefused",
            Reason::ManagementNotAllowed => "ManagementNotAllowed",
            Reason::PrivilegeNotGranted => "PrivilegeNotGranted",
            Reason::PasswordSecretMissing => "PasswordSecretMissing",
            Reason::ReleaseBlocked => "ReleaseBlocked",
            Reason::Creating => "Creating",
            Reason::CreateOutcomeUnknown => "CreateOutcomeUnknown",
            Reason::WaitingForCapacity => "WaitingForCapacity",
            Reason::StartRequested => "StartRequested",
            Reason::StopRequested => "StopRequested",
            Reason::InstanceLocked => "InstanceLocked",
            Reason::Releasing => "Releasing",
            Reason::MachineCreated => "MachineCreated",
            Reason::StopScheduled => "StopScheduled",
            Reason::ScheduledStopCancelled => "ScheduledStopCancelled",
            Reason::TerminateRequested => "TerminateRequested",
            Reason::ActionFailed => "ActionFailed",
            Reason::Released => "Released",
            Reason::StateChanged => "StateChanged",
            Reason::ObservationFailed => "ObservationFailed",
            Reason::ObservationRecovered => "ObservationRecovered",
            Reason::Resumed => "Resumed",
            Reason::DiscoveredResourcesCreated => "DiscoveredResourcesCreated",
            Reason::DiscoveredResourcesRemoved => "DiscoveredResourcesRemoved",
        }
    }

    /// The reasons of `Stalled`: a person must act. (What the README's table must list.)
    #[cfg(test)]
    fn stalls(self) -> bool {
        self.is_credentials()
            || matches!(
                self,
                Reason::NotFound
                    | Reason::InstallFailed
                    | Reason::ZoneMismatch
                    | Reason::PermissionDenied
                    | Reason::InvalidRequest
                    | Reason::AccountBlocked
                    | Reason::ManagementNotAllowed
                    | Reason::PrivilegeNotGranted
                    | Reason::PasswordSecretMissing
                    | Reason::ReleaseBlocked
                    | Reason::ConnectionSecretConflict
                    | Reason::StatusWriteRefused
            )
    }

    /// Credentials a person must fix; a resource stalled for one reads its Secret afresh each
    /// time it is checked again.
    pub(crate) fn is_credentials(self) -> bool {
        matches!(
            self,
            Reason::CredentialsMissing
                | Reason::CredentialsInvalid
                | Reason::CredentialsForbidden
                | Reason::CredentialsRejected
                | Reason::DefaultCredentialsNotAllowed
        )
    }

    /// The reasons of `Synced`: the last call succeeded, failed, or could not be made. (What the
    /// README's table must list.)
    #[cfg(test)]
    fn syncs(self) -> bool {
        matches!(
            self,
            Reason::Observed
                | Reason::Throttled
                | Reason::Timeout
                | Reason::Unreachable
                | Reason::HttpError
                | Reason::MalformedAnswer
                | Reason::CloudError
                | Reason::PermissionDenied
                | Reason::InvalidRequest
                | Reason::AccountBlocked
                | Reason::ManagementNotAllowed
                | Reason::PrivilegeNotGranted
                | Reason::PasswordSecretMissing
                | Reason::ReleaseBlocked
                | Reason::Creating
                | Reason::CreateOutcomeUnknown
                | Reason::WaitingForCapacity
                | Reason::Releasing
                | Reason::Paused
        ) || self.is_credentials()
    }

    /// The reason named `text`, if it is one.
    pub(crate) fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The README's conditions table: type → the reasons its row names.
    fn readme_reasons() -> Vec<(String, BTreeSet<String>)> {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("the README");
        readme
            .lines()
            .skip_while(|l| !l.starts_with("| type | True when | reasons |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
                let reasons = cells[2]
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|word| word.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
                    .map(str::to_owned)
                    .collect();
                (cells[0].trim_matches('`').to_owned(), reasons)
            })
            .collect()
    }

    fn named(filter: impl Fn(Reason) -> bool) -> BTreeSet<String> {
        Reason::ALL
            .into_iter()
            .filter(|r| filter(*r))
            .map(|r| r.as_str().to_owned())
            .collect()
    }

    /// Reasons made from states the README shows as examples.
    fn state_reasons() -> BTreeSet<String> {
        [
            "Running",
            "Stopped",
            "Starting",
            "Stopping",
            "Initializing",
            "Install",
            "InstallFail",
            "Rebooting",
            "Resizing",
            "Hibernating2",
        ]
        .map(str::to_owned)
        .into()
    }

    #[test]
    fn the_readme_names_exactly_the_reasons_the_code_writes() {
        let rows = readme_reasons();
        let row = |kind: &str| {
            rows.iter()
                .find(|(k, _)| k == kind)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("no README row for {kind}"))
        };
        assert_eq!(row("Stalled"), named(Reason::stalls), "Stalled");
        assert_eq!(row("Synced"), named(Reason::syncs), "Synced");
        assert_eq!(
            row("Paused"),
            named(|r| r == Reason::PausedByAnnotation),
            "Paused"
        );
        // Every reason the table names is one the code has, or a state's.
        let states = state_reasons();
        for (kind, reasons) in &rows {
            for reason in reasons {
                assert!(
                    Reason::parse(reason).is_some() || states.contains(reason),
                    "{kind}: the README names {reason}, which the code never writes"
                );
            }
        }
        // Every condition reason appears in the table; event reasons in the Events section.
        let in_table: BTreeSet<&String> = rows.iter().flat_map(|(_, r)| r).collect();
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let events = &readme[readme.find("### Events").expect("an Events section")..];
        for reason in Reason::ALL {
            let name = reason.as_str().to_owned();
            assert!(
                in_table.contains(&name) || events.contains(&format!("`{name}`")),
                "{name} is written but not in the README"
            );
        }
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        let names: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }
}
