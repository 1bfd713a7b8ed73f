//! Broker test support: a fresh `GOCHAT_AMQP_PREFIX` per test (so tests run in parallel on
//! the machine's RabbitMQ), raw publishing, an event tap, and cleanup of every queue and
//! exchange the prefix created.

use std::time::{Duration, Instant};

use gochat::queue::Names;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub fn amqp_url() -> String {
    std::env::var("GOCHAT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A message taken from a queue.
#[derive(Debug)]
pub struct Got {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub headers: FieldTable,
    pub routing_key: String,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.inner().get(name).map(|v| match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            AMQPValue::LongLongInt(i) => i.to_string(),
            AMQPValue::LongInt(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }
}

pub struct TestBroker {
    pub prefix: String,
    pub names: Names,
    conn: Connection,
    channel: Channel,
    taps: Vec<String>,
    /// Set by `cleanup`; otherwise (a test that panicked) the prefix is swept on drop, so
    /// failed runs do not leave queues behind on the machine's broker.
    cleaned: std::sync::atomic::AtomicBool,
}

impl TestBroker {
    pub async fn new() -> TestBroker {
        let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ reachable");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        TestBroker {
            names: Names::new(&prefix),
            prefix,
            conn,
            channel,
            taps: Vec::new(),
            cleaned: Default::default(),
        }
    }

    /// Declares the contract's topology for the prefix, as the worker does on connecting.
    pub async fn declare(&self, amqp: &gochat::config::AmqpConfig) {
        gochat::queue::topology::declare(&self.conn, &self.names, amqp)
            .await
            .expect("topology");
    }

    /// Publishes a job as another tool would: persistent JSON with `message_id` (if given).
    pub async fn publish(&self, kind: &str, message_id: Option<&str>, body: &[u8]) {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                self.names.jobs_exchange().as_str().into(),
                kind.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "broker refused the test publish");
    }

    /// Publishes a received message again as job `kind`, headers and all, as ops replaying a
    /// dead letter with a shovel would.
    pub async fn republish(&self, kind: &str, got: &Got) {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(got.headers.clone());
        if let Some(id) = &got.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        let confirm = self
            .channel
            .basic_publish(
                self.names.jobs_exchange().as_str().into(),
                kind.into(),
                BasicPublishOptions::default(),
                &got.body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "broker refused the replay");
    }

    pub async fn publish_json(&self, kind: &str, message_id: &str, payload: &serde_json::Value) {
        self.publish(kind, Some(message_id), payload.to_string().as_bytes())
            .await;
    }

    /// A queue bound to every event of the prefix's events exchange (declare after the
    /// worker declared its topology).
    pub async fn tap_events(&mut self) -> String {
        let q = format!("{}test.events.{}", self.prefix, self.taps.len());
        self.channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare tap");
        self.channel
            .queue_bind(
                q.as_str().into(),
                self.names.events_exchange().as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind tap");
        self.taps.push(q.clone());
        q
    }

    /// The next message on `queue`, waiting up to `timeout`.
    pub async fn get(&self, queue: &str, timeout: Duration) -> Option<Got> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                return Some(Got {
                    body: m.delivery.data.clone(),
                    message_id: m
                        .delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.to_string()),
                    headers: m.delivery.properties.headers().clone().unwrap_or_default(),
                    routing_key: m.delivery.routing_key.to_string(),
                });
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let n = gochat::queue::topology::depth(&ch, queue)
            .await
            .unwrap_or(0);
        let _ = ch.close(200, "ok".into()).await;
        n
    }

    /// Deliveries of `queue` taken by a consumer and not yet acked (from `rabbitmqctl`,
    /// which reads the queue itself: no statistics interval in between).
    pub async fn unacked(&self, queue: &str) -> Option<u64> {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "messages_unacknowledged"])
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
            })
    }

    /// Deletes every queue and exchange of the prefix: the retry queues for `retry_delays`
    /// and for the default delays too, since a worker process started on this prefix
    /// without the test's delays declares those.
    pub async fn cleanup(&self, retry_delays: &[Duration]) {
        self.cleaned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut amqp = gochat::config::AmqpConfig::default();
        for d in retry_delays {
            if !amqp.retry_delays.contains(d) {
                amqp.retry_delays.push(*d);
            }
        }
        let _ = gochat::queue::topology::delete(&self.conn, &self.names, &amqp).await;
        let ch = self.conn.create_channel().await.expect("channel");
        for q in &self.taps {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch.close(200, "ok".into()).await;
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.cleaned.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let prefix = self.prefix.clone();
        // A thread of its own: drop may run inside the test's runtime, which cannot block.
        let _ = std::thread::spawn(move || sweep(&prefix)).join();
    }
}

/// Deletes every queue whose name starts with `prefix` (found with `rabbitmqctl`) and the
/// prefix's exchanges.
pub fn sweep(prefix: &str) {
    let Ok(out) = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name"])
        .output()
    else {
        return;
    };
    let queues: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|q| q.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
        else {
            return;
        };
        let Ok(ch) = conn.create_channel().await else {
            return;
        };
        for q in queues {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let names = Names::new(prefix);
        for x in [
            names.jobs_exchange(),
            names.events_exchange(),
            names.retry_exchange(),
        ] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "swept".into()).await;
    });
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker configuration every broker test starts from: the test's database, the
/// machine's RabbitMQ under the test's prefix, the shipped workflows.
pub fn worker_config(db: &super::TestDb, broker: &TestBroker) -> gochat::config::Config {
    let mut c = gochat::config::Config {
        database: db.config(),
        ..Default::default()
    };
    c.amqp.url = gochat::config::SecretUrl::new(amqp_url());
    c.amqp.prefix = broker.prefix.clone();
    c.workflows.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    c
}

/// Starts an in-process worker on `clock` and waits until it is connected.
pub async fn start_worker(
    config: gochat::config::Config,
    clock: gochat::clock::SharedClock,
) -> gochat::worker::Worker {
    let w = gochat::worker::Worker::start(
        config,
        clock,
        gochat::metrics::Metrics::new(&gochat::workflow::Registry::builtin().names())
            .expect("metrics"),
    )
    .await
    .expect("worker starts");
    assert!(
        w.broker.connected(Duration::from_secs(20)).await.is_some(),
        "worker connected"
    );
    w
}

impl TestBroker {
    /// The next dead letter, which must be job `message_id`; returns its reason.
    pub async fn dead_letter_reason(&self, message_id: &str, timeout: Duration) -> String {
        let dead = self
            .get(&self.names.dead_letters(), timeout)
            .await
            .unwrap_or_else(|| panic!("no dead letter (expected {message_id})"));
        assert_eq!(dead.message_id.as_deref(), Some(message_id));
        dead.header("x-gochat-reason").unwrap_or_default()
    }
}

/// A job for [`publish_until_confirmed`]: its kind (the routing key), message id and body.
pub struct Outgoing<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub body: &'a [u8],
}

/// Publishes each job until the broker confirms it (acked, not returned unroutable),
/// reconnecting as needed and sleeping `pace` after each — what any at-least-once publisher
/// does through a broker outage. Returns how many attempts failed and were retried.
pub async fn publish_until_confirmed<'a>(
    url: &str,
    names: &Names,
    jobs: impl IntoIterator<Item = Outgoing<'a>>,
    pace: Duration,
) -> usize {
    let mut failed = 0;
    let mut channel: Option<(Connection, Channel)> = None;
    for job in jobs {
        loop {
            if channel.is_none() {
                let connected = async {
                    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
                    let ch = conn.create_channel().await?;
                    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                        .await?;
                    Ok::<_, lapin::Error>((conn, ch))
                };
                match tokio::time::timeout(Duration::from_secs(5), connected).await {
                    Ok(Ok(c)) => channel = Some(c),
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some((_, ch)) = &channel else { continue };
            let confirmed = async {
                ch.basic_publish(
                    names.jobs_exchange().as_str().into(),
                    job.kind.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    job.body,
                    BasicProperties::default()
                        .with_message_id(job.id.into())
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await?
                .await
            };
            let ok = match tokio::time::timeout(Duration::from_secs(5), confirmed).await {
                Ok(Ok(c)) => c.is_ack() && c.take_message().is_none(),
                _ => false,
            };
            if ok {
                break;
            }
            failed += 1;
            channel = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(pace).await;
    }
    if let Some((conn, _)) = channel {
        let _ = conn.close(200, "done".into()).await;
    }
    failed
}
