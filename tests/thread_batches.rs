//! Status changes and thread updates in batches: a batch runs step by step across its jobs
//! (`load_thread`, `transition` and `add_comment` once for all of them, a statement per
//! table), and each job must end exactly as it does run alone after the ones before it.
//! The same jobs run both ways on twin threads of one database (both backends), and each
//! thread's state is compared with its twin's: status, ladder step, version, card, audit,
//! comments, tags, timers and the events announced.

mod common;

use std::collections::HashMap;

use common::{TestDb, t0};
use gochat::config::Config;
use gochat::jobs::{Job, JobError};
use gochat::queue::{Handled, Handler};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

const AGENT: &str = r#"{"kind": "agent", "id": "a1", "name": "Alice"}"#;

/// A job on thread `label` (its id filled in per run) with `payload`'s other fields.
struct Spec {
    id: &'static str,
    thread: &'static str,
    payload: Value,
}

fn spec(id: &'static str, thread: &'static str, payload: Value) -> Spec {
    Spec {
        id,
        thread,
        payload,
    }
}

/// The jobs of `specs` on `threads` (`?` names a thread nobody has), for one run.
fn jobs(kind: &str, run: &str, specs: &[Spec], threads: &HashMap<&str, Uuid>) -> Vec<Job> {
    let agent: Value = serde_json::from_str(AGENT).expect("actor");
    specs
        .iter()
        .map(|s| {
            let mut payload = s.payload.clone();
            payload["schema"] = json!(format!("{kind}/v1"));
            payload["actor"] = agent.clone();
            let thread = threads.get(s.thread).copied().unwrap_or_else(Uuid::now_v7);
            payload["thread_id"] = json!(thread);
            Job {
                kind: kind.into(),
                message_id: format!("{run}-{}", s.id),
                payload,
                attempt: 1,
                first_failure: None,
            }
        })
        .collect()
}

/// `text` with each thread id replaced by its label, so the twins' texts compare.
fn labelled(text: &str, threads: &HashMap<&str, Uuid>) -> String {
    threads.iter().fold(text.to_owned(), |t, (label, id)| {
        t.replace(&id.to_string(), label)
    })
}

/// A job's result, its thread ids labelled; an unknown thread's id is random each run.
fn outcome(r: &Result<Handled, JobError>, threads: &HashMap<&str, Uuid>) -> String {
    let text = match r {
        Ok(h) => format!("{h:?}"),
        Err(JobError::Permanent(why)) => format!("permanent: {}", labelled(why, threads)),
        Err(JobError::Transient(why)) => format!("transient: {}", labelled(why, threads)),
    };
    match text.find("unknown thread ") {
        Some(at) => format!("{}unknown thread", &text[..at]),
        None => text,
    }
}

/// Rows of `sql` (one text column `r`, `$1` the thread's id) as strings.
async fn rows(db: &impl ConnectionTrait, sql: &str, thread: Uuid) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace("$1", "?"),
    };
    db.query_all_raw(Statement::from_sql_and_values(
        backend,
        &sql,
        [thread.into()],
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
    .iter()
    .map(|r| r.try_get::<String>("", "r").expect("r"))
    .collect()
}

/// Everything a thread's jobs leave behind, comparable between twins.
async fn thread_state(store: &gochat::store::Store, id: Uuid) -> Vec<String> {
    let db = store.conn();
    let t = gochat::store::threads::get(db, id).await.expect("thread");
    let mut out = vec![format!(
        "thread {:?} step {:?} version {} items {} assignee {:?}",
        t.status, t.lifecycle_step, t.version, t.item_count, t.assignee
    )];
    for sql in [
        "SELECT 'event ' || kind || ' ' || COALESCE(CAST(\"before\" AS TEXT), '-') || ' ' || COALESCE(CAST(\"after\" AS TEXT), '-') || ' ' || COALESCE(CAST(detail AS TEXT), '-') AS r FROM thread_events WHERE thread_id = $1 ORDER BY id",
        "SELECT 'comment ' || body AS r FROM comments WHERE thread_id = $1 ORDER BY id",
        "SELECT 'tag ' || tag AS r FROM thread_tags WHERE thread_id = $1 ORDER BY tag",
    ] {
        out.extend(rows(db, sql, id).await);
    }
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    for timer in gochat_entities::timers::Entity::find()
        .filter(gochat_entities::timers::Column::ThreadId.eq(id))
        .order_by_asc(gochat_entities::timers::Column::Id)
        .all(db)
        .await
        .expect("timers")
    {
        out.push(format!(
            "timer {:?} step {} expects {} v{} due after {}",
            timer.state,
            timer.step,
            timer.expected_status,
            timer.expected_version,
            timer.due_at - timer.created_at
        ));
    }
    // The events announced: their type and facts, but for the due time (it follows the
    // clock) and the ids.
    for row in gochat_entities::outbox::Entity::find()
        .order_by_asc(gochat_entities::outbox::Column::CreatedAt)
        .order_by_asc(gochat_entities::outbox::Column::Id)
        .all(db)
        .await
        .expect("outbox")
    {
        let event: Value = serde_json::from_str(&row.payload).expect("JSON");
        if event["subject"] != json!(id) {
            continue;
        }
        let mut data = event["data"].clone();
        if let Some(d) = data.as_object_mut() {
            d.retain(|k, _| k != "transition.due_at");
        }
        out.push(format!("announced {} {data}", row.routing_key));
    }
    out
}

/// Runs `specs` (jobs of `kind`) as one batch on threads `batch` and one job at a time on
/// their twins `alone`, and checks that each ends as its twin does. Returns the outcomes.
async fn batch_and_alone(
    handler: &gochat::workflow::handler::WorkflowHandler,
    store: &gochat::store::Store,
    kind: &str,
    specs: &[Spec],
    batch: &HashMap<&str, Uuid>,
    alone: &HashMap<&str, Uuid>,
) -> Vec<String> {
    assert!(handler.current().get(kind).expect(kind).set_based());
    let batched: Vec<String> = handler
        .handle_batch(&jobs(kind, "batch", specs, batch))
        .await
        .iter()
        .map(|r| outcome(r, batch))
        .collect();
    let mut one_by_one = Vec::new();
    for job in jobs(kind, "alone", specs, alone) {
        one_by_one.push(outcome(&handler.handle(&job).await, alone));
    }
    assert_eq!(batched, one_by_one, "{kind}: results");
    for label in batch.keys() {
        let a = thread_state(store, batch[label]).await;
        let b = thread_state(store, alone[label]).await;
        assert_eq!(
            a.iter().map(|s| labelled(s, batch)).collect::<Vec<_>>(),
            b.iter().map(|s| labelled(s, alone)).collect::<Vec<_>>(),
            "{kind}: thread {label}"
        );
    }
    batched
}

fn batches(handler: &gochat::workflow::handler::WorkflowHandler, kind: &str, outcome: &str) -> u64 {
    handler
        .services()
        .metrics
        .job_batches
        .with_label_values(&[kind, outcome])
        .get()
}

both_backends!(
    batches_of_status_changes_and_thread_updates_end_as_each_job_does_alone,
    |db: TestDb| async move {
        let store = db.store().await;
        let config = Config {
            database: db.config(),
            ..Default::default()
        };
        let handler = common::fixtures::workflow_handler(&store, config);
        let labels = ["A", "B", "C", "D", "E", "F", "G", "H", "J"];
        let mut twins: [HashMap<&str, Uuid>; 2] = Default::default();
        for (n, run) in twins.iter_mut().enumerate() {
            for label in labels {
                let address = format!("{}{n}@acme.example", label.to_lowercase());
                let (id, _) =
                    common::fixtures::thread_with_contact(&store, "default", &address, t0()).await;
                run.insert(label, id);
            }
        }
        // J starts on the ladder, a reminder pending, in both runs alike.
        for (n, run) in twins.iter().enumerate() {
            let setup = jobs(
                "status-transition",
                &format!("setup{n}"),
                &[spec("j", "J", json!({"to": "reminder"}))],
                run,
            );
            assert_eq!(handler.handle(&setup[0]).await, Ok(Handled::Applied));
        }
        let [batch, alone] = twins;
        let status = "status-transition";
        let counted = |kind: &str| {
            ["committed", "cut", "failed"].map(|outcome| batches(&handler, kind, outcome))
        };

        // One set: every job a thread of its own, none failing.
        let results = batch_and_alone(
            &handler,
            &store,
            status,
            &[
                spec("s0", "A", json!({"to": "reminder"})),
                spec("s1", "B", json!({"event": "agent_replied"})),
                spec("s2", "C", json!({"to": "closed", "reason": "solved"})),
                spec("s3", "D", json!({"to": "waiting", "expected_version": 1})),
                // Already open: nothing changes, nothing is announced.
                spec("s4", "H", json!({"to": "open"})),
                // Off the ladder: J's pending reminder is cancelled.
                spec("s5", "J", json!({"event": "customer_replied"})),
            ],
            &batch,
            &alone,
        )
        .await;
        assert!(results.iter().all(|r| r == "Applied"), "{results:?}");
        assert_eq!(counted(status), [1, 0, 0], "one batch, committed whole");
        // Right, not merely alike: what the batch did to its threads.
        let timer = |state: &str, version: i64| {
            format!("timer {state} step 1 expects reminder v{version} due after PT259200S")
        };
        let a = thread_state(&store, batch["A"]).await;
        assert_eq!(
            a[0],
            "thread Reminder step Some(1) version 2 items 0 assignee None"
        );
        assert!(a.contains(&timer("Pending", 2)), "{a:#?}");
        let b = thread_state(&store, batch["B"]).await;
        assert_eq!(
            b[0],
            "thread Reminder step Some(1) version 2 items 0 assignee None"
        );
        let c = thread_state(&store, batch["C"]).await;
        assert!(
            c.iter()
                .any(|s| s.starts_with("event status") && s.contains("solved")),
            "{c:#?}"
        );
        let h = thread_state(&store, batch["H"]).await;
        assert_eq!(
            h[0],
            "thread Open step None version 1 items 0 assignee None"
        );
        assert!(!h.iter().any(|s| s.starts_with("announced")), "{h:#?}");
        let j = thread_state(&store, batch["J"]).await;
        assert_eq!(
            j[0],
            "thread Open step None version 3 items 0 assignee None"
        );
        assert!(j.contains(&timer("Cancelled", 2)), "{j:#?}");
        assert!(!j.iter().any(|s| s.starts_with("timer Pending")), "{j:#?}");

        // A thread twice: the second job is cut off and runs after the first, from the
        // status the first left (and cancels the reminder the first armed).
        let results = batch_and_alone(
            &handler,
            &store,
            status,
            &[
                spec("s6", "E", json!({"to": "reminder"})),
                spec("s7", "F", json!({"to": "waiting"})),
                spec("s8", "E", json!({"to": "open"})),
            ],
            &batch,
            &alone,
        )
        .await;
        assert!(results.iter().all(|r| r == "Applied"), "{results:?}");
        assert_eq!(counted(status), [1, 1, 0]);
        let e = thread_state(&store, batch["E"]).await;
        assert_eq!(
            e[0],
            "thread Open step None version 3 items 0 assignee None"
        );
        assert!(e.contains(&timer("Cancelled", 2)), "{e:#?}");

        // A failing job is cut off and runs alone (and fails as it would alone); the
        // others commit.
        for (jobs, failing, want) in [
            (
                [
                    spec("s9", "G", json!({"to": "waiting"})),
                    spec("s10", "B", json!({"to": "pending"})),
                ],
                1,
                "permanent: step `move` (transition): \"pending\" is not a status",
            ),
            (
                [
                    spec("s11", "C", json!({"to": "open", "expected_version": 7})),
                    spec("s12", "D", json!({"to": "reminder"})),
                ],
                0,
                "permanent: step `load` (load_thread): thread C is at version 2, the job expected 7",
            ),
            (
                [
                    spec("s13", "?", json!({"to": "waiting"})),
                    spec("s14", "H", json!({"to": "closed"})),
                ],
                0,
                "permanent: step `load` (load_thread): unknown thread",
            ),
        ] {
            let results = batch_and_alone(&handler, &store, status, &jobs, &batch, &alone).await;
            assert!(results[failing].starts_with(want), "{results:?}");
            assert_eq!(results[1 - failing], "Applied");
        }
        assert_eq!(counted(status)[2], 0, "nothing failed as a whole");

        // Thread updates, likewise.
        let update = "thread-update";
        batch_and_alone(
            &handler,
            &store,
            update,
            &[
                spec("u0", "A", json!({"comment": "one"})),
                spec(
                    "u1",
                    "B",
                    json!({"assignee": "agent-7", "tags_add": ["vip", "billing"], "comment": "two"}),
                ),
                spec("u2", "D", json!({"tags_add": ["x"]})),
                spec("u3", "F", json!({"assignee": null, "comment": "three"})),
            ],
            &batch,
            &alone,
        )
        .await;
        assert_eq!(counted(update), [1, 0, 0], "one batch, committed whole");
        let b = thread_state(&store, batch["B"]).await;
        assert!(
            b[0].ends_with("items 1 assignee Some(\"agent-7\")"),
            "{b:#?}"
        );
        assert!(b.contains(&"tag billing".to_owned()) && b.contains(&"tag vip".to_owned()));
        assert!(b.contains(&"comment two".to_owned()), "{b:#?}");

        // A thread twice: cut there, as for status changes.
        batch_and_alone(
            &handler,
            &store,
            update,
            &[
                spec("u4", "A", json!({"comment": "four"})),
                spec("u5", "A", json!({"comment": "five", "assignee": "agent-2"})),
            ],
            &batch,
            &alone,
        )
        .await;
        assert_eq!(counted(update), [1, 1, 0]);
        let a = thread_state(&store, batch["A"]).await;
        assert!(
            a[0].ends_with("items 3 assignee Some(\"agent-2\")"),
            "{a:#?}"
        );
        assert_eq!(
            a.iter()
                .filter(|s| s.starts_with("comment"))
                .collect::<Vec<_>>(),
            ["comment one", "comment four", "comment five"]
        );
        for (jobs, failing, want) in [
            (
                [
                    spec("u6", "C", json!({"comment": "   "})),
                    spec(
                        "u7",
                        "E",
                        json!({"comment": "seven", "tags_remove": ["none"]}),
                    ),
                ],
                0,
                "permanent: step `comment` (add_comment): the comment is empty",
            ),
            (
                [
                    spec("u8", "G", json!({"comment": "eight"})),
                    spec("u9", "?", json!({"comment": "lost"})),
                ],
                1,
                "permanent: step `load` (load_thread): unknown thread",
            ),
        ] {
            let results = batch_and_alone(&handler, &store, update, &jobs, &batch, &alone).await;
            assert!(results[failing].starts_with(want), "{results:?}");
            assert_eq!(results[1 - failing], "Applied");
        }
        assert_eq!(counted(update)[2], 0, "nothing failed as a whole");
    }
);
