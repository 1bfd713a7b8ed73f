//! Opening the database: SQLite in WAL mode with a busy timeout, or a PostgreSQL pool; and
//! the schema-version gate that keeps `gochat run` off an un-migrated database.

use std::path::Path;

use gochat_migrations::Migrator;
use sea_orm::{ConnectOptions, Database, sqlx::sqlite::SqliteJournalMode};
use sea_orm_migration::MigratorTrait;

use super::{Store, StoreError};
use crate::config::DatabaseConfig;

impl Store {
    /// Connects to `config.url`, creating the SQLite folder if needed.
    pub async fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let url = config.url.expose();
        if let Some(path) = sqlite_path(url)
            && let Some(dir) = Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::SqliteFolder {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        let busy = config.busy_timeout;
        options
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            .connect_timeout(config.acquire_timeout)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |o| {
                // WAL lets readers (the inbox, readiness) run beside the one writer; the busy
                // timeout turns lock contention into a wait instead of an error.
                o.journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(busy)
                    .foreign_keys(true)
            });
        let db = Database::connect(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: config.url.redacted(),
                source,
            })?;
        Ok(Store { db })
    }

    /// Names of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        Ok(Migrator::get_pending_migrations(&self.db)
            .await?
            .iter()
            .map(|m| m.name().to_owned())
            .collect())
    }

    /// Applies every pending migration; returns how many ran. Idempotent.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let pending = self.pending_migrations().await?.len();
        Migrator::up(&self.db, None).await?;
        Ok(pending)
    }

    /// Refuses to go on when migrations are pending, unless `auto_migrate` applies them.
    pub async fn ensure_schema(&self, auto_migrate: bool) -> Result<(), StoreError> {
        let pending = self.pending_migrations().await?;
        if pending.is_empty() {
            return Ok(());
        }
        if auto_migrate {
            tracing::info!(
                count = pending.len(),
                "applying pending migrations (auto_migrate)"
            );
            self.migrate().await?;
            return Ok(());
        }
        Err(StoreError::NotMigrated { pending })
    }
}

/// The file path of a `sqlite://PATH?...` URL, `None` for memory databases and other backends.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/gochat.db?mode=rwc").as_deref(),
            Some("data/gochat.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db").as_deref(),
            Some("/var/lib/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
