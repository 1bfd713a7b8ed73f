//! Bounces written as free text, as most MTAs send them: recognised only when a mail
//! delivery agent sent the notice and its subject or its wording says that delivery failed
//! or is delayed (neither a sender nor a subject alone is enough), or when a mailing-list
//! manager refuses a non-member's post. Also decides, for a notice without per-recipient
//! fields, whether it reports a failure or a delay.

use super::context::Ctx;
use super::notice::{notice_text, own_addresses};
use super::text::{addresses_in, unique};

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
pub(super) fn free_text_bounce(ctx: &Ctx<'_>) -> Option<(String, Vec<String>)> {
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

/// Whether a free-text notice reports a failure (`true`) or a delay (`false`): the subject
/// speaks first ("Returned mail: Deferred" is a failure, "(Delay)" is not), then the status
/// class and the body's wording.
pub(super) fn free_text_permanence(
    subject: &str,
    notice: &str,
    status: Option<&str>,
) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use crate::mail::classify::tests::{bounce_of, plain};
    use crate::mail::classify::{Envelope, MailClass};

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
    fn a_mailing_list_refusal_names_the_list() {
        let raw = "From: owner-support-list@lists.example.org
To: agent@gochat.example
Subject: Your post was not accepted

You are not a member of this mailing list <support-list@lists.example.org>.
";
        let b = bounce_of(raw, &Envelope::default());
        assert_eq!(b.recipients, vec!["support-list@lists.example.org"]);
    }
}
