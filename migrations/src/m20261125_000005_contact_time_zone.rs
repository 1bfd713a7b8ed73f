//! A contact's time zone (IANA name), so that dates in the mail they get are their local
//! time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Contacts {
    Table,
    TimeZone,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Contacts::Table)
                .add_column(ColumnDef::new(Contacts::TimeZone).string_len(64).null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Contacts::Table)
                .drop_column(Contacts::TimeZone)
                .to_owned(),
        )
        .await
    }
}
