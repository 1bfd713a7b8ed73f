//! The bodies of the outer message: the text (derived from the HTML when there is only
//! HTML, and kept when a broken multipart hides it in one opaque part) and the sanitised
//! HTML, both NUL-free; and the text of any part, for classification to read report parts.

use std::borrow::Cow;

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::html;

/// The bodies of the outer message.
pub(super) struct Bodies {
    pub text: Option<String>,
    /// Sanitised, safe to show.
    pub html: Option<String>,
    /// HTML past the sanitising limits ([`html::sanitize_bounded`]), as it came: kept as an
    /// attachment, never shown inline.
    pub unsafe_html: Option<String>,
}

/// The text and sanitised HTML bodies of the outer message.
pub(super) fn bodies(message: &Message<'_>, defects: &mut Vec<String>) -> Bodies {
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
    let (mut html, mut unsafe_html) = (None, None);
    if !html_parts.is_empty() {
        let joined = html_parts.join("\n");
        match html::sanitize_bounded(&joined) {
            Ok(clean) => html = Some(clean),
            Err(why) => {
                defects.push(format!(
                    "HTML body not shown ({why}): kept as the attachment {UNSAFE_HTML_NAME}"
                ));
                unsafe_html = Some(joined);
            }
        }
    }
    Bodies {
        text,
        html,
        unsafe_html,
    }
}

/// The file name of an HTML body too large or too deep to sanitise.
pub(super) const UNSAFE_HTML_NAME: &str = "message.html";

/// `s` without NUL bytes (the bodies are stored NUL-free); sets `seen` when it had any.
fn strip_nul(s: &str, seen: &mut bool) -> String {
    if s.contains('\0') {
        *seen = true;
        s.replace('\0', "")
    } else {
        s.to_owned()
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
    use crate::mail::parse::parse;

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
}
