//! Reading the text of a free-text notice: where its own words end and the copy of the
//! bounced message begins, which addresses are ours or the notice's own (never a failed
//! recipient), the failed recipients it names, and the line that carries the remote
//! server's answer.

use std::collections::HashSet;

use super::MAX_BOUNCE_RECIPIENTS;
use super::context::Ctx;
use super::status::enhanced_codes;
use super::text::{addresses_in, one_line, unique};

/// The notice's own words: the text before the copy of the bounced message starts.
pub(super) fn notice_text(text: &str) -> &str {
    const MARKERS: &[&str] = &[
        "below this line is a copy of the message",
        "this is a copy of the message",
        "original message follows",
        "original message headers",
        "headers of the original message",
        "header of the original message",
        "----- original message",
        "-----original message-----",
        "--- original message",
        "unsent message",
        "returned message follows",
        "text of the returned message",
        "message headers follow",
    ];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let lower = line.trim().to_lowercase();
        let bare = lower.trim_matches(|c: char| matches!(c, '-' | '=' | ' ' | ':' | '*'));
        if MARKERS.iter().any(|m| lower.contains(m))
            || bare.starts_with("original message")
            || lower.starts_with("received: ")
            || lower.starts_with("return-path: ")
        {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// Addresses that are never the failed recipient: ours (the envelope), the notice's sender,
/// and the help desk a notice asks to contact.
pub(super) fn own_addresses(ctx: &Ctx<'_>, notice: &str) -> HashSet<String> {
    let mail = ctx.mail;
    let mut out: HashSet<String> = mail
        .from
        .iter()
        .chain(mail.reply_to.iter())
        .map(|p| p.address.to_lowercase())
        .collect();
    out.extend(ctx.envelope.recipients.iter().map(|r| r.to_lowercase()));
    out.extend(ctx.envelope.from.map(str::to_lowercase));
    out.extend(mail.headers_named("Return-Path").flat_map(addresses_in));
    for line in notice.lines() {
        let lower = line.to_lowercase();
        if [
            "please contact",
            "contact your",
            "contact the",
            "contact <",
            "assistance",
            "questions",
            "for help",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            out.extend(addresses_in(line));
        }
    }
    out
}

/// Failed recipients in free text: an address that opens a line (`<a@b>:`, `a@b`, the
/// qmail/Postfix/Exim/Gmail layouts), or one on a line that says it failed.
/// `ours` are never a failed recipient; `parties` (the notice's To/Cc: the original
/// sender) are skipped only on phrase lines, where a notice also names the sender.
pub(super) fn recipients_in_text(
    notice: &str,
    ours: &HashSet<String>,
    parties: &HashSet<String>,
) -> Vec<String> {
    const ANCHORS: &[&str] = &[
        "could not be delivered to",
        "couldn't be delivered to",
        "was not delivered to",
        "recipient address",
        "recipient:",
        "recipients:",
        "failed recipient",
        "original-recipient",
        "final-recipient",
        "unknown user",
        "user unknown",
        "following address",
        "following recipient",
        "your message to",
        "delivery to",
        "returned permanent errors",
        "not listed",
        "mailbox",
        "address:",
        "error delivering",
        "delivering your",
        "delivering to",
        "undeliverable",
        "invalid",
        "no such",
        "does not exist",
        "not found",
        "rejected",
        "refused",
        "failed",
    ];
    let mut out: Vec<String> = Vec::new();
    let push = |a: String, out: &mut Vec<String>| {
        let local = a.split('@').next().unwrap_or("");
        if !ours.contains(&a) && local != "mailer-daemon" {
            out.push(a);
        }
    };
    for line in notice.lines() {
        let t = line.trim();
        // sendmail transcripts: `554 <a@b>... 550 Host unknown`.
        let t_no_code = match t.split_once(' ') {
            Some((code, rest))
                if code.len() == 3
                    && code.starts_with(['4', '5'])
                    && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                rest.trim_start()
            }
            _ => t,
        };
        let leading = t_no_code.trim_start_matches(['<', '"', '*', '-', '>', '•', ' ', '\t']);
        let first_token = leading
            .split(|c: char| c.is_whitespace() || matches!(c, '>' | ':' | ',' | ';' | '"'))
            .next()
            .unwrap_or("");
        let bare = first_token
            .trim_matches(|c: char| matches!(c, '<' | '>' | '.' | ':' | '(' | ')' | '[' | ']'));
        if bare.contains('@')
            && let [a] = addresses_in(bare).as_slice()
            && *a == bare.to_lowercase()
        {
            push(a.clone(), &mut out);
            continue;
        }
        let lower = t.to_lowercase();
        if ANCHORS.iter().any(|a| lower.contains(a)) {
            for a in addresses_in(t).into_iter().filter(|a| !parties.contains(a)) {
                push(a, &mut out);
            }
        }
        if out.len() >= MAX_BOUNCE_RECIPIENTS * 4 {
            break;
        }
    }
    unique(out)
}

/// The line of a free-text notice that carries the remote server's answer.
pub(super) fn diagnostic_line(notice: &str) -> Option<String> {
    // DSN fields quoted in the text (`Status: 5.1.1`) are not the server's words.
    const FIELDS: &[&str] = &[
        "status:",
        "action:",
        "final-recipient:",
        "original-recipient:",
    ];
    let lines: Vec<&str> = notice
        .lines()
        .map(str::trim)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !FIELDS.iter().any(|f| l.starts_with(f))
        })
        .collect();
    let smtp_reply = |l: &str| {
        let b = l.as_bytes();
        (0..b.len().saturating_sub(3)).any(|i| {
            matches!(b[i], b'4' | b'5')
                && b[i + 1].is_ascii_digit()
                && b[i + 2].is_ascii_digit()
                && matches!(b[i + 3], b' ' | b'-')
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'.')
        })
    };
    lines
        .iter()
        .find(|l| !enhanced_codes(l).is_empty())
        .or_else(|| lines.iter().find(|l| smtp_reply(l)))
        .map(|l| one_line(l))
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::mail::classify::tests::bounce_of;
    use crate::mail::classify::{Envelope, MAX_BOUNCE_RECIPIENTS};

    #[test]
    fn a_forged_notice_with_many_addresses_stays_cheap() {
        let mut raw = String::from(
            "From: MAILER-DAEMON@example.net\nSubject: Undelivered Mail Returned to Sender\n\n",
        );
        for i in 0..100_000 {
            raw.push_str(&format!("<user{i}@example.org>: 550 5.1.1 unknown\n"));
        }
        let started = std::time::Instant::now();
        let b = bounce_of(&raw, &Envelope::default());
        assert_eq!(b.recipients.len(), MAX_BOUNCE_RECIPIENTS);
        assert_eq!(b.recipients[0], "user0@example.org");
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
