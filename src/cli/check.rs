//! `gochat check`: validate the configuration, the job schemas and the workflows.
//! Exit 0 when valid, 1 when not, with `file:line[:column]: reason` lines on stderr.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::workflow::WorkflowSet;

pub fn run(
    loaded: Result<(Config, ConfigSource), ConfigError>,
    _explicit: Option<&Path>,
) -> ExitCode {
    let (config, source) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("configuration {source}: ok");
    let mut ok = true;
    if let Err(e) = crate::jobs::schema::check_all() {
        eprintln!("{e}");
        ok = false;
    }
    match WorkflowSet::load(&config.workflows.dir) {
        Ok(set) => {
            let kinds = set.kinds();
            println!(
                "workflows {}: ok ({})",
                config.workflows.dir.display(),
                kinds.join(", ")
            );
            let lifecycles = set.lifecycles.names();
            if lifecycles.is_empty() {
                println!("note: no lifecycles in lifecycles/: threads get no reminders");
            } else {
                println!("lifecycles: ok ({})", lifecycles.join(", "));
            }
            println!("templates: ok ({})", set.templates.names().join(", "));
            for kind in crate::contract::JOB_KINDS
                .iter()
                .filter(|k| !kinds.contains(k))
            {
                println!("note: no workflow for `{kind}`: such jobs stay queued");
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
