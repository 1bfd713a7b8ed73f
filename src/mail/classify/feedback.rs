//! Feedback reports: complaints about mail we sent. RFC 5965 ARF (a `feedback-report`
//! report or part), Apple's unsubscribe request, a Microsoft JMRP complaint (an attached
//! message carrying `X-HmXmrOriginalRecipient`) and an Amazon SES complaint notification.
//! Checked before every other rule: a report often also looks like a bounce or an
//! auto-reply (a MAILER-DAEMON sender, an `Auto-Submitted` header).

use super::context::Ctx;
use super::ses::{notification_type, ses_notification};
use crate::mail::parse;

/// The rule that recognised a complaint report, if any.
pub(super) fn feedback_report(ctx: &Ctx<'_>) -> Option<String> {
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
