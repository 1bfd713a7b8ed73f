//! RFC 3464 delivery-status reports: the per-recipient fields of a
//! `message/delivery-status` part (or of the text, when the MIME structure is broken), read
//! tolerantly and summed up into one `Bounce`: the failed recipients when any failed,
//! otherwise a delay or success notice about all of them.

use super::Bounce;
use super::context::Ctx;
use super::status::{enhanced_codes, status_field};
use super::text::{addresses_in, one_line, unique};

/// One per-recipient block of a `message/delivery-status` body.
#[derive(Debug, Default)]
struct DsnRecipient {
    final_recipient: Option<String>,
    original_recipient: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
}

impl DsnRecipient {
    fn is_empty(&self) -> bool {
        self.final_recipient.is_none() && self.original_recipient.is_none()
    }

    /// The address we sent to: Original-Recipient (the RCPT TO as given) when present,
    /// otherwise Final-Recipient (after forwarding and aliases).
    fn address(&self) -> Option<String> {
        self.original_recipient
            .as_deref()
            .and_then(dsn_address)
            .or_else(|| self.final_recipient.as_deref().and_then(dsn_address))
    }

    /// `Action: failed`; without an Action, a 5.x.x status.
    fn failed(&self) -> bool {
        match self.action.as_deref() {
            Some(a) => a == "failed",
            None => self.status.as_deref().is_some_and(|s| s.starts_with('5')),
        }
    }
}

/// `rfc822; <User@Example.org>` → `user@example.org`.
fn dsn_address(value: &str) -> Option<String> {
    let addr = value.split_once(';').map_or(value, |(_, a)| a);
    addresses_in(addr).into_iter().next()
}

/// Reads the per-recipient fields of a delivery-status body. Tolerant: folded lines,
/// missing blank lines between recipients, fields in any order.
fn dsn_fields(text: &str) -> Vec<DsnRecipient> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut blank_after = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            blank_after.push(fields.len());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut out = Vec::new();
    let mut cur = DsnRecipient::default();
    let mut blanks = blank_after.into_iter().peekable();
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if blanks.peek().is_some_and(|&b| b <= i) {
            while blanks.peek().is_some_and(|&b| b <= i) {
                blanks.next();
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
        let starts_new = match name.as_str() {
            // Recipient lines come first in a block, in either order; once a block has an
            // action or status, a recipient line opens the next one.
            "final-recipient" => {
                cur.final_recipient.is_some() || cur.action.is_some() || cur.status.is_some()
            }
            "original-recipient" => {
                cur.original_recipient.is_some() || cur.action.is_some() || cur.status.is_some()
            }
            "action" => cur.action.is_some(),
            "status" => cur.status.is_some(),
            _ => false,
        };
        if starts_new && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        match name.as_str() {
            "final-recipient" => cur.final_recipient = Some(value),
            "original-recipient" => cur.original_recipient = Some(value),
            "action" => cur.action = value.split_whitespace().next().map(str::to_ascii_lowercase),
            "status" => cur.status = status_field(&value),
            "diagnostic-code" => {
                let v = value.split_once(';').map_or(value.as_str(), |(_, d)| d);
                cur.diagnostic = Some(one_line(v)).filter(|d| !d.is_empty());
            }
            _ => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What the per-recipient fields of a report say, summed up.
pub(super) struct DsnSummary {
    pub(super) recipients: Vec<String>,
    pub(super) status: Option<String>,
    pub(super) diagnostic: Option<String>,
    pub(super) permanent: bool,
    /// `failed`, or the action of the first recipient (`delayed`, `delivered`...).
    kind: String,
}

/// Sums up per-recipient fields: the failed recipients when any failed (a failure), else
/// all of them (a delay or success notice). `None` when there is no recipient field.
pub(super) fn summarize(text: &str) -> Option<DsnSummary> {
    let records: Vec<DsnRecipient> = dsn_fields(text)
        .into_iter()
        .filter(|r| r.address().is_some())
        .collect();
    if records.is_empty() {
        return None;
    }
    let failed: Vec<&DsnRecipient> = records.iter().filter(|r| r.failed()).collect();
    let permanent = !failed.is_empty();
    let chosen: Vec<&DsnRecipient> = if permanent {
        failed
    } else {
        records.iter().collect()
    };
    let recipients = unique(chosen.iter().filter_map(|r| r.address()));
    let status = chosen.iter().find_map(|r| r.status.clone()).or_else(|| {
        chosen
            .iter()
            .filter_map(|r| r.diagnostic.as_deref())
            .find_map(|d| enhanced_codes(d).into_iter().next())
    });
    let kind = if permanent {
        "failed".to_owned()
    } else {
        chosen
            .iter()
            .find_map(|r| r.action.clone())
            .unwrap_or_else(|| "no action".to_owned())
    };
    Some(DsnSummary {
        recipients,
        status,
        diagnostic: chosen.iter().find_map(|r| r.diagnostic.clone()),
        permanent,
        kind,
    })
}

/// The bounce a delivery-status report describes, and whether it had per-recipient fields.
pub(super) fn dsn_bounce(ctx: &Ctx<'_>) -> (Bounce, bool) {
    let body = ctx.part(&["message/delivery-status", "message/global-delivery-status"]);
    // A report whose MIME structure is broken still carries its fields in the text.
    match summarize(body.unwrap_or(ctx.text)) {
        Some(s) => {
            let b = Bounce {
                recipients: s.recipients,
                status: s.status,
                diagnostic: s.diagnostic,
                permanent: s.permanent,
                reason: format!("RFC 3464 delivery-status report ({})", s.kind),
                ..Bounce::default()
            };
            (b, true)
        }
        None => {
            let b = Bounce {
                reason: "RFC 3464 delivery-status report (no per-recipient fields)".into(),
                ..Bounce::default()
            };
            (b, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::mail::classify::Envelope;
    use crate::mail::classify::tests::{VERP_ID, bounce_of, dsn};

    #[test]
    fn an_rfc3464_failure_names_recipient_status_original_and_verp() {
        let recipients = [format!("bounces+{VERP_ID}@gochat.example")];
        let env = Envelope {
            from: Some(""),
            recipients: &recipients,
        };
        let b = bounce_of(&dsn("failed", "5.1.1"), &env);
        assert_eq!(b.recipients, vec!["customer@example.org"]);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert_eq!(
            b.diagnostic.as_deref(),
            Some(
                "550 5.1.1 <customer@mail.example.org>: Recipient address rejected: User unknown in virtual mailbox table"
            )
        );
        assert!(b.permanent);
        assert_eq!(
            b.original_message_id.as_deref(),
            Some("0197c0de.abcdef@gochat.example")
        );
        assert_eq!(b.verp_message, Uuid::try_parse(VERP_ID).ok());
        assert!(b.reason.starts_with("RFC 3464"), "{}", b.reason);
    }

    #[test]
    fn a_delay_notice_is_a_bounce_that_does_not_fail_the_message() {
        let b = bounce_of(&dsn("delayed", "4.4.7"), &Envelope::default());
        assert!(!b.permanent);
        assert_eq!(b.status.as_deref(), Some("4.4.7"));
        assert_eq!(b.recipients, vec!["customer@example.org"]);
        assert!(b.reason.contains("delayed"), "{}", b.reason);
        // Without an envelope, the VERP address is found in To.
        assert_eq!(b.verp_message, Uuid::try_parse(VERP_ID).ok());
    }

    #[test]
    fn one_failed_recipient_among_delayed_ones_makes_a_failure() {
        let raw = dsn("delayed", "4.4.7").replace(
            "\n--r\nContent-Type: message/rfc822",
            "Final-Recipient: rfc822; other@example.com\nAction: failed\nStatus: 5.2.2\n\n--r\nContent-Type: message/rfc822",
        );
        let b = bounce_of(&raw, &Envelope::default());
        assert!(b.permanent);
        assert_eq!(b.recipients, vec!["other@example.com"]);
        assert_eq!(b.status.as_deref(), Some("5.2.2"));
    }

    #[test]
    fn dsn_fields_tolerate_odd_layouts() {
        let text = "Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@x.org\nOriginal-Recipient: rfc822; A@Y.org\nAction: failed\nStatus: 5.1.1\nFinal-Recipient: rfc822; b@x.org\nAction: delayed\nStatus: 4.4.1\nDiagnostic-Code: smtp; 450 try\n later\n";
        let r = dsn_fields(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].address().as_deref(), Some("a@y.org"));
        assert_eq!(r[1].address().as_deref(), Some("b@x.org"));
        assert_eq!(r[1].diagnostic.as_deref(), Some("450 try later"));
        assert!(r[0].failed() && !r[1].failed());
    }
}
