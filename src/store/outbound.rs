//! Outbound messages: the recipient rule (a message may only go to a contact of one of the
//! thread's customers) and the delivery state machine `queued → sending → sent | failed`.

use chrono::{DateTime, Utc};
use gochat_entities::messages::{self, OutboundState};
use gochat_entities::{contacts, customer_contacts};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{StoreError, customers::normalise_address};

/// A resolved recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub contact_id: Uuid,
    pub address: String,
    pub name: Option<String>,
    pub language: Option<String>,
    pub time_zone: Option<String>,
}

/// Resolves `spec` (a contact id or an e-mail address) to a contact of one of the thread's
/// customers; `Err` says why it may not be written to.
pub async fn resolve_recipient(
    db: &impl ConnectionTrait,
    thread: Uuid,
    spec: &str,
) -> Result<Result<Recipient, String>, StoreError> {
    // The contact and whether it belongs to one of the thread's customers, in one statement.
    let linked = Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(customer_contacts::Entity)
            .and_where(
                Expr::col((
                    customer_contacts::Entity,
                    customer_contacts::Column::ContactId,
                ))
                .equals((contacts::Entity, contacts::Column::Id)),
            )
            .and_where(
                customer_contacts::Column::CustomerId
                    .in_subquery(super::threads::customer_ids_query(thread)),
            )
            .to_owned(),
    );
    let query = contacts::Entity::find()
        .select_only()
        .columns([
            contacts::Column::Id,
            contacts::Column::Kind,
            contacts::Column::Address,
            contacts::Column::DisplayName,
            contacts::Column::Language,
            contacts::Column::TimeZone,
        ])
        .column_as(linked, "linked");
    let query = match Uuid::parse_str(spec.trim()) {
        Ok(id) => query.filter(contacts::Column::Id.eq(id)),
        Err(_) => {
            let Ok(address) = normalise_address(contacts::ContactKind::Email, spec) else {
                return Ok(Err(format!(
                    "{spec:?} is not an e-mail address or a contact id"
                )));
            };
            query
                .filter(contacts::Column::Kind.eq(contacts::ContactKind::Email))
                .filter(contacts::Column::Address.eq(address))
        }
    };
    type Row = (
        Uuid,
        contacts::ContactKind,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
    );
    let Some((contact_id, kind, address, name, language, time_zone, linked)) =
        query.into_tuple::<Row>().one(db).await?
    else {
        return Ok(Err(format!(
            "{spec:?} is not a contact of the thread's customers"
        )));
    };
    if kind != contacts::ContactKind::Email {
        return Ok(Err(format!(
            "{spec:?} is a chat contact; mail goes to e-mail contacts"
        )));
    }
    if !linked {
        return Ok(Err(format!(
            "{spec:?} is not a contact of the thread's customers"
        )));
    }
    Ok(Ok(Recipient {
        contact_id,
        address,
        name,
        language,
        time_zone,
    }))
}

/// The outbound message a job already created, if any (a retried or redelivered job).
pub async fn for_job(
    db: &impl ConnectionTrait,
    job_message_id: &str,
) -> Result<Option<messages::Model>, StoreError> {
    Ok(for_job_query(job_message_id).one(db).await?)
}

/// [`for_job`]'s query. The direction is a literal: it is the condition of the partial
/// index `ix_messages_outbound_job`, which PostgreSQL's generic plan of a prepared
/// statement could not match to a bound parameter.
pub fn for_job_query(job_message_id: &str) -> sea_orm::Select<messages::Entity> {
    messages::Entity::find()
        .filter(messages::Column::JobMessageId.eq(job_message_id))
        .filter(Expr::cust("direction = 'outbound'"))
}

/// The Message-IDs on the thread, oldest first (for In-Reply-To and References).
pub async fn thread_message_ids(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    use sea_orm::QuerySelect;
    // Only the header: the rows' bodies would come along otherwise, a long thread's worth.
    Ok(messages::Entity::find()
        .select_only()
        .column(messages::Column::MessageIdHeader)
        .filter(messages::Column::ThreadId.eq(thread_id))
        .filter(messages::Column::MessageIdHeader.is_not_null())
        .order_by_asc(messages::Column::CreatedAt)
        .order_by_asc(messages::Column::Id)
        .into_tuple::<Option<String>>()
        .all(db)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// The customer's latest message on the thread (quoted under an agent's reply).
pub async fn latest_inbound(
    db: &impl ConnectionTrait,
    thread_id: Uuid,
) -> Result<Option<messages::Model>, StoreError> {
    use sea_orm::QuerySelect;
    Ok(messages::Entity::find()
        .filter(messages::Column::ThreadId.eq(thread_id))
        .filter(messages::Column::Direction.eq(messages::MessageDirection::Inbound))
        .order_by_desc(messages::Column::CreatedAt)
        .order_by_desc(messages::Column::Id)
        .limit(1)
        .one(db)
        .await?)
}

/// A delivery state change with the server's reply or the error.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub smtp_reply: Option<String>,
    pub error: Option<String>,
    pub count_attempt: bool,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Marks `ids` `sending` and counts an attempt each, in one statement (a batch's messages
/// before they are handed to the mail server together).
pub async fn mark_sending(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    messages::Entity::update_many()
        .col_expr(messages::Column::State, Expr::value(OutboundState::Sending))
        .col_expr(
            messages::Column::Attempts,
            Expr::col(messages::Column::Attempts).add(1),
        )
        .col_expr(messages::Column::UpdatedAt, Expr::value(now))
        .filter(super::bulk::any_of(
            db.get_database_backend(),
            messages::Column::Id,
            ids.iter().copied(),
        ))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn set_state(
    db: &impl ConnectionTrait,
    message: &messages::Model,
    state: OutboundState,
    d: Delivery,
    now: DateTime<Utc>,
) -> Result<messages::Model, StoreError> {
    let mut m: messages::ActiveModel = message.clone().into();
    m.state = Set(Some(state));
    if d.smtp_reply.is_some() {
        m.smtp_reply = Set(d.smtp_reply);
    }
    if d.error.is_some() {
        m.error = Set(d.error);
    }
    if d.count_attempt {
        m.attempts = Set(message.attempts + 1);
    }
    if d.sent_at.is_some() {
        m.sent_at = Set(d.sent_at);
    }
    m.updated_at = Set(now);
    Ok(m.update(db).await?)
}
