//! The queue runtime against the real RabbitMQ and both databases: jobs applied once,
//! events published after commit, poison messages dead-lettered with their reason,
//! transient failures retried, and a killed worker losing nothing and doing nothing twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, eventually};
use common::{Backend, TestDb, count};
use gochat::clock::SystemClock;
use gochat::config::Config;
use gochat::metrics::Metrics;
use gochat::store::threads::{self, NewThread};
use gochat::worker::Worker;
use gochat_entities::threads::ThreadStatus;

use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn config(db: &TestDb, broker: &TestBroker, retry: &[u64]) -> Config {
    let mut c = common::broker::worker_config(db, broker);
    c.amqp.retry_delays = retry.iter().map(|ms| Duration::from_millis(*ms)).collect();
    c
}

async fn start(config: Config) -> Worker {
    common::broker::start_worker(config, Arc::new(SystemClock)).await
}

fn upsert(external_id: &str, name: &str) -> serde_json::Value {
    json!({"schema": "customer-upsert/v1", "external_id": external_id, "name": name,
           "contacts": [{"kind": "email", "address": format!("{external_id}@example.com")}]})
}

both_backends!(
    a_job_is_applied_once_and_its_event_published_after_commit,
    |db: TestDb| async move {
        let mut broker = TestBroker::new().await;
        let store = db.store().await;
        let worker = start(config(&db, &broker, &[200])).await;
        let tap = broker.tap_events().await;

        broker
            .publish_json("customer-upsert", "job-1", &upsert("acme", "ACME"))
            .await;
        // The same message id again (a redelivery, or a publisher retrying): no second
        // effect, even when both copies are processed at the same time.
        broker
            .publish_json("customer-upsert", "job-1", &upsert("acme", "ACME"))
            .await;
        // A different job upserting the same customer, maybe concurrently: applied, and
        // still exactly one "created" event.
        broker
            .publish_json("customer-upsert", "job-2", &upsert("acme", "ACME"))
            .await;

        let conn = store.conn();
        eventually(WAIT, "both jobs recorded", || async {
            (count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await == 2).then_some(())
        })
        .await;
        let event = broker
            .get(&tap, WAIT)
            .await
            .expect("customer.created event");
        let ev = event.json();
        assert_eq!(event.routing_key, "customer.created");
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["type"], "com.algoreg.gochat.customer.created");
        assert_eq!(ev["subject"], "acme");
        assert_eq!(ev["data"]["job.name"], "ACME");
        assert_eq!(ev["data"]["customer.external_id"], "acme");
        assert_eq!(
            event.message_id.as_deref(),
            ev["id"].as_str(),
            "AMQP message id = event id, for consumers' dedupe"
        );
        assert!(
            broker.get(&tap, Duration::from_millis(700)).await.is_none(),
            "exactly one event"
        );

        assert_eq!(count(conn, "SELECT COUNT(*) AS n FROM customers").await, 1);
        eventually(WAIT, "the outbox drained", || async {
            (count(
                conn,
                "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0)
                .then_some(())
        })
        .await;
        let metrics = worker.services.metrics.render();
        assert!(
            metrics.contains("gochat_jobs_total{kind=\"customer-upsert\",outcome=\"acked\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gochat_jobs_total{kind=\"customer-upsert\",outcome=\"duplicate\"} 1"),
            "{metrics}"
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

both_backends!(
    poison_messages_go_to_the_dead_letters_with_their_reason,
    |db: TestDb| async move {
        let broker = TestBroker::new().await;
        let _store = db.store().await;
        let worker = start(config(&db, &broker, &[200])).await;

        broker
            .publish("customer-upsert", Some("bad-json"), b"{not json")
            .await;
        broker
            .publish(
                "customer-upsert",
                None,
                upsert("x", "X").to_string().as_bytes(),
            )
            .await;
        broker
            .publish_json(
                "customer-upsert",
                "bad-schema",
                &json!({"schema": "customer-upsert/v1", "name": 42}),
            )
            .await;
        broker
            .publish_json(
                "customer-upsert",
                "bad-version",
                &json!({"schema": "customer-upsert/v9", "external_id": "x", "name": "X"}),
            )
            .await;
        let ghost = uuid::Uuid::now_v7();
        broker
        .publish_json("thread-update", "ghost", &json!({"schema": "thread-update/v1", "thread_id": ghost, "actor": {"kind": "system"}, "comment": "hi"}))
        .await;

        let mut reasons = std::collections::BTreeMap::new();
        for _ in 0..5 {
            let dead = broker
                .get(&broker.names.dead_letters(), WAIT)
                .await
                .expect("a dead letter");
            let first = dead
                .header("x-gochat-first-failure")
                .expect("first-failure header");
            assert!(
                chrono::DateTime::parse_from_rfc3339(&first).is_ok(),
                "{first}"
            );
            assert_eq!(
                dead.header("x-gochat-attempts").as_deref(),
                Some("1"),
                "permanent failures are not retried"
            );
            let reason = dead.header("x-gochat-reason").expect("reason header");
            assert!(!reason.contains('\n'));
            reasons.insert(
                dead.message_id.clone().unwrap_or_default(),
                (
                    dead.header("x-gochat-kind").unwrap_or_default(),
                    reason,
                    dead.body.clone(),
                ),
            );
        }
        assert!(
            reasons["bad-json"].1.contains("not valid JSON"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons["bad-json"].2, b"{not json",
            "the body is kept as it was"
        );
        assert!(reasons[""].1.contains("no AMQP message_id"), "{reasons:?}");
        assert!(
            reasons["bad-schema"].1.contains("external_id")
                && reasons["bad-schema"].1.contains("/name"),
            "{reasons:?}"
        );
        assert!(
            reasons["bad-version"]
                .1
                .contains("expected \"customer-upsert/v1\""),
            "{reasons:?}"
        );
        assert_eq!(reasons["ghost"].0, "thread-update");
        assert!(
            reasons["ghost"]
                .1
                .contains(&format!("unknown thread {ghost}")),
            "{reasons:?}"
        );
        assert!(
            reasons["ghost"].1.contains("step `load`"),
            "the reason names the step: {reasons:?}"
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

/// Holds SQLite's write lock (as a long transaction of another process would).
async fn lock_sqlite(url: &str) -> sea_orm::sqlx::SqliteConnection {
    use sea_orm::sqlx::Connection as _;
    let mut c = sea_orm::sqlx::SqliteConnection::connect(url)
        .await
        .expect("sqlite");
    sea_orm::sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut c)
        .await
        .expect("lock");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_with_backoff_then_succeeds_or_is_dead_lettered() {
    let db = TestDb::new(Backend::Sqlite).await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let mut cfg = config(&db, &broker, &[300, 300]);
    cfg.database.busy_timeout = Duration::from_millis(50);
    let worker = start(cfg).await;

    // Locked for the first attempt and released during the backoff: the retry succeeds.
    let mut lock = lock_sqlite(&db.url).await;
    broker
        .publish_json("customer-upsert", "retry-me", &upsert("acme", "ACME"))
        .await;
    eventually(WAIT, "a retry", || async {
        worker
            .services
            .metrics
            .render()
            .contains("outcome=\"retried\"} 1")
            .then_some(())
    })
    .await;
    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    let conn = store.conn();
    eventually(WAIT, "the retried job applied", || async {
        (count(conn, "SELECT COUNT(*) AS n FROM customers").await == 1).then_some(())
    })
    .await;
    assert_eq!(broker.depth(&broker.names.dead_letters()).await, 0);

    // Locked through every attempt: after the ladder (1 + 2 retries) it is dead-lettered.
    sea_orm::sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .expect("lock again");
    broker
        .publish_json("customer-upsert", "give-up", &upsert("globex", "Globex"))
        .await;
    let dead = broker
        .get(&broker.names.dead_letters(), WAIT)
        .await
        .expect("dead letter");
    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    assert_eq!(dead.message_id.as_deref(), Some("give-up"));
    assert_eq!(dead.header("x-gochat-attempts").as_deref(), Some("3"));
    let reason = dead.header("x-gochat-reason").unwrap_or_default();
    assert!(
        reason.starts_with("gave up after 3 attempts") && reason.contains("locked"),
        "{reason}"
    );

    // Ops replay the dead letter as it is (its headers say 3 attempts) while the database
    // is still locked: it starts the ladder afresh, is retried, and applied once unlocked.
    let retried = |n: usize| format!("outcome=\"retried\"}} {n}");
    let before = worker.services.metrics.render();
    assert!(before.contains(&retried(3)), "{before}");
    sea_orm::sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .expect("lock again");
    broker.republish("customer-upsert", &dead).await;
    eventually(WAIT, "the replay retried", || async {
        worker
            .services
            .metrics
            .render()
            .contains(&retried(4))
            .then_some(())
    })
    .await;
    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    eventually(WAIT, "the replayed job applied", || async {
        (count(conn, "SELECT COUNT(*) AS n FROM customers").await == 2).then_some(())
    })
    .await;
    assert_eq!(broker.depth(&broker.names.dead_letters()).await, 0);
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(300)]).await;
}

both_backends!(
    a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice,
    |db: TestDb| async move {
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let conn = store.conn();
        let thread = threads::create(
            conn,
            NewThread::new("Busy thread", ThreadStatus::Open, Vec::new()),
            &json!({"kind": "system"}),
            chrono::Utc::now(),
        )
        .await
        .expect("thread");
        broker.declare(&config(&db, &broker, &[]).amqp).await;
        const N: usize = 300;
        for i in 0..N {
            let job = json!({"schema": "thread-update/v1", "thread_id": thread.id, "actor": {"kind": "agent", "id": "a1"}, "comment": format!("note {i}")});
            broker
                .publish_json("thread-update", &format!("note-{i}"), &job)
                .await;
        }
        let spawn = || {
            let dir = tempfile::tempdir().expect("tempdir");
            let child = common::gochat(dir.path(), &db.url)
                .env("GOCHAT_AMQP_PREFIX", &broker.prefix)
                .env("GOCHAT_HTTP_ADDR", "127.0.0.1:0")
                .arg("run")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn worker");
            (child, dir)
        };
        let (mut first, _d1) = spawn();
        eventually(WAIT, "some comments", || async {
            (count(conn, "SELECT COUNT(*) AS n FROM comments").await >= 20).then_some(())
        })
        .await;
        first.kill().expect("SIGKILL"); // no graceful anything: in-flight jobs are cut mid-way
        first.wait().expect("reaped");
        let done_before = count(conn, "SELECT COUNT(*) AS n FROM comments").await;
        assert!(
            done_before < N as i64,
            "the kill happened mid-batch ({done_before} of {N})"
        );

        let (mut second, _d2) = spawn();
        eventually(Duration::from_secs(60), "every job processed", || async {
            (count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await == N as i64)
                .then_some(())
        })
        .await;
        second.kill().ok();
        second.wait().ok();
        assert_eq!(
            count(conn, "SELECT COUNT(*) AS n FROM comments").await,
            N as i64,
            "one comment per job"
        );
        assert_eq!(
            count(conn, "SELECT COUNT(DISTINCT body) AS n FROM comments").await,
            N as i64
        );
        let t = threads::get(conn, thread.id).await.expect("thread");
        assert_eq!(t.item_count, N as i32);
        if let Some(dead) = broker
            .get(&broker.names.dead_letters(), Duration::ZERO)
            .await
        {
            panic!(
                "a job was dead-lettered: {:?}",
                dead.header("x-gochat-reason")
            );
        }
        broker
            .cleanup(&[
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ])
            .await;
    }
);

/// A handler that panics on one job and applies the others.
struct Panicky(std::sync::atomic::AtomicUsize);

impl gochat::queue::Handler for Panicky {
    async fn handle(
        &self,
        job: &gochat::jobs::Job,
    ) -> Result<gochat::queue::Handled, gochat::jobs::JobError> {
        if job.message_id == "boom" {
            panic!("index out of bounds: the len is 0 but the index is 3");
        }
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(gochat::queue::Handled::Applied)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_dead_lettered_with_the_panic_and_the_consumer_goes_on() {
    let broker = TestBroker::new().await;
    let amqp = gochat::config::AmqpConfig {
        retry_delays: vec![Duration::from_millis(200)],
        ..Default::default()
    };
    broker.declare(&amqp).await;
    let (stop, _) = gochat::shutdown::channel();
    let (supervised, task) = gochat::queue::Broker::supervise(
        gochat::config::SecretUrl::new(common::broker::amqp_url()),
        "panic-test".into(),
        None,
        stop.subscribe(),
    );
    let handler = Arc::new(Panicky(Default::default()));
    let consumer = tokio::spawn(gochat::queue::consumer::run(
        supervised,
        broker.names.clone(),
        gochat::queue::ConsumerSpec {
            kind: "customer-upsert".into(),
            prefetch: 4,
            concurrency: 1,
            batch_size: 4,
            retry_delays: amqp.retry_delays.clone(),
            confirm_timeout: Duration::from_secs(5),
            in_turn: false,
        },
        handler.clone(),
        Metrics::new(&gochat::workflow::Registry::builtin().names()).expect("metrics"),
        stop.subscribe(),
    ));
    broker
        .publish_json("customer-upsert", "boom", &upsert("acme", "ACME"))
        .await;
    for i in 0..3 {
        broker
            .publish_json(
                "customer-upsert",
                &format!("fine-{i}"),
                &upsert("acme", "ACME"),
            )
            .await;
    }
    let reason = broker.dead_letter_reason("boom", WAIT).await;
    assert!(
        reason.contains("panicked") && reason.contains("index out of bounds"),
        "{reason}"
    );
    // With one slot, the jobs behind it only run if the panic freed it.
    eventually(WAIT, "the other jobs applied", || async {
        (handler.0.load(std::sync::atomic::Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    stop.trigger();
    let _ = consumer.await;
    let _ = task.await;
    broker.cleanup(&amqp.retry_delays).await;
}

/// A handler whose jobs take as long as their id says: `slow` ones 6 s, the rest no time.
#[derive(Default)]
struct Staggered(std::sync::Mutex<std::collections::HashMap<String, usize>>);

impl Staggered {
    fn runs(&self) -> std::collections::HashMap<String, usize> {
        self.0.lock().expect("runs").clone()
    }
}

impl gochat::queue::Handler for Staggered {
    async fn handle(
        &self,
        job: &gochat::jobs::Job,
    ) -> Result<gochat::queue::Handled, gochat::jobs::JobError> {
        if job.message_id.starts_with("slow") {
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        *self
            .0
            .lock()
            .expect("runs")
            .entry(job.message_id.clone())
            .or_default() += 1;
        Ok(gochat::queue::Handled::Applied)
    }
}

/// Acks of finished jobs are coalesced behind earlier deliveries still running
/// (`queue::acks`), but never for long: behind a slow job they go one by one, and the slow
/// job's own ack follows when it ends. Each job still runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finishing_behind_a_slow_one_are_acked_without_waiting_for_it() {
    let broker = TestBroker::new().await;
    let amqp = gochat::config::AmqpConfig::default();
    broker.declare(&amqp).await;
    let (stop, _) = gochat::shutdown::channel();
    let (supervised, task) = gochat::queue::Broker::supervise(
        gochat::config::SecretUrl::new(common::broker::amqp_url()),
        "acks-test".into(),
        None,
        stop.subscribe(),
    );
    let handler = Arc::new(Staggered::default());
    let consumer = tokio::spawn(gochat::queue::consumer::run(
        supervised,
        broker.names.clone(),
        gochat::queue::ConsumerSpec {
            kind: "customer-upsert".into(),
            prefetch: 32,
            concurrency: 4,
            // Alone in its batch, so no fast job waits in the slow one's batch.
            batch_size: 1,
            retry_delays: amqp.retry_delays.clone(),
            confirm_timeout: Duration::from_secs(5),
            in_turn: false,
        },
        handler.clone(),
        Metrics::new(&gochat::workflow::Registry::builtin().names()).expect("metrics"),
        stop.subscribe(),
    ));
    let queue = broker.names.queue("customer-upsert");
    broker
        .publish_json("customer-upsert", "slow", &upsert("a", "A"))
        .await;
    for i in 0..20 {
        broker
            .publish_json("customer-upsert", &format!("fast-{i}"), &upsert("a", "A"))
            .await;
    }
    eventually(WAIT, "the fast jobs run", || async {
        (handler.runs().len() == 20).then_some(())
    })
    .await;
    let fast_done = std::time::Instant::now();
    // The slow job is still running (6 s); everything behind it is acked meanwhile.
    eventually(
        Duration::from_secs(4),
        "only the slow job unacked",
        || async { (broker.unacked(&queue).await == Some(1)).then_some(()) },
    )
    .await;
    assert!(
        fast_done.elapsed() < Duration::from_secs(5) && !handler.runs().contains_key("slow"),
        "the acks came only after the slow job ended"
    );
    eventually(WAIT, "the slow job acked too", || async {
        (handler.runs().contains_key("slow") && broker.unacked(&queue).await == Some(0))
            .then_some(())
    })
    .await;
    stop.trigger();
    let _ = consumer.await;
    let _ = task.await;
    assert_eq!(
        broker.depth(&queue).await,
        0,
        "nothing came back to the queue"
    );
    let runs = handler.runs();
    assert_eq!(runs.len(), 21);
    assert!(runs.values().all(|&n| n == 1), "a job ran twice: {runs:?}");
    broker.cleanup(&amqp.retry_delays).await;
}

both_backends!(
    jobs_waiting_together_commit_in_batches_and_a_bad_one_spoils_none_of_its_neighbours,
    |db: TestDb| async move {
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = config(&db, &broker, &[200]);
        cfg.amqp.batch_size = 16;
        cfg.amqp.concurrency = 2;
        // Everything is queued before the worker starts, so its consumer finds a backlog
        // and forms full batches.
        broker.declare(&cfg.amqp).await;
        const GOOD: usize = 120;
        let mut published = 0;
        for i in 0..GOOD {
            broker
                .publish_json(
                    "customer-upsert",
                    &format!("good-{i}"),
                    &upsert(&format!("c{i}"), "C"),
                )
                .await;
            published += 1;
            // Every tenth job is published twice in a row: the copies usually land in
            // one batch, and must still have one effect.
            if i % 10 == 0 {
                broker
                    .publish_json(
                        "customer-upsert",
                        &format!("good-{i}"),
                        &upsert(&format!("c{i}"), "C"),
                    )
                    .await;
                published += 1;
            }
            // Three jobs that pass the schema but fail in the workflow (the address is not
            // one), each in the middle of a batch.
            if i % 40 == 20 {
                let bad = json!({"schema": "customer-upsert/v1", "external_id": format!("bad{i}"), "name": "B",
                    "contacts": [{"kind": "email", "address": "not an address"}]});
                broker
                    .publish_json("customer-upsert", &format!("bad-{i}"), &bad)
                    .await;
                published += 1;
            }
        }
        let worker = start(cfg).await;
        let conn = store.conn();
        eventually(WAIT, "every good job recorded", || async {
            (count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await == GOOD as i64)
                .then_some(())
        })
        .await;
        let mut dead = Vec::new();
        for _ in 0..3 {
            let d = broker
                .get(&broker.names.dead_letters(), WAIT)
                .await
                .expect("a dead letter per bad job");
            let reason = d.header("x-gochat-reason").unwrap_or_default();
            assert!(reason.contains("invalid email address"), "{reason}");
            dead.push(d.message_id.unwrap_or_default());
        }
        dead.sort();
        assert_eq!(dead, ["bad-100", "bad-20", "bad-60"]);
        assert_eq!(
            count(conn, "SELECT COUNT(*) AS n FROM customers").await,
            GOOD as i64,
            "one customer per good job, none from a bad one"
        );
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM customers WHERE external_id LIKE 'bad%'"
            )
            .await,
            0
        );
        // Jobs committed together share their commit's timestamp: far fewer distinct
        // timestamps than jobs shows they were batched, even around the bad ones.
        let commits = count(
            conn,
            "SELECT COUNT(DISTINCT processed_at) AS n FROM processed_jobs",
        )
        .await;
        assert!(
            commits <= (GOOD / 4) as i64,
            "{GOOD} jobs took {commits} commits: not batched"
        );
        // Settled (acked, counted) just after the commit the test waited for.
        let acked =
            format!("gochat_jobs_total{{kind=\"customer-upsert\",outcome=\"acked\"}} {GOOD}");
        let dup = format!(
            "gochat_jobs_total{{kind=\"customer-upsert\",outcome=\"duplicate\"}} {}",
            published - GOOD - 3
        );
        eventually(WAIT, "every job settled and counted", || async {
            let m = worker.services.metrics.render();
            (m.contains(&acked) && m.contains(&dup)).then_some(())
        })
        .await;
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

both_backends!(
    a_worker_consumes_only_the_kinds_it_is_told_to,
    |db: TestDb| async move {
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = config(&db, &broker, &[200]);
        cfg.amqp.consume = vec!["customer-upsert".into()];
        let worker = start(cfg).await;
        let update = json!({"schema": "thread-update/v1", "thread_id": uuid::Uuid::now_v7(),
                            "actor": {"kind": "system"}, "comment": "hi"});
        broker
            .publish_json("thread-update", "left-alone", &update)
            .await;
        broker
            .publish_json("customer-upsert", "taken", &upsert("acme", "ACME"))
            .await;
        let conn = store.conn();
        eventually(WAIT, "the customer-upsert applied", || async {
            (count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await == 1).then_some(())
        })
        .await;
        // The thread-update (for an unknown thread: it would be dead-lettered if consumed)
        // waits in its queue for a worker that consumes it.
        assert_eq!(broker.depth(&broker.names.queue("thread-update")).await, 1);
        assert!(
            broker
                .get(&broker.names.dead_letters(), Duration::ZERO)
                .await
                .is_none()
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_run_jobs_and_a_job_the_broker_gives_up_on_is_dead_lettered_not_dropped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let mut cfg = config(&db, &broker, &[200]);
    cfg.amqp.queue_type = gochat::config::QueueType::Quorum;
    cfg.amqp.consume = vec!["customer-upsert".into()];
    cfg.database.busy_timeout = Duration::from_millis(50);
    let worker = start(cfg.clone()).await;
    // A job through a quorum queue, retried once through a quorum retry queue (the SQLite
    // write lock is held meanwhile) and applied.
    let lock = lock_sqlite(&db.url).await;
    broker
        .publish_json("customer-upsert", "q1", &upsert("acme", "ACME"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(lock);
    eventually(WAIT, "the job applied", || async {
        (count(store.conn(), "SELECT COUNT(*) AS n FROM processed_jobs").await == 1).then_some(())
    })
    .await;
    let retried = "gochat_jobs_total{kind=\"customer-upsert\",outcome=\"retried\"} 1";
    assert!(
        worker.services.metrics.render().contains(retried),
        "went through the retry queue"
    );

    // A job whose consumer keeps dying before settling it (requeued each time): past the
    // delivery limit the broker moves it to the dead letters.
    broker
        .publish_json(
            "thread-update",
            "crash-loop",
            &json!({"schema": "thread-update/v1"}),
        )
        .await;
    let conn = lapin::Connection::connect(
        &common::broker::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let queue = broker.names.queue("thread-update");
    let mut deliveries = 0;
    while let Some(m) = ch
        .basic_get(queue.as_str().into(), Default::default())
        .await
        .expect("get")
    {
        deliveries += 1;
        m.delivery
            .acker
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("nack");
        assert!(deliveries <= 100, "never dead-lettered");
    }
    let dead = broker
        .get(&broker.names.dead_letters(), WAIT)
        .await
        .expect("dead-lettered by the broker");
    assert_eq!(dead.message_id.as_deref(), Some("crash-loop"));
    assert!(
        deliveries > gochat::queue::topology::QUORUM_DELIVERY_LIMIT as usize,
        "{deliveries} deliveries"
    );
    let _ = conn.close(200, "ok".into()).await;
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}

/// A batch that meets a thread locked elsewhere (another replica's batch, say) does not
/// hold its earlier jobs' effects — and their locks — hostage: the waiting job's lock wait
/// is bounded, the batch commits what came before it, and the waiting job runs alone until
/// the lock is free. Without the bound, two replicas' batches deadlock on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_meeting_a_locked_thread_commits_the_jobs_before_it_and_waits_alone() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    use std::sync::RwLock;
    let db = TestDb::new(Backend::Postgres).await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let conn = store.conn();
    let worker = start(config(&db, &broker, &[200])).await;
    let new_thread = |subject: &str| NewThread::new(subject, ThreadStatus::Open, Vec::new());
    let mut ids = Vec::new();
    for subject in ["first", "locked", "third"] {
        let t = threads::create(
            conn,
            new_thread(subject),
            &json!({"kind": "system"}),
            chrono::Utc::now(),
        )
        .await
        .expect("thread");
        ids.push(t.id);
    }
    let job = |n: usize| gochat::jobs::Job {
        kind: "thread-update".into(),
        message_id: format!("note-{n}"),
        payload: json!({"schema": "thread-update/v1", "thread_id": ids[n],
                        "actor": {"kind": "agent", "id": "a1"}, "comment": format!("note {n}")}),
        attempt: 1,
        first_failure: None,
    };
    let jobs = vec![job(0), job(1), job(2)];

    // Another transaction holds the second job's thread.
    let holder = conn.begin().await.expect("begin");
    holder
        .execute_unprepared(&format!(
            "SELECT id FROM threads WHERE id = '{}' FOR UPDATE",
            ids[1]
        ))
        .await
        .expect("lock the thread");

    let set = gochat::workflow::WorkflowSet::load(&worker.services.config.workflows.dir)
        .expect("workflows");
    let handler = Arc::new(gochat::workflow::handler::WorkflowHandler::new(
        worker.services.clone(),
        Arc::new(RwLock::new(Arc::new(set))),
        gochat::queue::relay::RelayWaker::default(),
    ));
    let batch = tokio::spawn({
        let handler = handler.clone();
        async move {
            use gochat::queue::Handler;
            handler.handle_batch(&jobs).await
        }
    });
    let comments = |body: &'static str| async move {
        count(
            conn,
            &format!("SELECT COUNT(*) AS n FROM comments WHERE body = '{body}'"),
        )
        .await
    };
    eventually(
        WAIT,
        "the job before the locked thread committed",
        || async { (comments("note 0").await == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(comments("note 1").await, 0, "the locked thread's job waits");
    assert!(
        !batch.is_finished(),
        "the locked thread's job waits for the lock"
    );

    holder.rollback().await.expect("release");
    let results = tokio::time::timeout(WAIT, batch)
        .await
        .expect("the batch finishes once the lock is free")
        .expect("no panic");
    assert_eq!(
        results,
        vec![
            Ok(gochat::queue::Handled::Applied),
            Ok(gochat::queue::Handled::Applied),
            Ok(gochat::queue::Handled::Applied)
        ]
    );
    for body in ["note 0", "note 1", "note 2"] {
        assert_eq!(comments(body).await, 1, "{body} applied once");
    }
    assert_eq!(
        count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await,
        3
    );
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}

both_backends!(
    a_batch_of_customer_upserts_is_written_set_based_and_cut_at_a_conflicting_or_invalid_job,
    |db: TestDb| async move {
        use gochat::jobs::{Job, JobError};
        use gochat::queue::{Handled, Handler};
        let store = db.store().await;
        let conn = store.conn();
        let config = Config {
            database: db.config(),
            ..Default::default()
        };
        // Globex exists, with a contact the sync below no longer lists.
        gochat::store::customers::upsert_customer(
            conn,
            &serde_json::from_value(json!({"external_id": "globex", "name": "Globex",
                "contacts": [{"kind": "email", "address": "old@globex.example"}]}))
            .unwrap(),
            common::t0(),
        )
        .await
        .unwrap();
        let handler = common::fixtures::workflow_handler(&store, config);
        let services = handler.services().clone();
        let set = handler.current();
        assert!(set.get("customer-upsert").unwrap().set_based());
        let job = |id: &str, body: serde_json::Value| {
            let mut payload = json!({"schema": "customer-upsert/v1"});
            payload
                .as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            Job {
                kind: "customer-upsert".into(),
                message_id: id.into(),
                payload,
                attempt: 1,
                first_failure: None,
            }
        };
        let jobs = vec![
            job(
                "j0",
                json!({"external_id": "acme", "name": "ACME",
                "contacts": [{"kind": "email", "address": "Ann@Acme.example", "time_zone": "Europe/Berlin"}]}),
            ),
            job(
                "j1",
                json!({"external_id": "globex", "name": "Globex Corp", "replace_contacts": true,
                "contacts": [{"kind": "email", "address": "gina@globex.example", "name": "Gina"}]}),
            ),
            // The same message again: a duplicate, not a second effect.
            job(
                "j0",
                json!({"external_id": "acme", "name": "ACME",
                "contacts": [{"kind": "email", "address": "ann@acme.example"}]}),
            ),
            // The same customer as j0: applied after it, alone.
            job("j3", json!({"external_id": "acme", "name": "ACME Inc"})),
            job(
                "j4",
                json!({"external_id": "initech", "name": "Initech",
                "contacts": [{"kind": "email", "address": "bill@initech.example", "time_zone": "Mars/Base"}]}),
            ),
            // Shares j0's contact: alone too; the contact's time zone stays.
            job(
                "j5",
                json!({"external_id": "umbrella", "name": "Umbrella",
                "contacts": [{"kind": "email", "address": "ann@acme.example", "name": "Ann"}]}),
            ),
            // One contact listed twice: merged, the later name wins.
            job(
                "j6",
                json!({"external_id": "hooli", "name": "Hooli",
                "contacts": [{"kind": "email", "address": "h@hooli.example", "name": "H1"},
                             {"kind": "chat", "address": "widget:7"},
                             {"kind": "email", "address": "H@hooli.example", "name": "H2"}]}),
            ),
        ];
        let results = handler.handle_batch(&jobs).await;
        assert_eq!(results.len(), jobs.len());
        assert_eq!(results[0], Ok(Handled::Applied));
        assert_eq!(results[1], Ok(Handled::Applied));
        assert_eq!(results[2], Ok(Handled::Duplicate));
        assert_eq!(results[3], Ok(Handled::Applied));
        assert!(
            matches!(&results[4], Err(JobError::Permanent(r)) if r.contains("Mars/Base")),
            "{:?}",
            results[4]
        );
        assert_eq!(results[5..], [Ok(Handled::Applied), Ok(Handled::Applied)]);

        // Cut at j3 (the same customer as j0) and at j4 (invalid); j5 and j6 then commit
        // together. No batch failed as a whole: the conflicts were seen before writing.
        let batches = |outcome: &str| {
            services
                .metrics
                .job_batches
                .with_label_values(&["customer-upsert", outcome])
                .get()
        };
        assert_eq!(
            (batches("committed"), batches("cut"), batches("failed")),
            (1, 2, 0)
        );
        let exists = |sql: &'static str| async move {
            count(conn, &format!("SELECT COUNT(*) AS n FROM {sql}")).await == 1
        };
        assert!(exists("customers WHERE external_id = 'acme' AND name = 'ACME Inc'").await);
        assert!(exists("customers WHERE external_id = 'globex' AND name = 'Globex Corp'").await);
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM customers WHERE external_id = 'initech'"
            )
            .await,
            0
        );
        assert_eq!(count(conn, "SELECT COUNT(*) AS n FROM customers").await, 4);
        let contacts_of = |customer: &str| {
            format!(
                "SELECT COUNT(*) AS n FROM customer_contacts cc JOIN customers c ON c.id = cc.customer_id WHERE c.external_id = '{customer}'"
            )
        };
        assert_eq!(
            count(conn, &contacts_of("globex")).await,
            1,
            "replace_contacts detached old@"
        );
        assert_eq!(count(conn, &contacts_of("acme")).await, 1);
        assert_eq!(count(conn, &contacts_of("umbrella")).await, 1);
        assert_eq!(count(conn, &contacts_of("hooli")).await, 2);
        assert!(
            exists("contacts WHERE address = 'ann@acme.example' AND time_zone = 'Europe/Berlin' AND display_name = 'Ann'").await
        );
        assert!(exists("contacts WHERE address = 'h@hooli.example' AND display_name = 'H2'").await);
        assert_eq!(
            count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await,
            5
        );
        // One `customer.created` event per customer created: acme, umbrella, hooli.
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'customer.created'"
            )
            .await,
            3
        );
    }
);

/// An outbox row whose exchange is gone (say, after a prefix change) waits with the reason
/// on it and delays nothing else: published, it would close the relay's channel and fail
/// every row in flight with it. And the worker keeps its connection and consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_for_a_missing_exchange_waits_and_delays_nothing_else() {
    use gochat_entities::outbox::OutboxKind;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut broker = TestBroker::new().await;
    let store = db.store().await;
    let conn = store.conn();
    let worker = start(config(&db, &broker, &[200])).await;
    let tap = broker.tap_events().await;
    let before = worker.broker.connected(WAIT).await.expect("connected");

    // An orphan row (its exchange is gone) claimed together with a good one.
    let missing = format!("{}gone", broker.prefix);
    let row = |exchange: &str, id: &str| {
        gochat::store::outbox::new_row(
            OutboxKind::Event,
            exchange,
            "thread.updated",
            id,
            &json!({"id": id}),
            chrono::Utc::now(),
        )
    };
    gochat::store::outbox::insert_all(
        conn,
        vec![
            row(&missing, "orphan-1"),
            row(&broker.names.events_exchange(), "good-1"),
        ],
    )
    .await
    .expect("outbox rows");
    // The good one goes out at once, not after the orphan's failure and a retry.
    let good = broker
        .get(&tap, Duration::from_secs(3))
        .await
        .expect("the good row published at once");
    assert_eq!(good.message_id.as_deref(), Some("good-1"));
    eventually(WAIT, "the orphan's reason recorded", || async {
        (count(
            conn,
            "SELECT COUNT(*) AS n FROM outbox WHERE message_id = 'orphan-1' AND last_error LIKE '%does not exist%' AND published_at IS NULL",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    // Set aside for a minute (doubling on each claim), not retried on every round.
    {
        use gochat_entities::outbox;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let orphan = outbox::Entity::find()
            .filter(outbox::Column::MessageId.eq("orphan-1"))
            .one(conn)
            .await
            .expect("query")
            .expect("the orphan row stays");
        let wait = orphan.available_at - chrono::Utc::now();
        assert!(
            wait > chrono::Duration::seconds(50) && wait <= chrono::Duration::seconds(60),
            "{wait}"
        );
    }

    // A channel the broker closes with an error (here a passive declare of a missing
    // queue on the worker's own connection) is that channel's business: the supervisor
    // must not take it for a lost connection and restart every consumer.
    let probe = before.create_channel().await.expect("channel");
    let refused =
        gochat::queue::topology::depth(&probe, &format!("{}nothing-here", broker.prefix)).await;
    assert!(refused.is_err(), "the queue does not exist");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The jobs still run, and their events still go out, on the same connection.
    broker
        .publish_json("customer-upsert", "after-1", &upsert("acme", "ACME"))
        .await;
    let event = broker.get(&tap, WAIT).await.expect("the job's event");
    assert_eq!(event.routing_key, "customer.created");
    let after = worker.broker.connected(WAIT).await.expect("connected");
    assert!(
        Arc::ptr_eq(&before, &after),
        "the connection was dropped and made again"
    );
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}

/// A job's outbox rows go straight from its commit to the relay, never claimed back from
/// the table; a row committed leased whose worker died before publishing it waits out the
/// lease, then the sweep publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_are_handed_to_the_relay_and_a_dead_workers_rows_are_swept_after_their_lease()
 {
    use gochat_entities::outbox::OutboxKind;
    let db = TestDb::new(Backend::Postgres).await;
    let mut broker = TestBroker::new().await;
    let store = db.store().await;
    let conn = store.conn();
    let worker = start(config(&db, &broker, &[200])).await;
    let tap = broker.tap_events().await;

    broker
        .publish_json("customer-upsert", "handed-1", &upsert("acme", "ACME"))
        .await;
    let event = broker.get(&tap, WAIT).await.expect("the job's event");
    assert_eq!(event.routing_key, "customer.created");
    eventually(WAIT, "the event's row marked published", || async {
        (count(
            conn,
            "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'customer.created' AND published_at IS NOT NULL",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    // A claim counts an attempt; the hand-over claims nothing.
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'customer.created' AND attempts = 0",
        )
        .await,
        1,
        "the row was claimed back from the table instead of handed over"
    );

    // A row another worker committed leased for two more seconds, then died.
    let mut row = gochat::store::outbox::new_row(
        OutboxKind::Event,
        &broker.names.events_exchange(),
        "thread.updated",
        "leased-1",
        &json!({"id": "leased-1"}),
        chrono::Utc::now(),
    );
    row.available_at = sea_orm::ActiveValue::Set(chrono::Utc::now() + chrono::Duration::seconds(2));
    gochat::store::outbox::insert_all(conn, vec![row])
        .await
        .expect("outbox row");
    assert!(
        broker
            .get(&tap, Duration::from_millis(1200))
            .await
            .is_none(),
        "a leased row was published before its lease ended"
    );
    let swept = broker
        .get(&tap, Duration::from_secs(5))
        .await
        .expect("the sweep publishes the row once its lease ends");
    assert_eq!(swept.message_id.as_deref(), Some("leased-1"));
    worker.stop().await;
    broker.cleanup(&[Duration::from_millis(200)]).await;
}
