//! The outbound-message job end to end: real RabbitMQ, both databases, a real SMTP server
//! process. A reply is delivered once and starts the reminder ladder; a forbidden recipient
//! is never sent to; 4xx then success; 5xx fails the message; the server down, then up; a
//! message left `sending` by a crash is not sent again; the reminder ladder's mail goes out
//! rendered from its template; a batch of deliveries (opt-in) keeps each message at most
//! once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, eventually, start_worker};
use common::smtp::SmtpSink;
use common::{Backend, TestDb, t0};
use gochat::clock::ManualClock;
use gochat::config::Config;
use gochat_entities::messages::{self, OutboundState};
use gochat_entities::threads::ThreadStatus;
use mail_parser::MessageParser;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn config(db: &TestDb, broker: &TestBroker, sink: &SmtpSink) -> Config {
    let mut c = common::broker::worker_config(db, broker);
    c.amqp.retry_delays = vec![Duration::from_millis(300); 4];
    c.smtp.url = gochat::config::SecretUrl::new(sink.url());
    c.smtp.timeout = Duration::from_secs(5);
    c.smtp.max_attempts = 5;
    c.scheduler.interval = Duration::from_millis(50);
    c
}

fn reply(thread: Uuid, to: &str) -> serde_json::Value {
    json!({"schema": "outbound-message/v1", "thread_id": thread,
           "author": {"kind": "agent", "id": "a1", "name": "Alice"},
           "to": [to],
           "body": {"subject": "Re: Printer on fire", "text": "We replaced the toner.\n", "html": "<p>We replaced the toner.</p>"}})
}

async fn message(store: &gochat::store::Store, job: &str) -> Option<messages::Model> {
    messages::Entity::find()
        .filter(messages::Column::JobMessageId.eq(job))
        .one(store.conn())
        .await
        .expect("query")
}

async fn wait_state(
    store: &gochat::store::Store,
    job: &str,
    want: OutboundState,
) -> messages::Model {
    eventually(WAIT, &format!("message of {job} {want:?}"), || async {
        message(store, job).await.filter(|m| m.state == Some(want))
    })
    .await
}

/// What an end-to-end outbound test runs on: a real SMTP sink, the broker with an event
/// tap, a worker on a manual clock, and a thread whose customer has the contact `address`.
struct Env {
    sink: SmtpSink,
    broker: TestBroker,
    store: gochat::store::Store,
    clock: ManualClock,
    worker: gochat::worker::Worker,
    tap: String,
    thread: Uuid,
}

async fn env(db: &TestDb, address: &str) -> Env {
    let sink = SmtpSink::start_async().await;
    let mut broker = TestBroker::new().await;
    let store = db.store().await;
    let clock = ManualClock::new(t0());
    let worker = start_worker(config(db, &broker, &sink), Arc::new(clock.clone())).await;
    let tap = broker.tap_events().await;
    let (thread, _) = common::fixtures::thread_with_contact(&store, "default", address, t0()).await;
    Env {
        sink,
        broker,
        store,
        clock,
        worker,
        tap,
        thread,
    }
}

both_backends!(
    a_reply_is_delivered_once_and_starts_the_reminder_ladder,
    |db: TestDb| async move {
        let Env {
            sink,
            broker,
            store,
            clock,
            worker,
            tap,
            thread,
        } = env(&db, "ada@acme.example").await;

        // The same job twice (a publisher retry): one mail.
        broker
            .publish_json(
                "outbound-message",
                "reply-1",
                &reply(thread, "ada@acme.example"),
            )
            .await;
        broker
            .publish_json(
                "outbound-message",
                "reply-1",
                &reply(thread, "ada@acme.example"),
            )
            .await;
        let m = wait_state(&store, "reply-1", OutboundState::Sent).await;
        assert!(
            m.smtp_reply
                .as_deref()
                .is_some_and(|r| r.starts_with("250")),
            "{:?}",
            m.smtp_reply
        );
        assert_eq!(m.attempts, 1);

        let mut names = Vec::new();
        while let Some(ev) = broker.get(&tap, Duration::from_secs(2)).await {
            names.push(ev.routing_key.clone());
            if ev.routing_key == "message.sent" {
                assert_eq!(ev.json()["data"]["mail.id"], json!(m.id));
            }
        }
        assert!(names.contains(&"message.sent".to_owned()), "{names:?}");
        assert!(
            names.contains(&"thread.status_changed".to_owned()),
            "{names:?}"
        );
        let t = gochat::store::threads::get(store.conn(), thread)
            .await
            .expect("thread");
        assert_eq!(
            (t.status, t.lifecycle_step),
            (ThreadStatus::Reminder, Some(1))
        );

        let got = sink.received();
        assert_eq!(got.len(), 1, "sent once");
        let parsed = MessageParser::default().parse(&got[0].raw).expect("parses");
        assert_eq!(parsed.subject(), Some("Re: Printer on fire"));
        let from = parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default();
        assert_eq!(
            from,
            format!("support+{}@gochat.example", t.reply_token),
            "replies route back"
        );
        assert_eq!(parsed.message_id(), m.message_id_header.as_deref());
        assert_eq!(
            got[0].mail_from,
            format!("bounces+{}@gochat.example", m.id.simple())
        );
        assert!(
            !String::from_utf8_lossy(&got[0].raw).contains("Auto-Submitted"),
            "a reply is not automatic"
        );

        // The ladder's first reminder, three days later, goes out rendered from its template.
        clock.advance(chrono::Duration::days(3));
        eventually(WAIT, "the reminder delivered", || async {
            (sink.received().len() == 2).then_some(())
        })
        .await;
        let reminder = &sink.received()[1];
        let parsed = MessageParser::default()
            .parse(&reminder.raw)
            .expect("parses");
        assert_eq!(
            parsed.subject(),
            Some("Re: Printer on fire — can we help further?")
        );
        let text = parsed
            .body_text(0)
            .unwrap_or_default()
            .replace("\r\n", "\n");
        assert!(text.starts_with("Hello Ada,"), "{text}");
        assert!(text.contains("Go!Chat Support"), "{text}");
        assert!(String::from_utf8_lossy(&reminder.raw).contains("Auto-Submitted: auto-generated"));
        assert_eq!(
            parsed.in_reply_to().as_text(),
            m.message_id_header.as_deref(),
            "threaded on the reply"
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300); 4]).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_recipients_failures_and_outages() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut sink = SmtpSink::start_async().await;
    let mut broker = TestBroker::new().await;
    let store = db.store().await;
    let clock = ManualClock::new(t0());
    let worker = start_worker(config(&db, &broker, &sink), Arc::new(clock.clone())).await;
    let tap = broker.tap_events().await;
    let (thread, _) =
        common::fixtures::thread_with_contact(&store, "default", "ada@acme.example", t0()).await;

    // Not a contact of the thread's customers: dead-lettered, nothing composed or sent.
    broker
        .publish_json(
            "outbound-message",
            "stranger",
            &reply(thread, "eve@evil.example"),
        )
        .await;
    let reason = broker.dead_letter_reason("stranger", WAIT).await;
    assert!(
        reason.contains("forbidden recipient") && reason.contains("eve@evil.example"),
        "{reason}"
    );
    assert!(message(&store, "stranger").await.is_none());

    // 4xx twice, then accepted: retried, sent once, three attempts.
    sink.tempfail_next(2);
    broker
        .publish_json(
            "outbound-message",
            "flaky",
            &reply(thread, "ada@acme.example"),
        )
        .await;
    let m = wait_state(&store, "flaky", OutboundState::Sent).await;
    assert_eq!(m.attempts, 3);
    assert_eq!(sink.received().len(), 1);

    // 5xx: failed at once, announced, acknowledged (not dead-lettered).
    let (other, _) =
        common::fixtures::thread_with_contact(&store, "default", "reject@acme.example", t0()).await;
    broker
        .publish_json(
            "outbound-message",
            "rejected",
            &reply(other, "reject@acme.example"),
        )
        .await;
    let m = wait_state(&store, "rejected", OutboundState::Failed).await;
    assert_eq!(m.attempts, 1);
    assert!(
        m.error.as_deref().is_some_and(|e| e.contains("550")),
        "{:?}",
        m.error
    );
    eventually(WAIT, "message.failed", || async {
        let ev = broker.get(&tap, Duration::from_millis(200)).await?;
        (ev.routing_key == "message.failed").then_some(())
    })
    .await;

    // The server down: retried with backoff until it is back, then sent once.
    tokio::task::block_in_place(|| sink.stop());
    broker
        .publish_json(
            "outbound-message",
            "outage",
            &reply(thread, "ada@acme.example"),
        )
        .await;
    eventually(WAIT, "a failed attempt", || async {
        message(&store, "outage")
            .await
            .filter(|m| m.attempts >= 1 && m.state == Some(OutboundState::Queued))
    })
    .await;
    tokio::task::block_in_place(|| sink.restart());
    let m = wait_state(&store, "outage", OutboundState::Sent).await;
    assert!(m.attempts >= 2, "{}", m.attempts);
    assert_eq!(sink.received().len(), 2);

    // A message a crash left `sending` (the server may have it): never sent again.
    broker
        .publish_json(
            "outbound-message",
            "crashed",
            &reply(thread, "ada@acme.example"),
        )
        .await;
    let m = wait_state(&store, "crashed", OutboundState::Sent).await;
    gochat::store::outbound::set_state(
        store.conn(),
        &m,
        OutboundState::Sending,
        Default::default(),
        t0(),
    )
    .await
    .expect("rewind");
    sea_orm::ConnectionTrait::execute_unprepared(store.conn(), "DELETE FROM processed_jobs")
        .await
        .expect("forget the job");
    broker
        .publish_json(
            "outbound-message",
            "crashed",
            &reply(thread, "ada@acme.example"),
        )
        .await;
    let reason = broker.dead_letter_reason("crashed", WAIT).await;
    assert!(reason.contains("not sent again"), "{reason}");
    assert_eq!(sink.received().len(), 3, "no second copy");

    // A closed thread of the default lifecycle takes no more mail.
    let (closed, _) =
        common::fixtures::thread_with_contact(&store, "default", "ada@acme.example", t0()).await;
    let c = gochat::store::threads::get(store.conn(), closed)
        .await
        .expect("thread");
    gochat::store::threads::set_status(
        store.conn(),
        &c,
        ThreadStatus::Closed,
        None,
        &json!({"kind": "system"}),
        None,
        t0(),
    )
    .await
    .expect("close");
    broker
        .publish_json(
            "outbound-message",
            "to-closed",
            &reply(closed, "ada@acme.example"),
        )
        .await;
    let reason = broker.dead_letter_reason("to-closed", WAIT).await;
    assert!(
        reason.contains("closed") && reason.contains("closed_outbound"),
        "{reason}"
    );
    assert!(message(&store, "to-closed").await.is_none());

    // The agent-reply template wraps the agent's text and quotes the customer's last mail.
    let t = gochat::store::threads::get(store.conn(), thread)
        .await
        .expect("thread");
    let mut inbound = gochat::store::threads::NewMessage::new(
        messages::MessageDirection::Inbound,
        messages::Channel::Email,
        "ada@acme.example",
        "Printer on fire",
    );
    inbound.from_name = Some("Ada".into());
    inbound.text_body = Some("It is still smoking.\nPlease hurry.".into());
    gochat::store::threads::add_message(store.conn(), &t, inbound, t0())
        .await
        .expect("inbound");
    broker
        .publish_json(
            "outbound-message",
            "templated",
            &json!({"schema": "outbound-message/v1", "thread_id": thread,
                    "author": {"kind": "agent", "id": "a1", "name": "Alice"},
                    "to": ["ada@acme.example"], "template": "agent-reply",
                    "variables": {"body": "A technician is on the way."}}),
        )
        .await;
    wait_state(&store, "templated", OutboundState::Sent).await;
    let last = sink.received().pop().expect("mail");
    let parsed = MessageParser::default().parse(&last.raw).expect("parses");
    let text = parsed
        .body_text(0)
        .unwrap_or_default()
        .replace("\r\n", "\n");
    assert!(
        text.starts_with("Hello Ada,\n\nA technician is on the way.\n\nKind regards,\nAlice"),
        "{text}"
    );
    assert!(
        text.contains("> It is still smoking.\n> Please hurry."),
        "{text}"
    );
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(300); 4]).await;
}

both_backends!(
    a_thread_changed_while_its_reply_is_on_the_wire_still_gets_the_ladder_once,
    |db: TestDb| async move {
        let Env {
            sink,
            broker,
            store,
            worker,
            tap,
            thread,
            ..
        } = env(&db, "slow-ada@acme.example").await;

        // The server takes 2 s to accept the reply; meanwhile an agent parks the thread
        // (send_mail committed `sending`, so the thread is not locked during the send).
        broker
            .publish_json(
                "outbound-message",
                "reply-slow",
                &reply(thread, "slow-ada@acme.example"),
            )
            .await;
        wait_state(&store, "reply-slow", OutboundState::Sending).await;
        broker
            .publish_json(
                "status-transition",
                "park",
                &json!({"schema": "status-transition/v1", "thread_id": thread,
                        "actor": {"kind": "agent", "id": "a2"}, "to": "waiting"}),
            )
            .await;
        eventually(WAIT, "the thread parked", || async {
            let t = gochat::store::threads::get(store.conn(), thread)
                .await
                .ok()?;
            (t.status == ThreadStatus::Waiting).then_some(())
        })
        .await;
        wait_state(&store, "reply-slow", OutboundState::Sent).await;

        // The reply, once accepted, starts the ladder on the thread as it is now.
        eventually(WAIT, "the ladder started", || async {
            let t = gochat::store::threads::get(store.conn(), thread)
                .await
                .ok()?;
            ((t.status, t.lifecycle_step) == (ThreadStatus::Reminder, Some(1))).then_some(())
        })
        .await;
        eventually(WAIT, "both jobs recorded", || async {
            (common::count(store.conn(), "SELECT COUNT(*) AS n FROM processed_jobs").await == 2)
                .then_some(())
        })
        .await;
        let mut sent = 0;
        while let Some(ev) = broker.get(&tap, Duration::from_secs(1)).await {
            sent += usize::from(ev.routing_key == "message.sent");
        }
        assert_eq!(sent, 1, "one message.sent event");
        assert_eq!(sink.received().len(), 1, "one mail");
        let metrics = worker.services.metrics.render();
        let retried: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("outcome=\"retried\"") && !l.ends_with(" 0"))
            .collect();
        assert!(retried.is_empty(), "nothing had to be retried: {retried:?}");
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300); 4]).await;
    }
);

both_backends!(
    a_batch_of_deliveries_commits_together_and_keeps_each_message_at_most_once,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let mut broker = TestBroker::new().await;
        let store = db.store().await;
        let mut c = config(&db, &broker, &sink);
        c.smtp.max_attempts = 2;
        c.amqp.consumers.insert(
            "outbound-message".into(),
            gochat::config::ConsumerConfig {
                batch_size: Some(16),
                concurrency: Some(1),
                ..Default::default()
            },
        );
        broker.declare(&c.amqp).await;
        let tap = broker.tap_events().await;
        // Ada's threads: one for each reply, and one more the stranger's reply names. A
        // batch runs as a set on distinct threads (`load_thread` cuts it at a thread an
        // earlier job loaded: docs/outbound.md), so replies to one thread would go one
        // commit each, and whether any batch committed whole would depend on how the
        // deliveries happened to be grouped.
        let mut ada = Vec::new();
        for _ in 0..9 {
            let (thread, _) =
                common::fixtures::thread_with_contact(&store, "default", "ada@acme.example", t0())
                    .await;
            ada.push(thread);
        }
        let (b, _) = common::fixtures::thread_with_contact(
            &store,
            "default",
            "tempfail-bob@acme.example",
            t0(),
        )
        .await;

        // Queued before the worker starts, so they arrive as one batch (or two, the first
        // delivery alone): five replies, one the server keeps turning down for now, one to
        // a stranger, three more.
        let ok = |i: usize| (format!("batch-ok-{i}"), ada[i], "ada@acme.example");
        let mut jobs: Vec<(String, Uuid, &str)> = (0..5).map(ok).collect();
        jobs.push(("batch-tempfail".into(), b, "tempfail-bob@acme.example"));
        jobs.push(("batch-stranger".into(), ada[8], "mallory@evil.example"));
        jobs.extend((5..8).map(ok));
        for (id, thread, to) in &jobs {
            broker
                .publish_json("outbound-message", id, &reply(*thread, to))
                .await;
        }
        let ids: Vec<&str> = jobs
            .iter()
            .map(|(id, _, _)| id.as_str())
            .filter(|id| id.starts_with("batch-ok"))
            .collect();
        let worker = start_worker(c, Arc::new(ManualClock::new(t0()))).await;

        for id in &ids {
            let m = wait_state(&store, id, OutboundState::Sent).await;
            assert_eq!(m.attempts, 1, "{id}");
        }
        // The stranger is refused before anything is composed; the others are not held up.
        let reason = broker.dead_letter_reason("batch-stranger", WAIT).await;
        assert!(reason.contains("forbidden recipient"), "{reason}");
        // Turned down twice (4xx), then given up: failed, never sent, retried in between.
        let failed = wait_state(&store, "batch-tempfail", OutboundState::Failed).await;
        assert_eq!(failed.attempts, 2);

        eventually(WAIT, "every applied job recorded", || async {
            (common::count(store.conn(), "SELECT COUNT(*) AS n FROM processed_jobs").await == 9)
                .then_some(())
        })
        .await;
        // Each reply reached the server once, is stored once on its thread, and started
        // that thread's ladder; the stranger's thread got nothing.
        let to_ada = sink
            .received()
            .iter()
            .filter(|r| r.rcpt_tos.iter().any(|t| t == "ada@acme.example"))
            .count();
        assert_eq!(to_ada, 8, "one mail per reply");
        for (i, id) in ada.iter().enumerate() {
            let thread = gochat::store::threads::get(store.conn(), *id)
                .await
                .expect("thread");
            let stored = messages::Entity::find()
                .filter(messages::Column::ThreadId.eq(*id))
                .all(store.conn())
                .await
                .expect("messages");
            let (want_messages, want_status) = if i < 8 {
                (1, ThreadStatus::Reminder)
            } else {
                (0, ThreadStatus::Open)
            };
            assert_eq!(stored.len(), want_messages, "thread {i}: stored messages");
            assert_eq!(thread.status, want_status, "thread {i}: the ladder");
        }
        let mut sent = 0;
        let mut failed_events = 0;
        while let Some(ev) = broker.get(&tap, Duration::from_secs(1)).await {
            sent += usize::from(ev.routing_key == "message.sent");
            failed_events += usize::from(ev.routing_key == "message.failed");
        }
        assert_eq!((sent, failed_events), (8, 1), "one event per outcome");
        // They went as batches, not one by one.
        let metrics = worker.services.metrics.render();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("gochat_job_batches_total")
                    && l.contains("outbound-message")
                    && l.contains("committed")
                    && !l.ends_with(" 0")),
            "{metrics}"
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300); 4]).await;
    }
);
