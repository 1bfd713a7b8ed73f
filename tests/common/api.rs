//! A worker and an inbox API server on one test database and broker prefix, driven by a real
//! HTTP client (tests/api.rs, tests/api_fuzz.rs).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use gochat::clock::SystemClock;
use gochat::store::Store;
use gochat::store::api_keys::{self, Scope};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use super::TestDb;
use super::broker::{TestBroker, eventually, start_worker};
use super::mail::TestMail;
use super::smtp::SmtpSink;

pub const SUPPORT: &str = "support@gochat.example";
pub const WAIT: Duration = Duration::from_secs(30);

/// A worker and an API server on one test database and broker prefix, with a read and a
/// write key.
pub struct Env {
    pub base: String,
    pub http: Client,
    pub read: String,
    pub write: String,
    pub store: Store,
    pub broker: TestBroker,
    pub sink: SmtpSink,
    pub worker: gochat::worker::Worker,
    pub stop: gochat::shutdown::ShutdownTrigger,
    pub api: gochat::api::Running,
}

pub async fn env(db: &TestDb) -> Env {
    env_with(db, |_| {}).await
}

/// [`env`] with the configuration changed by `tune` first.
pub async fn env_with(db: &TestDb, tune: impl FnOnce(&mut gochat::config::Config)) -> Env {
    let sink = SmtpSink::start_async().await;
    let broker = TestBroker::new().await;
    let store = db.store().await;
    let mut config = super::broker::worker_config(db, &broker);
    config.smtp.url = gochat::config::SecretUrl::new(sink.url());
    config.amqp.retry_delays = vec![Duration::from_millis(300); 3];
    config.api.addr = "127.0.0.1:0".parse().expect("addr");
    tune(&mut config);
    let worker = start_worker(config.clone(), Arc::new(SystemClock)).await;
    let (stop, listener) = gochat::shutdown::channel();
    let api = gochat::api::start(&config, store.clone(), Arc::new(SystemClock), listener)
        .await
        .expect("API starts");
    let now = chrono::Utc::now();
    let (_, read) = api_keys::create(store.conn(), "reader", Scope::Read, now)
        .await
        .expect("key");
    let (_, write) = api_keys::create(store.conn(), "writer", Scope::Write, now)
        .await
        .expect("key");
    Env {
        base: format!("http://{}", api.addr),
        http: Client::new(),
        read,
        write,
        store,
        broker,
        sink,
        worker,
        stop,
        api,
    }
}

impl Env {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.expect("body");
        if !status.is_success() {
            assert_eq!(ct, "application/problem+json", "{status} {path}: {text}");
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, Some(&self.read), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// A write with `?wait=5s` that must be committed.
    pub async fn write(&self, method: Method, path: &str, body: Value) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, got) = self
            .call(
                method.clone(),
                &format!("{path}{sep}wait=5s"),
                Some(&self.write),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {got}");
        got
    }

    /// Delivers `mail` through the worker and returns the thread it landed on.
    pub async fn mail(&self, mail: &TestMail) -> String {
        self.raw_mail(&mail.bytes(), &mail.id()).await
    }

    pub async fn raw_mail(&self, raw: &[u8], message_id: &str) -> String {
        let job = json!({"schema": "inbound-mail/v1",
            "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
            "recipients": [SUPPORT]});
        let id = format!("in-{}", uuid::Uuid::now_v7());
        self.broker.publish_json("inbound-mail", &id, &job).await;
        let store = &self.store;
        eventually(WAIT, "the mail's thread", || async {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            gochat_entities::messages::Entity::find()
                .filter(gochat_entities::messages::Column::MessageIdHeader.eq(message_id))
                .one(store.conn())
                .await
                .expect("query")
                .map(|m| m.thread_id.to_string())
        })
        .await
    }

    pub async fn ids(&self, path: &str) -> Vec<String> {
        self.get(path).await["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    }

    pub async fn stop(self) {
        self.stop.trigger();
        self.api.stopped().await;
        self.worker.stop().await;
        self.broker.cleanup(&[Duration::from_millis(300)]).await;
        drop(self.sink);
    }
}
