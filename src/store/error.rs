//! Store errors, split into transient (retry the job later) and permanent (dead-letter it).

use sea_orm::DbErr;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}: {source}")]
    Connect {
        /// Redacted: never the password.
        url: String,
        #[source]
        source: DbErr,
    },
    #[error(
        "the database schema is not up to date ({} pending migration(s): {}); run `gochat migrate` \
         or set database.auto_migrate = true",
        pending.len(), pending.join(", ")
    )]
    NotMigrated { pending: Vec<String> },
    #[error("cannot create the SQLite folder {path}: {source}")]
    SqliteFolder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("thread {thread_id} changed concurrently (was at version {version}); retry")]
    Conflict { thread_id: uuid::Uuid, version: i64 },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl StoreError {
    /// An insert that met a row with the same unique key (a concurrent copy of the same
    /// thing).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))))
    }

    /// A failure worth retrying: the database is unreachable, the pool is exhausted, or a
    /// lock could not be taken. Everything else is a fact about the input.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect { .. } | StoreError::Conflict { .. } => true,
            StoreError::Db(e) => db_err_is_transient(e),
            _ => false,
        }
    }
}

/// Connection loss, pool timeouts, lock timeouts and serialisation failures are transient.
pub fn db_err_is_transient(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(_) | DbErr::Query(_) => {
            let text = e.to_string().to_ascii_lowercase();
            [
                "database is locked",
                "busy",
                "connection",
                "pool timed out",
                "could not serialize",
                "deadlock",
                "lock timeout",
                "terminating connection",
                "broken pipe",
                "the database system is",
                "io error",
            ]
            .iter()
            .any(|needle| text.contains(needle))
        }
        _ => false,
    }
}
