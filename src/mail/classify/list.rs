//! Mail that came through a mailing list or a group, or was sent in bulk. Such mail is a
//! person's mail all the same (a Google Group or a Microsoft 365 group in front of
//! `support@` marks every customer's mail this way), so it is classified normally; what
//! RFC 3834 §2 asks is only that no automatic answer goes back to it. These are the facts a
//! workflow routes on.

use crate::mail::parse::ParsedMail;

/// What the list and bulk headers say about a mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFacts {
    /// The list's identity: the `<id>` of `List-Id` (RFC 2919), else `unnamed` when only
    /// `List-Unsubscribe` or `List-Post` (RFC 2369) mark it; `None` for direct mail.
    pub list: Option<String>,
    /// `Precedence: bulk`, `junk` or `list`, lower case.
    pub precedence: Option<String>,
}

impl ListFacts {
    pub fn of(mail: &ParsedMail) -> ListFacts {
        let list = match mail.header("List-Id") {
            Some(v) => Some(list_id(v)),
            None => ["List-Unsubscribe", "List-Post"]
                .iter()
                .any(|h| mail.header(h).is_some())
                .then(|| "unnamed".to_owned()),
        };
        let precedence = mail
            .header("Precedence")
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| matches!(p.as_str(), "bulk" | "junk" | "list"));
        ListFacts { list, precedence }
    }

    /// Whether an automatic answer (an acknowledgement) may go to the sender: not to list
    /// or bulk mail (RFC 3834 §2).
    pub fn may_auto_answer(&self) -> bool {
        self.list.is_none() && self.precedence.is_none()
    }
}

/// The identity of a `List-Id` value: the part in angle brackets (`Users <users.example.org>`
/// → `users.example.org`), else the whole value, at most 255 bytes.
fn list_id(value: &str) -> String {
    let id = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    let id = id.trim();
    let mut end = id.len().min(255);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    if id.is_empty() {
        "unnamed".to_owned()
    } else {
        id[..end].to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::parse;

    fn facts(headers: &str) -> ListFacts {
        let raw = format!("From: ann@acme.example\n{headers}\nSubject: Help\n\nx\n");
        ListFacts::of(&parse(raw.as_bytes()).unwrap())
    }

    #[test]
    fn list_and_bulk_headers_are_facts() {
        let direct = facts("X-Other: 1");
        assert_eq!(direct, ListFacts::default());
        assert!(direct.may_auto_answer());

        let group = facts(
            "List-Id: <support.acme.example>\nList-Unsubscribe: <mailto:leave@acme.example>\nPrecedence: list",
        );
        assert_eq!(group.list.as_deref(), Some("support.acme.example"));
        assert_eq!(group.precedence.as_deref(), Some("list"));
        assert!(!group.may_auto_answer());

        let named = facts("List-Id: \"Support\" <Support.Lists.Example.ORG>");
        assert_eq!(named.list.as_deref(), Some("support.lists.example.org"));
        let unnamed = facts("List-Unsubscribe: <https://x.example/u>");
        assert_eq!(unnamed.list.as_deref(), Some("unnamed"));
        let bulk = facts("Precedence: Bulk");
        assert_eq!(
            (bulk.list, bulk.precedence.as_deref()),
            (None, Some("bulk"))
        );
        assert_eq!(facts("Precedence: first-class").precedence, None);
    }
}
