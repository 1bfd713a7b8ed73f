//! Small readers of free text that the bounce rules share: the e-mail addresses in a string,
//! a recipient list deduplicated and capped at `MAX_BOUNCE_RECIPIENTS`, and a diagnostic
//! squeezed into one short line.

use std::collections::HashSet;

use super::MAX_BOUNCE_RECIPIENTS;

/// Every e-mail address in `s`, lower case, in order.
pub(super) fn addresses_in(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in s.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>'
                    | '('
                    | ')'
                    | '['
                    | ']'
                    | ','
                    | ';'
                    | '"'
                    | '\''
                    | ':'
                    | '{'
                    | '}'
                    | '|'
                    | '='
                    | '\\'
            )
    }) {
        let token = token.trim_matches(|c: char| matches!(c, '.' | '!' | '?' | '`' | '*'));
        let Some((local, domain)) = token.rsplit_once('@') else {
            continue;
        };
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            continue;
        }
        out.push(token.to_lowercase());
    }
    let mut seen = HashSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out
}

/// Deduplicated in order of first appearance, at most [`MAX_BOUNCE_RECIPIENTS`].
pub(super) fn unique(addresses: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    addresses
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .take(MAX_BOUNCE_RECIPIENTS)
        .collect()
}

/// One line, trimmed, at most 500 bytes (cut on a character boundary).
pub(super) fn one_line(s: &str) -> String {
    let mut line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 500 {
        let mut cut = 500;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_short() {
        let long = "x ".repeat(400) + "é";
        let l = one_line(&format!("a\r\n  b\t{long}"));
        assert!(l.starts_with("a b x"));
        assert!(l.len() <= 500);
    }
}
