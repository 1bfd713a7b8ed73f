//! Found by the fault-injection run (the PostgreSQL restart phase, one mail in one run), and
//! fixed (`send_mail` now retries recording the server's answer while the database is
//! unreachable). The bug: when the mail server accepted a message but the database was
//! unreachable at that moment, `send_mail` could not commit `sent`, returned the database
//! error (transient), and forgot the server's 250. The retried job then finds the message `sending` and dead-letters it as
//! "interrupted after it was handed to the mail server; it may have been delivered" — though
//! the worker, alive all along, knew it had been delivered. The message stays `sending`
//! for good, `message.sent` never goes out and the reminder ladder never starts, and an
//! operator has to reconcile a mail whose fate was known. docs/outbound.md puts the window
//! at "a worker dying after the server accepted the message"; a database blip is not that.
//!
//! Minimal reproduction: an SMTP server of the test's own that stops the (own) PostgreSQL
//! just before it answers 250 to DATA, and starts it again 4 s later (longer than the
//! pool's acquire timeout: the fault-injection outage lasts as long).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use gochat_entities::messages::{self, OutboundState};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::common::broker::{TestBroker, eventually, start_worker};
use crate::common::postgres::OwnPostgres;

/// Longer than the pool's `acquire_timeout` (2 s here), which a shorter blip hides: the
/// `sent` update waits for a connection until the database is back.
const OUTAGE: Duration = Duration::from_secs(4);

/// A minimal SMTP server: accepts everything; on the first message, stops PostgreSQL
/// before answering 250, then starts it again `OUTAGE` later. Returns its port. It holds
/// the cluster weakly: the server threads outlive the test, the cluster must not.
fn smtp_that_stops_the_database(pg: Weak<OwnPostgres>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let first = Arc::new(AtomicBool::new(true));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (pg, first) = (pg.clone(), first.clone());
            std::thread::spawn(move || {
                let mut out = stream.try_clone().expect("clone");
                let mut lines = BufReader::new(stream);
                let _ = out.write_all(b"220 test ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "DATA" => {
                            let _ = out.write_all(b"354 go on\r\n");
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                            }
                            if first.swap(false, Ordering::SeqCst)
                                && let Some(pg) = pg.upgrade()
                            {
                                eprintln!("smtp: stopping PostgreSQL before the 250");
                                pg.stop();
                                eprintln!("smtp: PostgreSQL stopped");
                                std::thread::spawn(move || {
                                    std::thread::sleep(OUTAGE);
                                    pg.start_again();
                                    eprintln!("smtp: PostgreSQL started again");
                                });
                            }
                            b"250 2.0.0 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = out.write_all(reply);
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_accepted_while_the_database_blips_is_recorded_sent_not_dead_lettered() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(OwnPostgres::start)
            .await
            .expect("pg"),
    );
    let admin = sea_orm::Database::connect(pg.url("postgres"))
        .await
        .expect("connect");
    sea_orm::ConnectionTrait::execute_unprepared(&admin, "CREATE DATABASE gochat")
        .await
        .expect("create database");
    admin.close().await.ok();
    let mut db = gochat::config::DatabaseConfig {
        url: gochat::config::SecretUrl::new(pg.url("gochat")),
        max_connections: 5,
        ..Default::default()
    };
    db.acquire_timeout = Duration::from_secs(2);
    let store = gochat::store::Store::connect(&db).await.expect("connect");
    store.migrate().await.expect("migrate");

    let broker = TestBroker::new().await;
    let delays = vec![
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(4),
        Duration::from_secs(8),
    ];
    let mut c = gochat::config::Config {
        database: db,
        ..Default::default()
    };
    c.amqp.url = gochat::config::SecretUrl::new(crate::common::broker::amqp_url());
    c.amqp.prefix = broker.prefix.clone();
    c.amqp.retry_delays = delays.clone();
    c.workflows.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    c.smtp.url = gochat::config::SecretUrl::new(format!(
        "smtp://127.0.0.1:{}",
        smtp_that_stops_the_database(Arc::downgrade(&pg))
    ));
    let clock = gochat::clock::ManualClock::new(crate::common::t0());
    let worker = start_worker(c, Arc::new(clock)).await;
    let (thread, _) = crate::common::fixtures::thread_with_contact(
        &store,
        "default",
        "ada@acme.example",
        crate::common::t0(),
    )
    .await;
    broker
        .publish_json(
            "outbound-message",
            "accepted-in-a-blip",
            &json!({"schema": "outbound-message/v1", "thread_id": thread,
                    "author": {"kind": "agent", "id": "a1", "name": "Alice"},
                    "to": ["ada@acme.example"],
                    "body": {"subject": "Re: Printer on fire", "text": "Fixed.\n"}}),
        )
        .await;

    // Settled one way or the other: recorded sent, or dead-lettered.
    let dead = broker.names.dead_letters();
    let state = eventually(Duration::from_secs(30), "the job settled", || async {
        let m = messages::Entity::find()
            .filter(messages::Column::JobMessageId.eq("accepted-in-a-blip"))
            .one(store.conn())
            .await
            .ok()
            .flatten()?;
        if m.state == Some(OutboundState::Sent) || broker.depth(&dead).await > 0 {
            Some(m.state)
        } else {
            None
        }
    })
    .await;
    let dead_letters = broker.depth(&dead).await;
    worker.stop().await;
    broker.cleanup(&delays).await;
    assert_eq!(
        (state, dead_letters),
        (Some(OutboundState::Sent), 0),
        "the server accepted the message (250), so it is sent, and nothing is dead-lettered"
    );
}
