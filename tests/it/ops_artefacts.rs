//! The shipped ops artefacts stay true (docs/operations.md): `promtool` accepts
//! `deploy/prometheus/alerts.yml` and passes its unit tests; every alert has a severity, a
//! runbook section and unit tests that expect it firing and silent; the Grafana dashboard
//! imports as is; and every metric, label and label value the alerts and the dashboard use is
//! exported by the running app's `/metrics` — renaming a metric or a label on either side fails
//! here.
//!
//! Without `promtool` the promtool test prints a skip line and passes, unless `CI` is set
//! (`bash .ci/setup` installs it). The metric scan needs no promtool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;
use tokio::io::AsyncWriteExt as _;

use crate::support::TestDb;
use crate::support::accounts::db_execute;
use crate::support::admin::managed_target;
use crate::support::agent::{metric, spawn_configured_on, until};
use crate::support::upstream::{FakeUpstream, closed_port};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/gatehouse.json";
const RUNBOOK: &str = "docs/operations.md";

/// Labels Prometheus attaches to every scraped series; the app does not export them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn alerts() -> Yaml {
    serde_yaml::from_str(&read(ALERTS)).unwrap_or_else(|e| panic!("{ALERTS}: {e}"))
}

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every rule of alerts.yml (alerting and recording).
fn rules(alerts: &Yaml) -> Vec<&Yaml> {
    let groups = alerts["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect()
}

fn text<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

// ---------------------------------------------------------------------------------------------
// promtool

/// Whether promtool runs here; when it is not installed, a skip line — or, under CI, a failure.
fn promtool_available() -> bool {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!(
            "promtool --version failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            assert!(
                !in_ci,
                "promtool is missing: install it with bash .ci/setup"
            );
            eprintln!(
                "SKIP ops_artefacts::promtool_*: promtool not found (install it with bash .ci/setup)"
            );
            false
        }
        Err(e) => panic!("promtool: {e}"),
    }
}

/// Run promtool in the repository root; fail with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}"));
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grafana's variables replaced by values PromQL accepts: intervals by `5m`, the others by `.*`
/// (they only occur inside `=~` matchers).
fn without_grafana_variables(expr: &str) -> String {
    let mut expr = expr.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        expr = expr.replace(interval, "5m");
    }
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                chars.next();
            }
            out.push_str(".*");
        } else {
            out.push(c);
        }
    }
    out
}

/// The dashboard's queries as a rules file, for `promtool check rules` to parse them.
fn dashboard_as_rules(dashboard: &Json) -> String {
    let rules: Vec<Json> = dashboard_queries(dashboard)
        .into_iter()
        .enumerate()
        .map(|(i, (_, query))| {
            let expr = label_values(&query).map_or(query.as_str(), |(selector, _)| selector);
            json!({"record": format!("dashboard:query_{i}"), "expr": without_grafana_variables(expr)})
        })
        .collect();
    serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap()
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_dashboard_queries() {
    if !promtool_available() {
        return;
    }
    promtool(&["check", "rules", ALERTS]);
    promtool(&["test", "rules", ALERT_TESTS]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, dashboard_as_rules(&dashboard())).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()]);
}

// ---------------------------------------------------------------------------------------------
// Alerts: severity, runbook, unit test

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces → `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_runbook_section_and_a_unit_test_both_ways() {
    let alerts = alerts();
    let runbook = read(RUNBOOK);
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let tests: Yaml =
        serde_yaml::from_str(&read(ALERT_TESTS)).unwrap_or_else(|e| panic!("{ALERT_TESTS}: {e}"));
    // alertname → (some evaluation expects it firing, some expects it silent)
    let mut tested: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = text(&case["alertname"], "alertname").to_owned();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|alerts| !alerts.is_empty());
            let entry = tested.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }

    let mut problems = Vec::new();
    let mut names = Vec::new();
    for rule in rules(&alerts) {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        names.push(name);
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        if !["page", "ticket"].contains(&severity) {
            problems.push(format!(
                "{name}: severity {severity:?} is neither page nor ticket"
            ));
        }
        for key in ["summary", "description"] {
            if rule["annotations"][key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let runbook_url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        match runbook_url.split_once('#') {
            Some((RUNBOOK, fragment)) if anchors.contains(fragment) => {}
            _ => problems.push(format!(
                "{name}: runbook_url {runbook_url:?} is not {RUNBOOK}#<a heading of it>"
            )),
        }
        match tested.get(name) {
            Some((true, true)) => {}
            Some((fires, _)) => problems.push(format!(
                "{name}: {ALERT_TESTS} has no evaluation that expects it {}",
                if *fires { "silent" } else { "firing" }
            )),
            None => problems.push(format!("{name}: not tested in {ALERT_TESTS}")),
        }
    }
    assert!(names.len() >= 8, "the alerts were not read: {names:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Importable as is: a current schema, the data source from the `datasource` variable (no
/// `__inputs` to fill in, so file provisioning works too), a `target` variable from
/// `label_values`, and every panel with a unique id, a description, that data source and a
/// place of its own on the grid.
#[test]
fn the_dashboard_is_importable_as_is() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    if schema < 39 {
        problems.push(format!("schemaVersion {schema} < 39 (Grafana 10.4)"));
    }
    for key in ["uid", "title"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    if dashboard.get("__inputs").is_some() || read(DASHBOARD).contains("${DS_") {
        problems.push("__inputs / ${DS_…}: use the datasource variable".to_owned());
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    match variable("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => problems.push(format!("no prometheus datasource variable: {other:?}")),
    }
    match variable("target") {
        Some(v)
            if v["type"] == "query"
                && v["definition"]
                    .as_str()
                    .and_then(label_values)
                    .is_some_and(|(s, l)| {
                        s.starts_with("gatehouse_requests_total") && l == "target"
                    }) => {}
        other => problems.push(format!(
            "no target variable from label_values(gatehouse_requests_total…, target): {other:?}"
        )),
    }
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        if !ids.insert(panel["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("{title}: id {} is not unique", panel["id"]));
        }
        if panel["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{title}: no description"));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("{title}: no queries"));
        }
        let own = std::iter::once(&panel["datasource"]);
        if own
            .chain(targets.iter().map(|t| &t["datasource"]))
            .any(|d| *d != datasource)
        {
            problems.push(format!("{title}: data source is not {datasource}"));
        }
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_u64().unwrap_or(0),
            grid["y"].as_u64().unwrap_or(0),
            grid["w"].as_u64().unwrap_or(0),
            grid["h"].as_u64().unwrap_or(0),
        );
        if w == 0 || h == 0 || x + w > 24 {
            problems.push(format!("{title}: gridPos {grid} is off the 24-column grid"));
        }
        let overlap = (x..x + w)
            .flat_map(|cx| (y..y + h).map(move |cy| (cx, cy)))
            .fold(None, |first, cell| {
                let taken = !cells.insert(cell);
                first.or(taken.then_some(cell))
            });
        if let Some((cx, cy)) = overlap {
            problems.push(format!("{title}: overlaps another panel at ({cx}, {cy})"));
        }
    }
    assert!(panels.len() >= 11, "{} panels", panels.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// A small PromQL scan: which metrics an expression uses, with which labels and label values.

/// `(label, operator, value)` of one `{…}` matcher.
type Matcher = (String, String, String);

/// One metric selector in an expression.
#[derive(Debug)]
struct Use {
    /// Where it was found (artefact and rule or panel), for the failure message.
    source: String,
    /// As written, e.g. `gatehouse_request_duration_seconds_bucket`.
    name: String,
    /// Byte offset in the expression (to attribute `by (…)` clauses).
    at: usize,
    /// Labels of `by (…)`/`without (…)` clauses over it and of `label_values(…, label)`.
    grouped_by: BTreeSet<String>,
    matchers: Vec<Matcher>,
}

/// `expr` with the contents of string literals blanked out (same length), so that brackets and
/// words inside strings are not read as syntax.
fn mask_strings(expr: &str) -> Vec<u8> {
    let mut masked = expr.as_bytes().to_vec();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < masked.len() {
        let b = masked[i];
        match quote {
            None if matches!(b, b'"' | b'\'' | b'`') => quote = Some(b),
            None => {}
            Some(q) if b == q => quote = None,
            Some(q) => {
                if b == b'\\' && q != b'`' && i + 1 < masked.len() {
                    masked[i + 1] = b' ';
                    i += 1;
                }
                masked[i] = b' ';
            }
        }
        i += 1;
    }
    masked
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// `(start, end)` of every identifier (a word that does not start with a digit).
fn identifiers(masked: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < masked.len() {
        let starts = (masked[i].is_ascii_alphabetic() || masked[i] == b'_')
            && (i == 0 || !is_ident(masked[i - 1]));
        if starts {
            let start = i;
            while i < masked.len() && is_ident(masked[i]) {
                i += 1;
            }
            found.push((start, i));
        } else {
            i += 1;
        }
    }
    found
}

fn skip_space(masked: &[u8], mut i: usize) -> usize {
    while i < masked.len() && masked[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index of the bracket closing the one at `open`.
fn closing(masked: &[u8], open: usize, source: &str) -> usize {
    let (opening, close) = match masked[open] {
        b'(' => (b'(', b')'),
        b'{' => (b'{', b'}'),
        other => panic!("{source}: no bracket at {open}: {}", other as char),
    };
    let mut depth = 0;
    for (i, b) in masked.iter().enumerate().skip(open) {
        if *b == opening {
            depth += 1;
        } else if *b == close {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    panic!("{source}: unbalanced brackets");
}

/// The index of the `(` that the `)` at `close` closes.
fn opening(masked: &[u8], close: usize, source: &str) -> usize {
    let mut depth = 0;
    for i in (0..=close).rev() {
        match masked[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("{source}: unbalanced brackets");
}

/// `a="x", b=~"y|z"` → `[(a, =, x), (b, =~, y|z)]`.
fn parse_matchers(inner: &str, source: &str) -> Vec<Matcher> {
    let masked = mask_strings(inner);
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, b) in masked.iter().enumerate() {
        if *b == b',' {
            parts.push(&inner[start..i]);
            start = i + 1;
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let op_at = part
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("{source}: matcher without operator: {part}"));
            let label = part[..op_at].trim().to_owned();
            let rest = &part[op_at..];
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .unwrap_or_else(|| panic!("{source}: bad matcher {part}"));
            let value = rest[op.len()..]
                .trim()
                .trim_matches(|c| matches!(c, '"' | '\'' | '`'))
                .to_owned();
            (label, op.to_owned(), value)
        })
        .collect()
}

/// Every `gatehouse_*` selector of `expr`, with the `by`/`without` labels that aggregate it.
fn scan(source: &str, expr: &str) -> Vec<Use> {
    let masked = mask_strings(expr);
    let words = identifiers(&masked);
    let mut uses = Vec::new();
    for &(start, end) in &words {
        let word = &expr[start..end];
        if let Some(name) = word.strip_prefix("gatehouse_").map(|_| word) {
            let mut matchers = Vec::new();
            let brace = skip_space(&masked, end);
            if masked.get(brace) == Some(&b'{') {
                let close = closing(&masked, brace, source);
                matchers = parse_matchers(&expr[brace + 1..close], source);
            }
            uses.push(Use {
                source: source.to_owned(),
                name: name.to_owned(),
                at: start,
                grouped_by: BTreeSet::new(),
                matchers,
            });
        }
    }
    for &(start, end) in &words {
        let word = &expr[start..end];
        match word {
            "by" | "without" => {}
            // Vector matching names labels of both sides; nothing here uses it yet.
            "on" | "ignoring" | "group_left" | "group_right" => panic!(
                "{source}: `{word}(…)` is not followed by the scan in tests/it/ops_artefacts.rs; extend it"
            ),
            _ => continue,
        }
        let list_open = skip_space(&masked, end);
        if masked.get(list_open) != Some(&b'(') {
            continue; // a label or metric that happens to be called `by`
        }
        let list_close = closing(&masked, list_open, source);
        let labels: Vec<String> = expr[list_open + 1..list_close]
            .split(',')
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        // `sum by (l) (expr)` or `sum (expr) by (l)`.
        let after = skip_space(&masked, list_close + 1);
        let (from, to) = if masked.get(after) == Some(&b'(') {
            (after, closing(&masked, after, source))
        } else {
            let before = expr[..start].trim_end().len();
            assert!(
                before > 0 && masked[before - 1] == b')',
                "{source}: `{word}` is neither followed nor preceded by a bracketed expression"
            );
            (opening(&masked, before - 1, source), before - 1)
        };
        for u in uses.iter_mut().filter(|u| u.at > from && u.at < to) {
            u.grouped_by.extend(labels.iter().cloned());
        }
    }
    uses
}

/// `(where, expr)` of every query of the dashboard: panel targets (at any depth, so rows with
/// nested panels count too) and the `label_values(…)` of query variables.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    fn walk(value: &Json, place: &str, found: &mut Vec<(String, String)>) {
        match value {
            Json::Object(map) => {
                let place = map
                    .get("title")
                    .and_then(Json::as_str)
                    .map_or_else(|| place.to_owned(), |t| format!("panel {t:?}"));
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("expr", Json::String(expr)) => found.push((place.clone(), expr.clone())),
                        ("templating", _) => {}
                        _ => walk(child, &place, found),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|i| walk(i, place, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(dashboard, "dashboard", &mut found);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let name = variable["name"].as_str().unwrap_or("?");
            // What Grafana shows (`definition`) and what it runs (`query`, a string here).
            let queries: BTreeSet<&str> = [&variable["definition"], &variable["query"]]
                .into_iter()
                .filter_map(Json::as_str)
                .collect();
            for query in queries {
                found.push((format!("variable ${name}"), query.to_owned()));
            }
        }
    }
    found
}

/// Grafana's `label_values(selector, label)` → `(selector, label)`.
fn label_values(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// `label_values(selector, label)` → the selector's uses, grouped by `label`; any other query is
/// scanned as PromQL.
fn scan_query(source: &str, query: &str) -> Vec<Use> {
    let Some((selector, label)) = label_values(query) else {
        return scan(source, query);
    };
    let mut uses = scan(source, selector);
    for u in &mut uses {
        u.grouped_by.insert(label.trim().to_owned());
    }
    uses
}

fn artefact_uses() -> Vec<Use> {
    let mut uses = Vec::new();
    let alerts = alerts();
    for rule in rules(&alerts) {
        let name = rule["alert"]
            .as_str()
            .or_else(|| rule["record"].as_str())
            .unwrap_or("?");
        let expr = text(&rule["expr"], "expr");
        let found = scan(&format!("{ALERTS} {name}"), expr);
        uses.extend(found);
    }
    let alert_uses = uses.len();
    for (place, query) in dashboard_queries(&dashboard()) {
        uses.extend(scan_query(&format!("{DASHBOARD} {place}"), &query));
    }
    assert!(
        alert_uses >= 8 && uses.len() - alert_uses >= 12,
        "the scan found too few metrics ({alert_uses} in the alerts, {} on the dashboard): {uses:#?}",
        uses.len() - alert_uses
    );
    uses
}

// ---------------------------------------------------------------------------------------------
// What /metrics exports

#[derive(Default, Debug)]
struct Family {
    kind: String,
    /// label → every value seen.
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// The Prometheus text format, by family.
#[derive(Debug)]
struct Exposition(BTreeMap<String, Family>);

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            }
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..end];
            let family = if families.contains_key(sample) {
                sample
            } else {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| sample.strip_suffix(s))
                    .filter(|base| families.contains_key(*base))
                    .unwrap_or_else(|| panic!("a sample of no declared family: {line}"))
            };
            let family = families.get_mut(family).expect("declared above");
            if line[end..].starts_with('{') {
                let close = line.rfind('}').expect("labels end with }");
                for (label, _, value) in parse_matchers(&line[end + 1..close], "/metrics") {
                    if label != "le" {
                        family.labels.entry(label).or_default().insert(value);
                    }
                }
            }
        }
        Self(families)
    }

    /// What is wrong with one use, if anything.
    fn problems(&self, u: &Use) -> Vec<String> {
        let (family, bucket) = match self.0.get(&u.name) {
            Some(family) if family.kind == "histogram" => {
                return vec![format!(
                    "{}: {} is a histogram; use its _bucket, _sum or _count series",
                    u.source, u.name
                )];
            }
            Some(family) => (family, false),
            None => {
                let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                    let base = u.name.strip_suffix(suffix)?;
                    let family = self.0.get(base).filter(|f| f.kind == "histogram")?;
                    Some((family, *suffix == "_bucket"))
                });
                match histogram {
                    Some(found) => found,
                    None => return vec![format!("{}: {} is not exported", u.source, u.name)],
                }
            }
        };
        let mut problems = Vec::new();
        let labels = u
            .grouped_by
            .iter()
            .chain(u.matchers.iter().map(|(label, _, _)| label));
        for label in labels {
            let known = TARGET_LABELS.contains(&label.as_str())
                || (label == "le" && bucket)
                || family.labels.contains_key(label);
            if !known {
                problems.push(format!(
                    "{}: {} has no label {label} (it has {:?})",
                    u.source,
                    u.name,
                    family.labels.keys().collect::<Vec<_>>()
                ));
            }
        }
        for (label, op, value) in &u.matchers {
            let Some(seen) = family.labels.get(label) else {
                continue; // a target label, `le`, or reported above
            };
            // Grafana variables, and regexes that are more than a list of words, are not checked.
            let alternatives: Vec<&str> = match op.as_str() {
                "=" if !value.contains('$') => vec![value.as_str()],
                "=~" if value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'|') =>
                {
                    value.split('|').collect()
                }
                _ => Vec::new(),
            };
            for alternative in alternatives {
                if !seen.contains(alternative) {
                    problems.push(format!(
                        "{}: no exported {} series has {label}=\"{alternative}\" (seen: {seen:?})",
                        u.source, u.name
                    ));
                }
            }
        }
        problems
    }
}

/// A running app with traffic enough that every labelled family the artefacts use has series
/// with the label values they match on: 2xx and 5xx (an upstream 503 and a refused connect),
/// auth failures, oauth2_refresh_token methods whose token endpoint succeeds, fails and refuses
/// (token cache hit and miss, every refresh outcome), a client cut off mid-head, and one
/// disconnected and one errored connected account (written to the store before start: the admin
/// API cannot create accounts, and the startup snapshot exports the gauge).
async fn metrics_after_traffic() -> String {
    let db = TestDb::new().await;
    let store = db.store().await;
    for (slug, status) in [("ops-gone", "disconnected"), ("ops-broken", "error")] {
        managed_target(&store, slug).await;
        let updated = db_execute(
            &db.url,
            "UPDATE connected_accounts SET status = $1 WHERE email = $2",
            vec![status.into(), format!("{slug}@example.com").into()],
        )
        .await;
        assert_eq!(updated, 1, "{slug}");
    }
    drop(store);
    let app = spawn_configured_on(db, |config| {
        config.proxy.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let issuer = FakeUpstream::start().await;

    let plain = app
        .agent_for("ops-plain", &upstream.url("/base"), None)
        .await;
    assert_eq!(
        app.get("/gateway/ops-plain/ok", &plain.token).await.status,
        200
    );
    let failing = app.get("/gateway/ops-plain/status/503", &plain.token).await;
    assert_eq!(failing.status, 503, "{}", failing.text);
    let down = app
        .agent_for("ops-down", &format!("http://{}", closed_port()), None)
        .await;
    let refused = app.get("/gateway/ops-down/ok", &down.token).await;
    assert_eq!(refused.status, 502, "{}", refused.text);

    let missing = app
        .call(reqwest::Method::GET, "/gateway/ops-plain/ok", None)
        .await;
    assert_eq!(missing.status, 401);
    let unknown = app
        .get("/gateway/ops-plain/ok", &format!("sg_{}", "A".repeat(43)))
        .await;
    assert_eq!(unknown.status, 401);

    for (slug, token_path, status) in [
        ("ops-oauth", "/token", 200),
        ("ops-oauth-refused", "/oauth-error/invalid_grant", 503),
        ("ops-oauth-flaky", "/status/500", 503),
    ] {
        let credential = json!({
            "client_id": "cid",
            "client_secret": "client-secret",
            "refresh_token": "refresh",
            "token_url": issuer.url(token_path),
        });
        let agent = app
            .agent_for(
                slug,
                &upstream.url("/base"),
                Some(("oauth2_refresh_token", credential)),
            )
            .await;
        // Twice: a cache miss that refreshes, then a hit (or another attempt).
        for _ in 0..2 {
            let path = format!("/gateway/{slug}/me");
            let reply = app.get(&path, &agent.token).await;
            assert_eq!(reply.status, status, "{path}: {}", reply.text);
        }
    }

    // A token over its rate limit: 429s counted by target. Five requests at 1 per minute refuse
    // at least three, even across a minute boundary.
    let limited = app
        .agent_for("ops-limited", &upstream.url("/base"), None)
        .await;
    app.api()
        .patch(
            &format!("/api/tokens/{}", limited.token_id),
            json!({"rate_limit": 1}),
        )
        .await
        .expect(200);
    let mut refused = 0;
    for _ in 0..5 {
        if app
            .get("/gateway/ops-limited/ok", &limited.token)
            .await
            .status
            == 429
        {
            refused += 1;
        }
    }
    assert!(refused >= 3, "{refused} of 5 refused at 1 per minute");

    // Webhook deliveries: one endpoint that accepts (delivered), one that answers 500 (retry).
    for path in ["/hook-ok", "/status/500"] {
        app.api()
            .post(
                "/api/webhooks",
                json!({"url": upstream.url(path), "events": ["token.revoked"]}),
            )
            .await
            .expect(201);
    }
    app.api()
        .post_empty(&format!("/api/tokens/{}/revoke", limited.token_id))
        .await
        .expect(200);
    let (attempted, _) = until(
        Duration::from_secs(10),
        || app.metrics_text(),
        |text| {
            ["delivered", "retry"].iter().all(|outcome| {
                metric(
                    text,
                    "gatehouse_webhook_deliveries_total",
                    &[("outcome", outcome)],
                )
                .is_some()
            })
        },
    )
    .await;
    assert!(
        attempted,
        "both webhook deliveries were attempted within 10 s"
    );

    // Half a request head, then silence: closed after header_read_timeout.
    let mut slow = tokio::net::TcpStream::connect(app.running().proxy_addr)
        .await
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let (cut_off, _) = until(
        Duration::from_secs(6),
        || app.metrics_text(),
        |text| {
            metric(
                text,
                "gatehouse_client_timeouts_total",
                &[("phase", "header")],
            )
            .is_some()
        },
    )
    .await;
    assert!(cut_off, "the slow client was not counted within 6 s");
    drop(slow);

    let text = app.settled_metrics_text().await;
    app.stop().await;
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_label_and_value_the_artefacts_use_is_exported() {
    let uses = artefact_uses();
    let exposition = Exposition::parse(&metrics_after_traffic().await);
    let problems: Vec<String> = uses.iter().flat_map(|u| exposition.problems(u)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The scan itself: it sees through strings, brackets and both `by` positions, so the test
/// above can fail for the right reasons.
#[test]
fn the_promql_scan_finds_metrics_labels_and_values() {
    let uses = scan(
        "example",
        r#"sum by (job, target) (rate(gatehouse_requests_total{status="5xx", target=~"a|b"}[5m])) / sum(rate(gatehouse_other_total{x!="by (y)"}[$__rate_interval])) by (z) > 0 unless gatehouse_plain"#,
    );
    let summary: Vec<(String, Vec<String>, Vec<Matcher>)> = uses
        .into_iter()
        .map(|u| (u.name, u.grouped_by.into_iter().collect(), u.matchers))
        .collect();
    let s = |v: &str| v.to_owned();
    assert_eq!(
        summary,
        vec![
            (
                s("gatehouse_requests_total"),
                vec![s("job"), s("target")],
                vec![
                    (s("status"), s("="), s("5xx")),
                    (s("target"), s("=~"), s("a|b"))
                ]
            ),
            (
                s("gatehouse_other_total"),
                vec![s("z")],
                vec![(s("x"), s("!="), s("by (y)"))]
            ),
            (s("gatehouse_plain"), vec![], vec![]),
        ]
    );
    let exposition = Exposition::parse(
        "# HELP gatehouse_requests_total x\n# TYPE gatehouse_requests_total counter\n\
         gatehouse_requests_total{status=\"2xx\",target=\"a\"} 1\n\
         # TYPE gatehouse_d histogram\ngatehouse_d_bucket{le=\"1\"} 1\ngatehouse_d_sum 1\ngatehouse_d_count 1\n",
    );
    let problems = |expr: &str| -> Vec<String> {
        scan("e", expr)
            .iter()
            .flat_map(|u| exposition.problems(u))
            .collect()
    };
    assert!(problems(r#"sum by (le) (rate(gatehouse_d_bucket[5m]))"#).is_empty());
    assert!(problems(r#"sum by (target) (gatehouse_requests_total{status="2xx"})"#).is_empty());
    for broken in [
        "gatehouse_renamed_total",
        "gatehouse_d",
        "sum by (le) (gatehouse_d_count)",
        "sum by (provider) (gatehouse_requests_total)",
        r#"gatehouse_requests_total{status="5xx"}"#,
        r#"gatehouse_requests_total{target=~"a|c"}"#,
    ] {
        assert_eq!(
            problems(broken).len(),
            1,
            "{broken}: {:?}",
            problems(broken)
        );
    }
}
