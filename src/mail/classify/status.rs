//! RFC 3463 enhanced status codes (`5.1.1`): read from a DSN `Status:` field, or found in
//! free text without mistaking an IP address or a version number (`Exim 4.92.3`) for one.

/// `5.1.1 (user unknown)` → `5.1.1`.
pub(super) fn status_field(value: &str) -> Option<String> {
    let token = value
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()?;
    let mut nums = token.split('.');
    let ok = nums.next().is_some_and(|c| matches!(c, "2" | "4" | "5"))
        && nums.next().is_some_and(is_small_number)
        && nums.next().is_some_and(is_small_number)
        && nums.next().is_none();
    ok.then(|| token.to_owned())
}

/// One to three digits: the subject or detail of a status code.
fn is_small_number(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Enhanced status codes of class 4 or 5 in `s`, those after an SMTP reply code
/// (`550 5.1.1`, `550-5.1.1`) first.
pub(super) fn enhanced_codes(s: &str) -> Vec<String> {
    let mut found = scan_codes(s);
    found.retain(|(code, _)| !code.starts_with('2'));
    found.sort_by_key(|(_, after_reply)| !after_reply);
    found.into_iter().map(|(c, _)| c).collect()
}

/// Every enhanced status code in `s`, in order, 2.x.x too: an SES delivery notice's
/// success code is one.
pub(super) fn enhanced_codes_any_class(s: &str) -> Vec<String> {
    scan_codes(s).into_iter().map(|(c, _)| c).collect()
}

/// `x.y.z` with x in 2/4/5, y in 0-7 and z of 1 to 3 digits, not part of a longer dotted number
/// (an IP address or a version), each with whether an SMTP reply code precedes it.
fn scan_codes(s: &str) -> Vec<(String, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 < b.len() + 1 {
        let boundary_before = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if boundary_before
            && matches!(b.get(i), Some(b'2' | b'4' | b'5'))
            && b.get(i + 1) == Some(&b'.')
        {
            let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
            let d1 = digits(i + 2);
            // RFC 3463 subjects are one digit, 0 to 7 ("Exim 4.92.3" is a version).
            if d1 == 1 && b[i + 2] <= b'7' && b.get(i + 2 + d1) == Some(&b'.') {
                let d2 = digits(i + 3 + d1);
                let end = i + 3 + d1 + d2;
                let trailing_ok = !(b.get(end).is_some_and(|c| c.is_ascii_alphanumeric())
                    || b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit));
                if (1..=3).contains(&d2) && trailing_ok {
                    let after_reply = i >= 4
                        && matches!(b[i - 4], b'2' | b'4' | b'5')
                        && b[i - 3].is_ascii_digit()
                        && b[i - 2].is_ascii_digit()
                        && matches!(b[i - 1], b' ' | b'-');
                    out.push((s[i..end].to_owned(), after_reply));
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_codes_are_told_from_addresses_and_versions() {
        assert_eq!(
            enhanced_codes("host 192.0.2.1 said 550 5.1.1 unknown"),
            vec!["5.1.1"]
        );
        assert_eq!(enhanced_codes("(#4.4.1) at 10.5.0.2"), vec!["4.4.1"]);
        assert!(enhanced_codes("Exim 4.92.3 and sendmail 8.12.8/8.12.8").is_empty());
        assert!(enhanced_codes("SMTPSVC(5.0.2195.6713)").is_empty());
        assert_eq!(
            enhanced_codes("4.2.2 later, then 550-5.7.1 now"),
            vec!["5.7.1", "4.2.2"]
        );
        assert_eq!(
            status_field("5.0.0 (recipient reached disk quota)").as_deref(),
            Some("5.0.0")
        );
        assert_eq!(status_field("bogus"), None);
    }
}
