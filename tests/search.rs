//! Keyword search over threads (`store::search`) on both databases: threads, messages,
//! contacts and customers written through the store's own write paths, so what is tested
//! is the index those paths keep.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use gochat::store::search::{self, SearchError};
use gochat::store::threads::{self, NewMessage, NewThread};
use gochat::store::{ContactInput, CustomerUpsert, Store, customers};
use gochat_entities::contacts::ContactKind;
use gochat_entities::messages::{Channel, MessageDirection};
use gochat_entities::threads::ThreadStatus;
use sea_orm::{
    ActiveModelTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 10, 9, 0, 0).unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn inbound(subject: &str, text: &str) -> NewMessage {
    let mut m = NewMessage::new(
        MessageDirection::Inbound,
        Channel::Email,
        "someone@example.org",
        subject,
    );
    m.text_body = Some(text.into());
    m
}

/// A thread of customer `external` opened by a first message, as the inbound workflow
/// opens one (the thread and its first message in one write).
async fn open(
    store: &Store,
    external: &str,
    subject: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Uuid {
    let conn = store.conn();
    let (customer, _) = customers::ensure_customer(conn, external, external, now)
        .await
        .unwrap();
    let system = json!({"kind": "system"});
    let p = threads::prepare(
        NewThread::new(subject, ThreadStatus::Open, vec![customer]),
        &system,
        now,
    );
    let mut events = Vec::new();
    let (card, _) =
        threads::create_with_message(conn, &p, inbound(subject, text), now, &mut events)
            .await
            .unwrap();
    card.id
}

async fn reply(store: &Store, thread: Uuid, text: &str, now: DateTime<Utc>) {
    let conn = store.conn();
    let card = threads::get(conn, thread).await.unwrap();
    threads::add_message(conn, &card, inbound("Re: it", text), now)
        .await
        .unwrap();
}

/// The threads `q` finds, newest update first; both query shapes must agree.
async fn find(store: &Store, q: &str) -> Vec<Uuid> {
    let query = search::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
    let found: Vec<Uuid> = search::find_threads(
        store.conn(),
        gochat_entities::threads::Entity::find(),
        &query,
        50,
    )
    .await
    .unwrap_or_else(|e| panic!("{q:?}: {e}"))
    .into_iter()
    .map(|t| t.id)
    .collect();
    let by_index: Vec<Uuid> = gochat_entities::threads::Entity::find()
        .filter(search::thread_condition(store.backend(), &query))
        .order_by_desc(gochat_entities::threads::Column::UpdatedAt)
        .order_by_desc(gochat_entities::threads::Column::Id)
        .limit(50)
        .all(store.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(found, by_index, "{q:?}: the two query shapes disagree");
    found
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

both_backends!(
    accents_and_case_do_not_matter,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let a = open(&store, "a", "Order", "Le café est froid", at(0)).await;
        let b = open(&store, "b", "Order", "CAFÉ NOIR please", at(1)).await;
        let c = open(&store, "c", "Order", "one cafe au lait", at(2)).await;
        let _ = open(&store, "d", "Order", "just tea", at(3)).await;
        let all = sorted(vec![a, b, c]);
        for q in ["café", "CAFÉ", "cafe", "Cafe", "ÇAFÉ"] {
            assert_eq!(sorted(find(&store, q).await), all, "{q}");
        }
        assert_eq!(find(&store, "NOIR").await, vec![b]);
        assert_eq!(find(&store, "Froid").await, vec![a]);
    }
);

both_backends!(
    every_word_must_match_somewhere_in_the_thread,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let both = open(&store, "a", "Printer", "the printer jammed", at(0)).await;
        reply(&store, both, "and the toner is empty", at(1)).await;
        let one = open(&store, "b", "Printer", "the printer jammed again", at(2)).await;
        assert_eq!(find(&store, "jammed toner").await, vec![both]);
        assert_eq!(find(&store, "toner jammed").await, vec![both]);
        assert_eq!(find(&store, "jammed").await, vec![one, both]);
        assert!(find(&store, "jammed toner cartridge").await.is_empty());
        // The subject counts as a word of the thread, too.
        assert_eq!(find(&store, "printer toner").await, vec![both]);
    }
);

both_backends!(
    a_quoted_phrase_needs_its_words_together_and_in_order,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let together = open(&store, "a", "Help", "my printer is on fire today", at(0)).await;
        let apart = open(&store, "b", "Help", "fire! is my printer on? no", at(1)).await;
        assert_eq!(find(&store, "\"printer is on fire\"").await, vec![together]);
        assert_eq!(find(&store, "\"Printer  IS on FIRE").await, vec![together]);
        assert_eq!(
            find(&store, "printer is on fire").await,
            vec![apart, together]
        );
        assert!(find(&store, "\"fire printer\"").await.is_empty());
        // A phrase does not run from one message into the next.
        reply(&store, apart, "fire", at(2)).await;
        assert!(find(&store, "\"no fire\"").await.is_empty());
    }
);

both_backends!(
    a_thread_subject_of_its_own_is_searchable,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let system = json!({"kind": "system"});
        let (customer, _) = customers::ensure_customer(store.conn(), "x", "X", t0())
            .await
            .unwrap();
        let t = threads::create(
            store.conn(),
            NewThread::new(
                "Überweisung fehlgeschlagen",
                ThreadStatus::Open,
                vec![customer],
            ),
            &system,
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(find(&store, "uberweisung").await, vec![t.id]);
        // Opened by a mail whose subject carries it: found through the message.
        let m = open(&store, "y", "Lost parcel", "where is it", at(1)).await;
        assert_eq!(find(&store, "\"lost parcel\"").await, vec![m]);
    }
);

both_backends!(
    contact_names_addresses_and_customer_ids_match,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let (customer, _) = customers::upsert_customer(
            conn,
            &CustomerUpsert {
                external_id: "ACME-42".into(),
                name: "Société Générale".into(),
                contacts: vec![ContactInput {
                    kind: ContactKind::Email,
                    address: "Jose.Nunez@Example.com".into(),
                    name: Some("José Núñez".into()),
                    language: None,
                    time_zone: None,
                }],
                replace_contacts: false,
            },
            t0(),
        )
        .await
        .unwrap();
        let (contact, _) = customers::find_or_create_contact(
            conn,
            &ContactInput {
                kind: ContactKind::Email,
                address: "jose.nunez@example.com".into(),
                name: None,
                language: None,
                time_zone: None,
            },
            t0(),
        )
        .await
        .unwrap();
        let p = threads::prepare(
            NewThread::new("Question", ThreadStatus::Open, vec![customer]),
            &json!({"kind": "system"}),
            t0(),
        );
        let mut m = inbound("Question", "hello");
        m.contact_id = Some(contact);
        let mut events = Vec::new();
        let (card, _) = threads::create_with_message(conn, &p, m, t0(), &mut events)
            .await
            .unwrap();
        let other = open(&store, "other", "Question", "hello", at(1)).await;
        for q in [
            "jose",
            "NUNEZ",
            "josé núñez",
            "jose.nunez@example.com",
            "\"example com\"",
            "acme-42",
            "ACME 42",
            "societe generale",
        ] {
            assert_eq!(find(&store, q).await, vec![card.id], "{q}");
        }
        assert_eq!(
            sorted(find(&store, "hello").await),
            sorted(vec![card.id, other])
        );
        // A mail names a nameless contact; the CRM renames one: the index follows.
        let (stranger, _) = customers::find_or_create_contact(
            conn,
            &ContactInput {
                kind: ContactKind::Email,
                address: "zed@example.net".into(),
                name: None,
                language: None,
                time_zone: None,
            },
            t0(),
        )
        .await
        .unwrap();
        customers::find_or_create_contact(
            conn,
            &ContactInput {
                kind: ContactKind::Email,
                address: "zed@example.net".into(),
                name: Some("Zoë Quill".into()),
                language: None,
                time_zone: None,
            },
            t0(),
        )
        .await
        .unwrap();
        let mut card2 = threads::get(conn, other).await.unwrap().into_active_model();
        card2.contact_id = sea_orm::ActiveValue::Set(Some(stranger));
        card2.update(conn).await.unwrap();
        assert_eq!(find(&store, "zoe quill").await, vec![other]);
        customers::upsert_customer(
            conn,
            &CustomerUpsert {
                external_id: "ACME-42".into(),
                name: "Renamed Ltd".into(),
                contacts: vec![],
                replace_contacts: false,
            },
            at(5),
        )
        .await
        .unwrap();
        assert!(find(&store, "societe").await.is_empty());
        assert_eq!(find(&store, "renamed").await, vec![card.id]);
        assert!(find(&store, "nobody-here").await.is_empty());
    }
);

both_backends!(
    hostile_queries_return_normally_and_match_nothing,
    |db: common::TestDb| async move {
        let store = db.store().await;
        open(&store, "a", "Hello", "plain words only here", at(0)).await;
        let hostile = [
            "' OR 1=1 --",
            "\" OR \"\"=\"",
            "'; DROP TABLE threads; --",
            "\\",
            "\\\\'",
            "%",
            "_",
            "%_%",
            "NEAR(plain words)",
            "plain NEAR words*",
            "plain*",
            "^plain",
            "body:plain",
            "-plain",
            "(plain OR words)",
            "plain & !words",
            "plain | words",
            "plain <-> words",
            "!plain",
            "plain:*",
            "$1",
            "?",
            "\u{0}",
            "\"",
            "\"\"\"\"",
            "*",
            "a\"b\"c",
            "))))((((",
            "🙂",
        ];
        for q in hostile {
            match search::parse(q) {
                Err(SearchError::Empty) => {}
                Err(e) => panic!("{q:?}: {e}"),
                Ok(query) => {
                    let found = search::find_threads(
                        store.conn(),
                        gochat_entities::threads::Entity::find(),
                        &query,
                        50,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{q:?}: {e}"));
                    let words = query.terms().join(" ");
                    // Only what is truly in the text may match: `plain` or `words`.
                    let honest = query
                        .terms()
                        .iter()
                        .all(|t| ["plain", "words", "plain words"].contains(&t.as_str()));
                    assert_eq!(found.is_empty(), !honest, "{q:?} ({words})");
                }
            }
        }
        assert_eq!(
            gochat_entities::threads::Entity::find()
                .all(store.conn())
                .await
                .unwrap()
                .len(),
            1
        );
    }
);

both_backends!(
    results_are_ordered_by_last_update_not_by_rank,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let many = open(
            &store,
            "a",
            "Invoice",
            "invoice invoice invoice invoice",
            at(0),
        )
        .await;
        let newer = open(&store, "b", "Hi", "an invoice", at(1)).await;
        let newest = open(&store, "c", "Hi", "the invoice", at(2)).await;
        assert_eq!(find(&store, "invoice").await, vec![newest, newer, many]);
        reply(&store, many, "thanks", at(3)).await;
        assert_eq!(find(&store, "invoice").await, vec![many, newest, newer]);
    }
);

both_backends!(
    a_rolled_back_message_is_not_searchable,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let thread = open(&store, "a", "Hi", "first words", at(0)).await;
        let card = threads::get(store.conn(), thread).await.unwrap();
        let tx = store.conn().begin().await.unwrap();
        threads::add_message(&tx, &card, inbound("Hi", "a zebra escaped"), at(1))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert!(find(&store, "zebra").await.is_empty());
        let tx = store.conn().begin().await.unwrap();
        threads::add_message(&tx, &card, inbound("Hi", "a zebra escaped"), at(1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(find(&store, "zebra").await, vec![thread]);
    }
);

// More threads than the first step of `find_threads` walks for a page of 1 (100): a rare
// word is then found through the index, a common one in the newest threads.
both_backends!(
    rare_and_common_words_past_the_newest_threads,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let (customer, _) = customers::ensure_customer(store.conn(), "bulk", "Bulk", t0())
            .await
            .unwrap();
        let system = json!({"kind": "system"});
        let mut batch = Vec::new();
        for i in 0..150 {
            let p = threads::prepare(
                NewThread::new(format!("Case {i}"), ThreadStatus::Open, vec![customer]),
                &system,
                at(i),
            );
            let text = if i == 3 { "common rare" } else { "common" };
            batch.push((threads::Target::Open(p), inbound("Case", text)));
        }
        let mut events = Vec::new();
        let stored = threads::add_messages(store.conn(), batch, t0(), &mut events)
            .await
            .unwrap();
        let rare_thread = stored[3].0.id;
        let page = |q: &'static str| {
            let store = store.clone();
            async move {
                search::find_threads(
                    store.conn(),
                    gochat_entities::threads::Entity::find(),
                    &search::parse(q).unwrap(),
                    1,
                )
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(page("rare").await, vec![rare_thread]);
        assert_eq!(page("common rare").await, vec![rare_thread]);
        assert_eq!(page("common").await.len(), 1);
        assert!(page("absent").await.is_empty());
    }
);

both_backends!(
    the_migration_indexes_what_was_stored_before_it,
    |db: common::TestDb| async move {
        use gochat_migrations::Migrator;
        use gochat_migrations::sea_orm_migration::MigratorTrait;
        let conn = sea_orm::Database::connect(&db.url).await.unwrap();
        // Every migration before the search index's (later ones do not touch the rows
        // written here).
        let before = Migrator::migrations()
            .iter()
            .position(|m| m.name().ends_with("_search"))
            .expect("the search migration") as u32;
        Migrator::up(&conn, Some(before)).await.unwrap();
        let customer = gochat_entities::customers::ActiveModel {
            id: sea_orm::ActiveValue::Set(Uuid::now_v7()),
            external_id: sea_orm::ActiveValue::Set("OLD-1".into()),
            name: sea_orm::ActiveValue::Set("Müller AG".into()),
            attributes: sea_orm::ActiveValue::Set(json!({})),
            created_at: sea_orm::ActiveValue::Set(t0()),
            updated_at: sea_orm::ActiveValue::Set(t0()),
        }
        .insert(&conn)
        .await
        .unwrap();
        let p = threads::prepare(
            NewThread::new("Old thread", ThreadStatus::Open, vec![]),
            &json!({"kind": "system"}),
            t0(),
        );
        p.thread
            .clone()
            .into_active_model()
            .insert(&conn)
            .await
            .unwrap();
        gochat_entities::thread_customers::ActiveModel {
            thread_id: sea_orm::ActiveValue::Set(p.thread.id),
            customer_id: sea_orm::ActiveValue::Set(customer.id),
            added_at: sea_orm::ActiveValue::Set(t0()),
        }
        .insert(&conn)
        .await
        .unwrap();
        gochat_entities::messages::Model {
            id: Uuid::now_v7(),
            thread_id: p.thread.id,
            direction: MessageDirection::Inbound,
            channel: Channel::Email,
            contact_id: None,
            message_id_header: None,
            in_reply_to: None,
            references: json!([]),
            from_address: "a@example.org".into(),
            from_name: None,
            to_addresses: json!([]),
            cc_addresses: json!([]),
            subject: "Réclamation".into(),
            text_body: Some("Le colis est arrivé abîmé".into()),
            html_body: None,
            classification: None,
            kind: None,
            state: None,
            error: None,
            smtp_reply: None,
            attempts: 0,
            author: None,
            raw_mail_id: None,
            job_message_id: None,
            dedupe_key: None,
            created_at: t0(),
            updated_at: t0(),
            sent_at: None,
        }
        .into_active_model()
        .insert(&conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let store = db.store().await;
        for q in [
            "abime colis",
            "reclamation",
            "\"old thread\"",
            "muller",
            "old-1",
        ] {
            assert_eq!(find(&store, q).await, vec![p.thread.id], "{q}");
        }
    }
);
