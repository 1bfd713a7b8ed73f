//! Customers, contacts and the many-to-many link between them.

use sea_orm_migration::{prelude::*, schema::*};

use crate::{fk, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
pub enum Customers {
    Table,
    Id,
    ExternalId,
    Name,
    Attributes,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub enum Contacts {
    Table,
    Id,
    Kind,
    Address,
    DisplayName,
    Language,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum CustomerContacts {
    Table,
    CustomerId,
    ContactId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Customers::Table)
                .if_not_exists()
                .col(uuid(Customers::Id).primary_key())
                .col(string_uniq(Customers::ExternalId))
                .col(string(Customers::Name))
                .col(json(Customers::Attributes))
                .col(timestamp_with_time_zone(Customers::CreatedAt))
                .col(timestamp_with_time_zone(Customers::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Contacts::Table)
                .if_not_exists()
                .col(uuid(Contacts::Id).primary_key())
                .col(string_len(Contacts::Kind, 16))
                .col(string(Contacts::Address))
                .col(string_null(Contacts::DisplayName))
                .col(string_len_null(Contacts::Language, 35))
                .col(timestamp_with_time_zone(Contacts::CreatedAt))
                .col(timestamp_with_time_zone(Contacts::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            index(
                "ux_contacts_kind_address",
                Contacts::Table,
                &[Contacts::Kind, Contacts::Address],
            )
            .unique()
            .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(CustomerContacts::Table)
                .if_not_exists()
                .col(uuid(CustomerContacts::CustomerId))
                .col(uuid(CustomerContacts::ContactId))
                .col(timestamp_with_time_zone(CustomerContacts::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(CustomerContacts::CustomerId)
                        .col(CustomerContacts::ContactId),
                )
                .foreign_key(&mut fk(
                    "fk_customer_contacts_customer",
                    CustomerContacts::Table,
                    CustomerContacts::CustomerId,
                    Customers::Table,
                    Customers::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_customer_contacts_contact",
                    CustomerContacts::Table,
                    CustomerContacts::ContactId,
                    Contacts::Table,
                    Contacts::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_customer_contacts_contact",
            CustomerContacts::Table,
            &[CustomerContacts::ContactId],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            CustomerContacts::Table.into_iden(),
            Contacts::Table.into_iden(),
            Customers::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
