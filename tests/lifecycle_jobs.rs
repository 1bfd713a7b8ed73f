//! The lifecycle jobs through the real worker, broker and both databases, on a manual
//! clock: the nine-day reminder ladder runs in moments; a reply cancels what was scheduled;
//! illegal and stale transitions are dead-lettered unapplied; with two workers and a
//! redelivered job, each reminder is written once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, eventually, start_worker};
use common::smtp::SmtpSink;
use common::{Backend, TestDb, t0};
use gochat::clock::ManualClock;
use gochat::config::Config;
use gochat::store::threads;
use gochat::store::timers;
use gochat_entities::threads::ThreadStatus;
use gochat_entities::timers::TimerState;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const DAY: chrono::Duration = chrono::Duration::days(1);

fn config(db: &TestDb, broker: &TestBroker, sink: &SmtpSink) -> Config {
    let mut c = common::broker::worker_config(db, broker);
    c.amqp.retry_delays = vec![Duration::from_millis(200)];
    c.scheduler.interval = Duration::from_millis(50);
    // The reminders are delivered too (tests/outbound.rs checks the mail itself).
    c.smtp.url = gochat::config::SecretUrl::new(sink.url());
    c
}

async fn thread_with_contact(store: &gochat::store::Store, lifecycle: &str) -> (Uuid, Uuid) {
    common::fixtures::thread_with_contact(store, lifecycle, "ada@acme.example", t0()).await
}

fn event(thread: Uuid, name: &str) -> serde_json::Value {
    json!({"schema": "status-transition/v1", "thread_id": thread,
           "actor": {"kind": "agent", "id": "a1", "name": "Alice"}, "event": name})
}

async fn position(store: &gochat::store::Store, id: Uuid) -> (ThreadStatus, Option<i32>) {
    let t = threads::get(store.conn(), id).await.expect("thread");
    (t.status, t.lifecycle_step)
}

async fn wait_position(store: &gochat::store::Store, id: Uuid, want: (ThreadStatus, Option<i32>)) {
    eventually(WAIT, &format!("thread at {want:?}"), || async {
        (position(store, id).await == want).then_some(())
    })
    .await;
}

/// The reminder jobs written to the outbox so far: (message id, payload), oldest first.
async fn reminders(store: &gochat::store::Store) -> Vec<(String, serde_json::Value)> {
    use gochat_entities::outbox;
    use sea_orm::QueryOrder;
    outbox::Entity::find()
        .filter(outbox::Column::RoutingKey.eq("outbound-message"))
        .order_by_asc(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::Id)
        .all(store.conn())
        .await
        .expect("outbox")
        .into_iter()
        .map(|r| {
            (
                r.message_id,
                serde_json::from_str(&r.payload).expect("JSON"),
            )
        })
        .collect()
}

async fn wait_reminders(
    store: &gochat::store::Store,
    n: usize,
) -> Vec<(String, serde_json::Value)> {
    eventually(
        WAIT,
        &format!("{n} reminder jobs in the outbox"),
        || async {
            let r = reminders(store).await;
            (r.len() >= n).then_some(r)
        },
    )
    .await
}

async fn timer_states(store: &gochat::store::Store, thread: Uuid) -> Vec<(i32, TimerState)> {
    use sea_orm::QueryOrder;
    gochat_entities::timers::Entity::find()
        .filter(gochat_entities::timers::Column::ThreadId.eq(thread))
        .order_by_asc(gochat_entities::timers::Column::CreatedAt)
        .order_by_asc(gochat_entities::timers::Column::Step)
        .all(store.conn())
        .await
        .expect("timers")
        .into_iter()
        .map(|t| (t.step, t.state))
        .collect()
}

both_backends!(
    the_three_step_nine_day_ladder_runs_on_a_manual_clock,
    |db: TestDb| async move {
        let mut broker = TestBroker::new().await;
        let store = db.store().await;
        let clock = ManualClock::new(t0());
        let sink = SmtpSink::start_async().await;
        let worker = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;
        let tap = broker.tap_events().await;
        let (thread, contact) = thread_with_contact(&store, "default").await;

        broker
            .publish_json(
                "status-transition",
                "reply-1",
                &event(thread, "agent_replied"),
            )
            .await;
        wait_position(&store, thread, (ThreadStatus::Reminder, Some(1))).await;
        let changed = broker.get(&tap, WAIT).await.expect("status event");
        assert_eq!(changed.routing_key, "thread.status_changed");
        let data = &changed.json()["data"];
        assert_eq!(data["transition.from"], "open");
        assert_eq!(data["thread.status"], "reminder");
        assert_eq!(data["transition.due_at"], "2026-11-26T10:00:00+00:00");
        let pending = timers::pending_for_thread(store.conn(), thread)
            .await
            .expect("timers");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].due_at, t0() + DAY * 3);

        // Not yet due: nothing is sent.
        clock.advance(DAY * 3 - chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            reminders(&store).await.is_empty(),
            "a reminder went out before it was due"
        );

        // Day 3: reminder 1, the thread stays in `reminder` at step 2.
        clock.advance(chrono::Duration::seconds(1));
        let r = wait_reminders(&store, 1).await;
        let (r1_id, job) = &r[0];
        assert_eq!(job["schema"], "outbound-message/v1");
        assert_eq!(job["kind"], "reminder");
        assert_eq!(job["template"], "reminder-1");
        assert_eq!(job["to"], json!([contact]));
        assert_eq!(job["thread_id"], json!(thread));
        assert_eq!(r1_id, &format!("reminder-{}", pending[0].id));
        wait_position(&store, thread, (ThreadStatus::Reminder, Some(2))).await;

        // Day 6: reminder 2, waiting.
        clock.advance(DAY * 3);
        let r = wait_reminders(&store, 2).await;
        assert_eq!(r[1].1["template"], "reminder-2");
        wait_position(&store, thread, (ThreadStatus::Waiting, Some(3))).await;

        // Day 9: silence, open again; the ladder is over.
        clock.advance(DAY * 3);
        wait_position(&store, thread, (ThreadStatus::Open, None)).await;
        clock.advance(DAY * 30);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(reminders(&store).await.len(), 2, "a third reminder");
        eventually(WAIT, "both reminders delivered", || async {
            (sink.received().len() == 2).then_some(())
        })
        .await;
        assert_eq!(
            timer_states(&store, thread).await,
            vec![
                (1, TimerState::Fired),
                (2, TimerState::Fired),
                (3, TimerState::Fired)
            ]
        );
        // Every status change is audited with who and why.
        let feed = gochat::store::inbox::thread_view(store.conn(), thread)
            .await
            .expect("view")
            .expect("thread")
            .feed;
        let changes: Vec<String> = feed
            .iter()
            .filter_map(|i| {
                let v = serde_json::to_value(i).ok()?;
                (v["type"] == "event" && v["kind"] == "status")
                    .then(|| v["after"]["status"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        assert_eq!(changes, vec!["reminder", "waiting", "open"]);
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

both_backends!(
    a_customer_reply_or_an_agents_status_change_cancels_the_ladder,
    |db: TestDb| async move {
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let clock = ManualClock::new(t0());
        let sink = SmtpSink::start_async().await;
        let worker = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;
        let (thread, _) = thread_with_contact(&store, "default").await;

        broker
            .publish_json(
                "status-transition",
                "reply-1",
                &event(thread, "agent_replied"),
            )
            .await;
        wait_position(&store, thread, (ThreadStatus::Reminder, Some(1))).await;
        clock.advance(DAY * 2);
        broker
            .publish_json(
                "status-transition",
                "customer-1",
                &event(thread, "customer_replied"),
            )
            .await;
        wait_position(&store, thread, (ThreadStatus::Open, None)).await;
        clock.advance(DAY * 20);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            reminders(&store).await.is_empty(),
            "a reminder after the customer replied"
        );
        assert_eq!(
            timer_states(&store, thread).await,
            vec![(1, TimerState::Cancelled)]
        );

        // An agent setting the status mid-ladder cancels it too.
        let (other, _) = thread_with_contact(&store, "default").await;
        broker
            .publish_json(
                "status-transition",
                "reply-2",
                &event(other, "agent_replied"),
            )
            .await;
        wait_position(&store, other, (ThreadStatus::Reminder, Some(1))).await;
        clock.advance(DAY);
        broker
            .publish_json(
                "status-transition",
                "park",
                &json!({"schema": "status-transition/v1", "thread_id": other,
                        "actor": {"kind": "agent", "id": "a1"}, "to": "waiting"}),
            )
            .await;
        wait_position(&store, other, (ThreadStatus::Waiting, None)).await;
        clock.advance(DAY * 20);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            reminders(&store).await.is_empty(),
            "a reminder after an agent changed the status"
        );
        assert_eq!(
            timer_states(&store, other).await,
            vec![(1, TimerState::Cancelled)]
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_and_stale_transitions_are_dead_lettered_unapplied() {
    let db = TestDb::new(Backend::Sqlite).await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let clock = ManualClock::new(t0());
    let sink = SmtpSink::start_async().await;
    let worker = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;
    let (thread, _) = thread_with_contact(&store, "default").await;
    let to = |status: &str, version: Option<i64>| {
        let mut j = json!({"schema": "status-transition/v1", "thread_id": thread,
                           "actor": {"kind": "agent", "id": "a1"}, "to": status, "reason": "done"});
        if let Some(v) = version {
            j["expected_version"] = json!(v);
        }
        j
    };
    let version = threads::get(store.conn(), thread)
        .await
        .expect("thread")
        .version;
    broker
        .publish_json("status-transition", "close", &to("closed", Some(version)))
        .await;
    wait_position(&store, thread, (ThreadStatus::Closed, None)).await;

    // closed → waiting is not in the default lifecycle's transitions.
    broker
        .publish_json("status-transition", "illegal", &to("waiting", None))
        .await;
    let reason = broker.dead_letter_reason("illegal", WAIT).await;
    assert!(
        reason.contains("illegal transition") && reason.contains("closed → waiting"),
        "{reason}"
    );

    // A stale expected_version (the close bumped it): never applied.
    broker
        .publish_json("status-transition", "stale", &to("open", Some(version)))
        .await;
    let reason = broker.dead_letter_reason("stale", WAIT).await;
    assert!(reason.contains("the job expected"), "{reason}");
    assert_eq!(position(&store, thread).await, (ThreadStatus::Closed, None));
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_redelivered_job_still_send_each_reminder_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let clock = ManualClock::new(t0());
    let sink = SmtpSink::start_async().await;
    let first = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;
    let second = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;

    // Many threads at once, so both schedulers race for the same due timers.
    let mut threads_ = Vec::new();
    for i in 0..20 {
        let (t, _) = thread_with_contact(&store, "default").await;
        broker
            .publish_json(
                "status-transition",
                &format!("reply-{i}"),
                &event(t, "agent_replied"),
            )
            .await;
        threads_.push(t);
    }
    for t in &threads_ {
        wait_position(&store, *t, (ThreadStatus::Reminder, Some(1))).await;
    }
    let fired: Vec<_> = {
        let mut v = Vec::new();
        for t in &threads_ {
            v.extend(
                timers::pending_for_thread(store.conn(), *t)
                    .await
                    .expect("timers"),
            );
        }
        v
    };
    clock.advance(DAY * 3);
    for t in &threads_ {
        wait_position(&store, *t, (ThreadStatus::Reminder, Some(2))).await;
    }
    // One delayed-reminder job per timer: redeliver each (a publisher retry, a requeue),
    // under a new message id so idempotency alone would not catch it.
    for timer in &fired {
        broker
            .publish_json(
                "delayed-reminder",
                &format!("again-{}", timer.id),
                &json!({"schema": "delayed-reminder/v1", "timer_id": timer.id,
                        "thread_id": timer.thread_id, "step": 1}),
            )
            .await;
    }
    eventually(WAIT, "the redeliveries processed", || async {
        let mut n = 0;
        for timer in &fired {
            n += usize::from(
                gochat::store::processed::is_processed(
                    store.conn(),
                    &format!("again-{}", timer.id),
                )
                .await
                .expect("processed"),
            );
        }
        (n == fired.len()).then_some(())
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for (_, job) in reminders(&store).await {
        assert_eq!(job["template"], "reminder-1");
        assert!(
            seen.insert(job["thread_id"].as_str().unwrap_or_default().to_owned()),
            "thread {} reminded twice",
            job["thread_id"]
        );
    }
    assert_eq!(seen.len(), threads_.len(), "every thread reminded once");
    for t in &threads_ {
        assert_eq!(
            position(&store, *t).await,
            (ThreadStatus::Reminder, Some(2))
        );
        let states = timer_states(&store, *t).await;
        assert_eq!(
            states,
            vec![(1, TimerState::Fired), (2, TimerState::Pending)],
            "the redelivery left the fired timer alone"
        );
    }
    assert_eq!(
        broker.depth(&broker.names.dead_letters()).await,
        0,
        "stale redeliveries are acknowledged, not dead-lettered"
    );
    first.stop().await;
    second.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}
