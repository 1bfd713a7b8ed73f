//! The whole inbox API fuzzed from its own OpenAPI document with Schemathesis (PyPI
//! `schemathesis`, installed by `.ci/run`), against a running server with a worker behind
//! it, on both databases: no 5xx, every response as documented, every documented request
//! accepted, every undocumented one refused. Bounded: a fixed seed and example count.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::TestDb;
use common::api::{SUPPORT, env_with};
use reqwest::Method;

/// Examples per operation and phase: about a minute per database on two cores.
const EXAMPLES: &str = "25";

both_backends!(schemathesis_finds_nothing, |db: TestDb| async move {
    let found = Command::new("schemathesis").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "schemathesis is not installed: `python3 -m pip install schemathesis` (or run .ci/run, which does)"
    );
    // Short waits: a write with `?wait=` to a job that never finishes costs at most this.
    let e = env_with(&db, |c| c.api.max_wait = Duration::from_millis(500)).await;
    let raw = format!(
        "From: Ada <ada@acme.example>\r\nTo: {SUPPORT}\r\nSubject: Invoice\r\nMessage-ID: <fuzz-1@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4")
    );
    let thread = e.raw_mail(raw.as_bytes(), "fuzz-1@acme.example").await;
    let feed = e.get(&format!("/api/v1/threads/{thread}/feed")).await;
    let message = feed["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["type"] == "message"))
        .expect("the mail in the feed")
        .clone();
    let (_, write) = gochat::store::api_keys::create(
        e.store.conn(),
        "fuzz",
        gochat::store::api_keys::Scope::Write,
        chrono::Utc::now(),
    )
    .await
    .expect("key");

    let support = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/schemathesis.toml"
    );
    let report = tempfile::tempdir().expect("report dir");
    let url = format!("{}/api/v1/openapi.json", e.base);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            // Its cache (`.schemathesis/`) goes with the report, not into the checkout.
            .current_dir(report.path())
            .args(["--config-file", support, "run", &url])
            .args([
                "--checks",
                "all",
                "--max-examples",
                EXAMPLES,
                "--seed",
                "20261207",
            ])
            .args(["--request-timeout", "10", "--max-response-time", "5"])
            .arg("--header")
            .arg(format!("Authorization: Bearer {write}"))
            .arg("--report-dir")
            .arg(report.path())
            .env("GOCHAT_FUZZ_THREAD", &thread)
            .env("GOCHAT_FUZZ_MESSAGE", message["id"].as_str().unwrap_or(""))
            .env(
                "GOCHAT_FUZZ_ATTACHMENT",
                message["attachments"][0]["id"].as_str().unwrap_or(""),
            )
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis task");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server is still fine afterwards.
    let (status, _) = e
        .call(Method::GET, "/api/v1/threads", Some(&e.read), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    e.stop().await;
});
