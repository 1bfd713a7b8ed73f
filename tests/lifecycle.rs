//! Lifecycles as data, without I/O: the shipped files load and do what the product says,
//! selectors pick the right one, the simulator's timelines (send windows included), and
//! every kind of mistake in a lifecycle file refused with its location and a hint.

mod common;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use gochat::lifecycle::load::parse;
use gochat::lifecycle::simulate::{parse_events, simulate};
use gochat::lifecycle::{Lifecycles, ThreadTraits};
use gochat::workflow::WorkflowSet;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> std::sync::Arc<Lifecycles> {
    WorkflowSet::load(&root().join("workflows"))
        .expect("shipped workflows are valid")
        .lifecycles
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// The timeline as `(at, status, action, template)` strings.
fn timeline(lifecycle: &str, start: &str, events: &str) -> Vec<(String, String, String, String)> {
    let set = shipped();
    let l = set.get(lifecycle).expect("lifecycle");
    let start = at(start);
    let events = parse_events(events, start).expect("events");
    simulate(l, start, &events)
        .expect("legal")
        .into_iter()
        .map(|e| {
            (
                e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                e.status.to_owned(),
                e.action,
                e.template.unwrap_or_default(),
            )
        })
        .collect()
}

fn row(at: &str, status: &str, action: &str, template: &str) -> (String, String, String, String) {
    (at.into(), status.into(), action.into(), template.into())
}

#[test]
fn the_default_lifecycle_is_the_products_three_step_nine_day_ladder() {
    assert_eq!(
        timeline("default", "2026-11-23T10:00:00Z", "agent_replied@0"),
        vec![
            row("2026-11-23T10:00:00Z", "open", "start", ""),
            row("2026-11-23T10:00:00Z", "reminder", "agent_replied", ""),
            row("2026-11-26T10:00:00Z", "reminder", "reminder", "reminder-1"),
            row("2026-11-29T10:00:00Z", "waiting", "reminder", "reminder-2"),
            row("2026-12-02T10:00:00Z", "open", "timer", ""),
        ]
    );
}

#[test]
fn a_customer_reply_at_any_step_reopens_and_cancels_what_was_scheduled() {
    // After reminder 1: nothing more is sent.
    assert_eq!(
        timeline(
            "default",
            "2026-11-23T10:00:00Z",
            "agent_replied@0,customer_replied@+4d"
        ),
        vec![
            row("2026-11-23T10:00:00Z", "open", "start", ""),
            row("2026-11-23T10:00:00Z", "reminder", "agent_replied", ""),
            row("2026-11-26T10:00:00Z", "reminder", "reminder", "reminder-1"),
            row("2026-11-27T10:00:00Z", "open", "customer_replied", ""),
        ]
    );
    // A new agent reply starts the ladder again from step 1, counted from then.
    let t = timeline(
        "default",
        "2026-11-23T10:00:00Z",
        "agent_replied@0,customer_replied@+1d,agent_replied@+2d",
    );
    assert_eq!(
        t[4],
        row("2026-11-28T10:00:00Z", "reminder", "reminder", "reminder-1")
    );
    // An agent closing the thread stops the ladder.
    let t = timeline(
        "default",
        "2026-11-23T10:00:00Z",
        "agent_replied@0,status:closed@+1d",
    );
    assert_eq!(
        t.last(),
        Some(&row("2026-11-24T10:00:00Z", "closed", "set_status", ""))
    );
}

#[test]
fn the_business_hours_lifecycle_waits_for_its_send_window() {
    // Friday 16:00 Berlin + 2 days = Sunday: the reminder waits for Monday 09:00 Berlin
    // (08:00 UTC); the thread closes 7 days after that.
    assert_eq!(
        timeline("business-hours", "2026-11-27T15:00:00Z", "agent_replied@0"),
        vec![
            row("2026-11-27T15:00:00Z", "open", "start", ""),
            row("2026-11-27T15:00:00Z", "reminder", "agent_replied", ""),
            row("2026-11-30T08:00:00Z", "waiting", "reminder", "reminder-1"),
            row("2026-12-07T08:00:00Z", "closed", "timer", ""),
        ]
    );
    // Inside the window it goes out exactly when due (Monday 10:00 + 2d = Wednesday 10:00).
    let t = timeline("business-hours", "2026-11-23T09:00:00Z", "agent_replied@0");
    assert_eq!(t[2].0, "2026-11-25T09:00:00Z");
}

#[test]
fn illegal_moves_are_refused_with_the_reason() {
    let set = shipped();
    let l = set.get("default").expect("default");
    let start = at("2026-11-23T10:00:00Z");
    // The default lifecycle only reopens a closed thread.
    let events = parse_events("status:closed@0,status:waiting@+1d", start).expect("events");
    let err = simulate(l, start, &events).expect_err("closed → waiting is illegal");
    assert!(
        err.0.contains("does not allow closed → waiting") && err.0.contains("to: open"),
        "{err}"
    );
    let events = parse_events("status:closed@0,agent_replied@+1d", start).expect("events");
    let err = simulate(l, start, &events).expect_err("no agent reply on a closed thread");
    assert!(err.0.contains("does not apply to a closed thread"), "{err}");
    let events = parse_events("reticulated@0", start).expect("events");
    let err = simulate(l, start, &events).expect_err("unknown event");
    assert!(err.0.contains("has no event `reticulated`"), "{err}");
    assert!(parse_events("agent_replied", start).is_err());
    assert!(parse_events("agent_replied@tomorrow", start).is_err());
}

#[test]
fn selectors_pick_the_lifecycle_and_the_default_takes_the_rest() {
    let set = shipped();
    let tags = vec!["vip".to_owned(), "b2b".to_owned()];
    let pick = |t: &ThreadTraits<'_>| set.select(t).map(|l| l.name.clone());
    assert_eq!(
        pick(&ThreadTraits {
            tags: &tags,
            ..Default::default()
        }),
        Some("business-hours".into())
    );
    assert_eq!(pick(&ThreadTraits::default()), Some("default".into()));
    assert_eq!(
        set.for_thread("removed-since").map(|l| l.name.clone()),
        Some("default".into()),
        "a thread whose lifecycle file is gone follows the default"
    );
    let l = set.get("default").expect("default");
    assert_eq!(
        l.colours
            .get(&gochat_entities::threads::ThreadStatus::Open)
            .map(String::as_str),
        Some("#d32f2f")
    );
    let attrs = [json!({"segment": "b2b"})];
    let mut sel = gochat::lifecycle::Selector::default();
    sel.customer.insert("segment".into(), json!("b2b"));
    assert!(sel.matches(&ThreadTraits {
        customer_attributes: &attrs,
        ..Default::default()
    }));
    assert!(!sel.matches(&ThreadTraits::default()));
    assert!(
        !l.closed_outbound_allowed,
        "the default refuses mail to closed threads"
    );
    assert!(
        set.get("business-hours")
            .expect("b2b")
            .closed_outbound_allowed
    );
}

const GOOD: &str = r##"name: test
default: true
statuses:
  open:     { colour: "#d32f2f" }
  waiting:  { colour: "#f9a825" }
  reminder: { colour: "#1976d2" }
  closed:   { colour: "#757575" }
transitions:
  open:     [waiting, reminder, closed]
  waiting:  [open, closed]
  reminder: [open, waiting, closed]
  closed:   [open]
events:
  agent_replied:    { to: ladder }
  customer_replied: { to: open }
ladder:
  status: reminder
  steps:
    - after: 3d
      template: reminder-1
      status: waiting
  finally:
    after: 3d
    status: open
send_window:
  cron: "* 9-16 * * Mon-Fri"
  timezone: Europe/Berlin
"##;

/// The problems found in `GOOD` with `from` replaced by `to`, rendered.
fn problems(from: &str, to: &str) -> Vec<String> {
    let text = GOOD.replace(from, to);
    assert_ne!(text, GOOD, "{from:?} is in the sample");
    problems_in(&text)
}

fn problems_in(text: &str) -> Vec<String> {
    match parse(
        Path::new("lifecycles/test.yaml"),
        text,
        &root().join("workflows/templates"),
    ) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_sample_is_valid() {
    parse(
        Path::new("lifecycles/test.yaml"),
        GOOD,
        &root().join("workflows/templates"),
    )
    .expect("valid");
}

#[test]
fn every_kind_of_mistake_is_located_with_a_hint() {
    let p = problems("template: reminder-1", "template: reminder-one");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("lifecycles/test.yaml:20:17: unknown template `reminder-one`"),
        "{p:?}"
    );
    assert!(p[0].contains("reminder-1"), "lists the known ones: {p:?}");

    let p = problems("after: 3d\n      template", "after: 0s\n      template");
    assert!(
        p[0].starts_with("lifecycles/test.yaml:19:14: ladder.steps[1].after: a step without delay"),
        "{p:?}"
    );

    let p = problems("* 9-16 * * Mon-Fri", "* 9-26 * * Mon-Fri");
    assert!(
        p[0].starts_with("lifecycles/test.yaml:26:9: send_window: bad cron expression"),
        "{p:?}"
    );

    let p = problems("Europe/Berlin", "Europe/Berln");
    assert!(
        p[0].starts_with(
            "lifecycles/test.yaml:27:13: send_window: unknown time zone \"Europe/Berln\""
        ),
        "{p:?}"
    );

    let p = problems("status: waiting", "status: wating");
    assert!(
        p[0].contains("ladder.steps[1].status: unknown status `wating`")
            && p[0].contains("did you mean `waiting`"),
        "{p:?}"
    );

    // Nothing leads to `waiting` once the ladder step holds `reminder` instead.
    let p = problems_in(
        &GOOD
            .replace("      status: waiting\n", "      status: reminder\n")
            .replace("[waiting, reminder, closed]", "[reminder, closed]")
            .replace("[open, waiting, closed]", "[open, closed]"),
    );
    let p = p
        .into_iter()
        .find(|x| x.contains("can never be reached"))
        .unwrap_or_else(|| panic!("waiting is now unreachable"));
    assert!(
        p.starts_with(
            "lifecycles/test.yaml:5:3: status `waiting` can never be reached from `open`"
        ),
        "{p}"
    );

    let p = problems("  closed:   { colour: \"#757575\" }\n", "");
    assert!(
        p.iter()
            .any(|x| x.contains("status `closed` is not listed under `statuses`")),
        "{p:?}"
    );

    let p = problems("name: test", "name: other");
    assert!(
        p[0].contains("the file is named `test` but declares lifecycle `other`"),
        "{p:?}"
    );

    let p = problems("default: true", "default: false");
    assert!(p[0].contains("no thread would follow it"), "{p:?}");

    let p = problems(
        "closed:   [open]\n",
        "closed:   [open]\nclosed_reply: reopn\n",
    );
    assert!(
        p[0].contains("closed_reply: unknown policy `reopn`"),
        "{p:?}"
    );

    let p = problems(
        "closed:   [open]\n",
        "closed:   [open]\nclosed_outbound: sometimes\n",
    );
    assert!(
        p[0].contains("closed_outbound: unknown policy `sometimes`"),
        "{p:?}"
    );

    let p = problems("colour: \"#d32f2f\"", "colour: red");
    assert!(p[0].contains("colour \"red\" is not `#rrggbb`"), "{p:?}");

    let p = problems(
        "timezone: Europe/Berlin",
        "timezone: Europe/Berlin\n  hours: 9-17",
    );
    assert!(p[0].contains("hours"), "unknown keys are refused: {p:?}");
}

#[test]
fn a_lifecycle_problem_fails_the_whole_workflow_set_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path();
    std::fs::create_dir_all(wf.join("jobs")).expect("mkdir");
    std::fs::create_dir_all(wf.join("lifecycles")).expect("mkdir");
    std::fs::write(
        wf.join("lifecycles/test.yaml"),
        GOOD.replace("      template: reminder-1\n", ""),
    )
    .expect("write");
    WorkflowSet::load(wf).expect("valid without templates when no step sends one");
    std::fs::write(wf.join("lifecycles/test.yaml"), GOOD).expect("write");
    let err = match WorkflowSet::load(wf) {
        Ok(_) => panic!("the template folder is missing, yet accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("lifecycles/test.yaml:20:17: unknown template `reminder-1`"),
        "{err}"
    );
    // Two defaults are refused.
    std::fs::write(
        wf.join("lifecycles/test.yaml"),
        GOOD.replace("      template: reminder-1\n", ""),
    )
    .expect("write");
    std::fs::write(
        wf.join("lifecycles/second.yaml"),
        GOOD.replace("      template: reminder-1\n", "")
            .replace("name: test", "name: second"),
    )
    .expect("write");
    let err = match WorkflowSet::load(wf) {
        Ok(_) => panic!("two defaults accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("2 lifecycles are marked `default: true`: second, test"),
        "{err}"
    );
}

#[test]
fn simulate_command_prints_the_timeline_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::gochat(dir.path(), "sqlite::memory:")
        .args([
            "workflows",
            "simulate",
            "default",
            "--start",
            "2026-11-23T10:00:00Z",
            "--events",
            "agent_replied@0,customer_replied@+4d",
            "--json",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v,
        json!([
            {"at": "2026-11-23T10:00:00Z", "status": "open", "action": "start", "template": null},
            {"at": "2026-11-23T10:00:00Z", "status": "reminder", "action": "agent_replied", "template": null},
            {"at": "2026-11-26T10:00:00Z", "status": "reminder", "action": "reminder", "template": "reminder-1"},
            {"at": "2026-11-27T10:00:00Z", "status": "open", "action": "customer_replied", "template": null},
        ])
    );
    let out = common::gochat(dir.path(), "sqlite::memory:")
        .args(["workflows", "simulate", "nope"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("there are: business-hours, default"),
        "{}",
        common::stderr(&out)
    );
}
