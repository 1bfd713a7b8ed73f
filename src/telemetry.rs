//! Tracing set-up: an env filter (`RUST_LOG`, else the config's), human or JSON output.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // sqlx logs every statement at info; keep it quiet unless asked for explicitly.
    let filter = filter
        .add_directive("sqlx=warn".parse().unwrap_or_else(|_| filter_default()))
        .add_directive("lapin=warn".parse().unwrap_or_else(|_| filter_default()));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        // Colours only on a terminal: in a log file or a journal they are noise in every line.
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already initialised (a second call in one process): keep the first.
    let _ = result;
}

fn filter_default() -> tracing_subscriber::filter::Directive {
    tracing_subscriber::filter::LevelFilter::INFO.into()
}
