//! What every classification rule reads, computed once per message: the top-level parts and
//! their text (text-like parts only), the `report-type` of a `multipart/report`, what the
//! bounced original says about itself (from an attached message, a `text/rfc822-headers`
//! part or headers quoted after the notice), and who sent the message (null sender, mail
//! delivery agent). Built once, so that no rule walks the MIME tree again.

use mail_parser::{HeaderName, Message, MimeHeaders, PartType};

use super::Envelope;
use super::notice::notice_text;
use super::text::addresses_in;
use crate::mail::parse::{self, ParsedMail};

/// What the rules read, computed once.
pub(super) struct Ctx<'a> {
    pub(super) mail: &'a ParsedMail,
    pub(super) envelope: &'a Envelope<'a>,
    /// `report-type` of a top-level `multipart/report`, lower case.
    pub(super) report_type: Option<String>,
    /// Top-level parts (not inside attached messages): content type and text.
    parts: Vec<(String, String)>,
    /// The first attached message (`message/rfc822`), for the original's Message-ID.
    pub(super) original: Option<Original>,
    pub(super) subject: String,
    from: String,
    pub(super) text: &'a str,
    /// The raw bytes after the outer header block.
    pub(super) body: &'a [u8],
}

/// What the bounced message tells about itself.
pub(super) struct Original {
    pub(super) message_id: Option<String>,
    pub(super) recipients: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Reads `bytes` (the message as mail-parser sees it) and `tree` (its MIME tree, `None`
    /// without a header block) once for every rule.
    pub(super) fn new(
        mail: &'a ParsedMail,
        bytes: &'a [u8],
        tree: Option<&Message<'_>>,
        envelope: &'a Envelope<'a>,
    ) -> Self {
        let mut parts = Vec::new();
        let mut original = None;
        let mut report_type = None;
        if let Some(tree) = tree {
            report_type = tree.parts.first().and_then(|root| {
                let ct = root.content_type()?;
                (ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("report")))
                .then(|| ct.attribute("report-type"))
                .flatten()
                .map(|r| r.trim().to_ascii_lowercase())
            });
            for part in tree.parts.iter().skip(1) {
                if let PartType::Multipart(_) = part.body {
                    continue;
                }
                let ct = parse::content_type_of(part);
                if original.is_none()
                    && let PartType::Message(m) = &part.body
                    && !m.parts.is_empty()
                {
                    let mut recipients: Vec<String> = m
                        .all_to()
                        .chain(m.all_cc())
                        .flat_map(|a| a.iter())
                        .filter_map(|a| a.address())
                        .map(str::to_lowercase)
                        .collect();
                    recipients.dedup();
                    original = Some(Original {
                        message_id: m
                            .parts
                            .first()
                            .and_then(|root| parse::first_value(root, HeaderName::MessageId))
                            .and_then(parse::first_id)
                            .and_then(parse::clean_id),
                        recipients,
                    });
                }
                // A 30 MB PDF is not a report: only text-like parts are read.
                let text = if is_report_like(&ct) {
                    parse::part_text(part).into_owned()
                } else {
                    String::new()
                };
                parts.push((ct, text));
            }
        }
        if original.is_none()
            && let Some((_, headers)) = parts.iter().find(|(ct, _)| ct == "text/rfc822-headers")
        {
            original = Some(Original {
                message_id: header_in_block(headers, "message-id")
                    .and_then(|v| parse::clean_id(&v)),
                recipients: ["to", "cc"]
                    .iter()
                    .filter_map(|h| header_in_block(headers, h))
                    .flat_map(|v| addresses_in(&v))
                    .collect(),
            });
        }
        let text = mail.text.as_deref().unwrap_or("");
        if original.is_none() {
            original = quoted_original(&text[notice_text(text).len()..]);
        }
        Ctx {
            mail,
            envelope,
            report_type,
            parts,
            original,
            subject: mail.subject.to_lowercase(),
            from: mail.header("From").unwrap_or("").to_lowercase(),
            text,
            body: parse::find(bytes, b"\n\n")
                .or_else(|| parse::find(bytes, b"\n\r\n"))
                .map_or(&[][..], |end| &bytes[end..]),
        }
    }

    /// The text of the first top-level part of one of `content_types`.
    pub(super) fn part(&self, content_types: &[&str]) -> Option<&str> {
        self.parts
            .iter()
            .find(|(ct, _)| content_types.contains(&ct.as_str()))
            .map(|(_, t)| t.as_str())
    }

    /// True when the envelope sender (or, when unknown, Return-Path) is the null sender.
    pub(super) fn null_sender(&self) -> bool {
        let null = |s: &str| matches!(s.trim(), "" | "<>");
        match self.envelope.from {
            Some(f) => null(f),
            None => self.mail.header("Return-Path").is_some_and(null),
        }
    }

    /// Evidence that a mail delivery agent, not a person, sent this.
    pub(super) fn delivery_agent(&self) -> bool {
        const NAMES: &[&str] = &[
            "mailer-daemon",
            "mailer daemon",
            "mailer_daemon",
            "maildaemon",
            "mail-daemon",
            "postmaster",
            "mail delivery",
            "mail deliver system",
            "delivery subsystem",
            "mail.delivery.system",
        ];
        let return_path = self.mail.header("Return-Path").unwrap_or("").to_lowercase();
        self.null_sender()
            || NAMES.iter().any(|n| self.from.contains(n))
            || self.from.contains("<>")
            || return_path.contains("mailer-daemon")
    }
}

/// Text and report parts (`message/delivery-status`, `text/rfc822-headers`...): the parts a
/// rule reads as text. An attached message is not one: its headers are read into `Original`.
fn is_report_like(ct: &str) -> bool {
    ct.starts_with("text/") || ct.starts_with("message/") && ct != "message/rfc822"
}

/// The bounced message's headers quoted in the text after the notice: the block that starts
/// at the first header line.
fn quoted_original(rest: &str) -> Option<Original> {
    let start = rest.lines().position(|l| {
        l.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    })?;
    let block = rest.lines().skip(start).collect::<Vec<_>>().join("\n");
    let message_id = header_in_block(&block, "message-id").and_then(|v| parse::clean_id(&v));
    let mut recipients: Vec<String> = ["to", "cc"]
        .iter()
        .filter_map(|h| header_in_block(&block, h))
        .flat_map(|v| addresses_in(&v))
        .collect();
    recipients.dedup();
    (message_id.is_some() || !recipients.is_empty()).then_some(Original {
        message_id,
        recipients,
    })
}

/// A header in a header block given as text, unfolded.
fn header_in_block(block: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in block.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}
