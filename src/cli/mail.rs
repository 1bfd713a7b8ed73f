//! `gochat mail reprocess <raw id>...`: runs stored raw mails through the `inbound-mail`
//! workflow again (after a parser fix, or a dead-lettered mail), as new jobs naming the
//! stored row. Nothing is stored twice: the row is reused and an already stored message is
//! recognised as a duplicate.

use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::store::{Store, inbound};

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Run stored raw mails (ids from `raw_mails`, e.g. in a dead letter's reason) again.
    Reprocess {
        /// Raw mail ids.
        #[arg(required = true)]
        ids: Vec<Uuid>,
    },
}

pub async fn run(config: &Config, cmd: MailCommand) -> anyhow::Result<ExitCode> {
    let MailCommand::Reprocess { ids } = cmd;
    let store = Store::connect(&config.database).await?;
    let mut jobs = Vec::with_capacity(ids.len());
    let mut missing = 0;
    for id in ids {
        match inbound::raw(store.conn(), id).await {
            Ok(raw) => {
                let mut payload = json!({
                    "schema": "inbound-mail/v1",
                    "raw_base64": base64::engine::general_purpose::STANDARD.encode(&raw.data),
                    "recipients": raw.recipients,
                    "received_at": raw.received_at.to_rfc3339(),
                    "raw_mail_id": raw.id,
                });
                if let Some(from) = raw.envelope_from {
                    payload["envelope_from"] = json!(from);
                }
                if let Some(mailbox) = raw.mailbox {
                    payload["mailbox"] = json!(mailbox);
                }
                jobs.push((
                    format!("reprocess-{id}-{}", Uuid::now_v7().simple()),
                    payload,
                ));
            }
            Err(e) => {
                eprintln!("gochat: raw mail {id}: {e}");
                missing += 1;
            }
        }
    }
    store.close().await;
    if jobs.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let failed = missing
        + super::publish::report(super::publish::publish_jobs(config, "inbound-mail", jobs).await?);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
