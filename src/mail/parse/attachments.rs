//! The attachments of the outer message (see the `parse` module doc for what counts): their
//! data whole (an attached message as its raw bytes, a base64 part that mail-parser gave up
//! on decoded leniently), whether they are inline images, their content type, and a file
//! name that is safe anywhere.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::{ParsedAttachment, clean_id};

/// The outer message's attachments (see the `parse` module doc).
pub(super) fn attachments(
    message: &Message<'_>,
    bytes: &[u8],
    html: Option<&str>,
) -> Vec<ParsedAttachment> {
    let mut out = Vec::with_capacity(message.attachments.len());
    // Read once: looking each part's Content-ID up in the whole HTML cost parts × HTML
    // (40,000 parts against 4 MB of HTML: 4.9 s).
    let referenced_ids = html.map(cid_references).unwrap_or_default();
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
            .is_some_and(|cid| referenced_ids.contains(cid));
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

/// The Content-IDs `html` refers to (`cid:<id>` up to a quote, space, `>` or `)`).
fn cid_references(html: &str) -> std::collections::HashSet<&str> {
    html.match_indices("cid:")
        .map(|(at, _)| {
            let rest = &html[at + 4..];
            let end = rest
                .find(|c: char| matches!(c, '"' | '\'' | '>' | ')' | '<') || c.is_whitespace())
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
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
        // Bidi controls reorder what is shown: `txt\u{202e}exe.` reads as `exe.txt`.
        .filter(|c| !is_bidi_control(*c))
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

/// The invisible characters that change the direction text is shown in (Unicode's bidi
/// marks, embeddings, overrides and isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The extension of a generated file name, from the content type (`bin` when unknown).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::parse;

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
        // Shown as `invoice-exe.txt`, really an .exe: the override goes.
        assert_eq!(
            safe_file_name(Some("invoice-\u{202e}txt.exe"), 1, "a/b"),
            "invoice-txt.exe"
        );
        assert_eq!(
            safe_file_name(Some("\u{2067}a\u{200f}b\u{2069}.pdf"), 1, "a/b"),
            "ab.pdf"
        );
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
}
