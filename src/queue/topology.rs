//! Declares the exchanges and queues of the contract. Declaring is idempotent, so every
//! worker does it on every (re)connection and ops never run a set-up script.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use super::{Names, QueueError};
use crate::config::{AmqpConfig, QueueType};
use crate::contract::JOB_KINDS;

/// The header a retried job carries; the retry exchange routes on it. Not `x-`-prefixed on
/// purpose: RabbitMQ's headers exchange ignores `x-` headers when matching, so a binding on
/// one would match every message and a retry would land in every retry queue.
pub const RETRY_DELAY_HEADER: &str = "gochat-retry-delay-ms";

/// Messages ready in `queue`, asked with a passive declare (which fails, and closes the
/// channel, if the queue does not exist).
pub async fn depth(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// Whether exchange `name` exists, asked with a passive declare on a channel of its own:
/// a publish to a missing exchange closes its channel, and with it every other publish in
/// flight there. The default exchange (`""`) always exists.
pub async fn exchange_exists(conn: &Connection, name: &str) -> Result<bool, lapin::Error> {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    if name.is_empty() {
        return Ok(true);
    }
    let ch = conn.create_channel().await?;
    let probe = ch
        .exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match probe {
        Ok(()) => {
            let _ = ch.close(200, "probed".into()).await;
            Ok(true)
        }
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(p)
                if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) =>
            {
                Ok(false)
            }
            _ => Err(e),
        },
    }
}

/// Declares everything on a fresh channel of `conn` (a failed declaration closes its channel).
pub async fn declare(
    conn: &Connection,
    names: &Names,
    config: &AmqpConfig,
) -> Result<(), QueueError> {
    let ch = conn.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    exchange(&ch, &names.jobs_exchange(), ExchangeKind::Direct, durable).await?;
    exchange(&ch, &names.events_exchange(), ExchangeKind::Topic, durable).await?;
    exchange(&ch, &names.retry_exchange(), ExchangeKind::Headers, durable).await?;

    for kind in JOB_KINDS {
        let q = names.queue(kind);
        queue(&ch, &q, job_queue_args(names, config.queue_type)).await?;
        ch.queue_bind(
            q.as_str().into(),
            names.jobs_exchange().into(),
            (*kind).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    queue(&ch, &names.dead_letters(), queue_args(config.queue_type)).await?;

    for delay in &config.retry_delays {
        let q = names.retry_queue(*delay);
        let mut args = queue_args(config.queue_type);
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(millis(*delay)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(names.jobs_exchange().into()),
        );
        queue(&ch, &q, args).await?;
        let mut bind = FieldTable::default();
        bind.insert("x-match".into(), AMQPValue::LongString("all".into()));
        bind.insert(RETRY_DELAY_HEADER.into(), retry_header_value(*delay));
        ch.queue_bind(
            q.as_str().into(),
            names.retry_exchange().into(),
            ShortString::from(""),
            QueueBindOptions::default(),
            bind,
        )
        .await?;
    }
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}

/// Deletes every queue and exchange [`declare`] creates for `names` (queues with their
/// messages). For throwaway prefixes: benchmarks and tests, never a production prefix.
pub async fn delete(
    conn: &Connection,
    names: &Names,
    config: &AmqpConfig,
) -> Result<(), QueueError> {
    let ch = conn.create_channel().await?;
    let mut queues: Vec<String> = JOB_KINDS.iter().map(|k| names.queue(k)).collect();
    queues.push(names.dead_letters());
    queues.extend(config.retry_delays.iter().map(|d| names.retry_queue(*d)));
    for q in queues {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for x in [
        names.jobs_exchange(),
        names.events_exchange(),
        names.retry_exchange(),
    ] {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = ch.close(200, "topology deleted".into()).await;
    Ok(())
}

/// The value of [`RETRY_DELAY_HEADER`] for `delay`, identical in bindings and messages.
pub fn retry_header_value(delay: Duration) -> AMQPValue {
    AMQPValue::LongString(LongString::from(millis(delay).to_string()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A job queue's arguments: its type, and the dead letters as where the broker itself puts a
/// message it gives up on. The worker never rejects a job (it publishes it to the retry
/// ladder or the dead letters, confirmed, then acks), so this only catches what the broker
/// decides: a quorum queue's delivery limit, reached by a job whose worker keeps dying
/// before it can settle it. Without a target, RabbitMQ would drop such a job.
fn job_queue_args(names: &Names, kind: QueueType) -> FieldTable {
    let mut args = queue_args(kind);
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(names.dead_letters().into()),
    );
    if kind == QueueType::Quorum {
        // Explicit, so RabbitMQ 3.x (unlimited by default) and 4.x (20) behave alike.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(QUORUM_DELIVERY_LIMIT),
        );
    }
    args
}

/// Deliveries of one job (each ended by a lost connection or a crashed worker, never by a
/// job's own failure) before a quorum queue moves it to the dead letters.
pub const QUORUM_DELIVERY_LIMIT: i64 = 50;

fn queue_args(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    let t = match kind {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(t.into()));
    args
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    opts: ExchangeDeclareOptions,
) -> Result<(), QueueError> {
    ch.exchange_declare(name.into(), kind, opts, FieldTable::default())
        .await
        .map_err(|source| QueueError::Topology {
            what: format!("exchange {name}"),
            source,
        })
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), QueueError> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, args)
        .await
        .map(|_| ())
        .map_err(|source| QueueError::Topology {
            what: format!("queue {name}"),
            source,
        })
}
