//! The worker assembled: store, supervised broker (with topology), one consumer per job kind
//! that has a workflow, the outbox relay and the timer scheduler. `gochat run`, the integration tests and the
//! benchmarks all start it through [`Worker::start`], so they exercise the same wiring.
//!
//! Shutdown is staged: consumers stop taking deliveries and finish (and ack) what they hold
//! while the connection is still up; only then do the relay's last round and the broker
//! connection close.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::contract::JOB_KINDS;
use crate::metrics::Metrics;
use crate::queue::relay::{Relay, RelayWaker};
use crate::queue::{Broker, ConsumerSpec, Names, consumer};
use crate::services::Services;
use crate::shutdown::{self, ShutdownTrigger};
use crate::store::{Store, StoreError};
use crate::workflow::handler::WorkflowHandler;
use crate::workflow::{LoadError, WorkflowSet};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the workflows in {dir} are invalid:\n{problems}")]
    Workflows { dir: String, problems: LoadError },
    #[error("the job schemas are invalid: {0}")]
    Schemas(String),
    #[error("{0}")]
    Smtp(String),
}

pub struct Worker {
    pub services: Arc<Services>,
    pub broker: Broker,
    workflows: Arc<RwLock<Arc<WorkflowSet>>>,
    consumers_stop: ShutdownTrigger,
    rest_stop: ShutdownTrigger,
    consumers: Vec<JoinHandle<()>>,
    relay: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    broker_task: JoinHandle<()>,
}

impl Worker {
    /// Connects to the database (checking its schema), loads and checks the workflows, and
    /// starts the broker supervisor, the consumers and the relay. Does not wait for the
    /// broker: consumers start consuming whenever it is (or comes back) up.
    pub async fn start(
        config: Config,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Worker, StartError> {
        crate::jobs::schema::check_all().map_err(StartError::Schemas)?;
        let set =
            WorkflowSet::load(&config.workflows.dir).map_err(|problems| StartError::Workflows {
                dir: config.workflows.dir.display().to_string(),
                problems,
            })?;
        let store = Store::connect(&config.database).await?;
        store.ensure_schema(config.database.auto_migrate).await?;

        let names = Names::new(&config.amqp.prefix);
        let (consumers_stop, _) = shutdown::channel();
        let (rest_stop, _) = shutdown::channel();
        let instance = format!("gochat-{}@{}", std::process::id(), hostname());
        let (broker, broker_task) = Broker::supervise(
            config.amqp.url.clone(),
            instance.clone(),
            Some((names.clone(), config.amqp.clone())),
            rest_stop.subscribe(),
        );
        let smtp = crate::mail::smtp::Smtp::new(
            &config.smtp.url,
            config.smtp.timeout,
            config.amqp.consumer("outbound-message").concurrency as u32,
        )
        .map_err(StartError::Smtp)?;
        let services = Arc::new(Services {
            smtp,
            config,
            store: store.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            instance,
        });

        let waker = RelayWaker::default();
        let relay = Relay {
            store,
            broker: broker.clone(),
            clock,
            metrics: metrics.clone(),
            confirm_timeout: services.config.amqp.confirm_timeout,
            interval: Duration::from_secs(1),
            retention: services.config.database.outbox_retention,
            dead_jobs_retention: services.config.database.dead_jobs_retention,
            backlog_counted_at: Default::default(),
        };
        let relay = tokio::spawn(relay.run(waker.clone(), rest_stop.subscribe()));
        let scheduler = crate::scheduler::Scheduler {
            services: services.clone(),
            names: names.clone(),
            relay: waker.clone(),
        };
        let scheduler = tokio::spawn(scheduler.run(rest_stop.subscribe()));

        for kind in JOB_KINDS.iter().filter(|k| set.get(k).is_none()) {
            tracing::warn!(
                kind,
                "no workflows/jobs/{kind}.yaml: jobs of this kind stay queued until one exists and the worker restarts"
            );
        }
        let only = services.config.amqp.consume.clone();
        let kinds: Vec<String> = set
            .kinds()
            .into_iter()
            .filter(|k| only.is_empty() || only.iter().any(|o| o == k))
            .map(str::to_owned)
            .collect();
        let workflows = Arc::new(RwLock::new(Arc::new(set)));
        let handler = Arc::new(WorkflowHandler::new(
            services.clone(),
            workflows.clone(),
            waker,
        ));
        let consumers = kinds
            .into_iter()
            .map(|kind| {
                let amqp = &services.config.amqp;
                let c = amqp.consumer(&kind);
                let spec = ConsumerSpec {
                    in_turn: kind == "inbound-mail",
                    kind,
                    prefetch: c.prefetch,
                    concurrency: c.concurrency,
                    batch_size: c.batch_size,
                    retry_delays: amqp.retry_delays.clone(),
                    confirm_timeout: amqp.confirm_timeout,
                };
                tokio::spawn(consumer::run(
                    broker.clone(),
                    names.clone(),
                    spec,
                    handler.clone(),
                    metrics.clone(),
                    consumers_stop.subscribe(),
                ))
            })
            .collect();
        Ok(Worker {
            services,
            broker,
            workflows,
            consumers_stop,
            rest_stop,
            consumers,
            relay,
            scheduler,
            broker_task,
        })
    }

    /// Loads the workflows again (SIGHUP). A new set replaces the old only if it is valid;
    /// jobs already running finish on the set they started with.
    pub fn reload(&self) -> Result<Vec<String>, LoadError> {
        let set = WorkflowSet::load(&self.services.config.workflows.dir)?;
        let kinds = set.kinds().into_iter().map(str::to_owned).collect();
        match self.workflows.write() {
            Ok(mut w) => *w = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(kinds)
    }

    /// Stops taking work, finishes what is in flight, publishes what the outbox holds, and
    /// closes the connections.
    pub async fn stop(self) {
        self.consumers_stop.trigger();
        for c in self.consumers {
            let _ = c.await;
        }
        self.rest_stop.trigger();
        let _ = self.scheduler.await;
        let _ = self.relay.await;
        let _ = self.broker_task.await;
        self.services.store.close().await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}
