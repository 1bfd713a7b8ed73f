//! The `gochat` command line: parse, load the configuration, dispatch to one file per command.

mod api;
mod check;
mod customer;
mod lmtp;
mod mail;
mod mailgate;
mod migrate;
mod publish;
mod run;
mod simulate;
mod threads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

/// Exit code for an unusable configuration or command line (as clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gochat",
    version,
    about = "Go!Chat worker: support-ticket workflows on RabbitMQ"
)]
pub struct Cli {
    /// Configuration file (default: $GOCHAT_CONFIG, else config/default.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consumers, timer scheduler, HTTP (health, readiness, metrics).
    Run,
    /// Apply pending database migrations (idempotent).
    Migrate,
    /// Validate the configuration, workflows and templates; exit 1 when invalid.
    Check,
    /// Publish jobs (one JSON payload or JSON lines) with confirms; prints their message ids.
    Publish(publish::PublishArgs),
    /// For the MTA: one raw mail on stdin → an inbound-mail job (exit 0 confirmed, 75 retry
    /// later, 65 refused).
    Mailgate(mailgate::MailgateArgs),
    /// For the MTA: an LMTP server (lmtp.addr); each recipient's mail → an inbound-mail job,
    /// answered 250 once the broker confirmed it.
    Lmtp,
    /// Serve the inbox HTTP API on `api.addr` (GOCHAT_API_ADDR, default 127.0.0.1:8080).
    Api,
    /// Create, list and revoke the API's keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(api::ApiKeyCommand),
    /// Stored inbound mail.
    #[command(subcommand)]
    Mail(mail::MailCommand),
    /// The inbox: threads, newest update first.
    Threads(threads::ThreadsArgs),
    /// One thread and its feed.
    Thread(threads::ThreadArgs),
    /// Customers and their contacts.
    #[command(subcommand)]
    Customer(customer::CustomerCommand),
    /// Workflow tools.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Benchmarks (run them in a release build); the last line printed is one JSON object.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Jobs through the full consumer path vs. raw lapin publish → consume → ack.
    Runtime(crate::bench::runtime::RuntimeArgs),
    /// The timer scheduler: claim cost with many future timers stored, firing delay.
    Timers(crate::bench::timers::TimersArgs),
    /// Messages rendered, built and delivered by SMTP with pooling.
    Outbound(crate::bench::outbound::OutboundArgs),
    /// Inbound mails end to end (published → committed thread), and parsing alone.
    Inbound(crate::bench::inbound::InboundArgs),
    /// The whole worker under a realistic mix, at a fixed rate and at the maximum rate.
    E2e(crate::bench::e2e::E2eArgs),
    /// The inbox API at scale: a million threads, latency per kind of request, peak RSS.
    Api(crate::bench::api::ApiArgs),
    /// The CPU cost of the worst crafted mails (parse, sanitise, classify), per mail.
    Hostile(crate::bench::hostile::HostileArgs),
    /// Mails over LMTP: accepted (250 after confirm) and committed to threads per second.
    Lmtp(crate::bench::lmtp::LmtpArgs),
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Print the reference of the built-in actions and job facts (Markdown).
    Actions,
    /// Print the timeline a thread would follow under a lifecycle.
    Simulate(simulate::SimulateArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` reports an invalid configuration itself (exit 1, per its contract).
    let loaded = config::load(cli.config.as_deref());
    if let Command::Check = cli.command {
        return check::run(loaded, cli.config.as_deref());
    }
    // For the MTA, every failure but a refused message means "keep the mail, try later".
    let mailgate = matches!(cli.command, Command::Mailgate(_));
    let failure = |code: u8| {
        ExitCode::from(if mailgate {
            mailgate::EX_TEMPFAIL
        } else {
            code
        })
    };
    let config = match loaded {
        Ok((config, _source)) => config,
        Err(e) => {
            eprintln!("gochat: invalid configuration: {e}");
            return failure(EXIT_USAGE);
        }
    };
    crate::telemetry::init(&config.log);
    let runtime = match build_runtime(&config.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gochat: cannot start the async runtime: {e}");
            return failure(1);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, config));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gochat: {e:#}");
            failure(1)
        }
    }
}

/// The multi-threaded runtime with `[runtime]`'s thread count (tokio's default when unset).
fn build_runtime(
    config: &crate::config::RuntimeConfig,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Zero is refused when the configuration loads; tokio would panic on it.
    if let Some(n) = config.worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => run::run(config).await,
        Command::Migrate => migrate::run(&config).await,
        Command::Publish(args) => publish::run(&config, args).await,
        Command::Mailgate(args) => Ok(mailgate::run(&config, args).await),
        Command::Lmtp => lmtp::run(config).await,
        Command::Api => api::serve(config).await,
        Command::ApiKey(cmd) => api::keys(&config, cmd).await,
        Command::Mail(cmd) => mail::run(&config, cmd).await,
        Command::Threads(args) => threads::list(&config, args).await,
        Command::Thread(args) => threads::show(&config, args).await,
        Command::Customer(cmd) => customer::run(&config, cmd).await,
        Command::Workflows(WorkflowsCommand::Actions) => {
            print!(
                "{}",
                crate::workflow::docs::markdown(&crate::workflow::Registry::builtin())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Workflows(WorkflowsCommand::Simulate(args)) => simulate::run(&config, args),
        Command::Bench(BenchCommand::Outbound(args)) => {
            crate::bench::outbound::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::E2e(args)) => {
            crate::bench::e2e::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Api(args)) => {
            crate::bench::api::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Lmtp(args)) => {
            crate::bench::lmtp::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Inbound(args)) => {
            crate::bench::inbound::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Timers(args)) => {
            crate::bench::timers::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Hostile(args)) => {
            crate::bench::hostile::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Runtime(args)) => {
            crate::bench::runtime::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeConfig;

    #[test]
    fn the_runtime_has_the_configured_threads_or_one_per_core() {
        let one = build_runtime(&RuntimeConfig {
            worker_threads: Some(1),
        })
        .expect("runtime");
        assert_eq!(one.metrics().num_workers(), 1);
        let three = build_runtime(&RuntimeConfig {
            worker_threads: Some(3),
        })
        .expect("runtime");
        assert_eq!(three.metrics().num_workers(), 3);

        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let auto = build_runtime(&RuntimeConfig::default()).expect("runtime");
            assert_eq!(auto.metrics().num_workers(), cores);
        }
    }
}
