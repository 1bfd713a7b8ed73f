//! Shared test support: a fresh database per test (SQLite file or PostgreSQL database
//! `gochat_test_<uuid>`, dropped afterwards) and helpers to run the `gochat` binary.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod api;
pub mod broker;
pub mod fixtures;
pub mod mail;
pub mod postgres;
pub mod process;
pub mod rabbit;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gochat::config::{DatabaseConfig, SecretUrl};
use gochat::store::Store;
use sea_orm::{ConnectionTrait, Database};

/// Admin URL of the PostgreSQL server the tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("GOCHAT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test only.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// The PostgreSQL database to drop, or the SQLite folder to delete, on drop.
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/gochat.db?mode=rwc", dir.path().display());
                TestDb {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("gochat_test_{}", uuid::Uuid::now_v7().simple());
                let admin = Database::connect(pg_admin_url())
                    .await
                    .expect("PostgreSQL reachable");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create database");
                admin.close().await.ok();
                let base = pg_admin_url();
                let url = match base.rfind('/') {
                    Some(i) => format!("{}/{name}", &base[..i]),
                    None => panic!("bad GOCHAT_TEST_PG_URL {base}"),
                };
                TestDb {
                    url,
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: SecretUrl::new(self.url.clone()),
            max_connections: 5,
            ..DatabaseConfig::default()
        }
    }

    /// A connected, migrated store.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.config()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime we may use; a thread with its own runtime is safe in
        // both sync and async tests.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) = Database::connect(pg_admin_url()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Runs `body` once per backend: `both_backends!(name, |db| async move { ... })` defines the
/// tests `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = common::TestDb::new(common::Backend::Sqlite).await;
                ($body)(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = common::TestDb::new(common::Backend::Postgres).await;
                ($body)(db).await;
            }
        }
    };
}

/// The `gochat` binary built for this test run.
pub fn gochat_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gochat"))
}

/// `gochat` with a clean environment: only the given overrides, run in `dir`.
pub fn gochat(dir: &Path, db_url: &str) -> Command {
    let mut cmd = Command::new(gochat_bin());
    cmd.current_dir(dir)
        .env_remove("GOCHAT_CONFIG")
        .env_remove("GOCHAT_AMQP_PREFIX")
        .env_remove("RUST_LOG")
        .env("GOCHAT_DATABASE_URL", db_url)
        .env(
            "GOCHAT_WORKFLOWS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"),
        );
    cmd
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `promtool`, from Debian's `prometheus` package (`.ci/run` installs it).
pub fn promtool() -> Command {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        found,
        "promtool is not installed: `apt-get install prometheus` (or run .ci/run, which does)"
    );
    Command::new("promtool")
}

/// `promtool check metrics` on a Prometheus text exposition: `Err` with its complaints.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run promtool: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("write to promtool: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `SELECT COUNT(*) AS n ...` on either database.
pub async fn count(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .expect("query")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

/// The fixed start of the tests on a manual clock: Monday 2026-11-23 10:00 UTC.
pub fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc)
}

/// The one text column `r` of each row `sql` returns.
pub async fn texts(store: &Store, sql: &str) -> Vec<String> {
    let conn = store.conn();
    conn.query_all_raw(sea_orm::Statement::from_string(
        conn.get_database_backend(),
        sql,
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
    .iter()
    .map(|r| r.try_get::<String>("", "r").expect("r"))
    .collect()
}
