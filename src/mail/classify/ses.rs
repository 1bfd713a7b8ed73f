//! Amazon SES notifications that arrive by mail: a body that is the JSON notification, bare
//! or in an SNS envelope. A `Bounce`, `Delivery` or `DeliveryDelay` notification becomes a
//! `Bounce`; a `Complaint` is a feedback report (see `feedback`).

use serde_json::Value;

use super::Bounce;
use super::status::{enhanced_codes_any_class, status_field};
use super::text::{addresses_in, one_line};
use crate::mail::parse;

/// An Amazon SES notification: a body that is the JSON notification, bare or wrapped in an
/// SNS envelope whose `Message` is the notification as a JSON string. Long lines broken by
/// an MTA with `!` + newline + space are mended first.
pub(super) fn ses_notification(text: &str) -> Option<Value> {
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

/// The type of a notification (`notificationType`) or of an SES event (`eventType`).
pub(super) fn notification_type(n: &Value) -> &str {
    n.get("notificationType")
        .or_else(|| n.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The `Bounce` a bounce, delivery or delivery-delay notification describes; `None` for
/// any other type.
pub(super) fn ses_bounce(n: &Value) -> Option<Bounce> {
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

#[cfg(test)]
mod tests {
    use crate::mail::classify::tests::{bounce_of, plain};
    use crate::mail::classify::{Envelope, MailClass};

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
}
