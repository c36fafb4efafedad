//! The actions the simulator serves, with the gateway's parameter rules: reading
//! (`DescribeCompShareInstance`, `GetProjectList`, `DescribeCompShareSupportZone`) and changing
//! (create, start, stop, reboot, terminate, the scheduled stop). A changing action runs to its end
//! under the inventory's write lock, with no await in between: once a call gets this far, what
//! happens to its connection afterwards cannot undo it.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use compshare_api::signing::Params;
use compshare_api::{
    CREATE_ACTION, DELETE_STOP_SCHEDULER_ACTION, DESCRIBE_ACTION, MAX_IDS_PER_CALL, REBOOT_ACTION,
    START_ACTION, STOP_ACTION, SUPPORT_ZONE_ACTION, TERMINATE_ACTION, UPDATE_STOP_SCHEDULER_ACTION,
};

use super::accounts::{Account, Accounts};
use super::clock::Clock;
use super::create::{self, Placement};
use super::inventory::{Inventory, Page, Query, StoredInstance};
use super::lifecycle::{self, Transition, Transitions};
use super::shape;
use super::zones::{self, Capacity, Zones};

const GET_PROJECT_LIST_ACTION: &str = "GetProjectList";

/// The vendor's page: "Limit 每页数量,默认 20,最大 100".
const DEFAULT_LIMIT: usize = 20;
const UHOST_IDS_PREFIX: &str = "UHostIds.";

/// "226601 in arrears" (the documentation's business codes): unpaid orders block buying and
/// starting machines.
pub(super) const IN_ARREARS: i64 = 226601;
/// At the account's instance quota. The documentation names the quotas (1/5/20/50/100 machines
/// by account level) but no code: 226607, next to its neighbours, is the simulator's choice.
pub(super) const QUOTA_REACHED: i64 = 226607;
/// The documentation's "8433 service error": what the simulator answers if it breaks its own rules.
const SERVICE_ERROR: i64 = 8433;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    DescribeInstances,
    GetProjectList,
    SupportZones,
    Create,
    Start,
    Stop,
    Reboot,
    Terminate,
    UpdateStopScheduler,
    DeleteStopScheduler,
}

impl Action {
    const ALL: [Action; 10] = [
        Action::DescribeInstances,
        Action::GetProjectList,
        Action::SupportZones,
        Action::Create,
        Action::Start,
        Action::Stop,
        Action::Reboot,
        Action::Terminate,
        Action::UpdateStopScheduler,
        Action::DeleteStopScheduler,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::DescribeInstances => DESCRIBE_ACTION,
            Action::GetProjectList => GET_PROJECT_LIST_ACTION,
            Action::SupportZones => SUPPORT_ZONE_ACTION,
            Action::Create => CREATE_ACTION,
            Action::Start => START_ACTION,
            Action::Stop => STOP_ACTION,
            Action::Reboot => REBOOT_ACTION,
            Action::Terminate => TERMINATE_ACTION,
            Action::UpdateStopScheduler => UPDATE_STOP_SCHEDULER_ACTION,
            Action::DeleteStopScheduler => DELETE_STOP_SCHEDULER_ACTION,
        }
    }

    /// Action names are case-sensitive, as the gateway's are.
    pub(crate) fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.name() == name)
    }
}

/// A non-zero `RetCode` and its message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ApiError {
    pub code: i64,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn missing_param(name: &str) -> Self {
        ApiError::new(210, format!("Missing params: {name}"))
    }

    pub(crate) fn invalid_param(name: &str, why: impl std::fmt::Display) -> Self {
        ApiError::new(230, format!("Params [{name}] not available: {why}"))
    }
}

/// The `UHostIds.N` parameters of a request.
pub(super) fn requested_ids(params: &Params) -> impl Iterator<Item = &String> {
    params
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix(UHOST_IDS_PREFIX)
                .is_some_and(|index| index.parse::<usize>().is_ok())
        })
        .map(|(_, id)| id)
}

/// The project a call means: the one it names, or the account's default (292 for an unknown one).
fn project<'a>(account: &'a Account, asked: Option<&str>) -> Result<&'a str, ApiError> {
    match asked {
        None => Ok(&account.default_project().id),
        Some(id) => account
            .project(id)
            .map(|p| p.id.as_str())
            .ok_or_else(|| ApiError::new(292, format!("Project [{id}] does not exist"))),
    }
}

/// `DescribeCompShareInstance` for `account`, leaving out `hidden` ids.
///
/// Without `ProjectId` the account's default project is meant, as on the real gateway. The default
/// `Limit` of 20 applies when asking by id too: a client that sends 100 ids without `Limit: 100`
/// gets 20 of them back and must not read the rest as deleted. `Limit: 0` is read as "not given"
/// (unconfirmed against the real gateway). `UDiskIdForAttachment` is accepted and not simulated.
pub(super) fn describe(
    inventory: &Inventory,
    account: &Account,
    params: &Params,
    hidden: &HashSet<String>,
) -> Result<Page, ApiError> {
    let region = text(params, "Region").ok_or_else(|| ApiError::missing_param("Region"))?;
    let limit = match integer(params, "Limit", 0..=MAX_IDS_PER_CALL)? {
        None | Some(0) => DEFAULT_LIMIT,
        Some(limit) => limit,
    };
    let offset = integer(params, "Offset", 0..=usize::MAX)?.unwrap_or(0);
    let ids: Vec<String> = requested_ids(params).cloned().collect();
    if ids.len() > MAX_IDS_PER_CALL {
        return Err(ApiError::invalid_param(
            "UHostIds",
            format!(
                "{} ids given, at most {MAX_IDS_PER_CALL} allowed",
                ids.len()
            ),
        ));
    }
    if let Some(value) = text(params, "WithoutGpu")
        && value != "true"
        && value != "false"
    {
        return Err(ApiError::invalid_param(
            "WithoutGpu",
            "must be true or false",
        ));
    }
    let project_id = project(account, text(params, "ProjectId"))?;
    let query = Query {
        owner: &account.public_key,
        project_id,
        region,
        zone: text(params, "Zone"),
        ids: (!ids.is_empty()).then_some(ids.as_slice()),
        tag: text(params, "Tag"),
        vpc_id: text(params, "VPCId"),
        subnet_id: text(params, "SubnetId"),
        hidden,
        offset,
        limit,
    };
    let page = inventory.query(&query);
    if offset > page.total {
        return Err(ApiError::invalid_param(
            "Offset",
            format!("{offset} is beyond the {} instances", page.total),
        ));
    }
    Ok(page)
}

/// `DescribeCompShareSupportZone`: every zone the simulator knows, whatever `Region` (required,
/// as the page says) names, as the page's example shows zones of two regions.
pub(super) fn support_zones(
    zones: &Zones,
    params: &Params,
) -> Result<Map<String, Value>, ApiError> {
    required(params, "Region")?;
    Ok(answer([("ZoneInfo", zones.zone_info())]))
}

/// What a changing action works on: the inventory (write-locked by the caller) and the settings
/// of the moment.
pub(super) struct World<'a> {
    pub inventory: &'a mut Inventory,
    pub accounts: &'a Accounts,
    pub zones: &'a Zones,
    pub capacity: &'a [Capacity],
    pub transitions: Transitions,
    pub clock: Clock,
    pub now: Instant,
}

/// Carries out a changing action for `account`; its answer's fields.
pub(super) fn change(
    world: &mut World<'_>,
    account: &Account,
    action: Action,
    params: &Params,
) -> Result<Map<String, Value>, ApiError> {
    match action {
        Action::Create => create(world, account, params),
        _ => operate(world, account, action, params),
    }
}

/// `CreateCompShareInstance`: the parameters (210/230), the project (292), the zone (230), then
/// the account (in arrears: 226601; at its quota: 226607) and the zone's capacity (226604). The
/// machines appear at once, `Initializing`, and run after `createMs`.
fn create(
    world: &mut World<'_>,
    account: &Account,
    params: &Params,
) -> Result<Map<String, Value>, ApiError> {
    let spec = create::parse(params)?;
    let project_id = project(account, spec.project_id.as_deref())?.to_owned();
    world.zones.check(&spec.region, &spec.zone)?;
    check_not_in_arrears(account)?;
    check_quota(
        world.inventory.owned_by(&account.public_key),
        account.instance_quota(),
        spec.count,
    )?;
    zones::check_capacity(
        world.capacity,
        &spec.zone,
        spec.gpu_type.name,
        world.inventory.gpus_in_use(&spec.zone, spec.gpu_type.name),
        spec.gpus * spec.count,
    )?;
    let now = world.clock.unix_secs(world.now);
    let mut ids = Vec::new();
    for _ in 0..spec.count {
        let id = world.inventory.new_id();
        let mut fields = create::instance_fields(
            &spec,
            &Placement {
                id: &id,
                owner: &account.public_key,
                project_id: &project_id,
                serial: world.inventory.next_serial(),
                now,
            },
        );
        shape::fill_defaults(&mut fields, now);
        let mut instance = StoredInstance::place(fields, world.accounts)
            .map_err(|e| ApiError::new(SERVICE_ERROR, format!("cannot place {id}: {e}")))?;
        lifecycle::begin(
            &mut instance.fields,
            &mut instance.sim,
            Transition::Create,
            world.now,
            &world.clock,
            &world.transitions,
        );
        world
            .inventory
            .add(instance)
            .map_err(|e| ApiError::new(SERVICE_ERROR, format!("cannot add {id}: {e}")))?;
        ids.push(id);
    }
    Ok(answer([("UHostIds", json!(ids))]))
}

fn check_not_in_arrears(account: &Account) -> Result<(), ApiError> {
    if account.in_arrears() {
        return Err(ApiError::new(
            IN_ARREARS,
            "Account in arrears: pay the outstanding orders before buying or starting machines",
        ));
    }
    Ok(())
}

fn check_quota(owned: usize, quota: u32, asked: u64) -> Result<(), ApiError> {
    if owned as u64 + asked > u64::from(quota) {
        return Err(ApiError::new(
            QUOTA_REACHED,
            format!(
                "Instance quota exceeded: the account has {owned} of its {quota} instances and asked for {asked} more"
            ),
        ));
    }
    Ok(())
}

/// Start, stop, reboot, terminate and the scheduled stop, on one of the caller's instances:
/// parameters (210/230), project (292), the instance (8039), its lock (8040), its state (8041),
/// then what the action itself checks.
fn operate(
    world: &mut World<'_>,
    account: &Account,
    action: Action,
    params: &Params,
) -> Result<Map<String, Value>, ApiError> {
    let region = required(params, "Region")?;
    // The pages make `Zone` optional for deleting a scheduled stop only, and `ProjectId`
    // required for both scheduler actions.
    let zone = match action {
        Action::DeleteStopScheduler => text(params, "Zone"),
        _ => Some(required(params, "Zone")?),
    };
    let id = required(params, "UHostId")?;
    let asked_project = match action {
        Action::UpdateStopScheduler | Action::DeleteStopScheduler => {
            Some(required(params, "ProjectId")?)
        }
        _ => text(params, "ProjectId"),
    };
    let without_gpu = match action {
        Action::Start => boolean(params, "WithoutGpu")?.unwrap_or(false),
        _ => false,
    };
    if action == Action::Terminate {
        // Data disks are not simulated: kept or released, nothing else changes.
        boolean(params, "ReleaseUDisk")?;
    }
    let stop_at = match action {
        Action::UpdateStopScheduler => Some(scheduled_stop_time(
            params,
            world.clock.unix_secs(world.now),
        )?),
        _ => None,
    };
    let project_id = project(account, asked_project)?;

    let instance = world
        .inventory
        .get(id)
        .filter(|i| {
            i.owner == account.public_key
                && i.project_id == project_id
                && i.region == region
                && zone.is_none_or(|z| i.zone() == Some(z))
        })
        .ok_or_else(|| lifecycle::not_found(id))?;
    instance.sim.check_lock(id, world.now)?;
    lifecycle::check_state(action, id, lifecycle::state(&instance.fields))?;
    match action {
        Action::Start => {
            check_not_in_arrears(account)?;
            if !without_gpu
                && let (Some(zone), Some(gpu_type)) = (instance.zone(), instance.gpu_type())
            {
                zones::check_capacity(
                    world.capacity,
                    zone,
                    gpu_type,
                    world.inventory.gpus_in_use(zone, gpu_type),
                    instance.gpus(),
                )?;
            }
        }
        Action::UpdateStopScheduler if lifecycle::is_spot(&instance.fields) => {
            return Err(ApiError::invalid_param(
                "UHostId",
                format!("{id} is a Spot instance, which cannot have a scheduled stop"),
            ));
        }
        _ => {}
    }

    let (now, clock, transitions) = (world.now, world.clock, world.transitions);
    let begin = |transition| {
        move |instance: &mut StoredInstance| {
            lifecycle::begin(
                &mut instance.fields,
                &mut instance.sim,
                transition,
                now,
                &clock,
                &transitions,
            )
        }
    };
    match action {
        Action::Start => world.inventory.update(id, begin(Transition::Start)),
        Action::Stop => world.inventory.update(id, begin(Transition::Stop)),
        Action::Reboot => world.inventory.update(id, begin(Transition::Reboot)),
        Action::Terminate => {
            world.inventory.remove(id);
            return Ok(answer([
                ("UHostId", json!(id)),
                ("InRecycle", json!("Yes")),
            ]));
        }
        Action::UpdateStopScheduler => world.inventory.update(id, |instance| {
            let at = stop_at.expect("read above for this action");
            lifecycle::schedule_stop(&mut instance.fields, &mut instance.sim, at, &clock)
        }),
        Action::DeleteStopScheduler => world.inventory.update(id, |instance| {
            lifecycle::clear_scheduled_stop(&mut instance.fields, &mut instance.sim)
        }),
        Action::DescribeInstances
        | Action::GetProjectList
        | Action::SupportZones
        | Action::Create => None,
    };
    Ok(answer([("UHostId", json!(id))]))
}

/// `SchedulerStopTime` (the pages' and the vendor CLI's name) or `StopTime` (the official SDKs'):
/// Unix seconds, at least 300 s after `now`.
fn scheduled_stop_time(params: &Params, now: i64) -> Result<i64, ApiError> {
    let (name, value) = ["SchedulerStopTime", "StopTime"]
        .into_iter()
        .find_map(|name| text(params, name).map(|value| (name, value)))
        .ok_or_else(|| ApiError::missing_param("SchedulerStopTime"))?;
    let at: i64 = value
        .parse()
        .map_err(|_| ApiError::invalid_param(name, format!("{value:?} is not Unix seconds")))?;
    if at < now + lifecycle::MIN_STOP_LEAD_SECS {
        return Err(ApiError::invalid_param(
            name,
            format!(
                "{at} is less than {} s after now ({now}): a scheduled stop must be at least 5 minutes ahead",
                lifecycle::MIN_STOP_LEAD_SECS
            ),
        ));
    }
    Ok(at)
}

fn answer<const N: usize>(fields: [(&str, Value); N]) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// A parameter's value; an empty value counts as not given, as UCloud's gateway treats it.
pub(super) fn text<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// A parameter that must be given (210 otherwise).
pub(super) fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    text(params, name).ok_or_else(|| ApiError::missing_param(name))
}

/// A positive integer parameter, if given.
pub(super) fn positive(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = text(params, name) else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(ApiError::invalid_param(
            name,
            format!("{value:?} is not a positive integer"),
        )),
    }
}

/// A boolean parameter, if given: `true` or `false` in any case (the SDKs send `true`, the Go SDK's
/// disk models `True`).
pub(super) fn boolean(params: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    match text(params, name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::invalid_param(
            name,
            format!("{v:?} is not true or false"),
        )),
    }
}

fn integer(
    params: &Params,
    name: &str,
    allowed: RangeInclusive<usize>,
) -> Result<Option<usize>, ApiError> {
    let Some(value) = text(params, name) else {
        return Ok(None);
    };
    let number: i64 = value
        .parse()
        .map_err(|_| ApiError::invalid_param(name, format!("{value:?} is not an integer")))?;
    usize::try_from(number)
        .ok()
        .filter(|n| allowed.contains(n))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_param(
                name,
                format!(
                    "{number} is outside {}..={}",
                    allowed.start(),
                    allowed.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;
    use serde_json::{Value, json};

    /// 30 instances in cn-wlcb (uhost-00 … uhost-29, zone 01 for even, 02 for odd numbers), one in
    /// another region and one in a second project.
    fn fixture() -> Fixture {
        let mut instances: Vec<Value> = (0..30)
            .map(|i| {
                json!({"UHostId": format!("uhost-{i:02}"), "Region": "cn-wlcb",
                       "Zone": format!("cn-wlcb-0{}", 1 + i % 2)})
            })
            .collect();
        instances.push(json!({"UHostId": "uhost-sh", "Region": "cn-sh2"}));
        instances.push(json!({"UHostId": "uhost-p2", "Region": "cn-wlcb", "ProjectId": "org-2"}));
        let yaml = json!({
            "accounts": [{"publicKey": "pub", "privateKey": "priv",
                          "projects": [{"projectId": "org-1", "default": true}, {"projectId": "org-2"}]}],
            "instances": instances,
        });
        Fixture::from_yaml(&yaml.to_string()).unwrap()
    }

    fn run(fixture: &Fixture, params: &[(&str, &str)]) -> Result<(usize, Vec<String>), ApiError> {
        let params: Params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let account = fixture.accounts.get("pub").unwrap();
        let page = describe(&fixture.inventory, account, &params, &HashSet::new())?;
        Ok((
            page.total,
            page.instances.iter().map(|i| i.id.clone()).collect(),
        ))
    }

    fn error_code(result: Result<(usize, Vec<String>), ApiError>) -> i64 {
        result.unwrap_err().code
    }

    #[test]
    fn region_is_required() {
        let f = fixture();
        let error = run(&f, &[]).unwrap_err();
        assert_eq!(error, ApiError::new(210, "Missing params: Region"));
        assert_eq!(error_code(run(&f, &[("Region", "")])), 210);
    }

    #[test]
    fn the_default_page_is_20_of_the_default_project_in_the_region() {
        let f = fixture();
        let (total, ids) = run(&f, &[("Region", "cn-wlcb")]).unwrap();
        assert_eq!(total, 30);
        assert_eq!(ids.len(), 20);
        assert_eq!(ids[0], "uhost-00");
        let (total, _) = run(&f, &[("Region", "cn-wlcb"), ("Limit", "0")]).unwrap();
        assert_eq!(total, 30);
        let (total, ids) = run(&f, &[("Region", "cn-wlcb"), ("ProjectId", "org-2")]).unwrap();
        assert_eq!((total, ids), (1, vec!["uhost-p2".to_owned()]));
        assert_eq!(
            error_code(run(&f, &[("Region", "cn-wlcb"), ("ProjectId", "org-x")])),
            292
        );
        let (total, _) = run(&f, &[("Region", "cn-sh2")]).unwrap();
        assert_eq!(total, 1);
    }

    #[test]
    fn limit_and_offset_are_checked() {
        let f = fixture();
        let wlcb = ("Region", "cn-wlcb");
        for bad in [
            ("Limit", "101"),
            ("Limit", "-1"),
            ("Limit", "ten"),
            ("Limit", "2.5"),
        ] {
            assert_eq!(error_code(run(&f, &[wlcb, bad])), 230, "{bad:?}");
        }
        for bad in [("Offset", "31"), ("Offset", "-1"), ("Offset", "x")] {
            assert_eq!(error_code(run(&f, &[wlcb, bad])), 230, "{bad:?}");
        }
        let (total, ids) = run(&f, &[wlcb, ("Limit", "100"), ("Offset", "30")]).unwrap();
        assert_eq!((total, ids.len()), (30, 0));
        let (_, ids) = run(&f, &[wlcb, ("Limit", "7"), ("Offset", "25")]).unwrap();
        assert_eq!(
            ids,
            ["uhost-25", "uhost-26", "uhost-27", "uhost-28", "uhost-29"]
        );
        assert_eq!(error_code(run(&f, &[wlcb, ("WithoutGpu", "True")])), 230);
        assert!(run(&f, &[wlcb, ("WithoutGpu", "false")]).is_ok());
    }

    #[test]
    fn ids_are_limited_to_100_and_the_default_limit_applies_to_them() {
        let f = fixture();
        let names: Vec<String> = (0..101).map(|i| format!("UHostIds.{i}")).collect();
        let ids: Vec<String> = (0..101).map(|i| format!("uhost-{:02}", i % 30)).collect();
        let mut params: Vec<(&str, &str)> = vec![("Region", "cn-wlcb"), ("Limit", "100")];
        params.extend(
            names
                .iter()
                .zip(&ids)
                .map(|(n, i)| (n.as_str(), i.as_str())),
        );
        assert_eq!(error_code(run(&f, &params)), 230);
        params.pop();
        let (total, got) = run(&f, &params).unwrap();
        assert_eq!((total, got.len()), (30, 30));
        // Without Limit only the first 20 come back, though all 30 exist.
        params.remove(1);
        let (total, got) = run(&f, &params).unwrap();
        assert_eq!((total, got.len()), (30, 20));
    }

    #[test]
    fn filters_narrow_ids_and_listing_alike() {
        let f = fixture();
        let (total, ids) = run(
            &f,
            &[
                ("Region", "cn-wlcb"),
                ("Zone", "cn-wlcb-02"),
                ("UHostIds.0", "uhost-01"),
                ("UHostIds.1", "uhost-02"),
                ("UHostIds.2", "uhost-sh"),
            ],
        )
        .unwrap();
        assert_eq!((total, ids), (1, vec!["uhost-01".to_owned()]));
        // A bare `UHostIds` (no index) is not the documented form and is ignored.
        let (total, _) = run(&f, &[("Region", "cn-wlcb"), ("UHostIds", "uhost-01")]).unwrap();
        assert_eq!(total, 30);
    }

    #[test]
    fn actions_are_known_by_name() {
        assert_eq!(
            Action::from_name(DESCRIBE_ACTION),
            Some(Action::DescribeInstances)
        );
        assert_eq!(
            Action::from_name("GetProjectList"),
            Some(Action::GetProjectList)
        );
        assert_eq!(Action::from_name("describeCompShareInstance"), None);
        // Every action that changes machines is served, under the API crate's names.
        let reading = [
            Action::DescribeInstances,
            Action::GetProjectList,
            Action::SupportZones,
        ];
        let changing: Vec<&str> = Action::ALL
            .into_iter()
            .filter(|a| !reading.contains(a))
            .map(Action::name)
            .collect();
        assert_eq!(changing, compshare_api::MUTATING_ACTIONS);
        assert_eq!(
            Action::from_name(SUPPORT_ZONE_ACTION),
            Some(Action::SupportZones)
        );
    }

    /// Changing actions against a fixture, at times given as offsets from `t0`.
    mod changing {
        use super::*;
        use std::time::Duration;

        const SECOND: Duration = Duration::from_secs(1);

        struct Bench {
            fixture: Fixture,
            capacity: Vec<Capacity>,
            clock: Clock,
            t0: Instant,
        }

        /// Account `pub` (projects org-1, org-2; quota 5) and `other`; `uhost-run` Running and
        /// `uhost-stop` Stopped (4090 × 2 in cn-wlcb-01), `uhost-spot` Running on Spot,
        /// `uhost-theirs` of `other`.
        fn bench() -> Bench {
            let yaml = json!({
                "accounts": [
                    {"publicKey": "pub", "privateKey": "x", "instanceQuota": 5,
                     "projects": [{"projectId": "org-1", "default": true}, {"projectId": "org-2"}]},
                    {"publicKey": "other", "privateKey": "y"},
                ],
                "transitions": {"createMs": 3000, "startMs": 2000, "stopMs": 1000, "rebootMs": 500},
                "instances": [
                    {"UHostId": "uhost-run", "Owner": "pub", "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Running", "GPU": 2},
                    {"UHostId": "uhost-stop", "Owner": "pub", "Region": "cn-wlcb", "Zone": "cn-wlcb-01", "State": "Stopped", "GPU": 2},
                    {"UHostId": "uhost-spot", "Owner": "pub", "Region": "cn-wlcb", "Zone": "cn-wlcb-02", "ChargeType": "Spot", "IsSpot": true},
                    {"UHostId": "uhost-theirs", "Owner": "other", "Region": "cn-wlcb", "Zone": "cn-wlcb-01"},
                ],
            });
            let t0 = Instant::now();
            Bench {
                fixture: Fixture::from_yaml(&yaml.to_string()).unwrap(),
                capacity: Vec::new(),
                clock: Clock::anchored(t0, 1_700_000_000_000),
                t0,
            }
        }

        impl Bench {
            fn call(
                &mut self,
                at: Duration,
                key: &str,
                action: &str,
                params: &[(&str, &str)],
            ) -> Result<Map<String, Value>, ApiError> {
                let now = self.t0 + at;
                let transitions = self.fixture.transitions;
                self.fixture
                    .inventory
                    .settle(now, &self.clock, &transitions);
                let mut world = World {
                    inventory: &mut self.fixture.inventory,
                    accounts: &self.fixture.accounts,
                    zones: &self.fixture.zones,
                    capacity: &self.capacity,
                    transitions,
                    clock: self.clock,
                    now,
                };
                let params: Params = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let account = self.fixture.accounts.get(key).unwrap();
                change(
                    &mut world,
                    account,
                    Action::from_name(action).unwrap(),
                    &params,
                )
            }

            fn on(
                &mut self,
                at: Duration,
                action: &str,
                id: &str,
            ) -> Result<Map<String, Value>, ApiError> {
                self.call(
                    at,
                    "pub",
                    action,
                    &[
                        ("Region", "cn-wlcb"),
                        ("Zone", zone_of(id)),
                        ("UHostId", id),
                    ],
                )
            }

            fn state(&mut self, at: Duration, id: &str) -> String {
                let transitions = self.fixture.transitions;
                self.fixture
                    .inventory
                    .settle(self.t0 + at, &self.clock, &transitions);
                self.fixture.inventory.get(id).unwrap().fields["State"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }

            fn create(
                &mut self,
                at: Duration,
                extra: &[(&str, &str)],
            ) -> Result<Vec<String>, ApiError> {
                let mut params = vec![
                    ("Region", "cn-wlcb"),
                    ("Zone", "cn-wlcb-01"),
                    ("GpuType", "4090"),
                    ("GPU", "1"),
                    ("CPU", "16"),
                    ("Memory", "65536"),
                    ("CompShareImageId", "compshareImage-1"),
                    ("Disks.0.IsBoot", "true"),
                    ("Disks.0.Type", "CLOUD_SSD"),
                    ("Disks.0.Size", "100"),
                ];
                params.extend_from_slice(extra);
                let answer = self.call(at, "pub", CREATE_ACTION, &params)?;
                Ok(answer["UHostIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_str().unwrap().to_owned())
                    .collect())
            }
        }

        fn zone_of(id: &str) -> &'static str {
            if id == "uhost-spot" {
                "cn-wlcb-02"
            } else {
                "cn-wlcb-01"
            }
        }

        #[test]
        fn a_created_machine_is_initializing_then_running_and_counts_against_the_quota() {
            let mut b = bench();
            let ids = b
                .create(
                    Duration::ZERO,
                    &[("Name", "trainer"), ("Remark", "uid-1"), ("MaxCount", "2")],
                )
                .unwrap();
            assert_eq!(ids.len(), 2);
            for id in &ids {
                assert!(id.starts_with("uhost-") && id.len() == 14, "{id}");
                let instance = b.fixture.inventory.get(id).unwrap();
                assert_eq!(instance.owner, "pub");
                assert_eq!(instance.project_id, "org-1");
                assert_eq!(instance.fields["Name"], "trainer");
                assert_eq!(instance.fields["Remark"], "uid-1");
                assert_eq!(instance.fields["CreateTime"], 1_700_000_000);
            }
            assert_ne!(
                b.fixture.inventory.get(&ids[0]).unwrap().fields["IPSet"],
                b.fixture.inventory.get(&ids[1]).unwrap().fields["IPSet"]
            );
            assert_eq!(
                b.state(2999 * Duration::from_millis(1), &ids[0]),
                "Initializing"
            );
            // Locked while initializing.
            let refused = b.on(SECOND, STOP_ACTION, &ids[0]).unwrap_err();
            assert_eq!(refused.code, lifecycle::LOCKED);
            assert_eq!(b.state(3 * SECOND, &ids[0]), "Running");
            assert!(b.on(3 * SECOND, STOP_ACTION, &ids[0]).is_ok());
            // 5 allowed, 4 of the account's own + 2 asked for.
            let over = b.create(4 * SECOND, &[("MaxCount", "2")]).unwrap_err();
            assert_eq!(
                over,
                ApiError::new(
                    QUOTA_REACHED,
                    "Instance quota exceeded: the account has 5 of its 5 instances and asked for 2 more"
                )
            );
            assert!(over.message.contains("quota"));
            // The other account's instance does not count; terminating frees a place.
            assert_eq!(b.state(5 * SECOND, &ids[0]), "Stopped");
            b.on(5 * SECOND, TERMINATE_ACTION, &ids[0]).unwrap();
            assert_eq!(b.create(5 * SECOND, &[]).unwrap().len(), 1);
        }

        #[test]
        fn create_checks_project_zone_arrears_and_capacity() {
            let mut b = bench();
            b.fixture
                .accounts
                .get("pub")
                .unwrap()
                .set_instance_quota(100);
            assert_eq!(
                b.create(Duration::ZERO, &[("ProjectId", "org-9")])
                    .unwrap_err()
                    .code,
                292
            );
            let ids = b.create(Duration::ZERO, &[("ProjectId", "org-2")]).unwrap();
            assert_eq!(
                b.fixture.inventory.get(&ids[0]).unwrap().project_id,
                "org-2"
            );
            assert_eq!(
                b.create(Duration::ZERO, &[("Zone", "cn-wlcb-07")])
                    .unwrap_err()
                    .code,
                230
            );
            // uhost-run (2), uhost-theirs (1) and the new one (1) hold 4090s in cn-wlcb-01;
            // uhost-stop, stopped, holds none.
            b.capacity = vec![Capacity {
                zone: "cn-wlcb-01".into(),
                gpu_type: "4090".into(),
                gpus: 5,
            }];
            assert_eq!(b.fixture.inventory.gpus_in_use("cn-wlcb-01", "4090"), 4);
            assert!(b.create(Duration::ZERO, &[]).is_ok());
            let full = b.create(Duration::ZERO, &[]).unwrap_err();
            assert_eq!(full.code, zones::OUT_OF_RESOURCES);
            // Starting a stopped machine needs its GPUs back, unless it starts without them.
            let start = |b: &mut Bench, without_gpu: &str| {
                b.call(
                    Duration::ZERO,
                    "pub",
                    START_ACTION,
                    &[
                        ("Region", "cn-wlcb"),
                        ("Zone", "cn-wlcb-01"),
                        ("UHostId", "uhost-stop"),
                        ("WithoutGpu", without_gpu),
                    ],
                )
            };
            assert_eq!(
                start(&mut b, "false").unwrap_err().code,
                zones::OUT_OF_RESOURCES
            );
            assert_eq!(start(&mut b, "maybe").unwrap_err().code, 230);
            assert!(start(&mut b, "true").is_ok());

            let mut b = bench();
            b.fixture.accounts.get("pub").unwrap().set_in_arrears(true);
            assert_eq!(b.create(Duration::ZERO, &[]).unwrap_err().code, IN_ARREARS);
            assert_eq!(
                b.on(Duration::ZERO, START_ACTION, "uhost-stop")
                    .unwrap_err()
                    .code,
                IN_ARREARS
            );
            // Stopping is still allowed: it costs nothing.
            assert!(b.on(Duration::ZERO, STOP_ACTION, "uhost-run").is_ok());
        }

        #[test]
        fn start_stop_reboot_and_terminate_follow_their_states() {
            let mut b = bench();
            assert_eq!(
                b.on(Duration::ZERO, STOP_ACTION, "uhost-stop").unwrap_err(),
                ApiError::new(
                    lifecycle::WRONG_STATE,
                    "UHost [uhost-stop] is Stopped: StopCompShareInstance needs it Running"
                )
            );
            assert_eq!(
                b.on(Duration::ZERO, TERMINATE_ACTION, "uhost-run")
                    .unwrap_err()
                    .code,
                lifecycle::WRONG_STATE
            );
            assert_eq!(
                b.on(Duration::ZERO, REBOOT_ACTION, "uhost-run").unwrap(),
                answer([("UHostId", json!("uhost-run"))])
            );
            assert_eq!(
                b.state(499 * Duration::from_millis(1), "uhost-run"),
                "Rebooting"
            );
            assert_eq!(b.state(SECOND / 2, "uhost-run"), "Running");
            b.on(SECOND, STOP_ACTION, "uhost-run").unwrap();
            assert_eq!(b.state(SECOND, "uhost-run"), "Stopping");
            assert_eq!(b.state(2 * SECOND, "uhost-run"), "Stopped");
            b.on(2 * SECOND, START_ACTION, "uhost-run").unwrap();
            assert_eq!(b.state(2 * SECOND, "uhost-run"), "Starting");
            assert_eq!(b.state(4 * SECOND, "uhost-run"), "Running");
            assert_eq!(
                b.on(4 * SECOND, TERMINATE_ACTION, "uhost-stop").unwrap(),
                answer([
                    ("UHostId", json!("uhost-stop")),
                    ("InRecycle", json!("Yes"))
                ])
            );
            assert!(b.fixture.inventory.get("uhost-stop").is_none());
            assert_eq!(
                b.on(4 * SECOND, TERMINATE_ACTION, "uhost-stop")
                    .unwrap_err(),
                ApiError::new(lifecycle::NOT_FOUND, "UHost [uhost-stop] not found")
            );
        }

        #[test]
        fn only_the_owners_instance_in_its_project_region_and_zone_is_found() {
            let mut b = bench();
            let not_found = |r: Result<Map<String, Value>, ApiError>| r.unwrap_err().code;
            assert_eq!(
                not_found(b.on(Duration::ZERO, STOP_ACTION, "uhost-theirs")),
                lifecycle::NOT_FOUND
            );
            assert_eq!(
                not_found(b.on(Duration::ZERO, STOP_ACTION, "uhost-none")),
                lifecycle::NOT_FOUND
            );
            let stop = |b: &mut Bench, params: &[(&str, &str)]| {
                b.call(Duration::ZERO, "pub", STOP_ACTION, params)
            };
            let run = [
                ("Region", "cn-wlcb"),
                ("Zone", "cn-wlcb-01"),
                ("UHostId", "uhost-run"),
            ];
            assert_eq!(
                not_found(stop(&mut b, &[run[0], ("Zone", "cn-wlcb-02"), run[2]])),
                lifecycle::NOT_FOUND
            );
            assert_eq!(
                not_found(stop(&mut b, &[("Region", "cn-sh2"), run[1], run[2]])),
                lifecycle::NOT_FOUND
            );
            assert_eq!(
                not_found(stop(
                    &mut b,
                    &[run[0], run[1], run[2], ("ProjectId", "org-2")]
                )),
                lifecycle::NOT_FOUND
            );
            assert_eq!(
                stop(&mut b, &[run[0], run[2]]).unwrap_err(),
                ApiError::missing_param("Zone")
            );
            assert_eq!(
                stop(&mut b, &[run[1], run[2]]).unwrap_err(),
                ApiError::missing_param("Region")
            );
            assert_eq!(
                stop(&mut b, &[run[0], run[1]]).unwrap_err(),
                ApiError::missing_param("UHostId")
            );
            assert!(stop(&mut b, &[run[0], run[1], run[2], ("ProjectId", "org-1")]).is_ok());
        }

        #[test]
        fn the_scheduled_stop_is_five_minutes_ahead_not_for_spot_and_fires() {
            let mut b = bench();
            let schedule = |b: &mut Bench, id: &str, name: &str, at: &str| {
                b.call(
                    Duration::ZERO,
                    "pub",
                    UPDATE_STOP_SCHEDULER_ACTION,
                    &[
                        ("Region", "cn-wlcb"),
                        ("Zone", zone_of(id)),
                        ("ProjectId", "org-1"),
                        ("UHostId", id),
                        (name, at),
                    ],
                )
            };
            let soon =
                schedule(&mut b, "uhost-run", "SchedulerStopTime", "1700000299").unwrap_err();
            assert_eq!(soon.code, 230);
            assert!(
                soon.message.contains("at least 5 minutes ahead"),
                "{}",
                soon.message
            );
            let spot =
                schedule(&mut b, "uhost-spot", "SchedulerStopTime", "1700000300").unwrap_err();
            assert_eq!(
                spot.message,
                "Params [UHostId] not available: uhost-spot is a Spot instance, which cannot have a scheduled stop"
            );
            // Without ProjectId: the pages make it required here.
            let no_project = b.call(
                Duration::ZERO,
                "pub",
                UPDATE_STOP_SCHEDULER_ACTION,
                &[
                    ("Region", "cn-wlcb"),
                    ("Zone", "cn-wlcb-01"),
                    ("UHostId", "uhost-run"),
                    ("SchedulerStopTime", "1700000400"),
                ],
            );
            assert_eq!(
                no_project.unwrap_err(),
                ApiError::missing_param("ProjectId")
            );
            // The SDKs' name for the field works too.
            assert!(schedule(&mut b, "uhost-run", "StopTime", "1700000300").is_ok());
            let fields = &b.fixture.inventory.get("uhost-run").unwrap().fields;
            assert_eq!(fields["SchedulerStopTime"], 1_700_000_300);
            assert_eq!(fields["StopSchedulerTime"], 1_700_000_300);
            assert_eq!(b.state(299 * SECOND, "uhost-run"), "Running");
            assert_eq!(b.state(300 * SECOND, "uhost-run"), "Stopping");
            assert_eq!(b.state(301 * SECOND, "uhost-run"), "Stopped");

            // Deleted, it never fires; Zone may be left out there.
            let mut b = bench();
            schedule(&mut b, "uhost-run", "SchedulerStopTime", "1700000400").unwrap();
            b.call(
                Duration::ZERO,
                "pub",
                DELETE_STOP_SCHEDULER_ACTION,
                &[
                    ("Region", "cn-wlcb"),
                    ("ProjectId", "org-1"),
                    ("UHostId", "uhost-run"),
                ],
            )
            .unwrap();
            assert_eq!(
                b.fixture.inventory.get("uhost-run").unwrap().fields["StopSchedulerTime"],
                0
            );
            assert_eq!(b.state(1000 * SECOND, "uhost-run"), "Running");
        }

        #[test]
        fn every_action_is_refused_while_the_lock_holds() {
            let mut b = bench();
            let now = b.t0;
            b.fixture
                .inventory
                .update("uhost-run", |i| i.sim.lock_for(now, 10 * SECOND));
            for action in [STOP_ACTION, REBOOT_ACTION] {
                let refused = b.on(9 * SECOND, action, "uhost-run").unwrap_err();
                assert_eq!(refused.code, lifecycle::LOCKED);
                assert!(refused.message.starts_with("InstanceOperationInProgress"));
            }
            let schedule = b.call(
                9 * SECOND,
                "pub",
                DELETE_STOP_SCHEDULER_ACTION,
                &[
                    ("Region", "cn-wlcb"),
                    ("ProjectId", "org-1"),
                    ("UHostId", "uhost-run"),
                ],
            );
            assert_eq!(schedule.unwrap_err().code, lifecycle::LOCKED);
            assert!(b.on(10 * SECOND, STOP_ACTION, "uhost-run").is_ok());
        }

        #[test]
        fn support_zones_needs_a_region_and_lists_every_zone() {
            let zones = Zones::default_for(["cn-sh2"]);
            let params = |pairs: &[(&str, &str)]| -> Params {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            assert_eq!(
                support_zones(&zones, &params(&[])).unwrap_err(),
                ApiError::missing_param("Region")
            );
            let answer = support_zones(&zones, &params(&[("Region", "cn-wlcb")])).unwrap();
            assert_eq!(answer["ZoneInfo"].as_array().unwrap().len(), 4);
            assert_eq!(answer["ZoneInfo"][0]["Zone"], "cn-sh2-01");
        }
    }
}
