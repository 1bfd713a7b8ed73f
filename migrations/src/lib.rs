//! The Go!Chat schema as migrations, one file per concern, named by date. The same
//! migrations run on SQLite and PostgreSQL: only portable column types are used, and
//! enumerations are plain strings checked by the application (SQLite has no enum types).

pub use sea_orm_migration;
use sea_orm_migration::prelude::*;

mod m20261124_000001_customers;
mod m20261124_000002_threads;
mod m20261124_000003_jobs;
mod m20261125_000004_inbound;
mod m20261125_000005_contact_time_zone;
mod m20261125_000006_outbox_unpublished;
mod m20261203_000007_toast_lz4;
mod m20261203_000008_partial_indexes;
mod m20261207_000009_replies_index;
mod m20261207_000010_search;
mod m20261207_000011_api_keys;
mod m20261207_000012_dead_jobs;
mod m20261207_000013_inbox_order;
pub mod search_text;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_customers::Migration),
            Box::new(m20261124_000002_threads::Migration),
            Box::new(m20261124_000003_jobs::Migration),
            Box::new(m20261125_000004_inbound::Migration),
            Box::new(m20261125_000005_contact_time_zone::Migration),
            Box::new(m20261125_000006_outbox_unpublished::Migration),
            Box::new(m20261203_000007_toast_lz4::Migration),
            Box::new(m20261203_000008_partial_indexes::Migration),
            Box::new(m20261207_000009_replies_index::Migration),
            Box::new(m20261207_000010_search::Migration),
            Box::new(m20261207_000011_api_keys::Migration),
            Box::new(m20261207_000012_dead_jobs::Migration),
            Box::new(m20261207_000013_inbox_order::Migration),
        ]
    }
}

/// A migration that is only plain SQL, up and down, as data:
/// `sql_migration!(up: ["CREATE …", …], down: ["DROP …", …]);` defines `Migration`.
macro_rules! sql_migration {
    (up: [$($up:expr),+ $(,)?], down: [$($down:expr),+ $(,)?] $(,)?) => {
        #[derive(DeriveMigrationName)]
        pub struct Migration;

        #[async_trait::async_trait]
        impl MigrationTrait for Migration {
            async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
                $crate::exec_all(m, &[$($up),+]).await
            }

            async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
                $crate::exec_all(m, &[$($down),+]).await
            }
        }
    };
}
use sql_migration;

/// Runs plain SQL statements, in order: for what both databases take as written (partial
/// indexes) and what sea-query does not build.
pub(crate) async fn exec_all(m: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = m.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// `CREATE INDEX IF NOT EXISTS <name> ON <table> (<cols>)`.
pub(crate) fn index<T: IntoIden + Copy, C: IntoIden + Copy>(
    name: &str,
    table: T,
    cols: &[C],
) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table).if_not_exists();
    for c in cols {
        i.col(*c);
    }
    i.to_owned()
}

/// A foreign key from `from.col` to `to.id`.
pub(crate) fn fk<A: IntoIden + Copy, B: IntoIden + Copy, C: IntoIden + Copy, D: IntoIden + Copy>(
    name: &str,
    from: A,
    col: B,
    to: C,
    to_col: D,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from, col)
        .to(to, to_col)
        .on_delete(on_delete)
        .to_owned()
}
