//! Inbound mail parsing and classification over a corpus of real and deliberately broken
//! messages (`tests/data/corpus/`, see its README for sources and licenses). Pure: no
//! database, broker or network.
//!
//! Every file must parse without a panic (and to `Ok` unless it is truly empty) and be
//! classified; the folder rules are asserted (`bounces/` are all bounces, `auto-replies/`
//! auto-replies, `feedback-reports/` feedback reports, nothing in `not-bounces/` a bounce),
//! and the per-file results are compared with `tests/data/corpus/expected.json`, field by
//! field, with a readable list of the files whose results changed.
//!
//! When a change in behaviour is intended, rewrite the expected file and review its diff:
//!
//! ```text
//! GOCHAT_UPDATE_EXPECTED=1 cargo test --test mail_corpus
//! git diff tests/data/corpus/expected.json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gochat::mail::classify::{Envelope, MailClass, classify};
use gochat::mail::parse::{ParseError, parse};
use serde_json::{Value, json};

const FOLDERS: &[&str] = &[
    "cpython-email",
    "bounces",
    "auto-replies",
    "feedback-reports",
    "not-bounces",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus")
}

/// Every message file of the corpus as `(folder/file, bytes)`, sorted.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for folder in FOLDERS {
        let dir = corpus_dir().join(folder);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LICENSE")
            .collect();
        names.sort();
        for name in names {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            out.push((format!("{folder}/{name}"), bytes));
        }
    }
    out
}

/// What one file yields, as stored in expected.json.
fn summary(raw: &[u8]) -> Value {
    let mail = match parse(raw) {
        Ok(m) => m,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let class = classify(
        &mail,
        raw,
        &Envelope {
            from: None,
            recipients: &[],
        },
    );
    let (name, recipients, status, original, permanent) = match &class {
        MailClass::Normal => ("normal", vec![], None, None, None),
        MailClass::AutoReply { .. } => ("auto_reply", vec![], None, None, None),
        MailClass::FeedbackReport { .. } => ("feedback_report", vec![], None, None, None),
        MailClass::Bounce(b) => (
            "bounce",
            b.recipients.clone(),
            b.status.clone(),
            b.original_message_id.clone(),
            Some(b.permanent),
        ),
    };
    let mut v = json!({
        "class": name,
        "recipients": recipients,
        "status": status,
        "original_message_id": original,
        "message_id": mail.message_id,
        "attachments": mail.attachments.len(),
    });
    if let Some(p) = permanent {
        v["permanent"] = json!(p);
    }
    v
}

#[test]
fn corpus_parses_classifies_and_matches_expected() {
    let files = corpus();
    assert!(
        files.len() > 350,
        "corpus incomplete: {} files",
        files.len()
    );
    let mut actual: BTreeMap<String, Value> = BTreeMap::new();
    let mut folder_errors = Vec::new();
    let (mut bounces, mut with_recipient, mut with_status, mut with_original) = (0, 0, 0, 0);
    for (name, raw) in &files {
        let parsed = parse(raw);
        match &parsed {
            Ok(_) => {}
            Err(ParseError::Empty) if raw.iter().all(u8::is_ascii_whitespace) => {}
            Err(e) => panic!("{name}: refused: {e}"),
        }
        let s = summary(raw);
        let class = s["class"].as_str().unwrap_or("").to_owned();
        let folder = name.split('/').next().unwrap_or("");
        let wanted = match folder {
            "bounces" => Some(class == "bounce"),
            "auto-replies" => Some(class == "auto_reply"),
            "feedback-reports" => Some(class == "feedback_report"),
            "not-bounces" => Some(class != "bounce"),
            _ => None,
        };
        if wanted == Some(false) {
            folder_errors.push(format!("{name}: classified {class}"));
        }
        if folder == "bounces" && class == "bounce" {
            bounces += 1;
            with_recipient += usize::from(!s["recipients"].as_array().unwrap().is_empty());
            with_status += usize::from(!s["status"].is_null());
            with_original += usize::from(!s["original_message_id"].is_null());
        }
        actual.insert(name.clone(), s);
    }
    println!(
        "bounces: {bounces}; with a recipient: {with_recipient}; with a status: {with_status}; \
         with the original Message-ID: {with_original}"
    );
    assert!(
        folder_errors.is_empty(),
        "folder rules broken:\n{}",
        folder_errors.join("\n")
    );
    // Floors: the figures reached when the rules were written; a drop is a regression.
    assert!(
        with_recipient >= 303,
        "only {with_recipient} bounces yield a recipient"
    );
    assert!(
        with_status >= 234,
        "only {with_status} bounces yield a status"
    );
    assert!(
        with_original >= 272,
        "only {with_original} bounces yield the original Message-ID"
    );

    let path = corpus_dir().join("expected.json");
    let actual = Value::Object(actual.into_iter().collect());
    if std::env::var("GOCHAT_UPDATE_EXPECTED").as_deref() == Ok("1") {
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        println!("rewrote {}", path.display());
        return;
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (GOCHAT_UPDATE_EXPECTED=1 creates it)",
                path.display()
            )
        }))
        .unwrap();
    let diff = diff(&expected, &actual);
    assert!(
        diff.is_empty(),
        "{} file(s) differ from expected.json (GOCHAT_UPDATE_EXPECTED=1 rewrites it):\n{}",
        diff.len(),
        diff.join("\n")
    );
}

/// One line per changed field: `file: field: expected → actual`.
fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let e = expected.as_object().unwrap_or(&empty);
    let a = actual.as_object().unwrap_or(&empty);
    let mut out = Vec::new();
    for (file, want) in e {
        let Some(got) = a.get(file) else {
            out.push(format!("{file}: missing from the corpus"));
            continue;
        };
        let (w, g) = (
            want.as_object().unwrap_or(&empty),
            got.as_object().unwrap_or(&empty),
        );
        let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (wv, gv) = (
                w.get(k).unwrap_or(&Value::Null),
                g.get(k).unwrap_or(&Value::Null),
            );
            if wv != gv {
                out.push(format!("{file}: {k}: expected {wv} → got {gv}"));
            }
        }
    }
    for file in a.keys().filter(|f| !e.contains_key(*f)) {
        out.push(format!("{file}: new file, not in expected.json"));
    }
    out
}
