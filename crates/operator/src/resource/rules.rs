//! The CEL rules more than one field shares, in one place: a project id, a poll interval or a
//! Secret name is refused with the same words on every resource. (The patterns are CEL string
//! literals inside Rust strings: `\\\\` in the source is one backslash in the CRD's regex.)

use kube::core::Rule;

/// A duration the operator parses (`jiff`'s friendly format, limited to what CEL's `duration()`
/// also reads).
const DURATION: &str = "^([0-9]+(ms|s|m|h))+$";
/// A CompShare region or zone: `cn-wlcb`, `cn-wlcb-01`.
const LOCATION: &str = "^[a-z][a-z0-9-]*[a-z0-9]$";
/// A CompShare id: `uhost-…`, `org-…`, `compshareImage-…`.
const ID: &str = "^[A-Za-z0-9][A-Za-z0-9_-]*$";

/// `projectId`.
pub(super) fn project_id() -> Rule {
    Rule::new(format!("self.matches('{ID}')"))
        .message("projectId must be a CompShare project id such as org-abc123")
}

/// `pollInterval`: its form (the bounds rule would only repeat the complaint otherwise).
pub(super) fn poll_interval_form() -> Rule {
    Rule::new(format!("self.matches('{DURATION}')"))
        .message("pollInterval must be a duration such as 30s, 5m or 1h30m")
}

/// `pollInterval`: between `MIN_POLL_INTERVAL` and `MAX_POLL_INTERVAL`.
pub(super) fn poll_interval_bounds() -> Rule {
    Rule::new(format!(
        "!self.matches('{DURATION}') || (duration(self) >= duration('10s') && duration(self) <= duration('24h'))"
    ))
    .message("pollInterval must be between 10s and 24h")
}

/// `gracePeriod`: its form.
pub(super) fn grace_period_form() -> Rule {
    Rule::new(format!("self.matches('{DURATION}')"))
        .message("gracePeriod must be a duration such as 30s, 10m or 24h")
}

/// `gracePeriod`: at most `MAX_GRACE_PERIOD`.
pub(super) fn grace_period_bound() -> Rule {
    Rule::new(format!(
        "!self.matches('{DURATION}') || duration(self) <= duration('720h')"
    ))
    .message("gracePeriod must be at most 720h (30 days)")
}

/// A region field.
pub(super) fn region() -> Rule {
    Rule::new(format!("self.matches('{LOCATION}')"))
        .message("region must be a CompShare region such as cn-wlcb")
}

/// A zone field.
pub(super) fn zone() -> Rule {
    Rule::new(format!("self.matches('{LOCATION}')"))
        .message("zone must be a CompShare zone such as cn-wlcb-01")
}

/// A list of regions.
pub(super) fn regions() -> Rule {
    Rule::new(format!("self.all(r, r.matches('{LOCATION}'))"))
        .message("regions must be CompShare regions such as cn-wlcb")
}

/// A list of zones.
pub(super) fn zones() -> Rule {
    Rule::new(format!("self.all(z, z.matches('{LOCATION}'))"))
        .message("filters.zones must be CompShare zones such as cn-wlcb-01")
}

/// A list of VPC ids.
pub(super) fn vpcs() -> Rule {
    Rule::new(format!("self.all(v, v.matches('{ID}'))"))
        .message("filters.vpcs must be CompShare VPC ids such as uvnet-abc123")
}

/// An id field other than the project, refused with `message`.
pub(super) fn id(message: &str) -> Rule {
    Rule::new(format!("self.matches('{ID}')")).message(message)
}

/// The name of a Secret in the resource's namespace (a DNS-1123 subdomain).
pub(super) fn secret_name() -> Rule {
    Rule::new(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
    )
    .message("must be a valid Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit")
}
