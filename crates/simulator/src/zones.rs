//! Where machines can be made: the zones the simulator knows (what `DescribeCompShareSupportZone`
//! lists and what `CreateCompShareInstance` accepts), and the GPU capacity of each zone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::actions::ApiError;

/// The region every default zone list includes: where CompShare's machines are.
const HOME_REGION: &str = "cn-wlcb";

/// Out of resources, as the documentation lists it ("226604 资源不足").
pub(super) const OUT_OF_RESOURCES: i64 = 226604;

/// A zone as a fixture lists it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ZoneEntry {
    pub region: String,
    pub zone: String,
    /// The display name (`Describe`); the zone's own name when left out.
    #[serde(default)]
    pub describe: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct Zone {
    region: String,
    zone: String,
    describe: String,
    region_id: u64,
    zone_id: u64,
}

/// The zones the simulator knows, in a stable order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Zones {
    zones: Vec<Zone>,
}

impl Zones {
    /// The zones a fixture lists; a problem names what is wrong.
    pub(crate) fn listed(entries: Vec<ZoneEntry>) -> Result<Zones, (usize, String)> {
        let mut seen = BTreeSet::new();
        for (index, entry) in entries.iter().enumerate() {
            if entry.region.is_empty() || entry.zone.is_empty() {
                return Err((index, "region and zone must not be empty".to_owned()));
            }
            if !seen.insert(&entry.zone) {
                return Err((index, format!("zone {:?} appears twice", entry.zone)));
            }
        }
        Ok(Zones::numbered(entries))
    }

    /// `<region>-01` and `<region>-02` for each of `regions` and for cn-wlcb.
    pub(crate) fn default_for<'a>(regions: impl IntoIterator<Item = &'a str>) -> Zones {
        let regions: BTreeSet<&str> = regions
            .into_iter()
            .chain(std::iter::once(HOME_REGION))
            .collect();
        Zones::numbered(
            regions
                .into_iter()
                .flat_map(|region| {
                    ["01", "02"].map(|n| ZoneEntry {
                        region: region.to_owned(),
                        zone: format!("{region}-{n}"),
                        describe: None,
                    })
                })
                .collect(),
        )
    }

    /// Gives each region and zone a number (`RegionId`, `ZoneId`: the page gives no values, so
    /// these are the simulator's own, stable for a fixture).
    fn numbered(entries: Vec<ZoneEntry>) -> Zones {
        // Each region seen so far, with how many of its zones.
        let mut regions: Vec<(String, u64)> = Vec::new();
        let zones = entries
            .into_iter()
            .map(|entry| {
                let index = match regions.iter().position(|(r, _)| *r == entry.region) {
                    Some(index) => index,
                    None => {
                        regions.push((entry.region.clone(), 0));
                        regions.len() - 1
                    }
                };
                regions[index].1 += 1;
                let number = index as u64 + 1;
                Zone {
                    describe: entry.describe.unwrap_or_else(|| entry.zone.clone()),
                    region: entry.region,
                    zone: entry.zone,
                    region_id: 1_000_000 + number,
                    zone_id: number * 1000 + regions[index].1,
                }
            })
            .collect();
        Zones { zones }
    }

    pub(crate) fn contains(&self, region: &str, zone: &str) -> bool {
        self.zones
            .iter()
            .any(|z| z.region == region && z.zone == zone)
    }

    /// Refuses a zone that is not one of `region`'s, naming those that are.
    pub(crate) fn check(&self, region: &str, zone: &str) -> Result<(), ApiError> {
        if self.contains(region, zone) {
            return Ok(());
        }
        let known: Vec<&str> = self
            .zones
            .iter()
            .filter(|z| z.region == region)
            .map(|z| z.zone.as_str())
            .collect();
        let why = if known.is_empty() {
            format!("region {region} has no CompShare zones")
        } else {
            format!(
                "{zone} is not a zone of region {region} (its zones: {})",
                known.join(", ")
            )
        };
        Err(ApiError::invalid_param("Zone", why))
    }

    /// `ZoneInfo` of `DescribeCompShareSupportZone`.
    pub(crate) fn zone_info(&self) -> Value {
        Value::Array(
            self.zones
                .iter()
                .map(|z| {
                    json!({"Region": z.region, "Zone": z.zone, "RegionId": z.region_id,
                           "ZoneId": z.zone_id, "Describe": z.describe})
                })
                .collect(),
        )
    }
}

/// How many GPUs of a type a zone has. Without an entry a zone's capacity is unlimited.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capacity {
    pub zone: String,
    pub gpu_type: String,
    /// GPUs in all: what every instance of the type in the zone holds, except stopped ones,
    /// counts against it.
    pub gpus: u64,
}

/// Refuses `wanted` more GPUs of `gpu_type` in `zone` when `in_use` plus them exceed its capacity.
pub(super) fn check_capacity(
    capacity: &[Capacity],
    zone: &str,
    gpu_type: &str,
    in_use: u64,
    wanted: u64,
) -> Result<(), ApiError> {
    match capacity
        .iter()
        .find(|c| c.zone == zone && c.gpu_type == gpu_type)
    {
        Some(c) if in_use + wanted > c.gpus => Err(ApiError::new(
            OUT_OF_RESOURCES,
            format!(
                "Insufficient resources: {wanted} {gpu_type} GPU(s) asked for in {zone}, {} of {} free",
                c.gpus.saturating_sub(in_use),
                c.gpus
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(zones: &Zones) -> Vec<(&str, &str)> {
        zones
            .zones
            .iter()
            .map(|z| (z.region.as_str(), z.zone.as_str()))
            .collect()
    }

    #[test]
    fn by_default_each_region_has_two_zones_and_cn_wlcb_is_always_there() {
        let zones = Zones::default_for(["cn-sh2", "cn-wlcb", "cn-sh2"]);
        assert_eq!(
            names(&zones),
            [
                ("cn-sh2", "cn-sh2-01"),
                ("cn-sh2", "cn-sh2-02"),
                ("cn-wlcb", "cn-wlcb-01"),
                ("cn-wlcb", "cn-wlcb-02")
            ]
        );
        assert_eq!(
            names(&Zones::default_for([])),
            [("cn-wlcb", "cn-wlcb-01"), ("cn-wlcb", "cn-wlcb-02")]
        );
        assert!(zones.contains("cn-sh2", "cn-sh2-02"));
        assert!(!zones.contains("cn-wlcb", "cn-sh2-02"));
    }

    #[test]
    fn listed_zones_are_checked_and_numbered() {
        let entry = |region: &str, zone: &str| ZoneEntry {
            region: region.into(),
            zone: zone.into(),
            describe: None,
        };
        assert!(Zones::listed(vec![entry("r", "")]).is_err());
        assert_eq!(
            Zones::listed(vec![entry("r", "r-1"), entry("r", "r-1")])
                .unwrap_err()
                .0,
            1
        );
        let zones = Zones::listed(vec![
            ZoneEntry {
                describe: Some("华北二A".into()),
                ..entry("cn-wlcb", "cn-wlcb-01")
            },
            entry("cn-sh2", "cn-sh2-02"),
            entry("cn-wlcb", "cn-wlcb-02"),
        ])
        .unwrap();
        assert_eq!(
            zones.zone_info(),
            json!([
                {"Region": "cn-wlcb", "Zone": "cn-wlcb-01", "RegionId": 1000001, "ZoneId": 1001, "Describe": "华北二A"},
                {"Region": "cn-sh2", "Zone": "cn-sh2-02", "RegionId": 1000002, "ZoneId": 2001, "Describe": "cn-sh2-02"},
                {"Region": "cn-wlcb", "Zone": "cn-wlcb-02", "RegionId": 1000001, "ZoneId": 1002, "Describe": "cn-wlcb-02"},
            ])
        );
    }

    #[test]
    fn an_unknown_zone_is_refused_naming_the_regions_zones() {
        let zones = Zones::default_for(["cn-sh2"]);
        assert!(zones.check("cn-wlcb", "cn-wlcb-02").is_ok());
        let error = zones.check("cn-wlcb", "cn-wlcb-09").unwrap_err();
        assert_eq!(error.code, 230);
        assert_eq!(
            error.message,
            "Params [Zone] not available: cn-wlcb-09 is not a zone of region cn-wlcb (its zones: cn-wlcb-01, cn-wlcb-02)"
        );
        let error = zones.check("cn-bj2", "cn-bj2-01").unwrap_err();
        assert!(
            error.message.contains("region cn-bj2 has no"),
            "{}",
            error.message
        );
    }

    #[test]
    fn capacity_counts_gpus_per_zone_and_type() {
        let table = [Capacity {
            zone: "z1".into(),
            gpu_type: "4090".into(),
            gpus: 8,
        }];
        assert!(check_capacity(&table, "z1", "4090", 6, 2).is_ok());
        let error = check_capacity(&table, "z1", "4090", 7, 2).unwrap_err();
        assert_eq!(error.code, OUT_OF_RESOURCES);
        assert_eq!(
            error.message,
            "Insufficient resources: 2 4090 GPU(s) asked for in z1, 1 of 8 free"
        );
        // No entry: unlimited.
        assert!(check_capacity(&table, "z2", "4090", 1000, 8).is_ok());
        assert!(check_capacity(&table, "z1", "A800", 1000, 8).is_ok());
    }
}
