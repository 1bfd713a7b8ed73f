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

use std::collections::HashSet;

use mail_parser::{HeaderName, Message, MimeHeaders, PartType};
use serde_json::Value;
use uuid::Uuid;

use super::parse::{self, ParsedMail};

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
    let tree = parse::mime_tree(bytes);
    let ctx = Ctx::new(mail, bytes, tree.as_ref(), envelope);
    if let Some(reason) = feedback_report(&ctx) {
        return MailClass::FeedbackReport { reason };
    }
    if let Some(bounce) = bounce(&ctx) {
        return MailClass::Bounce(bounce);
    }
    if let Some(reason) = auto_reply(&ctx) {
        return MailClass::AutoReply { reason };
    }
    MailClass::Normal
}

/// What the rules read, computed once.
struct Ctx<'a> {
    mail: &'a ParsedMail,
    envelope: &'a Envelope<'a>,
    /// `report-type` of a top-level `multipart/report`, lower case.
    report_type: Option<String>,
    /// Top-level parts (not inside attached messages): content type and text.
    parts: Vec<(String, String)>,
    /// The first attached message (`message/rfc822`), for the original's Message-ID.
    original: Option<Original>,
    subject: String,
    from: String,
    text: &'a str,
    /// The raw bytes after the outer header block.
    body: &'a [u8],
}

/// What the bounced message tells about itself.
struct Original {
    message_id: Option<String>,
    recipients: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(
        mail: &'a ParsedMail,
        bytes: &'a [u8],
        tree: Option<&Message<'_>>,
        envelope: &'a Envelope<'a>,
    ) -> Self {
        let mut parts = Vec::new();
        let mut original = None;
        let mut report_type = None;
        if let Some(tree) = tree {
            report_type = tree.parts.first().and_then(|root| {
                let ct = root.content_type()?;
                (ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("report")))
                .then(|| ct.attribute("report-type"))
                .flatten()
                .map(|r| r.trim().to_ascii_lowercase())
            });
            for part in tree.parts.iter().skip(1) {
                if let PartType::Multipart(_) = part.body {
                    continue;
                }
                let ct = parse::content_type_of(part);
                if original.is_none()
                    && let PartType::Message(m) = &part.body
                    && !m.parts.is_empty()
                {
                    let mut recipients: Vec<String> = m
                        .all_to()
                        .chain(m.all_cc())
                        .flat_map(|a| a.iter())
                        .filter_map(|a| a.address())
                        .map(str::to_lowercase)
                        .collect();
                    recipients.dedup();
                    original = Some(Original {
                        message_id: m
                            .parts
                            .first()
                            .and_then(|root| parse::first_value(root, HeaderName::MessageId))
                            .and_then(parse::first_id)
                            .and_then(parse::clean_id),
                        recipients,
                    });
                }
                // A 30 MB PDF is not a report: only text-like parts are read.
                let text = if is_report_like(&ct) {
                    parse::part_text(part).into_owned()
                } else {
                    String::new()
                };
                parts.push((ct, text));
            }
        }
        if original.is_none()
            && let Some((_, headers)) = parts.iter().find(|(ct, _)| ct == "text/rfc822-headers")
        {
            original = Some(Original {
                message_id: header_in_block(headers, "message-id")
                    .and_then(|v| parse::clean_id(&v)),
                recipients: ["to", "cc"]
                    .iter()
                    .filter_map(|h| header_in_block(headers, h))
                    .flat_map(|v| addresses_in(&v))
                    .collect(),
            });
        }
        let text = mail.text.as_deref().unwrap_or("");
        if original.is_none() {
            original = quoted_original(&text[notice_text(text).len()..]);
        }
        Ctx {
            mail,
            envelope,
            report_type,
            parts,
            original,
            subject: mail.subject.to_lowercase(),
            from: mail.header("From").unwrap_or("").to_lowercase(),
            text,
            body: parse::find(bytes, b"\n\n")
                .or_else(|| parse::find(bytes, b"\n\r\n"))
                .map_or(&[][..], |end| &bytes[end..]),
        }
    }

    fn part(&self, content_types: &[&str]) -> Option<&str> {
        self.parts
            .iter()
            .find(|(ct, _)| content_types.contains(&ct.as_str()))
            .map(|(_, t)| t.as_str())
    }

    /// True when the envelope sender (or, when unknown, Return-Path) is the null sender.
    fn null_sender(&self) -> bool {
        let null = |s: &str| matches!(s.trim(), "" | "<>");
        match self.envelope.from {
            Some(f) => null(f),
            None => self.mail.header("Return-Path").is_some_and(null),
        }
    }

    /// Evidence that a mail delivery agent, not a person, sent this.
    fn delivery_agent(&self) -> bool {
        const NAMES: &[&str] = &[
            "mailer-daemon",
            "mailer daemon",
            "mailer_daemon",
            "maildaemon",
            "mail-daemon",
            "postmaster",
            "mail delivery",
            "mail deliver system",
            "delivery subsystem",
            "mail.delivery.system",
        ];
        let return_path = self.mail.header("Return-Path").unwrap_or("").to_lowercase();
        self.null_sender()
            || NAMES.iter().any(|n| self.from.contains(n))
            || self.from.contains("<>")
            || return_path.contains("mailer-daemon")
    }
}

fn is_report_like(ct: &str) -> bool {
    ct.starts_with("text/") || ct.starts_with("message/") && ct != "message/rfc822"
}

// ---------------------------------------------------------------------------------------
// Feedback reports

fn feedback_report(ctx: &Ctx<'_>) -> Option<String> {
    if ctx.report_type.as_deref() == Some("feedback-report") {
        return Some("RFC 5965 feedback report (multipart/report)".into());
    }
    if ctx.part(&["message/feedback-report"]).is_some() {
        return Some("RFC 5965 feedback report (message/feedback-report part)".into());
    }
    if ctx
        .mail
        .header("X-Apple-Unsubscribe")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Some("unsubscribe request (X-Apple-Unsubscribe)".into());
    }
    if nested_has_header(ctx, "x-hmxmroriginalrecipient") {
        return Some("Microsoft JMRP complaint (X-HmXmrOriginalRecipient)".into());
    }
    if let Some(n) = ses_notification(ctx.text)
        && notification_type(&n).eq_ignore_ascii_case("complaint")
    {
        return Some("Amazon SES complaint notification".into());
    }
    None
}

/// True when an attached message carries `header` (lower case) in its header block. Read
/// from the attachment's raw bytes, so an attachment mail-parser could not parse counts too.
fn nested_has_header(ctx: &Ctx<'_>, header: &str) -> bool {
    ctx.mail
        .attachments
        .iter()
        .filter(|a| a.content_type == "message/rfc822")
        .any(|a| {
            let head = parse::find(&a.data, b"\n\n")
                .or_else(|| parse::find(&a.data, b"\r\n\r\n"))
                .map_or(&a.data[..], |end| &a.data[..end]);
            String::from_utf8_lossy(head).lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(header))
            })
        })
}

// ---------------------------------------------------------------------------------------
// Bounces

fn bounce(ctx: &Ctx<'_>) -> Option<Bounce> {
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

/// `5.1.1 (user unknown)` → `5.1.1`.
fn status_field(value: &str) -> Option<String> {
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

fn is_small_number(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// What the per-recipient fields of a report say, summed up.
struct DsnSummary {
    recipients: Vec<String>,
    status: Option<String>,
    diagnostic: Option<String>,
    permanent: bool,
    /// `failed`, or the action of the first recipient (`delayed`, `delivered`...).
    kind: String,
}

/// Sums up per-recipient fields: the failed recipients when any failed (a failure), else
/// all of them (a delay or success notice). `None` when there is no recipient field.
fn summarize(text: &str) -> Option<DsnSummary> {
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
fn dsn_bounce(ctx: &Ctx<'_>) -> (Bounce, bool) {
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

/// An Amazon SES notification: a body that is the JSON notification, bare or wrapped in an
/// SNS envelope whose `Message` is the notification as a JSON string. Long lines broken by
/// an MTA with `!` + newline + space are mended first.
fn ses_notification(text: &str) -> Option<Value> {
    // The notification is the whole body; JSON quoted inside someone's prose is not one.
    let body = text.trim_start();
    if !body.starts_with('{') || !body.contains("notificationType") && !body.contains("eventType") {
        return None;
    }
    let first_json = |s: &str| {
        serde_json::Deserializer::from_str(s)
            .into_iter::<Value>()
            .next()?
            .ok()
    };
    let mended;
    let mut value = match first_json(body) {
        Some(v) => v,
        None => {
            mended = body.replace("!\r\n ", "").replace("!\n ", "");
            first_json(&mended)?
        }
    };
    if let Some(inner) = value.get("Message").and_then(Value::as_str) {
        value = first_json(inner)?;
    }
    (!notification_type(&value).is_empty()).then_some(value)
}

fn notification_type(n: &Value) -> &str {
    n.get("notificationType")
        .or_else(|| n.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn ses_bounce(n: &Value) -> Option<Bounce> {
    let kind = notification_type(n).to_ascii_lowercase();
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut b = Bounce::default();
    match kind.as_str() {
        "bounce" => {
            let bounce = n.get("bounce")?;
            b.permanent = str_at(bounce, "bounceType").is_none_or(|t| t != "Transient");
            for r in bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(a) = str_at(r, "emailAddress").and_then(|a| addresses_in(&a).pop()) {
                    b.recipients.push(a);
                }
                if b.status.is_none() {
                    b.status = str_at(r, "status").and_then(|s| status_field(&s));
                }
                if b.diagnostic.is_none() {
                    b.diagnostic = str_at(r, "diagnosticCode").map(|d| one_line(&d));
                }
            }
            b.reason = "Amazon SES bounce notification".into();
        }
        "delivery" | "deliverydelay" => {
            let section = n.get("delivery").or_else(|| n.get("deliveryDelay"))?;
            for r in section
                .get("recipients")
                .or_else(|| section.get("delayedRecipients"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let addr = r
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| str_at(r, "emailAddress"));
                if let Some(a) = addr.and_then(|a| addresses_in(&a).pop()) {
                    b.recipients.push(a);
                }
            }
            b.diagnostic = str_at(section, "smtpResponse").map(|d| one_line(&d));
            b.status = b
                .diagnostic
                .as_deref()
                .and_then(|d| enhanced_codes_any_class(d).into_iter().next());
            b.reason = format!("Amazon SES {} notification", notification_type(n));
        }
        _ => return None,
    }
    let mail = n.get("mail");
    b.original_message_id = mail
        .and_then(|m| m.get("commonHeaders"))
        .and_then(|h| str_at(h, "messageId"))
        .or_else(|| {
            mail.and_then(|m| m.get("headers"))
                .and_then(Value::as_array)?
                .iter()
                .find(|h| {
                    h.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case("message-id"))
                })
                .and_then(|h| str_at(h, "value"))
        })
        .and_then(|id| parse::clean_id(&id));
    Some(b)
}

/// Subjects of delivery-failure and delay notices, lower case, in the languages seen in
/// the wild. Only read when the sender is a mail delivery agent.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered mail",
    "delivery status notification",
    "delivery notification",
    "delivery status",
    "failure notice",
    "returned mail",
    "mail delivery failed",
    "delivery failed",
    "delivery failure",
    "failed delivery",
    "failure delivery",
    "delivery has failed",
    "mail delivery failure",
    "could not be delivered",
    "not delivered",
    "non-delivery",
    "nondeliverable",
    "non deliverable",
    "mail system error",
    "returning message to sender",
    "returned to sender",
    "returning to sender",
    "error sending your mail",
    "mail failed",
    "delivery problem",
    "delivery delayed",
    "message delayed",
    "delayed mail",
    "warning: message",
    "unzustellbar",
    "nicht zustellbar",
    "non remis",
    "non distribuable",
    "no se puede entregar",
    "no entregado",
    "não entregue",
    "impossibile recapitare",
    "onbestelbaar",
    "olevererbart",
    "не доставлено",
    "配信できません",
    "配信できませんでした",
    "配送できません",
    "送信できません",
    "不達",
    "配信エラー",
];

/// Phrases that only delivery-failure notices write, lower case, with the rule name.
const BOUNCE_PHRASES: &[(&str, &str)] = &[
    (
        "this is the qmail-send program",
        "qmail-send failure notice",
    ),
    (
        "this message was created automatically by mail delivery software",
        "Exim delivery failure notice",
    ),
    (
        "the following address(es) failed",
        "Exim delivery failure notice",
    ),
    ("could not be delivered to", "delivery failure notice"),
    ("couldn't be delivered to", "delivery failure notice"),
    ("message could not be delivered", "delivery failure notice"),
    ("was not delivered to", "delivery failure notice"),
    ("unable to deliver your message", "delivery failure notice"),
    (
        "wasn't able to deliver your message",
        "delivery failure notice",
    ),
    (
        "delivery to the following recipient",
        "delivery failure notice",
    ),
    (
        "delivery has failed to these recipients",
        "Exchange non-delivery report",
    ),
    ("permanent fatal errors", "sendmail failure notice"),
    (
        "the following addresses had permanent",
        "sendmail failure notice",
    ),
    ("message delivery has failed", "delivery failure notice"),
    (
        "your message cannot be delivered",
        "delivery failure notice",
    ),
    ("has not yet been delivered", "delay notice"),
    ("delivery attempts will continue", "delay notice"),
    (
        "we had trouble delivering your message",
        "delivery failure notice",
    ),
];

/// A free-text notice: the rule that recognised it, and the recipients it names when the
/// rule knows where they are.
fn free_text_bounce(ctx: &Ctx<'_>) -> Option<(String, Vec<String>)> {
    if ctx.delivery_agent() {
        if let Some(s) = BOUNCE_SUBJECTS.iter().find(|s| ctx.subject.contains(*s)) {
            return Some((
                format!("delivery agent notice (subject: {s:?})"),
                Vec::new(),
            ));
        }
        let head = notice_text(ctx.text).to_lowercase();
        if let Some((_, rule)) = BOUNCE_PHRASES.iter().find(|(p, _)| head.contains(p)) {
            return Some(((*rule).to_owned(), Vec::new()));
        }
    }
    list_rejection(ctx)
}

/// A mailing-list manager refusing a post from a non-member: the post was not delivered,
/// and the list address (named on the refusal line) is the failed recipient.
fn list_rejection(ctx: &Ctx<'_>) -> Option<(String, Vec<String>)> {
    let list_manager = [
        "x-mlserver",
        "x-mailman-version",
        "mailing-list",
        "x-ml-info",
    ]
    .iter()
    .any(|h| ctx.mail.header(h).is_some())
        || ctx.mail.from.as_ref().is_some_and(|f| {
            let local = f.address.split('@').next().unwrap_or("").to_lowercase();
            local.ends_with("-admin") || local.ends_with("-owner") || local.starts_with("owner-")
        });
    const REFUSALS: &[&str] = &[
        "not a member",
        "not member",
        "non-member",
        "not allowed to post",
        "members only",
    ];
    if !list_manager {
        return None;
    }
    let notice = notice_text(ctx.text);
    let refusal_lines: Vec<&str> = notice
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            REFUSALS.iter().any(|p| l.contains(p))
        })
        .collect();
    if refusal_lines.is_empty() && !REFUSALS.iter().any(|p| ctx.subject.contains(p)) {
        return None;
    }
    let mut own = own_addresses(ctx, notice);
    own.extend(ctx.mail.to.iter().map(|p| p.address.to_lowercase()));
    let recipients = unique(
        refusal_lines
            .iter()
            .flat_map(|l| addresses_in(l))
            .filter(|a| !own.contains(a)),
    );
    Some((
        "mailing-list rejection of a non-member post".to_owned(),
        recipients,
    ))
}

/// The notice's own words: the text before the copy of the bounced message starts.
fn notice_text(text: &str) -> &str {
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

/// Whether a free-text notice reports a failure (`true`) or a delay (`false`): the subject
/// speaks first ("Returned mail: Deferred" is a failure, "(Delay)" is not), then the status
/// class and the body's wording.
fn free_text_permanence(subject: &str, notice: &str, status: Option<&str>) -> Option<bool> {
    const SUBJECT_FAILURE: &[&str] = &[
        "fail",
        "returned",
        "undeliver",
        "not delivered",
        "could not",
        "couldn't",
        "unable",
        "error",
        "rejected",
    ];
    const SUBJECT_DELAY: &[&str] = &["delay", "warning", "deferred", "still trying"];
    const BODY_DELAY: &[&str] = &[
        "has not yet been delivered",
        "delivery attempts will continue",
        "will retry",
        "will be retried",
        "still trying",
        "will keep trying",
        "will continue to try",
    ];
    const BODY_FAILURE: &[&str] = &[
        "permanent",
        "given up",
        "giving up",
        "fatal error",
        "failed",
        "could not be delivered",
        "couldn't be delivered",
        "was not delivered",
        "unable to deliver",
        "undeliverable",
        "user unknown",
        "does not exist",
        "rejected",
    ];
    let notice = notice.to_lowercase();
    let class = status.and_then(|s| s.chars().next());
    if SUBJECT_FAILURE.iter().any(|w| subject.contains(w)) {
        Some(true)
    } else if SUBJECT_DELAY.iter().any(|w| subject.contains(w)) {
        Some(false)
    } else if class == Some('5') {
        Some(true)
    } else if BODY_DELAY.iter().any(|w| notice.contains(w)) {
        Some(false)
    } else if BODY_FAILURE.iter().any(|w| notice.contains(w)) {
        Some(true)
    } else if class == Some('4') {
        Some(false)
    } else {
        None
    }
}

/// Addresses that are never the failed recipient: ours (the envelope), the notice's sender,
/// and the help desk a notice asks to contact.
fn own_addresses(ctx: &Ctx<'_>, notice: &str) -> HashSet<String> {
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
fn recipients_in_text(
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
fn diagnostic_line(notice: &str) -> Option<String> {
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

/// Enhanced status codes of class 4 or 5 in `s`, those after an SMTP reply code
/// (`550 5.1.1`, `550-5.1.1`) first.
fn enhanced_codes(s: &str) -> Vec<String> {
    let mut found = scan_codes(s);
    found.retain(|(code, _)| !code.starts_with('2'));
    found.sort_by_key(|(_, after_reply)| !after_reply);
    found.into_iter().map(|(c, _)| c).collect()
}

fn enhanced_codes_any_class(s: &str) -> Vec<String> {
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

/// The bounced message's headers quoted in the text after the notice: the block that starts
/// at the first header line.
fn quoted_original(rest: &str) -> Option<Original> {
    let start = rest.lines().position(|l| {
        l.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    })?;
    let block = rest.lines().skip(start).collect::<Vec<_>>().join("\n");
    let message_id = header_in_block(&block, "message-id").and_then(|v| parse::clean_id(&v));
    let mut recipients: Vec<String> = ["to", "cc"]
        .iter()
        .filter_map(|h| header_in_block(&block, h))
        .flat_map(|v| addresses_in(&v))
        .collect();
    recipients.dedup();
    (message_id.is_some() || !recipients.is_empty()).then_some(Original {
        message_id,
        recipients,
    })
}

/// A header in a header block given as text, unfolded.
fn header_in_block(block: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in block.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
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

/// `bounces+<uuid>@domain` → the uuid (see `mime::verp_sender`).
pub fn verp_uuid(address: &str) -> Option<Uuid> {
    let local = address.trim().trim_matches(['<', '>']).split('@').next()?;
    let (prefix, id) = local.split_once('+')?;
    if !prefix.eq_ignore_ascii_case("bounces") {
        return None;
    }
    Uuid::try_parse(id).ok()
}

// ---------------------------------------------------------------------------------------
// Auto-replies

/// Vacation and auto-reply subjects (lower case). `starts` ones must open the subject.
const AUTO_SUBJECTS_ANYWHERE: &[&str] = &[
    "out of office",
    "out of the office",
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "auto response",
    "autoresponse",
    "auto-response",
    "automatische antwort",
    "abwesenheitsnotiz",
    "réponse automatique",
    "reponse automatique",
    "respuesta automática",
    "respuesta automatica",
    "risposta automatica",
    "resposta automática",
    "automatisch antwoord",
    "autosvar",
    "automaattinen vastaus",
    "odpowiedź automatyczna",
    "自動応答",
    "自動返信",
    "不在",
];
const AUTO_SUBJECTS_START: &[&str] = &["auto:", "away", "vacation", "on vacation", "abwesend"];

fn auto_reply(ctx: &Ctx<'_>) -> Option<String> {
    let mail = ctx.mail;
    if let Some(v) = mail.header("Auto-Submitted")
        && !v.trim().eq_ignore_ascii_case("no")
        && !v.trim().is_empty()
    {
        return Some(format!("Auto-Submitted: {}", v.trim()));
    }
    for h in [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Autogenerated",
    ] {
        if let Some(v) = mail.header(h)
            && !v.trim().eq_ignore_ascii_case("no")
        {
            return Some(format!("{h}: {}", v.trim()));
        }
    }
    if let Some(p) = mail.header("Precedence") {
        let p = p.trim().to_ascii_lowercase();
        if matches!(p.as_str(), "bulk" | "junk" | "list" | "auto_reply") {
            return Some(format!("Precedence: {p}"));
        }
    }
    if mail.header("List-Id").is_some() {
        return Some("mailing list (List-Id)".into());
    }
    if mail.header("List-Unsubscribe").is_some() {
        return Some("mailing list (List-Unsubscribe)".into());
    }
    if ctx.report_type.as_deref() == Some("disposition-notification") {
        return Some("read receipt (RFC 8098 disposition notification)".into());
    }
    let subject = ctx.subject.trim();
    if let Some(s) = AUTO_SUBJECTS_ANYWHERE.iter().find(|s| subject.contains(*s)) {
        return Some(format!("auto-reply subject ({s:?})"));
    }
    if let Some(s) = AUTO_SUBJECTS_START.iter().find(|s| {
        subject
            .strip_prefix(*s)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric()))
    }) {
        return Some(format!("auto-reply subject ({s:?})"));
    }
    if ctx.null_sender() {
        return Some("null envelope sender".into());
    }
    None
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Every e-mail address in `s`, lower case, in order.
fn addresses_in(s: &str) -> Vec<String> {
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
fn unique(addresses: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    addresses
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .take(MAX_BOUNCE_RECIPIENTS)
        .collect()
}

/// One line, trimmed, at most 500 bytes (cut on a character boundary).
fn one_line(s: &str) -> String {
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
    use crate::mail::parse::parse;

    fn class_of(raw: &str, envelope: &Envelope<'_>) -> MailClass {
        let mail = parse(raw.as_bytes()).unwrap();
        classify(&mail, raw.as_bytes(), envelope)
    }

    fn plain(raw: &str) -> MailClass {
        class_of(raw, &Envelope::default())
    }

    fn bounce_of(raw: &str, envelope: &Envelope<'_>) -> Bounce {
        match class_of(raw, envelope) {
            MailClass::Bounce(b) => b,
            other => panic!("not a bounce: {other:?}"),
        }
    }

    fn auto_reason(raw: &str) -> Option<String> {
        match plain(raw) {
            MailClass::AutoReply { reason } => Some(reason),
            _ => None,
        }
    }

    const VERP_ID: &str = "0197c0de2b3c7d4e8f9a0b1c2d3e4f50";

    fn dsn(action: &str, status: &str) -> String {
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

    #[test]
    fn a_delivery_agent_sender_alone_or_a_subject_alone_is_not_a_bounce() {
        // A customer asking about a delivery.
        let customer =
            "From: Ada <ada@example.org>\nSubject: Delivery status of my order\n\nWhere is it?\n";
        assert_eq!(plain(customer), MailClass::Normal);
        // A postmaster writing words that are not a failure notice.
        let postmaster = "From: postmaster@example.org\nSubject: Hello\nReturn-Path: <postmaster@example.org>\n\nCan we talk about your SPF record?\n";
        assert_eq!(plain(postmaster), MailClass::Normal);
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
    fn auto_reply_headers() {
        let m = |h: &str| format!("From: a@example.org\n{h}\nSubject: Re: ticket\n\nx\n");
        assert_eq!(
            auto_reason(&m("Auto-Submitted: auto-replied")).as_deref(),
            Some("Auto-Submitted: auto-replied")
        );
        assert!(auto_reason(&m("Auto-Submitted: auto-generated")).is_some());
        assert_eq!(auto_reason(&m("Auto-Submitted: no")), None);
        assert_eq!(auto_reason(&m("X-Auto-Response-Suppress: All")), None);
        assert!(auto_reason(&m("X-Autoreply: yes")).is_some());
        assert!(auto_reason(&m("X-Autorespond: yes")).is_some());
        assert_eq!(
            auto_reason(&m("Precedence: bulk")).as_deref(),
            Some("Precedence: bulk")
        );
        assert_eq!(auto_reason(&m("Precedence: first-class")), None);
        assert_eq!(
            auto_reason(&m("List-Id: Users <users.lists.example.org>")).as_deref(),
            Some("mailing list (List-Id)")
        );
        assert_eq!(
            auto_reason(&m("List-Unsubscribe: <mailto:leave@example.org>")).as_deref(),
            Some("mailing list (List-Unsubscribe)")
        );
        assert_eq!(
            auto_reason(&m("Return-Path: <>")).as_deref(),
            Some("null envelope sender")
        );
        let mail = parse(m("X-Other: 1").as_bytes()).unwrap();
        let null = Envelope {
            from: Some("<>"),
            recipients: &[],
        };
        assert!(matches!(
            classify(&mail, m("X-Other: 1").as_bytes(), &null),
            MailClass::AutoReply { .. }
        ));
    }

    #[test]
    fn vacation_subjects() {
        let m = |s: &str| format!("From: a@example.org\nSubject: {s}\n\nx\n");
        for s in [
            "Out of Office: Re: ticket 12",
            "Automatic reply: Your request",
            "Auto: Re: invoice",
            "Abwesenheitsnotiz: Rechnung",
            "Réponse automatique : facture",
            "Away until Monday",
            "Vacation",
            "=?utf-8?q?Automatische_Antwort=3A_Frage?=",
        ] {
            assert!(auto_reason(&m(s)).is_some(), "{s}");
        }
        for s in [
            "Awaiting your reply",
            "Vacation rental booking problem?",
            "Autumn offer",
        ] {
            let r = auto_reason(&m(s));
            assert!(r.is_none() || s.starts_with("Vacation "), "{s}: {r:?}");
        }
        assert_eq!(plain(&m("Awaiting your reply")), MailClass::Normal);
    }

    #[test]
    fn read_receipts_are_auto_replies() {
        let raw = "From: a@example.org
Subject: Read: ticket
Content-Type: multipart/report; report-type=disposition-notification; boundary=d

--d
Content-Type: text/plain

Your message was read.
--d
Content-Type: message/disposition-notification

Disposition: manual-action/MDN-sent-manually; displayed
--d--
";
        assert!(auto_reason(raw).is_some_and(|r| r.contains("disposition")));
    }

    #[test]
    fn amazon_ses_notifications() {
        let bounce = r#"From: no-reply@sns.amazonaws.com
Subject: AWS Notification Message
Content-Type: text/plain

{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"Gone@Example.com","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"commonHeaders":{"messageId":"<m1@gochat.example>"}}}
"#;
        let b = bounce_of(bounce, &Envelope::default());
        assert_eq!(b.recipients, vec!["gone@example.com"]);
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.permanent);
        assert_eq!(b.original_message_id.as_deref(), Some("m1@gochat.example"));
        let complaint = bounce.replace(
            r#""notificationType":"Bounce""#,
            r#""notificationType":"Complaint""#,
        );
        assert!(matches!(
            plain(&complaint),
            MailClass::FeedbackReport { .. }
        ));
        // JSON quoted in a person's mail is not a notification.
        let pasted = bounce.replace(
            "From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\nContent-Type: text/plain\n\n",
            "From: ada@example.org\nSubject: Why?\n\nWe got this:\n",
        );
        assert!(pasted.starts_with("From: ada"));
        assert_eq!(plain(&pasted), MailClass::Normal);
    }

    #[test]
    fn a_mailing_list_refusal_names_the_list() {
        let raw = "From: owner-support-list@lists.example.org
To: agent@gochat.example
Subject: Your post was not accepted

You are not a member of this mailing list <support-list@lists.example.org>.
";
        let b = bounce_of(raw, &Envelope::default());
        assert_eq!(b.recipients, vec!["support-list@lists.example.org"]);
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

    #[test]
    fn one_line_is_short() {
        let long = "x ".repeat(400) + "é";
        let l = one_line(&format!("a\r\n  b\t{long}"));
        assert!(l.starts_with("a b x"));
        assert!(l.len() <= 500);
    }
}
