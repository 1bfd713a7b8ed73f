//! Building an outbound message: `multipart/alternative` text + HTML (inside
//! `multipart/mixed` with attachments), a unique unguessable Message-ID in our domain,
//! threading headers, `Auto-Submitted` on automatic mail, RFC 2047 for non-ASCII names and
//! subjects (lettre encodes them), and a VERP envelope sender so a bounce names the message.
//!
//! Every value that reaches a header is checked for CR and LF first: a subject or a name
//! carrying `\r\nBcc: someone` is refused, never sent (header injection).

use std::time::SystemTime;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use uuid::Uuid;

/// An address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub name: Option<String>,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAttachment {
    pub name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// Everything a message is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub from: Party,
    pub reply_to: Option<Party>,
    pub to: Vec<Party>,
    pub cc: Vec<Party>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// With angle brackets: `<id@domain>`.
    pub message_id: String,
    /// The message answered, with angle brackets.
    pub in_reply_to: Option<String>,
    /// The thread's history, oldest first, with angle brackets.
    pub references: Vec<String>,
    /// Reminders and notifications: `Auto-Submitted: auto-generated` and
    /// `X-Auto-Response-Suppress: All`, so well-behaved auto-responders stay quiet.
    pub automatic: bool,
    pub attachments: Vec<MailAttachment>,
    pub date: SystemTime,
    /// The SMTP envelope sender (VERP: bounces come back to it).
    pub envelope_from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("{what} contains a line break (header injection refused)")]
    LineBreak { what: String },
    #[error("{what}: {address:?} is not a valid e-mail address")]
    Address { what: String, address: String },
    #[error("the message has no recipient")]
    NoRecipient,
    #[error("attachment {name:?}: content type {content_type:?} is invalid")]
    ContentType { name: String, content_type: String },
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// A new Message-ID in `domain`: time-ordered and random, so it is unique and cannot be
/// guessed to forge a reply into a thread.
pub fn new_message_id(domain: &str) -> String {
    format!(
        "<{}.{:032x}@{}>",
        Uuid::now_v7().simple(),
        rand::random::<u128>(),
        domain
    )
}

/// The VERP envelope sender for a message: `bounces+<message uuid>@<domain>`.
pub fn verp_sender(message: Uuid, domain: &str) -> String {
    format!("bounces+{}@{}", message.simple(), domain)
}

fn no_line_break(what: &str, value: &str) -> Result<(), MimeError> {
    if value.contains(['\r', '\n']) {
        Err(MimeError::LineBreak { what: what.into() })
    } else {
        Ok(())
    }
}

fn mailbox(what: &str, p: &Party) -> Result<Mailbox, MimeError> {
    no_line_break(what, &p.address)?;
    if let Some(n) = &p.name {
        no_line_break(&format!("{what} name"), n)?;
    }
    let address: Address = p.address.trim().parse().map_err(|_| MimeError::Address {
        what: what.into(),
        address: p.address.clone(),
    })?;
    Ok(Mailbox::new(p.name.clone(), address))
}

fn raw_header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_owned())
}

/// The longest Message-ID written into `In-Reply-To` or `References`. A Message-ID cannot
/// be folded, so a longer one (a crafted inbound mail's, stored on the thread) would make
/// every reply on that thread fail with "line too long" (RFC 5322: 998 characters a line).
pub const MAX_ID_LEN: usize = 250;

/// The most Message-IDs written into `References`: the first and the latest ones, as RFC
/// 5322 §3.6.4 suggests for long threads.
pub const MAX_REFERENCES: usize = 20;

/// `references` without over-long ids, trimmed to the first and the latest
/// [`MAX_REFERENCES`] − 1.
pub fn trimmed_references(references: &[String]) -> Vec<&str> {
    let usable: Vec<&str> = references
        .iter()
        .map(String::as_str)
        .filter(|r| r.len() <= MAX_ID_LEN)
        .collect();
    if usable.len() <= MAX_REFERENCES {
        return usable;
    }
    let mut kept = vec![usable[0]];
    kept.extend_from_slice(&usable[usable.len() - (MAX_REFERENCES - 1)..]);
    kept
}

/// Builds the message, its SMTP envelope (the VERP sender, every To and Cc) included.
pub fn build(m: &OutgoingMail) -> Result<Message, MimeError> {
    if m.to.is_empty() && m.cc.is_empty() {
        return Err(MimeError::NoRecipient);
    }
    no_line_break("subject", &m.subject)?;
    no_line_break("Message-ID", &m.message_id)?;
    if let Some(r) = &m.in_reply_to {
        no_line_break("In-Reply-To", r)?;
    }
    for r in &m.references {
        no_line_break("References", r)?;
    }
    let mut b = Message::builder()
        .from(mailbox("From", &m.from)?)
        .subject(m.subject.clone())
        .message_id(Some(m.message_id.clone()))
        .date(m.date);
    if let Some(r) = &m.reply_to {
        b = b.reply_to(mailbox("Reply-To", r)?);
    }
    for p in &m.to {
        b = b.to(mailbox("To", p)?);
    }
    for p in &m.cc {
        b = b.cc(mailbox("Cc", p)?);
    }
    if let Some(r) = m.in_reply_to.as_ref().filter(|r| r.len() <= MAX_ID_LEN) {
        b = b.in_reply_to(r.clone());
    }
    let references = trimmed_references(&m.references);
    if !references.is_empty() {
        b = b.references(references.join(" "));
    }
    if m.automatic {
        b = b
            .raw_header(raw_header("Auto-Submitted", "auto-generated"))
            .raw_header(raw_header("X-Auto-Response-Suppress", "All"));
    }
    let envelope_from: Address = m.envelope_from.parse().map_err(|_| MimeError::Address {
        what: "envelope sender".into(),
        address: m.envelope_from.clone(),
    })?;
    let recipients =
        m.to.iter()
            .chain(&m.cc)
            .map(|p| {
                p.address
                    .trim()
                    .parse::<Address>()
                    .map_err(|_| MimeError::Address {
                        what: "recipient".into(),
                        address: p.address.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
    let envelope = lettre::address::Envelope::new(Some(envelope_from), recipients)
        .map_err(|e| MimeError::Build(e.to_string()))?;
    b = b.envelope(envelope);

    let plain = || SinglePart::plain(m.text.clone());
    let alternative = m
        .html
        .as_ref()
        .map(|html| MultiPart::alternative_plain_html(m.text.clone(), html.clone()));
    let built = if m.attachments.is_empty() {
        match alternative {
            Some(alt) => b.multipart(alt),
            None => b.singlepart(plain()),
        }
    } else {
        let mut mixed = match alternative {
            Some(alt) => MultiPart::mixed().multipart(alt),
            None => MultiPart::mixed().singlepart(plain()),
        };
        for a in &m.attachments {
            no_line_break("attachment name", &a.name)?;
            let ct = ContentType::parse(&a.content_type).map_err(|_| MimeError::ContentType {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
            })?;
            mixed = mixed.singlepart(Attachment::new(a.name.clone()).body(a.content.clone(), ct));
        }
        b.multipart(mixed)
    };
    built.map_err(|e| MimeError::Build(e.to_string()))
}
