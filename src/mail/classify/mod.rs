//! Deciding what an inbound message is before it may touch a thread: customer mail
//! ([`MailClass::Normal`]), an automatic reply or list mail that must not reopen a thread
//! ([`MailClass::AutoReply`]), a delivery-status notice about mail we sent
//! ([`MailClass::Bounce`]), or an abuse/complaint report ([`MailClass::FeedbackReport`]).
//! Pure: it reads the parsed message and, for report parts [`ParsedMail`] does not keep, the
//! raw bytes.
//!
//! Precedence: feedback reports, then bounces, then auto-replies. A bounce is recognised by
//! its structure (RFC 3464 `multipart/report; report-type=delivery-status`, a
//! `message/delivery-status` part, an Amazon SES notification, `X-Failed-Recipients`), or,
//! for the many MTAs that send free text, by a mail-delivery-agent sender (null envelope
//! sender, MAILER-DAEMON, postmaster, "Mail Delivery System") together with a bounce subject
//! or a bounce phrase in the body. Neither a sender nor a subject alone is enough: a customer
//! asking about the "delivery status" of an order is not a bounce.
//!
//! `Bounce` stands for every delivery-status notice, not only failures: a delay warning
//! ("will retry"), or a DSN whose recipients are all `delayed`, `relayed`, `delivered` or
//! `expanded`, is a `Bounce` with `permanent: false`. An inbox needs both facts: the notice
//! is not customer mail (it must not reopen the thread), and it must not mark the message
//! failed; only `permanent: true` (an `Action: failed`, a 5.x.x status, or a free-text
//! failure notice) does.
//!
//! Where the rules live: `context` reads the message once for all of them; `feedback`,
//! `bounce` (with `report`, `ses`, `freetext` and `notice`) and `autoreply` hold the rules,
//! in the order above; `status` and `text` are the small readers they share.

mod autoreply;
mod bounce;
mod context;
mod feedback;
mod freetext;
mod list;
mod notice;
mod report;
mod ses;
mod status;
mod text;

use mail_parser::Message;
use uuid::Uuid;

use super::parse::{self, ParsedMail};
use autoreply::auto_reply;
use bounce::bounce;
use context::Ctx;
use feedback::feedback_report;
pub use list::ListFacts;

/// The SMTP envelope the message arrived with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    /// MAIL FROM; `Some("")` (or `"<>"`) is the null sender bounces use. `None` when unknown:
    /// the Return-Path header is read instead.
    pub from: Option<&'a str>,
    /// RCPT TO addresses: where a VERP bounce address shows up.
    pub recipients: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
pub enum MailClass {
    Normal,
    /// Automatic mail that is not a delivery notice: vacation replies, list mail, read
    /// receipts. `reason` names the rule, e.g. `Auto-Submitted: auto-replied`.
    AutoReply {
        reason: String,
    },
    Bounce(Bounce),
    /// RFC 5965 ARF and similar complaint reports.
    FeedbackReport {
        reason: String,
    },
}

/// A delivery-status notice about a message we sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bounce {
    /// Failed (or, for a delay notice, delayed) recipients, lower case, at most
    /// [`MAX_BOUNCE_RECIPIENTS`].
    pub recipients: Vec<String>,
    /// Enhanced status code (RFC 3463), e.g. `5.1.1`, when the notice carries one.
    pub status: Option<String>,
    /// The remote server's answer or the notice's reason: one line, at most 500 bytes.
    pub diagnostic: Option<String>,
    /// True when delivery has been given up: mark the message failed. False for delay
    /// warnings and success notices.
    pub permanent: bool,
    /// Message-ID of the mail that bounced, without brackets.
    pub original_message_id: Option<String>,
    /// The message named by our VERP return address (`bounces+<uuid>@...`), the most
    /// reliable link back to what we sent.
    pub verp_message: Option<Uuid>,
    /// Which rule recognised the notice.
    pub reason: String,
}

/// At most this many recipients are reported per bounce: a real notice names a handful, and
/// a forged "notice" listing a million addresses must not cost more than a normal one.
pub const MAX_BOUNCE_RECIPIENTS: usize = 100;

/// Classifies `mail` (parsed from `raw`) that arrived with `envelope`.
pub fn classify(mail: &ParsedMail, raw: &[u8], envelope: &Envelope<'_>) -> MailClass {
    let (bytes, _) = parse::message_bytes(raw);
    classify_tree(mail, raw, parse::mime_tree(bytes).as_ref(), envelope)
}

/// [`classify`] with the MIME tree [`parse::parse_with_tree`] gave along with `mail`.
pub fn classify_tree(
    mail: &ParsedMail,
    raw: &[u8],
    tree: Option<&Message<'_>>,
    envelope: &Envelope<'_>,
) -> MailClass {
    let (bytes, _) = parse::message_bytes(raw);
    let ctx = Ctx::new(mail, bytes, tree, envelope);
    let mut class = if let Some(reason) = feedback_report(&ctx) {
        MailClass::FeedbackReport { reason }
    } else if let Some(bounce) = bounce(&ctx) {
        MailClass::Bounce(bounce)
    } else if let Some(reason) = auto_reply(&ctx) {
        MailClass::AutoReply { reason }
    } else {
        MailClass::Normal
    };
    class.escape_controls();
    class
}

impl MailClass {
    /// Escapes the control characters of what the classifier read from the raw mail (a
    /// report's diagnostic, recipients, ids): they are stored and announced.
    fn escape_controls(&mut self) {
        use crate::text::escape_in_place as esc;
        match self {
            MailClass::Normal => {}
            MailClass::AutoReply { reason } | MailClass::FeedbackReport { reason } => esc(reason),
            MailClass::Bounce(b) => {
                b.recipients.iter_mut().for_each(esc);
                let texts = b.status.iter_mut().chain(&mut b.diagnostic);
                texts.chain(&mut b.original_message_id).for_each(esc);
                esc(&mut b.reason);
            }
        }
    }
}

/// `bounces+<uuid>@domain` → the uuid (see `mime::verp_sender`).
pub fn verp_uuid(address: &str) -> Option<Uuid> {
    let local = address.trim().trim_matches(['<', '>']).split('@').next()?;
    let (prefix, id) = local.split_once('+')?;
    if !prefix.eq_ignore_ascii_case("bounces") {
        return None;
    }
    Uuid::try_parse(id).ok()
}

#[cfg(test)]
mod tests {
    //! Helpers shared with the tests of the rule modules, and the tests of the rule order.

    use super::*;
    use crate::mail::parse::parse_with_tree;

    /// The class as the worker gets it (one parse, its tree shared); the form that parses
    /// its own tree must agree.
    fn class_of(raw: &str, envelope: &Envelope<'_>) -> MailClass {
        let (mail, tree) = parse_with_tree(raw.as_bytes()).unwrap();
        let class = classify_tree(&mail, raw.as_bytes(), tree.as_ref(), envelope);
        assert_eq!(classify(&mail, raw.as_bytes(), envelope), class);
        class
    }

    pub(super) fn plain(raw: &str) -> MailClass {
        class_of(raw, &Envelope::default())
    }

    pub(super) fn bounce_of(raw: &str, envelope: &Envelope<'_>) -> Bounce {
        match class_of(raw, envelope) {
            MailClass::Bounce(b) => b,
            other => panic!("not a bounce: {other:?}"),
        }
    }

    pub(super) fn auto_reason(raw: &str) -> Option<String> {
        match plain(raw) {
            MailClass::AutoReply { reason } => Some(reason),
            _ => None,
        }
    }

    pub(super) const VERP_ID: &str = "0197c0de2b3c7d4e8f9a0b1c2d3e4f50";

    /// An RFC 3464 report about one recipient, with the `Action` and `Status` given.
    pub(super) fn dsn(action: &str, status: &str) -> String {
        format!(
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: bounces+{VERP_ID}@gochat.example
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"

--r
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Original-Recipient: rfc822; Customer@Example.org
Final-Recipient: rfc822; customer@mail.example.org
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 5.1.1 <customer@mail.example.org>: Recipient
 address rejected: User unknown in virtual mailbox table

--r
Content-Type: message/rfc822

From: Agent <agent@gochat.example>
To: customer@example.org
Message-ID: <0197c0de.abcdef@gochat.example>
Subject: Your ticket

Hello
--r--
"
        )
    }

    #[test]
    fn bounce_rules_beat_auto_reply_rules_and_arf_beats_both() {
        let b = class_of(&dsn("failed", "5.1.1"), &Envelope::default());
        assert!(matches!(b, MailClass::Bounce(_)), "{b:?}");
        let arf = "From: MAILER-DAEMON@fbl.example.net
Subject: Undeliverable: complaint
Auto-Submitted: auto-generated
Content-Type: multipart/report; report-type=feedback-report; boundary=f

--f
Content-Type: text/plain

An abuse report.
--f
Content-Type: message/feedback-report

Feedback-Type: abuse
--f--
";
        assert!(
            matches!(plain(arf), MailClass::FeedbackReport { .. }),
            "{:?}",
            plain(arf)
        );
    }

    #[test]
    fn verp_addresses() {
        let id = Uuid::try_parse(VERP_ID).unwrap();
        assert_eq!(
            verp_uuid(&format!("bounces+{VERP_ID}@gochat.example")),
            Some(id)
        );
        assert_eq!(
            verp_uuid(&format!("<Bounces+{VERP_ID}@gochat.example>")),
            Some(id)
        );
        assert_eq!(verp_uuid(&format!("other+{VERP_ID}@gochat.example")), None);
        assert_eq!(verp_uuid("bounces+not-a-uuid@gochat.example"), None);
        assert_eq!(verp_uuid("bounces@gochat.example"), None);
    }
}
