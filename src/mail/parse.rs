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

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Address, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};
use sha2::{Digest, Sha256};

use super::html;
use super::mime::Party;

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

/// Why a byte string is not a message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("not a mail message: {0}")]
    NotAMessage(String),
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
}

/// SHA-256 of `raw`, lower-case hex.
pub fn sha256_hex(raw: &[u8]) -> String {
    Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes mail-parser should see: an mbox `From ` separator line and leading blank lines
/// removed (both are common in stored mail and would otherwise hide the headers).
pub(crate) fn message_bytes(raw: &[u8]) -> (&[u8], bool) {
    let mut bytes = raw;
    if bytes.starts_with(b"From ") {
        bytes = match bytes.iter().position(|&b| b == b'\n') {
            Some(nl) => &bytes[nl + 1..],
            None => &[],
        };
    }
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    (&bytes[start..], start > 0)
}

/// The MIME tree as mail-parser reads it. mail-parser is fuzzed and documented not to panic,
/// but it is third-party code fed hostile input: a panic here becomes "not parsed" rather
/// than a crashed worker.
///
/// `None` when there is no header block: mail-parser takes any bytes up to a `:` (or the
/// end) as a header name, so at least one field name must be well-formed (printable ASCII,
/// followed by a colon) for the input to count as having headers.
pub(crate) fn mime_tree(bytes: &[u8]) -> Option<Message<'_>> {
    catch_unwind(AssertUnwindSafe(|| MessageParser::default().parse(bytes)))
        .ok()
        .flatten()
        .filter(|m| {
            m.parts.first().is_some_and(|p| {
                p.headers.iter().any(|h| {
                    let field = bytes
                        .get(h.offset_field as usize..h.offset_start as usize)
                        .unwrap_or_default();
                    let name = field.strip_suffix(b":").unwrap_or_default();
                    let name = name.trim_ascii_end();
                    !name.is_empty() && name.iter().all(|b| (33..=126).contains(b) && *b != b':')
                })
            })
        })
}

/// Parses a raw message. Errors only when there is nothing that can be called a message:
/// empty input, or binary input without a header block.
pub fn parse(raw: &[u8]) -> Result<ParsedMail, ParseError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let (bytes, leading_blank) = message_bytes(raw);
    let Some(message) = mime_tree(bytes) else {
        return headerless(raw, bytes);
    };
    let mut defects = Vec::new();
    if leading_blank {
        defects.push("blank lines before the headers".to_owned());
    }
    let Some(root) = message.parts.first() else {
        return headerless(raw, bytes);
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
    if message_id.is_none() {
        defects.push("no Message-ID".to_owned());
    }
    let empty = HeaderValue::Empty;
    let in_reply_to = ids(first_of(HeaderName::InReplyTo).unwrap_or(&empty));
    let references = ids(first_of(HeaderName::References).unwrap_or(&empty));

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
    let (text, html) = bodies(&message, &mut defects);
    let attachments = attachments(&message, bytes, html.as_deref());

    Ok(ParsedMail {
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
    })
}

/// Input without a header block. Text (a body whose headers were lost, a fragment piped in
/// by hand) is kept as a message with only a body, so nothing a person wrote is dropped;
/// anything else (binary data) is not a message.
fn headerless(raw: &[u8], bytes: &[u8]) -> Result<ParsedMail, ParseError> {
    let printable = bytes
        .iter()
        .filter(|&&b| b >= 0x20 || matches!(b, b'\t' | b'\r' | b'\n'))
        .count();
    let text_like = !bytes.contains(&0)
        && (std::str::from_utf8(bytes).is_ok() || printable * 10 >= bytes.len() * 9);
    if !text_like {
        return Err(ParseError::NotAMessage(
            "no header block, and the content is not text".into(),
        ));
    }
    let text = String::from_utf8_lossy(bytes).into_owned();
    Ok(ParsedMail {
        subject: String::new(),
        text: (!text.trim().is_empty()).then_some(text),
        size: raw.len(),
        defects: vec![
            "no header block: the whole input is the body".to_owned(),
            "no Message-ID".to_owned(),
            "no From".to_owned(),
            "no Date".to_owned(),
        ],
        ..ParsedMail::default()
    })
}

/// Every header of a part: name as written, value decoded. 8-bit bytes that are not UTF-8
/// are read as windows-1252 (the usual culprit), so no byte turns into U+FFFD silently.
pub(crate) fn header_list(
    part: &MessagePart<'_>,
    bytes: &[u8],
    defects: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(part.headers.len());
    for h in &part.headers {
        let name_bytes = bytes
            .get(h.offset_field as usize..h.offset_start as usize)
            .unwrap_or_default();
        let name = String::from_utf8_lossy(name_bytes)
            .trim()
            .trim_end_matches(':')
            .trim()
            .to_owned();
        let name = if name.is_empty() {
            h.name.as_str().to_owned()
        } else {
            name
        };
        let value_bytes = bytes
            .get(h.offset_start as usize..h.offset_end as usize)
            .unwrap_or_default();
        let value = match std::str::from_utf8(value_bytes) {
            Ok(s) => decode_header_value(s),
            Err(_) => {
                defects.push(format!("8-bit bytes that are not UTF-8 in {name}"));
                let latin = charset_decoder(b"windows-1252")
                    .map(|d| d(value_bytes))
                    .unwrap_or_else(|| String::from_utf8_lossy(value_bytes).into_owned());
                decode_header_value(&latin)
            }
        };
        out.push((name, value));
    }
    out
}

/// The value of the first header called `name` in a part.
pub(crate) fn first_value<'a, 'x>(
    part: &'a MessagePart<'x>,
    name: HeaderName<'_>,
) -> Option<&'a HeaderValue<'x>> {
    part.headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| &h.value)
}

/// The first id of a Message-ID-like header value.
pub(crate) fn first_id<'a>(value: &'a HeaderValue<'_>) -> Option<&'a str> {
    match value {
        HeaderValue::Text(t) => Some(t.as_ref()),
        HeaderValue::TextList(l) => l.first().map(|t| t.as_ref()),
        _ => None,
    }
}

/// Unfolds and RFC 2047-decodes one header value.
pub(crate) fn decode_header_value(value: &str) -> String {
    let mut line = value.trim_end_matches(['\r', '\n']).to_owned();
    line.push('\n');
    match MessageStream::new(line.as_bytes()).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_owned(),
        _ => String::new(),
    }
}

/// One line: control characters (CR, LF, TAB, NUL...) become spaces, ends trimmed.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A Message-ID as stored: no brackets, no spaces; `None` when nothing is left.
pub(crate) fn clean_id(id: &str) -> Option<String> {
    let id: String = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The ids of an In-Reply-To or References header, in order, deduplicated.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    raw.into_iter()
        .filter_map(clean_id)
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// The mailboxes of an address header; entries without an address are dropped (a bare
/// name is not someone we can answer).
fn parties(address: &Address<'_>) -> Vec<Party> {
    address
        .iter()
        .filter_map(|a| {
            let addr: String = a
                .address()?
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect();
            let addr = addr.trim_matches(['<', '>']).to_owned();
            if addr.is_empty() {
                return None;
            }
            let name = a.name().map(one_line).filter(|n| !n.is_empty());
            Some(Party {
                name,
                address: addr,
            })
        })
        .collect()
}

fn first_text(value: &HeaderValue<'_>) -> Option<String> {
    let first = match value {
        HeaderValue::Text(t) => t.as_ref(),
        HeaderValue::TextList(l) => l.first()?.as_ref(),
        _ => return None,
    };
    let tag = first.split([',', ' ', ';']).next()?.trim();
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// Odd things in the raw header block that mail-parser silently copes with.
fn header_block_defects(bytes: &[u8], defects: &mut Vec<String>) {
    let end = find(bytes, b"\n\r\n")
        .or_else(|| find(bytes, b"\n\n"))
        .unwrap_or_else(|| {
            defects.push("no blank line after the headers".to_owned());
            bytes.len()
        });
    let block = &bytes[..end];
    if block.split(|&b| b == b'\n').any(|l| l.len() > 998) {
        defects.push("header line longer than 998 bytes".to_owned());
    }
    let stray = block.split(|&b| b == b'\n').any(|l| {
        !l.is_empty()
            && !l.starts_with(b" ")
            && !l.starts_with(b"\t")
            && !l.contains(&b':')
            && l != b"\r"
    });
    if stray {
        defects.push("a line in the header block that is not a header (dropped)".to_owned());
    }
    if block.contains(&0) {
        defects.push("NUL byte in the headers".to_owned());
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// MIME-level defects of the outer message's parts.
fn part_defects(message: &Message<'_>, bytes: &[u8], defects: &mut Vec<String>) {
    for (i, part) in message.parts.iter().enumerate() {
        let ct = part.content_type();
        let declared_multipart = ct.is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart"));
        if declared_multipart {
            match ct.and_then(|c| c.attribute("boundary")) {
                None => defects.push(format!("part {i}: multipart without a boundary")),
                Some(b) if !matches!(part.body, PartType::Multipart(_)) => {
                    defects.push(format!("part {i}: boundary {b:?} never found"));
                }
                Some(b) => {
                    let mut closing = Vec::with_capacity(b.len() + 4);
                    closing.extend_from_slice(b"--");
                    closing.extend_from_slice(b.as_bytes());
                    closing.extend_from_slice(b"--");
                    if find(bytes, &closing).is_none() {
                        defects.push(format!("part {i}: missing closing boundary {b:?}"));
                    }
                }
            }
        }
        if let Some(charset) = ct.and_then(|c| c.attribute("charset"))
            && matches!(part.body, PartType::Text(_) | PartType::Html(_))
            && charset_decoder(charset.as_bytes()).is_none()
            && !is_utf8_label(charset)
        {
            defects.push(format!("undecodable charset {charset}"));
        }
        if part.is_encoding_problem && !part.contents().is_empty() {
            defects.push(format!(
                "part {i}: content could not be decoded as declared"
            ));
        }
    }
}

fn is_utf8_label(charset: &str) -> bool {
    let c = charset.trim().trim_matches('"').to_ascii_lowercase();
    matches!(
        c.as_str(),
        "utf-8"
            | "utf8"
            | "unicode-1-1-utf-8"
            | "unicode11utf8"
            | "unicode20utf8"
            | "x-unicode20utf8"
    )
}

/// The text and sanitised HTML bodies of the outer message.
fn bodies(message: &Message<'_>, defects: &mut Vec<String>) -> (Option<String>, Option<String>) {
    let mut nul = false;
    let mut text_parts: Vec<String> = Vec::new();
    for &id in &message.text_body {
        match message.parts.get(id as usize).map(|p| &p.body) {
            Some(PartType::Text(t)) => text_parts.push(strip_nul(t, &mut nul)),
            Some(PartType::Html(h)) => {
                text_parts.push(html::text_from_html(&strip_nul(h, &mut nul)))
            }
            _ => {}
        }
    }
    // A multipart whose boundary is missing or never appears: mail-parser keeps the whole
    // body as one opaque part. Its text is still the best body there is.
    if text_parts.is_empty()
        && let Some(root) = message.parts.first()
        && root
            .content_type()
            .is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart"))
    {
        match &root.body {
            PartType::Text(t) => text_parts.push(strip_nul(t, &mut nul)),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                text_parts.push(strip_nul(&String::from_utf8_lossy(b), &mut nul));
            }
            _ => {}
        }
    }
    let mut html_parts: Vec<String> = Vec::new();
    for &id in &message.html_body {
        if let Some(PartType::Html(h)) = message.parts.get(id as usize).map(|p| &p.body) {
            html_parts.push(strip_nul(h, &mut nul));
        }
    }
    if nul {
        defects.push("NUL bytes removed from the body".to_owned());
    }
    let text = text_parts.join("\n");
    let text = (!text.trim().is_empty()).then_some(text);
    let html = (!html_parts.is_empty()).then(|| html::sanitize(&html_parts.join("\n")));
    (text, html)
}

fn strip_nul(s: &str, seen: &mut bool) -> String {
    if s.contains('\0') {
        *seen = true;
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

/// The outer message's attachments (see the module doc).
fn attachments(message: &Message<'_>, bytes: &[u8], html: Option<&str>) -> Vec<ParsedAttachment> {
    let mut out = Vec::with_capacity(message.attachments.len());
    for &id in &message.attachments {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let content_type = content_type_of(part);
        let data: Vec<u8> = match &part.body {
            _ if part.is_encoding_problem
                && let Some(data) = recover_base64(part) =>
            {
                data
            }
            PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            PartType::Message(m) => message_part_bytes(part, m, bytes).to_vec(),
            PartType::Multipart(_) => continue,
        };
        let content_id = part.content_id().and_then(clean_id);
        let disposition = part
            .content_disposition()
            .map(|d| d.ctype().to_ascii_lowercase());
        let referenced = content_id
            .as_deref()
            .zip(html)
            .is_some_and(|(cid, html)| html.contains(&format!("cid:{cid}")));
        let inline = content_id.is_some()
            && disposition.as_deref() != Some("attachment")
            && (disposition.as_deref() == Some("inline") || referenced);
        let name = safe_file_name(part.attachment_name(), out.len() + 1, &content_type);
        out.push(ParsedAttachment {
            name,
            content_type,
            data,
            inline,
            content_id,
        });
    }
    out
}

/// A base64 part mail-parser gave up on (typically the last part of a message whose closing
/// boundary is missing) decoded leniently: whitespace and stray characters skipped, padding
/// optional. `None` when it still does not decode.
fn recover_base64(part: &MessagePart<'_>) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    if !part
        .content_transfer_encoding()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"))
    {
        return None;
    }
    let mut clean: Vec<u8> = part
        .contents()
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        .collect();
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine.decode(&clean).ok()
}

/// The raw bytes of an attached message. A message/rfc822 part that was not transfer-encoded
/// is parsed in place, and mail-parser then points its `raw_message` at the whole outer
/// message: take the part's own byte range instead.
fn message_part_bytes<'a>(
    part: &MessagePart<'_>,
    nested: &'a Message<'_>,
    bytes: &'a [u8],
) -> &'a [u8] {
    if part.encoding == mail_parser::Encoding::None {
        let (start, end) = (part.offset_body as usize, part.offset_end as usize);
        if start < end
            && let Some(slice) = bytes.get(start..end)
        {
            return slice;
        }
        return bytes.get(start..).unwrap_or_default();
    }
    nested.raw_message()
}

/// `type/subtype` of a part, lower case; a sensible default from the body kind when the
/// part has no Content-Type.
pub(crate) fn content_type_of(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => match ct.ctype().to_ascii_lowercase().as_str() {
                "text" => "text/plain".to_owned(),
                "message" => "message/rfc822".to_owned(),
                other => format!("{other}/octet-stream"),
            },
        },
        None => match part.body {
            PartType::Text(_) => "text/plain".to_owned(),
            PartType::Html(_) => "text/html".to_owned(),
            PartType::Message(_) => "message/rfc822".to_owned(),
            _ => "application/octet-stream".to_owned(),
        },
    }
}

/// A file name that is safe on any file system and in a Content-Disposition header: the
/// last path component only, no control characters or shell/Windows specials, no leading
/// dots, at most 200 bytes with the extension kept; generated when nothing usable is left.
pub fn safe_file_name(name: Option<&str>, index: usize, content_type: &str) -> String {
    let last = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim().to_owned();
    let mut cleaned = cleaned.trim_end_matches(['.', ' ']).to_owned();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '_') {
        return format!("attachment-{index}.{}", extension_for(content_type));
    }
    let stem = cleaned.split('.').next().unwrap_or("").to_ascii_uppercase();
    if matches!(
        stem.as_str(),
        "CON"
            | "PRN"
            | "AUX"
            | "NUL"
            | "COM1"
            | "COM2"
            | "COM3"
            | "COM4"
            | "LPT1"
            | "LPT2"
            | "LPT3"
    ) {
        cleaned.insert(0, '_');
    }
    if cleaned.len() > 200 {
        let ext = cleaned
            .rsplit_once('.')
            .map(|(_, e)| e)
            .filter(|e| e.len() <= 16 && !e.is_empty())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let mut cut = 200 - ext.len();
        while !cleaned.is_char_boundary(cut) {
            cut -= 1;
        }
        cleaned = format!("{}{ext}", &cleaned[..cut]);
    }
    cleaned
}

fn extension_for(content_type: &str) -> &'static str {
    match content_type {
        "text/plain"
        | "text/rfc822-headers"
        | "message/delivery-status"
        | "message/global-delivery-status"
        | "message/feedback-report"
        | "message/disposition-notification" => "txt",
        "text/html" => "html",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        "message/rfc822" | "message/global" => "eml",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/json" => "json",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "bin",
    }
}

/// Text of a part as a `Cow`, whatever mail-parser made of it (text, or bytes read as
/// lossy UTF-8). Used by classification to read report parts.
pub(crate) fn part_text<'a>(part: &'a MessagePart<'_>) -> Cow<'a, str> {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => Cow::Borrowed(t.as_ref()),
        PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b),
        PartType::Message(m) => String::from_utf8_lossy(m.raw_message()),
        PartType::Multipart(_) => Cow::Borrowed(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn header_injection_in_the_subject_is_just_data() {
        let raw =
            b"From: a@example.org\nSubject: =?utf-8?q?hi=0D=0ABcc:_victim@example.org?=\n\nx\n";
        let m = parse(raw).unwrap();
        assert!(!m.subject.contains(['\r', '\n']), "{:?}", m.subject);
        assert!(m.subject.starts_with("hi"));
        assert!(m.header("Bcc").is_none());
        // A real second line is a second header, not part of the subject.
        let raw = b"From: a@example.org\nSubject: hi\nBcc: victim@example.org\n\nx\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.subject, "hi");
        assert_eq!(m.header("Bcc"), Some("victim@example.org"));
    }

    #[test]
    fn eight_bit_headers_are_read() {
        let mut raw =
            b"From: J\xc3\xbcrgen <j@example.org>\nSubject: Gr\xc3\xbc\xc3\x9fe\n".to_vec();
        raw.extend_from_slice(b"X-Legacy: Gr\xfc\xdfe\n\nbody\n");
        let m = parse(&raw).unwrap();
        assert_eq!(m.subject, "Grüße");
        assert_eq!(m.from.as_ref().unwrap().name.as_deref(), Some("Jürgen"));
        assert_eq!(m.header("X-Legacy"), Some("Grüße"));
        assert!(
            m.defects.iter().any(|d| d.contains("X-Legacy")),
            "{:?}",
            m.defects
        );
    }

    #[test]
    fn a_missing_closing_boundary_is_a_defect_not_an_error() {
        let raw = b"From: a@example.org\nMessage-ID: <x@y>\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nfirst part\n--b1\nContent-Type: application/pdf; name=\"r.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.text.as_deref().map(str::trim), Some("first part"));
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].data, b"%PDF-");
        assert!(
            m.defects
                .iter()
                .any(|d| d.contains("missing closing boundary")),
            "{:?}",
            m.defects
        );
    }

    #[test]
    fn a_multipart_without_boundary_keeps_its_text() {
        let raw = b"From: a@example.org\nContent-Type: multipart/mixed\n\nplain words\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.text.as_deref().map(str::trim), Some("plain words"));
        assert!(
            m.defects.iter().any(|d| d.contains("without a boundary")),
            "{:?}",
            m.defects
        );
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
    fn html_only_mail_gets_a_text_body_and_safe_html() {
        let raw = b"From: a@example.org\nContent-Type: text/html; charset=utf-8\n\n<html><head><style>p{}</style></head><body><p onclick=\"x()\">Hello &amp; welcome</p><script>alert(1)</script><p>Bye\0</p></body></html>\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.text.as_deref(), Some("Hello & welcome\nBye"));
        let html = m.html.unwrap();
        assert!(html.contains("Hello"));
        assert!(!html.contains("script") && !html.contains("onclick") && !html.contains('\0'));
        assert!(
            m.defects.iter().any(|d| d.contains("NUL")),
            "{:?}",
            m.defects
        );
    }

    #[test]
    fn inline_images_are_kept_apart_from_attachments() {
        let raw = b"From: a@example.org\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/related; boundary=rel\n\n--rel\nContent-Type: text/html\n\n<p>Logo: <img src=\"cid:logo@x\"></p>\n--rel\nContent-Type: image/png\nContent-ID: <logo@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--rel--\n--outer\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"../../Report 2025.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--outer\nContent-Type: application/octet-stream\n\nno name\n--outer--\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.attachments.len(), 3, "{:?}", m.attachments);
        let logo = &m.attachments[0];
        assert!(logo.inline);
        assert_eq!(logo.content_id.as_deref(), Some("logo@x"));
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(logo.name, "attachment-1.png");
        let pdf = &m.attachments[1];
        assert!(!pdf.inline);
        assert_eq!(pdf.name, "Report 2025.pdf");
        assert_eq!(pdf.data, b"%PDF-");
        assert_eq!(m.attachments[2].name, "attachment-3.bin");
        assert!(m.html.unwrap().contains("cid:logo@x"));
        assert_eq!(m.text.as_deref(), Some("Logo:"));
    }

    #[test]
    fn an_attached_message_is_one_attachment_and_its_own_files_stay_inside() {
        let inner = "From: b@example.org\nMessage-ID: <inner@example.org>\nSubject: inner\nContent-Type: multipart/mixed; boundary=in\n\n--in\nContent-Type: text/plain\n\ninner text\n--in\nContent-Type: image/gif; name=\"x.gif\"\nContent-Transfer-Encoding: base64\n\nR0lGODlh\n--in--\n";
        let raw = format!(
            "From: a@example.org\nContent-Type: multipart/mixed; boundary=out\n\n--out\nContent-Type: text/plain\n\nsee attached\n--out\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename=\"fwd.eml\"\n\n{inner}\n--out--\n"
        );
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.text.as_deref().map(str::trim), Some("see attached"));
        assert_eq!(m.attachments.len(), 1, "{:?}", m.attachments);
        let eml = &m.attachments[0];
        assert_eq!(eml.content_type, "message/rfc822");
        assert_eq!(eml.name, "fwd.eml");
        let data = String::from_utf8(eml.data.clone()).unwrap();
        assert!(data.starts_with("From: b@example.org"), "{data}");
        assert!(
            data.contains("R0lGODlh") && !data.contains("--out"),
            "{data}"
        );
        // The attached message parses on its own.
        let again = parse(&eml.data).unwrap();
        assert_eq!(again.message_id.as_deref(), Some("inner@example.org"));
        assert_eq!(again.attachments.len(), 1);
    }

    #[test]
    fn a_thirty_megabyte_attachment_is_kept_whole() {
        use base64::Engine;
        let data: Vec<u8> = (0..30 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        let mut raw = String::with_capacity(b64.len() + b64.len() / 76 * 2 + 512);
        raw.push_str("From: a@example.org\nContent-Type: multipart/mixed; boundary=big\n\n--big\nContent-Type: text/plain\n\nhuge file attached\n--big\nContent-Type: application/octet-stream; name=\"big.bin\"\nContent-Transfer-Encoding: base64\n\n");
        for line in b64.as_bytes().chunks(76) {
            raw.push_str(std::str::from_utf8(line).unwrap());
            raw.push('\n');
        }
        raw.push_str("--big--\n");
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].data.len(), data.len());
        assert!(m.attachments[0].data == data);
        assert_eq!(m.attachments[0].name, "big.bin");
    }

    #[test]
    fn unknown_charsets_fall_back_to_lossy_utf8() {
        let raw = b"From: a@example.org\nContent-Type: text/plain; charset=x-foo\n\nna\xefve caf\xc3\xa9\n";
        let m = parse(raw).unwrap();
        let text = m.text.unwrap();
        assert!(text.contains("café"), "{text}");
        assert!(
            m.defects.iter().any(|d| d == "undecodable charset x-foo"),
            "{:?}",
            m.defects
        );
        let raw = b"From: a@example.org\nContent-Type: text/plain; charset=iso-2022-jp\n\n\x1b$B$3$s$K$A$O\x1b(B\n";
        assert_eq!(
            parse(raw).unwrap().text.as_deref().map(str::trim),
            Some("こんにちは")
        );
    }

    #[test]
    fn nothing_that_can_be_called_a_message_is_refused() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b" \r\n\t\n"), Err(ParseError::Empty));
        assert!(matches!(
            parse(b"\x00\x01\x02\xff\xfe"),
            Err(ParseError::NotAMessage(_))
        ));
        // Text without headers is kept as a body.
        let m = parse(b"just some words\nwithout any header\n").unwrap();
        assert!(m.text.unwrap().contains("just some words"));
        assert!(m.defects.iter().any(|d| d.contains("no header block")));
    }

    #[test]
    fn mbox_separators_and_leading_blank_lines_are_skipped() {
        let m = parse(
            b"From MAILER-DAEMON Sat Oct  4 08:00:09 2025\nSubject: s\nFrom: a@example.org\n\nb\n",
        )
        .unwrap();
        assert_eq!(m.subject, "s");
        assert_eq!(m.from.unwrap().address, "a@example.org");
        let m = parse(b"\r\n\r\nSubject: t\n\nb\n").unwrap();
        assert_eq!(m.subject, "t");
        assert!(m.defects.iter().any(|d| d.contains("blank lines before")));
    }

    #[test]
    fn over_long_headers_and_missing_ids_are_defects() {
        let raw = format!(
            "From: a@example.org\nX-Long: {}\nMessage-ID: <>\n\nb\n",
            "y".repeat(5000)
        );
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.header("X-Long").map(str::len), Some(5000));
        assert!(m.message_id.is_none());
        assert!(
            m.defects.iter().any(|d| d.contains("998")),
            "{:?}",
            m.defects
        );
        assert!(m.defects.iter().any(|d| d == "no Message-ID"));
        assert!(m.defects.iter().any(|d| d == "no Date"));
    }

    #[test]
    fn a_huge_references_header_is_read_in_linear_time() {
        let ids: Vec<String> = (0..100_000)
            .map(|i| format!("<id{i}@example.org>"))
            .collect();
        let raw = format!(
            "From: a@example.org\nReferences: {}\n\nx\n",
            ids.join("\n ")
        );
        let started = std::time::Instant::now();
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.references.len(), 100_000);
        assert_eq!(m.references[99_999], "id99999@example.org");
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(
            safe_file_name(Some("../../etc/passwd"), 1, "text/plain"),
            "passwd"
        );
        assert_eq!(
            safe_file_name(Some("C:\\Users\\x\\evil.exe"), 1, "a/b"),
            "evil.exe"
        );
        assert_eq!(safe_file_name(Some(".htaccess"), 1, "a/b"), "htaccess");
        assert_eq!(
            safe_file_name(Some("a\r\nb:c?.txt"), 1, "a/b"),
            "a__b_c_.txt"
        );
        assert_eq!(safe_file_name(Some("CON.txt"), 1, "a/b"), "_CON.txt");
        assert_eq!(
            safe_file_name(Some("..."), 2, "application/pdf"),
            "attachment-2.pdf"
        );
        assert_eq!(
            safe_file_name(None, 3, "message/rfc822"),
            "attachment-3.eml"
        );
        let long = format!("{}.pdf", "ä".repeat(300));
        let cut = safe_file_name(Some(&long), 1, "application/pdf");
        assert!(cut.len() <= 200 && cut.ends_with(".pdf"), "{cut}");
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
