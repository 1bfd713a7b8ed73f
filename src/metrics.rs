//! Prometheus metrics: one registry per process, names prefixed `gochat_`, base units.
//!
//! Every metric is created here so the full list (and its labels) reads in one place; the
//! rest of the code only increments them.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 1 ms to 60 s: jobs are mostly milliseconds, SMTP can take seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Timer firing delay from 100 ms to an hour: the alert fires past five minutes.
const DELAY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Label values known up front. Each series is created at zero when the process starts,
/// so a dashboard shows 0 rather than "no data" and `increase()` sees the first event.
pub const JOB_OUTCOMES: &[&str] = &["acked", "duplicate", "retried", "dead_lettered"];
pub const INBOUND_CLASSES: &[&str] = &[
    "new_thread",
    "reply",
    "auto_reply",
    "bounce",
    "duplicate",
    "refused",
    "loop",
    "feedback_report",
];
pub const OUTBOUND_STATES: &[&str] = &["queued", "sending", "sent", "failed"];
pub const SMTP_ERROR_CLASSES: &[&str] = &["temporary", "permanent", "connection"];
/// How a batch of jobs sharing one transaction ended: committed whole, cut at a failing
/// job (the jobs before it committed, it ran alone), or failed as a whole (its jobs ran
/// one by one). Cuts and failures that grow with load mean contention between replicas.
pub const BATCH_OUTCOMES: &[&str] = &["committed", "cut", "failed"];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Jobs by kind and outcome: `acked`, `duplicate`, `retried`, `dead_lettered`.
    pub jobs: IntCounterVec,
    /// Deliveries taken from the broker, by kind.
    pub jobs_consumed: IntCounterVec,
    pub job_duration: HistogramVec,
    /// Batches by kind and outcome ([`BATCH_OUTCOMES`]).
    pub job_batches: IntCounterVec,
    /// Deliveries handed to the handler together, by kind: small batches under load mean
    /// `amqp.prefetch` leaves the consumers waiting for deliveries.
    pub job_batch_size: HistogramVec,
    /// Time per workflow step, by action.
    pub step_duration: HistogramVec,
    /// 1 while connected to RabbitMQ.
    pub broker_connected: IntGauge,
    /// Pooled database connections by state (`in_use`, `idle`).
    pub db_pool: IntGaugeVec,
    /// Outbox rows waiting to be published.
    pub outbox_backlog: IntGauge,
    pub outbox_published: IntCounterVec,
    /// Timers by state, and the delay between due and fired.
    pub timers: IntGaugeVec,
    pub timers_fired: IntCounterVec,
    pub timer_firing_delay: Histogram,
    pub inbound_mails: IntCounterVec,
    pub outbound_messages: IntCounterVec,
    pub smtp_errors: IntCounterVec,
}

impl Metrics {
    /// Registers every metric. `actions` are the workflow actions whose step series start
    /// at zero (the caller passes `workflow::Registry::builtin().names()`: the metrics know
    /// no workflow).
    pub fn new(actions: &[&str]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "gochat_build_info",
                "Build of the running worker; always 1.",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;

        let m = Metrics {
            jobs: counter(
                &registry,
                "gochat_jobs_total",
                "Jobs finished, by kind and outcome.",
                &["kind", "outcome"],
            )?,
            jobs_consumed: counter(
                &registry,
                "gochat_jobs_consumed_total",
                "Deliveries taken from the broker, by kind.",
                &["kind"],
            )?,
            job_duration: histogram(
                &registry,
                "gochat_job_duration_seconds",
                "Time from delivery to ack, by kind.",
                &["kind"],
            )?,
            job_batches: counter(
                &registry,
                "gochat_job_batches_total",
                "Batches of jobs run in one transaction, by kind and outcome (committed, cut, failed).",
                &["kind", "outcome"],
            )?,
            job_batch_size: histogram_with(
                &registry,
                "gochat_job_batch_size",
                "Deliveries handed to the workflow handler together, by kind.",
                &["kind"],
                &BATCH_SIZE_BUCKETS,
            )?,
            step_duration: histogram(
                &registry,
                "gochat_step_duration_seconds",
                "Time per workflow step, by action.",
                &["action"],
            )?,
            broker_connected: gauge(
                &registry,
                "gochat_broker_connected",
                "1 while connected to RabbitMQ, else 0.",
            )?,
            db_pool: gauge_vec(
                &registry,
                "gochat_db_pool_connections",
                "Pooled database connections, by state.",
                &["state"],
            )?,
            outbox_backlog: gauge(
                &registry,
                "gochat_outbox_backlog",
                "Outbox rows not yet published.",
            )?,
            outbox_published: counter(
                &registry,
                "gochat_outbox_published_total",
                "Outbox rows published, by kind.",
                &["kind"],
            )?,
            timers: gauge_vec(
                &registry,
                "gochat_timers",
                "Timers by state (pending, due).",
                &["state"],
            )?,
            timers_fired: counter(
                &registry,
                "gochat_timers_fired_total",
                "Timers handled, by outcome (fired, stale).",
                &["outcome"],
            )?,
            timer_firing_delay: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "gochat_timer_firing_delay_seconds",
                        "Delay between a timer's due time and its job being published.",
                    )
                    .buckets(DELAY_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            inbound_mails: counter(
                &registry,
                "gochat_inbound_mails_total",
                "Inbound mails, by classification.",
                &["classification"],
            )?,
            outbound_messages: counter(
                &registry,
                "gochat_outbound_messages_total",
                "Outbound messages, by state reached.",
                &["state"],
            )?,
            smtp_errors: counter(
                &registry,
                "gochat_smtp_errors_total",
                "SMTP failures, by class (temporary, permanent, connection).",
                &["class"],
            )?,
            registry,
        };
        m.initialise_series(actions);
        Ok(m)
    }

    fn initialise_series(&self, actions: &[&str]) {
        for kind in crate::contract::JOB_KINDS {
            self.jobs_consumed.with_label_values(&[kind]);
            self.job_duration.with_label_values(&[kind]);
            self.job_batch_size.with_label_values(&[kind]);
            for outcome in JOB_OUTCOMES {
                self.jobs.with_label_values(&[kind, outcome]);
            }
            for outcome in BATCH_OUTCOMES {
                self.job_batches.with_label_values(&[kind, outcome]);
            }
        }
        for action in actions {
            self.step_duration.with_label_values(&[action]);
        }
        for c in INBOUND_CLASSES {
            self.inbound_mails.with_label_values(&[c]);
        }
        for s in OUTBOUND_STATES {
            self.outbound_messages.with_label_values(&[s]);
        }
        for c in SMTP_ERROR_CLASSES {
            self.smtp_errors.with_label_values(&[c]);
        }
        for s in ["pending", "due"] {
            self.timers.with_label_values(&[s]);
        }
        for o in ["fired", "stale"] {
            self.timers_fired.with_label_values(&[o]);
        }
        for k in ["job", "event"] {
            self.outbox_published.with_label_values(&[k]);
        }
        self.db_pool.with_label_values(&["in_use"]);
        self.db_pool.with_label_values(&["idle"]);
    }

    /// The names of every metric family, as exposed (for checking dashboards and alerts).
    pub fn family_names(&self) -> Vec<String> {
        self.registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, prometheus::Error> {
    histogram_with(r, name, help, labels, LATENCY_BUCKETS)
}

/// Batch sizes: powers of two up to the largest `batch_size` worth configuring.
const BATCH_SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

fn histogram_with(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_counters() {
        let m = Metrics::new(&["load_thread"]).expect("metrics");
        m.jobs.with_label_values(&["inbound-mail", "acked"]).inc();
        let text = m.render();
        assert!(text.contains("gochat_build_info{version=\""), "{text}");
        assert!(
            text.contains("gochat_jobs_total{kind=\"inbound-mail\",outcome=\"acked\"} 1"),
            "{text}"
        );
    }
}
