//! `gochat mailgate` and `gochat mail reprocess` as processes, against the real RabbitMQ and
//! both databases: every message of the corpus (`tests/data/corpus/`: CPython's email test
//! messages, real bounces from many mail servers, auto-replies, abuse reports) goes
//! mailgate → broker → worker → database, and ends stored with the classification
//! `expected.json` gives it, or dead-lettered with a reason; none is lost. The exit codes
//! the MTA relies on: 0 confirmed, 65 refused, 75 try again later.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, amqp_url, eventually, start_worker};
use common::mail::{TestMail, mailgate};
use common::smtp::SmtpSink;
use common::{TestDb, count};
use gochat::clock::SystemClock;
use gochat_entities::raw_mails;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

const SUPPORT: &str = "support@gochat.example";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus")
}

/// Every corpus message, as `folder/file`.
fn corpus_files() -> Vec<String> {
    let mut files = Vec::new();
    for folder in std::fs::read_dir(corpus()).expect("corpus").flatten() {
        if !folder.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(folder.path()).expect("folder").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name != "LICENSE" {
                files.push(format!("{}/{name}", folder.file_name().to_string_lossy()));
            }
        }
    }
    files.sort();
    files
}

fn gate_env(broker: &TestBroker) -> Vec<(&'static str, String)> {
    vec![
        ("GOCHAT_AMQP_URL", amqp_url()),
        ("GOCHAT_AMQP_PREFIX", broker.prefix.clone()),
    ]
}

both_backends!(
    every_corpus_message_goes_through_mailgate_and_is_stored_or_dead_lettered_with_a_reason,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = common::broker::worker_config(&db, &broker);
        cfg.smtp.url = gochat::config::SecretUrl::new(sink.url());
        cfg.amqp.retry_delays = vec![Duration::from_millis(200)];
        // The corpus has many mails from the same anonymised senders: not a loop here.
        cfg.mail.loop_limit = 10_000;
        let worker = start_worker(cfg, Arc::new(SystemClock)).await;
        let expected: BTreeMap<String, serde_json::Value> = serde_json::from_slice(
            &std::fs::read(corpus().join("expected.json")).expect("expected.json"),
        )
        .expect("expected.json is JSON");

        // Eight mailgate processes at a time, as an MTA would run them.
        let files = corpus_files();
        assert_eq!(
            files.len(),
            expected.len(),
            "expected.json covers the corpus"
        );
        let env = gate_env(&broker);
        let jobs: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| {
                let chunks: Vec<Vec<String>> = files
                    .chunks(files.len().div_ceil(8))
                    .map(<[String]>::to_vec)
                    .collect();
                let handles: Vec<_> = chunks
                    .into_iter()
                    .map(|chunk| {
                        let env = &env;
                        s.spawn(move || {
                            chunk
                                .into_iter()
                                .map(|file| {
                                    let raw = std::fs::read(corpus().join(&file)).expect("read");
                                    let out = mailgate(&raw, SUPPORT, None, env);
                                    assert_eq!(
                                        out.status.code(),
                                        Some(0),
                                        "{file}: {}",
                                        String::from_utf8_lossy(&out.stderr)
                                    );
                                    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                                    (file, id)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("mailgate thread"))
                    .collect()
            })
        })
        .await
        .expect("mailgate runs");

        // The corpus holds byte-identical copies (the same bounce filed twice): the same
        // mail to the same recipient is one job, as when an MTA delivers a mail again.
        let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (file, id) in &jobs {
            by_id.entry(id.as_str()).or_default().push(file.as_str());
        }
        for files in by_id.values().filter(|f| f.len() > 1) {
            let bytes: Vec<Vec<u8>> = files
                .iter()
                .map(|f| std::fs::read(corpus().join(f)).expect("read"))
                .collect();
            assert!(
                bytes.windows(2).all(|w| w[0] == w[1]),
                "{files:?} share a job id"
            );
        }

        // Each job ends applied or dead-lettered: wait until they add up.
        let conn = store.conn();
        let n = by_id.len() as i64;
        let mut dead = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            while let Some(d) = broker
                .get(&broker.names.dead_letters(), Duration::ZERO)
                .await
            {
                let reason = d.header("x-gochat-reason").unwrap_or_default();
                dead.insert(d.message_id.clone().unwrap_or_default(), reason);
            }
            let applied = count(
                conn,
                "SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id LIKE 'mailgate-%' AND message_id NOT LIKE '%:%'",
            )
            .await;
            if applied + dead.len() as i64 == n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {applied} applied and {} dead-lettered of {n} after 120 s",
                dead.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let mut mismatched = Vec::new();
        for (file, id) in &jobs {
            let raw = raw_mails::Entity::find()
                .filter(raw_mails::Column::JobMessageId.eq(id.as_str()))
                .one(conn)
                .await
                .expect("query")
                .unwrap_or_else(|| panic!("{file}: its raw bytes were not stored"));
            assert_eq!(
                raw.data,
                std::fs::read(corpus().join(file)).expect("read"),
                "{file}"
            );
            if let Some(reason) = dead.get(id) {
                assert!(!reason.is_empty(), "{file}: dead-lettered without a reason");
                assert!(!reason.contains("panicked"), "{file}: {reason}");
                continue;
            }
            let want = expected[file]["class"].as_str().unwrap_or_default();
            if raw.classification.as_deref() != Some(want) {
                mismatched.push(format!("{file}: {:?}, expected {want}", raw.classification));
            }
        }
        assert!(
            mismatched.is_empty(),
            "classified otherwise:\n{}",
            mismatched.join("\n")
        );
        for (file, _) in jobs.iter().filter(|(f, _)| f.starts_with("bounces/")) {
            assert_eq!(expected[file]["class"], "bounce", "{file}");
        }
        // What may be refused: mail with no sender at all (these come without an envelope
        // sender), or with nothing to parse; and only that.
        for (id, reason) in &dead {
            let files = &by_id[id.as_str()];
            let raw = std::fs::read(corpus().join(files[0])).expect("read");
            match gochat::mail::parse::parse(&raw) {
                Ok(p) => {
                    assert!(reason.contains("no usable sender"), "{files:?}: {reason}");
                    assert!(
                        p.from.is_none(),
                        "{files:?} has a sender but was refused: {reason}"
                    );
                }
                Err(_) => assert!(reason.contains("cannot be parsed"), "{files:?}: {reason}"),
            }
        }
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(200)]).await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgate_exit_codes_tell_the_mta_what_to_do() {
    let broker = TestBroker::new().await;
    let env = gate_env(&broker);
    let mail = TestMail::new("ada@acme.example", SUPPORT, "Hello", "Hi\n").bytes();

    // Confirmed: 0, the job id on stdout, the job in its queue.
    let out = mailgate(&mail, SUPPORT, Some("ada@acme.example"), &env);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let id = common::stdout(&out).trim().to_owned();
    assert!(id.starts_with("mailgate-"), "{id}");
    let job = broker
        .get(&broker.names.queue("inbound-mail"), Duration::from_secs(10))
        .await
        .expect("the job is queued");
    assert_eq!(job.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(job.json()["envelope_from"], "ada@acme.example");

    // Too large: 65 and one clear line.
    let mut small = env.clone();
    small.push(("GOCHAT_CONFIG", write_config("[mail]\nmax_size = 1000\n")));
    let big = vec![b'a'; 5000];
    let out = mailgate(&big, SUPPORT, None, &small);
    assert_eq!(out.status.code(), Some(65));
    let err = common::stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("mail.max_size"), "{err}");
    // Empty: 65.
    assert_eq!(mailgate(b"", SUPPORT, None, &env).status.code(), Some(65));
    // A recipient that is no address (an MTA command line with a typo): 64, a usage
    // error, and nothing published.
    let out = mailgate(&mail, "${recipient}", None, &env);
    assert_eq!(out.status.code(), Some(64), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("is not a mail address"));
    assert!(
        broker
            .get(
                &broker.names.queue("inbound-mail"),
                Duration::from_millis(500)
            )
            .await
            .is_none(),
        "nothing published"
    );

    // The broker is unreachable: 75, the MTA keeps the mail.
    let down = vec![
        (
            "GOCHAT_AMQP_URL",
            format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                common::process::free_port()
            ),
        ),
        ("GOCHAT_AMQP_PREFIX", broker.prefix.clone()),
    ];
    let out = mailgate(&mail, SUPPORT, None, &down);
    assert_eq!(out.status.code(), Some(75), "{}", common::stderr(&out));
    // A broken configuration is temporary too: the mail must not bounce meanwhile.
    let mut broken = env.clone();
    broken.push((
        "GOCHAT_CONFIG",
        write_config("[mail]\nmax_size = \"big\"\n"),
    ));
    assert_eq!(
        mailgate(&mail, SUPPORT, None, &broken).status.code(),
        Some(75)
    );
    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

/// A config file in a temp folder that lives as long as the test process.
fn write_config(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let path = dir.join("gochat.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

both_backends!(
    reprocess_runs_a_stored_mail_again_without_storing_it_twice,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = common::broker::worker_config(&db, &broker);
        cfg.smtp.url = gochat::config::SecretUrl::new(sink.url());
        let worker = start_worker(cfg, Arc::new(SystemClock)).await;
        let conn = store.conn();
        let env = gate_env(&broker);
        let mail = TestMail::new("ada@acme.example", SUPPORT, "Printer", "Hi\n");
        let out = mailgate(&mail.bytes(), SUPPORT, None, &env);
        assert_eq!(out.status.code(), Some(0));
        let messages = "SELECT COUNT(*) AS n FROM messages WHERE direction = 'inbound'";
        eventually(Duration::from_secs(30), "stored", || async {
            (count(conn, messages).await == 1).then_some(())
        })
        .await;
        let raw = raw_mails::Entity::find()
            .one(conn)
            .await
            .expect("q")
            .expect("raw");

        // Run again as it is: recognised as a duplicate.
        let reprocess = |id: String| {
            let mut cmd = common::gochat(Path::new(env!("CARGO_MANIFEST_DIR")), &db.url);
            cmd.args(["mail", "reprocess", &id]);
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.output().expect("gochat mail reprocess")
        };
        let out = reprocess(raw.id.to_string());
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
        let job = common::stdout(&out).trim().to_owned();
        let sql = format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id = '{job}'");
        eventually(Duration::from_secs(30), "reprocessed", || async {
            (count(conn, &sql).await == 1).then_some(())
        })
        .await;
        assert_eq!(count(conn, messages).await, 1, "not stored twice");
        assert_eq!(
            count(conn, "SELECT COUNT(*) AS n FROM raw_mails").await,
            1,
            "the raw row is reused"
        );

        // Once its message is gone (say ops deleted it to thread it anew), it is stored again.
        count(conn, "SELECT COUNT(*) AS n FROM raw_mails").await;
        use sea_orm::ConnectionTrait;
        conn.execute_unprepared("DELETE FROM messages")
            .await
            .expect("delete");
        let out = reprocess(raw.id.to_string());
        assert_eq!(out.status.code(), Some(0));
        eventually(Duration::from_secs(30), "stored again", || async {
            (count(conn, messages).await == 1).then_some(())
        })
        .await;
        // An unknown id: exit 1.
        assert_eq!(
            reprocess(uuid::Uuid::now_v7().to_string()).status.code(),
            Some(1)
        );
        worker.stop().await;
        broker
            .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
            .await;
    }
);
