//! One LMTP session as a state machine without I/O: bytes in, [`Event`]s out. The server
//! feeds it what it reads and writes the replies; a pipelined burst of commands is simply
//! several events from one buffer, answered in order.
//!
//! LMTP (RFC 2033) is SMTP with one change that matters: after the message, one reply per
//! accepted recipient, in `RCPT` order, so a mail delivered to some recipients and not
//! others is retried only for those.

use std::collections::VecDeque;

use super::command::{self, Command};
use super::data::{DataDecoder, Decoded};
use super::reply::Reply;

/// The longest command line, its CRLF included (RFC 5321 4.5.3.1.4 allows 512; we take
/// the text-line limit of 1000 to be lenient with long addresses).
pub const MAX_LINE: usize = 1000;
/// The most recipients in one transaction (the least RFC 5321 4.5.3.1.8 requires); the
/// MTA sends the others in another transaction after our `452`.
pub const MAX_RECIPIENTS: usize = 100;

/// What a session accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `mail.max_size`: the largest message, in bytes (advertised as `SIZE`).
    pub max_size: u64,
    /// The name in the greeting and the LHLO reply.
    pub hostname: String,
}

/// A message to hand over: one job per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// `MAIL FROM`; empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
}

/// What the server must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Write this reply.
    Reply(Reply),
    /// Hand the mail over, then write one reply per recipient, in order
    /// ([`recipient_reply`]).
    Deliver(Mail),
    /// Write this reply and close the connection.
    Close(Reply),
}

#[derive(Debug)]
enum Phase {
    /// Before LHLO.
    Fresh,
    /// Greeted, no transaction.
    Ready,
    /// MAIL accepted; RCPTs gather in `recipients`.
    Mail,
    /// Reading the message.
    Data(DataDecoder),
}

/// One session's state.
#[derive(Debug)]
pub struct Session {
    limits: Limits,
    phase: Phase,
    sender: String,
    /// The client's `SIZE=` announcement, to size the message buffer once.
    size: Option<u64>,
    recipients: Vec<String>,
    /// Inside a command line over [`MAX_LINE`]: skipped to its end, then refused.
    overlong: bool,
    /// Replies owed before reading on (one per recipient of a refused message).
    pending: VecDeque<Event>,
}

impl Session {
    pub fn new(limits: Limits) -> Session {
        Session {
            limits,
            phase: Phase::Fresh,
            sender: String::new(),
            size: None,
            recipients: Vec::new(),
            overlong: false,
            pending: VecDeque::new(),
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            vec![format!("{} LMTP Go!Chat ready", self.limits.hostname).into()],
        )
    }

    /// Reading a message: the session is busy, not idle, and the read timeout applies.
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_))
    }

    /// The next event from what `input` holds, consuming the bytes it used; `None` when
    /// more input is needed.
    pub fn next(&mut self, input: &mut Vec<u8>) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        if let Phase::Data(decoder) = &mut self.phase {
            let (used, done) = decoder.feed(input);
            input.drain(..used);
            return done.map(|d| self.message_end(d));
        }
        let Some(end) = input.iter().position(|b| *b == b'\n') else {
            if input.len() >= MAX_LINE {
                self.overlong = true;
                input.clear();
            }
            return None;
        };
        let mut line: Vec<u8> = input.drain(..=end).collect();
        if std::mem::take(&mut self.overlong) || line.len() > MAX_LINE {
            return Some(Event::Reply(Reply::new(500, "5.5.2", "Line too long")));
        }
        // CRLF, or leniently a bare LF.
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(match command::parse(&line) {
            Ok(cmd) => self.command(cmd),
            Err(e) => Event::Reply(e.reply()),
        })
    }

    fn command(&mut self, cmd: Command) -> Event {
        let reply = match cmd {
            Command::Lhlo => {
                self.reset();
                self.phase = Phase::Ready;
                Reply::plain(
                    250,
                    vec![
                        self.limits.hostname.clone().into(),
                        "PIPELINING".into(),
                        "ENHANCEDSTATUSCODES".into(),
                        "8BITMIME".into(),
                        format!("SIZE {}", self.limits.max_size).into(),
                    ],
                )
            }
            Command::Mail { sender, size } => match self.phase {
                Phase::Fresh => bad_sequence("Send LHLO first"),
                Phase::Mail | Phase::Data(_) => bad_sequence("Nested MAIL command"),
                Phase::Ready if size.is_some_and(|s| s > self.limits.max_size) => too_large(),
                Phase::Ready => {
                    self.phase = Phase::Mail;
                    self.sender = sender;
                    self.size = size;
                    Reply::new(250, "2.1.0", "Ok")
                }
            },
            Command::Rcpt { recipient } => match self.phase {
                Phase::Mail if self.recipients.len() >= MAX_RECIPIENTS => {
                    Reply::new(452, "4.5.3", "Too many recipients")
                }
                Phase::Mail => {
                    self.recipients.push(recipient);
                    Reply::new(250, "2.1.5", "Ok")
                }
                _ => bad_sequence("Need MAIL before RCPT"),
            },
            Command::Data => match self.phase {
                Phase::Mail if self.recipients.is_empty() => bad_sequence("No valid recipients"),
                Phase::Mail => {
                    self.phase = Phase::Data(DataDecoder::new(self.limits.max_size, self.size));
                    Reply::plain(354, vec!["Start mail input; end with <CRLF>.<CRLF>".into()])
                }
                _ => bad_sequence("Need MAIL and RCPT before DATA"),
            },
            Command::Rset => {
                self.reset();
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Vrfy => Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Quit => return Event::Close(Reply::new(221, "2.0.0", "Bye")),
        };
        Event::Reply(reply)
    }

    /// The transaction ends with its message, whatever becomes of it.
    fn message_end(&mut self, decoded: Decoded) -> Event {
        let sender = std::mem::take(&mut self.sender);
        let recipients = std::mem::take(&mut self.recipients);
        self.reset();
        let refusal = match decoded {
            Decoded::Message(raw) if !raw.is_empty() => {
                return Event::Deliver(Mail {
                    sender,
                    recipients,
                    raw,
                });
            }
            Decoded::Message(_) => Reply::new(554, "5.6.0", "Empty message refused"),
            Decoded::TooLarge => too_large(),
        };
        self.pending
            .extend(recipients.iter().map(|_| Event::Reply(refusal.clone())));
        self.pending.pop_front().unwrap_or(Event::Reply(refusal))
    }

    fn reset(&mut self) {
        self.sender.clear();
        self.size = None;
        self.recipients.clear();
        if !matches!(self.phase, Phase::Fresh) {
            self.phase = Phase::Ready;
        }
    }
}

/// The reply for one recipient once its job was published: `250` only when the broker
/// confirmed it; otherwise `451`, and the MTA keeps the mail for that recipient and retries.
pub fn recipient_reply(recipient: &str, outcome: &Result<String, impl std::fmt::Display>) -> Reply {
    match outcome {
        Ok(job_id) => Reply::new(250, "2.0.0", format!("<{recipient}> queued as {job_id}")),
        Err(e) => Reply::new(
            451,
            "4.3.0",
            format!("<{recipient}> not queued, try again later: {e}"),
        ),
    }
}

fn bad_sequence(why: &str) -> Reply {
    Reply::new(503, "5.5.1", format!("Bad sequence of commands: {why}"))
}

fn too_large() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}

#[cfg(test)]
mod tests;
