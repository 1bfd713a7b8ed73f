//! Hostile and unusual inbound mail (issue 32): what a crafted or merely odd mail from the
//! real internet must not do to the worker. Each case names what it once did: lose the
//! mail, stall the worker, open a second thread, or let a stranger into someone else's
//! conversation. Jobs are handed to a handler on the project's own workflows, on both
//! databases.

mod common;

use base64::Engine;
use common::fixtures::{handler_on, inbound_job};
use common::{TestDb, count, texts};
use gochat::queue::{Handled, Handler};
use gochat_entities::threads::ThreadStatus;
use gochat_entities::{messages, raw_mails};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

const SUPPORT: &str = "support@gochat.example";

fn job(raw: &[u8], to: &str) -> serde_json::Value {
    json!({"schema": "inbound-mail/v1",
           "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
           "recipients": [to]})
}

/// The raw mail job `id` stored.
async fn raw_row(store: &gochat::store::Store, id: &str) -> raw_mails::Model {
    raw_mails::Entity::find()
        .filter(raw_mails::Column::JobMessageId.eq(id))
        .one(store.conn())
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("job {id} stored no raw mail"))
}

/// The message stored from raw mail `raw`.
async fn message_of(store: &gochat::store::Store, raw: uuid::Uuid) -> messages::Model {
    messages::Entity::find()
        .filter(messages::Column::RawMailId.eq(raw))
        .one(store.conn())
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("raw mail {raw} became no message"))
}

/// NUL bytes where MIME allows parameters and header text: in a charset, a boundary, a
/// part's type, an encoded subject, a display name, a Message-ID, References and an
/// attachment's name. PostgreSQL refuses NUL in text (and `\u0000` in jsonb), so each once
/// failed the insert, rolled the raw mail back with it and dead-lettered a mail the MTA had
/// been told was delivered.
fn nul_mails() -> Vec<(&'static str, Vec<u8>)> {
    let head = |extra: &str, id: &str| {
        format!(
            "From: Ann <ann@acme.example>\r\nTo: {SUPPORT}\r\nSubject: Printer\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@acme.example>\r\n\
             MIME-Version: 1.0\r\n{extra}"
        )
        .into_bytes()
    };
    let mut cases: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut charset = head(
        "Content-Type: text/plain; charset=\"utf\0-8\"\r\n\r\n",
        "n1",
    );
    charset.extend_from_slice(b"Hello\r\n");
    cases.push(("charset", charset));
    let mut boundary = head(
        "Content-Type: multipart/mixed; boundary=\"b\0b\"\r\n\r\n",
        "n2",
    );
    boundary.extend_from_slice(
        b"--b\0b\r\nContent-Type: text/plain\r\n\r\nHello\r\n--b\0b\r\nContent-Type: application/octet-stream; name=\"a\0b.pdf\"\r\nContent-Disposition: attachment; filename=\"a\0b.pdf\"\r\n\r\nPDF\r\n--b\0b--\r\n",
    );
    cases.push(("boundary and file name", boundary));
    let mut part_type = head(
        "Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n",
        "n3",
    );
    part_type.extend_from_slice(
        b"--x\r\nContent-Type: text/pl\0ain\r\n\r\nHello\r\n--x\r\nContent-Type: app\0lication/x\0y\r\n\r\ndata\r\n--x--\r\n",
    );
    cases.push(("part type", part_type));
    let mut headers = format!(
        "From: =?utf-8?q?A=00nn?= <ann@acme.example>\r\nTo: {SUPPORT}\r\n\
         Subject: =?utf-8?q?Print=00er?= \0raw\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <n4\0x@acme.example>\r\nReferences: <r\0ef@acme.example>\r\n\
         In-Reply-To: <i\0rt@acme.example>\r\nX-Note: a\0b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    headers.extend_from_slice(b"Hel\0lo\r\n");
    cases.push(("subject, names, ids", headers));
    cases
}

both_backends!(
    nul_bytes_in_mime_parameters_and_headers_never_lose_the_mail,
    |db: TestDb| async move {
        let (store, handler) = handler_on(&db).await;
        for (what, raw) in nul_mails() {
            let id = format!("nul-{}", what.replace([' ', ','], "-"));
            let outcome = handler.handle(&inbound_job(&id, job(&raw, SUPPORT))).await;
            assert_eq!(outcome, Ok(Handled::Applied), "{what}");
            let row = raw_row(&store, &id).await;
            assert_eq!(row.data, raw, "{what}: the raw bytes are kept as they came");
            assert_eq!(
                row.status,
                raw_mails::RawMailStatus::Parsed,
                "{what}: {:?}",
                row.error
            );
            let m = message_of(&store, row.id).await;
            for text in [
                Some(&m.subject),
                Some(&m.from_address),
                m.from_name.as_ref(),
                m.message_id_header.as_ref(),
                m.text_body.as_ref(),
                row.error.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(!text.contains('\0'), "{what}: NUL stored in {text:?}");
            }
            assert!(!m.references.to_string().contains("\\u0000"), "{what}");
            if what == "subject, names, ids" {
                // A subject's control characters are spaces (an encoded CRLF stays
                // data), and so are a display name's.
                assert_eq!(m.subject, "Print er  raw");
                assert_eq!(m.from_name.as_deref(), Some("A nn"));
            }
        }
        let conn = store.conn();
        assert_eq!(
            count(conn, "SELECT COUNT(*) AS n FROM threads").await,
            4,
            "every mail opened its thread"
        );
    }
);

// A NUL in any text field of a job (a customer's or a contact's name, a tag, a comment, an
// assignee, an actor, a reason) once failed its insert on PostgreSQL with a database error,
// retried for eleven minutes and then dead-lettered. Through the real broker and worker, each
// is stored with its control characters escaped.
both_backends!(
    nul_bytes_in_job_fields_are_stored_escaped,
    |db: TestDb| async move {
        use common::broker::{TestBroker, eventually, start_worker, worker_config};
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let worker = start_worker(
            worker_config(&db, &broker),
            std::sync::Arc::new(gochat::clock::SystemClock),
        )
        .await;
        let applied = |id: &'static str| {
            let store = store.clone();
            async move {
                let sql =
                    format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id = '{id}'");
                eventually(std::time::Duration::from_secs(30), id, || async {
                    (count(store.conn(), &sql).await == 1).then_some(())
                })
                .await;
            }
        };
        broker
            .publish_json(
                "customer-upsert",
                "nul-customer",
                &json!({"schema": "customer-upsert/v1", "external_id": "acme", "name": "AC\u{0}ME",
                        "contacts": [{"kind": "email", "address": "ann@acme.example", "name": "A\u{0}nn"}]}),
            )
            .await;
        applied("nul-customer").await;
        let names = texts(&store, "SELECT name AS r FROM customers").await;
        assert_eq!(names, vec!["AC\\x00ME"]);
        let contact = texts(&store, "SELECT display_name AS r FROM contacts").await;
        assert_eq!(contact, vec!["A\\x00nn"]);
        let (thread, _) = common::fixtures::thread_with_contact(
            &store,
            "default",
            "ann@acme.example",
            chrono::Utc::now(),
        )
        .await;
        broker
            .publish_json(
                "thread-update",
                "nul-update",
                &json!({"schema": "thread-update/v1", "thread_id": thread,
                        "actor": {"kind": "agent", "id": "a\u{0}1", "name": "Ag\u{0}ent"},
                        "assignee": "agent\u{0}-2", "tags_add": ["ur\u{0}gent"],
                        "comment": "see\u{0}this\u{1b}[2J"}),
            )
            .await;
        applied("nul-update").await;
        broker
            .publish_json(
                "status-transition",
                "nul-status",
                &json!({"schema": "status-transition/v1", "thread_id": thread, "to": "waiting",
                        "actor": {"kind": "system", "name": "s\u{0}ys"}, "reason": "be\u{0}cause"}),
            )
            .await;
        applied("nul-status").await;

        let tags = texts(&store, "SELECT tag AS r FROM thread_tags").await;
        assert_eq!(tags, vec!["ur\\x00gent"]);
        let comments = texts(&store, "SELECT body AS r FROM comments").await;
        assert_eq!(comments, vec!["see\\x00this\\x1b[2J"]);
        let assignee = texts(&store, "SELECT assignee AS r FROM threads").await;
        assert_eq!(assignee, vec!["agent\\x00-2"]);
        let status = texts(&store, "SELECT status AS r FROM threads").await;
        assert_eq!(status, vec!["waiting"]);
        worker.stop().await;
        broker.cleanup(&[]).await;
    }
);

/// Makes every insert into `messages` fail, as an unforeseen database refusal would.
async fn break_message_inserts(store: &gochat::store::Store, db: &TestDb) {
    use sea_orm::ConnectionTrait;
    let sql: &[&str] = match db.backend {
        common::Backend::Sqlite => &[
            "CREATE TRIGGER injected BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        ],
        common::Backend::Postgres => &[
            "CREATE FUNCTION injected() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER injected BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION injected()",
        ],
    };
    for s in sql {
        store.conn().execute_unprepared(s).await.expect("trigger");
    }
}

// A mail whose processing fails after its raw row was written (here: the message insert is
// refused) used to roll the raw row back with everything else: the mail then lived only in
// the job, and in a dead letter once the retries ran out. Now its bytes are kept in a
// commit of their own, marked failed with the reason, the job's error names the raw id, and
// the retry after the fault is gone finds and completes that row.
both_backends!(
    a_mail_whose_processing_fails_keeps_its_raw_bytes,
    |db: TestDb| async move {
        use sea_orm::ConnectionTrait;
        let (store, handler) = handler_on(&db).await;
        break_message_inserts(&store, &db).await;
        let raw =
            common::mail::TestMail::new("ann@acme.example", SUPPORT, "Printer", "Help\n").bytes();
        let job = inbound_job("fails-once", job(&raw, SUPPORT));
        let error = handler.handle(&job).await.expect_err("the insert fails");
        let row = raw_row(&store, "fails-once").await;
        assert_eq!(row.status, raw_mails::RawMailStatus::Failed);
        assert!(
            row.error
                .as_deref()
                .unwrap_or_default()
                .contains("injected fault"),
            "{:?}",
            row.error
        );
        assert!(
            error
                .to_string()
                .contains(&format!("kept as raw mail {}", row.id)),
            "{error}"
        );
        assert_eq!(row.data, raw);

        let drop = match db.backend {
            common::Backend::Sqlite => "DROP TRIGGER injected",
            common::Backend::Postgres => "DROP TRIGGER injected ON messages",
        };
        store
            .conn()
            .execute_unprepared(drop)
            .await
            .expect("drop trigger");
        let retry = gochat::jobs::Job { attempt: 2, ..job };
        assert_eq!(handler.handle(&retry).await, Ok(Handled::Applied));
        let row = raw_row(&store, "fails-once").await;
        assert_eq!(
            row.status,
            raw_mails::RawMailStatus::Parsed,
            "{:?}",
            row.error
        );
        message_of(&store, row.id).await;
        assert_eq!(
            count(store.conn(), "SELECT COUNT(*) AS n FROM raw_mails").await,
            1
        );
    }
);

/// A mail with a text part and an HTML part nested `depth` `<div>`s deep.
fn deep_html_mail(id: &str, depth: usize) -> Vec<u8> {
    let html = format!("<html><body>{}deep</body></html>", "<div>".repeat(depth));
    format!(
        "From: Ann <ann@acme.example>\r\nTo: {SUPPORT}\r\nSubject: Deep\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@acme.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe plain words.\r\n\
         --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--alt--\r\n"
    )
    .into_bytes()
}

// HTML nested 20,000 deep took html5ever's tree builder seconds (100,000: 25 s), on the
// async runtime and inside the job's transaction, stalling every other job. Past the limits
// the HTML is not sanitised: the mail keeps its text part, the HTML is an attachment
// (`message.html`, never shown inline), and the defect says why.
both_backends!(
    html_too_deep_to_sanitise_becomes_an_attachment,
    |db: TestDb| async move {
        let (store, handler) = handler_on(&db).await;
        let raw = deep_html_mail("deep", 20_000);
        let job = inbound_job("deep-html", job(&raw, SUPPORT));
        assert_eq!(handler.handle(&job).await, Ok(Handled::Applied));
        let row = raw_row(&store, "deep-html").await;
        assert_eq!(row.status, raw_mails::RawMailStatus::Parsed);
        assert!(
            row.error
                .as_deref()
                .unwrap_or_default()
                .contains("HTML body not shown (HTML nested 20002 deep, over 500)"),
            "{:?}",
            row.error
        );
        let m = message_of(&store, row.id).await;
        assert_eq!(m.html_body, None);
        assert_eq!(
            m.text_body.as_deref().map(str::trim),
            Some("The plain words.")
        );
        let names: Vec<String> = gochat_entities::attachments::Entity::find()
            .filter(gochat_entities::attachments::Column::MessageId.eq(m.id))
            .all(store.conn())
            .await
            .expect("attachments")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, vec!["message.html"]);
    }
);

// A support address behind a Google Group or a Microsoft 365 group: every customer's mail
// carries List-Id, List-Unsubscribe and Precedence: list. Those once made every mail an
// auto-reply, and an auto-reply answering no thread was dropped: such an installation showed
// no mail at all. Now the mail opens and continues its thread like any other; only the
// acknowledgement is withheld (no automatic answer to a list).
both_backends!(
    mail_relayed_by_a_group_opens_and_continues_threads_without_acknowledgement,
    |db: TestDb| async move {
        use common::mail::TestMail;
        let (store, handler) = handler_on(&db).await;
        let group = |m: TestMail| {
            m.header("List-Id", "<support.acme-help.example>")
                .header(
                    "List-Unsubscribe",
                    "<mailto:support+unsubscribe@acme-help.example>",
                )
                .header("Precedence", "list")
                .header("Mailing-list", "list support@acme-help.example")
        };
        let first = group(TestMail::new(
            "ann@acme.example",
            SUPPORT,
            "Printer",
            "Help\n",
        ));
        let job1 = inbound_job("group-1", job(&first.bytes(), SUPPORT));
        assert_eq!(handler.handle(&job1).await, Ok(Handled::Applied));
        let reply = group(TestMail::new(
            "ann@acme.example",
            SUPPORT,
            "Re: Printer",
            "More\n",
        ))
        .replying_to(&first.id());
        let job2 = inbound_job("group-2", job(&reply.bytes(), SUPPORT));
        assert_eq!(handler.handle(&job2).await, Ok(Handled::Applied));

        let conn = store.conn();
        assert_eq!(count(conn, "SELECT COUNT(*) AS n FROM threads").await, 1);
        let classes = texts(
            &store,
            "SELECT classification AS r FROM messages ORDER BY created_at",
        )
        .await;
        assert_eq!(classes, vec!["new", "reply"]);
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'"
            )
            .await,
            0,
            "no acknowledgement to a list"
        );
        // The same mail sent directly is acknowledged.
        let direct = TestMail::new("bob@acme.example", SUPPORT, "Scanner", "Help\n");
        let job3 = inbound_job("direct", job(&direct.bytes(), SUPPORT));
        assert_eq!(handler.handle(&job3).await, Ok(Handled::Applied));
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'"
            )
            .await,
            1
        );
    }
);

// A mail to support@ with billing@ in Cc is delivered once per recipient (as the Postfix
// setup in docs/inbound.md does). De-duplication was keyed on the mailbox, so it opened two
// threads and acknowledged twice. Now it is one message, one thread, one acknowledgement,
// and the second delivery's raw row (with its mailbox) is linked to that message.
both_backends!(
    one_mail_delivered_to_two_mailboxes_is_one_message,
    |db: TestDb| async move {
        use common::mail::TestMail;
        let (store, handler) = handler_on(&db).await;
        let mail = TestMail::new("ann@acme.example", SUPPORT, "Invoice", "Wrong total\n")
            .header("Cc", "billing@gochat.example");
        let raw = mail.bytes();
        let to_support = inbound_job("to-support", job(&raw, SUPPORT));
        let to_billing = inbound_job("to-billing", job(&raw, "billing@gochat.example"));
        assert_eq!(handler.handle(&to_support).await, Ok(Handled::Applied));
        assert_eq!(handler.handle(&to_billing).await, Ok(Handled::Applied));

        let conn = store.conn();
        assert_eq!(count(conn, "SELECT COUNT(*) AS n FROM threads").await, 1);
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM messages WHERE direction = 'inbound'"
            )
            .await,
            1
        );
        assert_eq!(
            count(
                conn,
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'"
            )
            .await,
            1,
            "acknowledged once"
        );
        let first = raw_row(&store, "to-support").await;
        let second = raw_row(&store, "to-billing").await;
        assert_eq!(second.status, raw_mails::RawMailStatus::Duplicate);
        assert_eq!(second.mailbox.as_deref(), Some("billing@gochat.example"));
        assert_eq!(
            second.message_row_id,
            Some(message_of(&store, first.id).await.id)
        );
    }
);

/// Hands a status-transition job to `handler`: thread `thread` to `to`.
async fn set_status(
    handler: &gochat::workflow::handler::WorkflowHandler,
    id: &str,
    thread: uuid::Uuid,
    to: &str,
) {
    let job = gochat::jobs::Job {
        kind: "status-transition".into(),
        ..inbound_job(
            id,
            json!({"schema": "status-transition/v1", "thread_id": thread, "to": to,
                   "actor": {"kind": "agent", "id": "a1", "name": "Agent"}}),
        )
    };
    assert_eq!(handler.handle(&job).await, Ok(Handled::Applied), "{id}");
}

async fn thread(store: &gochat::store::Store, id: uuid::Uuid) -> gochat_entities::threads::Model {
    gochat_entities::threads::Entity::find_by_id(id)
        .one(store.conn())
        .await
        .expect("query")
        .expect("thread")
}

// Anyone who knows a Message-ID could answer a customer's thread. To a closed thread, that
// opened a new thread on the customer's behalf (linked, unflagged) and queued an
// acknowledgement to the stranger; to an open one, it reopened it, cancelled its reminders
// and took the card's contact and snippet over. A stranger's mail is now stored on the
// thread, flagged `unknown_sender`, and changes nothing else.
both_backends!(
    a_stranger_answering_by_message_id_changes_nothing_but_a_flag,
    |db: TestDb| async move {
        use common::mail::TestMail;
        let (store, handler) = handler_on(&db).await;
        let acks = |store: gochat::store::Store| async move {
            count(
                store.conn(),
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'",
            )
            .await
        };
        // Two threads of Ann's: one closed, one waiting for her.
        let closed_mail = TestMail::new("ann@acme.example", SUPPORT, "Printer", "Help\n");
        let open_mail = TestMail::new("ann@acme.example", SUPPORT, "Scanner", "Also this\n");
        for (id, m) in [("ann-1", &closed_mail), ("ann-2", &open_mail)] {
            let j = inbound_job(id, job(&m.bytes(), SUPPORT));
            assert_eq!(handler.handle(&j).await, Ok(Handled::Applied));
        }
        let closed = message_of(&store, raw_row(&store, "ann-1").await.id)
            .await
            .thread_id;
        let waiting = message_of(&store, raw_row(&store, "ann-2").await.id)
            .await
            .thread_id;
        set_status(&handler, "close", closed, "closed").await;
        set_status(&handler, "wait", waiting, "waiting").await;
        let before = thread(&store, waiting).await;
        assert_eq!(acks(store.clone()).await, 2);

        for (id, answered) in [("eve-1", &closed_mail), ("eve-2", &open_mail)] {
            let eve = TestMail::new("eve@evil.example", SUPPORT, "Re: hi", "Mine now\n")
                .replying_to(&answered.id());
            let j = inbound_job(id, job(&eve.bytes(), SUPPORT));
            assert_eq!(handler.handle(&j).await, Ok(Handled::Applied), "{id}");
            let m = message_of(&store, raw_row(&store, id).await.id).await;
            let t = thread(&store, m.thread_id).await;
            assert!(
                t.flags.to_string().contains("unknown_sender"),
                "{id}: {}",
                t.flags
            );
        }
        assert_eq!(
            count(store.conn(), "SELECT COUNT(*) AS n FROM threads").await,
            2,
            "no thread opened for the stranger on Ann's behalf"
        );
        assert_eq!(
            message_of(&store, raw_row(&store, "eve-1").await.id)
                .await
                .thread_id,
            closed
        );
        let c = thread(&store, closed).await;
        assert_eq!(c.status, ThreadStatus::Closed, "not reopened");
        let w = thread(&store, waiting).await;
        assert_eq!(w.status, ThreadStatus::Waiting, "not reopened");
        assert_eq!(w.contact_id, before.contact_id, "the card keeps Ann");
        assert_eq!(w.snippet, before.snippet, "and her words");
        assert_eq!(
            acks(store.clone()).await,
            2,
            "nothing acknowledged to the stranger"
        );
    }
);

// Nothing read Authentication-Results, so a forged From of a known contact (plus a token
// from an old acknowledgement, or a Message-ID) was taken as that customer. With the MTA's
// authserv-id configured, a sender whose DMARC fails there is a stranger: the reply is
// flagged and reopens nothing, the token does not match, and a new thread is flagged
// `unauthenticated_sender` and not acknowledged.
both_backends!(
    a_sender_failing_our_mtas_dmarc_check_is_a_stranger,
    |db: TestDb| async move {
        use common::mail::TestMail;
        let store = db.store().await;
        let mut config = gochat::config::Config {
            database: db.config(),
            ..Default::default()
        };
        config.mail.authserv_id = Some("mx.help.example".into());
        let handler = common::fixtures::workflow_handler(&store, config);
        let acks = || async {
            count(
                store.conn(),
                "SELECT COUNT(*) AS n FROM outbox WHERE routing_key = 'outbound-message'",
            )
            .await
        };
        let pass = "mx.help.example; spf=pass smtp.mailfrom=acme.example; dmarc=pass header.from=acme.example";
        let fail = "mx.help.example; spf=fail smtp.mailfrom=acme.example; dmarc=fail header.from=acme.example";
        let ann = TestMail::new("ann@acme.example", SUPPORT, "Printer", "Help\n")
            .header("Authentication-Results", pass);
        let j = inbound_job("real-ann", job(&ann.bytes(), SUPPORT));
        assert_eq!(handler.handle(&j).await, Ok(Handled::Applied));
        let t = message_of(&store, raw_row(&store, "real-ann").await.id)
            .await
            .thread_id;
        set_status(&handler, "wait", t, "waiting").await;
        assert_eq!(acks().await, 1);

        // A forged reply by Message-ID: on the thread, flagged, nothing reopened.
        let forged_reply = TestMail::new("ann@acme.example", SUPPORT, "Re: Printer", "Pay me\n")
            .replying_to(&ann.id())
            .header("Authentication-Results", fail);
        let j = inbound_job("forged-reply", job(&forged_reply.bytes(), SUPPORT));
        assert_eq!(handler.handle(&j).await, Ok(Handled::Applied));
        let on = message_of(&store, raw_row(&store, "forged-reply").await.id).await;
        assert_eq!(on.thread_id, t);
        let card = thread(&store, t).await;
        assert_eq!(card.status, ThreadStatus::Waiting, "not reopened");
        assert!(
            card.flags.to_string().contains("unknown_sender"),
            "{}",
            card.flags
        );

        // The thread's token in the subject, forged: no match, a flagged thread of its own.
        let tag = format!("[#{}]", card.reply_token);
        let forged_token = TestMail::new(
            "ann@acme.example",
            SUPPORT,
            &format!("Re: {tag}"),
            "Pay me\n",
        )
        .header("Authentication-Results", fail);
        let j = inbound_job("forged-token", job(&forged_token.bytes(), SUPPORT));
        assert_eq!(handler.handle(&j).await, Ok(Handled::Applied));
        let own = message_of(&store, raw_row(&store, "forged-token").await.id).await;
        assert_ne!(
            own.thread_id, t,
            "the token does not match for a forged sender"
        );
        let new = thread(&store, own.thread_id).await;
        assert!(
            new.flags.to_string().contains("unauthenticated_sender"),
            "{}",
            new.flags
        );
        assert_eq!(acks().await, 1, "a forged sender is never acknowledged");

        // Ann's real reply still reopens her thread.
        let real_reply = TestMail::new("ann@acme.example", SUPPORT, "Re: Printer", "Thanks\n")
            .replying_to(&ann.id())
            .header("Authentication-Results", pass);
        let j = inbound_job("real-reply", job(&real_reply.bytes(), SUPPORT));
        assert_eq!(handler.handle(&j).await, Ok(Handled::Applied));
        assert_eq!(thread(&store, t).await.status, ThreadStatus::Open);
    }
);

// Every raw mail ends saying what became of it: one refused for having no usable sender
// stayed `parsed` (its dead letter's reason did not name it), and a mail held back as part
// of a loop stayed classified `normal`.
both_backends!(raw_mails_say_what_became_of_them, |db: TestDb| async move {
    use common::mail::TestMail;
    let store = db.store().await;
    let mut config = gochat::config::Config {
        database: db.config(),
        ..Default::default()
    };
    config.mail.loop_limit = 2;
    let handler = common::fixtures::workflow_handler(&store, config);

    let anonymous = b"Subject: hello\r\nTo: support@gochat.example\r\n\r\nwho am I?\r\n";
    let error = handler
        .handle(&inbound_job("anon", job(anonymous, SUPPORT)))
        .await
        .expect_err("refused");
    let row = raw_row(&store, "anon").await;
    assert_eq!(row.status, raw_mails::RawMailStatus::Failed);
    assert!(error.to_string().contains("no usable sender"), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("kept as raw mail {}", row.id)),
        "{error}"
    );
    assert_eq!(
        row.error.as_deref(),
        Some(error.to_string().trim_start_matches("step `sender`: "))
    );

    for i in 0..3 {
        let m = TestMail::new("robot@acme.example", SUPPORT, "Ticket", "Beep\n");
        let id = format!("robot-{i}");
        let j = inbound_job(&id, job(&m.bytes(), SUPPORT));
        assert_eq!(handler.handle(&j).await, Ok(Handled::Applied), "{id}");
    }
    let mut classes = Vec::new();
    for i in 0..3 {
        classes.push(raw_row(&store, &format!("robot-{i}")).await.classification);
    }
    assert_eq!(
        classes,
        vec![
            Some("normal".into()),
            Some("normal".into()),
            Some("loop".into())
        ]
    );
});

// The crafted set `gochat bench hostile` measures, through the worker: each is stored as a
// customer's mail (nothing dead-lettered, nothing lost), its HTML shown only when within the
// sanitising limits, otherwise kept as `message.html`.
both_backends!(
    every_crafted_mail_of_the_bench_set_is_stored_with_its_expected_outcome,
    |db: TestDb| async move {
        let (store, handler) = handler_on(&db).await;
        // (name, HTML shown: Some(true|false), or None for a mail without HTML)
        let expected: &[(&str, Option<bool>)] = &[
            ("div-nested-100k", Some(false)),
            ("li-nested-20k", Some(false)),
            ("div-stray-ends-50k", Some(false)),
            ("b-unclosed-200k", Some(false)),
            ("b-i-misnested-60k", Some(false)),
            ("table-nested-20k", Some(false)),
            ("flat-html-24MiB", Some(false)),
            ("html-under-limits", Some(true)),
            ("cid-parts-40k", Some(false)),
            ("references-100k", None),
            ("headers-10k", None),
            ("nul-bytes", None),
        ];
        let set = gochat::bench::hostile::hostile_mails();
        assert_eq!(
            set.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            expected.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        );
        for ((name, raw), (_, html_shown)) in set.into_iter().zip(expected) {
            let id = format!("hostile-{name}");
            let outcome = handler.handle(&inbound_job(&id, job(&raw, SUPPORT))).await;
            assert_eq!(outcome, Ok(Handled::Applied), "{name}");
            let row = raw_row(&store, &id).await;
            assert_eq!(row.data.len(), raw.len(), "{name}: kept whole");
            let m = message_of(&store, row.id).await;
            match html_shown {
                Some(true) => assert!(m.html_body.is_some(), "{name}"),
                Some(false) => {
                    assert!(m.html_body.is_none(), "{name}");
                    assert!(
                        row.error
                            .as_deref()
                            .unwrap_or_default()
                            .contains("HTML body not shown"),
                        "{name}: {:?}",
                        row.error
                    );
                }
                None => assert!(m.html_body.is_none(), "{name}"),
            }
        }
    }
);

/// The thread of the message job `id` stored.
async fn thread_of_job(store: &gochat::store::Store, id: &str) -> uuid::Uuid {
    message_of(store, raw_row(store, id).await.id)
        .await
        .thread_id
}

// Mail arrives out of order (greylisting, retries): a reply came first and opened a thread;
// the mail it answers, arriving later, opened a second one. Now it joins its reply's thread,
// whether the reply is stored already or earlier in the same batch.
both_backends!(
    a_mail_whose_reply_came_first_joins_the_replys_thread,
    |db: TestDb| async move {
        use common::mail::TestMail;
        let (store, handler) = handler_on(&db).await;
        // Stored first, then the mail it answers.
        let first = TestMail::new("ann@acme.example", SUPPORT, "Printer", "Help\n");
        let reply = TestMail::new("ann@acme.example", SUPPORT, "Re: Printer", "More\n")
            .replying_to(&first.id());
        for (id, m) in [("reply-1", &reply), ("first-1", &first)] {
            let j = inbound_job(id, job(&m.bytes(), SUPPORT));
            assert_eq!(handler.handle(&j).await, Ok(Handled::Applied), "{id}");
        }
        assert_eq!(
            thread_of_job(&store, "first-1").await,
            thread_of_job(&store, "reply-1").await
        );

        // Both in one batch, the reply first.
        let first = TestMail::new("bob@acme.example", SUPPORT, "Scanner", "Help\n");
        let reply = TestMail::new("bob@acme.example", SUPPORT, "Re: Scanner", "More\n")
            .replying_to(&first.id());
        let batch = [
            inbound_job("reply-2", job(&reply.bytes(), SUPPORT)),
            inbound_job("first-2", job(&first.bytes(), SUPPORT)),
        ];
        let results = handler.handle_batch(&batch).await;
        assert!(
            results.iter().all(|r| *r == Ok(Handled::Applied)),
            "{results:?}"
        );
        assert_eq!(
            thread_of_job(&store, "first-2").await,
            thread_of_job(&store, "reply-2").await
        );
        assert_eq!(
            count(store.conn(), "SELECT COUNT(*) AS n FROM threads").await,
            2
        );
    }
);

// A backlog drained by several batches at once (the default: four): a reply and the mail it
// answers could be committed by different batches at the same moment, each missing the
// other, and 39 to 86 of 300 replies opened a thread of their own. Here 240 mails, 71 of
// them replies to a mail 20 to 26 earlier (some delivered before it), are queued first and
// then drained by a worker with its default concurrency: every reply is on its parent's
// thread.
both_backends!(
    replies_find_their_thread_when_a_backlog_drains_concurrently,
    |db: TestDb| async move {
        use common::broker::{TestBroker, eventually, start_worker, worker_config};
        use common::mail::TestMail;
        let broker = TestBroker::new().await;
        let store = db.store().await;
        let mut mails: Vec<TestMail> = Vec::new();
        let mut parent_of = std::collections::HashMap::new();
        for i in 0..240usize {
            let from = format!("customer{}@acme{}.example", i % 37, i % 5);
            let m = TestMail::new(&from, SUPPORT, &format!("Question {i}"), "Help\n");
            if i % 3 == 2 && i >= 27 {
                let parent = i - 20 - (i % 7);
                let m = TestMail {
                    from: mails[parent].from.clone(),
                    ..m
                }
                .replying_to(&mails[parent].id());
                parent_of.insert(i, parent);
                mails.push(m);
            } else {
                mails.push(m);
            }
        }
        // Some replies travel ahead of the mail they answer: one per parent, and only ahead
        // of a mail that starts its conversation. (Two replies both ahead of their parent,
        // or a reply ahead of a parent that answers an earlier thread, would each need two
        // threads merged: see docs/inbound.md.)
        let mut order: Vec<usize> = (0..mails.len()).collect();
        let siblings = |p: usize| parent_of.values().filter(|&&q| q == p).count();
        for (i, parent) in &parent_of {
            if i % 4 == 0 && siblings(*parent) == 1 && !parent_of.contains_key(parent) {
                let (a, b) = (
                    order.iter().position(|x| x == i).expect("i"),
                    order.iter().position(|x| x == parent).expect("parent"),
                );
                order.swap(a, b);
            }
        }
        let config = worker_config(&db, &broker);
        broker.declare(&config.amqp).await;
        for &i in &order {
            broker
                .publish_json(
                    "inbound-mail",
                    &format!("drain-{i}"),
                    &job(&mails[i].bytes(), SUPPORT),
                )
                .await;
        }
        let worker = start_worker(config, std::sync::Arc::new(gochat::clock::SystemClock)).await;
        eventually(
            std::time::Duration::from_secs(90),
            "the backlog drained",
            || async {
                (count(store.conn(), "SELECT COUNT(*) AS n FROM processed_jobs").await >= 240)
                    .then_some(())
            },
        )
        .await;
        let mut wrong = Vec::new();
        for (i, parent) in &parent_of {
            let (a, b) = (
                thread_of_job(&store, &format!("drain-{i}")).await,
                thread_of_job(&store, &format!("drain-{parent}")).await,
            );
            if a != b {
                wrong.push((i, parent));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} replies off their thread: {wrong:?}",
            wrong.len(),
            parent_of.len()
        );
        worker.stop().await;
        broker.cleanup(&[]).await;
    }
);
