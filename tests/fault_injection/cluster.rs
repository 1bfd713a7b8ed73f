//! The system under test: an own PostgreSQL cluster, an own RabbitMQ node, an SMTP sink and
//! three `gochat run` replicas sharing one queue prefix, one database and one mail server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::postgres::OwnPostgres;
use crate::common::process::{Worker, free_port, get, sigterm_and_wait, start_worker};
use crate::common::rabbit::OwnRabbit;
use crate::common::smtp::SmtpSink;

pub const REPLICAS: usize = 3;
pub const PREFIX: &str = "fault.";
/// The test lifecycle: the default one's ladder, with seconds instead of days.
pub const FAST_LIFECYCLE: &str = "fast";
/// The retry ladder: about half a minute in all, longer than any outage the test makes.
const RETRY_DELAYS: &str = r#"["500ms", "1s", "2s", "4s", "8s", "16s"]"#;

pub struct Replica {
    pub port: u16,
    pub worker: Option<Worker>,
}

pub struct Cluster {
    pub pg: OwnPostgres,
    pub rabbit: OwnRabbit,
    pub sink: SmtpSink,
    pub db_url: String,
    pub store: gochat::store::Store,
    pub replicas: Vec<Replica>,
    dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let t = Instant::now();
        let (pg, rabbit, sink) = tokio::task::spawn_blocking(|| {
            let pg = std::thread::spawn(OwnPostgres::start);
            let sink = std::thread::spawn(SmtpSink::start);
            let rabbit = OwnRabbit::start();
            (
                pg.join().expect("PostgreSQL started"),
                rabbit,
                sink.join().expect("SMTP sink started"),
            )
        })
        .await
        .expect("start the services");
        eprintln!(
            "fault injection: PostgreSQL on {}, RabbitMQ on {}, SMTP on {} in {:.1?}",
            pg.port,
            rabbit.port,
            sink.port,
            t.elapsed()
        );
        let admin = sea_orm::Database::connect(pg.url("postgres"))
            .await
            .expect("connect to the own PostgreSQL");
        sea_orm::ConnectionTrait::execute_unprepared(&admin, "CREATE DATABASE gochat")
            .await
            .expect("create database");
        admin.close().await.ok();
        let db_url = pg.url("gochat");
        let config = gochat::config::DatabaseConfig {
            url: gochat::config::SecretUrl::new(db_url.clone()),
            max_connections: 4,
            ..Default::default()
        };
        let store = gochat::store::Store::connect(&config)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");

        crate::common::process::sweep_stale("gochat-fault-");
        let dir = tempfile::Builder::new()
            .prefix("gochat-fault-")
            .tempdir()
            .expect("tempdir");
        crate::common::process::claim_dir(dir.path());
        write_workflows(dir.path());
        std::fs::write(
            dir.path().join("gochat.toml"),
            format!(
                "[database]\nmax_connections = 10\nacquire_timeout = \"2s\"\n\
                 [amqp]\nretry_delays = {RETRY_DELAYS}\nconfirm_timeout = \"5s\"\n\
                 [smtp]\ntimeout = \"5s\"\nmax_attempts = 12\n\
                 [scheduler]\ninterval = \"200ms\"\n"
            ),
        )
        .expect("write config");
        let mut cluster = Cluster {
            pg,
            rabbit,
            sink,
            db_url,
            store,
            replicas: (0..REPLICAS)
                .map(|_| Replica {
                    port: free_port(),
                    worker: None,
                })
                .collect(),
            dir,
        };
        for i in 0..REPLICAS {
            cluster.start_replica(i);
        }
        for i in 0..REPLICAS {
            cluster.wait_ready(i).await;
        }
        eprintln!(
            "fault injection: {REPLICAS} replicas ready after {:.1?}",
            t.elapsed()
        );
        cluster
    }

    pub fn amqp_url(&self) -> String {
        self.rabbit.url()
    }

    pub fn readyz(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}/readyz", self.replicas[i].port)
    }

    /// Starts replica `i` (again), on its own HTTP port.
    pub fn start_replica(&mut self, i: usize) {
        let config = self.dir.path().join("gochat.toml").display().to_string();
        let workflows = self.dir.path().join("workflows").display().to_string();
        let amqp = self.rabbit.url();
        let smtp = self.sink.url();
        let worker = start_worker(
            self.dir.path(),
            &self.db_url,
            self.replicas[i].port,
            &[
                ("GOCHAT_CONFIG", &config),
                ("GOCHAT_WORKFLOWS", &workflows),
                ("GOCHAT_AMQP_URL", &amqp),
                ("GOCHAT_AMQP_PREFIX", PREFIX),
                ("GOCHAT_SMTP_URL", &smtp),
                ("RUST_LOG", "warn"),
            ],
        );
        self.replicas[i].worker = Some(worker);
    }

    /// Waits until replica `i` answers 200 on `/readyz`; fails with its log if it does not
    /// within 30 s.
    pub async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&self.readyz(i)).await.map(|(code, _)| code) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "replica {i} never got ready; its log:\n{}",
                self.replicas[i]
                    .worker
                    .as_ref()
                    .map(|w| w.log())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deliveries replica `i` has taken from the broker and not yet settled (from its
    /// `/metrics`: consumed minus finished), or `None` if it does not answer.
    pub async fn in_flight(&self, i: usize) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.replicas[i].port);
        let (_, text) = get(&url).await?;
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Some(sum("gochat_jobs_consumed_total") - sum("gochat_jobs_total"))
    }

    /// Waits (up to 5 s) until replica `i` holds at least one unsettled delivery, so a fault
    /// aimed at it lands mid-batch; returns how many it held when last asked.
    pub async fn wait_busy(&self, i: usize) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.in_flight(i).await.unwrap_or(0.0);
            if n >= 1.0 || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL: the process dies with whatever it holds (unacked deliveries, open
    /// transactions, a message half sent).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut w) = self.replicas[i].worker.take() {
            w.0.kill().expect("SIGKILL");
            w.0.wait().expect("reap");
        }
    }

    /// SIGTERM and wait: the exit code and the replica's log.
    pub fn terminate(&mut self, i: usize) -> (Option<i32>, String) {
        let mut w = self.replicas[i].worker.take().expect("replica running");
        sigterm_and_wait(&mut w)
    }

    /// Every live replica's log, for failure messages.
    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let log = r.worker.as_ref()?.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                Some(format!(
                    "--- replica {i} (last lines) ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn stop_all(&mut self) -> Duration {
        let t = Instant::now();
        for i in 0..REPLICAS {
            if self.replicas[i].worker.is_some() {
                let (code, log) = self.terminate(i);
                assert_eq!(code, Some(0), "replica {i} stopped badly:\n{log}");
            }
        }
        t.elapsed()
    }
}

/// The repository's workflows plus the `fast` lifecycle: the default ladder in seconds.
fn write_workflows(dir: &Path) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let dst = dir.join("workflows");
    copy_dir(&src, &dst);
    let default = std::fs::read_to_string(dst.join("lifecycles/default.yaml")).expect("default");
    let fast = default
        .replace("name: default", &format!("name: {FAST_LIFECYCLE}"))
        .replace(
            "default: true",
            &format!("default: false\nselector:\n  tags: [{FAST_LIFECYCLE}]"),
        )
        .replace("after: 3d", "after: 2s");
    assert!(
        fast.contains("after: 2s"),
        "the default ladder changed shape"
    );
    std::fs::write(dst.join(format!("lifecycles/{FAST_LIFECYCLE}.yaml")), fast)
        .expect("write the fast lifecycle");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read workflows") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy");
        }
    }
}
