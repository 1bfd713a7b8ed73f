//! Data the job tests start from.

use chrono::{DateTime, Utc};
use gochat::store::threads::{self, NewThread};
use gochat::store::{ContactInput, CustomerUpsert};
use gochat_entities::threads::ThreadStatus;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

/// A thread of customer ACME (external id `acme`) whose latest contact is `address`, which
/// is one of ACME's contacts. Returns the thread and the contact.
pub async fn thread_with_contact(
    store: &gochat::store::Store,
    lifecycle: &str,
    address: &str,
    now: DateTime<Utc>,
) -> (Uuid, Uuid) {
    let conn = store.conn();
    let (customer, _) = gochat::store::customers::upsert_customer(
        conn,
        &CustomerUpsert {
            external_id: "acme".into(),
            name: "ACME".into(),
            contacts: vec![ContactInput {
                kind: gochat_entities::contacts::ContactKind::Email,
                address: address.into(),
                name: Some("Ada".into()),
                language: None,
                time_zone: None,
            }],
            replace_contacts: false,
        },
        now,
    )
    .await
    .expect("customer");
    let contact = gochat_entities::contacts::Entity::find()
        .filter(gochat_entities::contacts::Column::Address.eq(address))
        .one(conn)
        .await
        .expect("query")
        .expect("contact")
        .id;
    let thread = threads::create(
        conn,
        NewThread {
            lifecycle: lifecycle.into(),
            ..NewThread::new("Printer on fire", ThreadStatus::Open, vec![customer])
        },
        &json!({"kind": "system"}),
        now,
    )
    .await
    .expect("thread");
    gochat_entities::threads::ActiveModel {
        id: Set(thread.id),
        contact_id: Set(Some(contact)),
        ..Default::default()
    }
    .update(conn)
    .await
    .expect("set contact");
    (thread.id, contact)
}

/// A workflow handler on `config` without broker or relay, for tests that hand it jobs
/// directly (`handle_batch`, `handle`); its services share the given store. A relative
/// `workflows.dir` is the project's.
pub fn workflow_handler(
    store: &gochat::store::Store,
    mut config: gochat::config::Config,
) -> gochat::workflow::handler::WorkflowHandler {
    use std::sync::{Arc, RwLock};
    if config.workflows.dir.is_relative() {
        config.workflows.dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&config.workflows.dir);
    }
    let set = gochat::workflow::WorkflowSet::load(&config.workflows.dir).expect("workflows");
    let services = Arc::new(gochat::services::Services {
        store: store.clone(),
        clock: Arc::new(gochat::clock::SystemClock),
        metrics: gochat::metrics::Metrics::new(&gochat::workflow::Registry::builtin().names())
            .expect("metrics"),
        instance: "test".into(),
        smtp: gochat::mail::smtp::Smtp::new(&config.smtp.url, config.smtp.timeout, 1)
            .expect("smtp"),
        config,
    });
    gochat::workflow::handler::WorkflowHandler::new(
        services,
        Arc::new(RwLock::new(Arc::new(set))),
        gochat::queue::relay::RelayWaker::default(),
    )
}

/// A store on `db` and a handler on the project's own `workflows/`, to hand jobs to
/// directly.
pub async fn handler_on(
    db: &super::TestDb,
) -> (
    gochat::store::Store,
    gochat::workflow::handler::WorkflowHandler,
) {
    let store = db.store().await;
    let config = gochat::config::Config {
        database: db.config(),
        ..Default::default()
    };
    let handler = workflow_handler(&store, config);
    (store, handler)
}

/// An inbound-mail job `id` with `payload`, first attempt, for handing to a handler directly.
pub fn inbound_job(id: &str, payload: serde_json::Value) -> gochat::jobs::Job {
    gochat::jobs::Job {
        kind: "inbound-mail".into(),
        message_id: id.into(),
        payload,
        attempt: 1,
        first_failure: None,
    }
}
