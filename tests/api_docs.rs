//! Every `curl` example of docs/api.md, run as written against a running API with a worker
//! behind it: the documentation cannot drift from the server.

mod common;

use std::process::Command;

use base64::Engine;
use common::api::{SUPPORT, env};
use common::mail::TestMail;
use common::{Backend, TestDb};
use reqwest::Method;
use serde_json::json;

/// The ```sh blocks of `markdown`.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_works() {
    let db = TestDb::new(Backend::Sqlite).await;
    let e = env(&db).await;
    e.write(
        Method::PUT,
        "/api/v1/customers/acme",
        json!({"name": "ACME", "contacts": [{"kind": "email", "address": "ada@acme.example", "name": "Ada"}]}),
    )
    .await;
    for n in 0..2 {
        e.mail(&TestMail::new(
            "ada@acme.example",
            SUPPORT,
            &format!("Toner {n}"),
            "empty",
        ))
        .await;
    }
    let raw = format!(
        "From: Ada <ada@acme.example>\r\nTo: {SUPPORT}\r\nSubject: Printer on fire\r\nMessage-ID: <docs-1@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nIt is on fire.\r\n--b\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4")
    );
    let thread = e.raw_mail(raw.as_bytes(), "docs-1@acme.example").await;
    let feed = e.get(&format!("/api/v1/threads/{thread}/feed")).await;
    let message = feed["items"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["type"] == "message"))
        .expect("the mail")
        .clone();
    let cursor = e.get("/api/v1/threads?limit=2").await["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let blocks = shell_blocks(&docs);
    assert!(blocks.len() >= 12, "found only {} examples", blocks.len());
    let dir = tempfile::tempdir().expect("dir");
    for block in blocks {
        // The version as it is now: an earlier example may have changed the thread.
        let version =
            e.get(&format!("/api/v1/threads/{thread}")).await["thread"]["version"].to_string();
        let out = Command::new("sh")
            .arg("-c")
            .arg(&block)
            .current_dir(dir.path())
            .env("API", &e.base)
            .env("KEY", &e.write)
            .env("THREAD", &thread)
            .env("MESSAGE", message["id"].as_str().unwrap_or(""))
            .env(
                "ATTACHMENT",
                message["attachments"][0]["id"].as_str().unwrap_or(""),
            )
            .env("CURSOR", &cursor)
            .env("VERSION", version)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "this example of docs/api.md failed:\n{block}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("invoice.pdf")).expect("downloaded"),
        b"%PDF-1.4"
    );
    assert!(
        std::fs::read(dir.path().join("mail.eml"))
            .expect("raw")
            .starts_with(b"From: Ada")
    );
    e.stop().await;
}
