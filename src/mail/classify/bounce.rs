//! Bounces: which rule recognises a delivery-status notice (a structured report, an Amazon
//! SES notification, `X-Failed-Recipients`, then free text, in that order), and what the
//! notice tells beyond that rule: failed recipients, status and diagnostic read from the
//! notice text, whether it reports a failure or a delay, the bounced message's Message-ID,
//! and the VERP address that names the message we sent.

use std::collections::HashSet;

use uuid::Uuid;

use super::context::Ctx;
use super::freetext::{free_text_bounce, free_text_permanence};
use super::notice::{diagnostic_line, notice_text, own_addresses, recipients_in_text};
use super::report::{dsn_bounce, summarize};
use super::ses::{ses_bounce, ses_notification};
use super::status::enhanced_codes;
use super::text::{addresses_in, unique};
use super::{Bounce, verp_uuid};
use crate::mail::parse;

/// The notice, when a rule recognises one, with what the rule left open filled in from
/// the text, the VERP address and the original's Message-ID.
pub(super) fn bounce(ctx: &Ctx<'_>) -> Option<Bounce> {
    // `structured`: the notice said per recipient whether delivery failed, so its
    // `permanent` stands; otherwise the wording decides.
    let (mut b, structured) = if ctx.report_type.as_deref() == Some("delivery-status")
        || ctx
            .part(&["message/delivery-status", "message/global-delivery-status"])
            .is_some()
    {
        dsn_bounce(ctx)
    } else if let Some(b) = ses_notification(ctx.text).and_then(|n| ses_bounce(&n)) {
        (b, true)
    } else if let Some(failed) = ctx.mail.header("X-Failed-Recipients") {
        let b = Bounce {
            recipients: addresses_in(failed),
            permanent: true,
            reason: "X-Failed-Recipients header".into(),
            ..Bounce::default()
        };
        (b, false)
    } else if let Some((reason, recipients)) = free_text_bounce(ctx) {
        let b = Bounce {
            recipients,
            permanent: true,
            reason,
            ..Bounce::default()
        };
        (b, false)
    } else {
        return None;
    };
    complete_from_text(ctx, &mut b, structured);
    b.verp_message = verp_message(ctx);
    if b.original_message_id.is_none() {
        b.original_message_id = original_message_id(ctx);
    }
    Some(b)
}

/// Fills what a rule left open from the notice text: recipients, status, diagnostic, and
/// whether it is a delay rather than a failure.
fn complete_from_text(ctx: &Ctx<'_>, b: &mut Bounce, structured: bool) {
    let notice = notice_text(ctx.text);
    let exclude = own_addresses(ctx, notice);
    let parties: HashSet<String> = ctx
        .mail
        .to
        .iter()
        .chain(ctx.mail.cc.iter())
        .map(|p| p.address.to_lowercase())
        .collect();
    // DSN fields written into the text (a report whose MIME parts were lost, or an MTA
    // that quotes them) are as good as a delivery-status part.
    let mut structured = structured;
    if b.recipients.is_empty()
        && let Some(s) = summarize(ctx.text)
    {
        b.recipients = s.recipients;
        b.status = b.status.take().or(s.status);
        b.diagnostic = b.diagnostic.take().or(s.diagnostic);
        if !structured {
            b.permanent = s.permanent;
            structured = true;
        }
    }
    if b.recipients.is_empty() {
        b.recipients = recipients_in_text(notice, &exclude, &parties);
    }
    if b.recipients.is_empty()
        && let Some(o) = &ctx.original
        && let [only] = o.recipients.as_slice()
        && !exclude.contains(only)
    {
        b.recipients.push(only.clone());
    }
    b.recipients = unique(std::mem::take(&mut b.recipients));
    let diagnostic_line = diagnostic_line(notice);
    if b.status.is_none() {
        b.status = diagnostic_line
            .as_deref()
            .and_then(|l| enhanced_codes(l).into_iter().next())
            .or_else(|| enhanced_codes(notice).into_iter().next());
    }
    if b.diagnostic.is_none() {
        b.diagnostic = diagnostic_line;
    }
    if !structured {
        // A report without per-recipient fields proves nothing failed; a free-text notice
        // was recognised by its failure wording.
        let default = !b.reason.starts_with("RFC 3464");
        b.permanent =
            free_text_permanence(&ctx.subject, notice, b.status.as_deref()).unwrap_or(default);
    }
}

/// The Message-ID of the bounced mail: the attached message or header part, else the first
/// quoted `Message-ID:` line in the text, else the notice's own In-Reply-To (MTAs that
/// thread their notices put the original's id there).
fn original_message_id(ctx: &Ctx<'_>) -> Option<String> {
    if let Some(id) = ctx.original.as_ref().and_then(|o| o.message_id.clone()) {
        return Some(id);
    }
    let own = ctx.mail.message_id.as_deref();
    if let Some(id) = quoted_message_id(ctx.text, own) {
        return Some(id);
    }
    // Headers of the original that MIME hides: a part without Content-Type whose "part
    // headers" are the original's, a report part cut short by a wrong boundary. The raw
    // body is read as text (at most 2 MB of it).
    let body = &ctx.body[..ctx.body.len().min(2 << 20)];
    if let Some(id) = quoted_message_id(&String::from_utf8_lossy(body), own) {
        return Some(id);
    }
    ctx.mail.in_reply_to.first().cloned()
}

/// The first `Message-ID:` header line in `text` that is not the notice's own.
fn quoted_message_id(text: &str, own: Option<&str>) -> Option<String> {
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let Some((name, value)) = t.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("message-id") {
            continue;
        }
        let mut value = value.trim().to_owned();
        if value.is_empty()
            && let Some(next) = lines.peek()
        {
            value = next.trim().to_owned();
        }
        let id = value
            .split_whitespace()
            .find(|w| w.contains('@'))
            .unwrap_or(&value);
        if let Some(id) = parse::clean_id(id)
            && Some(id.as_str()) != own
        {
            return Some(id);
        }
    }
    None
}

/// The message named by a VERP address among the envelope recipients (or, when the
/// envelope is unknown, the delivery headers and To).
fn verp_message(ctx: &Ctx<'_>) -> Option<Uuid> {
    let from_headers = ["Delivered-To", "X-Original-To", "Envelope-To", "To"]
        .iter()
        .flat_map(|h| ctx.mail.headers_named(h))
        .flat_map(addresses_in);
    ctx.envelope
        .recipients
        .iter()
        .map(|r| r.to_lowercase())
        .chain(from_headers)
        .find_map(|addr| verp_uuid(&addr))
}

#[cfg(test)]
mod tests {
    use crate::mail::classify::Envelope;
    use crate::mail::classify::tests::bounce_of;

    #[test]
    fn qmail_and_exim_text_bounces() {
        let qmail = "From: MAILER-DAEMON@mx.example.jp
To: agent@gochat.example
Subject: failure notice

Hi. This is the qmail-send program at mx.example.jp.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<Kijitora@Example.NE.jp>:
192.0.2.32 said: 550 5.1.1 Unknown user (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <agent@gochat.example>
Message-ID: <orig.1@gochat.example>
To: kijitora@example.ne.jp
Subject: hi

body
";
        let b = bounce_of(qmail, &Envelope::default());
        assert_eq!(b.recipients, vec!["kijitora@example.ne.jp"]);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.permanent);
        assert_eq!(
            b.original_message_id.as_deref(),
            Some("orig.1@gochat.example")
        );
        assert_eq!(
            b.diagnostic.as_deref(),
            Some("192.0.2.32 said: 550 5.1.1 Unknown user (#5.1.1)")
        );

        let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: agent@gochat.example
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: someone@example.com

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  someone@example.com
    host mx.example.com [192.0.2.1]: 550 mailbox unavailable
";
        let b = bounce_of(exim, &Envelope::default());
        assert_eq!(b.recipients, vec!["someone@example.com"]);
        assert_eq!(b.reason, "X-Failed-Recipients header");
        assert!(b.status.is_none());
        assert_eq!(
            b.diagnostic.as_deref(),
            Some("host mx.example.com [192.0.2.1]: 550 mailbox unavailable")
        );
    }
}
