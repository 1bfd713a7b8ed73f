//! Defects of the raw header block and of the MIME parts: what was odd in a message that
//! still parsed (a header line over 998 bytes, a stray line among the headers, a missing or
//! never-closed boundary, an unknown charset, content that does not decode as declared),
//! which mail-parser copes with silently, kept so that a strange message can be diagnosed
//! later. Other defects are noted where they are found (a missing Message-ID in `parse`,
//! 8-bit header bytes in `headers`, NUL bytes in `body`).

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MimeHeaders, PartType};

use super::find;

/// Odd things in the raw header block that mail-parser silently copes with.
pub(super) fn header_block_defects(bytes: &[u8], defects: &mut Vec<String>) {
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

/// MIME-level defects of the outer message's parts.
pub(super) fn part_defects(message: &Message<'_>, bytes: &[u8], defects: &mut Vec<String>) {
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

/// A label of UTF-8: `charset_decoder` has no decoder for it because UTF-8 needs none, so
/// it is not an undecodable charset.
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

#[cfg(test)]
mod tests {
    use crate::mail::parse::parse;

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
}
