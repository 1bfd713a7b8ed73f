//! One inbound mail on its way through the `inbound-mail` workflow, and the pure rules that
//! route it: where reply tokens hide (a `+token` recipient, a `[#token]` subject tag), which
//! mailbox it came in on, and what makes two deliveries the same mail.
//!
//! The working state lives on the step context rather than in facts: the raw bytes and the
//! parsed mail are large and typed, and only the workflow's own actions read them. What a
//! condition may want (class, sender, how the thread matched) is published as facts.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::classify::{self, MailClass};
use super::parse::{self, ParsedMail};

/// The mail as the inbound actions pass it along.
#[derive(Debug, Clone)]
pub struct InboundMail {
    /// Its `raw_mails` row.
    pub raw_id: Uuid,
    pub raw: Vec<u8>,
    pub envelope_from: Option<String>,
    pub recipients: Vec<String>,
    /// The address it came in on (lifecycle selectors and the dedupe key use it).
    pub mailbox: Option<String>,
    /// Set by `parse_mail`.
    pub parsed: Option<ParsedMail>,
    pub class: Option<MailClass>,
    /// Set by `upsert_sender`.
    pub sender: Option<Sender>,
    /// Set by `dedupe_mail`.
    pub dedupe_key: Option<String>,
    /// Set by `check_loop`.
    pub looping: bool,
    /// Set by `match_thread`: the sender is not a contact of the matched thread's customers.
    pub stranger: bool,
    /// Set by `upsert_sender`: our MTA's `Authentication-Results` say the From is forged.
    pub spoofed: bool,
    /// Set by `store_raw_mail`, taken by `parse_mail`.
    pub early: Option<EarlyParse>,
}

/// The mail as parsed and classified before its raw row was written, so the row goes in
/// with what it is (one write, not an insert and then an update of a mail-sized row) and
/// the mail is parsed once.
#[derive(Debug, Clone)]
pub struct EarlyParse {
    pub outcome: Parsed,
    /// The row went in marked with this outcome; `false`: the row was there before (a
    /// retried or reprocessed job) and says what it said then.
    pub on_row: bool,
}

/// What parsing and classifying one raw mail gave.
#[derive(Debug, Clone)]
pub enum Parsed {
    Mail {
        parsed: Box<ParsedMail>,
        class: MailClass,
        /// What the parser found odd but got past, if anything.
        defects: Option<String>,
    },
    Unparseable(String),
}

/// Parses and classifies a raw mail with its envelope (pure: no database).
pub fn parse_and_classify(
    raw: &[u8],
    envelope_from: Option<&str>,
    recipients: &[String],
) -> Parsed {
    let (parsed, tree) = match parse::parse_with_tree(raw) {
        Ok(p) => p,
        Err(e) => return Parsed::Unparseable(format!("the mail cannot be parsed: {e}")),
    };
    let class = classify::classify_tree(
        &parsed,
        raw,
        tree.as_ref(),
        &classify::Envelope {
            from: envelope_from,
            recipients,
        },
    );
    let defects = (!parsed.defects.is_empty()).then(|| parsed.defects.join("; "));
    Parsed::Mail {
        parsed: Box::new(parsed),
        class,
        defects,
    }
}

/// The sending contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    pub contact_id: Uuid,
    pub address: String,
    pub name: Option<String>,
    /// Its customers' ids and attributes (a new thread belongs to them; lifecycle
    /// selectors read the attributes). Known for normal mail only.
    pub customers: Vec<(Uuid, serde_json::Value)>,
}

/// Reply tokens are 20 lower-case hex characters (see `store::threads`).
pub fn is_token(s: &str) -> bool {
    s.len() == 20
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The reply token of `local+<token>@domain`, if the address carries one.
pub fn token_in_address(address: &str) -> Option<String> {
    let (local, _) = address.trim().trim_matches(['<', '>']).rsplit_once('@')?;
    let (_, tag) = local.split_once('+')?;
    let tag = tag.to_ascii_lowercase();
    is_token(&tag).then_some(tag)
}

/// The reply token in `subject`, written as `pattern` says (`[#{token}]` by default).
pub fn token_in_subject(subject: &str, pattern: &str) -> Option<String> {
    let (prefix, suffix) = pattern.split_once("{token}")?;
    let mut rest = subject;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        if let Some(end) = after.find(suffix) {
            let candidate = after[..end].trim().to_ascii_lowercase();
            if is_token(&candidate) {
                return Some(candidate);
            }
        }
        rest = after;
    }
    None
}

/// `subject` without our token tags: a new thread opened by a stranger who quoted one should
/// not carry another thread's token.
pub fn strip_subject_tokens(subject: &str, pattern: &str) -> String {
    let mut out = subject.to_owned();
    while let Some(token) = token_in_subject(&out, pattern) {
        let tag = pattern.replace("{token}", &token);
        match out.to_ascii_lowercase().find(&tag.to_ascii_lowercase()) {
            Some(at) => out.replace_range(at..at + tag.len(), ""),
            None => break,
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The mailbox a mail came in on: the job's `mailbox`, else its first envelope recipient,
/// lower-cased, without a `+token`.
pub fn mailbox(explicit: Option<&str>, recipients: &[String]) -> Option<String> {
    let raw = explicit
        .filter(|m| !m.trim().is_empty())
        .or_else(|| recipients.first().map(String::as_str))?;
    let address = raw.trim().trim_matches(['<', '>']).to_ascii_lowercase();
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let base = local.split_once('+').map_or(local, |(b, _)| b);
            Some(format!("{base}@{domain}"))
        }
        None => Some(address),
    }
}

/// What makes two deliveries one mail: the same Message-ID from the same sender, whatever
/// mailboxes it reached (a mail to `support@` with `billing@` in Cc is delivered once per
/// recipient, and must be one message, one thread, one acknowledgement); a mail without a
/// Message-ID is known by its content.
pub fn dedupe_key(message_id: Option<&str>, sender: &str, raw: &[u8]) -> String {
    let mut h = Sha256::new();
    match message_id {
        Some(mid) => {
            h.update(b"mid1\0");
            h.update(sender.to_ascii_lowercase().as_bytes());
            h.update(b"\0");
            h.update(mid.as_bytes());
        }
        None => {
            h.update(b"content\0");
            h.update(raw);
        }
    }
    hex::encode(h.finalize())
}

/// The `messages.classification` / metric label of a mail class.
pub fn class_name(class: &MailClass) -> &'static str {
    match class {
        MailClass::Normal => "normal",
        MailClass::AutoReply { .. } => "auto_reply",
        MailClass::Bounce(_) => "bounce",
        MailClass::FeedbackReport { .. } => "feedback_report",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0a1b2c3d4e5f60718293";

    #[test]
    fn tokens_are_found_in_plus_addresses_and_subject_tags() {
        assert_eq!(
            token_in_address(&format!("Support+{TOKEN}@gochat.example")).as_deref(),
            Some(TOKEN)
        );
        assert_eq!(
            token_in_address(&format!(
                "<support+{}@gochat.example>",
                TOKEN.to_uppercase()
            ))
            .as_deref(),
            Some(TOKEN)
        );
        assert_eq!(token_in_address("support+sales@gochat.example"), None);
        assert_eq!(token_in_address("support@gochat.example"), None);
        assert_eq!(token_in_address("not an address"), None);

        let subject = format!("Re: [#123] Printer on fire [#{TOKEN}]");
        assert_eq!(
            token_in_subject(&subject, "[#{token}]").as_deref(),
            Some(TOKEN)
        );
        assert_eq!(
            token_in_subject(&format!("Ticket {TOKEN} (ref)"), "Ticket {token} (ref)").as_deref(),
            Some(TOKEN)
        );
        assert_eq!(token_in_subject("Re: hello [#", "[#{token}]"), None);
        assert_eq!(token_in_subject("Re: [#zz]", "[#{token}]"), None);
    }

    #[test]
    fn a_new_threads_subject_loses_quoted_tokens() {
        assert_eq!(
            strip_subject_tokens(&format!("Re: Printer [#{TOKEN}] on fire"), "[#{token}]"),
            "Re: Printer on fire"
        );
        assert_eq!(strip_subject_tokens("Hello", "[#{token}]"), "Hello");
    }

    #[test]
    fn the_mailbox_is_the_explicit_one_or_the_first_recipient_without_its_token() {
        let rcpts = vec![format!("Support+{TOKEN}@GoChat.example")];
        assert_eq!(
            mailbox(None, &rcpts).as_deref(),
            Some("support@gochat.example")
        );
        assert_eq!(
            mailbox(Some("sales@gochat.example"), &rcpts).as_deref(),
            Some("sales@gochat.example")
        );
        assert_eq!(mailbox(None, &[]), None);
    }

    #[test]
    fn the_same_mail_has_the_same_key_and_others_differ() {
        let a = dedupe_key(Some("m1@x"), "Ann@x.example", b"one");
        assert_eq!(
            a,
            dedupe_key(Some("m1@x"), "ann@x.example", b"two"),
            "same Message-ID and sender: same mail whatever the bytes (and the mailbox)"
        );
        assert_ne!(a, dedupe_key(Some("m1@x"), "bob@x.example", b"one"));
        assert_ne!(a, dedupe_key(Some("m2@x"), "ann@x.example", b"one"));
        assert_eq!(
            dedupe_key(None, "ann@x", b"body"),
            dedupe_key(None, "bob@y", b"body"),
            "without a Message-ID the content decides"
        );
        assert_ne!(
            dedupe_key(None, "ann@x", b"body"),
            dedupe_key(None, "ann@x", b"other")
        );
    }
}
