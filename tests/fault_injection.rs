//! Fault injection: three `gochat run` replicas (one queue prefix, one PostgreSQL database,
//! one SMTP server) under a steady mix of jobs, while, one phase at a time, the broker stops
//! and starts, PostgreSQL restarts, a replica is SIGKILLed, the mail server goes away and
//! comes back, and a replica is stopped with SIGTERM. After each phase every published job
//! is reconciled against its effects (database rows, mail received by Message-ID and
//! recipient, reminders), the dead letters are inspected, readiness during the outages is
//! checked, and the recovery time is printed. See docs/RELIABILITY.md.

#[path = "fault_injection/cluster.rs"]
mod cluster;
mod common;
#[path = "fault_injection/load.rs"]
mod load;
#[path = "fault_injection/phase.rs"]
mod phase;
#[path = "fault_injection/readiness.rs"]
mod readiness;
#[path = "fault_injection/reconcile.rs"]
mod reconcile;
#[path = "fault_injection/sent_commit_lost.rs"]
mod sent_commit_lost;

use std::time::{Duration, Instant};

use cluster::Cluster;
use phase::Fault;

/// The whole run's bound: a hung phase fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_ride_through_broker_database_crash_smtp_and_shutdown_faults() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let setup = started.elapsed();
    let ready =
        readiness::Readiness::start((0..cluster::REPLICAS).map(|i| cluster.readyz(i)).collect());
    let mut run = phase::Run::default();
    let faults = [
        Fault::BrokerOutage,
        Fault::DatabaseRestart,
        Fault::ReplicaKilled,
        Fault::SmtpOutage,
        Fault::GracefulShutdown,
    ];
    let phases = tokio::time::timeout(BOUND, async {
        for fault in faults {
            run.phase(&mut cluster, &ready, fault).await;
        }
        run.final_check(&cluster).await;
    })
    .await;
    ready.stop();
    let stopped_in = cluster.stop_all();
    eprintln!(
        "fault injection: set-up {setup:.1?}, replicas stopped (SIGTERM, exit 0) in \
         {stopped_in:.1?}, whole run {:.1?}",
        started.elapsed()
    );
    run.print_summary();
    assert!(
        phases.is_ok(),
        "the phases did not finish within {BOUND:?}; problems so far: {:#?}\n{}",
        run.problems,
        cluster.logs()
    );
    assert!(
        run.problems.is_empty(),
        "{} problems:\n{}\n{}",
        run.problems.len(),
        run.problems.join("\n"),
        cluster.logs()
    );
}
