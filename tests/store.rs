//! The store on both databases: customers and contacts, the thread write side (version
//! compare-and-set, audit events, card fields), the inbox JSON views, idempotency records and
//! the outbox.

mod common;

use chrono::{Duration, TimeZone, Utc};
use gochat::store::threads::{self, NewAttachment, NewMessage, NewThread};
use gochat::store::{
    ContactInput, CustomerUpsert, InboxFilter, StoreError, UpsertOutcome, customers, inbox, outbox,
    processed,
};
use gochat_entities::contacts::ContactKind;
use gochat_entities::messages::{Channel, Classification, MessageDirection, OutboundState};
use gochat_entities::outbox::OutboxKind;
use gochat_entities::threads::ThreadStatus;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde_json::json;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap()
}

fn email(address: &str, name: &str) -> ContactInput {
    mail_contact(address, Some(name), None)
}

both_backends!(
    customers_share_contacts_and_upserts_are_idempotent,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let acme = CustomerUpsert {
            external_id: "acme".into(),
            name: "ACME".into(),
            contacts: vec![
                email("  Alice@Example.COM ", "Alice"),
                email("bob@example.com", "Bob"),
            ],
            replace_contacts: false,
        };
        let (acme_id, outcome) = customers::upsert_customer(conn, &acme, t0()).await.unwrap();
        assert_eq!(outcome, UpsertOutcome::Created);
        let (again, outcome) = customers::upsert_customer(conn, &acme, t0()).await.unwrap();
        assert_eq!((again, outcome), (acme_id, UpsertOutcome::Updated));

        // A contact's time zone must be an IANA one; a typo is refused, not stored.
        let mut zoned = acme.clone();
        zoned.contacts[0].time_zone = Some("Europe/Berlin".into());
        customers::upsert_customer(conn, &zoned, t0())
            .await
            .unwrap();
        let alice = gochat_entities::contacts::Entity::find()
            .filter(gochat_entities::contacts::Column::Address.eq("alice@example.com"))
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.time_zone.as_deref(), Some("Europe/Berlin"));
        zoned.contacts[0].time_zone = Some("Europe/Berlinn".into());
        let err = customers::upsert_customer(conn, &zoned, t0())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an IANA time zone"), "{err}");

        // Alice also works for Globex: one contact, two customers.
        let globex = CustomerUpsert {
            external_id: "globex".into(),
            name: "Globex".into(),
            contacts: vec![email("alice@example.com", "Alice")],
            replace_contacts: false,
        };
        let (globex_id, _) = customers::upsert_customer(conn, &globex, t0())
            .await
            .unwrap();
        assert_ne!(globex_id, acme_id);

        let rows = conn
            .query_all_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT address FROM contacts ORDER BY address".to_owned(),
            ))
            .await
            .unwrap();
        let addresses: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("", "address").unwrap())
            .collect();
        assert_eq!(addresses, ["alice@example.com", "bob@example.com"]);

        // replace_contacts detaches Bob from ACME but keeps the contact.
        let replaced = CustomerUpsert {
            contacts: vec![email("alice@example.com", "Alice")],
            replace_contacts: true,
            ..acme.clone()
        };
        customers::upsert_customer(conn, &replaced, t0())
            .await
            .unwrap();
        let links = conn
            .query_all_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT COUNT(*) AS n FROM customer_contacts".to_owned(),
            ))
            .await
            .unwrap();
        let n: i64 = links[0].try_get("", "n").unwrap();
        assert_eq!(n, 2, "alice→acme, alice→globex");

        let bad = CustomerUpsert {
            contacts: vec![email("not an address", "X")],
            ..acme
        };
        assert!(matches!(
            customers::upsert_customer(conn, &bad, t0()).await,
            Err(StoreError::Invalid(_))
        ));
    }
);

use sea_orm::ConnectionTrait;

both_backends!(
    thread_changes_are_audited_versioned_and_shown_in_the_views,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let acme = CustomerUpsert {
            external_id: "acme".into(),
            name: "ACME".into(),
            contacts: vec![email("alice@example.com", "Alice Liddell")],
            replace_contacts: false,
        };
        let (acme_id, _) = customers::upsert_customer(conn, &acme, t0()).await.unwrap();
        customers::upsert_customer(
            conn,
            &CustomerUpsert {
                external_id: "globex".into(),
                name: "Globex".into(),
                contacts: vec![],
                replace_contacts: false,
            },
            t0(),
        )
        .await
        .unwrap();
        let (alice, created) = customers::find_or_create_contact(
            conn,
            &email("alice@example.com", "Alice Liddell"),
            t0(),
        )
        .await
        .unwrap();
        assert!(!created, "alice came with acme");

        let system = json!({"kind": "system", "id": "test", "name": "test"});
        let agent = json!({"kind": "agent", "id": "a1", "name": "Ann Agent"});
        let tx = conn.begin().await.unwrap();
        let thread = threads::create(
            &tx,
            NewThread {
                mailbox: Some("support@example.com".into()),
                ..NewThread::new("Printer on fire", ThreadStatus::Open, vec![acme_id])
            },
            &system,
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(thread.version, 1);
        let mut inbound = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            "alice@example.com",
            "Printer on fire",
        );
        inbound.contact_id = Some(alice);
        inbound.message_id_header = Some("m1@example.com".into());
        inbound.to = vec!["support@example.com".into()];
        inbound.text_body = Some("Hello,\n\n  the printer   is on fire.".into());
        inbound.classification = Some(Classification::New);
        inbound.attachments = vec![NewAttachment {
            name: "fire.jpg".into(),
            content_type: "image/jpeg".into(),
            data: vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3],
            inline: false,
            content_id: None,
        }];
        let (thread, msg) =
            threads::add_message(&tx, &thread, inbound, t0() + Duration::minutes(1))
                .await
                .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(thread.version, 2);
        assert_eq!(msg.thread_id, thread.id);

        let (thread, _) = threads::add_comment(
            conn,
            &thread,
            &agent,
            "Call the fire brigade",
            t0() + Duration::minutes(2),
        )
        .await
        .unwrap();
        let thread = threads::set_assignee(
            conn,
            &thread,
            Some("a1".into()),
            &agent,
            t0() + Duration::minutes(3),
        )
        .await
        .unwrap();
        let thread = threads::change_tags(
            conn,
            &thread,
            &["urgent".into(), "hardware".into()],
            &[],
            &agent,
            t0() + Duration::minutes(4),
        )
        .await
        .unwrap();
        let thread = threads::change_tags(
            conn,
            &thread,
            &[],
            &["urgent".into()],
            &agent,
            t0() + Duration::minutes(5),
        )
        .await
        .unwrap();
        let thread = threads::set_customers(
            conn,
            &thread,
            &["acme".into(), "globex".into()],
            &agent,
            t0() + Duration::minutes(6),
        )
        .await
        .unwrap();
        let mut outbound = NewMessage::new(
            MessageDirection::Outbound,
            Channel::Email,
            "support@example.com",
            "Re: Printer on fire",
        );
        outbound.to = vec!["alice@example.com".into()];
        outbound.text_body = Some("We are on our way.".into());
        outbound.state = Some(OutboundState::Queued);
        let (thread, _) =
            threads::add_message(conn, &thread, outbound, t0() + Duration::minutes(7))
                .await
                .unwrap();
        let stale = thread.clone();
        let thread = threads::set_status(
            conn,
            &thread,
            ThreadStatus::Waiting,
            None,
            &agent,
            Some("replied"),
            t0() + Duration::minutes(8),
        )
        .await
        .unwrap();

        // A writer holding the old version loses: the compare-and-set refuses it.
        let err = threads::set_status(
            conn,
            &stale,
            ThreadStatus::Closed,
            None,
            &agent,
            None,
            t0() + Duration::minutes(9),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert!(err.is_transient());

        // Looking threads up by Message-ID and reply token.
        let found = threads::by_message_ids(conn, &["nope@x".into(), "m1@example.com".into()])
            .await
            .unwrap();
        assert_eq!(found.map(|t| t.id), Some(thread.id));
        let found = threads::by_reply_token(conn, &thread.reply_token)
            .await
            .unwrap();
        assert_eq!(found.map(|t| t.id), Some(thread.id));

        // The card, as `gochat threads --json` prints it.
        let cards = inbox::list_threads(
            conn,
            &InboxFilter {
                limit: 50,
                ..InboxFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(cards.len(), 1);
        let card = serde_json::to_value(&cards[0]).unwrap();
        assert_eq!(card["status"], "waiting");
        assert_eq!(card["subject"], "Printer on fire");
        assert_eq!(card["assignee"], "a1");
        assert_eq!(card["tags"], json!(["hardware"]));
        assert_eq!(
            card["item_count"], 4,
            "2 messages + 1 attachment + 1 comment"
        );
        assert_eq!(card["has_attachments"], true);
        assert_eq!(card["attachment_names"], json!(["fire.jpg"]));
        assert_eq!(card["snippet"], "We are on our way.");
        assert_eq!(card["version"], thread.version);
        assert_eq!(
            card["customers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["external_id"].clone())
                .collect::<Vec<_>>(),
            [json!("acme"), json!("globex")]
        );
        assert_eq!(
            card["contact"],
            json!({"name": "Alice Liddell", "address": "alice@example.com", "external_id": "acme"})
        );
        assert_eq!(card["last_message_at"], json!("2026-11-02T09:07:00Z"));

        // Filtering by status.
        let open = inbox::list_threads(
            conn,
            &InboxFilter {
                statuses: vec![ThreadStatus::Open],
                limit: 50,
                ..InboxFilter::default()
            },
        )
        .await
        .unwrap();
        assert!(open.is_empty());

        // The feed, as `gochat thread <id> --json` prints it: in time order, typed items.
        let view = inbox::thread_view(conn, thread.id).await.unwrap().unwrap();
        let feed = serde_json::to_value(&view).unwrap()["feed"].clone();
        let kinds: Vec<String> = feed
            .as_array()
            .unwrap()
            .iter()
            .map(|i| match i["type"].as_str().unwrap() {
                "event" => format!("event:{}", i["kind"].as_str().unwrap()),
                t => t.to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "event:created",
                "message",
                "comment",
                "event:assignee",
                "event:tags",
                "event:tags",
                "event:customers",
                "message",
                "event:status"
            ]
        );
        let first = &feed[1];
        assert_eq!(first["direction"], "inbound");
        assert_eq!(first["message_id"], "m1@example.com");
        assert_eq!(first["classification"], "new");
        let mut attachment = first["attachments"][0].clone();
        let id = attachment["id"].take();
        assert!(
            id.as_str()
                .is_some_and(|i| uuid::Uuid::try_parse(i).is_ok()),
            "{id}"
        );
        assert_eq!(
            attachment,
            json!({"id": null, "name": "fire.jpg", "content_type": "image/jpeg", "size": 7})
        );
        assert_eq!(first["attachments"].as_array().map(Vec::len), Some(1));
        assert_eq!(feed[8]["before"], json!({"status": "open"}));
        assert_eq!(feed[8]["after"], json!({"status": "waiting"}));
        assert_eq!(feed[8]["actor"]["id"], "a1");
        assert_eq!(feed[7]["state"], "queued");

        // Unknown thread: None; unknown customer: NotFound.
        assert!(
            inbox::thread_view(conn, uuid::Uuid::now_v7())
                .await
                .unwrap()
                .is_none()
        );
        let err = threads::set_customers(conn, &thread, &["initech".into()], &agent, t0())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    what: "customer",
                    ..
                }
            ),
            "{err}"
        );
    }
);

both_backends!(
    inbox_lists_newest_update_first_and_respects_the_limit,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let system = json!({"kind": "system"});
        let mut ids = Vec::new();
        for i in 0..5 {
            let t = threads::create(
                conn,
                NewThread::new(
                    format!("thread {i}"),
                    if i % 2 == 0 {
                        ThreadStatus::Open
                    } else {
                        ThreadStatus::Closed
                    },
                    Vec::new(),
                ),
                &system,
                t0() + Duration::minutes(i),
            )
            .await
            .unwrap();
            ids.push(t.id);
        }
        let cards = inbox::list_threads(
            conn,
            &InboxFilter {
                limit: 3,
                ..InboxFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            cards.iter().map(|c| c.id).collect::<Vec<_>>(),
            [ids[4], ids[3], ids[2]]
        );
        let open = inbox::list_threads(
            conn,
            &InboxFilter {
                statuses: vec![ThreadStatus::Open],
                limit: 10,
                ..InboxFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            open.iter().map(|c| c.id).collect::<Vec<_>>(),
            [ids[4], ids[2], ids[0]]
        );
    }
);

both_backends!(
    processed_jobs_and_outbox_round_trip,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        assert!(!processed::is_processed(conn, "job-1").await.unwrap());
        let tx = conn.begin().await.unwrap();
        assert!(
            processed::record(&tx, "job-1", "customer-upsert", t0())
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        assert!(processed::is_processed(conn, "job-1").await.unwrap());
        // A second record of the same id is refused (the caller rolls back its transaction).
        let tx = conn.begin().await.unwrap();
        assert!(
            !processed::record(&tx, "job-1", "customer-upsert", t0())
                .await
                .unwrap()
        );
        tx.rollback().await.unwrap();

        // Outbox rows wait in the unit of work until its commit: a rollback publishes
        // nothing, a checkpoint writes them all.
        let row = |i: i32| {
            outbox::new_row(
                OutboxKind::Event,
                "gochat.events",
                "thread.created",
                &format!("ev-{i}"),
                &json!({"n": i}),
                t0(),
            )
        };
        let mut tx = gochat::store::Tx::new(conn.clone());
        tx.defer_outbox(row(0));
        tx.get().await.unwrap();
        tx.rollback().await.unwrap();
        tx.checkpoint().await.unwrap();
        assert_eq!(outbox::backlog(conn).await.unwrap(), 0);

        let mut tx = gochat::store::Tx::new(conn.clone());
        for i in 1..=3 {
            tx.defer_outbox(row(i));
        }
        assert_eq!(outbox::backlog(conn).await.unwrap(), 0, "not before commit");
        tx.checkpoint().await.unwrap();
        assert_eq!(outbox::backlog(conn).await.unwrap(), 3);
        let lease = Duration::seconds(30);
        let first = outbox::claim(conn, t0(), lease, 2).await.unwrap();
        assert_eq!(first.len(), 2);
        // Leased rows are not handed out again until the lease ends.
        let second = outbox::claim(conn, t0(), lease, 10).await.unwrap();
        assert_eq!(second.len(), 1);
        assert!(
            outbox::claim(conn, t0() + Duration::seconds(1), lease, 10)
                .await
                .unwrap()
                .is_empty()
        );
        outbox::mark_published(conn, &first.iter().map(|m| m.id).collect::<Vec<_>>(), t0())
            .await
            .unwrap();
        assert_eq!(outbox::backlog(conn).await.unwrap(), 1);
        // After the lease expires an unpublished row comes back.
        let again = outbox::claim(conn, t0() + Duration::seconds(31), lease, 10)
            .await
            .unwrap();
        assert_eq!(
            again
                .iter()
                .map(|m| m.message_id.as_str())
                .collect::<Vec<_>>(),
            [second[0].message_id.as_str()]
        );
        // Pruning goes by creation (the UUIDv7 id), takes published rows only, and stops
        // at `max`.
        let made = Utc::now();
        assert_eq!(
            outbox::prune(conn, made - Duration::hours(1), 100)
                .await
                .unwrap(),
            0,
            "the rows are newer"
        );
        let later = made + Duration::seconds(1);
        assert_eq!(outbox::prune(conn, later, 1).await.unwrap(), 1);
        assert_eq!(outbox::prune(conn, later, 100).await.unwrap(), 1);
        assert_eq!(outbox::prune(conn, later, 100).await.unwrap(), 0);
        assert_eq!(
            outbox::backlog(conn).await.unwrap(),
            1,
            "the unpublished row stays"
        );

        // A bench forgets its own unpublished rows, by exact prefix, and no one else's.
        let to = |exchange: &str, id: &str| {
            outbox::new_row(OutboxKind::Event, exchange, "x", id, &json!({}), t0())
        };
        outbox::insert_all(
            conn,
            vec![
                to("bench_1.gochat.events", "b1"),
                to("benchx1.gochat.events", "b2"),
                to("bench_1.gochat.jobs", "b3"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(outbox::backlog_for(conn, "bench_1.").await.unwrap(), 2);
        assert_eq!(
            outbox::forget_unpublished(conn, "bench_1.").await.unwrap(),
            2
        );
        assert_eq!(outbox::backlog_for(conn, "bench_1.").await.unwrap(), 0);
        assert_eq!(outbox::backlog(conn).await.unwrap(), 2);
    }
);

both_backends!(
    due_timers_are_claimed_once_by_racing_schedulers_and_future_ones_never,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let thread = threads::create(
            conn,
            NewThread::new("Timers", ThreadStatus::Reminder, Vec::new()),
            &json!({"kind": "system"}),
            t0,
        )
        .await
        .expect("thread");
        const DUE: usize = 120;
        for i in 0..DUE {
            gochat::store::timers::schedule(conn, &thread, 1, t0 - Duration::seconds(i as i64), t0)
                .await
                .expect("due timer");
        }
        for i in 0..50 {
            gochat::store::timers::schedule(conn, &thread, 2, t0 + Duration::seconds(1 + i), t0)
                .await
                .expect("future timer");
        }
        // Four schedulers race, each claiming small batches in its own transaction.
        let mut tasks = Vec::new();
        for w in 0..4 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let mut tx = gochat::store::Tx::new(conn.clone());
                    let claimed = gochat::store::timers::claim_due(
                        tx.get().await.expect("begin"),
                        t0,
                        &format!("w{w}"),
                        7,
                    )
                    .await
                    .expect("claim");
                    tx.checkpoint().await.expect("commit");
                    if claimed.is_empty() {
                        break mine;
                    }
                    assert!(claimed.iter().all(|t| t.due_at <= t0 && t.step == 1));
                    assert!(
                        claimed
                            .iter()
                            .all(|t| t.claimed_by.as_deref() == Some(&*format!("w{w}")))
                    );
                    mine.extend(claimed.into_iter().map(|t| t.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), DUE, "every due timer claimed");
        assert_eq!(unique.len(), DUE, "none claimed twice");
        assert!(
            !gochat::store::timers::any_due(conn, t0)
                .await
                .expect("probe"),
            "nothing left due"
        );
        assert_eq!(
            gochat::store::timers::pending_count(conn)
                .await
                .expect("count"),
            50,
            "future timers untouched"
        );
        // Cancelling takes the pending ones (claimed ones too: their job will find the
        // timer cancelled).
        let n = gochat::store::timers::cancel_for_thread(conn, thread.id)
            .await
            .expect("cancel");
        assert_eq!(n, (DUE + 50) as u64);
        assert_eq!(
            gochat::store::timers::pending_count(conn)
                .await
                .expect("count"),
            0
        );
    }
);

/// SQLite's plan for `stmt`: the `detail` of each `EXPLAIN QUERY PLAN` line.
async fn sqlite_plan(conn: &sea_orm::DatabaseConnection, stmt: sea_orm::Statement) -> Vec<String> {
    use sea_orm::ConnectionTrait;
    let sql = format!("EXPLAIN QUERY PLAN {}", stmt.sql);
    let values = stmt.values.map(|v| v.0).unwrap_or_default();
    conn.query_all_raw(sea_orm::Statement::from_sql_and_values(
        conn.get_database_backend(),
        sql,
        values,
    ))
    .await
    .expect("explain")
    .iter()
    .map(|r| r.try_get::<String>("", "detail").expect("detail"))
    .collect()
}

/// The claim's cost must follow the timers due, not those stored: on SQLite (whose planner
/// is rule-based, so the plan is the same on an empty table) rows are reached through the
/// `(state, due_at)` range and the primary key, never by walking every pending timer.
/// (A plan check, not a timing: `gochat bench timers` measures the time.) PostgreSQL's
/// plan depends on table statistics, so the bench covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_timer_claim_plan_never_walks_the_pending_timers() {
    use sea_orm::Statement;
    let db = common::TestDb::new(common::Backend::Sqlite).await;
    let store = db.store().await;
    let conn = store.conn();
    let b = conn.get_database_backend();
    let now = Utc::now();
    let plan = sqlite_plan(
        conn,
        Statement::from_sql_and_values(
            b,
            gochat::store::timers::claim_sql(b),
            ["w".into(), now.into(), now.into(), 10i64.into()],
        ),
    )
    .await;
    assert!(
        plan.iter().any(|l| l.contains("(state=? AND due_at<?)")),
        "due timers are found by range: {plan:?}"
    );
    assert!(
        plan.iter().any(|l| l.contains("(id=?)")),
        "claimed by primary key: {plan:?}"
    );
    assert!(
        !plan
            .iter()
            .any(|l| l.starts_with("SCAN timers") || l.ends_with("(state=?)")),
        "a step walks every pending timer: {plan:?}"
    );
}

/// An outbound job finds the message an earlier attempt composed through the partial
/// index of outbound messages by job (inbound messages, the busy insert path, stay out of
/// it), and the raw mails that need attention have their own small index. Plan checks on
/// SQLite, whose rule-based plan does not depend on table statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_indexes_serve_their_queries() {
    use sea_orm::{QueryTrait, Statement};
    let db = common::TestDb::new(common::Backend::Sqlite).await;
    db.store().await.close().await;
    // Connections opened after the migrations: a pooled SQLite connection may keep the
    // schema it read before them (its last read snapshot) for a while.
    let store = gochat::store::Store::connect(&db.config())
        .await
        .expect("connect");
    let conn = store.conn();
    let b = conn.get_database_backend();
    let queries = [
        (
            gochat::store::outbound::for_job_query("job-1").build(b),
            "ix_messages_outbound_job",
        ),
        (
            Statement::from_string(
                b,
                "SELECT id FROM raw_mails WHERE status IN ('pending', 'failed') ORDER BY received_at",
            ),
            "ix_raw_mails_unsettled",
        ),
    ];
    for (query, index) in queries {
        let plan = sqlite_plan(conn, query).await;
        let uses = format!("USING INDEX {index}");
        assert!(plan.iter().any(|l| l.contains(&uses)), "{plan:?}");
    }
}

/// The plan PostgreSQL makes for `stmt` as a prepared statement's generic plan (made
/// without the bound values, as a statement run many times gets), sequential scans off: a
/// line names an index only if the query can use it whatever the table's size.
async fn pg_generic_plan(stmt: sea_orm::Statement) -> Vec<String> {
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let store = db.store().await;
    generic_plan_in(store.conn(), "SET LOCAL enable_seqscan = off", "", stmt).await
}

/// A bound value as SQL text for `EXECUTE`'s arguments: a string literal, or an array
/// parameter as its array literal (in quotes, so it takes the parameter's type).
fn spell(v: sea_orm::Value) -> String {
    match v {
        sea_orm::Value::String(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        sea_orm::Value::Array(_, Some(items)) => {
            let elements: Vec<String> = items
                .into_iter()
                .map(|e| match e {
                    sea_orm::Value::String(Some(s)) => s,
                    sea_orm::Value::Uuid(Some(id)) => id.to_string(),
                    other => panic!("an element this test does not spell: {other:?}"),
                })
                .map(|e| format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            spell(sea_orm::Value::from(format!("{{{}}}", elements.join(","))))
        }
        other => panic!("a value this test does not spell: {other:?}"),
    }
}

/// `EXPLAIN {options}` of `stmt`'s generic plan, in a transaction on `conn` that first runs
/// `settings` and is rolled back (so `ANALYZE` may run a write).
async fn generic_plan_in(
    conn: &sea_orm::DatabaseConnection,
    settings: &str,
    options: &str,
    stmt: sea_orm::Statement,
) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let tx = conn.begin().await.expect("begin");
    let b = tx.get_database_backend();
    tx.execute_unprepared(&format!(
        "SET LOCAL plan_cache_mode = force_generic_plan; {settings}"
    ))
    .await
    .expect("set");
    tx.execute_unprepared(&format!("PREPARE q AS {}", stmt.sql))
        .await
        .expect("prepare");
    let args: Vec<String> = stmt
        .values
        .map(|v| v.0)
        .unwrap_or_default()
        .into_iter()
        .map(spell)
        .collect();
    tx.query_all_raw(Statement::from_string(
        b,
        format!("EXPLAIN {options} EXECUTE q({})", args.join(", ")),
    ))
    .await
    .expect("explain")
    .iter()
    .map(|r| r.try_get::<String>("", "QUERY PLAN").expect("plan"))
    .collect()
}

/// A batch's card update, run as a generic plan among thousands of threads, reads its
/// threads by primary key and expands each JSON row once. The planner guesses 100 rows for
/// the `jsonb` array whatever it holds; against that guess it would scan the whole table
/// for every statement, or pair rows with threads by version alone, expanding every row
/// once per thread of that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_update_finds_its_threads_by_key_and_reads_each_row_once() {
    use gochat::store::cards::{CardWrite, update_statement};
    use sea_orm::{ConnectionTrait, DbBackend, QuerySelect};
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let store = db.store().await;
    let conn = store.conn();
    conn.execute_unprepared(
        "INSERT INTO threads (id, subject, status, lifecycle, reply_token, version, flags, \
         created_at, updated_at, attachment_names) \
         SELECT gen_random_uuid(), 'seeded ' || i, 'open', 'default', 'token-' || i, 1, '{}', \
         now(), now(), '[]' FROM generate_series(1, 20000) AS i; ANALYZE threads",
    )
    .await
    .expect("seed threads");
    let writes: Vec<CardWrite> = gochat_entities::threads::Entity::find()
        .limit(40)
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|thread| {
            let mut card = thread.clone();
            card.version += 1;
            card.status = ThreadStatus::Waiting;
            CardWrite {
                base: thread.version,
                card,
            }
        })
        .collect();
    assert_eq!(writes.len(), 40);
    let stmt = update_statement(DbBackend::Postgres, &writes).unwrap();
    let plan = generic_plan_in(conn, "", "(ANALYZE, COSTS OFF, TIMING OFF)", stmt).await;
    assert!(plan.iter().any(|l| l.contains("threads_pkey")), "{plan:?}");
    assert!(
        !plan.iter().any(|l| l.contains("Seq Scan on threads")),
        "{plan:?}"
    );
    let expansions: Vec<&String> = plan
        .iter()
        .filter(|l| l.contains("jsonb_populate_record"))
        .collect();
    assert!(
        expansions.len() == 1 && expansions[0].contains("loops=40)"),
        "each row expanded once: {plan:?}"
    );
    assert!(
        plan.iter().any(|l| l.starts_with("Update on threads")),
        "{plan:?}"
    );
}

/// The outbound job lookup reaches its partial index in a generic plan, because it states
/// the index's condition as a literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_job_lookup_uses_its_partial_index_in_a_generic_plan() {
    use sea_orm::{DbBackend, QueryTrait};
    let stmt = gochat::store::outbound::for_job_query("job-1").build(DbBackend::Postgres);
    let plan = pg_generic_plan(stmt).await;
    assert!(
        plan.iter().any(|l| l.contains("ix_messages_outbound_job")),
        "{plan:?}"
    );
}

/// Lookups by a list of keys send them as one array (`= ANY(CAST($1 AS text[]))`, see
/// `store::bulk`): compared with a `varchar` column, the array still reaches its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_list_lookups_use_their_index_in_a_generic_plan() {
    use gochat_entities::messages;
    use sea_orm::{DbBackend, QuerySelect, QueryTrait};
    let stmt = messages::Entity::find()
        .select_only()
        .column(messages::Column::Id)
        .filter(gochat::store::bulk::any_of(
            DbBackend::Postgres,
            messages::Column::MessageIdHeader,
            ["a@x", "b@x"],
        ))
        .build(DbBackend::Postgres);
    assert!(stmt.sql.contains("ANY(CAST($1 AS text[]))"), "{}", stmt.sql);
    let plan = pg_generic_plan(stmt).await;
    assert!(
        plan.iter()
            .any(|l| l.contains("ix_messages_message_id_header")),
        "{plan:?}"
    );
}

/// An open thread of a customer of its own, `external`, created by the system.
async fn open_thread(
    conn: &sea_orm::DatabaseConnection,
    external: &str,
    subject: &str,
) -> gochat_entities::threads::Model {
    let (customer, _) = customers::ensure_customer(conn, external, external, t0())
        .await
        .unwrap();
    let system = json!({"kind": "system", "id": "test", "name": "test"});
    threads::create(
        conn,
        NewThread::new(subject, ThreadStatus::Open, vec![customer]),
        &system,
        t0(),
    )
    .await
    .unwrap()
}

both_backends!(
    attachments_share_one_blob_per_content_within_and_across_messages,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let thread = open_thread(conn, "blobs", "Files").await;
        let file = |name: &str, data: &[u8], inline: bool| NewAttachment {
            name: name.into(),
            content_type: "application/octet-stream".into(),
            data: data.to_vec(),
            inline,
            content_id: inline.then(|| format!("{name}@x")),
        };
        let logo = b"the company logo".as_slice();
        let mut first = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            "a@example.com",
            "Files",
        );
        // The same logo twice in one message (one statement must not insert it twice).
        first.attachments = vec![
            file("logo.png", logo, true),
            file("report.pdf", b"the report", false),
            file("logo-again.png", logo, false),
        ];
        let (thread, m1) = threads::add_message(conn, &thread, first, t0())
            .await
            .unwrap();
        assert_eq!(
            thread.item_count, 3,
            "the message and its two non-inline files"
        );
        let mut second = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            "a@example.com",
            "Re: Files",
        );
        second.attachments = vec![file("logo.png", logo, true)];
        let (_, m2) = threads::add_message(conn, &thread, second, t0())
            .await
            .unwrap();

        let blobs = gochat_entities::blobs::Entity::find()
            .all(conn)
            .await
            .unwrap();
        let mut contents: Vec<Vec<u8>> = blobs.into_iter().map(|b| b.data).collect();
        contents.sort();
        assert_eq!(
            contents,
            vec![b"the company logo".to_vec(), b"the report".to_vec()]
        );
        let rows = |m: uuid::Uuid| {
            gochat_entities::attachments::Entity::find()
                .filter(gochat_entities::attachments::Column::MessageId.eq(m))
                .all(conn)
        };
        let mut names: Vec<String> = rows(m1.id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        names.sort();
        assert_eq!(names, ["logo-again.png", "logo.png", "report.pdf"]);
        let again = rows(m2.id).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].inline);
    }
);

// A new thread written together with its first message (one insert, the card filled in)
// ends exactly as one created and then given the message (an insert and an update): the
// same card, version, customers, events and message, as read back from the database.
both_backends!(
    a_thread_written_with_its_first_message_equals_one_created_then_given_it,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let (acme, _) = customers::ensure_customer(conn, "acme", "ACME", t0())
            .await
            .unwrap();
        let (alice, _) =
            customers::find_or_create_contact(conn, &email("alice@example.com", "Alice"), t0())
                .await
                .unwrap();
        let actor = json!({"kind": "contact", "id": alice, "name": "Alice"});
        let message = || {
            let mut m = NewMessage::new(
                MessageDirection::Inbound,
                Channel::Email,
                "alice@example.com",
                "Printer on fire",
            );
            m.contact_id = Some(alice);
            m.text_body = Some("The   printer\nis on fire.".into());
            m.classification = Some(Classification::New);
            m.attachments = vec![NewAttachment {
                name: "fire.jpg".into(),
                content_type: "image/jpeg".into(),
                data: vec![0xff, 0xd8, 1, 2],
                inline: false,
                content_id: None,
            }];
            m
        };
        let new = || NewThread {
            mailbox: Some("support@example.com".into()),
            detail: Some(json!({"by": "new_thread"})),
            ..NewThread::new("Printer on fire", ThreadStatus::Open, vec![acme])
        };

        // Created, then given the message.
        let created = threads::create(conn, new(), &actor, t0()).await.unwrap();
        let (two_steps, _) = threads::add_message(conn, &created, message(), t0())
            .await
            .unwrap();
        // Written with it.
        let prepared = threads::prepare(new(), &actor, t0());
        let mut events = Vec::new();
        let (one_step, _) =
            threads::create_with_message(conn, &prepared, message(), t0(), &mut events)
                .await
                .unwrap();
        assert_eq!(
            events.len(),
            1,
            "the created event, for the caller to write"
        );
        threads::insert_events(conn, events).await.unwrap();

        let read = |id| async move { threads::get(conn, id).await.unwrap() };
        let (a, b) = (read(two_steps.id).await, read(one_step.id).await);
        assert_eq!(a, two_steps, "what add_message returns is what is stored");
        assert_eq!(
            b, one_step,
            "what create_with_message returns is what is stored"
        );
        let comparable = |t: gochat_entities::threads::Model| gochat_entities::threads::Model {
            id: uuid::Uuid::nil(),
            reply_token: String::new(),
            ..t
        };
        assert_eq!(comparable(a.clone()), comparable(b.clone()));
        assert_eq!(b.version, 2);
        assert_eq!(b.item_count, 2);
        assert_eq!(b.snippet.as_deref(), Some("The printer is on fire."));
        assert_eq!(b.contact_id, Some(alice));
        assert!(b.has_attachments);
        for id in [a.id, b.id] {
            let ids: Vec<uuid::Uuid> = threads::customer_ids(conn, id)
                .await
                .unwrap()
                .into_iter()
                .map(|(c, _)| c)
                .collect();
            assert_eq!(ids, vec![acme]);
            use gochat_entities::{attachments, messages, thread_events};
            use sea_orm::PaginatorTrait;
            let events = thread_events::Entity::find()
                .filter(thread_events::Column::ThreadId.eq(id))
                .filter(thread_events::Column::Kind.eq("created"))
                .count(conn)
                .await
                .unwrap();
            assert_eq!(events, 1);
            let stored = messages::Entity::find()
                .filter(messages::Column::ThreadId.eq(id))
                .all(conn)
                .await
                .unwrap();
            assert_eq!(stored.len(), 1);
            let files = attachments::Entity::find()
                .filter(attachments::Column::MessageId.eq(stored[0].id))
                .count(conn)
                .await
                .unwrap();
            assert_eq!(files, 1);
        }
    }
);

// The recipient rule in one statement: a message may go only to an e-mail contact of one of
// the thread's customers, named by address (any case) or by contact id.
both_backends!(
    a_recipient_must_be_an_email_contact_of_the_threads_customers,
    |db: common::TestDb| async move {
        use gochat::store::outbound::resolve_recipient;
        let store = db.store().await;
        let conn = store.conn();
        let now = t0();
        let (thread, ada) =
            common::fixtures::thread_with_contact(&store, "default", "ada@acme.example", now).await;
        let upsert = |external: &str, kind: ContactKind, address: &str| CustomerUpsert {
            external_id: external.into(),
            name: external.into(),
            contacts: vec![ContactInput {
                kind,
                address: address.into(),
                name: None,
                language: None,
                time_zone: None,
            }],
            replace_contacts: false,
        };
        // A contact of another customer, and a chat contact of the thread's own.
        for (customer, kind, address) in [
            ("globex", ContactKind::Email, "bob@globex.example"),
            ("acme", ContactKind::Chat, "ada-chat"),
        ] {
            gochat::store::customers::upsert_customer(conn, &upsert(customer, kind, address), now)
                .await
                .expect("customer");
        }
        let chat = gochat_entities::contacts::Entity::find()
            .filter(gochat_entities::contacts::Column::Address.eq("ada-chat"))
            .one(conn)
            .await
            .expect("query")
            .expect("chat contact")
            .id;

        for spec in ["Ada@ACME.example", &ada.to_string()] {
            let r = resolve_recipient(conn, thread, spec).await.expect("query");
            let r = r.unwrap_or_else(|why| panic!("{spec}: {why}"));
            assert_eq!(
                (r.contact_id, r.address.as_str()),
                (ada, "ada@acme.example")
            );
            assert_eq!(r.name.as_deref(), Some("Ada"));
        }
        for (spec, why) in [
            (
                "bob@globex.example",
                "is not a contact of the thread's customers",
            ),
            (
                "eve@nowhere.example",
                "is not a contact of the thread's customers",
            ),
            (
                &uuid::Uuid::now_v7().to_string(),
                "is not a contact of the thread's customers",
            ),
            (&chat.to_string(), "is a chat contact"),
            ("not an address", "is not an e-mail address or a contact id"),
        ] {
            let r = resolve_recipient(conn, thread, spec).await.expect("query");
            assert!(
                matches!(&r, Err(e) if e.contains(why)),
                "{spec}: {r:?}, expected {why:?}"
            );
        }
    }
);

// A gated unit of work begins its transaction only with a permit, and gives it back when
// the transaction ends: a second one waits meanwhile (on PostgreSQL, which would otherwise
// run both at once), and runs once the first commits or rolls back.
both_backends!(
    a_gated_transaction_waits_for_the_one_holding_the_permit,
    |db: common::TestDb| async move {
        use gochat::store::Tx;
        use std::time::Duration;
        let store = db.store().await;
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let gated = || {
            let mut tx = Tx::new(store.conn().clone());
            tx.gate(gate.clone());
            tx
        };
        let mut holder = gated();
        holder.get().await.expect("begin");
        for commits in [true, false] {
            let mut next = gated();
            let waited = tokio::time::timeout(Duration::from_millis(300), next.get()).await;
            assert!(waited.is_err(), "began while another held the permit");
            assert_eq!(gate.available_permits(), 0);
            if commits {
                holder.checkpoint().await.expect("commit");
            } else {
                holder.rollback().await.expect("rollback");
            }
            tokio::time::timeout(Duration::from_secs(5), next.get())
                .await
                .unwrap_or_else(|_| {
                    panic!("still waiting after the holder's end (commit: {commits})")
                })
                .expect("begin");
            holder = next;
        }
        holder.checkpoint().await.expect("commit");
        assert_eq!(gate.available_permits(), 1);
    }
);

/// Mail-sized values (raw mails, bodies, attachments) are compressed with lz4 on
/// PostgreSQL, faster than the default pglz (see the migration): the columns
/// say so, and a stored raw mail is lz4 on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_compresses_mail_sized_values_with_lz4() {
    use gochat::store::inbound::{NewRawMail, store_raw};
    use sea_orm::{ConnectionTrait, Statement};
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let store = db.store().await;
    let conn = store.conn();
    let text = |sql: &str| {
        let sql = sql.to_owned();
        async move {
            conn.query_all_raw(Statement::from_string(conn.get_database_backend(), &sql))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| r.try_get::<String>("", "r").expect("r"))
                .collect::<Vec<_>>()
        }
    };
    let columns = text(
        "SELECT CAST(attrelid::regclass AS TEXT) || '.' || attname || ' ' || \
         CAST(attcompression AS TEXT) AS r FROM pg_attribute \
         WHERE attrelid IN ('raw_mails'::regclass, 'messages'::regclass, 'blobs'::regclass) \
         AND attname IN ('data', 'text_body', 'html_body') ORDER BY 1",
    )
    .await;
    assert_eq!(
        columns,
        [
            "blobs.data l",
            "messages.html_body l",
            "messages.text_body l",
            "raw_mails.data l"
        ]
    );
    let mail: Vec<u8> = (0..400)
        .flat_map(|i| format!("line {i} of a long mail that compresses well\r\n").into_bytes())
        .collect();
    let row = store_raw(
        conn,
        &NewRawMail {
            job_message_id: "big",
            envelope_from: None,
            recipients: &[],
            mailbox: None,
            data: &mail,
            sha256: "0",
            received_at: Utc::now(),
            known: None,
        },
    )
    .await
    .expect("stored");
    let how = text(&format!(
        "SELECT pg_column_compression(data) AS r FROM raw_mails WHERE id = '{}'",
        row.id
    ))
    .await;
    assert_eq!(how, ["lz4"]);
}

fn mail_contact(address: &str, name: Option<&str>, language: Option<&str>) -> ContactInput {
    ContactInput {
        kind: ContactKind::Email,
        address: address.into(),
        name: name.map(Into::into),
        language: language.map(Into::into),
        time_zone: None,
    }
}

both_backends!(
    mail_contacts_and_customers_are_found_filled_or_created,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        let first = customers::find_or_create_contacts(
            conn,
            &[
                mail_contact("alice@example.com", None, None),
                mail_contact("bob@example.com", Some("Bob"), Some("en")),
            ],
            t0(),
        )
        .await
        .unwrap();
        assert!(first.iter().all(|(_, created)| *created), "{first:?}");

        // Alice gets the name and language she lacked, Bob keeps his, Carol is new.
        let again = customers::find_or_create_contacts(
            conn,
            &[
                mail_contact(" ALICE@example.com", Some("Alice"), Some("fr")),
                mail_contact("bob@example.com", Some("Robert"), Some("de")),
                mail_contact("carol@example.com", Some("Carol"), None),
            ],
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(again[0], (first[0].0, false));
        assert_eq!(again[1], (first[1].0, false));
        assert!(again[2].1, "carol is created");
        let stored: Vec<(String, Option<String>, Option<String>)> =
            gochat_entities::contacts::Entity::find()
                .all(conn)
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.address, c.display_name, c.language))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            stored,
            [
                ("alice@example.com".into(), some("Alice"), some("fr")),
                ("bob@example.com".into(), some("Bob"), some("en")),
                ("carol@example.com".into(), some("Carol"), None),
            ]
        );

        // An existing customer is found and keeps its name; a new one is created.
        let (acme, _) = customers::ensure_customer(conn, "acme", "ACME Corp", t0())
            .await
            .unwrap();
        let got = customers::ensure_customers(
            conn,
            &[
                ("acme".into(), "Renamed".into()),
                ("globex".into(), "Globex".into()),
            ],
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(got[0], (acme, false));
        assert!(got[1].1, "globex is created");
        let acme_row = gochat_entities::customers::Entity::find_by_id(acme)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acme_row.name, "ACME Corp");
    }
);

/// Two batches with a sender in common must not wait for each other (an upsert of an
/// existing contact used to lock it until its transaction committed); a contact or customer
/// another transaction is creating is waited for and then found, not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mail_contacts_of_concurrent_batches_do_not_wait_on_each_other() {
    use sea_orm::ConnectionTrait;
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let store = db.store().await;
    let conn = store.conn();
    let alice = || mail_contact("alice@example.com", Some("Alice"), None);
    let (alice_id, _) = customers::find_or_create_contact(conn, &alice(), t0())
        .await
        .unwrap();
    let (acme, _) = customers::ensure_customer(conn, "acme", "ACME", t0())
        .await
        .unwrap();

    let first = conn.begin().await.unwrap();
    customers::find_or_create_contacts(&first, &[alice()], t0())
        .await
        .unwrap();
    customers::ensure_customers(&first, &[("acme".into(), "ACME".into())], t0())
        .await
        .unwrap();
    let second = conn.begin().await.unwrap();
    second
        .execute_unprepared("SET LOCAL lock_timeout = '2s'")
        .await
        .unwrap();
    let got = customers::find_or_create_contacts(&second, &[alice()], t0())
        .await
        .expect("alice is found without waiting for the first batch");
    assert_eq!(got, [(alice_id, false)]);
    let got = customers::ensure_customers(&second, &[("acme".into(), "ACME".into())], t0())
        .await
        .expect("acme is found without waiting for the first batch");
    assert_eq!(got, [(acme, false)]);
    second.commit().await.unwrap();
    first.commit().await.unwrap();

    // Dave and Initech are being created by one transaction when another asks for them.
    let dave = || mail_contact("dave@example.com", Some("Dave"), None);
    let creating = conn.begin().await.unwrap();
    let made = customers::find_or_create_contacts(&creating, &[dave()], t0())
        .await
        .unwrap();
    let made_customer =
        customers::ensure_customers(&creating, &[("initech".into(), "Initech".into())], t0())
            .await
            .unwrap();
    assert!(made[0].1 && made_customer[0].1);
    let waiting = conn.begin().await.unwrap();
    let asking = tokio::spawn(async move {
        let contact = customers::find_or_create_contacts(&waiting, &[dave()], t0()).await;
        let customer =
            customers::ensure_customers(&waiting, &[("initech".into(), "Initech".into())], t0())
                .await;
        waiting.commit().await.unwrap();
        (contact.unwrap(), customer.unwrap())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !asking.is_finished(),
        "the second waits for the first to commit"
    );
    creating.commit().await.unwrap();
    let (contact, customer) = asking.await.unwrap();
    assert_eq!(contact, [(made[0].0, false)]);
    assert_eq!(customer, [(made_customer[0].0, false)]);
    assert_eq!(
        common::count(
            conn,
            "SELECT COUNT(*) AS n FROM contacts WHERE address = 'dave@example.com'"
        )
        .await,
        1
    );
}

// PostgreSQL receives batch inserts as one JSON parameter (`store::bulk`): every value must
// come back exactly as written, whatever its characters or bytes, as on SQLite.
both_backends!(
    awkward_text_bytes_and_json_come_back_exactly_as_written,
    |db: common::TestDb| async move {
        use gochat::store::inbound::{NewRawMail, store_raw_many};
        let store = db.store().await;
        let conn = store.conn();
        let thread = open_thread(conn, "awkward", "Awkward").await;
        let awkward = "quote \" apostrophe ' backslash \\ \\x00 slash / tab \t cr \r lf \n \
                       bell \u{7} del \u{7f} é ß 漢字 🦀 e\u{301} \u{feff} \u{2028} $1 ? %s";
        let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut m = NewMessage::new(
            MessageDirection::Inbound,
            Channel::Email,
            "awkward@example.com",
            awkward,
        );
        m.from_name = Some(awkward.into());
        m.text_body = Some(awkward.repeat(50));
        m.html_body = Some(String::new());
        m.references = vec![awkward.into(), "<a@b>".into()];
        m.author = Some(json!({"nested": {"list": [1, 2.5, null, true, awkward]}, "": ""}));
        // Lookups send their keys as one array parameter on PostgreSQL: quotes,
        // backslashes, commas, braces and the word NULL must stay part of the key.
        let awkward_id = r#"a"b\c,d}{e NULL@x"#;
        m.message_id_header = Some(awkward_id.into());
        m.dedupe_key = Some(awkward.into());
        m.attachments = vec![
            NewAttachment {
                name: awkward.into(),
                content_type: "application/octet-stream".into(),
                data: all_bytes.clone(),
                inline: false,
                content_id: None,
            },
            NewAttachment {
                name: "empty".into(),
                content_type: "text/plain".into(),
                data: Vec::new(),
                inline: true,
                content_id: Some("empty@x".into()),
            },
        ];
        let at = t0() + Duration::microseconds(123_456);
        let (_, written) = threads::add_message(conn, &thread, m, at).await.unwrap();
        let read = gochat_entities::messages::Entity::find_by_id(written.id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, written);
        let found = threads::by_message_ids(conn, &["NULL".into(), awkward_id.into()])
            .await
            .unwrap();
        assert_eq!(found.map(|t| t.id), Some(thread.id));
        let by_key = gochat::store::inbound::by_dedupe_keys(conn, &[awkward.into(), "NULL".into()])
            .await
            .unwrap();
        assert_eq!(by_key.keys().collect::<Vec<_>>(), [awkward]);
        let mut blobs: Vec<Vec<u8>> = gochat_entities::blobs::Entity::find()
            .all(conn)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.data)
            .collect();
        blobs.sort();
        assert_eq!(blobs, [Vec::new(), all_bytes.clone()]);
        let names: Vec<String> = gochat_entities::attachments::Entity::find()
            .filter(gochat_entities::attachments::Column::MessageId.eq(written.id))
            .all(conn)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert!(names.contains(&awkward.to_owned()), "{names:?}");

        // Raw mails: bytes that are not UTF-8, in one batch with an empty mail.
        let recipients = vec![awkward.to_owned()];
        let raw = |job, data| NewRawMail {
            job_message_id: job,
            envelope_from: Some(awkward),
            recipients: &recipients,
            mailbox: None,
            data,
            sha256: "0",
            received_at: at,
            known: None,
        };
        let stored = store_raw_many(conn, &[raw("binary", &all_bytes), raw("empty", b"")])
            .await
            .unwrap();
        for (row, want) in stored.iter().zip([all_bytes.as_slice(), b""]) {
            let read = gochat_entities::raw_mails::Entity::find_by_id(row.id)
                .one(conn)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read.data, want);
            assert_eq!(read.envelope_from.as_deref(), Some(awkward));
            assert_eq!(read.recipients, json!([awkward]));
            assert_eq!(read.received_at, at);
        }
    }
);

both_backends!(
    dead_job_records_expire_and_a_replay_dead_again_keeps_the_latest,
    |db: common::TestDb| async move {
        let store = db.store().await;
        let conn = store.conn();
        processed::record_dead(conn, "old", "inbound-mail", "first reason", t0())
            .await
            .unwrap();
        processed::record_dead(
            conn,
            "young",
            "inbound-mail",
            "why",
            t0() + Duration::days(20),
        )
        .await
        .unwrap();
        // The old job dead again after a replay: its latest reason and time count.
        processed::record_dead(conn, "replayed", "thread-update", "before", t0())
            .await
            .unwrap();
        processed::record_dead(
            conn,
            "replayed",
            "thread-update",
            "after the replay",
            t0() + Duration::days(25),
        )
        .await
        .unwrap();
        let cut = t0() + Duration::days(10);
        assert_eq!(processed::prune_dead(conn, cut).await.unwrap(), 1);
        let left = processed::dead_reasons(conn, &["old", "young", "replayed"])
            .await
            .unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!left.contains_key("old"));
        assert_eq!(left["young"], "why");
        assert_eq!(left["replayed"], "after the replay");
        assert_eq!(processed::prune_dead(conn, cut).await.unwrap(), 0);
    }
);
