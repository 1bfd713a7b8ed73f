//! What the e2e run starts from: a pool of open threads the load works on (each with a
//! customer contact and one stored inbound mail to reply to), threads on the reminder
//! ladder whose timers fall due during the run, and a million future timers.

use chrono::{DateTime, Utc};
use gochat_entities::messages::{Channel, Classification, MessageDirection};
use gochat_entities::threads::ThreadStatus;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use crate::store::threads::{self, NewMessage, NewThread};
use crate::store::{ContactInput, CustomerUpsert, Store, customers, timers};

/// A pool thread: its id, its customer contact's address, the Message-ID of its mail.
#[derive(Debug, Clone)]
pub struct PoolThread {
    pub id: Uuid,
    pub address: String,
    pub message_id: String,
}

/// Creates `n` open threads, one customer each; `tag` keeps runs apart.
pub async fn pool(store: &Store, n: usize, tag: &str) -> anyhow::Result<Vec<PoolThread>> {
    let now = Utc::now();
    let tx = store.conn().begin().await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let address = format!("c{i}-{tag}@e2e.example");
        let customer = customer(&tx, &format!("e2e-{tag}-{i}"), &address, now).await?;
        let thread = threads::create(
            &tx,
            new_thread(customer, ThreadStatus::Open),
            &json!({"kind": "system"}),
            now,
        )
        .await?;
        let message_id = format!("pool-{i}-{tag}@e2e.example");
        let mut m = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            address.clone(),
            format!("Question {i}"),
        );
        m.message_id_header = Some(message_id.clone());
        m.classification = Some(Classification::New);
        m.text_body = Some("Hello, my printer is on fire.".into());
        m.contact_id = Some(contact_of(&tx, &address).await?);
        threads::add_message(&tx, &thread, m, now).await?;
        out.push(PoolThread {
            id: thread.id,
            address,
            message_id,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// Creates `n` threads on the first reminder step with a timer each, due a day from now
/// (see [`set_due`]); returns the timers' ids.
pub async fn reminders(store: &Store, n: usize, tag: &str) -> anyhow::Result<Vec<Uuid>> {
    let now = Utc::now();
    let later = now + chrono::Duration::days(1);
    let tx = store.conn().begin().await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let address = format!("r{i}-{tag}@e2e.example");
        let customer = customer(&tx, &format!("e2e-r-{tag}-{i}"), &address, now).await?;
        let thread = threads::create(
            &tx,
            new_thread(customer, ThreadStatus::Reminder),
            &json!({"kind": "system"}),
            now,
        )
        .await?;
        let mut am = thread.clone().into_active_model();
        am.lifecycle_step = Set(Some(1));
        am.contact_id = Set(Some(contact_of(&tx, &address).await?));
        let thread = am.update(&tx).await?;
        let t = timers::schedule(&tx, &thread, 1, later, now).await?;
        out.push(t.id);
    }
    tx.commit().await?;
    Ok(out)
}

/// Moves the seeded timers to their due times, in one short transaction: seeding takes
/// seconds (more on a big database), and due times fixed before it would be past by the
/// time the timers exist, so the bench would measure its own seeding.
pub async fn set_due(store: &Store, timers: &[(Uuid, DateTime<Utc>)]) -> anyhow::Result<()> {
    use gochat_entities::timers as t;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let tx = store.conn().begin().await?;
    for (id, at) in timers {
        t::Entity::update_many()
            .col_expr(t::Column::DueAt, Expr::value(*at))
            .filter(t::Column::Id.eq(*id))
            .exec(&tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A customer `external_id` with one email contact `address`.
async fn customer(
    db: &impl sea_orm::ConnectionTrait,
    external_id: &str,
    address: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Uuid> {
    let (id, _) = customers::upsert_customer(
        db,
        &CustomerUpsert {
            external_id: external_id.to_owned(),
            name: external_id.to_owned(),
            contacts: vec![ContactInput {
                kind: gochat_entities::contacts::ContactKind::Email,
                address: address.to_owned(),
                name: None,
                language: None,
                time_zone: None,
            }],
            replace_contacts: false,
        },
        now,
    )
    .await?;
    Ok(id)
}

fn new_thread(customer: Uuid, status: ThreadStatus) -> NewThread {
    NewThread::new("Printer on fire", status, vec![customer])
}

async fn contact_of(db: &impl sea_orm::ConnectionTrait, address: &str) -> anyhow::Result<Uuid> {
    use gochat_entities::contacts;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    contacts::Entity::find()
        .filter(contacts::Column::Kind.eq(contacts::ContactKind::Email))
        .filter(contacts::Column::Address.eq(address))
        .one(db)
        .await?
        .map(|c| c.id)
        .ok_or_else(|| anyhow::anyhow!("contact {address} vanished"))
}
