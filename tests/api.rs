//! The inbox HTTP API through a real HTTP client against a running server, on both
//! databases, with a real worker on the real RabbitMQ behind its writes and a real SMTP
//! server process behind replies. Threads are made the way production makes them: inbound
//! mail jobs through the worker.

mod common;

use std::collections::HashSet;

use base64::Engine;
use common::TestDb;
use common::api::{SUPPORT, WAIT, env};
use common::broker::eventually;
use common::mail::TestMail;
use gochat::store::api_keys;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

both_backends!(keys_are_required_and_scoped, |db: TestDb| async move {
    let e = env(&db).await;
    let (s, _) = e.call(Method::GET, "/api/v1/threads", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = e
        .http
        .get(format!("{}/api/v1/threads", e.base))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    for bad in [
        "nonsense",
        "gck_0_0",
        // the right id with a wrong secret
        &format!(
            "{}{}",
            &e.read[..e.read.len() - 1],
            if e.read.ends_with('0') { '1' } else { '0' }
        ),
    ] {
        let (s, body) = e
            .call(Method::GET, "/api/v1/threads", Some(bad), None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        assert!(!body.to_string().contains(bad), "the key is echoed: {body}");
    }
    // A read key reads but may not write; a write key does both.
    assert_eq!(e.get("/api/v1/threads").await["items"], json!([]));
    let thread = e
        .mail(&TestMail::new(
            "ada@acme.example",
            SUPPORT,
            "Printer",
            "on fire",
        ))
        .await;
    let comment = json!({"author": {"id": "a1"}, "body": "call her"});
    let path = format!("/api/v1/threads/{thread}/comments");
    let (s, body) = e
        .call(Method::POST, &path, Some(&e.read), Some(comment.clone()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _) = e
        .call(Method::GET, "/api/v1/threads", Some(&e.write), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Revoked: refused from the next request on.
    let keys = api_keys::list(e.store.conn()).await.expect("keys");
    let reader = keys.iter().find(|k| k.name == "reader").expect("reader");
    assert!(
        api_keys::revoke(e.store.conn(), reader.id, chrono::Utc::now())
            .await
            .expect("revoke")
    );
    let (s, _) = e
        .call(Method::GET, "/api/v1/threads", Some(&e.read), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    e.stop().await;
});

both_backends!(the_inbox_filters_and_pages, |db: TestDb| async move {
    let e = env(&db).await;
    // ACME has two contacts; Globex one; a stranger writes too.
    e.write(
        Method::PUT,
        "/api/v1/customers/acme",
        json!({"name": "ACME", "contacts": [
            {"kind": "email", "address": "ada@acme.example", "name": "Ada"},
            {"kind": "email", "address": "bob@acme.example"}]}),
    )
    .await;
    e.write(
        Method::PUT,
        "/api/v1/customers/globex",
        json!({"name": "Globex", "contacts": [{"kind": "email", "address": "carl@globex.example"}]}),
    )
    .await;
    let a1 = e
        .mail(&TestMail::new(
            "Ada <ada@acme.example>",
            SUPPORT,
            "Printer one",
            "x",
        ))
        .await;
    let a2 = e
        .mail(&TestMail::new(
            "bob@acme.example",
            SUPPORT,
            "Printer two",
            "x",
        ))
        .await;
    let g1 = e
        .mail(&TestMail::new(
            "carl@globex.example",
            SUPPORT,
            "Invoice",
            "x",
        ))
        .await;
    let before_last = chrono::Utc::now();
    let s1 = e
        .mail(&TestMail::new(
            "dora@elsewhere.example",
            SUPPORT,
            "Hello",
            "x",
        ))
        .await;

    // Newest update first.
    assert_eq!(
        e.ids("/api/v1/threads").await,
        [s1.clone(), g1.clone(), a2.clone(), a1.clone()]
    );

    // Agent actions through the API: assign, tag, close.
    e.write(
        Method::PATCH,
        &format!("/api/v1/threads/{a1}"),
        json!({"actor": {"id": "agent-7", "name": "Eve"}, "assignee": "agent-7", "tags_add": ["billing", "vip"]}),
    )
    .await;
    e.write(
        Method::PATCH,
        &format!("/api/v1/threads/{g1}"),
        json!({"actor": {"id": "agent-7"}, "tags_add": ["billing"], "status": "closed"}),
    )
    .await;

    let q = |s: &str| format!("/api/v1/threads?{s}");
    assert_eq!(e.ids(&q("status=closed")).await, [g1.as_str()]);
    assert_eq!(
        sorted(e.ids(&q("status=open&status=closed")).await).len(),
        4
    );
    assert_eq!(sorted(e.ids(&q("status=open,closed")).await).len(), 4);
    assert_eq!(e.ids(&q("assignee=agent-7")).await, [a1.as_str()]);
    assert_eq!(
        sorted(e.ids(&q("unassigned=true")).await),
        sorted(vec![a2.clone(), g1.clone(), s1.clone()])
    );
    assert_eq!(
        sorted(e.ids(&q("tag=billing")).await),
        sorted(vec![a1.clone(), g1.clone()])
    );
    assert_eq!(e.ids(&q("tag=billing&tag=vip")).await, [a1.as_str()]);
    assert_eq!(e.ids(&q("tag=billing&status=open")).await, [a1.as_str()]);
    assert_eq!(
        sorted(e.ids(&q("customer=acme")).await),
        sorted(vec![a1.clone(), a2.clone()])
    );
    // A contact: the threads of its customers, whoever of them wrote.
    assert_eq!(
        sorted(e.ids(&q("contact=BOB@acme.example")).await),
        sorted(vec![a1.clone(), a2.clone()])
    );
    assert_eq!(
        e.ids(&q("contact=dora@elsewhere.example")).await,
        [s1.as_str()]
    );
    assert!(e.ids(&q("contact=nobody@example.com")).await.is_empty());
    assert!(e.ids(&q("lifecycle=no-such")).await.is_empty());
    assert_eq!(e.ids(&q("lifecycle=default")).await.len(), 4);
    assert!(e.ids(&q("has_attachments=true")).await.is_empty());
    assert!(
        e.ids(&q("unassigned=true&assignee=agent-7"))
            .await
            .is_empty()
    );
    let after = before_last.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let after_ids = e
        .ids(&q(&format!("updated_after={}", after.replace('+', "%2B"))))
        .await;
    assert!(
        after_ids.contains(&s1) && !after_ids.contains(&a2),
        "{after_ids:?}"
    );
    let before_ids = e.ids(&q(&format!("updated_before={after}"))).await;
    assert!(
        before_ids.contains(&a2) && !before_ids.contains(&s1),
        "{before_ids:?}"
    );

    // Counts: per status, the other filters applied.
    let page = e.get(&q("tag=billing&status=closed&counts=true")).await;
    assert_eq!(
        page["counts"],
        json!({"open": 1, "closed": 1, "waiting": 0, "reminder": 0})
    );
    // Colours come from the lifecycle.
    assert!(
        page["items"][0]["status_colour"]
            .as_str()
            .is_some_and(|c| c.starts_with('#')),
        "{page}"
    );

    // The customer inbox.
    let ids: Vec<String> = e
        .get("/api/v1/customers/acme/threads?assignee=agent-7")
        .await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, [a1.as_str()]);
    let (s, _) = e
        .call(
            Method::GET,
            "/api/v1/customers/nobody/threads",
            Some(&e.read),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Pages of 2 while new mail arrives between pages: every thread that existed is seen
    // exactly once, in order; the new ones are above the cursor and not repeated.
    let all = e.ids(&q("limit=200")).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 0;
    loop {
        let path = match &cursor {
            None => q("limit=2"),
            Some(c) => q(&format!("limit=2&cursor={c}")),
        };
        let page = e.get(&path).await;
        for c in page["items"].as_array().expect("items") {
            seen.push(c["id"].as_str().expect("id").to_owned());
        }
        e.mail(&TestMail::new(
            "dora@elsewhere.example",
            SUPPORT,
            &format!("New {extra}"),
            "x",
        ))
        .await;
        extra += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all, "pages while mail arrives");
    assert_eq!(HashSet::<&String>::from_iter(&seen).len(), seen.len());

    // Bad parameters are named.
    for (query, field) in [
        ("stauts=open", "stauts"),
        ("status=pending", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("cursor=abc", "cursor"),
        ("updated_after=yesterday", "updated_after"),
        ("unassigned=yes", "unassigned"),
        ("has_attachments=1", "has_attachments"),
        ("assignee=a&assignee=b", "assignee"),
    ] {
        let (s, body) = e.call(Method::GET, &q(query), Some(&e.read), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], json!(field), "{query}: {body}");
    }
    e.stop().await;
});

both_backends!(a_thread_its_feed_and_its_files, |db: TestDb| async move {
    let e = env(&db).await;
    e.write(
        Method::PUT,
        "/api/v1/customers/acme",
        json!({"name": "ACME", "contacts": [{"kind": "email", "address": "ada@acme.example", "name": "Ada"}]}),
    )
    .await;
    let pdf = b"%PDF-1.4 not really\x00\x01\x02";
    let raw = format!(
        "From: Ada <ada@acme.example>\r\nTo: {SUPPORT}\r\nSubject: Invoice\r\nMessage-ID: <inv-1@acme.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/pdf; name=\"inv\\\"oice;.pdf\"\r\nContent-Disposition: attachment; filename=\"inv\\\"oice;.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(pdf)
    );
    let thread = e.raw_mail(raw.as_bytes(), "inv-1@acme.example").await;

    let detail = e.get(&format!("/api/v1/threads/{thread}")).await;
    assert_eq!(detail["thread"]["id"], json!(thread));
    assert_eq!(detail["thread"]["has_attachments"], json!(true));
    assert_eq!(detail["customers"][0]["external_id"], json!("acme"));
    assert_eq!(
        detail["customers"][0]["contacts"][0]["address"],
        json!("ada@acme.example")
    );
    let transitions = detail["transitions"].as_array().expect("transitions");
    assert!(transitions.contains(&json!("closed")), "{detail}");
    assert!(
        detail["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{detail}"
    );
    assert_eq!(detail["timers"], json!([]));
    assert_eq!(
        e.ids("/api/v1/threads?has_attachments=true").await,
        [thread.as_str()]
    );

    // A reply (delivered by SMTP), a comment and a status change make the feed.
    let reply = e
        .write(
            Method::POST,
            &format!("/api/v1/threads/{thread}/messages"),
            json!({"author": {"id": "a1", "name": "Alice"}, "body": {"text": "Paid, thanks."}}),
        )
        .await;
    assert_eq!(reply["jobs"][0]["state"], json!("done"));
    assert_eq!(reply["message"]["direction"], json!("outbound"));
    assert_eq!(reply["message"]["to"], json!(["ada@acme.example"]));
    e.write(
        Method::POST,
        &format!("/api/v1/threads/{thread}/comments"),
        json!({"author": {"id": "a1"}, "body": "She pays late every month."}),
    )
    .await;
    let version = e.get(&format!("/api/v1/threads/{thread}")).await["thread"]["version"].clone();
    let (s, body) = e
        .call(
            Method::PATCH,
            &format!("/api/v1/threads/{thread}?wait=5s"),
            Some(&e.write),
            Some(json!({"actor": {"id": "a1"}, "status": "closed"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let _ = version;

    let whole = e
        .get(&format!("/api/v1/threads/{thread}/feed?limit=200"))
        .await;
    let items = whole["items"].as_array().expect("items").clone();
    assert_eq!(whole["next_cursor"], Value::Null);
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["type"].as_str().unwrap_or(""))
        .collect();
    assert!(
        types.contains(&"message") && types.contains(&"comment") && types.contains(&"event"),
        "{types:?}"
    );
    let inbound = &items[types.iter().position(|t| *t == "message").expect("message")];
    assert_eq!(inbound["direction"], json!("inbound"));
    // Pages of one give the same feed.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/api/v1/threads/{thread}/feed?limit=1"),
            Some(c) => format!("/api/v1/threads/{thread}/feed?limit=1&cursor={c}"),
        };
        let page = e.get(&path).await;
        paged.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, items);

    // The attachment: its bytes, as a download with a safe name.
    let message = inbound["id"].as_str().expect("id").to_owned();
    let attachment = inbound["attachments"][0]["id"]
        .as_str()
        .expect("attachment id")
        .to_owned();
    let resp = e
        .http
        .get(format!(
            "{}/api/v1/messages/{message}/attachments/{attachment}",
            e.base
        ))
        .bearer_auth(&e.read)
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["x-content-type-options"], "nosniff");
    let disposition = h["content-disposition"].to_str().expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"inv_oice_.pdf\""),
        "{disposition}"
    );
    assert_eq!(&resp.bytes().await.expect("bytes")[..], pdf);
    // The raw mail, byte for byte.
    let resp = e
        .http
        .get(format!("{}/api/v1/messages/{message}/raw", e.base))
        .bearer_auth(&e.read)
        .send()
        .await
        .expect("raw");
    assert_eq!(resp.headers()["content-type"], "message/rfc822");
    assert_eq!(&resp.bytes().await.expect("bytes")[..], raw.as_bytes());
    // An outbound message has no raw mail; an attachment id is only valid on its message.
    let outbound = reply["message"]["id"].as_str().expect("id");
    for path in [
        format!("/api/v1/messages/{outbound}/raw"),
        format!("/api/v1/messages/{outbound}/attachments/{attachment}"),
        format!("/api/v1/threads/{}", uuid::Uuid::now_v7()),
        format!("/api/v1/threads/{}/feed", uuid::Uuid::now_v7()),
    ] {
        let (s, body) = e.call(Method::GET, &path, Some(&e.read), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (s, body) = e
        .call(
            Method::GET,
            "/api/v1/threads/not-a-uuid",
            Some(&e.read),
            None,
        )
        .await;
    assert_eq!(
        (s, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("id"))
    );
    // The SMTP server got the reply.
    let sink = &e.sink;
    eventually(WAIT, "the reply at the SMTP server", || async {
        (!sink.received().is_empty()).then_some(())
    })
    .await;
    e.stop().await;
});

both_backends!(writes_are_idempotent_and_checked, |db: TestDb| async move {
    let e = env(&db).await;
    let thread = e
        .mail(&TestMail::new(
            "ada@acme.example",
            SUPPORT,
            "Printer",
            "on fire",
        ))
        .await;
    let path = format!("/api/v1/threads/{thread}/comments");

    // The same Idempotency-Key twice: one job id, one comment.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = e
            .http
            .post(format!("{}{path}?wait=5s", e.base))
            .bearer_auth(&e.write)
            .header("Idempotency-Key", "comment-1")
            .json(&json!({"author": {"id": "a1"}, "body": "once"}))
            .send()
            .await
            .expect("post");
        assert!(resp.status().is_success(), "{}", resp.status());
        let body: Value = resp.json().await.expect("json");
        ids.push(body["jobs"][0]["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    let feed = e.get(&format!("/api/v1/threads/{thread}/feed")).await;
    let comments = feed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["type"] == "comment")
        .count();
    assert_eq!(comments, 1, "{feed}");

    // Without wait: 202 and the job queued.
    let (s, body) = e
        .call(
            Method::POST,
            &path,
            Some(&e.write),
            Some(json!({"author": {"id": "a1"}, "body": "later"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["jobs"][0]["state"], json!("queued"));
    let feed_path = format!("/api/v1/threads/{thread}/feed");
    let ev = &e;
    eventually(WAIT, "the second comment", || async {
        let feed = ev.get(&feed_path).await;
        let n = feed["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|i| i["type"] == "comment")
            .count();
        (n == 2).then_some(())
    })
    .await;

    // If-Match: a stale version is refused before any job is published.
    let version = e.get(&format!("/api/v1/threads/{thread}")).await["thread"]["version"]
        .as_i64()
        .expect("version");
    let patch = json!({"actor": {"id": "a1"}, "assignee": "a1"});
    let resp = e
        .http
        .patch(format!("{}/api/v1/threads/{thread}", e.base))
        .bearer_auth(&e.write)
        .header("If-Match", format!("\"{}\"", version - 1))
        .json(&patch)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let resp = e
        .http
        .patch(format!("{}/api/v1/threads/{thread}?wait=5s", e.base))
        .bearer_auth(&e.write)
        .header("If-Match", format!("\"{version}\""))
        .json(&patch)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["thread"]["assignee"], json!("a1"));
    // null unassigns.
    let body = e
        .write(
            Method::PATCH,
            &format!("/api/v1/threads/{thread}"),
            json!({"actor": {"id": "a1"}, "assignee": null}),
        )
        .await;
    assert_eq!(body["thread"]["assignee"], Value::Null);

    // Bad bodies name the field; nothing to do is 422; unknown thread 404.
    for (body, field) in [
        (
            json!({"author": {"id": "a1"}, "body": 5}),
            Some("body.body"),
        ),
        (json!({"body": "x"}), Some("body")),
        (
            json!({"author": {"id": "a1"}, "body": "  "}),
            Some("body.body"),
        ),
    ] {
        let (s, got) = e
            .call(Method::POST, &path, Some(&e.write), Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got}");
        assert_eq!(got["field"].as_str(), field, "{body}: {got}");
    }
    let (s, _) = e
        .call(
            Method::PATCH,
            &format!("/api/v1/threads/{thread}"),
            Some(&e.write),
            Some(json!({"actor": {"id": "a1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = e
        .call(
            Method::POST,
            &format!("/api/v1/threads/{}/comments", uuid::Uuid::now_v7()),
            Some(&e.write),
            Some(json!({"author": {"id": "a1"}, "body": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Not JSON.
    let resp = e
        .http
        .post(format!("{}{path}", e.base))
        .bearer_auth(&e.write)
        .body("author=a1")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A reply to someone who is not a contact of the thread's customers is refused by the
    // worker: with `wait`, the answer is the dead letter's reason; the job is in the dead
    // letters with it.
    let resp = e
        .http
        .post(format!("{}/api/v1/threads/{thread}/messages?wait=5s", e.base))
        .bearer_auth(&e.write)
        .header("Idempotency-Key", "to-mallory")
        .json(&json!({"author": {"id": "a1"}, "to": ["mallory@evil.example"], "body": {"text": "hi"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.expect("problem");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("dead-lettered") && detail.contains("mallory@evil.example"),
        "{detail}"
    );
    let keys = api_keys::list(e.store.conn()).await.expect("keys");
    let writer = keys.iter().find(|k| k.name == "writer").expect("writer");
    let job = format!("api-{}-to-mallory", writer.id.simple());
    let reason = e.broker.dead_letter_reason(&job, WAIT).await;
    assert!(reason.contains("mallory@evil.example"), "{reason}");
    e.stop().await;
});

both_backends!(
    hostile_parameters_are_refused_or_harmless,
    |db: TestDb| async move {
        let e = env(&db).await;
        let thread = e
            .mail(&TestMail::new(
                "ada@acme.example",
                SUPPORT,
                "Printer",
                "on fire",
            ))
            .await;
        let hostile = [
            "' OR '1'='1",
            "\"; DROP TABLE threads; --",
            "%' OR 1=1 --",
            "\\",
            "\u{0}",
            "a\u{0}b",
            "../../etc/passwd",
            "<script>alert(1)</script>",
            "💩",
            &"x".repeat(5000),
        ];
        for h in hostile {
            let enc: String = url::form_urlencoded::byte_serialize(h.as_bytes()).collect();
            for param in [
                "assignee",
                "tag",
                "customer",
                "contact",
                "lifecycle",
                "status",
                "cursor",
                "limit",
                "updated_after",
            ] {
                let (s, body) = e
                    .call(
                        Method::GET,
                        &format!("/api/v1/threads?{param}={enc}"),
                        Some(&e.read),
                        None,
                    )
                    .await;
                assert!(
                    s == StatusCode::OK && body["items"] == json!([])
                        || s == StatusCode::BAD_REQUEST,
                    "{param}={h:?}: {s} {body}"
                );
            }
            let (s, _) = e
                .call(
                    Method::GET,
                    &format!("/api/v1/customers/{enc}/threads"),
                    Some(&e.read),
                    None,
                )
                .await;
            assert!(
                s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST,
                "{h:?}: {s}"
            );
            let (s, _) = e
                .call(
                    Method::GET,
                    &format!("/api/v1/threads/{enc}"),
                    Some(&e.read),
                    None,
                )
                .await;
            assert!(
                s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
                "{h:?}: {s}"
            );
        }
        // A query string over the limit.
        let (s, _) = e
            .call(
                Method::GET,
                &format!("/api/v1/threads?tag={}", "x".repeat(62_000)),
                Some(&e.read),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::URI_TOO_LONG);
        // The data is intact.
        assert_eq!(e.ids("/api/v1/threads").await, [thread]);
        e.stop().await;
    }
);

/// The parameters the OpenAPI document lists for the inbox are those the server takes.
#[test]
fn the_document_lists_the_inbox_parameters() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(gochat::api::openapi::ApiDoc::openapi()).expect("json");
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let params: Vec<&str> = doc["paths"]["/api/v1/threads"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(params, gochat::api::LIST_PARAMS);
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    for path in doc["paths"].as_object().expect("paths").keys() {
        assert!(path.starts_with("/api/v1/"), "{path}");
    }
}

both_backends!(keyword_search_through_the_api, |db: TestDb| async move {
    let e = env(&db).await;
    e.write(
        Method::PUT,
        "/api/v1/customers/acme-42",
        json!({"name": "ACME Corp", "contacts": [{"kind": "email", "address": "zoe@acme.example", "name": "Zoé Müller"}]}),
    )
    .await;
    let cafe = e
        .mail(&TestMail::new(
            "Zoé Müller <zoe@acme.example>",
            SUPPORT,
            "Le café est froid",
            "Die Kaffeemaschine ist kaputt.",
        ))
        .await;
    let printer = e
        .mail(&TestMail::new(
            "dora@elsewhere.example",
            SUPPORT,
            "Printer",
            "The red printer is on fire.",
        ))
        .await;
    let second = e
        .mail(&TestMail::new(
            "dora@elsewhere.example",
            SUPPORT,
            "Fire drill",
            "A red alert, no printer involved.",
        ))
        .await;
    let q = |s: &str| {
        format!(
            "/api/v1/threads?q={}",
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        )
    };
    // Accents and case do not matter, either way round.
    assert_eq!(e.ids(&q("CAFE")).await, [cafe.as_str()]);
    assert_eq!(e.ids(&q("kaffeemaschine")).await, [cafe.as_str()]);
    // The contact's name and the customer's external id.
    assert_eq!(e.ids(&q("muller")).await, [cafe.as_str()]);
    assert_eq!(e.ids(&q("acme-42")).await, [cafe.as_str()]);
    // Every word must match; newest update first, not by rank.
    assert_eq!(
        e.ids(&q("red printer")).await,
        [second.as_str(), printer.as_str()]
    );
    assert_eq!(
        e.ids(&q("printer fire")).await,
        [second.as_str(), printer.as_str()]
    );
    // A phrase matches only as written.
    assert_eq!(e.ids(&q("\"red printer\"")).await, [printer.as_str()]);
    assert!(e.ids(&q("printer zebra")).await.is_empty());
    // Combined with a filter, paged, counted.
    let page = e
        .get(&format!("{}&limit=1&counts=true", q("printer")))
        .await;
    assert_eq!(page["items"][0]["id"], json!(second));
    assert_eq!(page["counts"]["open"], json!(2));
    let next = page["next_cursor"].as_str().expect("a second page");
    assert_eq!(
        e.ids(&format!("{}&limit=1&cursor={next}", q("printer")))
            .await,
        [printer.as_str()]
    );
    // Operators of either engine are plain words; punctuation alone is a named error.
    for hostile in [
        "printer OR 1=1",
        "NEAR(printer fire)",
        "print*",
        "-printer",
        "printer & !fire",
        "'; DROP TABLE threads; --",
    ] {
        let (s, body) = e.call(Method::GET, &q(hostile), Some(&e.read), None).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::BAD_REQUEST,
            "{hostile}: {s} {body}"
        );
    }
    let (s, body) = e.call(Method::GET, &q("?!"), Some(&e.read), None).await;
    assert_eq!(
        (s, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("q"))
    );
    assert_eq!(e.ids("/api/v1/threads").await.len(), 3);
    e.stop().await;
});
