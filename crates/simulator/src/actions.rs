//! The actions the simulator serves, with the gateway's parameter rules.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use compshare_api::signing::Params;
use compshare_api::{DESCRIBE_ACTION, MAX_IDS_PER_CALL};

use super::accounts::Account;
use super::inventory::{Inventory, Page, Query};

const GET_PROJECT_LIST_ACTION: &str = "GetProjectList";

/// The vendor's page: "Limit 每页数量,默认 20,最大 100".
const DEFAULT_LIMIT: usize = 20;
const UHOST_IDS_PREFIX: &str = "UHostIds.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    DescribeInstances,
    GetProjectList,
}

impl Action {
    const ALL: [Action; 2] = [Action::DescribeInstances, Action::GetProjectList];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::DescribeInstances => DESCRIBE_ACTION,
            Action::GetProjectList => GET_PROJECT_LIST_ACTION,
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

    fn missing_param(name: &str) -> Self {
        ApiError::new(210, format!("Missing params: {name}"))
    }

    fn invalid_param(name: &str, why: impl std::fmt::Display) -> Self {
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
    let project_id = match text(params, "ProjectId") {
        None => &account.default_project().id,
        Some(id) => {
            &account
                .project(id)
                .ok_or_else(|| ApiError::new(292, format!("Project [{id}] does not exist")))?
                .id
        }
    };
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

/// A parameter's value; an empty value counts as not given, as UCloud's gateway treats it.
fn text<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
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
    }
}
