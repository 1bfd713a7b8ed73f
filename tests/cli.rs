//! The `gochat` binary end to end: configuration errors, `check`, `migrate`, and `run`
//! (health, readiness, metrics, graceful shutdown) on SQLite and PostgreSQL.

mod common;

use std::process::Command;

use common::process::{free_port, get, sigterm_and_wait, start_worker, wait_status};
use common::{Backend, TestDb, gochat, stderr, stdout};

#[test]
fn check_accepts_the_shipped_config_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let out = gochat(dir.path(), "sqlite::memory:")
        .args(["--config", shipped, "check"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("default.toml: ok"),
        "{}",
        stdout(&out)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[amqp]\nretry_delays = [\"1s\", \"soon\"]\n").expect("write");
    let out = gochat(dir.path(), "sqlite::memory:")
        .args(["--config"])
        .arg(&bad)
        .arg("check")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:2: key `amqp.retry_delays`"), "{err}");
    assert!(err.contains("\"soon\" is not a duration"), "{err}");
}

#[test]
fn an_invalid_config_stops_every_command_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[database]\nmax_connections = 0\n").expect("write");
    for cmd in [&["migrate"][..], &["run"], &["threads"]] {
        let out = gochat(dir.path(), "sqlite::memory:")
            .env("GOCHAT_CONFIG", &bad)
            .args(cmd)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out)
                .contains("bad.toml:2: key `database.max_connections`: expected at least 1"),
            "{}",
            stderr(&out)
        );
    }
    // A bad override names the variable.
    let out = gochat(dir.path(), "sqlite::memory:")
        .env("GOCHAT_HTTP_ADDR", "port 80")
        .arg("migrate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("GOCHAT_HTTP_ADDR"),
        "{}",
        stderr(&out)
    );
    // A wrong database scheme from the environment is caught before connecting.
    let out = gochat(dir.path(), "mysql://root@127.0.0.1/test")
        .arg("migrate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("key `database.url`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gochat(dir.path(), "sqlite::memory:")
        .arg("no-such-command")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = gochat(dir.path(), "sqlite::memory:")
        .args(["threads", "--status", "pending"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected one of open, waiting, reminder, closed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_default_database_is_a_sqlite_file_under_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::gochat_bin())
        .current_dir(dir.path())
        .env_remove("GOCHAT_DATABASE_URL")
        .env_remove("GOCHAT_CONFIG")
        .arg("migrate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("data/gochat.db").is_file());
}

both_backends!(
    migrate_is_idempotent_and_run_refuses_an_unmigrated_database,
    |db: TestDb| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = gochat(dir.path(), &db.url)
            .env("GOCHAT_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .arg("run")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("run `gochat migrate`"),
            "{}",
            stderr(&out)
        );

        let first = gochat(dir.path(), &db.url)
            .arg("migrate")
            .output()
            .expect("run");
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        assert!(
            !stdout(&first).starts_with("0 migration"),
            "{}",
            stdout(&first)
        );
        let second = gochat(dir.path(), &db.url)
            .arg("migrate")
            .output()
            .expect("run");
        assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
        assert!(
            stdout(&second).starts_with("0 migration(s) applied"),
            "{}",
            stdout(&second)
        );
        let store = gochat::store::Store::connect(&db.config())
            .await
            .expect("connect");
        assert!(
            store
                .pending_migrations()
                .await
                .expect("pending")
                .is_empty()
        );
    }
);

both_backends!(
    run_serves_health_readiness_metrics_and_stops_on_sigterm,
    |db: TestDb| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = db.store().await; // migrated
        let port = free_port();
        let mut worker = start_worker(dir.path(), &db.url, port, &[]);
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(wait_status(&format!("{base}/healthz"), 200).await, "ok\n");
        let ready = wait_status(&format!("{base}/readyz"), 200).await;
        assert_eq!(ready.trim(), r#"{"database":"up","broker":"up"}"#);
        let (code, metrics) = get(&format!("{base}/metrics")).await.expect("metrics");
        assert_eq!(code, 200);
        assert!(
            metrics.contains("gochat_build_info{version=\""),
            "{metrics}"
        );
        assert!(metrics.contains("gochat_broker_connected 1"), "{metrics}");
        if let Err(e) = common::promtool_check_metrics(&metrics) {
            panic!("the scraped /metrics: {e}\n{metrics}");
        }
        assert!(
            metrics.contains("gochat_db_pool_connections{state=\"in_use\"}"),
            "{metrics}"
        );

        let (code, err) = sigterm_and_wait(&mut worker);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("stopped cleanly"), "{err}");
        assert!(
            !err.contains("guest:guest"),
            "the AMQP password leaked into the logs: {err}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_without_the_broker_and_start_up_takes_auto_migrate_and_threads() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("auto.toml");
    std::fs::write(&config, "[database]\nauto_migrate = true\n").expect("write");
    let port = free_port();
    let dead_broker = format!("amqp://guest:secret-pw@127.0.0.1:{}/%2f", free_port());
    let mut worker = start_worker(
        dir.path(),
        &db.url,
        port,
        &[
            ("GOCHAT_AMQP_URL", &dead_broker),
            ("GOCHAT_CONFIG", config.to_str().expect("utf-8 path")),
            ("GOCHAT_WORKER_THREADS", "1"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&format!("{base}/healthz"), 200).await;
    let body = wait_status(&format!("{base}/readyz"), 503).await;
    assert_eq!(body.trim(), r#"{"database":"up","broker":"down"}"#);
    let (code, err) = sigterm_and_wait(&mut worker);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("applying pending migrations"), "{err}");
    assert!(err.contains("cannot connect to the broker"), "{err}");
    assert!(!err.contains("secret-pw"), "password leaked: {err}");
    // The thread count the runtime itself reports (its blocking threads bear the same name
    // as its workers, so /proc cannot tell them apart).
    assert!(err.contains("threads=1"), "{err}");
}

both_backends!(
    customer_upsert_and_the_inbox_views_from_the_command_line,
    |db: TestDb| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = db.store().await;
        let out = gochat(dir.path(), &db.url)
            .args([
                "customer",
                "upsert",
                "--external-id",
                "acme",
                "--name",
                "ACME",
            ])
            .args([
                "--email",
                "Alice Liddell <Alice@Example.com>",
                "--chat",
                "alice#42",
            ])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("created"), "{}", stdout(&out));

        // A thread written through the store, as the inbound workflow does.
        use gochat::store::threads::{self, NewMessage, NewThread};
        use gochat_entities::messages::{Channel, MessageDirection};
        use gochat_entities::threads::ThreadStatus;
        let conn = store.conn();
        let cards = gochat::store::inbox::list_threads(conn, &Default::default())
            .await
            .expect("list");
        assert!(cards.is_empty());
        let acme = {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            gochat_entities::customers::Entity::find()
                .filter(gochat_entities::customers::Column::ExternalId.eq("acme"))
                .one(conn)
                .await
                .expect("query")
                .expect("acme exists")
        };
        let system = serde_json::json!({"kind": "system"});
        let now = chrono::Utc::now();
        let t = threads::create(
            conn,
            NewThread::new("Invoice 42 is wrong", ThreadStatus::Open, vec![acme.id]),
            &system,
            now,
        )
        .await
        .expect("create");
        let mut m = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            "alice@example.com",
            "Invoice 42 is wrong",
        );
        m.text_body = Some("The total is off by 10 EUR.".into());
        threads::add_message(conn, &t, m, now)
            .await
            .expect("message");

        let out = gochat(dir.path(), &db.url)
            .args(["threads", "--json"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let cards: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON array");
        assert_eq!(cards.as_array().map(Vec::len), Some(1));
        for key in [
            "id",
            "subject",
            "status",
            "customers",
            "contact",
            "assignee",
            "tags",
            "item_count",
            "has_attachments",
            "attachment_names",
            "last_message_at",
            "updated_at",
            "snippet",
            "version",
        ] {
            assert!(
                cards[0].get(key).is_some(),
                "card lacks {key}: {}",
                cards[0]
            );
        }
        assert_eq!(cards[0]["customers"][0]["external_id"], "acme");
        assert_eq!(
            cards[0]["status_colour"], "#d32f2f",
            "the open colour of the default lifecycle"
        );

        let out = gochat(dir.path(), &db.url)
            .args(["threads", "--status", "closed", "--json"])
            .output()
            .expect("run");
        assert_eq!(stdout(&out).trim(), "[]");
        let out = gochat(dir.path(), &db.url)
            .args(["threads", "--status", "shut"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "a bad status is a usage error");

        let out = gochat(dir.path(), &db.url)
            .args(["threads"])
            .output()
            .expect("run");
        assert!(
            stdout(&out).contains("Invoice 42 is wrong") && stdout(&out).contains("open"),
            "{}",
            stdout(&out)
        );

        let id = t.id.to_string();
        let out = gochat(dir.path(), &db.url)
            .args(["thread", &id, "--json"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let view: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON object");
        assert_eq!(view["thread"]["id"], id.as_str());
        let types: Vec<&str> = view["feed"]
            .as_array()
            .expect("feed")
            .iter()
            .map(|i| i["type"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(types, ["event", "message"]);
        assert_eq!(view["feed"][1]["text"], "The total is off by 10 EUR.");

        let out = gochat(dir.path(), &db.url)
            .args(["thread", &id])
            .output()
            .expect("run");
        assert!(
            stdout(&out).contains("The total is off by 10 EUR."),
            "{}",
            stdout(&out)
        );
        let out = gochat(dir.path(), &db.url)
            .args(["thread", &uuid::Uuid::now_v7().to_string()])
            .output()
            .expect("run");
        assert_ne!(out.status.code(), Some(0));
        assert!(stderr(&out).contains("no thread"), "{}", stderr(&out));
    }
);

/// With the database unable to give a connection (here: the pool's only connection held
/// by an open transaction, as during an outage), `/readyz` answers 503 within its own
/// database check timeout instead of waiting out the pool's 10-second acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_503_quickly_when_the_database_gives_no_connection() {
    use sea_orm::TransactionTrait;
    let db = TestDb::new(Backend::Postgres).await;
    let config = gochat::config::DatabaseConfig {
        max_connections: 1,
        ..db.config()
    };
    let store = gochat::store::Store::connect(&config)
        .await
        .expect("connect");
    let state = gochat::http::HttpState {
        store: store.clone(),
        broker: gochat::queue::BrokerStatus::disconnected(),
        metrics: gochat::metrics::Metrics::new(&gochat::workflow::Registry::builtin().names())
            .expect("metrics"),
    };
    let (_shutdown_tx, shutdown) = gochat::shutdown::channel();
    let (addr, _task) = gochat::http::serve("127.0.0.1:0".parse().expect("addr"), state, shutdown)
        .await
        .expect("serve");
    let url = format!("http://{addr}/readyz");
    let (code, body) = get(&url).await.expect("answers");
    assert_eq!(
        (code, body.trim()),
        (503, r#"{"database":"up","broker":"down"}"#)
    );

    let held = store
        .conn()
        .begin()
        .await
        .expect("hold the only connection");
    let started = std::time::Instant::now();
    let (code, body) = get(&url).await.expect("answers");
    let took = started.elapsed();
    assert_eq!(
        (code, body.trim()),
        (503, r#"{"database":"down","broker":"down"}"#)
    );
    assert!(
        took >= gochat::http::DATABASE_CHECK_TIMEOUT
            && took < gochat::http::DATABASE_CHECK_TIMEOUT + std::time::Duration::from_secs(3),
        "readiness took {took:?}"
    );
    held.rollback().await.expect("release");
    let (code, body) = get(&url).await.expect("answers");
    assert_eq!(
        (code, body.trim()),
        (503, r#"{"database":"up","broker":"down"}"#)
    );
}
