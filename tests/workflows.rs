//! The workflow loader: the shipped workflows load, every kind of mistake is refused with its
//! file, line, column and hint, the generated action reference is current, and the job
//! schemas accept their examples and refuse the invalid ones.

use std::path::{Path, PathBuf};

use gochat::workflow::load::parse;
use gochat::workflow::{Registry, Workflow, WorkflowSet};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The single problem found in `yaml` (as `customer-upsert.yaml` unless `file` says
/// otherwise), rendered as `gochat check` prints it.
fn problem_in(file: &str, yaml: &str) -> String {
    let problems = match parse(Path::new(file), yaml, &Registry::builtin()) {
        Ok(_) => panic!("{file} was accepted:\n{yaml}"),
        Err(p) => p,
    };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    problems[0].to_string()
}

/// Every problem found, rendered.
fn problems_in(file: &str, yaml: &str) -> Vec<String> {
    match parse(Path::new(file), yaml, &Registry::builtin()) {
        Ok(_) => panic!("{file} was accepted:\n{yaml}"),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_shipped_workflows_load() {
    let set = WorkflowSet::load(&root().join("workflows")).expect("shipped workflows are valid");
    assert!(set.kinds().contains(&"customer-upsert"));
    assert!(set.kinds().contains(&"thread-update"));
}

/// Each step's name, whether it reads the thread, and whether its condition does.
fn thread_reads(wf: &Workflow) -> Vec<(&str, bool, bool)> {
    wf.steps
        .iter()
        .map(|s| (s.name.as_str(), s.reads_thread, s.condition_reads_thread()))
        .collect()
}

/// After `send_mail` the thread may have changed (its lock ended with a midway commit); the
/// engine reads it again only before a step that reads it. Which steps do is worked out at
/// load time from the action's declaration, the condition and the fact parameters.
#[test]
fn the_steps_that_read_the_thread_are_known_at_load_time() {
    let set = WorkflowSet::load(&root().join("workflows")).expect("shipped workflows are valid");
    let outbound = set.get("outbound-message").expect("outbound-message");
    // (step, reads the thread, its condition does): the ladder's condition reads only
    // `mail.*`, so an acknowledgement skips it without the thread being read again.
    assert_eq!(
        thread_reads(outbound),
        [
            ("load", false, false),
            ("compose", true, false),
            ("send", false, false),
            ("announce-sent", false, false),
            ("announce-reminder", false, false),
            ("start-ladder", true, false),
            ("announce-status", true, false),
            ("announce-failed", false, false),
        ]
    );

    // A condition or an event naming a fact that can change reads the thread;
    // `thread.id` (the event's default subject) cannot change, so it does not.
    let yaml = r#"
kind: outbound-message
steps:
  - { name: load, action: load_thread }
  - { name: compose, action: compose_message }
  - { name: send, action: send_mail }
  - name: by-id
    action: emit_event
    with: { name: a, subject: thread.id, include: [mail.id, thread.id] }
  - name: by-status
    when: { fact: thread.status, equals: waiting }
    action: emit_event
    with: { name: b }
  - name: nested
    when: { all: [mail.sent, { not: { fact: thread.assignee, exists: false } }] }
    action: emit_event
    with: { name: c }
  - name: includes
    action: emit_event
    with: { name: d, include: [mail.id, thread.lifecycle_step] }
"#;
    let wf = parse(
        Path::new("outbound-message.yaml"),
        yaml,
        &Registry::builtin(),
    )
    .expect("valid");
    assert_eq!(
        thread_reads(&wf),
        [
            ("load", false, false),
            ("compose", true, false),
            ("send", false, false),
            ("by-id", false, false),
            ("by-status", true, true),
            ("nested", true, true),
            ("includes", true, false),
        ]
    );
}

#[test]
fn unknown_action_is_located_with_a_suggestion() {
    let p = problem_in(
        "customer-upsert.yaml",
        "kind: customer-upsert\nsteps:\n  - name: upsert\n    action: upsert_custmer\n",
    );
    assert!(
        p.starts_with("customer-upsert.yaml:4:13: step `upsert`: unknown action `upsert_custmer`"),
        "{p}"
    );
    assert!(p.contains("did you mean `upsert_customer`?"), "{p}");
}

#[test]
fn unknown_parameter_is_located_and_lists_the_known_ones() {
    let ps = problems_in(
        "customer-upsert.yaml",
        "kind: customer-upsert\nsteps:\n  - name: upsert\n    action: upsert_customer\n  - name: tell\n    action: emit_event\n    with:\n      name: customer.created\n      subjekt: customer.id\n",
    );
    let p = &ps[0];
    assert!(
        p.starts_with(
            "customer-upsert.yaml:9:7: step `tell`: action `emit_event` has no parameter `subjekt`"
        ),
        "{p}"
    );
    assert!(p.contains("did you mean `subject`?"), "{p}");
    // The misspelt parameter leaves `subject` at its default, which does not fit here.
    assert!(
        ps[1].contains("parameter `subject` defaults to `thread.id`"),
        "{ps:?}"
    );
}

#[test]
fn wrong_parameter_type_says_what_was_expected() {
    let p = problem_in(
        "customer-upsert.yaml",
        "kind: customer-upsert\nsteps:\n  - name: upsert\n    action: upsert_customer\n  - name: tell\n    action: emit_event\n    with:\n      name: [customer.created]\n      subject: customer.id\n",
    );
    assert!(
        p.starts_with(
            "customer-upsert.yaml:8:13: step `tell`: parameter `name`: expected string, found list"
        ),
        "{p}"
    );
}

#[test]
fn missing_required_parameter_is_named() {
    let p = problem_in(
        "customer-upsert.yaml",
        "kind: customer-upsert\nsteps:\n  - name: upsert\n    action: upsert_customer\n  - name: done\n    action: stop\n",
    );
    assert!(
        p.starts_with(
            "customer-upsert.yaml:6:13: step `done`: action `stop` needs parameter `reason`"
        ),
        "{p}"
    );
}

#[test]
fn a_condition_on_a_fact_no_earlier_step_provides_is_refused() {
    // `customer.created` is written by `upsert`, which comes after the condition reading it.
    let p = problem_in(
        "customer-upsert.yaml",
        "kind: customer-upsert\nsteps:\n  - name: tell\n    when: customer.created\n    action: emit_event\n    with: { name: x, subject: job.external_id }\n  - name: upsert\n    action: upsert_customer\n",
    );
    assert!(p.starts_with("customer-upsert.yaml:4:11: step `tell`: `when`: the condition reads `customer.created`, which no earlier step provides"), "{p}");
}

#[test]
fn a_fact_parameter_must_be_available_too() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: tell\n    action: emit_event\n    with: { name: thread.updated }\n",
    );
    // `subject` defaults to `thread.id`, which nothing loaded yet.
    assert!(
        p.contains("step `tell`: parameter `subject` defaults to `thread.id`"),
        "{p}"
    );
    assert!(p.contains("hint: set `subject` explicitly"), "{p}");
}

#[test]
fn an_action_reading_an_unloaded_thread_is_refused_with_the_provider() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: assign\n    action: set_assignee\n",
    );
    assert!(
        p.starts_with(
            "thread-update.yaml:4:13: step `assign`: action `set_assignee` reads `thread.id`"
        ),
        "{p}"
    );
    assert!(
        p.contains("hint: add a step with action") && p.contains("load_thread"),
        "{p}"
    );
}

#[test]
fn duplicate_step_names_are_refused() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: load\n    action: load_thread\n  - name: load\n    action: add_comment\n",
    );
    assert!(
        p.starts_with("thread-update.yaml:5:11: duplicate step name `load` (first used on line 3)"),
        "{p}"
    );
}

#[test]
fn condition_literals_are_type_checked() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: load\n    action: load_thread\n  - name: stop-closed\n    when: { fact: thread.status, equals: shut }\n    action: stop\n    with: { reason: closed }\n",
    );
    assert!(
        p.starts_with(
            "thread-update.yaml:6:11: step `stop-closed`: `when`: `thread.status` is never \"shut\""
        ),
        "{p}"
    );
}

#[test]
fn enum_parameters_list_their_values() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: load\n    action: load_thread\n    with: { on_stale: ignore }\n",
    );
    assert!(p.starts_with("thread-update.yaml:5:23: step `load`: parameter `on_stale`: `ignore` is not one of fail, stop"), "{p}");
}

#[test]
fn cross_parameter_rules_are_checked() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: load\n    action: load_thread\n  - name: close\n    action: set_status\n",
    );
    assert!(
        p.contains("step `close`: set exactly one of `status` and `status_fact`"),
        "{p}"
    );
}

#[test]
fn syntax_errors_unknown_keys_kinds_and_misnamed_files_are_located() {
    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: [unclosed\n",
    );
    assert!(p.starts_with("thread-update.yaml:"), "{p}");
    assert!(
        !p.starts_with("thread-update.yaml:0:0"),
        "a syntax error has a position: {p}"
    );

    let p = problem_in(
        "thread-update.yaml",
        "kind: thread-update\nsteps:\n  - name: load\n    action: load_thread\n    retries: 3\n",
    );
    assert!(p.contains("retries"), "{p}");
    assert!(p.starts_with("thread-update.yaml:5:"), "{p}");

    let p = problem_in(
        "thread-updates.yaml",
        "kind: thread-updates\nsteps:\n  - name: s\n    action: stop\n    with: { reason: x }\n",
    );
    assert!(
        p.starts_with("thread-updates.yaml:1:7: unknown job kind `thread-updates`"),
        "{p}"
    );
    assert!(p.contains("did you mean `thread-update`?"), "{p}");

    let p = problem_in(
        "customer.yaml",
        "kind: thread-update\nsteps:\n  - name: s\n    action: stop\n    with: { reason: x }\n",
    );
    assert!(
        p.contains("the file is named `customer` but declares kind `thread-update`"),
        "{p}"
    );
}

#[test]
fn every_problem_in_a_folder_is_reported_and_the_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/thread-update.yaml"),
        "kind: thread-update\nsteps:\n  - name: a\n    action: nope\n  - name: b\n    action: nada\n",
    )
    .unwrap();
    let err = WorkflowSet::load(dir.path()).err().expect("invalid");
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(err.to_string().contains("thread-update.yaml:4:13"), "{err}");
    assert!(err.to_string().contains("thread-update.yaml:6:13"), "{err}");

    let missing = WorkflowSet::load(&dir.path().join("absent"))
        .err()
        .expect("no folder");
    assert!(
        missing
            .to_string()
            .contains("cannot read the job workflows folder"),
        "{missing}"
    );
}

#[test]
fn the_action_reference_in_docs_is_generated_from_the_code() {
    let generated = gochat::workflow::docs::markdown(&Registry::builtin());
    let committed = std::fs::read_to_string(root().join("docs/workflow-actions.md")).unwrap();
    assert!(
        generated == committed,
        "docs/workflow-actions.md is stale: run `cargo run -- workflows actions > docs/workflow-actions.md`"
    );
}

#[test]
fn schema_examples_are_accepted_and_invalid_ones_refused() {
    let examples = root().join("schemas/examples");
    let mut checked = 0;
    for kind in gochat::contract::JOB_KINDS {
        for entry in std::fs::read_dir(examples.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            let payload: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            gochat::jobs::check_payload(kind, &payload)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 12);
    let mut refused = 0;
    for entry in std::fs::read_dir(examples.join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let kind = gochat::contract::JOB_KINDS
            .iter()
            .find(|k| name.starts_with(*k))
            .expect("file named <kind>-<what>");
        let payload: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let err = gochat::jobs::check_payload(kind, &payload).expect_err(&name);
        assert!(!err.is_transient());
        refused += 1;
    }
    assert!(
        refused >= gochat::contract::JOB_KINDS.len(),
        "at least one invalid example per kind"
    );
}
