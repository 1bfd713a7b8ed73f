//! The inbound-mail job end to end: real RabbitMQ, both databases, and a real SMTP server
//! for the acknowledgements the worker sends. Threading (In-Reply-To, References only, a
//! reply to the mail we sent, tokens from contacts and from strangers, a forwarded mail),
//! duplicates, auto-replies, a reply during the reminder ladder and to a closed thread,
//! bounces, loops, and input that cannot be processed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::broker::{TestBroker, eventually, start_worker};
use common::mail::TestMail;
use common::smtp::SmtpSink;
use common::{TestDb, count};
use gochat::clock::SystemClock;
use gochat::config::Config;
use gochat::store::Store;
use gochat::store::threads;
use gochat_entities::messages::{self, Classification, OutboundState};
use gochat_entities::threads::ThreadStatus;
use gochat_entities::{raw_mails, thread_events};
use mail_parser::MessageParser;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const SUPPORT: &str = "support@gochat.example";

/// How many inbound batches `handler` ended with `outcome` (committed, cut, failed).
fn inbound_batches(handler: &gochat::workflow::handler::WorkflowHandler, outcome: &str) -> u64 {
    handler
        .services()
        .metrics
        .job_batches
        .with_label_values(&["inbound-mail", outcome])
        .get()
}

fn config(db: &TestDb, broker: &TestBroker, sink: &SmtpSink) -> Config {
    let mut c = common::broker::worker_config(db, broker);
    c.amqp.retry_delays = vec![Duration::from_millis(300); 3];
    c.smtp.url = gochat::config::SecretUrl::new(sink.url());
    c.smtp.timeout = Duration::from_secs(5);
    c
}

fn job(raw: &[u8], to: &str) -> serde_json::Value {
    json!({"schema": "inbound-mail/v1",
           "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
           "recipients": [to]})
}

/// Publishes `mail` to `to` as job `id` and waits until it is applied.
async fn deliver_to(broker: &TestBroker, store: &Store, id: &str, mail: &TestMail, to: &str) {
    broker
        .publish_json("inbound-mail", id, &job(&mail.bytes(), to))
        .await;
    applied(store, id).await;
}

async fn deliver(broker: &TestBroker, store: &Store, id: &str, mail: &TestMail) {
    deliver_to(broker, store, id, mail, SUPPORT).await;
}

async fn applied(store: &Store, id: &str) {
    let sql = format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id = '{id}'");
    eventually(WAIT, &format!("job {id} applied"), || async {
        (count(store.conn(), &sql).await == 1).then_some(())
    })
    .await;
}

/// The message job `id` stored.
async fn stored(store: &Store, id: &str) -> messages::Model {
    messages::Entity::find()
        .filter(messages::Column::JobMessageId.eq(id))
        .one(store.conn())
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("job {id} stored no message"))
}

/// Why the thread's latest mail joined it: the `detail` of its latest `mail_matched` event,
/// or of its `created` event for a thread a mail opened.
async fn matched(store: &Store, thread: Uuid) -> serde_json::Value {
    thread_events::Entity::find()
        .filter(thread_events::Column::ThreadId.eq(thread))
        .filter(thread_events::Column::Kind.is_in(["mail_matched", "created"]))
        .order_by_desc(thread_events::Column::At)
        .order_by_desc(thread_events::Column::Id)
        .one(store.conn())
        .await
        .expect("query")
        .and_then(|e| e.detail)
        .unwrap_or_default()
}

async fn outbox(store: &Store, routing_key: &str) -> i64 {
    count(
        store.conn(),
        &format!("SELECT COUNT(*) AS n FROM outbox WHERE routing_key = '{routing_key}'"),
    )
    .await
}

async fn transition(broker: &TestBroker, store: &Store, id: &str, thread: Uuid, to: &str) {
    broker
        .publish_json(
            "status-transition",
            id,
            &json!({"schema": "status-transition/v1", "thread_id": thread, "to": to,
                    "actor": {"kind": "agent", "id": "a1", "name": "Agent"}}),
        )
        .await;
    applied(store, id).await;
}

both_backends!(
    a_conversation_threads_by_headers_and_tokens_and_strangers_never_join,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let worker = start_worker(config(&db, &broker, &sink), Arc::new(SystemClock)).await;
        let conn = store.conn();

        // A new mail opens a thread for a new customer, and its sender is acknowledged.
        let first = TestMail::new(
            "Ada Lovelace <Ada@Acme.example>",
            SUPPORT,
            "Printer on fire",
            "Help, it burns.\n",
        );
        deliver(&broker, &store, "m1", &first).await;
        let m1 = stored(&store, "m1").await;
        assert_eq!(m1.classification, Some(Classification::New));
        assert_eq!(m1.from_address, "ada@acme.example");
        let t1 = threads::get(conn, m1.thread_id).await.expect("thread");
        assert_eq!(
            (t1.status, t1.subject.as_str()),
            (ThreadStatus::Open, "Printer on fire")
        );
        let customers = threads::customer_ids(conn, t1.id).await.expect("customers");
        assert_eq!(
            customers
                .iter()
                .map(|(_, e)| e.as_str())
                .collect::<Vec<_>>(),
            ["email:ada@acme.example"]
        );
        assert_eq!(outbox(&store, "thread.created").await, 1);
        assert_eq!(outbox(&store, "message.received").await, 1);
        let ack = eventually(WAIT, "the acknowledgement delivered", || async {
            sink.received().into_iter().next()
        })
        .await;
        assert_eq!(ack.rcpt_tos, ["ada@acme.example"]);
        let ack_mail = MessageParser::default()
            .parse(&ack.raw)
            .expect("ack parses");
        let ack_id = ack_mail.message_id().expect("ack Message-ID").to_owned();
        assert!(
            ack_mail
                .header_raw("Auto-Submitted")
                .is_some_and(|v| v.contains("auto-generated")),
            "an acknowledgement is automatic mail"
        );

        // Ada answers the acknowledgement: In-Reply-To our own Message-ID threads it back.
        let reply = TestMail::new(
            "ada@acme.example",
            SUPPORT,
            "Re: Printer on fire",
            "Still burning.\n",
        )
        .replying_to(&ack_id);
        deliver(&broker, &store, "m2", &reply).await;
        let m2 = stored(&store, "m2").await;
        assert_eq!(m2.thread_id, t1.id, "a reply to the mail we sent");
        assert_eq!(m2.classification, Some(Classification::Reply));
        assert_eq!(matched(&store, t1.id).await["by"], "in_reply_to");
        assert_eq!(matched(&store, t1.id).await["key"], json!(ack_id));

        // References only (a client that drops In-Reply-To).
        let mut refs_only = TestMail::new("ada@acme.example", SUPPORT, "Re: Printer", "And now?\n");
        refs_only.references = vec![format!("<{}>", first.id()), "<unknown@elsewhere>".into()];
        deliver(&broker, &store, "m3", &refs_only).await;
        assert_eq!(stored(&store, "m3").await.thread_id, t1.id);
        assert_eq!(matched(&store, t1.id).await["by"], "references");

        // The same mail delivered twice (two jobs): one message.
        deliver(&broker, &store, "m3-again", &refs_only).await;
        let copies = count(
            conn,
            &format!(
                "SELECT COUNT(*) AS n FROM messages WHERE message_id_header = '{}'",
                refs_only.id()
            ),
        )
        .await;
        assert_eq!(copies, 1);
        let again = raw_mails::Entity::find()
            .filter(raw_mails::Column::JobMessageId.eq("m3-again"))
            .one(conn)
            .await
            .expect("query")
            .expect("raw stored");
        assert_eq!(again.status, raw_mails::RawMailStatus::Duplicate);

        // A stranger who knows the subject token does not get into the thread.
        let tag = format!("[#{}]", t1.reply_token);
        let stranger = TestMail::new(
            "mallory@evil.example",
            SUPPORT,
            &format!("Re: Printer on fire {tag}"),
            "Send me the invoice.\n",
        );
        deliver(&broker, &store, "m4", &stranger).await;
        let m4 = stored(&store, "m4").await;
        assert_ne!(m4.thread_id, t1.id, "a stranger's token is ignored");
        let t4 = threads::get(conn, m4.thread_id).await.expect("thread");
        assert_eq!(
            t4.subject, "Re: Printer on fire",
            "the token is not carried over"
        );
        assert_eq!(
            matched(&store, t4.id).await["ignored_token"]["thread"],
            json!(t1.id)
        );

        // Ada forwards the thread to support again: her subject token routes it.
        let forwarded = TestMail::new(
            "ada@acme.example",
            SUPPORT,
            &format!("Fwd: Printer on fire {tag}"),
            "See below.\n",
        );
        deliver(&broker, &store, "m5", &forwarded).await;
        assert_eq!(stored(&store, "m5").await.thread_id, t1.id);
        assert_eq!(matched(&store, t1.id).await["by"], "subject_token");

        // The address token works for her too.
        let by_address = TestMail::new("ada@acme.example", SUPPORT, "Another question", "Hi\n");
        let plus = format!("support+{}@gochat.example", t1.reply_token);
        deliver_to(&broker, &store, "m6", &by_address, &plus).await;
        assert_eq!(stored(&store, "m6").await.thread_id, t1.id);
        assert_eq!(matched(&store, t1.id).await["by"], "address_token");

        // A colleague in Cc answers a message's Message-ID: stored on the thread, flagged,
        // and not added to its customers.
        let colleague = TestMail::new(
            "bob@acme.example",
            SUPPORT,
            "Re: Printer",
            "I saw it too.\n",
        )
        .replying_to(&first.id());
        deliver(&broker, &store, "m7", &colleague).await;
        assert_eq!(stored(&store, "m7").await.thread_id, t1.id);
        let t1_now = threads::get(conn, t1.id).await.expect("thread");
        assert!(
            gochat::store::json_strings(&t1_now.flags).contains(&"unknown_sender".to_owned()),
            "{:?}",
            t1_now.flags
        );
        assert_eq!(
            threads::customer_ids(conn, t1.id).await.expect("c"),
            customers
        );

        // An out-of-office answer is stored but changes nothing, and nobody is acknowledged.
        transition(&broker, &store, "s1", t1.id, "waiting").await;
        let ooo = TestMail::new(
            "ada@acme.example",
            SUPPORT,
            "Automatic reply: Printer",
            "I am away.\n",
        )
        .replying_to(&ack_id)
        .header("Auto-Submitted", "auto-replied");
        deliver(&broker, &store, "m8", &ooo).await;
        let m8 = stored(&store, "m8").await;
        assert_eq!(
            (m8.thread_id, m8.classification),
            (t1.id, Some(Classification::AutoReply))
        );
        assert_eq!(
            threads::get(conn, t1.id).await.expect("t").status,
            ThreadStatus::Waiting,
            "an auto-reply does not reopen"
        );

        // On the reminder ladder, her reply reopens the thread and cancels the reminder.
        transition(&broker, &store, "s2", t1.id, "reminder").await;
        let pending = "SELECT COUNT(*) AS n FROM timers WHERE state = 'pending'";
        assert_eq!(count(conn, pending).await, 1, "the ladder armed a timer");
        let answer = TestMail::new(
            "ada@acme.example",
            SUPPORT,
            "Re: Printer",
            "Fixed, thanks.\n",
        )
        .replying_to(&ack_id);
        deliver(&broker, &store, "m9", &answer).await;
        let t1_now = threads::get(conn, t1.id).await.expect("t");
        assert_eq!(
            (t1_now.status, t1_now.lifecycle_step),
            (ThreadStatus::Open, None)
        );
        assert_eq!(count(conn, pending).await, 0, "the reminder is cancelled");

        // A reply to a closed thread opens a new thread linked to it (the default policy).
        transition(&broker, &store, "s3", t1.id, "closed").await;
        let late = TestMail::new("ada@acme.example", SUPPORT, "Re: Printer", "It is back.\n")
            .replying_to(&first.id());
        deliver(&broker, &store, "m10", &late).await;
        let m10 = stored(&store, "m10").await;
        assert_ne!(m10.thread_id, t1.id);
        let t10 = threads::get(conn, m10.thread_id).await.expect("t");
        assert_eq!(t10.linked_thread_id, Some(t1.id));
        assert_eq!(
            threads::customer_ids(conn, t10.id).await.expect("c"),
            customers
        );
        assert_eq!(
            threads::get(conn, t1.id).await.expect("t").status,
            ThreadStatus::Closed
        );

        // Three threads opened by normal mail, three acknowledgements; none for the rest.
        assert_eq!(outbox(&store, "thread.created").await, 3);
        eventually(WAIT, "three acknowledgements delivered", || async {
            (sink.received().len() == 3).then_some(())
        })
        .await;
        assert!(
            broker
                .get(&broker.names.dead_letters(), Duration::ZERO)
                .await
                .is_none(),
            "nothing dead-lettered"
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300)]).await;
    }
);

/// A delivery-status report (RFC 3464) for `recipient`, sent to `envelope_to`.
fn dsn(recipient: &str, original_message_id: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>\r\n\
To: {SUPPORT}\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <{}@mx.acme.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
I could not deliver your message.\r\n\
--b1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.acme.example\r\n\
\r\n\
Final-Recipient: rfc822; {recipient}\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown\r\n\
--b1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: support@gochat.example\r\n\
To: {recipient}\r\n\
Message-ID: <{original_message_id}>\r\n\
Subject: Re: Printer on fire\r\n\
--b1--\r\n",
        Uuid::now_v7().simple()
    )
    .into_bytes()
}

both_backends!(
    a_bounce_marks_the_message_it_is_about_failed_and_shows_on_its_thread,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let worker = start_worker(config(&db, &broker, &sink), Arc::new(SystemClock)).await;
        let conn = store.conn();
        let (thread, _) = common::fixtures::thread_with_contact(
            &store,
            "default",
            "gone@acme.example",
            common::t0(),
        )
        .await;
        // Two messages we sent, delivered (`sent`): one bounces to its VERP address, the
        // other is found by the Message-ID the report quotes.
        for (job, to) in [
            ("out-1", "gone@acme.example"),
            ("out-2", "gone@acme.example"),
        ] {
            broker
                .publish_json(
                    "outbound-message",
                    job,
                    &json!({"schema": "outbound-message/v1", "thread_id": thread,
                            "author": {"kind": "agent", "id": "a1", "name": "Agent"}, "to": [to],
                            "body": {"subject": "Re: Printer on fire", "text": "Done.\n"}}),
                )
                .await;
            applied(&store, job).await;
        }
        let sent = |job: &'static str| {
            let store = store.clone();
            async move { stored(&store, job).await }
        };
        let (o1, o2) = (sent("out-1").await, sent("out-2").await);
        assert_eq!(o1.state, Some(OutboundState::Sent));

        let verp = format!("bounces+{}@gochat.example", o1.id.simple());
        broker
            .publish_json(
                "inbound-mail",
                "b1",
                &job(&dsn("gone@acme.example", "unrelated@x"), &verp),
            )
            .await;
        applied(&store, "b1").await;
        let o1 = stored(&store, "out-1").await;
        assert_eq!(o1.state, Some(OutboundState::Failed));
        let error = o1.error.unwrap_or_default();
        assert!(
            error.contains("5.1.1") && error.contains("gone@acme.example"),
            "{error}"
        );
        let b1 = stored(&store, "b1").await;
        assert_eq!(
            (b1.thread_id, b1.classification),
            (thread, Some(Classification::Bounce))
        );
        assert_eq!(b1.contact_id, None, "a bounce is not the customer writing");

        let quoted = o2.message_id_header.clone().unwrap_or_default();
        broker
            .publish_json(
                "inbound-mail",
                "b2",
                &job(&dsn("gone@acme.example", &quoted), SUPPORT),
            )
            .await;
        applied(&store, "b2").await;
        assert_eq!(
            stored(&store, "out-2").await.state,
            Some(OutboundState::Failed)
        );
        assert_eq!(outbox(&store, "message.failed").await, 2);

        // A bounce about nothing we sent is kept as raw mail, classified, and nothing else.
        broker
            .publish_json(
                "inbound-mail",
                "b3",
                &job(&dsn("x@y.example", "nothing@ours"), SUPPORT),
            )
            .await;
        applied(&store, "b3").await;
        let raw = raw_mails::Entity::find()
            .filter(raw_mails::Column::JobMessageId.eq("b3"))
            .one(conn)
            .await
            .expect("q")
            .expect("raw");
        assert_eq!(raw.classification.as_deref(), Some("bounce"));
        assert_eq!(raw.message_row_id, None);
        let t = threads::get(conn, thread).await.expect("t");
        assert_eq!(t.status, ThreadStatus::Reminder, "a bounce does not reopen");
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300)]).await;
    }
);

both_backends!(
    a_mail_loop_is_stored_but_opens_and_answers_nothing,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = config(&db, &broker, &sink);
        cfg.mail.loop_limit = 3;
        let worker = start_worker(cfg, Arc::new(SystemClock)).await;
        let conn = store.conn();
        let robot = "robot@acme.example";
        let mut first = None;
        for i in 0..3 {
            let m = TestMail::new(robot, SUPPORT, &format!("Alert {i}"), "disk full\n");
            deliver(&broker, &store, &format!("r{i}"), &m).await;
            first.get_or_insert(m);
        }
        assert_eq!(outbox(&store, "thread.created").await, 3);
        // Over the limit: a new subject opens nothing...
        deliver(
            &broker,
            &store,
            "r3",
            &TestMail::new(robot, SUPPORT, "Alert 3", "disk full\n"),
        )
        .await;
        assert_eq!(outbox(&store, "thread.created").await, 3);
        // ...and a reply is stored as a loop without reopening its thread.
        let first = first.expect("first mail");
        let t = stored(&store, "r0").await.thread_id;
        transition(&broker, &store, "s1", t, "waiting").await;
        let reply =
            TestMail::new(robot, SUPPORT, "Re: Alert 0", "disk full\n").replying_to(&first.id());
        deliver(&broker, &store, "r4", &reply).await;
        let r4 = stored(&store, "r4").await;
        assert_eq!(
            (r4.thread_id, r4.classification),
            (t, Some(Classification::Loop))
        );
        assert_eq!(
            threads::get(conn, t).await.expect("t").status,
            ThreadStatus::Waiting
        );
        let acks = "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'";
        assert_eq!(count(conn, acks).await, 3, "no acknowledgement to a loop");
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300)]).await;
    }
);

both_backends!(
    mail_that_cannot_be_processed_is_kept_and_dead_lettered_with_the_reason,
    |db: TestDb| async move {
        let sink = SmtpSink::start_async().await;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut cfg = config(&db, &broker, &sink);
        // A 30 MB attachment is a 41 MB mail once in base64.
        cfg.mail.max_size = 64 * 1024 * 1024;
        let worker = start_worker(cfg, Arc::new(SystemClock)).await;
        let conn = store.conn();

        // Binary garbage: stored, marked failed, dead-lettered with the reason.
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        broker
            .publish_json("inbound-mail", "garbage", &job(&garbage, SUPPORT))
            .await;
        let reason = broker.dead_letter_reason("garbage", WAIT).await;
        assert!(reason.contains("cannot be parsed"), "{reason}");
        let raw = raw_mails::Entity::find()
            .filter(raw_mails::Column::JobMessageId.eq("garbage"))
            .one(conn)
            .await
            .expect("q")
            .expect("the raw bytes are kept");
        assert_eq!(raw.status, raw_mails::RawMailStatus::Failed);
        assert_eq!(raw.data, garbage);
        assert!(
            reason.contains(&raw.id.to_string()),
            "the reason names the raw mail: {reason}"
        );

        // Not base64, and no sender at all: refused with a reason too.
        broker
            .publish_json(
                "inbound-mail",
                "not-b64",
                &json!({"schema": "inbound-mail/v1", "raw_base64": "@@@", "recipients": [SUPPORT]}),
            )
            .await;
        assert!(
            broker
                .dead_letter_reason("not-b64", WAIT)
                .await
                .contains("not base64")
        );
        let anonymous = b"Subject: hello\r\nTo: support@gochat.example\r\n\r\nwho am I?\r\n";
        broker
            .publish_json("inbound-mail", "anon", &job(anonymous, SUPPORT))
            .await;
        assert!(
            broker
                .dead_letter_reason("anon", WAIT)
                .await
                .contains("no usable sender")
        );

        // A 30 MB attachment (under this worker's limit) is stored whole.
        let big = vec![b'x'; 30 * 1024 * 1024];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&big);
        let wrapped: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
            .collect();
        let mail = format!(
            "From: ada@acme.example\r\nTo: {SUPPORT}\r\nSubject: the logs\r\nMessage-ID: <big@acme.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n\
--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"logs.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{wrapped}--b--\r\n"
        );
        broker
            .publish_json("inbound-mail", "big", &job(mail.as_bytes(), SUPPORT))
            .await;
        applied(&store, "big").await;
        let m = stored(&store, "big").await;
        let attachments = gochat_entities::attachments::Entity::find()
            .filter(gochat_entities::attachments::Column::MessageId.eq(m.id))
            .all(conn)
            .await
            .expect("q");
        assert_eq!(
            attachments
                .iter()
                .map(|a| (a.name.as_str(), a.size))
                .collect::<Vec<_>>(),
            [("logs.bin", big.len() as i64)]
        );
        let card = threads::get(conn, m.thread_id).await.expect("t");
        assert_eq!(
            gochat::store::json_strings(&card.attachment_names),
            ["logs.bin"]
        );
        worker.stop().await;
        broker.cleanup(&[Duration::from_millis(300)]).await;
    }
);

/// A mail from `from` with Message-ID `<id>` and the same 15-byte PDF attached.
fn with_attachment(from: &str, id: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {SUPPORT}\r\nSubject: The report\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJeLjz9MK\r\n--b--\r\n"
    )
    .into_bytes()
}

/// The inbound workflow's state in `store`, as sorted text rows comparable between two
/// databases: raw mails, messages (with the job that opened their thread), contacts,
/// customers with their contacts, threads and the outbox rows by kind.
async fn inbound_state(store: &Store) -> Vec<String> {
    use sea_orm::ConnectionTrait;
    let conn = store.conn();
    let mut out = Vec::new();
    for sql in [
        "SELECT 'raw ' || job_message_id || ' ' || CAST(status AS TEXT) || ' ' || COALESCE(classification, '-') || ' ' || CASE WHEN error IS NULL THEN 'ok' ELSE 'error' END AS r FROM raw_mails",
        "SELECT 'message ' || m.job_message_id || ' ' || CAST(m.classification AS TEXT) || ' thread of ' || (SELECT MIN(o.job_message_id) FROM messages o WHERE o.thread_id = m.thread_id AND o.direction = 'inbound') || ' contact ' || COALESCE((SELECT c.address FROM contacts c WHERE c.id = m.contact_id), '-') AS r FROM messages m WHERE m.direction = 'inbound'",
        "SELECT 'contact ' || address || ' ' || COALESCE(display_name, '-') || ' ' || COALESCE(language, '-') AS r FROM contacts",
        "SELECT 'customer ' || cu.external_id || ' ' || cu.name || ' has ' || c.address AS r FROM customers cu JOIN customer_contacts cc ON cc.customer_id = cu.id JOIN contacts c ON c.id = cc.contact_id",
        "SELECT 'customer ' || external_id || ' ' || name AS r FROM customers",
        "SELECT 'thread ' || (SELECT MIN(o.job_message_id) FROM messages o WHERE o.thread_id = t.id AND o.direction = 'inbound') || ' ' || CAST(t.status AS TEXT) || ' items ' || CAST(t.item_count AS TEXT) || ' flags ' || CAST(t.flags AS TEXT) AS r FROM threads t",
        "SELECT 'outbox ' || routing_key || ' ' || CAST(COUNT(*) AS TEXT) AS r FROM outbox GROUP BY routing_key",
        "SELECT 'processed ' || message_id AS r FROM processed_jobs",
        "SELECT 'attachment ' || m.job_message_id || ' ' || a.name || ' ' || CAST(b.size AS TEXT) || ' bytes' AS r FROM attachments a JOIN messages m ON m.id = a.message_id JOIN blobs b ON b.sha256 = a.sha256",
        "SELECT 'blobs ' || CAST(COUNT(*) AS TEXT) AS r FROM blobs",
    ] {
        let rows = conn
            .query_all_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                sql,
            ))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        out.extend(
            rows.iter()
                .map(|r| r.try_get::<String>("", "r").expect("r")),
        );
    }
    out.sort();
    out
}

// A batch of inbound mails runs step by step across its jobs (a multi-row statement per
// set-based step). Each mail must end exactly as it does run alone after the ones before
// it: the same batch is run both ways on two databases and the stored state compared,
// with the cases where order matters inside one batch: a reply to a mail of the batch,
// the same mail twice, one sender three times around the loop limit, one domain customer
// for two senders, an auto-reply before its sender's first normal mail, a display name
// given by a later mail, and two mails refused.
both_backends!(
    a_batch_of_inbound_mails_ends_as_each_mail_does_alone,
    |db: TestDb| async move {
        use gochat::jobs::{Job, JobError};
        use gochat::queue::{Handled, Handler};
        let alone_db = TestDb::new(db.backend).await;
        let mut config = Config {
            database: db.config(),
            ..Default::default()
        };
        config.mail.loop_limit = 2;
        config
            .mail
            .domain_customers
            .insert("globex.example".into(), "globex-crm".into());
        let mail = |from: &str, subject: &str| TestMail::new(from, SUPPORT, subject, "Hello.\n");
        let first = mail("Ann <ann@acme.example>", "Printer broken");
        let mut auto = mail("dan@example.org", "Out of office");
        auto = auto.header("Auto-Submitted", "auto-replied");
        let mut no_sender = mail("not an address", "Who am I");
        no_sender.from = "undisclosed".into();
        let dora = format!("{}@customer.example", uuid::Uuid::now_v7().simple());
        let hal = format!("{}@customer.example", uuid::Uuid::now_v7().simple());
        let eli = mail("eli@globex.example", "Re: The report").replying_to(&dora);
        // A mail to support answering the mail `parent`.
        let reply = |from: &str, subject: &str, parent: &str| {
            job(&mail(from, subject).replying_to(parent).bytes(), SUPPORT)
        };
        let raws: Vec<(String, serde_json::Value)> = vec![
            ("m00".into(), job(&first.bytes(), SUPPORT)),
            (
                "m01".into(),
                reply("Ann <ann@acme.example>", "Re: Printer broken", &first.id()),
            ),
            ("m02".into(), job(&first.bytes(), SUPPORT)),
            (
                "m03".into(),
                job(&mail("bob@globex.example", "Invoice").bytes(), SUPPORT),
            ),
            (
                "m04".into(),
                job(&mail("carl@globex.example", "Invoice too").bytes(), SUPPORT),
            ),
            ("m05".into(), job(&auto.bytes(), SUPPORT)),
            (
                "m06".into(),
                job(&mail("dan@example.org", "Back again").bytes(), SUPPORT),
            ),
            ("m07".into(), job(&no_sender.bytes(), SUPPORT)),
            (
                "m08".into(),
                json!({"schema": "inbound-mail/v1", "raw_base64": "%%% not base64 %%%", "recipients": [SUPPORT]}),
            ),
            (
                "m09".into(),
                job(&mail("eve@example.net", "One").bytes(), SUPPORT),
            ),
            (
                "m10".into(),
                job(
                    &mail("Eve Example <eve@example.net>", "Two")
                        .header("Content-Language", "de")
                        .bytes(),
                    SUPPORT,
                ),
            ),
            (
                "m11".into(),
                job(&mail("robot@loop.example", "Ping").bytes(), SUPPORT),
            ),
            (
                "m12".into(),
                job(&mail("robot@loop.example", "Ping").bytes(), SUPPORT),
            ),
            (
                "m13".into(),
                job(&mail("robot@loop.example", "Ping").bytes(), SUPPORT),
            ),
            // Two more replies to the first mail's thread, stored by then, from colleagues
            // who are not its customer's contacts: one thread twice, flagged once.
            (
                "m14".into(),
                reply("zed@acme.example", "Re: Printer broken", &first.id()),
            ),
            (
                "m15".into(),
                reply("yan@acme.example", "Re: Re: Printer broken", &first.id()),
            ),
            // The same file attached to two new threads' mails: one blob.
            (
                "m16".into(),
                job(&with_attachment("dora@globex.example", &dora), SUPPORT),
            ),
            (
                "m17".into(),
                job(&with_attachment("hal@example.com", &hal), SUPPORT),
            ),
            // Replies to mails of the batch not stored yet: to a thread the batch opens, from
            // a colleague of the same customer; to that reply in turn; and one from a
            // stranger (it runs after them, alone: flagged).
            ("m18".into(), job(&eli.bytes(), SUPPORT)),
            (
                "m19".into(),
                reply("fay@globex.example", "Re: Re: The report", &eli.id()),
            ),
            (
                "m20".into(),
                reply("ivy@example.com", "Re: The report", &hal),
            ),
        ];
        let jobs: Vec<Job> = raws
            .into_iter()
            .map(|(id, payload)| common::fixtures::inbound_job(&id, payload))
            .collect();

        // The batch.
        let store = db.store().await;
        let batched = common::fixtures::workflow_handler(&store, config.clone());
        assert!(batched.current().get("inbound-mail").unwrap().set_based());
        let results = batched.handle_batch(&jobs).await;

        // One mail at a time, in order, on the other database.
        let alone_store = alone_db.store().await;
        config.database = alone_db.config();
        let alone = common::fixtures::workflow_handler(&alone_store, config);
        let mut one_by_one = Vec::new();
        for job in &jobs {
            one_by_one.push(alone.handle(job).await);
        }
        // The same, but for the raw mail ids a refusal names (each database has its own).
        let without_ids = |rs: &[Result<gochat::queue::Handled, JobError>]| -> Vec<String> {
            rs.iter()
                .map(|r| {
                    let text = format!("{r:?}");
                    match text.find("(kept as raw mail ") {
                        Some(at) => text[..at].to_owned(),
                        None => text,
                    }
                })
                .collect()
        };
        assert_eq!(without_ids(&results), without_ids(&one_by_one));
        for (k, r) in results.iter().enumerate() {
            match k {
                7 => assert!(
                    matches!(r, Err(JobError::Permanent(why)) if why.contains("no usable sender")),
                    "{r:?}"
                ),
                8 => assert!(
                    matches!(r, Err(JobError::Permanent(why)) if why.contains("not base64")),
                    "{r:?}"
                ),
                _ => assert_eq!(r, &Ok(Handled::Applied), "job m{k:02}"),
            }
        }

        let state = inbound_state(&store).await;
        assert_eq!(state, inbound_state(&alone_store).await);
        // And it is the right state, not one both runs got wrong alike.
        for row in [
            "message m01 reply thread of m00 contact ann@acme.example",
            "raw m02 duplicate normal ok",
            "customer globex-crm globex.example has bob@globex.example",
            "customer globex-crm globex.example has carl@globex.example",
            "customer email:dan@example.org dan@example.org has dan@example.org",
            "contact eve@example.net Eve Example de",
            "message m12 new thread of m12 contact robot@loop.example",
            "raw m13 parsed loop ok",
            "message m14 reply thread of m00 contact zed@acme.example",
            "message m15 reply thread of m00 contact yan@acme.example",
            "message m18 reply thread of m16 contact eli@globex.example",
            "message m19 reply thread of m16 contact fay@globex.example",
            "thread m16 open items 4 flags []",
            "message m20 reply thread of m17 contact ivy@example.com",
            "attachment m16 report.pdf 15 bytes",
            "attachment m17 report.pdf 15 bytes",
            "blobs 1",
        ] {
            assert!(state.iter().any(|s| s == row), "{row:?} not in {state:#?}");
        }
        assert!(
            !state.iter().any(|s| s.starts_with("message m13")),
            "the third mail of the loop opened a thread: {state:#?}"
        );
        assert!(
            !state.iter().any(|s| s.starts_with("message m05")),
            "the auto-reply opened a thread: {state:#?}"
        );

        // The duplicate, the loop's third mail and the stranger's reply to a mail of the
        // batch were cut off to run after the others; replies to mails of the batch from
        // their customers and two mails to one thread were not, nor the two strangers'
        // replies to a stored thread (read ahead for the batch, the second sees the thread
        // as the first left it); nothing failed as a whole.
        let batches = |outcome: &str| inbound_batches(&batched, outcome);
        assert_eq!(batches("cut"), 3);
        assert_eq!(batches("failed"), 0);
    }
);

// A batch whose sender another transaction has just inserted, uncommitted (another
// replica's batch), waits for it rather than failing whole: failing would run all its mails
// one at a time. The wait is longer than a batch's 50 ms lock bound, and the batch still
// commits in one go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_a_sender_another_batch_is_inserting_instead_of_failing_whole() {
    use gochat::jobs::Job;
    use gochat::queue::{Handled, Handler};
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = TestDb::new(common::Backend::Postgres).await;
    let (store, handler) = common::fixtures::handler_on(&db).await;
    let handler = Arc::new(handler);
    let jobs: Vec<Job> = ["held@shared.example", "a@one.example", "b@two.example"]
        .iter()
        .enumerate()
        .map(|(k, from)| {
            let mail = TestMail::new(from, SUPPORT, "Hello", "Hi.\n");
            common::fixtures::inbound_job(&format!("held-{k}"), job(&mail.bytes(), SUPPORT))
        })
        .collect();

    let holder = store.conn().begin().await.expect("begin");
    holder
        .execute_unprepared(
            "INSERT INTO contacts (id, kind, address, created_at, updated_at) \
             VALUES ('018f0000-0000-7000-8000-000000000001', 'email', 'held@shared.example', now(), now())",
        )
        .await
        .expect("insert the contact, uncommitted");
    let batch = tokio::spawn({
        let handler = handler.clone();
        async move { handler.handle_batch(&jobs).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !batch.is_finished(),
        "the batch did not wait for the contact"
    );
    holder.commit().await.expect("commit");
    let results = batch.await.expect("batch");
    assert_eq!(results, vec![Ok(Handled::Applied); 3]);

    let batches = |outcome: &str| inbound_batches(&handler, outcome);
    assert_eq!(
        (batches("committed"), batches("cut"), batches("failed")),
        (1, 0, 0)
    );
    let conn = store.conn();
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) AS n FROM contacts WHERE address = 'held@shared.example'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            conn,
            "SELECT COUNT(*) AS n FROM messages m JOIN contacts c ON c.id = m.contact_id WHERE c.id = '018f0000-0000-7000-8000-000000000001'"
        )
        .await,
        1,
        "the mail is on the contact the other transaction inserted"
    );
}

/// Copies a folder tree (the project's workflows, to change one file in a test).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A handler on a copy of the project's `workflows/` that `edit` changed first (given the
/// copy's folder), as ops would change theirs. The folder lives as long as the `TempDir`.
async fn handler_on_edited_workflows(
    db: &TestDb,
    edit: impl FnOnce(&std::path::Path),
) -> (
    tempfile::TempDir,
    Store,
    gochat::workflow::handler::WorkflowHandler,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let workflows = dir.path().join("workflows");
    copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"),
        &workflows,
    );
    edit(&workflows);
    let store = db.store().await;
    let mut config = Config {
        database: db.config(),
        ..Default::default()
    };
    config.workflows.dir = workflows;
    let handler = common::fixtures::workflow_handler(&store, config);
    (dir, store, handler)
}

// A new thread is written together with its first message when `store_message` follows
// `match_thread`; ops may drop that step, and then the thread is still written (with its
// customers and `created` event) by the end of the run.
both_backends!(
    a_new_thread_is_written_even_when_no_step_stores_its_message,
    |db: TestDb| async move {
        use gochat::queue::{Handled, Handler};
        let (_dir, store, handler) = handler_on_edited_workflows(&db, |workflows| {
            let file = workflows.join("jobs/inbound-mail.yaml");
            let yaml = std::fs::read_to_string(&file).expect("read");
            let mut kept = Vec::new();
            let mut skipping = false;
            for line in yaml.lines() {
                if line.starts_with("  - name: ") {
                    skipping = line == "  - name: store" || line == "  - name: announce-message";
                }
                if !skipping {
                    kept.push(line);
                }
            }
            std::fs::write(&file, kept.join("\n")).expect("write");
        })
        .await;
        let mail = TestMail::new("ann@acme.example", SUPPORT, "Printer broken", "Help.\n");
        let job = common::fixtures::inbound_job("no-store", job(&mail.bytes(), SUPPORT));
        assert_eq!(handler.handle(&job).await, Ok(Handled::Applied));

        let conn = store.conn();
        let threads = gochat_entities::threads::Entity::find()
            .all(conn)
            .await
            .expect("threads");
        assert_eq!(threads.len(), 1, "one thread written");
        let t = &threads[0];
        assert_eq!((t.item_count, t.version), (0, 1), "no message on it");
        let customers = threads::customer_ids(conn, t.id).await.expect("customers");
        assert_eq!(customers.len(), 1);
        assert_eq!(
            thread_events::Entity::find()
                .filter(thread_events::Column::ThreadId.eq(t.id))
                .all(conn)
                .await
                .expect("events")
                .iter()
                .map(|e| e.kind.as_str())
                .collect::<Vec<_>>(),
            vec!["created"]
        );
        assert_eq!(count(conn, "SELECT COUNT(*) AS n FROM messages").await, 0);
        assert_eq!(outbox(&store, "outbound-message").await, 1, "acknowledged");
    }
);

// Two replies in one batch to a thread that waits for the customer: the first reopens it,
// and the second, whose copy of the thread is older by then, takes the newer card instead
// of failing its version check (which would cut the batch and run it alone).
both_backends!(
    two_replies_in_one_batch_to_a_waiting_thread_both_commit_with_it,
    |db: TestDb| async move {
        use gochat::queue::{Handled, Handler};
        let (store, handler) = common::fixtures::handler_on(&db).await;
        let first = TestMail::new("Kim <kim@example.com>", SUPPORT, "Broken", "Help.\n");
        let opened = handler
            .handle(&common::fixtures::inbound_job(
                "w0",
                job(&first.bytes(), SUPPORT),
            ))
            .await;
        assert_eq!(opened, Ok(Handled::Applied));
        let thread = stored(&store, "w0").await.thread_id;
        let before = threads::get(store.conn(), thread).await.expect("thread");
        let actor = json!({"kind": "agent", "id": "a1"});
        threads::set_status(
            store.conn(),
            &before,
            ThreadStatus::Waiting,
            None,
            &actor,
            None,
            chrono::Utc::now(),
        )
        .await
        .expect("waiting");

        let reply = |subject: &str| {
            TestMail::new("kim@example.com", SUPPORT, subject, "Still broken.\n")
                .replying_to(&first.id())
        };
        let jobs = vec![
            common::fixtures::inbound_job("w1", job(&reply("Re: Broken").bytes(), SUPPORT)),
            common::fixtures::inbound_job("w2", job(&reply("Re: Re: Broken").bytes(), SUPPORT)),
        ];
        let results = handler.handle_batch(&jobs).await;
        assert_eq!(results, vec![Ok(Handled::Applied), Ok(Handled::Applied)]);
        for id in ["w1", "w2"] {
            assert_eq!(stored(&store, id).await.thread_id, thread, "{id}");
        }
        let after = threads::get(store.conn(), thread).await.expect("thread");
        assert_eq!(after.status, ThreadStatus::Open);
        assert_eq!(after.item_count, 3);
        // Reopened once, by the first reply: the second found it open already. One version
        // for the two messages on the card, one for the reopening.
        assert_eq!(after.version, before.version + 3);
        let status_changes = {
            use gochat_entities::thread_events;
            use sea_orm::PaginatorTrait;
            thread_events::Entity::find()
                .filter(thread_events::Column::ThreadId.eq(thread))
                .filter(thread_events::Column::Kind.eq("status"))
                .count(store.conn())
                .await
                .expect("events")
        };
        assert_eq!(status_changes, 2, "to waiting, then open again");
        let batches = |outcome: &str| inbound_batches(&handler, outcome);
        assert_eq!((batches("committed"), batches("cut")), (1, 0));
    }
);

// Ops may make a customer's reply restart the reminder ladder (a lifecycle is data). Two
// replies in one batch then arm one reminder, the second's: each change cancels what the
// one before it armed, as one by one the second reply cancels the first's timer. (The
// first's is never written: armed and cancelled within one commit, nobody could see it.)
both_backends!(
    two_replies_in_one_batch_that_restart_the_ladder_leave_one_reminder,
    |db: TestDb| async move {
        use gochat::queue::{Handled, Handler};
        use gochat_entities::timers::{self, TimerState};
        let (_dir, store, handler) = handler_on_edited_workflows(&db, |workflows| {
            let file = workflows.join("lifecycles/default.yaml");
            let default = std::fs::read_to_string(&file).expect("default lifecycle");
            let restart = default.replace(
                "customer_replied: { to: open }",
                "customer_replied: { to: ladder }",
            );
            assert_ne!(restart, default);
            std::fs::write(&file, restart).expect("write");
        })
        .await;
        let first = TestMail::new("Lou <lou@example.com>", SUPPORT, "Broken", "Help.\n");
        let opened = handler
            .handle(&common::fixtures::inbound_job(
                "r0",
                job(&first.bytes(), SUPPORT),
            ))
            .await;
        assert_eq!(opened, Ok(Handled::Applied));
        let thread = stored(&store, "r0").await.thread_id;

        let reply = |subject: &str| {
            TestMail::new("lou@example.com", SUPPORT, subject, "Still broken.\n")
                .replying_to(&first.id())
        };
        let jobs = vec![
            common::fixtures::inbound_job("r1", job(&reply("Re: Broken").bytes(), SUPPORT)),
            common::fixtures::inbound_job("r2", job(&reply("Re: Re: Broken").bytes(), SUPPORT)),
        ];
        let results = handler.handle_batch(&jobs).await;
        assert_eq!(results, vec![Ok(Handled::Applied), Ok(Handled::Applied)]);
        assert_eq!(
            (
                inbound_batches(&handler, "committed"),
                inbound_batches(&handler, "cut")
            ),
            (1, 0)
        );
        let after = threads::get(store.conn(), thread).await.expect("thread");
        assert_eq!(
            (after.status, after.lifecycle_step),
            (ThreadStatus::Reminder, Some(1))
        );
        let pending = timers::Entity::find()
            .filter(timers::Column::ThreadId.eq(thread))
            .filter(timers::Column::State.eq(TimerState::Pending))
            .all(store.conn())
            .await
            .expect("timers");
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].expected_version, after.version);
    }
);

// A raw mail is parsed before its row is written, so the row goes in saying what it is:
// one write of a mail-sized row, not an insert and then an update. A row the job stored
// before (an older worker's `pending` row, or a failed attempt's) is not what this run
// wrote, so `parse_mail` marks it. One job alone and a batch alike.
both_backends!(
    a_raw_mail_is_stored_marked_and_a_row_stored_before_is_marked_again,
    |db: TestDb| async move {
        use gochat::queue::{Handled, Handler};
        use gochat::store::inbound::{NewRawMail, store_raw};
        let (store, handler) = common::fixtures::handler_on(&db).await;
        let conn = store.conn();
        let mail = |n: u32| {
            TestMail::new(
                &format!("c{n}@acme.example"),
                SUPPORT,
                &format!("Case {n}"),
                "Help.\n",
            )
            .bytes()
        };
        let one = |id: &str, n: u32| common::fixtures::inbound_job(id, job(&mail(n), SUPPORT));

        // One job alone, then two as a set: each applied.
        let apply = |alone: (&'static str, u32), set: [(&'static str, u32); 2]| {
            let (handler, one) = (&handler, &one);
            async move {
                assert_eq!(
                    handler.handle(&one(alone.0, alone.1)).await,
                    Ok(Handled::Applied)
                );
                let set = set.map(|(id, n)| one(id, n));
                let results = handler.handle_batch(&set).await;
                assert_eq!(results, vec![Ok(Handled::Applied), Ok(Handled::Applied)]);
            }
        };

        // New mails, one alone and two as a set, into an empty table.
        apply(("a-fresh", 1), [("b-fresh", 2), ("c-fresh", 3)]).await;
        assert_eq!(inbound_batches(&handler, "committed"), 1, "ran as a set");
        if db.backend == common::Backend::Postgres {
            // A row updated lives on as a new tuple further down the page: each row
            // written once is still where it went in, the first three of the table.
            let sql = "SELECT job_message_id || ' ' || CAST(ctid AS TEXT) AS r \
                       FROM raw_mails ORDER BY job_message_id";
            assert_eq!(
                common::texts(&store, sql).await,
                ["a-fresh (0,1)", "b-fresh (0,2)", "c-fresh (0,3)"]
            );
        }

        // Rows stored before, `pending`, under the jobs "d-older" and "e-older".
        let to = [SUPPORT.to_owned()];
        let to = &to[..];
        let pending = |id: &'static str, data: Vec<u8>| async move {
            let row = NewRawMail {
                job_message_id: id,
                envelope_from: None,
                recipients: to,
                mailbox: Some(SUPPORT),
                data: &data,
                sha256: "0",
                received_at: chrono::Utc::now(),
                known: None,
            };
            store_raw(conn, &row).await.expect("store raw")
        };
        let mut before = Vec::new();
        for (id, n) in [("d-older", 4), ("e-older", 5)] {
            let row = pending(id, mail(n)).await;
            assert!(row.written);
            before.push(row.id);
        }
        // Stored again under the same job, whatever the bytes: the row is found.
        let again = pending("d-older", b"x".to_vec()).await;
        assert_eq!((again.id, again.written), (before[0], false));
        apply(("d-older", 4), [("e-older", 5), ("f-fresh", 6)]).await;

        let rows = raw_mails::Entity::find()
            .order_by_asc(raw_mails::Column::JobMessageId)
            .all(conn)
            .await
            .expect("raw mails");
        let jobs: Vec<&str> = rows
            .iter()
            .map(|r| r.job_message_id.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            jobs,
            [
                "a-fresh", "b-fresh", "c-fresh", "d-older", "e-older", "f-fresh"
            ]
        );
        for (r, id) in rows.iter().zip(jobs) {
            assert_eq!(r.status, raw_mails::RawMailStatus::Parsed, "{id}");
            assert_eq!(r.classification.as_deref(), Some("normal"), "{id}");
            assert!(r.processed_at.is_some(), "{id}");
            assert_eq!(r.error, None, "{id}");
            assert_eq!(stored(&store, id).await.raw_mail_id, Some(r.id), "{id}");
        }
        assert_eq!(
            [rows[3].id, rows[4].id],
            [before[0], before[1]],
            "kept their rows"
        );
    }
);
