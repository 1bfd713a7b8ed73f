//! API keys of the inbox HTTP API. Only a SHA-256 of each key's secret is kept: the secret
//! is shown once, at creation, and a leaked database does not leak working keys.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Scope,
    SecretHash,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .if_not_exists()
                .col(uuid(ApiKeys::Id).primary_key())
                .col(string(ApiKeys::Name))
                .col(string_len(ApiKeys::Scope, 16))
                .col(string_len(ApiKeys::SecretHash, 64))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ApiKeys::Table).if_exists().to_owned())
            .await
    }
}
