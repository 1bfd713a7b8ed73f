//! The broker stopped and started while jobs are being published and consumed: on a
//! RabbitMQ node of the test's own, a `gochat run` process and a publisher that retries
//! unconfirmed jobs ride through the outage; readiness reports it; every job has exactly
//! one effect and every event goes out.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::broker::{Outgoing, eventually, publish_until_confirmed};
use common::process::{free_port, start_worker, wait_status};
use common::rabbit::OwnRabbit;
use common::{Backend, TestDb, count};
use gochat::queue::Names;
use gochat::store::threads::{self, NewThread};
use gochat_entities::threads::ThreadStatus;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

const N: usize = 800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_and_started_mid_run_loses_no_job_and_applies_none_twice() {
    let rabbit = tokio::task::spawn_blocking(OwnRabbit::start)
        .await
        .expect("start RabbitMQ node");
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let conn = store.conn();
    let thread = threads::create(
        conn,
        NewThread::new("Through the outage", ThreadStatus::Open, Vec::new()),
        &json!({"kind": "system"}),
        chrono::Utc::now(),
    )
    .await
    .expect("thread");

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let prefix = "outage.";
    let names = Names::new(prefix);
    let url = rabbit.url();
    let worker = start_worker(
        dir.path(),
        &db.url,
        port,
        &[("GOCHAT_AMQP_URL", &url), ("GOCHAT_AMQP_PREFIX", prefix)],
    );
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_status(&ready, 200).await;

    // A durable tap on every event, so events published around the outage are kept.
    let tap = "outage.test.events";
    {
        let c = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("connect");
        let ch = c.create_channel().await.expect("channel");
        ch.queue_declare(
            tap.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare tap");
        ch.queue_bind(
            tap.into(),
            names.events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind tap");
        let _ = c.close(200, "ok".into()).await;
    }

    let jobs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let job = json!({"schema": "thread-update/v1", "thread_id": thread.id,
                             "actor": {"kind": "agent", "id": "a1"}, "comment": format!("note {i}")});
            (format!("note-{i}"), job.to_string().into_bytes())
        })
        .collect();
    let publisher = tokio::spawn({
        let url = url.clone();
        let names = names.clone();
        // Paced, so publishing is still going on when the broker stops.
        async move {
            let jobs: Vec<Outgoing> = jobs
                .iter()
                .map(|(id, body)| Outgoing {
                    kind: "thread-update",
                    id,
                    body,
                })
                .collect();
            publish_until_confirmed(&url, &names, jobs, Duration::from_millis(8)).await
        }
    });

    eventually(Duration::from_secs(60), "the first comments", || async {
        (count(conn, "SELECT COUNT(*) AS n FROM comments").await >= 50).then_some(())
    })
    .await;
    let stopper = &rabbit;
    tokio::task::block_in_place(|| stopper.stop_app());
    let body = wait_status(&ready, 503).await;
    assert!(body.contains(r#""broker":"down""#), "{body}");
    let during = count(conn, "SELECT COUNT(*) AS n FROM comments").await;
    assert!(
        during < N as i64,
        "the outage came mid-run ({during} of {N} done)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outage = std::time::Instant::now();
    tokio::task::block_in_place(|| stopper.start_app());
    wait_status(&ready, 200).await;
    let recovered_in = outage.elapsed();

    let failures = publisher.await.expect("publisher");
    assert!(
        failures > 0,
        "the publisher never noticed the outage, so it did not test publishing through it"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = count(conn, "SELECT COUNT(*) AS n FROM processed_jobs").await;
        if done == N as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {N} jobs processed; worker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(conn, "SELECT COUNT(*) AS n FROM comments").await,
        N as i64,
        "one comment per job"
    );
    assert_eq!(
        count(conn, "SELECT COUNT(DISTINCT body) AS n FROM comments").await,
        N as i64
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = count(
            conn,
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
        )
        .await;
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} outbox rows never published; worker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every event reached the tap; an event whose confirm was lost in the outage may come
    // twice, with the same id, which is what consumers dedupe on.
    let c = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = c.create_channel().await.expect("channel");
    let mut ids = HashSet::new();
    let mut deliveries = 0;
    while let Some(m) = ch
        .basic_get(tap.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        deliveries += 1;
        let ev: serde_json::Value = serde_json::from_slice(&m.delivery.data).expect("event");
        assert_eq!(ev["type"], "com.algoreg.gochat.thread.updated");
        ids.insert(ev["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), N, "one thread.updated event per job");
    let dead = gochat::queue::topology::depth(&ch, &names.dead_letters())
        .await
        .expect("dead letter queue");
    assert_eq!(dead, 0, "nothing dead-lettered");
    eprintln!(
        "outage test: {N} jobs, {failures} failed publish attempts retried, {deliveries} event \
         deliveries for {} events, recovered {recovered_in:?} after restart",
        ids.len()
    );
    drop(worker);
}
