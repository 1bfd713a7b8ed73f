//! The text the keyword index holds, folded here rather than by the database so SQLite
//! (FTS5) and PostgreSQL (`tsvector`) see the same words: no accents, lower case, and
//! every run of letters and digits one word. PostgreSQL's `unaccent` is not immutable (it
//! cannot feed a generated column or an index) and its parser keeps `a@b.com` or `e-mail`
//! whole where FTS5 splits them; handing both plain space-separated words makes a query
//! match alike on either. It lives beside the migrations because the backfill folds with
//! it too: the index is only right if both fold alike.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most bytes of folded text indexed per message. A message longer than this is found by
/// the words of its first 64 KiB only: the index stays bounded whatever a mail carries,
/// and PostgreSQL keeps word positions (for phrases) only up to 16,383 words anyway.
pub const MAX_INDEXED_BYTES: usize = 64 * 1024;

/// `text` as the index sees it: compatibility-decomposed (so `ﬁ`, full-width and
/// superscript letters match their plain forms), combining marks dropped (`é` is `e`),
/// lower-cased, and each run of characters that are neither letters nor digits made one
/// space; no leading or trailing space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars().flat_map(char::to_lowercase).nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            // NFKD may decompose into an upper-case letter (`ℌ` → `H`).
            out.extend(c.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

/// What a message contributes to the index: its subject and its text, folded, cut to
/// [`MAX_INDEXED_BYTES`] at a word boundary.
pub fn message_text(subject: &str, text: Option<&str>) -> String {
    let mut all = fold(subject);
    if let Some(text) = text {
        // Fold no more than could be kept: a bounded input bounds the work, too (folding
        // never shortens text by more than its marks and punctuation, so 4x is ample).
        let cut = floor_char_boundary(text, MAX_INDEXED_BYTES * 4);
        let body = fold(&text[..cut]);
        if !body.is_empty() {
            if !all.is_empty() {
                all.push(' ');
            }
            all.push_str(&body);
        }
    }
    truncate_words(all, MAX_INDEXED_BYTES)
}

/// What a contact (display name, address) or a customer (name, external id) contributes to
/// the index.
pub fn party_text(name: Option<&str>, key: &str) -> String {
    let mut all = name.map(fold).unwrap_or_default();
    let key = fold(key);
    if !all.is_empty() && !key.is_empty() {
        all.push(' ');
    }
    all.push_str(&key);
    truncate_words(all, MAX_INDEXED_BYTES)
}

/// Whether a thread subject needs a document of its own: not when its words appear, in
/// order and together, in the subject of the message it opened with (the usual case: a
/// thread is named after its first mail, tokens such as `Re:` or `[#ref]` stripped).
pub fn subject_needs_own_doc(thread_subject: &str, first_message_subject: Option<&str>) -> bool {
    let own = fold(thread_subject);
    if own.is_empty() {
        return false;
    }
    let Some(first) = first_message_subject else {
        return true;
    };
    let own: Vec<&str> = own.split(' ').collect();
    let first = fold(first);
    let first: Vec<&str> = first.split(' ').collect();
    !first.windows(own.len()).any(|w| w == own.as_slice())
}

/// `s` cut to at most `max` bytes, at the last space before the limit (a word cut in two
/// would index a word the message does not have).
fn truncate_words(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let cut = floor_char_boundary(&s, max);
    let cut = s[..cut].rfind(' ').unwrap_or(cut);
    s.truncate(cut);
    s
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(fold("Café, CAFÉ & cafe!"), "cafe cafe cafe");
        assert_eq!(
            fold("  Ærø — ﬁne ＡＢＣ e-mail a@b.com  "),
            "ærø fine abc e mail a b com"
        );
        assert_eq!(fold("İstanbul ŞEHİR"), "istanbul sehir");
        assert_eq!(fold("\"NEAR\" * ^ : - ( ) & | ! <->"), "near");
        assert_eq!(fold("%_\\'"), "");
    }

    #[test]
    fn bounds_a_huge_message_at_a_word() {
        let text = "abcdefg ".repeat(20_000);
        let folded = message_text("Hi", Some(&text));
        assert!(folded.len() <= MAX_INDEXED_BYTES);
        assert!(folded.ends_with("abcdefg"));
        assert!(folded.starts_with("hi abcdefg"));
    }

    #[test]
    fn a_thread_subject_taken_from_its_first_mail_needs_no_doc() {
        assert!(!subject_needs_own_doc(
            "Printer on fire",
            Some("Re: [#x1] Printer on FIRE")
        ));
        assert!(subject_needs_own_doc("Printer on fire", Some("Printer")));
        assert!(subject_needs_own_doc("Printer", None));
        assert!(!subject_needs_own_doc("!!!", None));
    }
}
