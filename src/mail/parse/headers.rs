//! Header values as the worker stores them: names as written, values unfolded and RFC 2047
//! decoded (8-bit bytes that are not UTF-8 read as windows-1252), Message-IDs without
//! brackets, the parties of an address header, the first tag of Content-Language. A header
//! given twice counts by its first occurrence.

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderName, HeaderValue, MessagePart};

use super::Party;

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
fn decode_header_value(value: &str) -> String {
    let mut line = value.trim_end_matches(['\r', '\n']).to_owned();
    line.push('\n');
    match MessageStream::new(line.as_bytes()).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_owned(),
        _ => String::new(),
    }
}

/// One line: control characters (CR, LF, TAB, NUL...) become spaces, ends trimmed.
pub(super) fn one_line(s: &str) -> String {
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
pub(super) fn ids(value: &HeaderValue<'_>) -> Vec<String> {
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
pub(super) fn parties(address: &Address<'_>) -> Vec<Party> {
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

/// The first tag of a Content-Language value (`de-DE, en` → `de-DE`).
pub(super) fn first_text(value: &HeaderValue<'_>) -> Option<String> {
    let first = match value {
        HeaderValue::Text(t) => t.as_ref(),
        HeaderValue::TextList(l) => l.first()?.as_ref(),
        _ => return None,
    };
    let tag = first.split([',', ' ', ';']).next()?.trim();
    (!tag.is_empty()).then(|| tag.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::mail::parse::parse;

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
        // Read whole, stored trimmed to the first and the latest ids.
        assert_eq!(
            m.references.len(),
            crate::mail::parse::MAX_STORED_REFERENCES
        );
        assert_eq!(m.references[0], "id0@example.org");
        assert_eq!(
            m.references.last().map(String::as_str),
            Some("id99999@example.org")
        );
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
