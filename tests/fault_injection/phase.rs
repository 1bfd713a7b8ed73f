//! One phase: fresh load, one fault mid-run, recovery measured, everything reconciled.

use std::time::{Duration, Instant};

use gochat::queue::Names;

use crate::cluster::{Cluster, PREFIX};
use crate::load::{self, Job, Published};
use crate::readiness::{self, Readiness};
use crate::reconcile::{self, DeadLetter, INTERRUPTED, Tally, World};

/// How long a backlog may take to drain after a fault before the phase reports losses.
const DRAIN: Duration = Duration::from_secs(60);
/// A drain slower than this prints what is still outstanding.
const SLOW: Duration = Duration::from_secs(10);
/// Jobs of the phase applied before the fault comes, so it lands mid-run.
const BEFORE_FAULT: i64 = 15;
/// How long the broker, the database and the mail server stay away.
const OUTAGE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    BrokerOutage,
    DatabaseRestart,
    ReplicaKilled,
    SmtpOutage,
    GracefulShutdown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::BrokerOutage => "broker",
            Fault::DatabaseRestart => "postgres",
            Fault::ReplicaKilled => "sigkill",
            Fault::SmtpOutage => "smtp",
            Fault::GracefulShutdown => "sigterm",
        }
    }
}

/// The figures of one phase.
#[derive(Debug, Clone)]
pub struct Figures {
    pub fault: &'static str,
    pub published: Published,
    pub tally: Tally,
    pub fault_took: Duration,
    /// Fault end → first job applied (for the SMTP fault: first mail received).
    pub first_after: Option<Duration>,
    /// Fault end → every job of the phase recorded as processed.
    pub applied_after: Option<Duration>,
    /// Fault end → every effect of the phase's jobs there, their mail and their reminder
    /// ladders (6 s from the `agent_replied`) included.
    pub drained_after: Option<Duration>,
    pub dead_letters: usize,
    pub readiness: String,
    pub took: Duration,
}

#[derive(Default)]
pub struct Run {
    pub figures: Vec<Figures>,
    pub problems: Vec<String>,
    pub dead: Vec<DeadLetter>,
    jobs: Vec<(&'static str, Vec<Job>)>,
}

async fn sql_count(cluster: &Cluster, sql: &str) -> i64 {
    crate::common::count(cluster.store.conn(), sql).await
}

impl Run {
    pub async fn phase(&mut self, cluster: &mut Cluster, ready: &Readiness, fault: Fault) {
        let name = fault.name();
        let started = Instant::now();
        let names = Names::new(PREFIX);
        let jobs = load::phase_jobs(&cluster.store, name).await;
        let publisher = tokio::spawn(load::publish(
            cluster.amqp_url(),
            names.clone(),
            jobs.clone(),
        ));
        let done_sql =
            format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id LIKE '{name}-%'");
        let deadline = Instant::now() + Duration::from_secs(30);
        while sql_count(cluster, &done_sql).await < BEFORE_FAULT {
            assert!(
                Instant::now() < deadline,
                "{name}: the load never got going\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The fault.
        let fault_start = Instant::now();
        let fault_start_wall = chrono::Utc::now();
        let mut readiness_note = String::new();
        match fault {
            Fault::BrokerOutage => {
                tokio::task::block_in_place(|| cluster.rabbit.stop_app());
                tokio::time::sleep(OUTAGE).await;
                tokio::task::block_in_place(|| cluster.rabbit.start_app());
            }
            Fault::DatabaseRestart => {
                tokio::task::block_in_place(|| cluster.pg.stop());
                tokio::time::sleep(OUTAGE).await;
                tokio::task::block_in_place(|| cluster.pg.start_again());
            }
            Fault::ReplicaKilled => {
                let held = cluster.wait_busy(1).await;
                cluster.kill(1);
                readiness_note = format!("replica 1 killed holding {held} unsettled deliveries");
                if held < 1.0 {
                    self.problems.push(format!(
                        "{name}: replica 1 was idle when killed: not mid-batch"
                    ));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.start_replica(1);
            }
            Fault::SmtpOutage => {
                tokio::task::block_in_place(|| cluster.sink.stop());
                tokio::time::sleep(OUTAGE).await;
                tokio::task::block_in_place(|| cluster.sink.restart());
            }
            Fault::GracefulShutdown => {
                let held = cluster.wait_busy(2).await;
                let (code, log) = tokio::task::block_in_place(|| cluster.terminate(2));
                readiness_note = format!(
                    "replica 2 exited {code:?} after SIGTERM, holding {held} unsettled deliveries"
                );
                if held < 1.0 {
                    self.problems.push(format!(
                        "{name}: replica 2 was idle when stopped: nothing in flight"
                    ));
                }
                if code != Some(0) {
                    self.problems.push(format!(
                        "{name}: SIGTERM ended replica 2 with {code:?}, not 0:\n{log}"
                    ));
                }
                cluster.start_replica(2);
            }
        }
        let fault_end = Instant::now();
        let fault_end_wall = chrono::Utc::now();

        // Readiness during the outage.
        let component = match fault {
            Fault::BrokerOutage => Some("broker"),
            Fault::DatabaseRestart => Some("database"),
            _ => None,
        };
        if let Some(component) = component {
            let mut notes = Vec::new();
            for i in 0..cluster.replicas.len() {
                let seen =
                    readiness::summarise(&ready.between(i, fault_start, fault_end), component);
                notes.push(format!(
                    "r{i}: {} probes: {} × 503 {component} down, {} × 200, {} unanswered, \
                     slowest {:.1?}",
                    seen.probes, seen.down, seen.ok, seen.no_answer, seen.slowest
                ));
                if seen.down == 0 {
                    self.problems.push(format!(
                        "{name}: replica {i}'s /readyz never answered 503 with {component} down \
                         during the outage ({seen:?})"
                    ));
                }
                if seen.slowest > Duration::from_secs(3) {
                    self.problems.push(format!(
                        "{name}: replica {i}'s /readyz took {:.1?} to answer during the outage",
                        seen.slowest
                    ));
                }
            }
            readiness_note = notes.join("; ");
        }

        // Recovery: the first effect after the fault, then the backlog drained.
        let first_after = match fault {
            Fault::SmtpOutage => {
                let before = cluster.sink.received().len();
                let deadline = Instant::now() + DRAIN;
                loop {
                    if cluster.sink.received().len() > before {
                        break Some(fault_end.elapsed());
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            _ => {
                let sql = format!(
                    "SELECT COUNT(*) AS n FROM processed_jobs WHERE processed_at > '{}'",
                    fault_end_wall.format("%Y-%m-%d %H:%M:%S%.6f+00")
                );
                let deadline = Instant::now() + DRAIN;
                loop {
                    if sql_count(cluster, &sql).await > 0 {
                        break Some(fault_end.elapsed());
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        match fault {
            Fault::ReplicaKilled => cluster.wait_ready(1).await,
            Fault::GracefulShutdown => cluster.wait_ready(2).await,
            _ => {}
        }

        let published = match tokio::time::timeout(DRAIN, publisher).await {
            Ok(p) => p.expect("publisher"),
            Err(_) => panic!("{name}: the publisher never finished\n{}", cluster.logs()),
        };
        let (tally, applied_after, drained_after) =
            self.drain(cluster, &names, &jobs, fault_end).await;
        if component.is_some() {
            // The slowest replica's way back to 200.
            let back: Vec<Option<Duration>> = (0..cluster.replicas.len())
                .map(|i| {
                    ready
                        .first_ready_after(i, fault_end)
                        .map(|t| t.saturating_duration_since(fault_end))
                })
                .collect();
            match back.iter().copied().collect::<Option<Vec<Duration>>>() {
                Some(all) => readiness_note.push_str(&format!(
                    "; all ready again {} after",
                    secs(all.into_iter().max())
                )),
                None => self.problems.push(format!(
                    "{name}: a replica never reported ready again after the fault ({back:?})"
                )),
            }
        }
        // The fault must have been felt, or the phase tested nothing.
        match fault {
            Fault::BrokerOutage if published.failed_attempts == 0 => self.problems.push(format!(
                "{name}: the publisher never noticed the broker outage"
            )),
            Fault::SmtpOutage => {
                let retried = sql_count(
                    cluster,
                    &format!(
                        "SELECT COUNT(*) AS n FROM messages WHERE direction = 'outbound' \
                         AND attempts > 1 AND updated_at >= '{}'",
                        fault_start_wall.format("%Y-%m-%d %H:%M:%S%.6f+00")
                    ),
                )
                .await;
                if retried == 0 {
                    self.problems.push(format!(
                        "{name}: no outbound message needed a second attempt: the mail server's \
                         outage was not felt"
                    ));
                }
                readiness_note = format!("{retried} outbound messages delivered after retries");
            }
            _ => {}
        }
        let unexpected: Vec<&DeadLetter> = self
            .dead
            .iter()
            .filter(|d| !(d.kind == "outbound-message" && d.reason.contains(INTERRUPTED)))
            .collect();
        if !unexpected.is_empty() {
            self.problems
                .push(format!("{name}: unexpected dead letters: {unexpected:#?}"));
        }
        for d in &tally.duplicates {
            self.problems.push(format!("{name}: duplicate effect: {d}"));
        }
        for m in &tally.missing {
            self.problems.push(format!("{name}: lost: {m}"));
        }
        if tally.in_doubt > 0 && !matches!(fault, Fault::ReplicaKilled | Fault::DatabaseRestart) {
            self.problems.push(format!(
                "{name}: {} mails in doubt (interrupted delivery) without a crash or a \
                 database outage",
                tally.in_doubt
            ));
        }
        let f = Figures {
            fault: name,
            published,
            tally,
            fault_took: fault_end - fault_start,
            first_after,
            applied_after,
            drained_after,
            dead_letters: self.dead.len(),
            readiness: readiness_note,
            took: started.elapsed(),
        };
        eprintln!("{}", line(&f));
        self.figures.push(f);
        self.jobs.push((name, jobs));
    }

    /// Waits until every job of the phase has its effect (or `DRAIN` passes), then tallies.
    async fn drain(
        &mut self,
        cluster: &Cluster,
        names: &Names,
        jobs: &[Job],
        fault_end: Instant,
    ) -> (Tally, Option<Duration>, Option<Duration>) {
        let deadline = Instant::now() + DRAIN;
        let mut told = false;
        let mut applied = None;
        // Follow-up jobs (acknowledgements) carry ids derived from their job's, so compare
        // ids, not counts.
        let ids = jobs
            .iter()
            .map(|j| format!("'{}'", j.id))
            .collect::<Vec<_>>()
            .join(", ");
        let done_sql =
            format!("SELECT COUNT(*) AS n FROM processed_jobs WHERE message_id IN ({ids})");
        loop {
            if applied.is_none() && sql_count(cluster, &done_sql).await == jobs.len() as i64 {
                applied = Some(fault_end.elapsed());
            }
            self.dead
                .extend(reconcile::drain_dead_letters(&cluster.amqp_url(), names).await);
            let sink = reconcile::parse_sink(&cluster.sink.received());
            let world = World::read(&cluster.store, &sink, &self.dead).await;
            let tally = reconcile::tally(&cluster.store, &world, jobs).await;
            if tally.missing.is_empty() && applied.is_some() {
                return (tally, applied, Some(fault_end.elapsed()));
            }
            if Instant::now() > deadline {
                return (tally, applied, None);
            }
            if !told && fault_end.elapsed() > SLOW {
                told = true;
                eprintln!(
                    "  (still outstanding {:.1?} after the fault: {:?})",
                    fault_end.elapsed(),
                    &tally.missing[..tally.missing.len().min(8)]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every phase's jobs reconciled once more at the end: a late redelivery applied twice
    /// would show here.
    pub async fn final_check(&mut self, cluster: &Cluster) {
        // Let late redeliveries and retries land.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let names = Names::new(PREFIX);
        self.dead
            .extend(reconcile::drain_dead_letters(&cluster.amqp_url(), &names).await);
        let sink = reconcile::parse_sink(&cluster.sink.received());
        let world = World::read(&cluster.store, &sink, &self.dead).await;
        let jobs = std::mem::take(&mut self.jobs);
        for (name, jobs) in &jobs {
            let t = reconcile::tally(&cluster.store, &world, jobs).await;
            for d in &t.duplicates {
                self.problems
                    .push(format!("final check, {name}: duplicate effect: {d}"));
            }
            for m in &t.missing {
                self.problems
                    .push(format!("final check, {name}: lost: {m}"));
            }
        }
        self.jobs = jobs;
        let total: usize = self.jobs.iter().map(|(_, j)| j.len()).sum();
        eprintln!(
            "fault injection: final check over {total} jobs: {} problems, {} dead letters in all, \
             {} mails at the sink",
            self.problems.len(),
            self.dead.len(),
            sink.len()
        );
    }

    pub fn print_summary(&self) {
        eprintln!("fault injection summary:");
        for f in &self.figures {
            eprintln!("  {}", line(f));
        }
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}s", d.as_secs_f64()))
        .unwrap_or_else(|| "never".into())
}

fn line(f: &Figures) -> String {
    format!(
        "fault {}: {} jobs published ({} failed publish attempts retried), {} applied once, \
         {} in doubt ({} of them delivered), {} duplicates, {} lost; dead letters so far {}; \
         fault lasted {:.1}s; first effect {} after, every job applied {} after, every effect \
         {} after; {}; phase {:.1}s",
        f.fault,
        f.published.jobs,
        f.published.failed_attempts,
        f.tally.done,
        f.tally.in_doubt,
        f.tally.in_doubt_delivered,
        f.tally.duplicates.len(),
        f.tally.missing.len(),
        f.dead_letters,
        f.fault_took.as_secs_f64(),
        secs(f.first_after),
        secs(f.applied_after),
        secs(f.drained_after),
        if f.readiness.is_empty() {
            "readiness not expected to change"
        } else {
            &f.readiness
        },
        f.took.as_secs_f64()
    )
}
