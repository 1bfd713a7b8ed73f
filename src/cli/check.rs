//! `gochat check`: validate the configuration (and, as they land, workflows and templates).
//! Exit 0 when valid, 1 when not, with `file:line: reason` lines on stderr.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConfigError, ConfigSource};

pub fn run(
    loaded: Result<(Config, ConfigSource), ConfigError>,
    _explicit: Option<&Path>,
) -> ExitCode {
    match loaded {
        Ok((_config, source)) => {
            println!("configuration {source}: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
