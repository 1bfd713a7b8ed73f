//! Parsing one raw inbound message (RFC 5322 + MIME) into what the worker stores: threading
//! ids, parties, subject, date, a text body, sanitised HTML, attachments, every top-level
//! header and a list of defects. Pure: no database, no network.
//!
//! Real mail is messy, so [`parse`] never panics and refuses only empty input and binary
//! input without any header block; everything else parses (text without headers becomes a
//! body-only message), and `defects` says what was odd (no Message-ID, an unknown charset, a
//! missing closing boundary, 8-bit header bytes...). MIME decoding is `mail-parser`'s (with
//! its full charset tables); a charset it does not know falls back to lossy UTF-8. A header
//! given twice counts by its first occurrence.
//!
//! What counts as an attachment: every leaf part of the outer message that is not its text
//! or HTML body, including a `message/delivery-status` report part. An attached message
//! (`message/rfc822`: a forwarded mail, the original in a bounce, an `.eml`) is ONE
//! attachment of the outer mail, its raw bytes kept whole; the attachments inside it belong
//! to it and are not listed, so a bounce does not present the bounced mail's files as the
//! bounce's own. Text attachments are stored as UTF-8 (mail-parser decodes their charset).
//! Text parts marked `inline` are body text even when they carry a file name, as mail
//! clients show them; inline images (a `Content-ID` with `inline` disposition, or one the
//! HTML refers to by `cid:`) are attachments with `inline: true`.
//!
//! Where the parts live: `raw` gets from raw bytes to mail-parser's MIME tree (or to a
//! body-only message), `headers` decodes header values, ids and addresses, `body` the text
//! and HTML bodies, `attachments` the attachments and their file names, and `defects`
//! notes what was odd.

mod attachments;
mod body;
mod defects;
mod headers;
mod raw;

use chrono::{DateTime, Utc};
use mail_parser::{HeaderName, HeaderValue, Message, MimeHeaders};
use sha2::{Digest, Sha256};

use super::html;
use super::mime::Party;
use attachments::attachments;
use body::bodies;
use defects::{header_block_defects, part_defects};
use headers::{first_text, ids, one_line, parties};
use raw::headerless;

pub use attachments::safe_file_name;

// Crate-internal helpers, kept at the paths they had before the split (`classify` reads
// most of them).
pub(crate) use attachments::content_type_of;
pub(crate) use body::part_text;
pub(crate) use headers::{clean_id, first_id, first_value, header_list};
pub(crate) use raw::{find, message_bytes, mime_tree};

/// A parsed inbound message. See the module doc for what is an attachment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedMail {
    /// Without angle brackets, trimmed; `None` when absent or empty (a defect is recorded).
    pub message_id: Option<String>,
    /// Message-IDs without brackets: the first place to look for the thread answered.
    pub in_reply_to: Vec<String>,
    /// Oldest first, without brackets, deduplicated: the fallback for thread matching when
    /// In-Reply-To names a message we never stored.
    pub references: Vec<String>,
    pub from: Option<Party>,
    pub reply_to: Option<Party>,
    pub to: Vec<Party>,
    pub cc: Vec<Party>,
    /// RFC 2047 decoded, `""` when absent, control characters (CR, LF, TAB...) turned into
    /// spaces: an encoded `\r\nBcc:` stays data and can never reach an outgoing header.
    pub subject: String,
    pub date: Option<DateTime<Utc>>,
    /// First tag of Content-Language: a hint for the reply template's language.
    pub content_language: Option<String>,
    /// The text body; derived from the HTML when the mail has only HTML. NUL-free.
    pub text: Option<String>,
    /// Sanitised HTML (see [`html::sanitize`]), safe for display. NUL-free.
    pub html: Option<String>,
    pub attachments: Vec<ParsedAttachment>,
    /// Every top-level header: name as written, value unfolded and RFC 2047 decoded, in
    /// order. Classification reads these.
    pub headers: Vec<(String, String)>,
    /// Raw size in bytes, for size limits and the inbox.
    pub size: usize,
    /// What was odd but survived, for diagnosing a strange message later.
    pub defects: Vec<String>,
}

impl ParsedMail {
    /// The first header of that name (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// SHA-256 of the raw message, lower-case hex: the de-duplication key for redelivered
    /// mail that has no (or a reused) Message-ID.
    pub fn sha256_hex(raw: &[u8]) -> String {
        sha256_hex(raw)
    }

    /// Escapes the control characters of every text field (see [`crate::text`]): all of
    /// them are stored, and a NUL from a crafted header must not fail the insert.
    fn escape_controls(&mut self) {
        use crate::text::escape_in_place as esc;
        let ids = self.message_id.iter_mut().chain(&mut self.in_reply_to);
        ids.chain(&mut self.references).for_each(esc);
        let parties = self.from.iter_mut().chain(&mut self.reply_to);
        for p in parties.chain(&mut self.to).chain(&mut self.cc) {
            esc(&mut p.address);
            p.name.iter_mut().for_each(esc);
        }
        esc(&mut self.subject);
        let bodies = self.content_language.iter_mut().chain(&mut self.text);
        bodies.chain(&mut self.html).for_each(esc);
        for a in &mut self.attachments {
            esc(&mut a.name);
            esc(&mut a.content_type);
            a.content_id.iter_mut().for_each(esc);
        }
        for (name, value) in &mut self.headers {
            esc(name);
            esc(value);
        }
        self.defects.iter_mut().for_each(esc);
    }
}

/// One attachment of the outer message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedAttachment {
    /// Safe to use as a file name: no path separators, no control characters, no leading
    /// dot; generated (`attachment-2.bin`) when the mail gives none.
    pub name: String,
    /// `type/subtype`, lower case, without parameters.
    pub content_type: String,
    /// The decoded content, whole.
    pub data: Vec<u8>,
    /// Shown inside the HTML (a `cid:` image), not in the attachment list.
    pub inline: bool,
    /// Without angle brackets.
    pub content_id: Option<String>,
}

/// The longest Message-ID kept as a threading key (longer ones are no real ids, and could
/// not be written into a reply's headers: see [`crate::mail::mime::MAX_ID_LEN`]).
pub const MAX_ID_LEN: usize = crate::mail::mime::MAX_ID_LEN;

/// The most `References` ids kept: the first and the latest (a crafted mail may list
/// thousands; threading needs the newest, and the first names the conversation).
pub const MAX_STORED_REFERENCES: usize = 100;

/// `references` without over-long ids, trimmed to the first and the latest ones.
fn stored_references(mut references: Vec<String>) -> Vec<String> {
    references.retain(|id| id.len() <= MAX_ID_LEN);
    if references.len() > MAX_STORED_REFERENCES {
        let first = references[0].clone();
        references.drain(..references.len() - (MAX_STORED_REFERENCES - 1));
        references.insert(0, first);
    }
    references
}

/// Why a byte string is not a message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("not a mail message: {0}")]
    NotAMessage(String),
}

/// SHA-256 of `raw`, lower-case hex.
pub fn sha256_hex(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// Parses a raw message. Errors only when there is nothing that can be called a message:
/// empty input, or binary input without a header block.
pub fn parse(raw: &[u8]) -> Result<ParsedMail, ParseError> {
    parse_with_tree(raw).map(|(mail, _)| mail)
}

/// [`parse`], also giving the MIME tree the mail was read from (`None` for input without a
/// header block), so that the classifier reads the same tree instead of parsing the mail a
/// second time.
pub fn parse_with_tree(raw: &[u8]) -> Result<(ParsedMail, Option<Message<'_>>), ParseError> {
    let (mut mail, tree) = parse_unescaped(raw)?;
    mail.escape_controls();
    Ok((mail, tree))
}

/// [`parse_with_tree`] before its texts are made storable.
fn parse_unescaped(raw: &[u8]) -> Result<(ParsedMail, Option<Message<'_>>), ParseError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let (bytes, leading_blank) = message_bytes(raw);
    let Some(message) = mime_tree(bytes) else {
        return headerless(raw, bytes).map(|mail| (mail, None));
    };
    let mut defects = Vec::new();
    if leading_blank {
        defects.push("blank lines before the headers".to_owned());
    }
    let Some(root) = message.parts.first() else {
        return headerless(raw, bytes).map(|mail| (mail, None));
    };
    let headers = header_list(root, bytes, &mut defects);
    header_block_defects(bytes, &mut defects);

    let first = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let subject = first("Subject").map(one_line).unwrap_or_default();

    // A header given twice counts by its first occurrence (mail-parser's accessors take the
    // last), like `ParsedMail::header`.
    let first_of = |name: HeaderName<'static>| first_value(root, name);
    let message_id = first_of(HeaderName::MessageId)
        .and_then(first_id)
        .and_then(clean_id);
    let message_id = message_id.filter(|id| {
        let fits = id.len() <= MAX_ID_LEN;
        if !fits {
            defects.push(format!(
                "a Message-ID of {} characters ignored (over {MAX_ID_LEN})",
                id.len()
            ));
        }
        fits
    });
    if message_id.is_none() {
        defects.push("no Message-ID".to_owned());
    }
    let empty = HeaderValue::Empty;
    let mut in_reply_to = ids(first_of(HeaderName::InReplyTo).unwrap_or(&empty));
    in_reply_to.retain(|id| id.len() <= MAX_ID_LEN);
    let references = stored_references(ids(first_of(HeaderName::References).unwrap_or(&empty)));

    let from = first_of(HeaderName::From)
        .and_then(HeaderValue::as_address)
        .and_then(|a| parties(a).into_iter().next());
    if from.is_none() {
        defects.push(if first("From").is_some() {
            "From has no usable address".to_owned()
        } else {
            "no From".to_owned()
        });
    }
    let reply_to = first_of(HeaderName::ReplyTo)
        .and_then(HeaderValue::as_address)
        .and_then(|a| parties(a).into_iter().next());
    let to = message.all_to().flat_map(parties).collect();
    let cc = message.all_cc().flat_map(parties).collect();

    let date = match first_of(HeaderName::Date).and_then(HeaderValue::as_datetime) {
        Some(d) if d.is_valid() => DateTime::from_timestamp(d.to_timestamp(), 0),
        _ => None,
    };
    if date.is_none() {
        defects.push(if first("Date").is_some() {
            "unparsable Date".to_owned()
        } else {
            "no Date".to_owned()
        });
    }

    let content_language = first_of(HeaderName::ContentLanguage)
        .and_then(first_text)
        .or_else(|| {
            message
                .text_body
                .first()
                .and_then(|&id| message.parts.get(id as usize))
                .and_then(|p| first_text(p.content_language()))
        });

    part_defects(&message, bytes, &mut defects);
    let body::Bodies {
        text,
        html,
        unsafe_html,
    } = bodies(&message, &mut defects);
    let mut attachments = attachments(&message, bytes, html.as_deref());
    if let Some(raw_html) = unsafe_html {
        attachments.push(ParsedAttachment {
            name: body::UNSAFE_HTML_NAME.to_owned(),
            content_type: "text/html".to_owned(),
            data: raw_html.into_bytes(),
            inline: false,
            content_id: None,
        });
    }

    let mail = ParsedMail {
        message_id,
        in_reply_to,
        references,
        from,
        reply_to,
        to,
        cc,
        subject,
        date,
        content_language,
        text,
        html,
        attachments,
        headers,
        size: raw.len(),
        defects,
    };
    Ok((mail, Some(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` with CRLF line ends, as mail travels.
    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    const SIMPLE: &str = "From: =?utf-8?q?Ada_L=C3=B6velace?= <Ada@Example.org>
To: Support <support@gochat.example>, bob@example.org
Cc: carol@example.org
Reply-To: ada.replies@example.org
Subject: =?utf-8?b?SGVsbG8gV8O2cmxk?= again
Date: Tue, 1 Jul 2025 10:00:00 +0200
Message-ID:  <abc.123@example.org> 
In-Reply-To: <0197c0de.ffff@gochat.example>
References: <first@example.org> <0197c0de.ffff@gochat.example>
 <first@example.org>
Content-Language: de-DE, en
Content-Type: text/plain; charset=utf-8

Hallo!
";

    #[test]
    fn a_plain_message_yields_its_fields() {
        let raw = crlf(SIMPLE);
        let m = parse(&raw).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("abc.123@example.org"));
        assert_eq!(m.in_reply_to, vec!["0197c0de.ffff@gochat.example"]);
        assert_eq!(
            m.references,
            vec!["first@example.org", "0197c0de.ffff@gochat.example"]
        );
        let from = m.from.as_ref().unwrap();
        assert_eq!(from.name.as_deref(), Some("Ada Lövelace"));
        assert_eq!(from.address, "Ada@Example.org");
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.to[0].name.as_deref(), Some("Support"));
        assert_eq!(m.cc[0].address, "carol@example.org");
        assert_eq!(
            m.reply_to.as_ref().unwrap().address,
            "ada.replies@example.org"
        );
        assert_eq!(m.subject, "Hello Wörld again");
        assert_eq!(m.date.unwrap().to_rfc3339(), "2025-07-01T08:00:00+00:00");
        assert_eq!(m.content_language.as_deref(), Some("de-DE"));
        assert_eq!(m.text.as_deref().map(str::trim), Some("Hallo!"));
        assert!(m.html.is_none());
        assert!(m.attachments.is_empty());
        assert_eq!(m.size, raw.len());
        assert!(m.defects.is_empty(), "{:?}", m.defects);
        assert_eq!(m.header("message-id"), Some("<abc.123@example.org>"));
        assert_eq!(m.header("SUBJECT"), Some("Hello Wörld again"));
        assert_eq!(m.headers[0].0, "From");
        assert_eq!(m.headers_named("to").count(), 1);
    }

    #[test]
    fn over_long_ids_are_no_threading_keys() {
        let long = "x".repeat(300);
        let refs: String = (0..150).map(|i| format!(" <r{i}@x>")).collect();
        let raw = format!(
            "From: a@example.org\nMessage-ID: <{long}@x>\nIn-Reply-To: <{long}@y> <ok@y>\nReferences:{refs} <{long}@z>\n\nhi\n"
        );
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.message_id, None);
        assert!(
            m.defects
                .iter()
                .any(|d| d.contains("Message-ID of 302 characters")),
            "{:?}",
            m.defects
        );
        assert_eq!(m.in_reply_to, vec!["ok@y"]);
        assert_eq!(m.references.len(), MAX_STORED_REFERENCES);
        assert_eq!(m.references[0], "r0@x");
        assert_eq!(m.references[1], "r51@x");
        assert_eq!(m.references.last().map(String::as_str), Some("r149@x"));
    }

    #[test]
    fn an_empty_body_parses() {
        let m = parse(b"From: a@example.org\nSubject: nothing\n\n").unwrap();
        assert!(m.text.is_none());
        assert!(m.html.is_none());
        assert_eq!(m.subject, "nothing");
        let m = parse(b"Subject: no body at all").unwrap();
        assert_eq!(m.subject, "no body at all");
        assert!(m.text.is_none());
    }

    #[test]
    fn sha256_is_hex_of_the_raw_bytes() {
        assert_eq!(
            ParsedMail::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A small deterministic generator: the same inputs on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Pure noise, noise biased towards mail syntax, and mutations of a real message.
        let alphabet = b"From:Subject:Content-Type: multipart/mixed; boundary=\"=?utf-8?b?q?\r\n\t --=<>@;,\x00\xff\xc3";
        let seed = crlf(SIMPLE);
        let mime = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y\nAction: failed\n--b\nContent-Type: message/rfc822\n\nFrom: x\n\n--b--\n";
        for round in 0..3000 {
            let len = (rng.next() % 600) as usize;
            let input: Vec<u8> = match round % 3 {
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                1 => (0..len)
                    .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                    .collect(),
                _ => {
                    let base: &[u8] = if round % 2 == 0 { &seed } else { mime };
                    let mut v = base.to_vec();
                    for _ in 0..(1 + rng.next() % 8) {
                        let at = (rng.next() as usize) % v.len();
                        match rng.next() % 3 {
                            0 => v[at] = rng.next() as u8,
                            1 => {
                                v.remove(at);
                            }
                            _ => v.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
                        }
                    }
                    v
                }
            };
            if let Ok(m) = parse(&input) {
                assert!(!m.subject.contains(['\r', '\n']));
                let class = crate::mail::classify::classify(
                    &m,
                    &input,
                    &crate::mail::classify::Envelope::default(),
                );
                let _ = class;
            }
        }
    }
}
