//! Text from outside made storable. PostgreSQL refuses NUL in `text` columns and `\u0000`
//! in `jsonb`, so one NUL in a mail header or a job's field used to fail the whole
//! transaction (and, for a mail, roll its raw bytes back with it). Every text that comes
//! from outside passes [`escape_controls`] on its way in: control characters become
//! visible escapes (`\x00`) instead of vanishing, so what the sender wrote stays readable
//! and a terminal that prints it later cannot be driven by it.

use std::borrow::Cow;
use std::fmt::Write;

/// A control character that is escaped: C0 and DEL, apart from the three that text
/// legitimately holds (tab, line feed, carriage return). All are ASCII, so a byte scan
/// finds them (a job's megabytes of base64 are scanned at memory speed).
fn escaped(b: u8) -> bool {
    b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r')
}

/// `s` with NUL and the other control characters (but tab, LF and CR) written as `\xNN`.
/// Borrows when there is nothing to escape, which is nearly always.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii() && escaped(c as u8) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] in place.
pub fn escape_in_place(s: &mut String) {
    if let Cow::Owned(clean) = escape_controls(s) {
        *s = clean;
    }
}

/// [`escape_controls`] on every string of a JSON value, keys included.
pub fn escape_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => escape_in_place(s),
        Value::Array(items) => items.iter_mut().for_each(escape_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.bytes().any(escaped)) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(escape_controls(&k).into_owned(), v);
                }
            }
            map.values_mut().for_each(escape_json);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes_and_text_is_untouched() {
        assert!(matches!(
            escape_controls("plain Grüße\t\r\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_controls("a\0b"), "a\\x00b");
        assert_eq!(escape_controls("\u{1b}]0;title\u{7}"), "\\x1b]0;title\\x07");
        assert_eq!(escape_controls("del\u{7f}"), "del\\x7f");
    }

    #[test]
    fn every_string_of_a_json_value_is_escaped() {
        let mut v = serde_json::json!({"a\0": ["x\0", 1, {"b": "\u{1}"}], "n": null});
        escape_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\\x00": ["x\\x00", 1, {"b": "\\x01"}], "n": null})
        );
    }
}
