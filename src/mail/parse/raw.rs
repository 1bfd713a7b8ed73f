//! From raw bytes to what mail-parser reads: an mbox `From ` line and leading blank lines
//! skipped, the MIME tree parsed without letting a panic through and accepted only when it
//! has a real header block; input without one is kept as a body-only message when it is
//! text. Classification reads the same bytes and tree, so both go through here.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{Message, MessageParser};

use super::{ParseError, ParsedMail};

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

/// Input without a header block. Text (a body whose headers were lost, a fragment piped in
/// by hand) is kept as a message with only a body, so nothing a person wrote is dropped;
/// anything else (binary data) is not a message.
pub(super) fn headerless(raw: &[u8], bytes: &[u8]) -> Result<ParsedMail, ParseError> {
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

/// Where `needle` first occurs in `haystack`; `None` for an empty needle.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use crate::mail::parse::{ParseError, parse};

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
}
