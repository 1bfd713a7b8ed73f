//! Threads and their feed: tags, customers, raw mails, messages, attachment blobs,
//! comments and the audit events.

use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261124_000001_customers::{Contacts, Customers};
use crate::{fk, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
pub enum Threads {
    Table,
    Id,
    Subject,
    Status,
    Assignee,
    Lifecycle,
    LifecycleStep,
    ReplyToken,
    Mailbox,
    LinkedThreadId,
    Version,
    Flags,
    CreatedAt,
    UpdatedAt,
    LastMessageAt,
    Snippet,
    HasAttachments,
    AttachmentNames,
    ItemCount,
    ContactId,
}

#[derive(DeriveIden, Clone, Copy)]
enum ThreadTags {
    Table,
    ThreadId,
    Tag,
}

#[derive(DeriveIden, Clone, Copy)]
enum ThreadCustomers {
    Table,
    ThreadId,
    CustomerId,
    AddedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum RawMails {
    Table,
    Id,
    JobMessageId,
    EnvelopeFrom,
    Recipients,
    Mailbox,
    Size,
    Sha256,
    Data,
    Status,
    Error,
    MessageRowId,
    ReceivedAt,
    ProcessedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Messages {
    Table,
    Id,
    ThreadId,
    Direction,
    Channel,
    ContactId,
    MessageIdHeader,
    InReplyTo,
    References,
    FromAddress,
    FromName,
    ToAddresses,
    CcAddresses,
    Subject,
    TextBody,
    HtmlBody,
    Classification,
    Kind,
    State,
    Error,
    SmtpReply,
    Attempts,
    Author,
    RawMailId,
    JobMessageId,
    DedupeKey,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Blobs {
    Table,
    Sha256,
    Size,
    Data,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Attachments {
    Table,
    Id,
    MessageId,
    Name,
    ContentType,
    Size,
    Sha256,
    Inline,
    ContentId,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Comments {
    Table,
    Id,
    ThreadId,
    Author,
    Body,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ThreadEvents {
    Table,
    Id,
    ThreadId,
    Kind,
    Actor,
    Before,
    After,
    Detail,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Threads::Table)
                .if_not_exists()
                .col(uuid(Threads::Id).primary_key())
                .col(string(Threads::Subject))
                .col(string_len(Threads::Status, 16))
                .col(string_null(Threads::Assignee))
                .col(string(Threads::Lifecycle))
                .col(integer_null(Threads::LifecycleStep))
                .col(string_uniq(Threads::ReplyToken))
                .col(string_null(Threads::Mailbox))
                .col(uuid_null(Threads::LinkedThreadId))
                .col(big_integer(Threads::Version))
                .col(json(Threads::Flags))
                .col(timestamp_with_time_zone(Threads::CreatedAt))
                .col(timestamp_with_time_zone(Threads::UpdatedAt))
                .col(timestamp_with_time_zone_null(Threads::LastMessageAt))
                .col(text_null(Threads::Snippet))
                .col(boolean(Threads::HasAttachments).default(false))
                .col(json(Threads::AttachmentNames))
                .col(integer(Threads::ItemCount).default(0))
                .col(uuid_null(Threads::ContactId))
                .foreign_key(&mut fk(
                    "fk_threads_contact",
                    Threads::Table,
                    Threads::ContactId,
                    Contacts::Table,
                    Contacts::Id,
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_threads_status_updated",
            Threads::Table,
            &[Threads::Status, Threads::UpdatedAt],
        ))
        .await?;
        m.create_index(index(
            "ix_threads_assignee_updated",
            Threads::Table,
            &[Threads::Assignee, Threads::UpdatedAt],
        ))
        .await?;
        m.create_index(index(
            "ix_threads_updated",
            Threads::Table,
            &[Threads::UpdatedAt],
        ))
        .await?;
        m.create_index(index(
            "ix_threads_last_message",
            Threads::Table,
            &[Threads::LastMessageAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ThreadTags::Table)
                .if_not_exists()
                .col(uuid(ThreadTags::ThreadId))
                .col(string(ThreadTags::Tag))
                .primary_key(
                    Index::create()
                        .col(ThreadTags::ThreadId)
                        .col(ThreadTags::Tag),
                )
                .foreign_key(&mut fk(
                    "fk_thread_tags_thread",
                    ThreadTags::Table,
                    ThreadTags::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_thread_tags_tag",
            ThreadTags::Table,
            &[ThreadTags::Tag, ThreadTags::ThreadId],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ThreadCustomers::Table)
                .if_not_exists()
                .col(uuid(ThreadCustomers::ThreadId))
                .col(uuid(ThreadCustomers::CustomerId))
                .col(timestamp_with_time_zone(ThreadCustomers::AddedAt))
                .primary_key(
                    Index::create()
                        .col(ThreadCustomers::ThreadId)
                        .col(ThreadCustomers::CustomerId),
                )
                .foreign_key(&mut fk(
                    "fk_thread_customers_thread",
                    ThreadCustomers::Table,
                    ThreadCustomers::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_thread_customers_customer",
                    ThreadCustomers::Table,
                    ThreadCustomers::CustomerId,
                    Customers::Table,
                    Customers::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_thread_customers_customer",
            ThreadCustomers::Table,
            &[ThreadCustomers::CustomerId],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(RawMails::Table)
                .if_not_exists()
                .col(uuid(RawMails::Id).primary_key())
                .col(string_null(RawMails::JobMessageId).unique_key())
                .col(string_null(RawMails::EnvelopeFrom))
                .col(json(RawMails::Recipients))
                .col(string_null(RawMails::Mailbox))
                .col(big_integer(RawMails::Size))
                .col(string_len(RawMails::Sha256, 64))
                .col(blob(RawMails::Data))
                .col(string_len(RawMails::Status, 16))
                .col(text_null(RawMails::Error))
                .col(uuid_null(RawMails::MessageRowId))
                .col(timestamp_with_time_zone(RawMails::ReceivedAt))
                .col(timestamp_with_time_zone_null(RawMails::ProcessedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_raw_mails_status_received",
            RawMails::Table,
            &[RawMails::Status, RawMails::ReceivedAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Messages::Table)
                .if_not_exists()
                .col(uuid(Messages::Id).primary_key())
                .col(uuid(Messages::ThreadId))
                .col(string_len(Messages::Direction, 16))
                .col(string_len(Messages::Channel, 16))
                .col(uuid_null(Messages::ContactId))
                .col(string_null(Messages::MessageIdHeader))
                .col(string_null(Messages::InReplyTo))
                .col(json(Messages::References))
                .col(string(Messages::FromAddress))
                .col(string_null(Messages::FromName))
                .col(json(Messages::ToAddresses))
                .col(json(Messages::CcAddresses))
                .col(text(Messages::Subject))
                .col(text_null(Messages::TextBody))
                .col(text_null(Messages::HtmlBody))
                .col(string_len_null(Messages::Classification, 32))
                .col(string_len_null(Messages::Kind, 16))
                .col(string_len_null(Messages::State, 16))
                .col(text_null(Messages::Error))
                .col(text_null(Messages::SmtpReply))
                .col(integer(Messages::Attempts).default(0))
                .col(json_null(Messages::Author))
                .col(uuid_null(Messages::RawMailId))
                .col(string_null(Messages::JobMessageId))
                .col(string_null(Messages::DedupeKey).unique_key())
                .col(timestamp_with_time_zone(Messages::CreatedAt))
                .col(timestamp_with_time_zone(Messages::UpdatedAt))
                .col(timestamp_with_time_zone_null(Messages::SentAt))
                .foreign_key(&mut fk(
                    "fk_messages_thread",
                    Messages::Table,
                    Messages::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_contact",
                    Messages::Table,
                    Messages::ContactId,
                    Contacts::Table,
                    Contacts::Id,
                    ForeignKeyAction::SetNull,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_raw_mail",
                    Messages::Table,
                    Messages::RawMailId,
                    RawMails::Table,
                    RawMails::Id,
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_messages_message_id_header",
            Messages::Table,
            &[Messages::MessageIdHeader],
        ))
        .await?;
        m.create_index(index(
            "ix_messages_thread_created",
            Messages::Table,
            &[Messages::ThreadId, Messages::CreatedAt],
        ))
        .await?;
        m.create_index(index(
            "ix_messages_job",
            Messages::Table,
            &[Messages::JobMessageId],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Blobs::Table)
                .if_not_exists()
                .col(string_len(Blobs::Sha256, 64).primary_key())
                .col(big_integer(Blobs::Size))
                .col(blob(Blobs::Data))
                .col(timestamp_with_time_zone(Blobs::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Attachments::Table)
                .if_not_exists()
                .col(uuid(Attachments::Id).primary_key())
                .col(uuid(Attachments::MessageId))
                .col(string(Attachments::Name))
                .col(string(Attachments::ContentType))
                .col(big_integer(Attachments::Size))
                .col(string_len(Attachments::Sha256, 64))
                .col(boolean(Attachments::Inline).default(false))
                .col(string_null(Attachments::ContentId))
                .col(timestamp_with_time_zone(Attachments::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_attachments_message",
                    Attachments::Table,
                    Attachments::MessageId,
                    Messages::Table,
                    Messages::Id,
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_attachments_blob",
                    Attachments::Table,
                    Attachments::Sha256,
                    Blobs::Table,
                    Blobs::Sha256,
                    ForeignKeyAction::Restrict,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_attachments_message",
            Attachments::Table,
            &[Attachments::MessageId],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(Comments::Table)
                .if_not_exists()
                .col(uuid(Comments::Id).primary_key())
                .col(uuid(Comments::ThreadId))
                .col(json(Comments::Author))
                .col(text(Comments::Body))
                .col(timestamp_with_time_zone(Comments::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_comments_thread",
                    Comments::Table,
                    Comments::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_comments_thread_created",
            Comments::Table,
            &[Comments::ThreadId, Comments::CreatedAt],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table(ThreadEvents::Table)
                .if_not_exists()
                .col(uuid(ThreadEvents::Id).primary_key())
                .col(uuid(ThreadEvents::ThreadId))
                .col(string_len(ThreadEvents::Kind, 32))
                .col(json(ThreadEvents::Actor))
                .col(json_null(ThreadEvents::Before))
                .col(json_null(ThreadEvents::After))
                .col(json_null(ThreadEvents::Detail))
                .col(timestamp_with_time_zone(ThreadEvents::At))
                .foreign_key(&mut fk(
                    "fk_thread_events_thread",
                    ThreadEvents::Table,
                    ThreadEvents::ThreadId,
                    Threads::Table,
                    Threads::Id,
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "ix_thread_events_thread_at",
            ThreadEvents::Table,
            &[ThreadEvents::ThreadId, ThreadEvents::At],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let tables = [
            ThreadEvents::Table.into_iden(),
            Comments::Table.into_iden(),
            Attachments::Table.into_iden(),
            Blobs::Table.into_iden(),
            Messages::Table.into_iden(),
            RawMails::Table.into_iden(),
            ThreadCustomers::Table.into_iden(),
            ThreadTags::Table.into_iden(),
            Threads::Table.into_iden(),
        ];
        for t in tables {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
