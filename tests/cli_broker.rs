//! The commands that talk to the broker, as processes: `gochat publish` (validation before
//! anything is sent, confirms, the ids it prints, exit codes) and `gochat run` reloading
//! its workflows on SIGHUP (a valid set replaces the old one; an invalid one is refused and
//! the old one stays in force), and `gochat bench e2e` at a toy size.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::{TestBroker, eventually};
use common::process::{free_port, start_worker, wait_status};
use common::{Backend, TestDb, gochat, stderr, stdout};
use serde_json::json;

fn publish(
    dir: &std::path::Path,
    broker: &TestBroker,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = gochat(dir, "sqlite::memory:")
        .env("GOCHAT_AMQP_PREFIX", &broker.prefix)
        .env("GOCHAT_AMQP_URL", common::broker::amqp_url())
        .arg("publish")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gochat publish");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn upsert(external_id: &str) -> serde_json::Value {
    json!({"schema": "customer-upsert/v1", "external_id": external_id, "name": external_id.to_uppercase()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_validates_everything_first_then_confirms_and_prints_each_id() {
    let broker = TestBroker::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = broker.names.queue("customer-upsert");

    // JSON lines on stdin: two jobs, each confirmed, each id printed.
    let lines = format!("{}\n\n{}\n", upsert("acme"), upsert("globex"));
    let out = publish(dir.path(), &broker, &["customer-upsert"], &lines);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id} is not a UUID");
    }
    assert_ne!(ids[0], ids[1]);
    let first = broker
        .get(&queue, Duration::from_secs(5))
        .await
        .expect("first job queued");
    assert_eq!(first.message_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(first.json()["external_id"], "acme");
    let second = broker
        .get(&queue, Duration::from_secs(5))
        .await
        .expect("second job queued");
    assert_eq!(second.message_id.as_deref(), Some(ids[1].as_str()));

    // A file with one valid and one invalid payload: refused whole, nothing published.
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            upsert("initech"),
            json!({"schema": "customer-upsert/v1", "name": "no external id"})
        ),
    )
    .expect("write");
    let out = publish(
        dir.path(),
        &broker,
        &["customer-upsert", file.to_str().expect("utf-8")],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("payload 2 refused"), "{err}");
    assert!(err.contains("external_id"), "{err}");
    assert!(err.contains("nothing published"), "{err}");
    assert!(stdout(&out).is_empty());
    assert!(
        broker
            .get(&queue, Duration::from_millis(500))
            .await
            .is_none(),
        "the valid payload of a refused batch was published"
    );

    // A chosen message id (the idempotency key) is used as given.
    let out = publish(
        dir.path(),
        &broker,
        &["customer-upsert", "-", "--message-id", "crm-42"],
        &upsert("hooli").to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "crm-42");
    let got = broker
        .get(&queue, Duration::from_secs(5))
        .await
        .expect("queued");
    assert_eq!(got.message_id.as_deref(), Some("crm-42"));

    // Usage errors: an unknown kind is exit 2 and names the known kinds.
    let out = publish(dir.path(), &broker, &["reticulate-splines"], "{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("customer-upsert"), "{}", stderr(&out));

    // No broker: a clear error and a non-zero exit, never a silent success.
    std::fs::write(&file, format!("{}\n", upsert("initech"))).expect("write");
    let out = gochat(dir.path(), "sqlite::memory:")
        .env(
            "GOCHAT_AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        )
        .args(["publish", "customer-upsert", file.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("broker"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());

    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_workflow_set_and_keeps_the_old_one_when_the_new_is_invalid() {
    let db = TestDb::new(Backend::Sqlite).await;
    let _store = db.store().await; // migrated
    let mut broker = TestBroker::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let workflows = dir.path().join("workflows");
    copy_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows")),
        &workflows,
    );
    let port = free_port();
    let worker = start_worker(
        dir.path(),
        &db.url,
        port,
        &[
            ("GOCHAT_AMQP_PREFIX", &broker.prefix),
            ("GOCHAT_WORKFLOWS", workflows.to_str().expect("utf-8")),
            ("RUST_LOG", "info"),
        ],
    );
    wait_status(&format!("http://127.0.0.1:{port}/readyz"), 200).await;
    let tap = broker.tap_events().await;
    let event_for = |id: &'static str| {
        let broker = &broker;
        let tap = tap.clone();
        async move {
            broker
                .publish_json("customer-upsert", id, &upsert(id))
                .await;
            broker
                .get(&tap, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("no event for {id}"))
        }
    };

    let before = event_for("acme").await;
    assert_eq!(before.routing_key, "customer.created");

    // Ops rename the event: after SIGHUP new jobs use the new workflow.
    let file = workflows.join("jobs/customer-upsert.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    let renamed = original.replace("name: customer.created", "name: customer.onboarded");
    assert_ne!(
        renamed, original,
        "the shipped workflow names customer.created"
    );
    rewrite_and_hangup(&worker, &file, &renamed, "workflows reloaded").await;
    let after = event_for("globex").await;
    assert_eq!(after.routing_key, "customer.onboarded");

    // A broken file: refused with its location, and the running set stays in force.
    let broken = renamed.replace("action: upsert_customer", "action: upsert_custome");
    rewrite_and_hangup(&worker, &file, &broken, "NOT reloaded").await;
    let log = worker.log();
    assert!(log.contains("customer-upsert.yaml"), "{log}");
    assert!(
        log.contains("upsert_customer"),
        "the hint names the action: {log}"
    );
    let still = event_for("initech").await;
    assert_eq!(still.routing_key, "customer.onboarded");
    assert_eq!(
        broker.depth(&broker.names.dead_letters()).await,
        0,
        "no job failed across the reloads"
    );
    drop(worker);
    broker
        .cleanup(&gochat::config::AmqpConfig::default().retry_delays)
        .await;
}

/// Writes `text` to `file`, sends `process` SIGHUP and waits until its log says `logged`.
async fn rewrite_and_hangup(
    process: &common::process::Worker,
    file: &std::path::Path,
    text: &str,
    logged: &str,
) {
    std::fs::write(file, text).expect("write");
    hangup(process);
    eventually(Duration::from_secs(10), logged, || async {
        process.log().contains(logged).then_some(())
    })
    .await;
}

fn hangup(worker: &common::process::Worker) {
    let status = Command::new("kill")
        .args(["-HUP", &worker.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

/// `gochat bench e2e` at a toy size: the figures are for a release build, this checks the
/// command itself, which runs a real `gochat run` process (with the threads asked for) on
/// PostgreSQL and RabbitMQ and ends with its JSON report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_runs_a_worker_process_and_ends_with_its_json_report() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let out = gochat(dir.path(), &db.url)
        .env("GOCHAT_AMQP_URL", common::broker::amqp_url())
        .args(
            "bench e2e --rate 40 --seconds 1 --burst 200 --threads 20 --timers 100 \
             --reminders 5 --backlog 0 --worker-threads 1 --corpus"
                .split_whitespace(),
        )
        .arg(&corpus)
        .args(["--database-url", &db.url])
        .output()
        .expect("run gochat bench e2e");
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert!(text.contains("worker threads 1"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a last line")).expect("JSON last line");
    assert_eq!(report["bench"], "e2e", "{report}");
    assert_eq!(report["worker_threads"], 1, "{report}");
    assert_eq!(report["dead_letters"], 0, "{report}");
    assert_eq!(report["reminders_fired"], 5, "{report}");
    assert!(
        report["inbound_mail"]["max"]["per_sec"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(report["mails_delivered"].as_u64() > Some(0), "{report}");
    assert!(report["peak_rss_mb"].as_f64() > Some(0.0), "{report}");
}

/// `gochat api` reloads its lifecycles on SIGHUP like the worker does its workflows: a new
/// status colour shows at once, and a broken set is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_apis_lifecycles_and_keeps_them_when_the_new_set_is_invalid() {
    use gochat::store::api_keys::{self, Scope};
    use gochat::store::threads::{self, NewThread};
    use gochat_entities::threads::ThreadStatus;

    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await; // migrated
    let now = chrono::Utc::now();
    let (_, key) = api_keys::create(store.conn(), "reader", Scope::Read, now)
        .await
        .expect("key");
    let system = json!({"kind": "system", "id": "test", "name": "test"});
    let thread = threads::create(
        store.conn(),
        NewThread::new("Printer on fire", ThreadStatus::Open, Vec::new()),
        &system,
        now,
    )
    .await
    .expect("thread");
    let dir = tempfile::tempdir().expect("tempdir");
    let workflows = dir.path().join("workflows");
    copy_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows")),
        &workflows,
    );
    let port = free_port();
    let log = dir.path().join("api.log");
    let prefix = format!("test-{}.", uuid::Uuid::now_v7().simple());
    let child = gochat(dir.path(), &db.url)
        .env("GOCHAT_WORKFLOWS", &workflows)
        .env("GOCHAT_API_ADDR", format!("127.0.0.1:{port}"))
        .env("GOCHAT_AMQP_PREFIX", &prefix)
        .env("RUST_LOG", "info")
        .arg("api")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn gochat api");
    let api = common::process::Worker::adopt(child, log, prefix);
    wait_status(&format!("http://127.0.0.1:{port}/healthz"), 200).await;
    let colour = || {
        let key = key.clone();
        async move {
            let body: serde_json::Value = reqwest::Client::new()
                .get(format!(
                    "http://127.0.0.1:{port}/api/v1/threads/{}",
                    thread.id
                ))
                .bearer_auth(&key)
                .send()
                .await
                .expect("GET thread")
                .json()
                .await
                .expect("json");
            body["thread"]["status_colour"]
                .as_str()
                .unwrap_or_else(|| panic!("no colour in {body}"))
                .to_owned()
        }
    };
    assert_eq!(colour().await, "#d32f2f");

    let file = workflows.join("lifecycles/default.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    let recoloured = original.replace(
        r##"open:     { colour: "#d32f2f" }"##,
        r##"open:     { colour: "#123456" }"##,
    );
    assert_ne!(
        recoloured, original,
        "the shipped lifecycle colours open #d32f2f"
    );
    rewrite_and_hangup(&api, &file, &recoloured, "lifecycles reloaded").await;
    assert_eq!(colour().await, "#123456");

    let broken = recoloured.replace("statuses:", "statusez:");
    rewrite_and_hangup(&api, &file, &broken, "NOT reloaded").await;
    assert!(api.log().contains("default.yaml"), "{}", api.log());
    assert_eq!(colour().await, "#123456", "the running lifecycles stay");
}
