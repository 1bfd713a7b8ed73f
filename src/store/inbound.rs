//! Inbound mail's storage: the raw bytes first (so a mail that cannot be parsed or
//! processed is never lost), the lookups that route a mail (duplicates, the thread a
//! Message-ID or token names, the message a bounce is about), the loop count, and the
//! contact facts threading decides on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gochat_entities::messages::{self, MessageDirection, OutboundState};
use gochat_entities::raw_mails::{self, RawMailStatus};
use gochat_entities::{customer_contacts, customers, thread_customers, threads};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use super::StoreError;

/// A raw mail as it arrived.
#[derive(Debug, Clone)]
pub struct NewRawMail<'a> {
    /// The inbound-mail job that brought it: storing again under the same job is a no-op.
    pub job_message_id: &'a str,
    pub envelope_from: Option<&'a str>,
    pub recipients: &'a [String],
    pub mailbox: Option<&'a str>,
    pub data: &'a [u8],
    pub sha256: &'a str,
    pub received_at: DateTime<Utc>,
    /// What it is already known to be, and since when (it was parsed before it was
    /// written): the row goes in marked, and needs no second write. `None`: `pending`.
    pub known: Option<(&'a RawState, DateTime<Utc>)>,
}

/// A raw mail's row once stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRaw {
    pub id: Uuid,
    /// This call wrote the row (with [`NewRawMail::known`]); `false`: the job had stored it
    /// before, and the row says what it said then.
    pub written: bool,
}

/// Stores the raw bytes (once per job).
pub async fn store_raw(
    db: &impl ConnectionTrait,
    m: &NewRawMail<'_>,
) -> Result<StoredRaw, StoreError> {
    store_raw_many(db, std::slice::from_ref(m))
        .await?
        .pop()
        .ok_or_else(|| StoreError::Invalid("the raw mail insert returned no row".into()))
}

/// A stored raw mail (`gochat mail reprocess`).
pub async fn raw(db: &impl ConnectionTrait, id: Uuid) -> Result<raw_mails::Model, StoreError> {
    raw_mails::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound {
            what: "raw mail",
            id: id.to_string(),
        })
}

/// Links a raw mail to the message it repeats (a duplicate; a stored message points to its
/// raw mail itself, `messages.raw_mail_id`).
pub async fn link_raw(
    db: &impl ConnectionTrait,
    raw_id: Uuid,
    message_row_id: Uuid,
) -> Result<(), StoreError> {
    raw_mails::Entity::update_many()
        .col_expr(raw_mails::Column::MessageRowId, Expr::value(message_row_id))
        .filter(raw_mails::Column::Id.eq(raw_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The newest stored message (ours or theirs) whose Message-ID is one of `ids`, with the id
/// that matched: threading follows In-Reply-To and References to it.
pub async fn by_message_ids(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Option<(String, Uuid)>, StoreError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let found: Option<(Option<String>, Uuid)> = messages::Entity::find()
        .select_only()
        .column(messages::Column::MessageIdHeader)
        .column(messages::Column::ThreadId)
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            messages::Column::MessageIdHeader,
            ids.iter().map(String::as_str),
        ))
        .order_by_desc(messages::Column::CreatedAt)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.map(|(mid, thread)| (mid.unwrap_or_default(), thread)))
}

/// For each of `ids` (Message-IDs) that a stored inbound message answers by its
/// `In-Reply-To`, the newest such message's time and thread: a mail whose reply came
/// first joins the reply's thread.
pub async fn threads_answering(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashMap<String, (DateTime<Utc>, Uuid)>, StoreError> {
    // As a literal, so the partial index applies to the generic plan.
    let inbound = Some(Expr::cust("direction = 'inbound'"));
    newest_by(db, messages::Column::InReplyTo, ids, inbound).await
}

/// For each of `ids` that stored messages carry in `column` (those `only` allows), the
/// newest such message's time and thread.
pub(super) async fn newest_by(
    db: &impl ConnectionTrait,
    column: messages::Column,
    ids: &[String],
    only: Option<sea_orm::sea_query::SimpleExpr>,
) -> Result<HashMap<String, (DateTime<Utc>, Uuid)>, StoreError> {
    let mut out: HashMap<String, (DateTime<Utc>, Uuid)> = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = messages::Entity::find()
            .select_only()
            .column(column)
            .column(messages::Column::ThreadId)
            .column(messages::Column::CreatedAt);
        if let Some(only) = &only {
            query = query.filter(only.clone());
        }
        let rows: Vec<(Option<String>, Uuid, DateTime<Utc>)> = query
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                column,
                chunk.iter().map(String::as_str),
            ))
            .into_tuple()
            .all(db)
            .await?;
        for (id, thread, at) in rows {
            let Some(id) = id else { continue };
            match out.get(&id) {
                Some((newest, _)) if *newest >= at => {}
                _ => {
                    out.insert(id, (at, thread));
                }
            }
        }
    }
    Ok(out)
}

/// Takes, until the transaction ends, a lock on each conversation key (a mail's own
/// Message-ID and the one it answers), sorted: a mail and its reply in two batches at once
/// then commit one after the other, and the second sees the first (PostgreSQL advisory
/// locks; SQLite runs one writer at a time already).
pub async fn lock_conversations(
    db: &impl ConnectionTrait,
    keys: &[String],
) -> Result<(), StoreError> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres || keys.is_empty() {
        return Ok(());
    }
    let mut hashed: Vec<i64> = keys.iter().map(|k| conversation_key(k)).collect();
    hashed.sort_unstable();
    hashed.dedup();
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
        [hashed.into()],
    ))
    .await?;
    Ok(())
}

/// A stable 64-bit key for a Message-ID (FNV-1a: the same in every worker, whatever its
/// build), in a space of its own (the high bits of `GOCHAT`'s tag are mixed in first).
fn conversation_key(message_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ 0x474f_4348_4154;
    for b in message_id.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The thread whose reply token is `token`.
pub async fn by_token(
    db: &impl ConnectionTrait,
    token: &str,
) -> Result<Option<threads::Model>, StoreError> {
    super::threads::by_reply_token(db, token).await
}

/// Whether `contact` belongs to one of the thread's customers: only then may a guessable
/// token (address or subject) route its mail into the thread.
pub async fn is_contact_of_thread(
    db: &impl ConnectionTrait,
    contact: Uuid,
    thread: Uuid,
) -> Result<bool, StoreError> {
    Ok(customer_contacts::Entity::find()
        .filter(customer_contacts::Column::ContactId.eq(contact))
        .filter(
            customer_contacts::Column::CustomerId
                .in_subquery(super::threads::customer_ids_query(thread)),
        )
        .one(db)
        .await?
        .is_some())
}

/// The customers of a thread, with their attributes.
pub async fn customers_of_thread(
    db: &impl ConnectionTrait,
    thread: Uuid,
) -> Result<Vec<customers::Model>, StoreError> {
    Ok(thread_customers::Entity::find()
        .filter(thread_customers::Column::ThreadId.eq(thread))
        .find_also_related(customers::Entity)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(_, c)| c)
        .collect())
}

/// The outbound message a bounce is about: by the VERP id of our envelope sender (exact), or
/// by the Message-ID the bounce quotes.
pub async fn bounced_message(
    db: &impl ConnectionTrait,
    verp: Option<Uuid>,
    original_message_id: Option<&str>,
) -> Result<Option<messages::Model>, StoreError> {
    let outbound = messages::Column::Direction.eq(MessageDirection::Outbound);
    if let Some(id) = verp
        && let Some(m) = messages::Entity::find_by_id(id)
            .filter(outbound.clone())
            .one(db)
            .await?
    {
        return Ok(Some(m));
    }
    let Some(mid) = original_message_id else {
        return Ok(None);
    };
    Ok(messages::Entity::find()
        .filter(messages::Column::MessageIdHeader.eq(mid.trim_matches(['<', '>'])))
        .filter(outbound)
        .one(db)
        .await?)
}

/// Marks a delivered message failed because it bounced (a later bounce of the same message
/// changes nothing); returns whether it changed.
pub async fn mark_bounced(
    db: &impl ConnectionTrait,
    message: Uuid,
    diagnostic: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let r = messages::Entity::update_many()
        .col_expr(messages::Column::State, Expr::value(OutboundState::Failed))
        .col_expr(messages::Column::Error, Expr::value(diagnostic.to_owned()))
        .col_expr(messages::Column::UpdatedAt, Expr::value(now))
        .filter(messages::Column::Id.eq(message))
        .filter(messages::Column::State.ne(OutboundState::Failed))
        .exec(db)
        .await?;
    Ok(r.rows_affected > 0)
}

/// The most rows one multi-row statement writes, or ids one `IN` list names: under
/// SQLite's 32,766 bind variables and PostgreSQL's 65,535 for the widest row here.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// Raw bytes one multi-row insert carries at most; a larger mail goes in a statement of
/// its own, so a batch of big mails never builds one huge statement.
const BYTES_PER_STATEMENT: usize = 8 << 20;

/// Stores several raw mails (once per job) in as few statements as their size allows;
/// returns each one's row, in order. The jobs must be distinct.
pub async fn store_raw_many(
    db: &impl ConnectionTrait,
    mails: &[NewRawMail<'_>],
) -> Result<Vec<StoredRaw>, StoreError> {
    // Each row's id is made here, so a returned id that differs is a row stored before.
    let fresh: Vec<Uuid> = mails.iter().map(|_| Uuid::now_v7()).collect();
    let mut ids = std::collections::HashMap::with_capacity(mails.len());
    let mut rest = mails;
    let mut fresh_rest = fresh.as_slice();
    while !rest.is_empty() {
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len() && take < ROWS_PER_STATEMENT {
            bytes += rest[take].data.len();
            if take > 0 && bytes > BYTES_PER_STATEMENT {
                break;
            }
            take += 1;
        }
        let (chunk, after) = rest.split_at(take);
        let (chunk_ids, ids_after) = fresh_rest.split_at(take);
        rest = after;
        fresh_rest = ids_after;
        let mut insert = super::bulk::insert_statement(
            db.get_database_backend(),
            chunk
                .iter()
                .zip(chunk_ids)
                .map(|(m, id)| raw_mails::ActiveModel {
                    id: Set(*id),
                    job_message_id: Set(Some(m.job_message_id.to_owned())),
                    envelope_from: Set(m.envelope_from.map(str::to_owned)),
                    recipients: Set(json!(m.recipients)),
                    mailbox: Set(m.mailbox.map(str::to_owned)),
                    size: Set(m.data.len() as i64),
                    sha256: Set(m.sha256.to_owned()),
                    data: Set(m.data.to_vec()),
                    status: Set(m.known.map_or(RawMailStatus::Pending, |(k, _)| k.status)),
                    error: Set(m.known.and_then(|(k, _)| k.error.clone())),
                    classification: Set(m
                        .known
                        .and_then(|(k, _)| k.classification.map(str::to_owned))),
                    message_row_id: Set(None),
                    received_at: Set(m.received_at),
                    processed_at: Set(m.known.map(|(_, at)| at)),
                }),
        )?;
        insert
            .on_conflict(
                OnConflict::column(raw_mails::Column::JobMessageId)
                    .update_column(raw_mails::Column::JobMessageId)
                    .to_owned(),
            )
            .returning(
                sea_orm::sea_query::Query::returning()
                    .columns([raw_mails::Column::Id, raw_mails::Column::JobMessageId]),
            );
        for row in db.query_all(&insert).await? {
            let id: Uuid = row.try_get_by_index(0)?;
            let job: String = row.try_get_by_index(1)?;
            ids.insert(job, id);
        }
    }
    mails
        .iter()
        .zip(fresh)
        .map(|(m, made)| {
            let id = ids.get(m.job_message_id).copied().ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the insert returned no raw mail for job {}",
                    m.job_message_id
                ))
            })?;
            Ok(StoredRaw {
                id,
                written: id == made,
            })
        })
        .collect()
}

/// What a raw mail is: its status, what went wrong or was odd, and (once known) what it
/// was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawState {
    pub status: RawMailStatus,
    pub error: Option<String>,
    pub classification: Option<&'static str>,
}

/// What becomes of one stored raw mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMark {
    pub id: Uuid,
    pub state: RawState,
}

/// Sets the classification of raw mails found to be more than they were parsed as (a
/// normal-looking mail that is part of a loop), leaving their status and defects.
pub async fn reclassify_raw(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    classification: &'static str,
) -> Result<(), StoreError> {
    update_raw(db, ids, || {
        raw_mails::Entity::update_many().col_expr(
            raw_mails::Column::Classification,
            Expr::value(classification.to_owned()),
        )
    })
    .await
}

/// Runs the update `set` makes on the raw mails `ids`, a statement per chunk of them.
async fn update_raw(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    set: impl Fn() -> sea_orm::UpdateMany<raw_mails::Entity>,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        set()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                raw_mails::Column::Id,
                chunk.iter().copied(),
            ))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Marks several raw mails: one statement per distinct outcome (most of a batch shares one).
pub async fn mark_raw_many(
    db: &impl ConnectionTrait,
    marks: &[RawMark],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut groups: Vec<(&RawState, Vec<Uuid>)> = Vec::new();
    for m in marks {
        match groups.iter_mut().find(|g| *g.0 == m.state) {
            Some(g) => g.1.push(m.id),
            None => groups.push((&m.state, vec![m.id])),
        }
    }
    for (mark, ids) in groups {
        update_raw(db, &ids, || {
            let update = raw_mails::Entity::update_many()
                .col_expr(raw_mails::Column::Status, Expr::value(mark.status))
                .col_expr(raw_mails::Column::Error, Expr::value(mark.error.clone()))
                .col_expr(raw_mails::Column::ProcessedAt, Expr::value(now));
            match mark.classification {
                Some(c) => {
                    update.col_expr(raw_mails::Column::Classification, Expr::value(c.to_owned()))
                }
                None => update,
            }
        })
        .await?;
    }
    Ok(())
}

/// The messages stored under any of `keys`, by key.
pub async fn by_dedupe_keys(
    db: &impl ConnectionTrait,
    keys: &[String],
) -> Result<std::collections::HashMap<String, messages::Model>, StoreError> {
    let mut found = std::collections::HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        for m in messages::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                messages::Column::DedupeKey,
                chunk.iter().map(String::as_str),
            ))
            .all(db)
            .await?
        {
            if let Some(key) = m.dedupe_key.clone() {
                found.insert(key, m);
            }
        }
    }
    Ok(found)
}

/// Inbound mails from each of `addresses` stored since `since` (the loop check of a
/// batch); an address with none is absent.
pub async fn recent_from_many(
    db: &impl ConnectionTrait,
    addresses: &[String],
    since: DateTime<Utc>,
) -> Result<std::collections::HashMap<String, u64>, StoreError> {
    let mut counts = std::collections::HashMap::new();
    for chunk in addresses.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(String, i64)> = messages::Entity::find()
            .select_only()
            .column(messages::Column::FromAddress)
            .column_as(messages::Column::Id.count(), "n")
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                messages::Column::FromAddress,
                chunk.iter().map(String::as_str),
            ))
            .filter(messages::Column::CreatedAt.gte(since))
            .filter(messages::Column::Direction.eq(MessageDirection::Inbound))
            .group_by(messages::Column::FromAddress)
            .into_tuple()
            .all(db)
            .await?;
        counts.extend(rows.into_iter().map(|(a, n)| (a, n.max(0) as u64)));
    }
    Ok(counts)
}

/// The customers of each of `contacts` (with their attributes), by contact; a contact of
/// no customer is absent.
pub async fn customers_of_contacts(
    db: &impl ConnectionTrait,
    contacts: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<customers::Model>>, StoreError> {
    let mut out: std::collections::HashMap<Uuid, Vec<customers::Model>> =
        std::collections::HashMap::new();
    for chunk in contacts.chunks(ROWS_PER_STATEMENT) {
        for (link, customer) in customer_contacts::Entity::find()
            .filter(super::bulk::any_of(
                db.get_database_backend(),
                customer_contacts::Column::ContactId,
                chunk.iter().copied(),
            ))
            .find_also_related(customers::Entity)
            .all(db)
            .await?
        {
            if let Some(c) = customer {
                out.entry(link.contact_id).or_default().push(c);
            }
        }
    }
    Ok(out)
}
