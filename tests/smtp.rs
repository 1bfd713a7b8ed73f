//! Outbound MIME and SMTP delivery against a real SMTP server process (aiosmtpd): headers,
//! both bodies, RFC 2047 encodings, attachments and threading headers read back with
//! mail-parser; header injection refused before anything is sent; 4xx, 5xx and a server
//! that is down classed as the outbound job needs them.

mod common;

use std::time::{Duration, SystemTime};

use common::smtp::SmtpSink;
use gochat::config::SecretUrl;
use gochat::mail::mime::{self, MailAttachment, MimeError, OutgoingMail, Party};
use gochat::mail::smtp::{SendError, Smtp};
use mail_parser::{MessageParser, MimeHeaders};

fn party(name: &str, address: &str) -> Party {
    Party {
        name: Some(name.into()),
        address: address.into(),
    }
}

fn mail(to: &str) -> OutgoingMail {
    OutgoingMail {
        from: party("Go!Chat Support", "support+tok123@gochat.example"),
        reply_to: Some(party("Go!Chat Support", "support+tok123@gochat.example")),
        to: vec![party("Zoë Ñúñez", to)],
        cc: vec![Party {
            name: None,
            address: "boss@acme.example".into(),
        }],
        subject: "Re: Ihre Anfrage – Drucker brennt 🔥".into(),
        text: "Hallo Zoë,\n\nwir kümmern uns darum.\n".into(),
        html: Some("<p>Hallo Zoë,</p><p>wir kümmern uns darum.</p>".into()),
        message_id: mime::new_message_id("gochat.example"),
        in_reply_to: Some("<first@acme.example>".into()),
        references: vec![
            "<first@acme.example>".into(),
            "<second@gochat.example>".into(),
        ],
        automatic: true,
        attachments: vec![MailAttachment {
            name: "rechnung-ä.pdf".into(),
            content_type: "application/pdf".into(),
            content: b"%PDF-1.4 not really".to_vec(),
        }],
        date: SystemTime::now(),
        envelope_from: mime::verp_sender(uuid::Uuid::now_v7(), "gochat.example"),
    }
}

fn smtp(sink: &SmtpSink) -> Smtp {
    Smtp::new(&SecretUrl::new(sink.url()), Duration::from_secs(5), 2).expect("transport")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arrives_with_its_headers_bodies_encodings_and_attachment() {
    let sink = SmtpSink::start_async().await;
    let m = mail("zoe@acme.example");
    let msg = mime::build(&m).expect("build");
    let accepted = smtp(&sink).send(&msg).await.expect("sent");
    assert_eq!(accepted.code, "250");
    assert!(accepted.message.contains("queued as"), "{accepted:?}");

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.mail_from, m.envelope_from, "the VERP envelope sender");
    assert_eq!(
        r.rcpt_tos,
        vec![
            "zoe@acme.example".to_owned(),
            "boss@acme.example".to_owned()
        ]
    );
    let raw = String::from_utf8_lossy(&r.raw);
    assert!(
        raw.is_ascii(),
        "headers are 7-bit (RFC 2047), bodies encoded:\n{raw}"
    );
    assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
    assert!(raw.contains("X-Auto-Response-Suppress: All"), "{raw}");

    let parsed = MessageParser::default().parse(&r.raw).expect("parses");
    assert_eq!(parsed.subject(), Some(m.subject.as_str()));
    let from = parsed.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.name(), Some("Go!Chat Support"));
    assert_eq!(from.address(), Some("support+tok123@gochat.example"));
    let to = parsed.to().and_then(|a| a.first()).expect("to");
    assert_eq!(to.name(), Some("Zoë Ñúñez"));
    assert_eq!(
        parsed.message_id(),
        Some(m.message_id.trim_matches(['<', '>']))
    );
    assert_eq!(parsed.in_reply_to().as_text(), Some("first@acme.example"));
    let refs: Vec<&str> = parsed
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.as_ref()).collect())
        .unwrap_or_default();
    assert_eq!(refs, vec!["first@acme.example", "second@gochat.example"]);
    // Text travels in canonical CRLF form.
    assert_eq!(
        parsed
            .body_text(0)
            .map(|t| t.replace("\r\n", "\n"))
            .as_deref(),
        Some(m.text.as_str())
    );
    assert_eq!(
        parsed.body_html(0).as_deref(),
        m.html.as_deref(),
        "the HTML alternative"
    );
    let att = parsed.attachments().next().expect("attachment");
    assert_eq!(att.attachment_name(), Some("rechnung-ä.pdf"));
    assert_eq!(att.contents(), b"%PDF-1.4 not really");

    // Message-IDs are unique and in our domain.
    let a = mime::new_message_id("gochat.example");
    let b = mime::new_message_id("gochat.example");
    assert_ne!(a, b);
    assert!(a.starts_with('<') && a.ends_with("@gochat.example>"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_is_refused_before_anything_is_sent() {
    let sink = SmtpSink::start_async().await;
    let mut m = mail("zoe@acme.example");
    m.subject = "Hello\r\nBcc: victim@example.com".into();
    assert_eq!(
        mime::build(&m).unwrap_err(),
        MimeError::LineBreak {
            what: "subject".into()
        }
    );
    let mut m = mail("zoe@acme.example");
    m.to[0].name = Some("Zoë\nBcc: victim@example.com".into());
    assert!(matches!(
        mime::build(&m),
        Err(MimeError::LineBreak { what }) if what == "To name"
    ));
    let mut m = mail("zoe@acme.example");
    m.to[0].address = "zoe@acme.example\r\nBcc: victim@example.com".into();
    assert!(matches!(mime::build(&m), Err(MimeError::LineBreak { .. })));
    let mut m = mail("zoe@acme.example");
    m.attachments[0].name = "a\r\nContent-Type: text/html".into();
    assert!(matches!(mime::build(&m), Err(MimeError::LineBreak { .. })));
    let mut m = mail("not an address");
    m.cc.clear();
    assert!(matches!(mime::build(&m), Err(MimeError::Address { .. })));
    assert!(sink.received().is_empty(), "nothing reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_outages_are_classed_temporary_or_permanent() {
    let mut sink = SmtpSink::start_async().await;
    let smtp = smtp(&sink);
    let only = |to: &str| {
        let mut m = mail(to);
        m.cc.clear();
        mime::build(&m).expect("build")
    };

    match smtp.send(&only("tempfail@acme.example")).await {
        Err(e @ SendError::Temporary { .. }) => {
            assert_eq!(e.class(), "temporary");
            assert!(e.to_string().contains("451"), "{e}");
        }
        other => panic!("4xx must be temporary: {other:?}"),
    }
    match smtp.send(&only("reject@acme.example")).await {
        Err(e @ SendError::Permanent { .. }) => {
            assert!(e.is_permanent());
            assert!(e.to_string().contains("550"), "{e}");
        }
        other => panic!("5xx must be permanent: {other:?}"),
    }

    tokio::task::block_in_place(|| sink.stop());
    match smtp.send(&only("zoe@acme.example")).await {
        Err(e @ SendError::Connection(_)) => assert_eq!(e.class(), "connection"),
        other => panic!("a server that is down is a connection failure: {other:?}"),
    }
    tokio::task::block_in_place(|| sink.restart());
    smtp.send(&only("zoe@acme.example"))
        .await
        .expect("delivered once the server is back");
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reuses_its_connections_and_replaces_broken_ones() {
    let sink = SmtpSink::start_async().await;
    let smtp = smtp(&sink); // at most 2 connections
    let sends = (0..12).map(|i| {
        let smtp = smtp.clone();
        async move {
            let msg = mime::build(&mail(&format!("user{i}@acme.example"))).expect("build");
            smtp.send(&msg).await
        }
    });
    for r in futures_util::future::join_all(sends).await {
        r.expect("sent");
    }
    let got = sink.received();
    assert_eq!(got.len(), 12);
    let mut ports: Vec<u16> = got.iter().map(|r| r.peer_port).collect();
    ports.sort();
    ports.dedup();
    assert!(
        !ports.is_empty() && ports.len() <= 2,
        "12 messages over {} connections: {ports:?}",
        ports.len()
    );

    // The server restarts: the pooled connections are dead. After they sat idle past the
    // probe delay, the next message goes out on a new connection at the first try.
    let sink = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        sink.restart();
        sink
    })
    .await
    .expect("restart");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let msg = mime::build(&mail("after@acme.example")).expect("build");
    smtp.send(&msg).await.expect("sent on a fresh connection");
    let got = sink.received();
    assert_eq!(got.len(), 13);
    let last = got.last().map(|r| r.peer_port).unwrap_or_default();
    assert!(!ports.contains(&last), "a new connection");
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed, made with the
/// `openssl` command line in `dir`: `(ca.pem, server.pem, server.key)`.
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Go!Chat test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_login_against_a_server_that_requires_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let sink = tokio::task::spawn_blocking(move || {
        SmtpSink::start_secure(&cert, &key, Some(("worker", "s3cret pw")))
    })
    .await
    .expect("sink");
    let port = sink.port;
    let mut m = mail("zoe@acme.example");
    m.cc.clear();
    let message = mime::build(&m).expect("build");
    let transport = |url: String| Smtp::new(&SecretUrl::new(url), Duration::from_secs(5), 1);

    // STARTTLS, the server's certificate checked against the private CA, then the login.
    let ok = transport(format!(
        "smtp://worker:s3cret%20pw@127.0.0.1:{port}?tls=required&ca={}",
        ca.display()
    ))
    .expect("transport");
    let accepted = ok.send(&message).await.expect("delivered over TLS");
    assert_eq!(accepted.code, "250");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the session was upgraded");
    assert_eq!(got[0].login.as_deref(), Some("worker"));

    // A certificate nobody vouches for (the CA not given): refused before any credential is
    // sent, as a connection problem that names TLS.
    let untrusted = transport(format!(
        "smtp://worker:s3cret%20pw@127.0.0.1:{port}?tls=required"
    ))
    .expect("transport");
    match untrusted.send(&message).await {
        Err(e @ SendError::Connection(_)) => {
            assert!(e.to_string().to_lowercase().contains("certificate"), "{e}")
        }
        other => panic!("an untrusted certificate must fail the connection: {other:?}"),
    }

    // A wrong password: the server's 535 is permanent (retrying cannot help; fix the URL).
    let wrong = transport(format!(
        "smtp://worker:nope@127.0.0.1:{port}?tls=required&ca={}",
        ca.display()
    ))
    .expect("transport");
    match wrong.send(&message).await {
        Err(e @ SendError::Permanent { .. }) => assert!(e.to_string().contains("535"), "{e}"),
        other => panic!("a refused login must be permanent: {other:?}"),
    }

    // Plain text to a server that requires STARTTLS: refused, nothing delivered.
    let plain = transport(format!("smtp://127.0.0.1:{port}")).expect("transport");
    assert!(plain.send(&message).await.is_err());
    assert_eq!(sink.received().len(), 1, "only the TLS session delivered");

    // Misconfigurations are named at start-up.
    let err = transport(format!("smtp://127.0.0.1:{port}?ca={}", ca.display()))
        .err()
        .expect("ca without TLS refused");
    assert!(err.contains("ca= needs TLS"), "{err}");
    let err = transport(format!(
        "smtp://127.0.0.1:{port}?tls=required&ca=/nonexistent/ca.pem"
    ))
    .err()
    .expect("missing CA file refused");
    assert!(err.contains("cannot read the CA certificate"), "{err}");
}

// A crafted inbound mail's 10 KB Message-ID, stored on its thread, went into every reply's
// References and In-Reply-To: the line could not be folded and the mail server refused
// every reply ("line too long"). Over-long ids are left out, a long history keeps its first
// and latest ids, and a long subject is folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_threading_ids_and_subjects_never_break_a_reply() {
    let sink = SmtpSink::start_async().await;
    let mut m = mail("zoe@acme.example");
    let huge = format!("<{}@evil.example>", "x".repeat(10_000));
    m.in_reply_to = Some(huge.clone());
    m.references = (0..300)
        .map(|i| format!("<m{i}@acme.example>"))
        .chain([huge])
        .collect();
    m.subject = format!("Re: {}", "long words ".repeat(500));
    let msg = mime::build(&m).expect("build");
    let accepted = smtp(&sink).send(&msg).await.expect("sent");
    assert_eq!(accepted.code, "250");
    let raw = String::from_utf8(msg.formatted()).expect("utf-8");
    let longest = raw.lines().map(str::len).max().unwrap_or_default();
    assert!(longest <= 998, "a line of {longest} characters");
    let refs: String = raw
        .split("\r\n")
        .skip_while(|l| !l.starts_with("References:"))
        .take_while(|l| l.starts_with("References:") || l.starts_with(' '))
        .collect();
    let ids: Vec<&str> = refs.split_whitespace().skip(1).collect();
    assert_eq!(ids.len(), mime::MAX_REFERENCES, "{refs}");
    assert_eq!(ids[0], "<m0@acme.example>");
    assert_eq!(ids[ids.len() - 1], "<m299@acme.example>");
    assert!(!raw.contains("xxxxxxxxxx"), "the over-long id is left out");
}
