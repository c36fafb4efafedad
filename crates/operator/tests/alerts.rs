//! The chart's alerts and dashboard: promtool checks the rules file and runs its unit tests (every
//! alert fires, and stays quiet beside it), every metric they query is one the operator exports,
//! and the chart renders them only when asked, from those very files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use compshare_test_support::chart::{chart_dir, render};
use serde_json::Value;

fn alerts_file() -> PathBuf {
    chart_dir().join("files/alerts.yaml")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs the test bed's promtool (built by testbed/build.sh; a missing one fails the test).
fn promtool(args: &[&str]) {
    let promtool = compshare_testbed::binaries().unwrap().join("promtool");
    let output = Command::new(&promtool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        output.status.success(),
        "promtool {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules() {
    promtool(&["check", "rules", alerts_file().to_str().unwrap()]);
}

#[test]
fn every_alert_fires_in_promtools_unit_tests() {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/alerts_test.yaml");
    promtool(&["test", "rules", tests.to_str().unwrap()]);

    // promtool checks what each case expects; this checks that every alert has a case where it
    // fires (a rule without one would pass unnoticed).
    let cases = std::fs::read_to_string(&tests).unwrap();
    let cases: Value = serde_saphyr::from_str(&cases).unwrap();
    let fired: BTreeSet<String> = cases["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|c| c["alertname"].as_str().unwrap().to_owned())
        .collect();
    let quiet = cases["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty()))
        .count();
    assert_eq!(fired, alert_names(), "alerts without a case that fires");
    assert!(quiet > 0, "no case where an alert stays quiet");
}

fn rules() -> Value {
    let text = std::fs::read_to_string(alerts_file()).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn alert_names() -> BTreeSet<String> {
    rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

/// The metric names of the operator's exposition (every family holds a sample there), as
/// Prometheus stores them: `_total`, `_bucket`, `_sum` and `_count` included.
fn exported() -> BTreeSet<String> {
    compshare_operator::metrics_exposition_example()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn alerts_and_dashboard_query_only_exported_metrics() {
    let exported = exported();
    let mut queries: Vec<String> = rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries nothing", panel["title"]);
        queries.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    // Template variables: label_values(METRIC, LABEL).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            let metric = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("unexpected variable query {definition}"));
            queries.push(metric.trim().to_owned());
        }
    }
    for query in &queries {
        let metrics = metric_names(query);
        assert!(!metrics.is_empty(), "no metric in {query}");
        for metric in metrics {
            assert!(
                exported.contains(&metric),
                "{metric} (in {query}) is not exported; the operator exports {exported:?}"
            );
        }
    }
}

/// Aggregation operators: an identifier followed by `by`/`without` or `(` rather than a metric.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metric names a PromQL expression selects. Strings, label matchers (`{…}`), ranges and
/// subqueries (`[…]`), numbers and durations, Grafana variables (`$x`, `${x}`), functions and
/// aggregations (identifiers before `(`), keywords, and the label lists of `by (…)`, `on (…)`
/// and their kin are not metric names; every other identifier is.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_past = |from: usize, close: char| -> usize {
        let mut j = from + 1;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            match (quote, chars[j]) {
                (Some(_), '\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                // Before quotes: a string's own closing quote ends it.
                (None, c) if c == close => return j + 1,
                (None, c @ ('"' | '\'' | '`')) => quote = Some(c),
                _ => {}
            }
            j += 1;
        }
        panic!("unclosed {close:?} in {expr}");
    };
    let next_non_space = |from: usize| {
        (from..chars.len())
            .find(|&j| !chars[j].is_whitespace())
            .map(|j| (j, chars[j]))
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_past(i, c),
            '{' => i = skip_past(i, '}'),
            '[' => i = skip_past(i, ']'),
            '#' => {
                i = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |n| i + n)
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_past(i, '}');
                } else {
                    while i < chars.len() && is_part(chars[i]) {
                        i += 1;
                    }
                }
            }
            // Numbers and durations (`5m`, `1e3`, `0x1f`) run together with their letters.
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_start(c) => {
                let start = i;
                while i < chars.len() && is_part(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(i);
                if LABEL_LISTS.contains(&lower.as_str()) {
                    // The list is optional after group_left/group_right.
                    if let Some((j, '(')) = next {
                        i = skip_past(j, ')');
                    }
                } else if matches!(next, Some((_, '(')))
                    || AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                {
                    // A function, an aggregation or a keyword.
                } else {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (namespace, le) (rate(a_total{code=~"1{2}3", x='}'}[5m] offset 1h)) * 60
                > on (namespace) group_left (pod) 0.9 * max without (pod) (b:rec)
                or absent(c) unless histogram_quantile(0.99, d_bucket[$__rate_interval]) > bool 1e3
                and topk(3, e{namespace=~"$namespace"}) + sum(f)by(x) - count_values("v", g) / 0x1F
                # a comment naming not_a_metric
                + h[1h:5m] + i @ start()"#
        ),
        ["a_total", "b:rec", "c", "d_bucket", "e", "f", "g", "h", "i"]
    );
}

/// The documents of `helm template` with `sets` of this kind.
fn rendered(kind: &str, sets: &[&str]) -> Vec<Value> {
    render("ops", sets)
        .unwrap()
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn the_chart_renders_the_rules_and_the_dashboard_only_when_asked() {
    assert!(rendered("PrometheusRule", &[]).is_empty());
    assert!(rendered("ConfigMap", &[]).is_empty());

    let rule = rendered(
        "PrometheusRule",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=kube-prometheus-stack",
        ],
    );
    let [rule] = rule.as_slice() else {
        panic!("one PrometheusRule: {rule:?}")
    };
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "ops");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(rule["spec"]["groups"], rules()["groups"]);

    let dashboard_map = rendered("ConfigMap", &["metrics.grafanaDashboard.enabled=true"]);
    let [map] = dashboard_map.as_slice() else {
        panic!("one ConfigMap: {dashboard_map:?}")
    };
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(map["data"]["compshare-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard());

    // The sidecar's label is the user's to choose.
    let dashboard_map = rendered(
        "ConfigMap",
        &[
            "metrics.grafanaDashboard.enabled=true",
            "metrics.grafanaDashboard.label=dashboards",
            "metrics.grafanaDashboard.labelValue=ops",
        ],
    );
    assert_eq!(dashboard_map[0]["metadata"]["labels"]["dashboards"], "ops");
    assert!(dashboard_map[0]["metadata"]["labels"]["grafana_dashboard"].is_null());
}
