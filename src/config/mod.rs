//! The worker's configuration: one TOML file (`config/default.toml` documents every key),
//! then the `GOCHAT_*` environment overrides of the public contract.
//!
//! Every key has a built-in default equal to the shipped `config/default.toml`, so the worker
//! starts without any file; a test keeps the two in step. Loading validates everything up
//! front and reports the file, the key, what was expected and what was found, because a worker
//! that fails an hour later on a typo is worse than one that refuses to start.

mod load;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use load::{ConfigError, ConfigSource, load, load_from_str};
pub use secret::{SecretUrl, redact};

/// The whole configuration, as loaded and validated.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub http: HttpConfig,
    pub smtp: SmtpConfig,
    pub mail: MailConfig,
    pub lmtp: LmtpConfig,
    pub api: ApiConfig,
    pub workflows: WorkflowsConfig,
    pub scheduler: SchedulerConfig,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
}

/// `[database]`: where the state lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://...` (embedded default) or `postgres://...` (production).
    pub url: SecretUrl,
    /// Pool size. SQLite serialises writers anyway; PostgreSQL benefits from one connection
    /// per concurrent job plus a few for the scheduler and the outbox relay.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before the job is retried.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for the lock before failing.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Apply pending migrations at `gochat run` instead of refusing to start.
    pub auto_migrate: bool,
    /// How long published outbox rows are kept (to see what went out, and when) before
    /// the relay deletes them; unpublished rows are never deleted.
    #[serde(with = "humantime_serde")]
    pub outbox_retention: Duration,
    /// How long the record of a dead-lettered job is kept (what `?wait=` answers with)
    /// before the relay deletes it; the dead-letter queue keeps the job itself.
    #[serde(with = "humantime_serde")]
    pub dead_jobs_retention: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_DATABASE_URL),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
            auto_migrate: false,
            outbox_retention: Duration::from_secs(24 * 3600),
            dead_jobs_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The embedded default: a SQLite file under `./data/`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/gochat.db?mode=rwc";

/// `[amqp]`: the broker and the queue topology.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    pub url: SecretUrl,
    /// Prepended to every exchange and queue name, so several environments (or parallel
    /// tests) can share one broker without seeing each other's jobs.
    pub prefix: String,
    /// `classic` or `quorum` (replicated; the production choice on a cluster).
    pub queue_type: QueueType,
    /// How long to wait for a publisher confirm before the publish counts as failed.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// The retry ladder: the delay before each retry of a job that failed transiently. A job
    /// that fails once more after the last rung goes to the dead letters.
    #[serde(with = "duration_list")]
    pub retry_delays: Vec<Duration>,
    /// Defaults for every job kind's consumer: deliveries held unacknowledged, batches run
    /// at once, and the most jobs committed in one transaction (a batch forms only from
    /// deliveries already waiting, so a quiet queue still runs each job at once).
    pub prefetch: u16,
    pub concurrency: usize,
    pub batch_size: usize,
    /// Per-kind overrides, keyed by job kind (`inbound-mail`, ...).
    pub consumers: BTreeMap<String, ConsumerConfig>,
    /// The job kinds this worker consumes; empty: every kind that has a workflow. Lets ops
    /// run dedicated workers per kind (say, outbound delivery scaled apart).
    pub consume: Vec<String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_AMQP_URL),
            prefix: String::new(),
            queue_type: QueueType::Classic,
            confirm_timeout: Duration::from_secs(10),
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ],
            // Four batches of up to 64 beat eight of up to 32 on 2 cores: fewer transactions
            // compete for the cores and more jobs share each commit and ack (the figures are
            // in docs/BENCHMARKS.md, `bench runtime`, session 16).
            prefetch: 512,
            concurrency: 4,
            batch_size: 64,
            consumers: BTreeMap::new(),
            consume: Vec::new(),
        }
    }
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Per-kind consumer tuning; unset fields fall back to `[amqp]`'s.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub prefetch: Option<u16>,
    pub concurrency: Option<usize>,
    pub batch_size: Option<usize>,
    /// Most of the kind's jobs inside a database transaction at once (default: all of
    /// `concurrency`). Lets a kind that waits on something else between its transactions
    /// (outbound delivery: the mail server) keep many jobs going without taking more of the
    /// database than the other kinds when it is busy.
    pub db_concurrency: Option<usize>,
}

/// One kind's consumer settings, with the `[amqp]` defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub prefetch: u16,
    pub concurrency: usize,
    pub batch_size: usize,
    /// At most `concurrency`.
    pub db_concurrency: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

/// `[http]`: health, readiness and metrics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9187)),
        }
    }
}

/// `[smtp]`: outbound delivery.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain), `smtp://...?tls=required` (STARTTLS) or `smtps://` (TLS);
    /// credentials as `smtp://user:pass@host`.
    pub url: SecretUrl,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delivery attempts for temporary (4xx, connection) failures before the message fails.
    pub max_attempts: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("smtp://127.0.0.1:2525"),
            timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// `[mail]`: addresses, identifiers and limits of the mail we send and accept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The support address customers write to and that replies come from.
    pub from_address: String,
    pub from_name: String,
    /// Domain of the Message-IDs we generate.
    pub domain: String,
    /// Largest raw message accepted, in bytes.
    pub max_size: u64,
    /// How a thread's reply token appears in subjects; `{token}` marks where. Matched on
    /// inbound mail, so keep it distinctive.
    pub subject_token: String,
    /// Mail loops: more than `loop_limit` mails from one sender within `loop_window` are
    /// stored but trigger nothing (no new thread, no reopening, no acknowledgement).
    pub loop_limit: u32,
    #[serde(with = "humantime_serde")]
    pub loop_window: Duration,
    /// Mail domains whose new senders join an existing customer (by external id) instead of
    /// each getting a customer of their own, e.g. `"acme.example" = "acme"`.
    pub domain_customers: BTreeMap<String, String>,
    /// The authserv-id of the MTA we trust (its `Authentication-Results` header, RFC 8601):
    /// a sender its DMARC/SPF/DKIM results fail is handled as a stranger. Unset: no mail's
    /// authentication is read.
    pub authserv_id: Option<String>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from_address: "support@gochat.example".into(),
            from_name: "Go!Chat Support".into(),
            domain: "gochat.example".into(),
            max_size: 25 * 1024 * 1024,
            subject_token: "[#{token}]".into(),
            loop_limit: 30,
            loop_window: Duration::from_secs(3600),
            domain_customers: BTreeMap::new(),
            authserv_id: None,
        }
    }
}

impl MailConfig {
    /// The subject tag for `token` (`[#<token>]` by default).
    pub fn subject_tag(&self, token: &str) -> String {
        self.subject_token.replace("{token}", token)
    }
}

/// `[lmtp]`: `gochat lmtp`, the LMTP server the MTA delivers to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LmtpConfig {
    /// Where to listen; loopback by default, since LMTP has no authentication.
    pub addr: SocketAddr,
    /// A Unix socket to listen on as well (Postfix `lmtp:unix:`, Exim's `lmtp` transport):
    /// file permissions then say who may deliver.
    pub socket: Option<PathBuf>,
    /// Sessions served at once; one more is answered `421` and closed, so the MTA retries
    /// later instead of waiting on a connection nobody serves.
    pub max_connections: usize,
    /// How long a session may wait for its next command before it is closed (`421`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a message in DATA may go without a byte arriving before the session is
    /// dropped (the mail stays with the MTA).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 2424)),
            socket: None,
            max_connections: 100,
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(180),
        }
    }
}

/// `[api]`: the inbox HTTP API (`gochat api`, or `gochat run` with `enabled`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `gochat run` serves the API too. `gochat api` serves it whatever this says.
    pub enabled: bool,
    /// Where to listen; separate from the ops listener so `/metrics` and `/healthz` need not
    /// be exposed where the API is.
    pub addr: SocketAddr,
    /// Largest request body accepted (a reply with base64 attachments is the largest).
    pub max_body: u64,
    /// Longest a handler may take before the request is answered `503`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest `?wait=` a write may ask for.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 25 << 20,
            request_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// `[workflows]`: where the job workflows, lifecycles and templates live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowsConfig {
    pub dir: PathBuf,
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("workflows"),
        }
    }
}

/// `[scheduler]`: the durable timer scheduler.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often due timers are claimed; bounds the firing delay.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most timers claimed per round.
    pub batch: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            batch: 500,
        }
    }
}

/// `[runtime]`: the async runtime every command runs on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads running jobs, I/O and timers; `None`: one per core (or `TOKIO_WORKER_THREADS`).
    /// The worker mostly waits on the database and the broker, so where it shares a small
    /// machine with them, fewer threads cost less CPU than one per core (docs/BENCHMARKS.md).
    pub worker_threads: Option<usize>,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` for terminals, `json` for log collectors.
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is unset.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl AmqpConfig {
    /// Effective prefetch and concurrency of one job kind's consumer: the kind's override,
    /// else the kind's built-in setting ([`built_in_consumer`]), else `[amqp]`'s.
    pub fn consumer(&self, kind: &str) -> ConsumerSettings {
        let o = self.consumers.get(kind);
        let b = built_in_consumer(kind);
        let concurrency = o
            .and_then(|c| c.concurrency)
            .or(b.concurrency)
            .unwrap_or(self.concurrency);
        ConsumerSettings {
            prefetch: o
                .and_then(|c| c.prefetch)
                .or(b.prefetch)
                .unwrap_or(self.prefetch),
            concurrency,
            batch_size: o
                .and_then(|c| c.batch_size)
                .or(b.batch_size)
                .unwrap_or(self.batch_size),
            // The built-in bound shares the database with the other kinds this worker runs:
            // a worker that runs this kind alone has none to share it with. It never exceeds
            // a concurrency configured lower.
            db_concurrency: o
                .and_then(|c| c.db_concurrency)
                .or(b.db_concurrency.filter(|_| self.consume != [kind]))
                .unwrap_or(concurrency)
                .min(concurrency),
        }
    }
}

/// Settings a kind has unless configured: outbound delivery waits on the mail server rather
/// than the CPU, so it keeps more deliveries going at once than the batched kinds (it is
/// also the SMTP connection pool's size), one job per transaction, but only one of them in a
/// database transaction at a time while the worker runs other kinds too: eight
/// transactions at once took the database from the inbound mails under load. A
/// `batch_size` above 1 delivers batches (three commits a batch instead of three a
/// message), faster, but it takes machine time from the inbound mails sharing the cores,
/// so it is for workers that only deliver (`consume = ["outbound-message"]`). The figures
/// behind both choices are in docs/BENCHMARKS.md (`bench e2e`).
pub fn built_in_consumer(kind: &str) -> ConsumerConfig {
    match kind {
        "outbound-message" => ConsumerConfig {
            concurrency: Some(8),
            batch_size: Some(1),
            db_concurrency: Some(1),
            ..ConsumerConfig::default()
        },
        _ => ConsumerConfig::default(),
    }
}

/// `["1s", "10s", "1m"]` as a list of durations (humantime_serde handles single values only).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| {
                    D::Error::custom(format!("{s:?} is not a duration like \"10s\": {e}"))
                })
            })
            .collect()
    }
}
