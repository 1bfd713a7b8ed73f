//! `gochat mailgate --recipient ADDR [--sender ADDR]`: the MTA's delivery agent. It reads one
//! raw mail on standard input and publishes it as an `inbound-mail` job with confirms.
//!
//! Its exit code is the MTA's instruction (sysexits): 0 once the broker confirmed (the MTA
//! may forget the mail), 75 `EX_TEMPFAIL` when it could not be confirmed (the MTA keeps the
//! mail and tries again: nothing lost), 65 `EX_DATAERR` when the mail is refused for good
//! (over `mail.max_size`, or empty; the MTA returns it to its sender). Anything unexpected is
//! a temporary failure too: a broken gateway must not bounce customers' mail.

use std::io::Read;
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::mail::gateway;

/// The MTA keeps the mail and retries.
pub const EX_TEMPFAIL: u8 = 75;
/// The mail is refused for good.
pub const EX_DATAERR: u8 = 65;
/// The command line is wrong (a recipient that is no address): the MTA's setup, not the
/// mail, needs fixing.
pub const EX_USAGE: u8 = 64;

/// An envelope address as an MTA passes it (angle brackets allowed): a recipient is a
/// job's mailbox and dedupe scope, so a typo in the MTA's command line must not become one.
pub fn is_address(s: &str) -> bool {
    let s = s.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(s);
    gateway::address(s).is_some()
}

#[derive(Debug, Args)]
pub struct MailgateArgs {
    /// Envelope recipient (RCPT TO); repeat for several (Postfix: `${recipient}`).
    #[arg(long, required = true)]
    pub recipient: Vec<String>,
    /// Envelope sender (MAIL FROM; Postfix: `${sender}`, empty for bounces).
    #[arg(long)]
    pub sender: Option<String>,
    /// The support mailbox, if not the first recipient.
    #[arg(long)]
    pub mailbox: Option<String>,
}

pub async fn run(config: &Config, args: MailgateArgs) -> ExitCode {
    if let Some(bad) = args.recipient.iter().find(|r| !is_address(r)) {
        eprintln!(
            "gochat mailgate: --recipient {bad:?} is not a mail address (local@domain); \
             check the MTA's command line (Postfix: ${{recipient}})"
        );
        return ExitCode::from(EX_USAGE);
    }
    let max = config.mail.max_size;
    let raw = match read_limited(std::io::stdin().lock(), max) {
        Ok(Some(raw)) if !raw.is_empty() => raw,
        Ok(Some(_)) => return refuse("the message is empty"),
        Ok(None) => {
            return refuse(&format!(
                "the message is larger than mail.max_size ({max} bytes)"
            ));
        }
        Err(e) => return tempfail(&format!("cannot read the message: {e}")),
    };
    let payload = job(&raw, &args);
    let message_id = gateway::job_id(&raw, &args.recipient);
    match publish(config, &message_id, &payload).await {
        Ok(()) => {
            println!("{message_id}");
            ExitCode::SUCCESS
        }
        Err(e) => tempfail(&format!("{e:#}")),
    }
}

/// Reads at most `max` bytes; `None` when there is more.
fn read_limited(input: impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    input.take(max.saturating_add(1)).read_to_end(&mut raw)?;
    Ok((raw.len() as u64 <= max).then_some(raw))
}

/// The job, built as `gochat lmtp` builds it (see [`crate::mail::gateway`]).
fn job(raw: &[u8], args: &MailgateArgs) -> serde_json::Value {
    gateway::payload(
        raw,
        &gateway::Envelope {
            sender: args.sender.as_deref(),
            recipients: &args.recipient,
            mailbox: args.mailbox.as_deref(),
        },
    )
}

async fn publish(
    config: &Config,
    message_id: &str,
    payload: &serde_json::Value,
) -> anyhow::Result<()> {
    let outcomes = super::publish::publish_jobs(
        config,
        "inbound-mail",
        vec![(message_id.to_owned(), payload.clone())],
    )
    .await?;
    match outcomes.into_iter().next() {
        Some((_, Ok(()))) => Ok(()),
        Some((_, Err(e))) => Err(anyhow::anyhow!("the broker did not confirm the job: {e}")),
        None => Err(anyhow::anyhow!("the job was not published")),
    }
}

fn refuse(why: &str) -> ExitCode {
    eprintln!("gochat mailgate: refused: {why}");
    ExitCode::from(EX_DATAERR)
}

fn tempfail(why: &str) -> ExitCode {
    eprintln!("gochat mailgate: temporary failure, the MTA should retry: {why}");
    ExitCode::from(EX_TEMPFAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_over_the_limit_is_refused_and_at_the_limit_kept() {
        assert_eq!(
            read_limited(&b"12345"[..], 5)
                .ok()
                .flatten()
                .map(|v| v.len()),
            Some(5)
        );
        assert_eq!(read_limited(&b"123456"[..], 5).ok(), Some(None));
    }

    #[test]
    fn recipients_must_be_addresses() {
        for ok in [
            "support@help.example",
            "<support+x@help.example>",
            "a@localhost",
        ] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in [
            "",
            "support",
            "@help.example",
            "support@",
            "a b@x.example",
            "a@x.example,b@y.example",
            "${recipient}",
            "a@.example",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
