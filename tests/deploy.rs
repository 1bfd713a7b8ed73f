//! What ships under `deploy/`: the Prometheus alert rules pass `promtool check rules`, and
//! every metric the rules and the Grafana dashboard query is one the worker exposes (so a
//! renamed metric cannot silently blank a panel or an alert).

use std::collections::BTreeSet;
mod common;

use std::path::{Path, PathBuf};

use common::promtool;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `gochat_*` names in a PromQL expression, without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("gochat_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        i = end;
    }
    out
}

fn exposed() -> BTreeSet<String> {
    gochat::metrics::Metrics::new(&gochat::workflow::Registry::builtin().names())
        .expect("metrics")
        .family_names()
        .into_iter()
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_query_exposed_metrics() {
    let rules = root().join("deploy/prometheus/alerts.yml");
    let out = promtool()
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&rules).expect("read")).expect("YAML");
    let exposed = exposed();
    let mut alerts = BTreeSet::new();
    for rule in doc["groups"][0]["rules"].as_array().expect("rules") {
        alerts.insert(rule["alert"].as_str().expect("alert name").to_owned());
        for name in metric_names(rule["expr"].as_str().expect("expr")) {
            assert!(
                exposed.contains(&name),
                "alert {} queries {name}, which the worker does not expose",
                rule["alert"]
            );
        }
    }
    for needed in [
        "GochatDeadLettersGrowing",
        "GochatOutboxBacklogGrowing",
        "GochatTimerFiringDelayHigh",
        "GochatBrokerDisconnected",
    ] {
        assert!(alerts.contains(needed), "missing alert {needed}");
    }
}

#[test]
fn every_dashboard_panel_queries_exposed_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/gochat-worker.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON");
    let exposed = exposed();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut queried = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            for name in metric_names(t["expr"].as_str().expect("expr")) {
                assert!(
                    exposed.contains(&name),
                    "panel {} queries {name}, which the worker does not expose",
                    p["title"]
                );
                queried.insert(name);
            }
        }
    }
    // Every metric the worker exposes has a panel.
    let unshown: Vec<&String> = exposed.difference(&queried).collect();
    assert!(unshown.is_empty(), "metrics without a panel: {unshown:?}");
}

#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let m = gochat::metrics::Metrics::new(&gochat::workflow::Registry::builtin().names())
        .expect("metrics");
    m.jobs.with_label_values(&["thread-update", "acked"]).inc();
    m.job_duration
        .with_label_values(&["thread-update"])
        .observe(0.012);
    m.step_duration
        .with_label_values(&["load_thread"])
        .observe(0.001);
    m.timer_firing_delay.observe(0.3);
    let text = m.render();
    if let Err(e) = common::promtool_check_metrics(&text) {
        panic!("{e}\n{text}");
    }
}
